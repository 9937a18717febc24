#!/usr/bin/env python3
"""boot.py: the boot test of deploy/ (issue 9): what the manifests render must start.

For deploy/k8s/base and every overlay, `kubectl kustomize` renders the tree; then each container
of the server and worker pods runs here as a process with its exact command (the image's
ENTRYPOINT, /usr/local/bin/pingvas = $PINGVAS_BIN), args and environment (env and envFrom, with
the ConfigMaps from the render, the Secret `pingvas-secrets` from test values, downward-API
fields from a made-up pod), as uid 10001 like the pods' securityContext. Loopback stand-ins play
what the cluster and AWS provide:
  - a network namespace of its own (unshare --net), so that the rendered ports (8080, 8188, 7860)
    and --bind 0.0.0.0 touch nothing outside; the shared PostgreSQL, Redis and S3 servers that
    scripts/services/*.sh start are reachable inside at their usual loopback ports through Unix-socket
    forwarders;
  - pod IPs: the server pod is 127.0.0.2, worker pods 127.0.0.4; probes come from 127.0.0.3
    (the kubelet), so a server bound to 127.0.0.1 fails them;
  - Service DNS: a URL naming NAME.NAMESPACE.svc.cluster.local:PORT of a rendered Service is
    rewritten, in the environment only, to the IP of the pod the Service selects and the
    Service's targetPort (what kube-proxy does); REDIS_URL names the seed's Redis, which is not
    in the manifests: it is rewritten to the test Redis and a free database number (the test
    Redis is shared);
  - IRSA: the EKS pod identity webhook's injection for a ServiceAccount annotated
    eks.amazonaws.com/role-arn (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE with a projected token,
    AWS_STS_REGIONAL_ENDPOINTS); STS answering AssumeRoleWithWebIdentity (checks every field,
    answers the documented XML) at AWS_ENDPOINT_URL_STS; S3 at AWS_ENDPOINT_URL_S3, a proxy that
    refuses any request without the session token STS issued and forwards the rest, byte for
    byte, to the S3-compatible test server;
  - the Kubernetes API (https, a fresh self-signed CA in the service-account directory) for the
    workers' busy/idle pod marks: checks path, method, content type, body and bearer token;
  - the engine sidecar: a protocol stand-in for the engine the render names, started on the
    rendered port and probed with the rendered startupProbe before the worker starts (native
    sidecar order).
Asserted: the migrate init container exits 0; readiness, liveness and every ScaledObject's
metrics-api request (url, Authorization from the TriggerAuthentication's Secret, valueLocation)
succeed against the pod IP; the server got its S3 credentials through web identity; per tier, a
worker claims and completes a job, the image is in the rendered bucket, and the image_url answers
200 where it is an S3 URL; the worker marks its pod busy then idle; a Celery task pushed to the
rendered REDIS_URL completes.

Run: PINGVAS_BIN=build/pingvas python3 deploy/check/boot.py (CTest: deploy.boot). Needs root (or
user namespaces), kubectl with kustomize v4+, openssl, python3-yaml and the services that
scripts/services/*.sh start (eval their output). PINGVAS_BOOT_TREES=base,dev limits the trees;
PINGVAS_BOOT_USERNS=1 uses a user namespace even as root (as it does without CAP_SYS_ADMIN).
"""
import base64
import http.client
import http.server
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "peers", "a1111"))
import pv  # noqa: E402
import pv_pg  # noqa: E402
import pv_s3  # noqa: E402

BIN = os.path.abspath(os.environ.get("PINGVAS_BIN") or os.path.join(ROOT, "build", "pingvas"))
SERVER_IP, KUBELET_IP, WORKER_IP, STS_IP, S3_IP, KUBE_IP = (
    "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9")
KUBE_PORT = 6443
UID = 10001
SECRETS = {"JWT_SECRET": "boot-jwt-secret-" + secrets.token_hex(8),
           "PINGVAS_WORKER_TOKEN": "boot-worker-token-" + secrets.token_hex(8),
           "PINGVAS_WEBHOOK_SECRET": "boot-webhook-secret-" + secrets.token_hex(8)}
NODE = "ip-10-0-12-34.ec2.internal"


def log(msg):
    print(f"boot: {msg}", flush=True)


# ---------------------------------------------------------------- network namespace plumbing

def _pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _splice(a, b):
    threading.Thread(target=_pump, args=(a, b), daemon=True).start()
    threading.Thread(target=_pump, args=(b, a), daemon=True).start()


def forward(listener, connect):
    """Accepts on listener forever; each connection is spliced to connect()."""
    def loop():
        while True:
            c, _ = listener.accept()
            try:
                _splice(c, connect())
            except OSError:
                c.close()
    threading.Thread(target=loop, daemon=True).start()


def service_ports():
    """The loopback ports of the shared services (PostgreSQL, Redis, S3)."""
    urls = [pv_pg.admin_url(), os.environ["PINGVAS_TEST_REDIS_URL"], pv_s3.config()[0]]
    return sorted({urllib.parse.urlsplit(u).port for u in urls})


