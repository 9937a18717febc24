"""Security (issue 16): each test reproduces one attack of the audit and checks that it fails.

Runs on both stacks: on the production stack the image store is S3, so "reachable" means the
object exists in the bucket (where a CDN behind PUBLIC_IMAGE_BASE_URL would serve it)."""
import contextlib
import os
import socket
import sqlite3
import time
import urllib.parse

import pv
import pv_s3

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 64


def fs_stored_keys(root):
    """The keys of the filesystem store at root: the rows of its images.db, and the files an
    older layout (one file per image) left under root."""
    db = os.path.join(root, "images.db")
    out = []
    if os.path.exists(db):
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            out = [k for (k,) in c.execute("SELECT key FROM images")]
    for d, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in files
                if not (d == root and f.startswith("images.db"))]
    return out


def s3_bucket_path(env):
    """'/bucket/prefix' of the S3 store under test, or None on the filesystem store."""
    url = env.extra_env.get("STORAGE_URL", "")
    if not url.startswith("s3://"):
        return None
    return "/" + url[len("s3://"):].rstrip("/")


def stored_keys(env):
    """Every key in the image store (relative to its root or prefix)."""
    base = s3_bucket_path(env)
    if base is None:
        return fs_stored_keys(os.path.join(env.data, "images"))
    bucket, _, prefix = base[1:].partition("/")
    st, body = pv_s3.request("GET", "/" + bucket, query="list-type=2")
    assert st == 200, (st, body[:300])
    import re
    keys = [urllib.parse.unquote(k.decode()) for k in re.findall(rb"<Key>(.*?)</Key>", body)]
    return [k[len(prefix) + 1:] if prefix else k for k in keys]


def legacy_key_reachable(env, jid):
    """Whether jobs/<jid>.png, the key anyone can name (where the audit polled), can be fetched:
    from /images/ (filesystem store) or from the bucket (S3, where a CDN would serve it)."""
    base = s3_bucket_path(env)
    if base is None:
        return env.api("GET", f"/images/jobs/{jid}.png").status == 200
    st, _ = pv_s3.request("HEAD", f"{base}/jobs/{jid}.png")
    return st == 200


def keys_of(env, jid):
    return [k for k in stored_keys(env) if jid in k]


def claim(env):
    r = env.api("POST", "/internal/v1/claim", {"worker_id": "raw", "tier": "standard",
                                               "wait_ms": 5000}, token=pv.WORKER_TOKEN)
    assert r.status == 200, r
    return r.json()


def upload(env, c, data=PNG):
    """Uploads data where the claim says, as a worker does."""
    up = c["upload"]
    headers = {"Content-Type": "image/png"}
    token = None
    if up["needs_lease"]:
        headers["X-Pingvas-Lease"] = c["lease_id"]
        token = pv.WORKER_TOKEN
    r = pv.http(up["method"], up["url"], data, token=token, headers=headers, raw=True)
    assert 200 <= r.status < 300, r


def op(env, c, name, **extra):
    body = {"lease_id": c["lease_id"]}
    body.update(extra)
    return env.api("POST", f"/internal/v1/jobs/{c['job']['id']}/{name}", body,
                   token=pv.WORKER_TOKEN)


def test_image_hidden_until_completed_and_charged(env):
    """Finding 1: the audit polled /images/jobs/ID.png while the job ran and canceled on the first
    200, getting 13 of 15 images for free. An uploaded image must stay unreachable until the
    job is completed and charged, and a canceled job's image must be deleted."""
    env.start_server()
    tok = env.add_user("alice", credits=100000)
    jid = env.create(tok, {"prompt": "free lunch", "steps": 2}).json()["id"]
    c = claim(env)
    assert c["job"]["id"] == jid
    upload(env, c)
    assert not legacy_key_reachable(env, jid), "a running job's image is reachable"
    [key] = keys_of(env, jid)
    tag = key[len(f"jobs/{jid}-"):-len(".png")]
    assert len(tag) == 32 and key == f"jobs/{jid}-{tag}.png", key
    # Nothing a user sees names the key before the job is completed, and /images/ refuses it.
    seen = env.api("GET", f"/api/v1/generation/{jid}", token=tok).body
    seen += env.api("GET", "/api/v1/generation", token=tok).body
    assert tag.encode() not in seen and env.job(tok, jid)["image_url"] is None
    assert env.api("GET", "/images/" + key).status == 404
    r = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert r.status == 200 and r.json()["credits_charged"] == 0, r
    assert not legacy_key_reachable(env, jid), "a canceled job's image is reachable"
    assert op(env, c, "complete", gpu_seconds=1.0).status == 409
    assert not keys_of(env, jid), stored_keys(env)

    # The same path to completion: reachable from the moment it is completed and charged.
    jid2 = env.create(tok, {"prompt": "paid", "steps": 2}).json()["id"]
    c = claim(env)
    upload(env, c)
    [key2] = keys_of(env, jid2)
    assert env.job(tok, jid2)["image_url"] is None
    r = op(env, c, "complete", gpu_seconds=2.0)
    assert r.status == 200, r
    j = env.job(tok, jid2)
    assert j["status"] == "completed" and j["credits_charged"] >= 2, j
    assert urllib.parse.urlsplit(j["image_url"]).path.endswith(key2), (j["image_url"], key2)
    got = pv.http("GET", j["image_url"])
    assert got.status == 200 and got.body == PNG, got
    assert op(env, c, "complete", gpu_seconds=2.0).status == 200  # a replay changes nothing
    assert keys_of(env, jid2) == [key2], stored_keys(env)
    assert not legacy_key_reachable(env, jid2)


