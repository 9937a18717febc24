"""Bad input against the real server, table-driven (issue 4, section 3).

Every row is one request a careless or hostile client can send: malformed JSON, wrong types,
overflowing and negative numbers, NaN, NUL and invalid UTF-8, oversized and chunked bodies,
missing/malformed/expired/`alg: none`/foreign-secret tokens, another user's job ids, path
traversal under /images/, SQL metacharacters in every field, and forged worker-protocol calls.
Each must get its 4xx with a JSON error body. While the table runs, a background client keeps
using the API and must be served every time; at the end no job was created (other than the
rows that are valid input and say so) and no credit moved. Slow trickling clients and thousands
of idle connections are held open while others are served, and the server closes them itself.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import threading
import time
import urllib.parse

import pv

FAST = ["--lease", "2s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]
IDLE_SOCKETS = int(os.environ.get("PINGVAS_TEST_IDLE_SOCKETS", "2000"))
CONN_TIMEOUT_S = 30  # the server's idle timeout; --header-timeout (10 s) closes idle ones sooner


# ---------- helpers ----------

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(claims, secret=pv.JWT_SECRET, alg="HS256", header=None):
    h = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing = b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(claims).encode())
    if alg == "none":
        return signing + "."
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64u(sig)


def raw_request(env, method, path, headers=None, body=None, timeout=30):
    """Sends path exactly as given (no normalization); returns (status, headers, body)."""
    u = urllib.parse.urlparse(env.url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        if body is not None and "Transfer-Encoding" not in (headers or {}):
            c.putheader("Content-Length", str(len(body)))
        try:
            c.endheaders()
            if body is not None:
                c.send(body)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer and close before reading everything we send (an oversized
            # header, say): its answer is still there to read.
            pass
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def raw_socket_request(env, data, timeout=15):
    """Writes raw bytes to a fresh connection; returns (status or None, whole reply)."""
    u = urllib.parse.urlparse(env.url)
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        s.sendall(data)
        reply = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            reply += chunk
            if b"\r\n\r\n" in reply:
                head, _, rest = reply.partition(b"\r\n\r\n")
                cl = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
    finally:
        s.close()
    status = None
    if reply.startswith(b"HTTP/1."):
        status = int(reply.split(b" ", 2)[1])
    return status, reply


def assert_json_error(status, body, want, what):
    assert status == want, f"{what}: got {status} {body[:300]!r}, want {want}"
    try:
        j = json.loads(body.decode())
    except Exception:
        raise AssertionError(f"{what}: {status} body is not JSON: {body[:300]!r}")
    assert isinstance(j, dict) and isinstance(j.get("error"), dict), f"{what}: {j}"
    assert j["error"].get("code") and j["error"].get("message"), f"{what}: {j}"


class Background:
    """A well-behaved client that keeps using the API while the bad input runs."""

    def __init__(self, env, tok):
        self.env, self.tok = env, tok
        self.ok = self.bad = 0
        self.errors = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.env.api("GET", "/api/v1/credits", token=self.tok, timeout=10)
                h = pv.http("GET", self.env.url + "/healthz", timeout=10)
                if r.status == 200 and h.status == 200:
                    self.ok += 1
                else:
                    self.bad += 1
                    self.errors.append((r.status, h.status))
            except Exception as e:  # a refused or hung connection is a failure too
                self.bad += 1
                self.errors.append(repr(e))
            time.sleep(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join(timeout=30)


def snapshot(env, tok):
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    jobs = env.api("GET", "/api/v1/generation?limit=100", token=tok).json()["jobs"]
    return c["balance"], c["reserved"], len(c["ledger"]), sorted(j["id"] for j in jobs)


# ---------- the create-body table ----------

BIG = 10 * 1024 * 1024
CREATE_ROWS = [
    # (name, raw body bytes, expected status)
    ("empty body", b"", 400),
    ("not json", b"hello", 400),
    ("truncated object", b'{"prompt":"a"', 400),
    ("trailing garbage", b'{"prompt":"a"}xyz', 400),
    ("array", b'["prompt"]', 400),
    ("bare string", b'"prompt"', 400),
    ("null", b"null", 400),
    ("duplicate key", b'{"prompt":"a","prompt":"b"}', 400),
    ("missing prompt", b'{"steps":20}', 422),
    ("empty prompt", b'{"prompt":""}', 422),
    ("prompt number", b'{"prompt":5}', 422),
    ("prompt null", b'{"prompt":null}', 422),
    ("prompt object", b'{"prompt":{"a":1}}', 422),
    ("prompt too long", json.dumps({"prompt": "x" * 2001}).encode(), 422),
    ("negative prompt too long", json.dumps({"prompt": "a", "negative_prompt": "y" * 2001}).encode(), 422),
    ("width string", b'{"prompt":"a","width":"512"}', 422),
    ("width fraction", b'{"prompt":"a","width":512.5}', 422),
    ("width not multiple of 8", b'{"prompt":"a","width":513}', 422),
    ("width negative", b'{"prompt":"a","width":-512}', 422),
    ("width zero", b'{"prompt":"a","width":0}', 422),
    ("width too big", b'{"prompt":"a","width":4096}', 422),
    ("width 2^63", b'{"prompt":"a","width":9223372036854775808}', 422),
    ("width 1e400", b'{"prompt":"a","width":1e400}', 400),
    ("height huge negative", b'{"prompt":"a","height":-99999999999999999999}', 422),
    ("steps zero", b'{"prompt":"a","steps":0}', 422),
    ("steps negative", b'{"prompt":"a","steps":-1}', 422),
    ("steps 151", b'{"prompt":"a","steps":151}', 422),
    ("steps bool", b'{"prompt":"a","steps":true}', 422),
    ("steps 2^64", b'{"prompt":"a","steps":18446744073709551616}', 422),
    ("cfg_scale NaN literal", b'{"prompt":"a","cfg_scale":NaN}', 400),
    ("cfg_scale Infinity literal", b'{"prompt":"a","cfg_scale":Infinity}', 400),
    ("cfg_scale -Infinity literal", b'{"prompt":"a","cfg_scale":-Infinity}', 400),
    ("cfg_scale 1e309", b'{"prompt":"a","cfg_scale":1e309}', 400),
    ("cfg_scale string NaN", b'{"prompt":"a","cfg_scale":"NaN"}', 422),
    ("cfg_scale zero", b'{"prompt":"a","cfg_scale":0}', 422),
    ("cfg_scale 31", b'{"prompt":"a","cfg_scale":31}', 422),
    ("seed negative", b'{"prompt":"a","seed":-1}', 422),
    ("seed 2^32", b'{"prompt":"a","seed":4294967296}', 422),
    ("seed huge", b'{"prompt":"a","seed":1e30}', 422),
    ("seed fraction", b'{"prompt":"a","seed":1.5}', 422),
    ("seed string", b'{"prompt":"a","seed":"42"}', 422),
    ("model unknown", b'{"prompt":"a","model":"sd99"}', 422),
    ("model number", b'{"prompt":"a","model":15}', 422),
    ("unknown field", b'{"prompt":"a","priority":1}', 422),
    ("NUL escape in prompt", b'{"prompt":"a\\u0000b"}', 422),
    ("raw NUL byte in prompt", b'{"prompt":"a\x00b"}', 400),
    ("NUL escape in negative prompt", b'{"prompt":"a","negative_prompt":"\\u0000"}', 422),
    ("invalid UTF-8 in prompt", b'{"prompt":"a\xff\xfeb"}', 400),
    ("overlong UTF-8 in prompt", b'{"prompt":"\xc0\xaf"}', 400),
    ("lone surrogate escape", b'{"prompt":"\\ud800"}', 400),
    ("UTF-16 body", '{"prompt":"a"}'.encode("utf-16"), 400),
    ("deep nesting", b'{"prompt":' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    ("SQL in model", json.dumps({"prompt": "a", "model": "sd15' OR '1'='1"}).encode(), 422),
    ("SQL as field name", json.dumps({"prompt": "a", "x'; DROP TABLE users; --": 1}).encode(), 422),
    ("SQL in width", b'{"prompt":"a","width":"512; DROP TABLE jobs"}', 422),
    ("70 KiB body", json.dumps({"prompt": "a", "negative_prompt": "n" * 70000}).encode(), 413),
    ("10 MB body", b'{"prompt":"' + b"a" * BIG + b'"}', 413),
]

# Valid input that happens to be full of SQL: it is accepted and stored byte for byte.
SQL_VALID = {"prompt": "'; DROP TABLE generation_jobs; -- \" OR 1=1 /*",
             "negative_prompt": "x'); DELETE FROM users WHERE ('1'='1"}


def test_create_body_table(env):
    env.start_server(*FAST)
    tok = env.add_user("alice", credits=100000)
    bystander = env.add_user("bob", credits=1000)
    before = snapshot(env, tok)
    tried = 0
    with Background(env, bystander) as bg:
        for name, body, want in CREATE_ROWS:
            st, hdrs, out = raw_request(env, "POST", "/api/v1/generation/create",
                                        {"Authorization": "Bearer " + tok,
                                         "Content-Type": "application/json"}, body)
            assert_json_error(st, out, want, name)
            tried += 1
        # Wrong media type and method.
        st, _, out = raw_request(env, "POST", "/api/v1/generation/create",
                                 {"Authorization": "Bearer " + tok, "Content-Type": "text/plain"},
                                 b'{"prompt":"a"}')
        assert_json_error(st, out, 415, "text/plain body")
        st, _, out = raw_request(env, "GET", "/api/v1/generation/create",
                                 {"Authorization": "Bearer " + tok})
        assert_json_error(st, out, 405, "GET create")
        # Idempotency-Key limits.
        st, _, out = raw_request(env, "POST", "/api/v1/generation/create",
                                 {"Authorization": "Bearer " + tok, "Content-Type": "application/json",
                                  "Idempotency-Key": "k" * 300}, b'{"prompt":"a"}')
        assert_json_error(st, out, 400, "Idempotency-Key too long")
        # Chunked bodies: an oversized one is cut off at the cap, a malformed one refused.
        chunk = b"a" * 8192
        body = b'{"prompt":"' + chunk * 16 + b'"}'
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096])
                          for i in range(0, len(body), 4096)) + b"0\r\n\r\n"
        st, reply = raw_socket_request(env, (
            b"POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + tok.encode() + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n") + framed)
        assert_json_error(st, reply.partition(b"\r\n\r\n")[2], 413, "oversized chunked body")
        st, reply = raw_socket_request(env, (
            b"POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + tok.encode() + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\nZZZ\r\n{\"prompt\":\"a\"}\r\n0\r\n\r\n"))
        assert st is None or 400 <= st < 500, f"malformed chunked framing: {reply[:200]!r}"
        tried += 5
    assert bg.bad == 0 and bg.ok > 0, f"bystander was not served: {bg.errors[:5]}"
    assert snapshot(env, tok) == before, "a refused request created a job or moved credits"
    # A valid chunked body is accepted (chunked is legal HTTP/1.1, not bad input in itself).
    body = json.dumps({"prompt": "chunked ok", "steps": 1}).encode()
    st, reply = raw_socket_request(env, (
        b"POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + tok.encode() + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n") + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert st == 201, reply[:300]
    # SQL metacharacters in valid fields are data, stored verbatim, and the tables still exist.
    r = env.create(tok, SQL_VALID, headers={"Idempotency-Key": "'; DROP TABLE users; --"})
    assert r.status == 201, r
    j = env.job(tok, r.json()["id"])
    assert j["prompt"] == SQL_VALID["prompt"] and j["negative_prompt"] == SQL_VALID["negative_prompt"]
    again = env.create(tok, SQL_VALID, headers={"Idempotency-Key": "'; DROP TABLE users; --"})
    assert again.status == 200 and again.json()["id"] == j["id"], again
    assert env.api("GET", "/api/v1/credits", token=tok).status == 200
    print(f"bad create bodies tried: {tried}; bystander requests served: {bg.ok}")


# ---------- tokens ----------

def test_tokens_table(env):
    env.start_server(*FAST)
    tok = env.add_user("carol", credits=5000)
    bystander = env.add_user("dave", credits=1000)
    before = snapshot(env, tok)
    now = int(time.time())
    good = {"sub": "carol", "iat": now, "exp": now + 3600}
    rows = [
        ("no header", None),
        ("empty bearer", "Bearer "),
        ("basic scheme", "Basic Y2Fyb2w6cHc="),
        ("bearer lowercase garbage", "bearer " + tok),
        ("one part", "Bearer abc"),
        ("two parts", "Bearer abc.def"),
        ("four parts", "Bearer a.b.c.d"),
        ("bad base64", "Bearer !!!.???.###"),
        ("header not json", "Bearer " + b64u(b"nope") + "." + b64u(b"{}") + ".sig"),
        ("alg none", "Bearer " + make_jwt(good, alg="none")),
        ("alg none signed", "Bearer " + make_jwt(good, header={"alg": "none", "typ": "JWT"})),
        ("alg HS512", "Bearer " + make_jwt(good, header={"alg": "HS512"})),
        ("alg RS256", "Bearer " + make_jwt(good, header={"alg": "RS256"})),
        ("other secret", "Bearer " + make_jwt(good, secret="another-secret-0123456789abcdef")),
        ("expired", "Bearer " + make_jwt({"sub": "carol", "iat": now - 7200, "exp": now - 3600})),
        ("no exp", "Bearer " + make_jwt({"sub": "carol", "iat": now})),
        ("exp string", "Bearer " + make_jwt({"sub": "carol", "exp": "tomorrow"})),
        ("no sub", "Bearer " + make_jwt({"iat": now, "exp": now + 3600})),
        ("sub number", "Bearer " + make_jwt({"sub": 42, "exp": now + 3600})),
        ("unknown user", "Bearer " + make_jwt({"sub": "mallory", "exp": now + 3600})),
        ("SQL in sub", "Bearer " + make_jwt({"sub": "carol' OR '1'='1", "exp": now + 3600})),
        ("tampered payload", "Bearer " + ".".join([tok.split(".")[0],
                                                   b64u(json.dumps({"sub": "dave", "exp": now + 3600}).encode()),
                                                   tok.split(".")[2]])),
        ("truncated signature", "Bearer " + tok[:-4]),
        ("worker token as user", "Bearer " + pv.WORKER_TOKEN),
        ("huge token", "Bearer " + "a" * 60000),
    ]
    endpoints = [("POST", "/api/v1/generation/create", b'{"prompt":"a"}'),
                 ("GET", "/api/v1/credits", None),
                 ("GET", "/api/v1/generation", None),
                 ("GET", "/api/v1/queue", None)]
    tried = 0
    with Background(env, bystander) as bg:
        for name, auth in rows:
            for method, path, body in endpoints:
                h = {"Content-Type": "application/json"}
                if auth is not None:
                    h["Authorization"] = auth
                if name == "worker token as user" and path == "/api/v1/queue":
                    continue  # the queue endpoint accepts the worker token (KEDA reads it)
                st, _, out = raw_request(env, method, path, h, body)
                if name == "huge token":
                    # libmicrohttpd refuses headers over its buffer itself (431 or 413/400).
                    assert 400 <= st < 500, f"{name} {path}: {st}"
                else:
                    assert_json_error(st, out, 401, f"{name} {method} {path}")
                tried += 1
    assert bg.bad == 0, f"bystander was not served: {bg.errors[:5]}"
    assert snapshot(env, tok) == before
    # Inside the 60 s leeway an expired token still works; the minted one works.
    lee = make_jwt({"sub": "carol", "iat": now - 100, "exp": now - 30})
    assert env.api("GET", "/api/v1/credits", token=lee).status == 200
    print(f"bad tokens tried: {tried}")


def test_header_block_limit(env):
    """A request's header block of up to 12 KiB is read (libmicrohttpd's memory per connection is
    16 KiB, src/api/server.c's CONNECTION_MEMORY); a larger one is refused with a 4xx and
    nothing else: the server goes on serving new connections."""
    env.start_server(*FAST)
    tok = env.add_user("erin", credits=1000)
    auth = {"Authorization": "Bearer " + tok}
    for size in (1024, 8 * 1024, 12 * 1024):
        st, _, out = raw_request(env, "GET", "/api/v1/credits", {**auth, "X-Pad": "a" * size})
        assert st == 200, (size, st, out[:200])
        assert json.loads(out)["balance"] == 1000
    # the same spread over many headers (libmicrohttpd keeps a record of each in the same memory)
    many = {**auth, **{f"X-Pad-{i}": "b" * 100 for i in range(60)}}
    st, _, _ = raw_request(env, "GET", "/api/v1/credits", many)
    assert st == 200, st
    for size in (20 * 1024, 64 * 1024):
        st, _, _ = raw_request(env, "GET", "/api/v1/credits", {**auth, "X-Pad": "a" * size})
        assert 400 <= st < 500 and st != 401, (size, st)
    # a create with a 12 KiB header block still goes through and is stored once
    st, _, out = raw_request(env, "POST", "/api/v1/generation/create",
                             {**auth, "Content-Type": "application/json", "X-Pad": "c" * 12288},
                             b'{"prompt":"header block"}')
    assert st == 201, (st, out[:200])
    job = json.loads(out)["id"]
    assert env.api("GET", f"/api/v1/generation/{job}", token=tok).status == 200
    assert env.api("GET", "/healthz").status == 200


# ---------- other users' jobs, paths, query parameters ----------

def test_foreign_jobs_paths_and_queries(env):
    env.start_server(*FAST)
    alice = env.add_user("alice", credits=5000)
    eve = env.add_user("eve", credits=5000)
    jid = env.create(alice, {"prompt": "mine", "steps": 1}).json()["id"]
    a_before, e_before = snapshot(env, alice), snapshot(env, eve)
    tried = 0
    rows = [
        ("GET", f"/api/v1/generation/{jid}", eve, 404),
        ("POST", f"/api/v1/generation/{jid}/cancel", eve, 404),
        ("GET", "/api/v1/generation/does-not-exist", alice, 404),
        ("GET", "/api/v1/generation/x'%20OR%20'1'='1", alice, 404),
        ("GET", "/api/v1/generation/" + "a" * 500, alice, 404),
        ("POST", "/api/v1/generation/%00/cancel", alice, 404),
        ("GET", f"/api/v1/generation/{jid}/../{jid}", eve, 404),
        ("GET", "/api/v1/generation?status=done", alice, 400),
        ("GET", "/api/v1/generation?status=queued'%20OR%201=1--", alice, 400),
        ("GET", "/api/v1/generation?limit=0", alice, 400),
        ("GET", "/api/v1/generation?limit=-5", alice, 400),
        ("GET", "/api/v1/generation?limit=99999999999999999999", alice, 400),
        ("GET", "/api/v1/generation?limit=1e3", alice, 400),
        ("GET", "/api/v1/generation?cursor=abc", alice, 400),
        ("GET", "/api/v1/generation?cursor=1;DROP%20TABLE%20jobs", alice, 400),
        ("GET", "/api/v1/generation?cursor=-1", alice, 400),
        ("GET", "/api/v1/generation?cursor=%00%ff", alice, 400),  # not "no cursor"
        ("GET", "/api/v1/generation?limit=%002", alice, 400),
        ("GET", "/api/v1/generation?status=%00queued", alice, 400),
        ("GET", "/api/v1/nothing", alice, 404),
        ("DELETE", f"/api/v1/generation/{jid}", alice, 404),
        ("GET", "/nothing", None, 404),
        ("GET", "/images/../pingvas.db", None, 404),
        ("GET", "/images/../../etc/passwd", None, 404),
        ("GET", "/images/%2e%2e/pingvas.db", None, 404),
        ("GET", "/images/%2e%2e%2fpingvas.db", None, 404),
        ("GET", "/images/jobs/../../jwt_secret", None, 404),
        ("GET", "/images/jobs/..%2f..%2fworker_token", None, 404),
        ("GET", "/images//etc/passwd", None, 404),
        ("GET", "/images/", None, 404),
        ("GET", "/images/jobs/%00.png", None, 404),
        ("GET", "/images/jobs/x.png%00.txt", None, 404),
        ("GET", "/images/....//....//pingvas.db", None, 404),
        ("GET", "/images/jobs/" + "a" * 5000 + ".png", None, 404),
    ]
    with Background(env, alice) as bg:
        for method, path, tok, want in rows:
            h = {"Authorization": "Bearer " + tok} if tok else {}
            st, _, out = raw_request(env, method, path, h)
            assert_json_error(st, out, want, f"{method} {path[:80]}")
            tried += 1
    assert bg.bad == 0, f"bystander was not served: {bg.errors[:5]}"
    j = env.job(alice, jid)
    assert j["status"] in ("queued",) and j["id"] == jid, j
    assert snapshot(env, alice) == a_before and snapshot(env, eve) == e_before
    print(f"foreign ids, traversal and query rows tried: {tried}")


# ---------- forged worker-protocol calls ----------

def claim(env, wid, wait_ms=3000):
    return env.api("POST", "/internal/v1/claim", {"worker_id": wid, "tier": "standard", "wait_ms": wait_ms},
                   token=pv.WORKER_TOKEN)


def test_forged_worker_protocol(env):
    env.start_server(*FAST)
    tok = env.add_user("frank", credits=5000)
    jid = env.create(tok, {"prompt": "leased", "steps": 1}).json()["id"]
    c = claim(env, "honest")
    assert c.status == 200, c
    lease = c.json()["lease_id"]
    assert c.json()["job"]["id"] == jid
    before = snapshot(env, tok)
    job_before = env.job(tok, jid)
    user_tok = tok
    now = int(time.time())
    forged_jwt = make_jwt({"sub": "worker", "exp": now + 3600})
    other = "0" * len(lease)
    J = "application/json"
    rows = [
        # (method, path, token, body, expected)
        ("POST", "/internal/v1/claim", None, {"worker_id": "x"}, 401),
        ("POST", "/internal/v1/claim", "wrong-token", {"worker_id": "x"}, 401),
        ("POST", "/internal/v1/claim", user_tok, {"worker_id": "x"}, 401),
        ("POST", "/internal/v1/claim", forged_jwt, {"worker_id": "x"}, 401),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN[:-1], {"worker_id": "x"}, 401),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN + "x", {"worker_id": "x"}, 401),
        ("POST", f"/internal/v1/jobs/{jid}/complete", None, {"lease_id": lease, "gpu_seconds": 1}, 401),
        ("POST", f"/internal/v1/jobs/{jid}/complete", user_tok, {"lease_id": lease, "gpu_seconds": 1}, 401),
        ("POST", f"/internal/v1/jobs/{jid}/heartbeat", "nope", {"lease_id": lease}, 401),
        ("POST", f"/internal/v1/jobs/{jid}/release", None, {"lease_id": lease}, 401),
        ("PUT", f"/internal/v1/jobs/{jid}/image", None, b"\x89PNG\r\n\x1a\nxxxx", 401),
        ("POST", "/internal/v1/bye", None, {"worker_id": "honest"}, 401),
        # With the worker token but another worker's lease (or none).
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, {"lease_id": other, "gpu_seconds": 1}, 409),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, {"lease_id": "' OR '1'='1", "gpu_seconds": 1}, 409),
        ("POST", f"/internal/v1/jobs/{jid}/fail", pv.WORKER_TOKEN, {"lease_id": other, "error": "x", "retryable": False}, 409),
        ("POST", f"/internal/v1/jobs/{jid}/release", pv.WORKER_TOKEN, {"lease_id": other}, 409),
        ("POST", f"/internal/v1/jobs/{jid}/heartbeat", pv.WORKER_TOKEN, {"lease_id": other}, 409),
        ("PUT", f"/internal/v1/jobs/{jid}/image", pv.WORKER_TOKEN, b"\x89PNG\r\n\x1a\nxxxx", 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, {"gpu_seconds": 1}, 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, {"lease_id": 5, "gpu_seconds": 1}, 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, {"lease_id": lease, "gpu_seconds": -1}, 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, {"lease_id": lease, "gpu_seconds": "1"}, 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, {"lease_id": lease, "gpu_seconds": 1e300}, 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, b'{"lease_id":"%s","gpu_seconds":NaN}' % lease.encode(), 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, b"not json", 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, b"[1,2]", 400),
        ("POST", f"/internal/v1/jobs/{jid}/complete", pv.WORKER_TOKEN, b"x" * 20000, 413),
        ("POST", f"/internal/v1/jobs/{jid}/frobnicate", pv.WORKER_TOKEN, {"lease_id": lease}, 404),
        ("POST", "/internal/v1/jobs/nope/complete", pv.WORKER_TOKEN, {"lease_id": lease, "gpu_seconds": 1}, 404),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"tier": "standard"}, 400),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"worker_id": "x", "tier": "gold"}, 400),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"worker_id": "x", "tier": 5}, 400),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"worker_id": "x", "wait_ms": -1}, 400),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"worker_id": "x", "wait_ms": 10 ** 12}, 400),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"worker_id": "x", "wait_ms": "5"}, 400),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"worker_id": "w" * 200}, 400),
        ("POST", "/internal/v1/claim", pv.WORKER_TOKEN, {"worker_id": ""}, 400),
        ("POST", "/internal/v1/nothing", pv.WORKER_TOKEN, {}, 404),
    ]
    tried = 0
    for method, path, t, body, want in rows:
        h = {"Content-Type": J}
        if t:
            h["Authorization"] = "Bearer " + t
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        if method == "PUT":
            h["Content-Type"] = "image/png"
            if t == pv.WORKER_TOKEN and want == 400:
                pass  # no X-Pingvas-Lease header
        st, _, out = raw_request(env, method, path, h, body)
        assert_json_error(st, out, want, f"{method} {path} token={str(t)[:12]} body={body[:60]!r}")
        tried += 1
    # An image upload under a foreign lease is refused.
    st, _, out = raw_request(env, "PUT", f"/internal/v1/jobs/{jid}/image",
                             {"Authorization": "Bearer " + pv.WORKER_TOKEN, "X-Pingvas-Lease": other,
                              "Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert_json_error(st, out, 409, "image under a foreign lease")
    tried += 1
    assert snapshot(env, tok) == before
    j = env.job(tok, jid)
    assert j["status"] == "in_progress" and j["attempts"] == job_before["attempts"], j
    # The honest holder still owns the job: its heartbeat is accepted.
    hb = env.api("POST", f"/internal/v1/jobs/{jid}/heartbeat", {"lease_id": lease}, token=pv.WORKER_TOKEN)
    assert hb.status == 200, hb
    print(f"forged worker-protocol calls tried: {tried}")


# ---------- slow clients and thousands of idle connections ----------

def test_trickle_and_idle_connections(env):
    # Thousands of sockets from one address: this test is about the global count, so the per-IP
    # limit (test_security covers it) is off.
    env.start_server(*FAST, "--max-connections-per-ip", "0")
    tok = env.add_user("gina", credits=5000)
    u = urllib.parse.urlparse(env.url)
    idle = []
    trick = []
    try:
        for _ in range(IDLE_SOCKETS):
            s = socket.create_connection((u.hostname, u.port), timeout=10)
            idle.append(s)
        # Half of a request header, then silence; and a body that stops half way.
        for i in range(20):
            s = socket.create_connection((u.hostname, u.port), timeout=10)
            s.sendall(b"POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\n")
            trick.append(s)
        body = b'{"prompt":"slow"}'
        slow = socket.create_connection((u.hostname, u.port), timeout=10)
        slow.sendall(b"POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + tok.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body) + 100).encode() + b"\r\n\r\n")
        t0 = time.monotonic()
        served = 0
        # Trickle the slow body one byte at a time while others are served.
        for i, b in enumerate(body):
            slow.sendall(bytes([b]))
            r = env.create(tok, {"prompt": f"served while {IDLE_SOCKETS} sockets idle", "steps": 1},
                           timeout=10)
            assert r.status == 201, r
            assert pv.http("GET", env.url + "/healthz", timeout=10).status == 200
            served += 1
            time.sleep(0.05)
        # Then everyone goes silent; the server must close them after its idle timeout.
        deadline = t0 + CONN_TIMEOUT_S + 15
        open_socks = idle + trick + [slow]
        closed = 0
        for s in open_socks:
            s.settimeout(max(1.0, deadline - time.monotonic()))
        for s in open_socks:
            try:
                s.settimeout(max(0.5, deadline - time.monotonic()))
                data = s.recv(4096)
                # Either a plain close or an HTTP 4xx (408) before it.
                assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:100]
                closed += 1
            except ConnectionResetError:
                closed += 1
            except socket.timeout:
                break
        assert closed == len(open_socks), f"{len(open_socks) - closed} idle connections never closed"
        r = env.create(tok, {"prompt": "after", "steps": 1})
        assert r.status == 201
        jobs = env.api("GET", "/api/v1/generation?limit=100", token=tok).json()["jobs"]
        assert all(j["prompt"] != "slow" for j in jobs), "a truncated body created a job"
        print(f"idle sockets: {IDLE_SOCKETS}, tricklers: {len(trick) + 1}, served meanwhile: {served}, "
              f"closed by the server after {time.monotonic() - t0:.1f}s")
    finally:
        for s in idle + trick:
            s.close()


if __name__ == "__main__":
    pv.main([
        pv.clean_exit(test_create_body_table),
        pv.clean_exit(test_tokens_table),
        pv.clean_exit(test_header_block_limit),
        pv.clean_exit(test_foreign_jobs_paths_and_queries),
        pv.clean_exit(test_forged_worker_protocol),
        pv.clean_exit(test_trickle_and_idle_connections),
    ])