def outside(argv):
    """Host side: Unix-socket forwarders to the services, then this script in a new netns."""
    sockdir = tempfile.mkdtemp(prefix="pingvas-boot-fwd-")
    os.chmod(sockdir, 0o755)
    for port in service_ports():
        ls = socket.socket(socket.AF_UNIX)
        ls.bind(os.path.join(sockdir, f"{port}.sock"))
        ls.listen(64)
        forward(ls, lambda p=port: socket.create_connection(("127.0.0.1", p)))
    env = dict(os.environ, PINGVAS_BOOT_FWD=sockdir)
    cmd = ["unshare", "--net"]
    if (os.geteuid() != 0 or os.environ.get("PINGVAS_BOOT_USERNS")
            or subprocess.run(cmd + ["true"], capture_output=True).returncode != 0):
        # No CAP_SYS_ADMIN (a container): a user namespace maps us to root inside, where the pods'
        # uid 10001 does not exist, so the processes keep ours.
        cmd = ["unshare", "--user", "--map-root-user", "--net"]
        env["PINGVAS_BOOT_NO_SETUID"] = "1"
        if subprocess.run(cmd + ["true"], capture_output=True).returncode != 0:
            print("boot: cannot create a network namespace (unshare --net needs root or user "
                  "namespaces)", file=sys.stderr)
            return 2
    p = subprocess.run(cmd + [sys.executable, os.path.abspath(__file__)] + argv, env=env)
    return p.returncode


def lo_up():
    import fcntl
    import struct
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS IFF_UP
    s.close()


def inside_forwarders():
    sockdir = os.environ["PINGVAS_BOOT_FWD"]
    for port in service_ports():
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(64)

        def connect(p=port):
            s = socket.socket(socket.AF_UNIX)
            s.connect(os.path.join(sockdir, f"{p}.sock"))
            return s
        forward(ls, connect)


# ---------------------------------------------------------------- stand-ins

class StandIn:
    """A threaded HTTP/1.1 server on (ip, port) whose handler is handle(req) -> (status, headers,
    body). Problems (fields not as expected) are collected in .problems."""

    def __init__(self, ip, port=0, tls=None):
        self.problems = []
        self.requests = []
        me = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                try:
                    st, hdrs, out = me.handle(self, body)
                except Exception:  # a stand-in bug must show, not hang the client
                    me.problems.append(traceback.format_exc())
                    st, hdrs, out = 500, {}, b"stand-in error"
                self.send_response(st)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_PUT = do_POST = do_PATCH = do_HEAD = do_DELETE = _any

        self.httpd = http.server.ThreadingHTTPServer((ip, port), H)
        self.httpd.daemon_threads = True
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def expect(self, cond, what):
        if not cond:
            self.problems.append(what)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class STS(StandIn):
    """AssumeRoleWithWebIdentity (STS query API, 2011-06-15): checks the form, answers the XML.
    The credentials it issues are the S3 test server's key pair plus a fresh session token."""

    def __init__(self, role_arn, token_file):
        super().__init__(STS_IP)
        self.role_arn, self.token_file = role_arn, token_file
        self.tokens = set()

    def handle(self, h, body):
        self.requests.append(h.path)
        ct = h.headers.get("Content-Type", "")
        self.expect(h.command == "POST" and h.path == "/", f"STS: {h.command} {h.path}")
        self.expect(ct.startswith("application/x-www-form-urlencoded"), f"STS: content type {ct}")
        self.expect("Authorization" not in h.headers, "STS: AssumeRoleWithWebIdentity is unsigned")
        f = urllib.parse.parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
        want = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15",
                "RoleArn": self.role_arn, "WebIdentityToken": open(self.token_file).read().strip()}
        for k, v in want.items():
            self.expect(f.get(k) == [v], f"STS: {k} is {f.get(k)!r}, want {v!r}")
        sn = (f.get("RoleSessionName") or [""])[0]
        self.expect(re.fullmatch(r"[\w+=,.@-]{2,64}", sn), f"STS: RoleSessionName {sn!r}")
        self.expect(set(f) == set(want) | {"RoleSessionName"}, f"STS: fields {sorted(f)}")
        _, region, ak, sk = pv_s3.config()
        tok = "IQoJb3JpZ2luX2VjE" + base64.b64encode(os.urandom(820)).decode()
        self.tokens.add(tok)
        exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        xml = ("<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
               "<AssumeRoleWithWebIdentityResult>"
               "<SubjectFromWebIdentityToken>system:serviceaccount:pingvas:pingvas-server"
               "</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience>"
               f"<AssumedRoleUser><Arn>{self.role_arn}/{sn}</Arn><AssumedRoleId>AROAEXAMPLE:{sn}"
               "</AssumedRoleId></AssumedRoleUser><Credentials>"
               f"<SessionToken>{tok}</SessionToken><SecretAccessKey>{sk}</SecretAccessKey>"
               f"<Expiration>{exp}</Expiration><AccessKeyId>{ak}</AccessKeyId></Credentials>"
               "<Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com"
               "</Provider></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>"
               f"{uuid.uuid4()}</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>")
        return 200, {"Content-Type": "text/xml"}, xml.encode()


