"""pv.py: helpers for integration tests that run the real pingvas binary.

Every test starts its own server on an ephemeral port (--port 0) in a fresh temporary data
directory and talks HTTP to it. Nothing here mocks the server; time-dependent behaviour is made
fast with the server's own flags (short leases), never by patching.
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

BIN = os.environ.get("PINGVAS_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "pingvas")
WORKER_TOKEN = "test-worker-token-0123456789abcdef"
JWT_SECRET = "test-jwt-secret-0123456789abcdef"


def run_cli(*args, data=None, env=None, check=True):
    """Runs `pingvas ARGS` and returns CompletedProcess (text)."""
    cmd = [BIN] + list(args)
    if data is not None:
        cmd += ["--data", data]
    e = dict(os.environ)
    e.setdefault("JWT_SECRET", JWT_SECRET)
    if env:
        e.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stderr}")
    return p


class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def json(self):
        return json.loads(self.body.decode()) if self.body else None

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


def metric(url, name):
    """The value of the unlabelled metric name in url's /metrics (read with the worker token)."""
    for line in http("GET", url + "/metrics", token=WORKER_TOKEN).body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def http(method, url, body=None, token=None, headers=None, timeout=30, raw=False):
    """One HTTP request; returns Response (never raises on HTTP status)."""
    h = dict(headers or {})
    data = None
    if body is not None:
        if raw:
            data = body if isinstance(body, bytes) else body.encode()
        else:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
    if token:
        h["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), dict(e.headers))


def wait_for(cond, timeout=60, interval=0.05, what="condition"):
    """Polls cond() until it returns a truthy value; returns it or raises."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def png_size(data):
    """(width, height) of a PNG, or raises."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


class Env:
    """A temp data dir plus the processes a test started; cleaned up by close()."""

    def __init__(self, name="pv"):
        self.dir = tempfile.mkdtemp(prefix=f"pingvas-{name}-")
        self.data = os.path.join(self.dir, "data")
        self.procs = []
        self.url = None
        self.server = None
        # Tests submit jobs far faster than a user may by default (10 a second, burst 200); the
        # limit itself is tested in test_security.py, which takes this out.
        self.extra_env = {"PINGVAS_RATE_LIMIT": "0"}
        self.cleanups = []
        # The stack under test: "embedded" (SQLite + filesystem, the default) or "production"
        # (PostgreSQL + S3 on loopback; pv_pg.py and pv_s3.py provision a fresh database and
        # bucket per test and return the environment that points pingvas at them).
        self.stack = os.environ.get("PINGVAS_TEST_STACK", "embedded")
        if self.stack == "production":
            import pv_pg
            import pv_s3
            env_pg, drop_pg = pv_pg.provision(name)
            self.extra_env.update(env_pg)
            self.cleanups.append(drop_pg)
            env_s3, drop_s3 = pv_s3.provision(name)
            self.extra_env.update(env_s3)
            self.cleanups.append(drop_s3)

    def env(self):
        e = dict(os.environ)
        e["JWT_SECRET"] = JWT_SECRET
        e["PINGVAS_WORKER_TOKEN"] = WORKER_TOKEN
        e.update(self.extra_env)
        return e

    def _spawn(self, args, logname, cwd=None):
        log = open(os.path.join(self.dir, logname), "ab")
        p = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE, stderr=log, env=self.env(),
                             start_new_session=True, cwd=cwd)
        p.logname = logname
        self.procs.append(p)
        return p

    def _await_url(self, p):
        line = b""
        end = time.monotonic() + 30
        while time.monotonic() < end:
            line = p.stdout.readline()
            if not line:
                break
            if b"listening on " in line:
                return line.decode().split("listening on ", 1)[1].strip()
        raise AssertionError(f"server did not start: {self.log(p.logname)}")

    def start_server(self, *args, cmd="server"):
        """Starts `pingvas server` (or up) on an ephemeral port; returns the process."""
        p = self._spawn([cmd, "--port", "0", "--data", self.data] + list(args),
                        f"{cmd}.log")
        self.url = self._await_url(p)
        self.server = p
        # Drain stdout in the background so the server never blocks on a full pipe.
        import threading
        threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
        wait_for(lambda: http("GET", self.url + "/healthz").status == 200, what="healthz")
        return p

    def start_worker(self, *args, name=None):
        n = len([p for p in self.procs if p.logname.startswith("worker")])
        wid = name or f"w{n}"
        p = self._spawn(["worker", "--server", self.url, "--worker-id", wid, "--claim-wait", "2s"]
                        + list(args), f"worker-{wid}.log")
        p.worker_id = wid
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=60):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def kill9(self, p):
        p.kill()
        p.wait()

    def add_user(self, name, credits=100000, tier="standard"):
        run_cli("user", "add", name, "--credits", str(credits), "--tier", tier, data=self.data,
                env=self.env())
        return run_cli("token", name, data=self.data, env=self.env()).stdout.strip()

    def api(self, method, path, body=None, token=None, **kw):
        return http(method, self.url + path, body, token, **kw)

    def create(self, token, body=None, **kw):
        return self.api("POST", "/api/v1/generation/create", body if body is not None else {"prompt": "test"}, token,
                        **kw)

    def create_retrying(self, token, body, key, give_up_s=120, timeout=10):
        """Creates a job with Idempotency-Key key, retrying through 5xx answers and connection
        errors (server restarts, faults). Returns (job id, None), or (None, the refusal)."""
        end = time.monotonic() + give_up_s
        while time.monotonic() < end:
            try:
                r = self.create(token, body, headers={"Idempotency-Key": key}, timeout=timeout)
            except Exception:
                time.sleep(0.1)
                continue
            if r.status in (200, 201):
                return r.json()["id"], None
            if r.status >= 500:
                time.sleep(0.1)
                continue
            return None, (r.status, r.body[:200])
        return None, "gave up"

    def job(self, token, jid):
        return self.api("GET", f"/api/v1/generation/{jid}", token=token).json()

    def wait_status(self, token, jid, statuses, timeout=60):
        if isinstance(statuses, str):
            statuses = (statuses,)
        return wait_for(lambda: (lambda j: j if j and j.get("status") in statuses else None)(
            self.job(token, jid)), timeout=timeout, what=f"job {jid} to be {statuses}")

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for c in self.cleanups:
            try:
                c()
            except Exception:
                traceback.print_exc()
        shutil.rmtree(self.dir, ignore_errors=True)


