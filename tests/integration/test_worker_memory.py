"""The worker's memory (issue 12 item 6, bench row (e)): a `pingvas worker` that talks plain HTTP to
its server and its image store maps none of the libraries it does not use. libcurl (with OpenSSL's
initialisation, GnuTLS through librtmp, Kerberos, LDAP), libmicrohttpd, SQLite, libpq, hiredis and
libwebsockets are loaded on first use (src/lib/lazylib.h), so a worker that ran jobs end to end
has none of them in /proc/PID/maps, while the server has the ones it serves with. Outside the
sanitizer build, its peak RSS (VmHWM) after those jobs is at most the 10 MB target.

The same holds for a worker that speaks HTTPS to its server (through a TLS-terminating stand-in
for an ingress, with a certificate made at test time): lib/http1.c speaks TLS on libssl, loaded
on first use, so that worker maps libssl but not libcurl and its TLS stacks, trusts the system
store with the test certificate added to it (SSL_CERT_DIR, OpenSSL's variable: its hashed
directory and another), and stays at or under 10 MB. So does a Kubernetes worker, whose pod guard
speaks HTTPS to a stand-in of the API server with the service account's ca.crt."""
import http.server
import json
import os
import re
import select
import socket
import ssl
import subprocess
import threading

import pv

# What a plain-HTTP worker must not map: the lazily loaded libraries and what only they bring.
NOT_IN_WORKER = ["libcurl", "libmicrohttpd", "libsqlite3", "libpq", "libhiredis",
                 "libwebsockets", "libgnutls", "libssl", "librtmp", "libkrb5", "libldap",
                 "libssh2", "libnghttp2", "libp11-kit"]
TARGET_KB = 10 * 1024


def mapped_libraries(pid):
    """The basenames of the shared objects mapped into pid."""
    libs = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and ".so" in parts[5]:
                libs.add(os.path.basename(parts[5]))
    return libs


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1))


def loaded(libs, prefix):
    return sorted(lib for lib in libs if lib.startswith(prefix + ".") or lib.startswith(prefix + "-"))


def run_jobs(env, w, tok):
    """20 jobs run end to end by worker w; returns w's mapped libraries."""
    ids = [env.create(tok, {"prompt": f"memory {i}", "width": 64, "height": 64, "steps": 1}
                      ).json()["id"] for i in range(20)]
    for jid in ids:
        j = env.wait_status(tok, jid, "completed")
    # the image went through the worker's upload path (to the server, or presigned to S3)
    assert pv.png_size(pv.image_bytes(env, tok, j["image_url"])) == (64, 64)
    return mapped_libraries(w.pid)


def check_hwm(w, libs):
    """w's VmHWM is at most the target (outside the sanitizer build)."""
    hwm = status_kb(w.pid, "VmHWM")
    if any(lib.startswith("libasan") for lib in libs):
        print(f"worker VmHWM {hwm} kB (sanitizer build: not held to {TARGET_KB} kB)")
    else:
        print(f"worker VmHWM {hwm} kB")
        assert hwm <= TARGET_KB, f"worker VmHWM {hwm} kB over {TARGET_KB} kB; maps: {sorted(libs)}"


@pv.clean_exit
def test_worker_maps_only_what_it_uses(env):
    srv = env.start_server()
    tok = env.add_user("mem", credits=1000000)
    w = env.start_worker("--time-scale", "0")
    libs = run_jobs(env, w, tok)
    found = {p: loaded(libs, p) for p in NOT_IN_WORKER if loaded(libs, p)}
    assert not found, f"the worker maps libraries it does not use: {found}"
    # the check reads the maps right: the server has loaded what it serves with
    server_libs = mapped_libraries(srv.pid)
    store = "libpq" if env.stack == "production" else "libsqlite3"
    assert loaded(server_libs, "libmicrohttpd") and loaded(server_libs, store), server_libs
    check_hwm(w, libs)


class TlsFront:
    """A TLS-terminating stand-in for an ingress on 127.0.0.1: each connection's TLS is ended here
    (TLS 1.2 or later, the certificate given) and its bytes are relayed to the server over plain
    HTTP, both ways, until either side closes. handshakes: the TLS connections it took."""

    def __init__(self, backend_url, crt, key):
        host, port = backend_url.split("://", 1)[1].rstrip("/").rsplit(":", 1)
        self.backend = (host, int(port))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(crt, key)
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.lsock.getsockname()[1]}"
        self.handshakes = 0
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                raw, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(raw,), daemon=True).start()

    def serve(self, raw):
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
            back = socket.create_connection(self.backend)
        except OSError:  # a refused handshake (ssl.SSLError), or the server has stopped
            raw.close()
            return
        self.handshakes += 1
        # one thread a connection, both directions: an SSL object is not for two threads at once
        with tls, back:
            try:
                while True:
                    ready = [tls] if tls.pending() else select.select([tls, back], [], [])[0]
                    for src in ready:
                        data = src.recv(65536)
                        if not data:
                            return
                        (back if src is tls else tls).sendall(data)
            except OSError:
                pass

    def stop(self):
        self.lsock.close()


def serving_cert(work):
    """A self-signed certificate for 127.0.0.1 made with the openssl command; (crt, key)."""
    key, crt = os.path.join(work, "front.key"), os.path.join(work, "front.crt")
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
                          "-days", "1", "-subj", "/CN=pingvas-front",
                          "-addext", "subjectAltName=IP:127.0.0.1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"openssl: {out.stderr}"
    return crt, key