def test_failed_job_image_deleted(env):
    """Finding 1: a job that fails for good keeps no image."""
    env.start_server("--max-attempts", "1")
    tok = env.add_user("bob")
    jid = env.create(tok, {"prompt": "x", "steps": 2}).json()["id"]
    c = claim(env)
    upload(env, c)
    assert keys_of(env, jid)
    r = op(env, c, "fail", error="engine crashed", retryable=False)
    assert r.status == 200 and r.json()["status"] == "failed", r
    assert not keys_of(env, jid), stored_keys(env)


def read_head(s):
    """Reads from socket s until the end of an answer's status line and headers (or the close)."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def raw_request(env, head, body_prefix=b""):
    """Sends a request head (and the first bytes of its body) and returns what the server
    answers before the rest of the body is sent (the status line and headers)."""
    u = urllib.parse.urlsplit(env.url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        s.sendall(head.encode() + body_prefix)
        return read_head(s)
    finally:
        s.close()


def test_unauthenticated_upload_refused_on_headers(env):
    """Finding 2: 8 unauthenticated 59 MiB uploads raised the server's RSS by 530 MB, and the 401
    came after the whole body. The 401 must come on the headers, before the body is sent."""
    env.start_server()
    size = 60 * 1024 * 1024
    for path in ["/internal/v1/jobs/x/image", "/internal/v1/claim",
                 "/internal/v1/jobs/x/complete", "/internal/v1/bye"]:
        method = "PUT" if path.endswith("/image") else "POST"
        for expect in (True, False):
            head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
                    "Authorization: Bearer not-the-worker-token\r\n"
                    f"{'Expect: 100-continue' + chr(13) + chr(10) if expect else ''}\r\n")
            # Without Expect, a client starts sending at once: the answer must still come.
            got = raw_request(env, head, b"" if expect else b"\0" * 65536)
            assert got.startswith(b"HTTP/1.1 401"), (path, expect, got[:200])
    # A user call with a body: an invalid JWT is refused on the headers too.
    head = ("POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
            "Content-Type: application/json\r\nAuthorization: Bearer a.b.c\r\n\r\n")
    assert raw_request(env, head).startswith(b"HTTP/1.1 401")
    # An authenticated call whose declared body is over its cap: 413, without reading it.
    tok = env.add_user("carol")
    head = (f"POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {tok}\r\n\r\n")
    assert raw_request(env, head).startswith(b"HTTP/1.1 413")
    head = (f"PUT /internal/v1/jobs/x/image HTTP/1.1\r\nHost: x\r\nContent-Length: {size * 2}\r\n"
            f"Authorization: Bearer {pv.WORKER_TOKEN}\r\n\r\n")
    assert raw_request(env, head).startswith(b"HTTP/1.1 413")
    # The server still works, and the worker protocol with the right token is unaffected.
    assert env.create(tok).status == 201
    assert claim(env)["job"]["id"]


def complete_one(env, tok, prompt="x"):
    """Runs one job to completion through the raw worker protocol; returns its id."""
    jid = env.create(tok, {"prompt": prompt, "steps": 2}).json()["id"]
    c = claim(env)
    upload(env, c)
    assert op(env, c, "complete", gpu_seconds=1.0).status == 200
    return jid


def test_images_route_serves_only_job_images(env):
    """Finding 5: with --storage-url file:///DATA, GET /images/worker_token returned the worker
    token and /images/pingvas.db the database. Only a completed job's own image key is served,
    and never through a symlink."""
    os.makedirs(env.data, exist_ok=True)
    env.extra_env["DATABASE_URL"] = "sqlite://" + os.path.join(env.data, "pingvas.db")
    env.extra_env["STORAGE_URL"] = "file://" + env.data
    env.start_server()
    with open(os.path.join(env.data, "worker_token"), "w") as f:
        f.write("secret-worker-token-0123456789\n")
    tok = env.add_user("dave")
    jid = complete_one(env, tok)
    for key in ["worker_token", "pingvas.db", "pingvas.db-wal", "jwt_secret", "images.db",
                "jobs", f"jobs/{jid}.png", "jobs/../worker_token", "jobs/%2e%2e/worker_token"]:
        r = env.api("GET", "/images/" + key)
        assert r.status == 404 and b"secret-worker-token" not in r.body, (key, r)
    path = urllib.parse.urlsplit(env.job(tok, jid)["image_url"]).path
    r = env.api("GET", path)
    assert r.status == 200 and r.body == PNG and r.headers["Content-Type"] == "image/png", r
    # The image as a file of the layout before images.db (its row gone): still served...
    key = path[len("/images/"):]
    with contextlib.closing(sqlite3.connect(os.path.join(env.data, "images.db"),
                                            timeout=10)) as c, c:
        assert c.execute("DELETE FROM images WHERE key = ?", (key,)).rowcount == 1
    img = os.path.join(env.data, key)
    os.makedirs(os.path.dirname(img), exist_ok=True)
    with open(img, "wb") as f:
        f.write(PNG)
    assert env.api("GET", path).body == PNG
    # ...but a symlink planted there is refused (O_NOFOLLOW), not followed.
    os.unlink(img)
    os.symlink(os.path.join(env.data, "worker_token"), img)
    r = env.api("GET", path)
    assert r.status == 404 and b"secret-worker-token" not in r.body, r


def test_redis_password_not_in_messages(env):
    """Finding 6: the Celery bridge printed the whole REDIS_URL, password included, and
    log_redact_url did not mask ?password=."""
    for url in ["redis://:s3cret-pw@127.0.0.1:99999/0", "redis://u:s3cret-pw@127.0.0.1:1/x",
                "redis://127.0.0.1:1/x?password=s3cret-pw&x=1"]:
        p = pv.run_cli("server", "--port", "0", "--redis-url", url, data=env.data, env=env.env(),
                       check=False)
        assert p.returncode != 0, p
        out = p.stdout + p.stderr
        assert "s3cret-pw" not in out and "REDIS" in out.upper(), out


def test_log_lines_cannot_be_forged(env):
    """Finding 7: a scaling reason of 'x\\ny="z' split the server's log line. Values are escaped
    by the log writer: every line of the log is one whole event."""
    env.start_server()
    r = env.api("POST", "/internal/v1/scaling/events",
                {"tier": "standard", "from": 0, "to": 1, "reason": 'x\ny="z" level=error'},
                token=pv.WORKER_TOKEN)
    assert r.status == 200, r
    r = env.api("POST", "/internal/v1/claim", {"worker_id": "w\nlevel=error fake=1",
                                               "tier": "standard", "wait_ms": 0},
                token=pv.WORKER_TOKEN)
    assert r.status in (204, 400), r
    tok = env.add_user("erin")
    jid = env.create(tok, {"prompt": "p", "steps": 2}).json()["id"]
    c = claim(env)
    assert op(env, c, "fail", error='boom\r\nlevel=error forged="1"', retryable=True).status == 200
    log = pv.wait_for(lambda: (lambda t: t if "job_attempt_failed" in t else None)(
        env.log("server.log")), what="the failure in the log")
    for line in log.splitlines():
        assert line[:4].isdigit() and " level=" in line, f"forged or split line: {line!r}"
        assert "forged=" not in line or 'err="boom\\r\\nlevel=error forged=\\"1\\""' in line, line
    assert 'reason="x\\ny=\\"z\\" level=error"' in log, log


def mode(path):
    return os.stat(path).st_mode & 0o777


def test_data_files_private(env):
    """Finding 8: pingvas.db was created 0644 in a 0755 directory (prompts and balances readable
    by every local user). The data directory is created 0700, the database files 0600, and an
    existing world-readable database is made private when the server opens it."""
    env.extra_env.pop("DATABASE_URL", None)  # the embedded default: sqlite://DATA/pingvas.db
    env.start_server()
    tok = env.add_user("frank")
    assert env.create(tok).status == 201
    db = os.path.join(env.data, "pingvas.db")
    assert mode(env.data) & 0o077 == 0, oct(mode(env.data))
    for f in (db, db + "-wal", db + "-shm"):
        assert not os.path.exists(f) or mode(f) & 0o077 == 0, (f, oct(mode(f)))
    assert env.stop(env.server) == 0
    for f in (db, db + "-wal", db + "-shm"):
        if os.path.exists(f):
            os.chmod(f, 0o644)
    env.start_server()
    for f in (db, db + "-wal", db + "-shm"):
        assert not os.path.exists(f) or mode(f) & 0o077 == 0, (f, oct(mode(f)))


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_local_workers_hold_no_server_secrets(env):
    """Finding 8: workers started by `pingvas up` inherited JWT_SECRET (and the database and
    storage credentials) though they never use them."""
    env.extra_env["REDIS_URL"] = ""  # no bridge; the variable itself must not reach a worker
    env.extra_env["PGPASSWORD"] = "pg-secret-0123"
    up = env.start_server("--workers", "1", "--time-scale", "0", cmd="up")
    tok = env.add_user("gina")
    jid = env.create(tok, {"prompt": "w", "steps": 2}).json()["id"]
    env.wait_status(tok, jid, "completed")  # the worker works without them
    workers = pv.wait_for(lambda: children(up.pid), what="a worker process")
    for w in workers:
        with open(f"/proc/{w}/environ", "rb") as f:
            names = {kv.split(b"=", 1)[0].decode() for kv in f.read().split(b"\0") if kv}
        assert {"PINGVAS_WORKER_TOKEN", "PINGVAS_STATUS_FD"} <= names, names
        leaked = names & {"JWT_SECRET", "DATABASE_URL", "PGPASSWORD", "REDIS_URL",
                          "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
        assert not leaked, leaked


def test_overrun_never_takes_other_jobs_reservations(env):
    """Finding 8: a charge was capped at the balance, so a job far slower than its estimate took
    the credits reserved for the user's other jobs and left them unpaid. It is now capped at its
    own reservation plus the balance nobody reserved."""
    env.start_server("--credit-rate", "10")
    a_body = {"prompt": "slow", "steps": 2, "width": 512, "height": 512}
    probe = env.add_user("probe", credits=1000)
    reserve = env.create(probe, a_body).json()
    r = env.api("GET", "/api/v1/credits", token=probe).json()["reserved"]
    tok = env.add_user("hank", credits=2 * r)
    a = env.create(tok, a_body).json()["id"]
    b = env.create(tok, a_body).json()["id"]
    assert env.api("GET", "/api/v1/credits", token=tok).json()["available"] == 0
    env.api("POST", f"/api/v1/generation/{reserve['id']}/cancel", token=probe)
    ca = claim(env)
    cb = claim(env)
    assert {ca["job"]["id"], cb["job"]["id"]} == {a, b}
    ca, cb = (ca, cb) if ca["job"]["id"] == a else (cb, ca)
    upload(env, ca)
    upload(env, cb)
    assert op(env, ca, "complete", gpu_seconds=1000.0).status == 200  # far over its estimate
    assert op(env, cb, "complete", gpu_seconds=0.2).status == 200     # cost 2, reserved r
    ja, jb = env.job(tok, a), env.job(tok, b)
    assert ja["credits_charged"] == r, (ja, r)
    assert jb["credits_charged"] == 2, jb
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    assert c["balance"] == 2 * r - r - 2 and c["reserved"] == 0, c


def test_fleet_views_for_operators_only(env):
    """Finding 8: /metrics (fleet totals: credits charged, GPU-seconds, workers) was open to
    anyone, and every user could read the scaling events. Users keep the per-tier backlog
    (/api/v1/queue) and their own jobs; the fleet views need the worker or an operator token."""
    env.start_server()
    tok = env.add_user("ida")
    assert env.api("GET", "/metrics").status == 401
    assert env.api("GET", "/metrics", token=tok).status == 403
    assert env.api("GET", "/api/v1/scaling/events", token=tok).status == 403
    assert env.api("GET", "/api/v1/queue", token=tok).status == 200
    assert env.api("GET", "/metrics", token=pv.WORKER_TOKEN).status == 200
    assert env.api("GET", "/api/v1/scaling/events", token=pv.WORKER_TOKEN).status == 200
    admin = pv.run_cli("token", "ida", "--role", "admin", data=env.data,
                       env=env.env()).stdout.strip()
    assert env.api("GET", "/metrics", token=admin).status == 200
    assert env.api("GET", "/api/v1/scaling/events", token=admin).status == 200
    assert env.stop(env.server) == 0
    env.start_server("--metrics-public")
    assert env.api("GET", "/metrics").status == 200


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def closed_by_server(sock, trickle=None):
    """Waits until the server closes sock (recv gives b"" or a reset), sending trickle (one byte
    at a time) meanwhile; True when it did, False when still open after 60 s."""
    sock.settimeout(0.2)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if trickle:
                sock.sendall(trickle[:1])
                trickle = trickle[1:] or trickle
            if sock.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def healthz_ok(env):
    try:
        return env.api("GET", "/healthz", timeout=5).status == 200
    except OSError:
        return False


def test_slow_clients_cannot_hold_the_server(env):
    """Finding 3: 4,100 sockets sending partial headers made /healthz fail, a client sending 8
    bytes every 10 s kept its slot forever, and workers shared the listener. Now: a per-IP
    connection limit, absolute deadlines for the headers and the whole request, and a worker
    listener users cannot fill."""
    wport = free_port()
    env.start_server("--max-connections", "16", "--max-connections-per-ip", "8",
                     "--header-timeout", "2s", "--request-timeout", "3s",
                     "--worker-port", str(wport))
    u = urllib.parse.urlsplit(env.url)
    partial = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"

    def stalled(src):
        s = socket.create_connection((u.hostname, u.port), source_address=(src, 0))
        s.sendall(partial)
        return s
    # (not from 127.0.0.1: the harness's last /healthz came from there, and the server may not
    # have cleaned that connection up yet, so it could still count against that address's limit)
    held = [stalled("127.0.0.3") for _ in range(8)]
    # A ninth from the same address is turned away at once; another address still gets in.
    extra = stalled("127.0.0.3")
    assert closed_by_server(extra), "the per-IP limit let a ninth connection in"
    held += [stalled("127.0.0.2") for _ in range(8)]  # the public port is now full (16)
    # Workers have a listener of their own: the worker protocol still answers.
    wurl = f"http://127.0.0.1:{wport}"
    r = pv.http("POST", wurl + "/internal/v1/claim", {"worker_id": "w", "tier": "standard",
                                                       "wait_ms": 0}, token=pv.WORKER_TOKEN)
    assert r.status == 204, r
    assert pv.http("GET", wurl + "/api/v1/queue", token=pv.WORKER_TOKEN).status == 404
    # Stalled headers are closed at the header deadline, so the public port recovers.
    for s in held:
        assert closed_by_server(s), "a connection with partial headers was never closed"
        s.close()
    # (the server frees a slot once its connection thread has cleaned up: wait for that)
    pv.wait_for(lambda: healthz_ok(env), timeout=30, what="/healthz after the stalls closed")
    # One byte at a time, never finishing the headers: closed too (the idle timeout never was).
    s = socket.create_connection((u.hostname, u.port))
    assert closed_by_server(s, trickle=b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10000)
    # A body trickled slower than the request deadline: closed as well.
    tok = env.add_user("jack")
    s = socket.create_connection((u.hostname, u.port))
    s.sendall((f"POST /api/v1/generation/create HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
               f"Content-Type: application/json\r\nAuthorization: Bearer {tok}\r\n\r\n").encode())
    assert closed_by_server(s, trickle=b" " * 60000)
    assert "event=slow_client_closed" in env.log("server.log")
    # the 16 stalled, the header trickler and the body trickler (the ninth was refused)
    assert pv.metric(env.url, "pingvas_slow_clients_closed_total") == 18


def test_idle_connections_are_not_slow_clients(env):
    """The header deadline closes idle connections too (--header-timeout: "idle keep-alive
    included"), but a keep-alive connection that sent nothing after its answer, or a connection
    that never sent a byte, is not a slow client: the log says idle_connection_closed (debug),
    not slow_client_closed (info), which stays for clients that sent part of a request."""
    env.start_server("--header-timeout", "1s", "--log-level", "debug")
    u = urllib.parse.urlsplit(env.url)
    kept = socket.create_connection((u.hostname, u.port))
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    kept.settimeout(30)
    answer = read_head(kept)
    assert answer.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in answer, answer
    quiet = socket.create_connection((u.hostname, u.port))
    assert closed_by_server(kept), "an idle keep-alive connection was never closed"
    assert closed_by_server(quiet), "a connection that sent nothing was never closed"
    kept.close()
    quiet.close()
    pv.wait_for(lambda: env.log("server.log").count("event=idle_connection_closed") >= 2,
                what="two idle_connection_closed lines")
    assert "event=slow_client_closed" not in env.log("server.log")
    assert pv.metric(env.url, "pingvas_slow_clients_closed_total") == 0
    # A client that sends part of a request and stalls is still a slow client.
    s = socket.create_connection((u.hostname, u.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert closed_by_server(s)
    s.close()
    pv.wait_for(lambda: "event=slow_client_closed phase=headers" in env.log("server.log"),
                what="the slow client's log line")
    assert pv.metric(env.url, "pingvas_slow_clients_closed_total") == 1


def test_rate_limit_on_by_default_counts_cancels(env):
    """Finding 4: 1,500 create-cancel cycles in 2.9 s grew the database by 28.6 MB with the
    balance unchanged. A per-user rate limit is on by default, and cancels take from it too."""
    env.extra_env.pop("PINGVAS_RATE_LIMIT", None)  # the default, not pv's test setting
    env.start_server()
    tok = env.add_user("kim", credits=10 ** 9)
    created = 0
    limited = None
    for _ in range(400):
        r = env.create(tok, {"prompt": "x" * 2000, "steps": 1})
        if r.status == 429:
            limited = r
            break
        assert r.status == 201, r
        created += 1
        c = env.api("POST", f"/api/v1/generation/{r.json()['id']}/cancel", token=tok)
        if c.status == 429:
            limited = c
            break
        assert c.status == 200, c
    assert limited is not None, f"{created} create-cancel cycles and never limited"
    assert limited.json()["error"]["code"] == "rate_limited", limited
    assert int(limited.headers["Retry-After"]) >= 1, limited.headers
    assert created < 200, f"cancels did not count: {created} creates inside a burst of 200"


def test_stored_jobs_cap_and_retention(env):
    """Finding 4: rows were never removed. A cap on each user's stored jobs, and ended jobs (with
    their images) deleted after the retention period."""
    env.start_server("--max-jobs-per-user", "3", "--retention", "1s")
    tok = env.add_user("lee")
    ids = [env.create(tok, {"prompt": f"p{i}", "steps": 2}).json()["id"] for i in range(3)]
    r = env.create(tok, {"prompt": "one too many"})
    assert r.status == 429 and r.json()["error"]["code"] == "too_many_jobs", r
    for jid in ids[:2]:
        assert env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok).status == 200
    c = claim(env)
    upload(env, c)
    assert op(env, c, "complete", gpu_seconds=1.0).status == 200
    url = env.job(tok, ids[2])["image_url"]
    assert pv.http("GET", url).status == 200
    charged = env.api("GET", "/api/v1/credits", token=tok).json()
    pv.wait_for(lambda: all(env.api("GET", f"/api/v1/generation/{j}", token=tok).status == 404
                            for j in ids), timeout=60, what="ended jobs purged")
    # the rows go first, then (in the same sweep) the images
    pv.wait_for(lambda: pv.http("GET", url).status in (403, 404), what="the image deleted")
    assert not [k for k in stored_keys(env) if any(j in k for j in ids)], stored_keys(env)
    after = env.api("GET", "/api/v1/credits", token=tok).json()
    assert after["balance"] == charged["balance"], (charged, after)  # charges stay
    assert [e for e in after["ledger"] if e["kind"] == "charge"], after
    assert env.create(tok, {"prompt": "room again"}).status == 201


if __name__ == "__main__":
    pv.main([pv.clean_exit(t) for t in [
        test_image_hidden_until_completed_and_charged,
        test_failed_job_image_deleted,
        test_unauthenticated_upload_refused_on_headers,
        test_images_route_serves_only_job_images,
        test_redis_password_not_in_messages,
        test_log_lines_cannot_be_forged,
        test_data_files_private,
        test_local_workers_hold_no_server_secrets,
        test_overrun_never_takes_other_jobs_reservations,
        test_fleet_views_for_operators_only,
        test_slow_clients_cannot_hold_the_server,
        test_idle_connections_are_not_slow_clients,
        test_rate_limit_on_by_default_counts_cancels,
        test_stored_jobs_cap_and_retention,
    ]])