class S3Proxy(StandIn):
    """S3 as the pods see it: refuses a request without a session token that STS issued (header
    x-amz-security-token, or X-Amz-Security-Token of a presigned URL), forwards the rest unchanged
    (Host included, so SigV4 still verifies) to the S3-compatible test server."""

    def __init__(self, sts):
        super().__init__(S3_IP)
        self.sts = sts
        self.with_token = []

    def handle(self, h, body):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        tok = h.headers.get("x-amz-security-token") or (q.get("X-Amz-Security-Token") or [None])[0]
        if tok not in self.sts.tokens:
            self.problems.append(f"S3: {h.command} {h.path[:80]} without an STS session token")
            return 403, {"Content-Type": "application/xml"}, (
                b"<Error><Code>InvalidToken</Code><Message>no session token</Message></Error>")
        self.with_token.append((h.command, h.path.split("?")[0]))
        ep = urllib.parse.urlsplit(pv_s3.config()[0])
        c = http.client.HTTPConnection(ep.hostname, ep.port, timeout=30)
        hdrs = {k: v for k, v in h.headers.items()}
        c.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs.items():
            c.putheader(k, v)
        c.endheaders(body if body else None)
        r = c.getresponse()
        out = r.read()
        keep = {k: v for k, v in r.getheaders() if k.lower() in ("content-type", "etag")}
        c.close()
        return r.status, keep, out


class KubeAPI(StandIn):
    """The Kubernetes API server, for the workers' busy/idle marks: PATCH of the worker's own pod
    (JSON merge patch of two annotations) and GET of its node. Checks path, method, content type,
    bearer token (the token file's), body; answers as the API does."""
    ANN = ("controller.kubernetes.io/pod-deletion-cost", "karpenter.sh/do-not-disrupt")

    def __init__(self, tls, token_file):
        super().__init__(KUBE_IP, KUBE_PORT, tls)
        self.token_file = token_file
        self.pods = {}     # name -> annotations
        self.history = []  # (pod, annotations after the patch)
        self.tainted = False  # Karpenter's karpenter.sh/disrupted taint on the node

    def handle(self, h, body):
        want = "Bearer " + open(self.token_file).read().strip()
        self.expect(h.headers.get("Authorization") == want, "kube: wrong bearer token")
        m = re.fullmatch(r"/api/v1/namespaces/([a-z0-9-]+)/pods/([a-z0-9.-]+)", h.path)
        if h.command == "GET" and h.path == f"/api/v1/nodes/{NODE}":
            taints = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
            if self.tainted:
                taints.append({"key": "karpenter.sh/disrupted", "effect": "NoSchedule"})
            node = {"kind": "Node", "apiVersion": "v1",
                    "metadata": {"name": NODE, "labels": {
                        "node.kubernetes.io/instance-type": "g4dn.xlarge",
                        "karpenter.sh/capacity-type": "spot",
                        "topology.kubernetes.io/zone": "us-east-1a"}},
                    "spec": {"taints": taints}}
            return 200, {"Content-Type": "application/json"}, json.dumps(node).encode()
        if not (m and h.command == "PATCH"):
            self.problems.append(f"kube: unexpected {h.command} {h.path}")
            return 404, {"Content-Type": "application/json"}, b'{"kind":"Status","code":404}'
        ns, pod = m.groups()
        self.expect(ns == "pingvas" and pod in self.pods, f"kube: patch of pod {ns}/{pod}")
        ct = h.headers.get("Content-Type")
        self.expect(ct == "application/merge-patch+json", f"kube: content type {ct}")
        patch = json.loads(body)
        ann = patch.get("metadata", {}).get("annotations", {})
        self.expect(list(patch) == ["metadata"] and list(patch["metadata"]) == ["annotations"]
                    and set(ann) <= set(self.ANN), f"kube: patch {patch}")
        cur = self.pods.setdefault(pod, {})
        for k, v in ann.items():
            self.expect(v is None or isinstance(v, str), f"kube: {k}={v!r}")
            if v is None:
                cur.pop(k, None)
            else:
                cur[k] = v
        self.history.append((pod, dict(cur)))
        obj = {"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": pod, "namespace": ns, "annotations": cur},
               "spec": {"nodeName": NODE}}
        return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def start_engine(backend, port):
    """The engine sidecar's protocol stand-in for backend (tests/peers/), rebound to the rendered
    port on every address of the netns: the worker reaches it on localhost, the kubelet's
    startupProbe on the pod IP."""
    if backend == "a1111":
        import fake_a1111
        fake = fake_a1111.FakeA1111()
    elif backend == "comfyui":
        sys.path.insert(0, os.path.join(ROOT, "tests", "peers", "comfyui"))
        import fake_comfyui
        fake = fake_comfyui.FakeComfyUI()
    else:
        raise AssertionError(f"no stand-in for engine backend {backend!r}")
    fake.httpd.server_close()
    fake.url = f"http://127.0.0.1:{port}"  # where the worker reaches it (the Host it checks)
    fake.httpd = http.server.ThreadingHTTPServer(("0.0.0.0", port), fake._handler())
    fake.httpd.daemon_threads = True
    fake.thread = threading.Thread(target=fake.httpd.serve_forever, daemon=True)
    return fake.start()


# ---------------------------------------------------------------- the rendered objects