@pv.clean_exit
def test_https_worker_stays_small(env):
    env.start_server()
    tok = env.add_user("mem", credits=1000000)
    crt, key = serving_cert(env.dir)
    # the system store, as OpenSSL reads it (its hashed directory), with the test certificate
    certs = os.path.join(env.dir, "certs")
    os.mkdir(certs)
    os.symlink(crt, os.path.join(certs, "pingvas-front.pem"))
    out = subprocess.run(["openssl", "rehash", certs], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"openssl rehash: {out.stderr}"
    system = ssl.get_default_verify_paths().openssl_capath
    front = TlsFront(env.url, crt, key)
    env.cleanups.append(front.stop)
    plain_url = env.url
    env.url = front.url  # the worker's --server
    env.extra_env["SSL_CERT_DIR"] = f"{certs}:{system}"
    env.extra_env["SSL_CERT_FILE"] = ""  # not a bundle this machine's environment may name
    w = env.start_worker("--time-scale", "0")
    env.url = plain_url
    libs = run_jobs(env, w, tok)
    assert front.handshakes >= 1, "the worker did not come through the TLS front"
    assert loaded(libs, "libssl"), f"the worker did not speak TLS itself: {sorted(libs)}"
    found = {p: loaded(libs, p) for p in NOT_IN_WORKER if p != "libssl" and loaded(libs, p)}
    assert not found, f"the HTTPS worker maps libraries it does not use: {found}"
    check_hwm(w, libs)


POD, NODE, NS = "pingvas-worker-0", "ip-10-0-1-2.ec2.internal", "pingvas"
ANNOTATIONS = {"controller.kubernetes.io/pod-deletion-cost", "karpenter.sh/do-not-disrupt"}


class KubeAPI:
    """The Kubernetes API server over TLS, as the worker's pod guard uses it: JSON merge patches
    of its pod's two annotations and GETs of its node. Checks method, path, bearer token (the
    service account's token file), Accept, content type and patch body; answers as the API does.
    problems: what was not as the API expects."""

    def __init__(self, crt, key, token):
        api = self
        self.patches, self.node_gets, self.problems = [], 0, []
        self.annotations = {}

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def answer(self, obj, code=200):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def check(self):
                if self.headers.get("Authorization") != f"Bearer {token}":
                    api.problems.append(f"{self.command} {self.path}: bearer token")
                if self.headers.get("Accept") != "application/json":
                    api.problems.append(f"{self.command} {self.path}: Accept")

            def do_GET(self):
                self.check()
                if self.path != f"/api/v1/nodes/{NODE}":
                    api.problems.append(f"GET {self.path}")
                    return self.answer({"kind": "Status", "code": 404}, 404)
                api.node_gets += 1
                self.answer({"kind": "Node", "apiVersion": "v1", "metadata": {"name": NODE},
                             "spec": {"taints": []}})

            def do_PATCH(self):
                self.check()
                n = int(self.headers.get("Content-Length", "0"))
                patch = json.loads(self.rfile.read(n))
                ann = patch.get("metadata", {}).get("annotations", {})
                if (self.path != f"/api/v1/namespaces/{NS}/pods/{POD}"
                        or self.headers.get("Content-Type") != "application/merge-patch+json"
                        or list(patch) != ["metadata"] or not set(ann) <= ANNOTATIONS
                        or any(v is not None and not isinstance(v, str) for v in ann.values())):
                    api.problems.append(f"PATCH {self.path} {self.headers.get('Content-Type')}: "
                                        f"{patch}")
                for k, v in ann.items():
                    if v is None:
                        api.annotations.pop(k, None)
                    else:
                        api.annotations[k] = v
                api.patches.append(dict(api.annotations))
                self.answer({"kind": "Pod", "apiVersion": "v1",
                             "metadata": {"name": POD, "namespace": NS,
                                          "annotations": api.annotations}})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pv.clean_exit
def test_https_pod_guard_stays_small(env):
    """A Kubernetes worker: its pod guard speaks HTTPS to the API server, trusting the service
    account's ca.crt alone (the system store does not know it)."""
    env.start_server()
    tok = env.add_user("mem", credits=1000000)
    sa = os.path.join(env.dir, "serviceaccount")
    os.mkdir(sa)
    crt, key = serving_cert(sa)
    os.rename(crt, os.path.join(sa, "ca.crt"))
    crt = os.path.join(sa, "ca.crt")
    token = "eyJhbGciOiJSUzI1NiJ9.projected." + os.urandom(8).hex()
    for name, text in (("token", token), ("namespace", NS)):
        with open(os.path.join(sa, name), "w") as f:
            f.write(text)
    kube = KubeAPI(crt, key, token)
    env.cleanups.append(kube.stop)
    w = env.start_worker("--time-scale", "0", "--kube-api", kube.url, "--kube-sa-dir", sa,
                         "--kube-poll", "100ms", "--pod-name", POD, "--node-name", NODE)
    libs = run_jobs(env, w, tok)
    pv.wait_for(lambda: kube.node_gets >= 2 and kube.patches, what="the pod guard's requests")
    assert not kube.problems, kube.problems
    assert any(p.get("karpenter.sh/do-not-disrupt") == "true" for p in kube.patches), kube.patches
    assert loaded(libs, "libssl"), f"the pod guard did not speak TLS itself: {sorted(libs)}"
    found = {p: loaded(libs, p) for p in NOT_IN_WORKER if p != "libssl" and loaded(libs, p)}
    assert not found, f"the Kubernetes worker maps libraries it does not use: {found}"
    check_hwm(w, libs)


if __name__ == "__main__":
    pv.main([test_worker_maps_only_what_it_uses, test_https_worker_stays_small,
             test_https_pod_guard_stays_small])