def image_bytes(env, token, url):
    """The bytes of a job's image_url (a presigned URL carries its own authorisation). The
    server publishes the image just after it commits the completion, so a client that saw
    "completed" may get a 404 for a moment: wait for the 200."""
    def get():
        if url.startswith("http://") or url.startswith("https://"):
            r = http("GET", url)  # a presigned URL carries its own authorisation
        else:
            r = env.api("GET", url, token=token)
        return r if r.status == 200 else None
    return wait_for(get, timeout=30, what=f"image {url}").body


def charges_for(env, token, jid):
    """The ledger's charge entries of one job."""
    led = env.api("GET", "/api/v1/credits", token=token).json()["ledger"]
    return [e for e in led if e["kind"] == "charge" and e["job_id"] == jid]


def watch_progress(env, token, jid, timeout=60):
    """Polls the job until it ends; returns (the final job, the distinct progress values seen
    while it was in_progress, in order). Checks that progress is null in every other status."""
    seen = []

    def poll():
        j = env.job(token, jid)
        p = j.get("progress")
        if j["status"] == "in_progress":
            if p is not None and (not seen or seen[-1] != p):
                assert 0 <= p["step"] <= p["steps"], p
                seen.append(p)
        else:
            assert p is None, j
        return j if j["status"] in ("completed", "failed", "canceled") else None
    return wait_for(poll, timeout=timeout, interval=0.02, what=f"job {jid} to end"), seen


def up_engine_job(env, peer, png, *backend_args, steps=10):
    """`pingvas up` with an engine backend (backend_args: --backend ... and its URL), one
    standard worker, heartbeats every 100 ms; one job of `steps` steps as user demo. The peer
    (a stand-in made with pause_at=5) holds the job at step 5 until the job JSON has shown that
    progress; then it must complete with the engine's png. Returns the job."""
    env.start_server(*backend_args, "--workers", "1", "--enterprise-workers", "0",
                     "--heartbeat", "100ms", cmd="up")
    tok = run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    jid = env.create(tok, {"prompt": "a lighthouse at dawn", "steps": steps}).json()["id"]
    wait_for(lambda: env.job(tok, jid).get("progress") == {"step": 5, "steps": steps},
             what="progress 5 of the steps while the engine runs")
    peer.resume.set()
    j, _ = watch_progress(env, tok, jid)
    assert j["status"] == "completed", j
    assert image_bytes(env, tok, j["image_url"]) == png
    return j


def free_port_url():
    """http://127.0.0.1:PORT where nothing listens (a port just bound and closed)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def start_peer(env, peer):
    """Starts an in-process stand-in (an object with start() and stop()); stopped at close."""
    peer.start()
    env.cleanups.append(peer.stop)
    return peer


def clean_exit(test):
    """Runs test, then stops the workers and the server: each must exit 0 (under ASan, a leak or any sanitizer
    report makes it exit non-zero)."""
    def run(env):
        test(env)
        workers = [p for p in env.procs if p.logname.startswith("worker") and p.poll() is None]
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(timeout=60) == 0, f"{w.logname} did not exit cleanly"
        if env.server is not None:
            assert env.stop(env.server) == 0, "server did not exit cleanly (sanitizer report?)"
    run.__name__ = test.__name__
    return run


def main(tests):
    """Runs test functions (each gets a fresh Env); prints 'N passed, N failed'."""
    only = sys.argv[1] if len(sys.argv) > 1 else None
    passed = failed = 0
    for t in tests:
        if only and only not in t.__name__:
            continue
        env = Env(t.__name__)
        start = time.monotonic()
        try:
            t(env)
            passed += 1
            print(f"ok   {t.__name__} ({time.monotonic() - start:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}", flush=True)
            traceback.print_exc()
            for p in env.procs:
                print(f"--- {p.logname} (tail) ---\n{env.log(p.logname)}")
        finally:
            env.close()
    print(f"{passed} passed, {failed} failed")
    # os._exit, not sys.exit: a test that failed may leave threads behind (a submitter's
    # ThreadPoolExecutor still working through its queue against a server that is gone), and
    # the interpreter's exit would wait for them until ctest's timeout.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed else 0)