class Render:
    def __init__(self, tree):
        out = subprocess.run(["kubectl", "kustomize", os.path.join(ROOT, tree)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"kubectl kustomize {tree}: {out.stderr}"
        self.objs = [o for o in yaml.safe_load_all(out.stdout) if o]
        self.tree = tree

    def of(self, kind):
        return [o for o in self.objs if o["kind"] == kind]

    def get(self, kind, name):
        for o in self.of(kind):
            if o["metadata"]["name"] == name:
                return o
        raise AssertionError(f"{self.tree}: no {kind} {name}")

    def deployment(self, first_arg, tier=None):
        for d in self.of("Deployment"):
            cs = d["spec"]["template"]["spec"]["containers"]
            for c in cs:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                if (c.get("args") or [""])[0] == first_arg and tier in (None, env.get("PINGVAS_TIER")):
                    return d, c
        raise AssertionError(f"{self.tree}: no Deployment runs `pingvas {first_arg}` {tier or ''}")


def selects(svc, pod_labels):
    sel = svc["spec"].get("selector") or {}
    return all(pod_labels.get(k) == v for k, v in sel.items())


def container_port(c, port):
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {c['name']} has no port named {port}")


class Cluster:
    """Service DNS and pod IPs of one render (see the module docstring)."""

    def __init__(self, r, redis_url):
        self.r, self.redis_url = r, redis_url
        self.pods = []  # (labels, ip, containers)

    def add_pod(self, labels, ip, containers):
        self.pods.append((labels, ip, containers))

    def resolve(self, url):
        u = urllib.parse.urlsplit(url)
        m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?", u.hostname or "")
        if not m:
            return url
        if u.scheme == "redis":
            assert u.hostname not in [s["metadata"]["name"] for s in self.r.of("Service")]
            return self.redis_url  # the seed's Redis, outside the manifests
        svc = self.r.get("Service", m.group(1))
        assert svc["metadata"]["namespace"] == m.group(2), f"{url}: Service is in another namespace"
        port = u.port or (443 if u.scheme == "https" else 80)
        sp = [p for p in svc["spec"]["ports"] if p["port"] == port]
        assert sp, f"{url}: Service {m.group(1)} has no port {port}"
        for labels, ip, containers in self.pods:
            if selects(svc, labels):
                tp = sp[0].get("targetPort", port)
                for c in containers:
                    try:
                        return u._replace(netloc=f"{ip}:{container_port(c, tp)}").geturl()
                    except AssertionError:
                        continue
        raise AssertionError(f"{url}: Service {m.group(1)} selects no running pod")


def env_of(r, c, fields, extra):
    """The container's environment as the kubelet builds it: envFrom, then env (which wins), with
    ConfigMaps from the render, the Secret from test values, fieldRefs from `fields`."""
    def secret(name, key, optional=False):
        assert name == "pingvas-secrets", f"container {c['name']}: Secret {name} is not created"
        if key not in extra["secrets"]:
            assert optional, f"container {c['name']}: Secret {name} has no key {key}"
            return None
        return extra["secrets"][key]
    env = {}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            env.update(r.get("ConfigMap", ef["configMapRef"]["name"]).get("data", {}))
        elif "secretRef" in ef:
            env.update(extra["secrets"])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        vf = e["valueFrom"]
        if "secretKeyRef" in vf:
            v = secret(vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"],
                       vf["secretKeyRef"].get("optional", False))
        elif "configMapKeyRef" in vf:
            v = r.get("ConfigMap", vf["configMapKeyRef"]["name"])["data"].get(
                vf["configMapKeyRef"]["key"])
        elif "fieldRef" in vf:
            v = fields[vf["fieldRef"]["fieldPath"]]
        else:
            raise AssertionError(f"env {e['name']}: unsupported valueFrom {vf}")
        if v is not None:
            env[e["name"]] = v
    return env


def exec_env(env, cluster):
    """Rendered env + the pod basics, Service URLs resolved."""
    out = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
    for k, v in env.items():
        out[k] = cluster.resolve(v) if re.match(r"^[a-z]+://", v or "") else v
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            out[k] = os.environ[k]
    return out


def run_as_pod_user():
    if os.geteuid() == 0 and not os.environ.get("PINGVAS_BOOT_NO_SETUID"):
        os.setgroups([])
        os.setgid(UID)
        os.setuid(UID)


def image_cmd(c):
    assert "command" not in c, f"{c['name']}: command overrides the image's ENTRYPOINT"
    assert re.search(r"/pingvas(:|@|$)", c["image"]), f"{c['name']}: image {c['image']}"
    return [BIN] + list(c.get("args", []))


# ---------------------------------------------------------------- checks

def probe(ip, port, path, headers=None, src=KUBELET_IP):
    """One HTTP GET from src to ip:port, as the kubelet (or KEDA) does it: (status, body)."""
    c = http.client.HTTPConnection(ip, port, timeout=5, source_address=(src, 0))
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def http_probe(c, ip, which):
    p = c[which]["httpGet"]
    assert p.get("scheme", "HTTP") == "HTTP", f"{c['name']} {which}: scheme {p['scheme']}"
    st, body = probe(ip, container_port(c, p["port"]), p["path"],
                     {h["name"]: h["value"] for h in p.get("httpHeaders", [])})
    assert 200 <= st < 400, f"{c['name']} {which} GET {p['path']} on {ip}: {st} {body[:200]!r}"
    return st


def value_at(doc, location):
    for part in location.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def keda_requests(r, cluster):
    """Each ScaledObject's metrics-api request, from KEDA's address, as rendered."""
    for so in r.of("ScaledObject"):
        for t in so["spec"]["triggers"]:
            assert t["type"] == "metrics-api", t["type"]
            md = t["metadata"]
            ta = r.get("TriggerAuthentication", t["authenticationRef"]["name"])
            ref = [x for x in ta["spec"]["secretTargetRef"] if x["parameter"] == "token"][0]
            assert ref["name"] == "pingvas-secrets", f"TriggerAuthentication names {ref['name']}"
            token = SECRETS[ref["key"]]
            assert md.get("authMode") == "bearer" and md.get("format", "json") == "json", md
            u = urllib.parse.urlsplit(cluster.resolve(md["url"]))
            st, body = probe(u.hostname, u.port, u.path, {"Authorization": f"Bearer {token}"},
                             src="127.0.0.7")
            assert st == 200, f"KEDA {so['metadata']['name']}: {md['url']} -> {st} {body[:200]!r}"
            v = value_at(json.loads(body), md["valueLocation"])
            assert isinstance(v, (int, float)), f"{md['valueLocation']} is {v!r}"
            log(f"  KEDA {so['metadata']['name']}: {md['valueLocation']} = {v}")


class Pods:
    """Processes started for one tree, stopped at the end."""

    def __init__(self, dir_):
        self.dir, self.procs, self.stoppers = dir_, [], []

    def start(self, name, argv, env):
        logf = open(os.path.join(self.dir, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=logf, env=env, cwd=self.dir,
                             preexec_fn=run_as_pod_user, start_new_session=True)
        p.name = name
        self.procs.append(p)
        return p

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log"), errors="replace") as f:
            return f.read()

    def stop(self, p, timeout=30):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def close(self):
        for p in reversed(self.procs):
            self.stop(p)
        for s in reversed(self.stoppers):
            s()


# ---------------------------------------------------------------- one tree

class Tree:
    def __init__(self, tree, kube, kube_dir):
        self.r = Render(tree)
        self.tree, self.kube, self.kube_dir = tree, kube, kube_dir
        self.work = tempfile.mkdtemp(prefix="pingvas-boot-")
        os.chmod(self.work, 0o755)  # the pods' uid may read, not write (readOnlyRootFilesystem)
        self.pods = Pods(self.work)
        self.cleanups = []

    def close(self):
        self.pods.close()
        for c in reversed(self.cleanups):
            try:
                c()
            except Exception as e:  # cleanup is best effort; the test result stands
                log(f"  cleanup: {e}")

    def file(self, rel, text, mode=0o644):
        path = os.path.join(self.work, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.chmod(os.path.dirname(path), 0o755)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def run(self):
        import test_celery
        env_pg, drop_pg = pv_pg.provision("boot")
        self.cleanups.append(drop_pg)
        holder = type("E", (), {"cleanups": self.cleanups, "extra_env": {}})()
        self.redis, redis_url = test_celery.take_db(holder)
        self.secrets = dict(SECRETS, DATABASE_URL=env_pg["DATABASE_URL"])
        self.cluster = Cluster(self.r, redis_url)
        self.server()
        keda_requests(self.r, self.cluster)
        for tier in ("standard", "enterprise"):
            self.worker(tier)

    # ------------------------------------------------------------ server pod
    def server(self):
        d, c = self.r.deployment("server")
        spec = d["spec"]["template"]["spec"]
        sa = self.r.get("ServiceAccount", spec.get("serviceAccountName", "default"))
        role = (sa["metadata"].get("annotations") or {}).get("eks.amazonaws.com/role-arn")
        assert role, f"ServiceAccount {sa['metadata']['name']} has no IRSA role annotation"
        token = self.file("irsa/token", "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJvb3QifQ." +
                          base64.urlsafe_b64encode(json.dumps(
                              {"aud": ["sts.amazonaws.com"],
                               "sub": "system:serviceaccount:pingvas:" + sa["metadata"]["name"]})
                              .encode()).decode().rstrip("=") + ".c2lnbmF0dXJl\n")
        self.sts = STS(role, token)
        self.s3 = S3Proxy(self.sts)
        self.cleanups += [self.sts.close, self.s3.close]
        self.cluster.add_pod(d["spec"]["template"]["metadata"]["labels"], SERVER_IP, [c])
        fields = {"metadata.name": "pingvas-server-6f7c9d8b5-k2x7q", "metadata.namespace": "pingvas",
                  "spec.nodeName": "ip-10-0-1-5.ec2.internal", "status.podIP": SERVER_IP}
        # The EKS pod identity webhook's injection, and AWS's endpoints on loopback.
        aws = {"AWS_ROLE_ARN": role, "AWS_WEB_IDENTITY_TOKEN_FILE": token,
               "AWS_STS_REGIONAL_ENDPOINTS": "regional",
               "AWS_ENDPOINT_URL_STS": f"http://{STS_IP}:{self.sts.port}",
               "AWS_ENDPOINT_URL_S3": f"http://{S3_IP}:{self.s3.port}",
               "KUBERNETES_SERVICE_HOST": KUBE_IP, "KUBERNETES_SERVICE_PORT": str(KUBE_PORT)}
        extra = {"secrets": self.secrets}
        self.server_env = dict(exec_env(env_of(self.r, c, fields, extra), self.cluster), **aws)
        self.bucket()
        for ic in spec.get("initContainers", []):
            e = dict(exec_env(env_of(self.r, ic, fields, extra), self.cluster), **aws)
            p = self.pods.start(f"server-init-{ic['name']}", image_cmd(ic), e)
            assert p.wait(timeout=60) == 0, f"init container {ic['name']}: {self.pods.log(p.name)}"
        self.server_p = self.pods.start("server", image_cmd(c), self.server_env)

        def ready():
            assert self.server_p.poll() is None, f"server exited: {self.pods.log('server')}"
            try:
                return http_probe(c, SERVER_IP, "readinessProbe")
            except (OSError, AssertionError):
                return None
        pv.wait_for(ready, timeout=30, what="the server's readinessProbe on the pod IP")
        http_probe(c, SERVER_IP, "livenessProbe")
        slog = self.pods.log("server")
        assert "credentials=web-identity" in slog, slog
        assert self.sts.requests and self.s3.with_token, "S3 not reached with STS credentials"
        for t in self.sts.tokens:
            assert t not in slog, "the session token is in the server log"
        log(f"  server: probes pass on {SERVER_IP}, S3 via web identity ({len(self.sts.requests)} "
            f"STS call, {len(self.s3.with_token)} S3 calls with the session token)")

    def bucket(self):
        st = self.server_env.get("STORAGE_URL", "")
        m = re.fullmatch(r"s3://([^/]+)(/.*)?", st)
        assert m, f"STORAGE_URL {st!r} is not an S3 URL"
        self.bucket_name, self.prefix = m.group(1), (m.group(2) or "").strip("/")
        code, body = pv_s3.request("PUT", "/" + self.bucket_name)
        if code == 200:
            self.cleanups.append(lambda b=self.bucket_name: pv_s3.delete_bucket(b))
        else:
            assert b"BucketAlreadyOwnedByYou" in body or b"BucketAlreadyExists" in body, body

    # ------------------------------------------------------------ worker pods
    def worker(self, tier):
        d, c = self.r.deployment("worker", tier)
        spec = d["spec"]["template"]["spec"]
        sidecars = [x for x in spec.get("initContainers", []) if x.get("restartPolicy") == "Always"]
        assert all(x["name"] == "engine" for x in sidecars), sidecars
        name = f"{d['metadata']['name']}-5d8f7c9b6-{secrets.token_hex(3)[:5]}"
        fields = {"metadata.name": name, "metadata.namespace": "pingvas", "spec.nodeName": NODE,
                  "status.podIP": WORKER_IP}
        env = exec_env(env_of(self.r, c, fields, {"secrets": self.secrets}), self.cluster)
        backend = env.get("PINGVAS_BACKEND", "synthetic")
        engine = None
        if sidecars:
            e = sidecars[0]
            engine = start_engine(backend, e["ports"][0]["containerPort"])
            self.pods.stoppers.append(engine.stop)
            pv.wait_for(lambda: self.try_probe(e), timeout=30, what="the engine's startupProbe")
        assert spec.get("automountServiceAccountToken", True), "no service-account token"
        env.update({"KUBERNETES_SERVICE_HOST": KUBE_IP, "KUBERNETES_SERVICE_PORT": str(KUBE_PORT),
                    "PINGVAS_KUBE_SA_DIR": self.kube_dir})
        self.kube.pods[name] = {}
        p = self.pods.start(f"worker-{tier}", image_cmd(c), env)
        user = f"boot-{tier}"
        admin = dict(self.server_env)
        for cmd in (["user", "add", user, "--credits", "100000", "--tier", tier], ["token", user]):
            out = subprocess.run([BIN] + cmd, env=admin, cwd=self.work, capture_output=True,
                                 text=True, timeout=60, preexec_fn=run_as_pod_user)
            assert out.returncode == 0, f"pingvas {' '.join(cmd)}: {out.stderr}"
        tok = out.stdout.strip()
        api = self.cluster.resolve(env["PINGVAS_SERVER_URL"])
        job = pv.http("POST", api + "/api/v1/generation/create",
                      {"prompt": f"boot {tier}", "steps": 2, "width": 64, "height": 64}, tok)
        assert job.status == 201, job
        jid = job.json()["id"]

        def done():
            assert p.poll() is None, f"worker exited: {self.pods.log(p.name)}"
            j = pv.http("GET", f"{api}/api/v1/generation/{jid}", token=tok).json()
            assert j["status"] not in ("failed", "canceled"), j
            return j if j["status"] == "completed" else None
        j = pv.wait_for(done, timeout=60, what=f"the {tier} job to complete")
        self.check_image(j["image_url"])
        busy = {"controller.kubernetes.io/pod-deletion-cost": "100",
                "karpenter.sh/do-not-disrupt": "true"}

        def marked():
            marks = [a for pod, a in self.kube.history if pod == name]
            return busy in marks and marks[-1] == {}
        pv.wait_for(marked, timeout=30, what=f"the {tier} worker to mark its pod busy, then idle")
        wlog = self.pods.log(p.name)
        assert ("event=worker_placement" in wlog and "instance_type=g4dn.xlarge" in wlog
                and "capacity_type=spot" in wlog), "placement not from the node's labels: " + wlog
        if tier == "standard":
            self.celery(user, tok, api)
        if tier == "standard" and backend == "synthetic":
            self.interruption(p, name, api, tok)
        if p.poll() is None:
            assert self.pods.stop(p) == 0, f"worker exit status: {self.pods.log(p.name)}"
        if engine:
            engine.stop()
            self.pods.stoppers.remove(engine.stop)
            # The kubelet's probes name the pod IP in Host (real engines accept any Host without
            # an Origin); everything else must be as the stand-in expects.
            probes = {f"{e[k]['httpGet']['path']}: Host '{WORKER_IP}:{e['ports'][0]['containerPort']}'"
                      for k in ("startupProbe", "livenessProbe") if k in e}
            bad = [v for v in getattr(engine, "violations", []) if v not in probes]
            assert not bad, f"engine stand-in: {bad}"
        log(f"  worker {tier} ({backend}{' + engine sidecar' if engine else ''}): job {jid} "
            f"completed, pod marked busy then idle")

    def interruption(self, p, name, api, tok):
        """Karpenter's interruption path with the real worker: the node is tainted
        karpenter.sh/disrupted as a job is claimed; the worker drops do-not-disrupt (so the drain
        may evict it), claims nothing more, and on the eviction's SIGTERM finishes its job inside
        the drain window and exits 0."""
        n0 = len(self.kube.history)
        self.kube.tainted = True
        try:
            a = pv.http("POST", api + "/api/v1/generation/create",
                        {"prompt": "interrupted", "steps": 20}, tok).json()["id"]
            mine = lambda: [m for pod, m in self.kube.history[n0:] if pod == name]
            released = {"controller.kubernetes.io/pod-deletion-cost": "100"}
            pv.wait_for(lambda: released in mine(), timeout=30,
                        what="do-not-disrupt to come off the busy pod on the tainted node")
            b = pv.http("POST", api + "/api/v1/generation/create",
                        {"prompt": "after the taint", "steps": 1}, tok).json()["id"]
            assert self.pods.stop(p, timeout=120) == 0, self.pods.log(p.name)  # the eviction
            ja = pv.http("GET", f"{api}/api/v1/generation/{a}", token=tok).json()
            jb = pv.http("GET", f"{api}/api/v1/generation/{b}", token=tok).json()
            assert ja["status"] == "completed" and jb["status"] == "queued", (ja, jb)
            assert "event=node_disrupted" in self.pods.log(p.name)
            assert not any(m.get("karpenter.sh/do-not-disrupt") for m in mine()[mine().index(released):])
            log("  interruption: taint -> do-not-disrupt removed, claims held; SIGTERM -> job "
                "finished in the drain window, exit 0")
        finally:
            self.kube.tainted = False

    def try_probe(self, e):
        try:
            return http_probe(e, WORKER_IP, "startupProbe")
        except (OSError, AssertionError):
            return None

    def check_image(self, url):
        u = urllib.parse.urlsplit(url)
        if u.query:  # a presigned GET of the bucket, through S3 as the pods see it: it must answer
            pv.wait_for(lambda: pv.http("GET", url).status == 200, timeout=30, what=f"GET {url}")
            assert pv.http("GET", url).body[:8] == b"\x89PNG\r\n\x1a\n"
            key = urllib.parse.unquote(u.path).split("/", 2)[2]
        else:  # a CDN URL: PUBLIC_IMAGE_BASE_URL + "/" + prefix/key
            base = urllib.parse.urlsplit(self.server_env["PUBLIC_IMAGE_BASE_URL"]).path.rstrip("/")
            key = urllib.parse.unquote(u.path)[len(base) + 1:]
        assert key.startswith(self.prefix + "/"), (key, self.prefix)

        def stored():  # the server publishes the image just after committing the completion
            st, body = pv_s3.request("GET", f"/{self.bucket_name}/{key}")
            return st == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
        pv.wait_for(stored, timeout=30, what=f"s3://{self.bucket_name}/{key}")

    def celery(self, user, tok, api):
        import test_celery
        holder = type("E", (), {"stack": "production",
                                "extra_env": {"DATABASE_URL": self.secrets["DATABASE_URL"]}})()
        jid = test_celery.insert_seed_row(holder, user, prompt="boot celery", steps=2)
        tid, raw = test_celery.python_celery_envelope(jid)
        self.redis.cmd("LPUSH", "celery", raw)
        meta = test_celery.wait_meta(self.redis, tid, timeout=60)
        assert meta["status"] == "SUCCESS" and meta["result"]["success"] is True, meta
        log(f"  celery: task {tid} on the rendered REDIS_URL completed")


def apt_list(dockerfile, stage):
    """The packages `apt-get install` names in the RUN of the stage (`FROM ... AS stage`)."""
    text = open(dockerfile).read()
    m = re.search(r"^FROM [^\n]* AS " + stage + r"\n(.*?)(?=^FROM |\Z)", text, re.S | re.M)
    assert m, f"{dockerfile}: no stage {stage}"
    run = re.search(r"apt-get install[^\n]*?((?:\\\n|[^\n])*?)&&", m.group(1))
    assert run, f"{dockerfile}: stage {stage} installs nothing"
    return set(re.findall(r"(?<![-\w])([a-z0-9][a-z0-9.+-]+)", run.group(1).replace("\\\n", " "))) - {
        "y", "no-install-recommends"}


def owner_of(path, follow=True):
    """The Debian package that installed path (tried as given and as /usr/... or /...: merged /usr;
    with follow, also the file a symlink points to), or None."""
    if not path:
        return None
    cands = [path, os.path.realpath(path)] if follow else [path]
    cands += [c[4:] if c.startswith("/usr/") else "/usr" + c for c in list(cands)]
    for c in cands:
        out = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True).stdout
        if out:
            return out.split(":")[0]
    return None


def image_packages():
    """The image (deploy/docker/Dockerfile) carries what the binary links: each NEEDED library's
    Debian package is installed in the runtime stage, and its -dev (the unversioned .so) in the
    build stage. (The boot test runs the binary built here; the image is built in CI elsewhere.)"""
    df = os.path.join(ROOT, "deploy", "docker", "Dockerfile")
    runtime, build = apt_list(df, "runtime"), apt_list(df, "build")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", BIN], capture_output=True, text=True).stdout)
    libs = dict(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(["ldd", BIN], capture_output=True,
                                                                   text=True).stdout, re.M))
    # and the libraries the binary loads on first use (src/lib/lazydeps.c: soname and package)
    lazy = re.findall(r'^LZ_LIBRARY\(\w+, \w+, "([^"]+)", "([^"]+)"\)',
                      open(os.path.join(ROOT, "src", "lib", "lazydeps.c")).read(), re.M)
    assert lazy, "src/lib/lazydeps.c: no LZ_LIBRARY rows found"
    lazy_problems = []
    for soname, package in lazy:
        path = next((d + "/" + soname for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                                                "/lib", "/usr/lib")
                     if os.path.exists(d + "/" + soname)), "")
        if owner_of(path) != package:  # the name lazylib's error message tells to install
            lazy_problems.append(f"{soname} is in {owner_of(path)}, not {package} as lazydeps.c says")
        needed.append(soname)
        libs[soname] = path
    assert not lazy_problems, "; ".join(lazy_problems)
    if any(re.match(r"lib(asan|ubsan)\.so", lib) for lib in needed):
        log("image: skipped for a sanitizer build (it links differently from the image's Release "
            "build; the plain build checks it)")
        return
    problems = []
    deps = set()
    for pkg in runtime:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", pkg], capture_output=True,
                             text=True).stdout
        deps |= set(re.findall(r"(?:^|[,|]\s*)([a-z0-9][a-z0-9.+-]+)", out))
    for lib in needed:
        if re.match(r"lib(c|m|pthread|dl)\.so", lib):
            continue  # libc6 is in every Debian image
        pkg = owner_of(libs.get(lib, ""))
        if pkg in deps and pkg not in runtime:
            continue  # comes with a listed package (apt installs it)
        if pkg not in runtime:
            problems.append(f"{lib} ({pkg}) is not installed in the runtime stage")
        path = libs.get(lib, "")
        devpkg = owner_of(os.path.join(os.path.dirname(path), lib.split(".so")[0] + ".so"), False)
        if devpkg not in build:
            problems.append(f"{lib}: its -dev ({devpkg}) is not installed in the build stage")
    assert not problems, "deploy/docker/Dockerfile: " + "; ".join(problems)
    log(f"image: the runtime stage has the packages of all {len(needed)} libraries the binary links "
        f"or loads on first use ({len(lazy)})")


def kube_api_tls(work):
    """A self-signed serving certificate for the API stand-in (IP SAN KUBE_IP); its ca.crt goes
    into the service-account directory, as the kubelet mounts it."""
    key, crt = os.path.join(work, "apiserver.key"), os.path.join(work, "ca.crt")
    out = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                          key, "-out", crt, "-days", "1", "-subj", "/CN=kube-apiserver",
                          "-addext", f"subjectAltName=IP:{KUBE_IP},DNS:kubernetes.default.svc"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"openssl: {out.stderr}"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ctx, crt


def trees():
    want = [t for t in os.environ.get("PINGVAS_BOOT_TREES", "").split(",") if t]
    out = ["deploy/k8s/base"] + sorted(
        os.path.join("deploy/k8s/overlays", d) for d in os.listdir(os.path.join(ROOT, "deploy/k8s/overlays")))
    return [t for t in out if not want or os.path.basename(t) in want]


def inside():
    lo_up()
    inside_forwarders()
    sa = tempfile.mkdtemp(prefix="pingvas-boot-sa-")
    os.chmod(sa, 0o755)
    tls, ca = kube_api_tls(sa)
    with open(os.path.join(sa, "token"), "w") as f:
        f.write("eyJhbGciOiJSUzI1NiJ9.projected-service-account-token." + secrets.token_hex(16))
    with open(os.path.join(sa, "namespace"), "w") as f:
        f.write("pingvas")
    for n in ("token", "namespace", "ca.crt"):
        os.chmod(os.path.join(sa, n), 0o644)
    kube = KubeAPI(tls, os.path.join(sa, "token"))
    failed = 0
    try:
        image_packages()
    except Exception:
        failed += 1
        log(f"FAIL image:\n{traceback.format_exc()}")
    for t in trees():
        log(f"{t}:")
        tr = Tree(t, kube, sa)
        t0 = time.monotonic()
        try:
            tr.run()
            problems = tr.sts.problems + tr.s3.problems + kube.problems if hasattr(tr, "s3") else []
            assert not problems, "stand-ins saw: " + "; ".join(problems)
            log(f"PASS {t} ({time.monotonic() - t0:.1f} s)")
        except Exception:
            failed += 1
            log(f"FAIL {t}:\n{traceback.format_exc()}")
            for p in tr.pods.procs:
                log(f"--- {p.name} log (tail) ---\n{tr.pods.log(p.name)[-3000:]}")
        finally:
            tr.close()
            kube.problems.clear()
    kube.close()
    return 1 if failed else 0


def main():
    if not os.access(BIN, os.X_OK):
        print(f"boot: PINGVAS_BIN {BIN} is not an executable", file=sys.stderr)
        return 2
    if os.environ.get("PINGVAS_BOOT_FWD"):
        return inside()
    for tool in ("kubectl", "openssl", "unshare"):
        if not subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).stdout:
            print(f"boot: {tool} is missing (scripts/deps.sh --test; kubectl: see "
                  "scripts/check-deploy.sh)", file=sys.stderr)
            return 2
    if not os.environ.get("PINGVAS_TEST_PG_URL") or not os.environ.get("PINGVAS_TEST_REDIS_URL"):
        print("boot: the test services are not set up: eval the output of each "
              "scripts/services/*.sh first (scripts/test.sh does)", file=sys.stderr)
        return 2
    return outside(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
