"""Live job events (issue 14): GET /api/v1/generation/{id}?wait= answering when the job ends, and
GET /api/v1/events (Server-Sent Events) from the store's durable event log: a user's own job
events, an operator's worker and scaling events, the per-user stream cap, and a Last-Event-ID
resume across a kill -9 of the server that misses no event (the stream after the id is exactly
the log read from the start, cut at the id)."""
import http.client
import json
import threading
import urllib.parse

import pv

FAST = ["--lease", "1s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]


class SSE:
    """A streaming GET /api/v1/events read on a thread: .events holds (id, kind, data)."""

    def __init__(self, url, token, last_id=None, header_id=None):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        path = "/api/v1/events" + (f"?last_event_id={last_id}" if last_id is not None else "")
        h = {"Authorization": "Bearer " + token, "Accept": "text/event-stream"}
        if header_id is not None:
            h["Last-Event-ID"] = str(header_id)
        self.conn.request("GET", path, headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.events, self.comments = [], []
        self.closed = False
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.resp.read()

    def _read(self):
        cur = {}
        try:
            while True:
                # the decoded body: a chunk of the chunked encoding may end inside a line
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line == "":
                    if "data" in cur:
                        self.events.append((int(cur["id"]), cur["event"], json.loads(cur["data"])))
                    cur = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    k, _, v = line.partition(": ")
                    cur[k] = v
        except Exception:
            pass
        self.closed = True

    def close(self):
        try:
            self.conn.sock.shutdown(2)
        except Exception:
            pass
        self.conn.close()

    def job_statuses(self, jid):
        return [d["status"] for _, k, d in self.events if k == "job" and d["id"] == jid]


def admin_token(env, name="ops"):
    return pv.run_cli("token", name, "--role", "admin", data=env.data, env=env.env()).stdout.strip()


@pv.clean_exit
def test_wait_answers_when_the_job_ends(env):
    env.start_server(*FAST)
    tok = env.add_user("w1")
    jid = env.create(tok, {"prompt": "waited", "steps": 2}).json()["id"]
    # Nothing runs it: the wait runs out and answers the job as it is.
    r = env.api("GET", f"/api/v1/generation/{jid}?wait=300ms", token=tok)
    assert r.status == 200 and r.json()["status"] == "queued", r
    for bad in ("soon", "-1s", "1x"):
        r = env.api("GET", f"/api/v1/generation/{jid}?wait={bad}", token=tok)
        assert r.status == 400 and r.json()["error"]["field"] == "wait", (bad, r)
    other = env.add_user("w2")
    assert env.api("GET", f"/api/v1/generation/{jid}?wait=1s", token=other).status == 404
    # Waiters (more than the worker would need threads for) all answer when the job ends.
    results = []

    def waiter():
        results.append(env.api("GET", f"/api/v1/generation/{jid}?wait=60s", token=tok,
                               timeout=90))
    threads = [threading.Thread(target=waiter) for _ in range(20)]
    for t in threads:
        t.start()
    env.start_worker("--time-scale", "0.1")
    for t in threads:
        t.join(90)
    assert len(results) == 20
    assert all(r.status == 200 and r.json()["status"] == "completed" for r in results), results[0]


@pv.clean_exit
def test_events_own_jobs_and_operator_view(env):
    env.start_server(*FAST)
    tok_a = env.add_user("ea")
    tok_b = env.add_user("eb")
    sa = SSE(env.url, tok_a)
    sb = SSE(env.url, tok_b)
    ops = SSE(env.url, admin_token(env))
    assert sa.status == 200 and sa.headers["Content-Type"] == "text/event-stream"
    pv.wait_for(lambda: sa.comments and sb.comments and ops.comments, what="streams open")
    # 30 steps at half speed: about 2 s of work, heartbeats (with progress) every 200 ms
    jid = env.create(tok_a, {"prompt": "seen", "steps": 30}).json()["id"]
    env.start_worker("--time-scale", "0.5", name="wev")
    pv.wait_for(lambda: "completed" in sa.job_statuses(jid), what="completed event")
    assert sa.job_statuses(jid) == ["queued", "in_progress", "completed"], sa.events
    prog = [(i, d) for i, k, d in sa.events if k == "progress" and d["id"] == jid]
    assert prog and all(d["steps"] == 30 and 0 <= d["step"] <= 30 for _, d in prog), sa.events
    steps = [d["step"] for _, d in prog]
    assert steps == sorted(steps), steps
    # progress comes between the job's in_progress and completed events
    order = [(k, d.get("status")) for _, k, d in sa.events if d["id"] == jid]
    assert order.index(("progress", "in_progress")) > order.index(("job", "in_progress"))
    assert order[-1] == ("job", "completed"), order
    ids = [i for i, _, _ in sa.events]
    assert ids == sorted(set(ids))
    # b sees none of a's jobs; the operator sees them and the worker.
    pv.wait_for(lambda: "completed" in ops.job_statuses(jid), what="operator sees the job")
    assert not sb.events, sb.events
    pv.wait_for(lambda: any(k == "worker" and d["id"] == "wev" for _, k, d in ops.events),
                what="worker event")
    assert not any(k == "worker" for _, k, _ in sa.events)
    # A scaling event posted by an autoscaler reaches the operator only.
    r = env.api("POST", "/internal/v1/scaling/events", {"tier": "standard", "from": 0, "to": 2,
                                                        "reason": "backlog 2"},
                token=pv.WORKER_TOKEN)
    assert r.status == 200, r
    pv.wait_for(lambda: any(k == "scaling" and d["to"] == 2 for _, k, d in ops.events),
                what="scaling event")
    assert not any(k == "scaling" for _, k, _ in sa.events + sb.events)
    # A user token is no operator: no worker events for it, and a bad id is refused.
    bad = SSE(env.url, tok_a, header_id="x")
    assert bad.status == 400, bad.body
    for s in (sa, sb):
        s.close()
    # ops stays open: the server must still stop cleanly (clean_exit) with a stream open


def test_stream_cap_per_user(env):
    env.start_server(*FAST)
    tok = env.add_user("cap")
    streams = [SSE(env.url, tok) for _ in range(8)]
    assert all(s.status == 200 for s in streams)
    ninth = SSE(env.url, tok)
    assert ninth.status == 429 and b"too_many_streams" in ninth.body, ninth.body
    other = SSE(env.url, env.add_user("cap2"))
    assert other.status == 200
    streams[0].close()
    pv.wait_for(lambda: (lambda s: s if s.status == 200 else s.close())(SSE(env.url, tok)),
                what="a slot after a close")
    anon = pv.http("GET", env.url + "/api/v1/events")
    assert anon.status == 401


def test_resume_across_kill9_misses_nothing(env):
    env.start_server(*FAST)
    tok = env.add_user("rs")
    s = SSE(env.url, tok, last_id=0)
    jobs = [env.create(tok, {"prompt": f"r{i}", "steps": 2}).json()["id"] for i in range(4)]
    w = env.start_worker("--time-scale", "0.1")
    pv.wait_for(lambda: any(st == "completed" for j in jobs for st in s.job_statuses(j)),
                what="a first completion")
    last = s.events[-1][0]
    seen = list(s.events)
    env.kill9(env.server)
    pv.wait_for(lambda: s.closed, what="stream closed by the kill")
    env.kill9(w)
    # Events happen while the client is away: a restart, more jobs, completions.
    env.start_server(*FAST)
    more = [env.create(tok, {"prompt": f"m{i}", "steps": 2}).json()["id"] for i in range(3)]
    env.start_worker("--time-scale", "0.1")
    for j in jobs + more:
        env.wait_status(tok, j, "completed", timeout=60)
    resumed = SSE(env.url, tok, header_id=last)
    full = SSE(env.url, tok, last_id=0)
    pv.wait_for(lambda: all("completed" in full.job_statuses(j) for j in jobs + more),
                what="every completion in the full log")
    pv.wait_for(lambda: resumed.events and resumed.events[-1][0] >= full.events[-1][0],
                what="the resumed stream to catch up")
    tail = [e for e in full.events if e[0] > last]
    n = len(tail)
    assert resumed.events[:n] == tail, (resumed.events, tail)
    # Nothing from before the id again, and the first session plus the resume is the whole log.
    assert all(e[0] > last for e in resumed.events)
    assert [e for e in full.events if e[0] <= last] == seen
    for x in (resumed, full):
        x.close()


def test_fleet_view_and_dashboard_files(env):
    env.start_server(*FAST)
    tok = env.add_user("fl")
    assert env.api("GET", "/api/v1/fleet", token=tok).status == 403
    assert env.api("GET", "/api/v1/fleet").status == 401
    ops = admin_token(env)
    env.start_worker("--time-scale", "0.1", name="wfl")
    jid = env.create(tok, {"prompt": "fleet", "steps": 2}).json()["id"]
    env.wait_status(tok, jid, "completed")
    f = pv.wait_for(lambda: (lambda f: f if f["workers"] else None)(
        env.api("GET", "/api/v1/fleet", token=ops).json()), what="the worker in the fleet view")
    assert set(f["tiers"]) == {"standard", "enterprise"}, f
    w = f["workers"][0]
    assert w["id"] == "wfl" and w["tier"] == "standard" and w["uptime_s"] >= 0, w
    assert w["state"] in ("idle", "busy") and w["cold_start_s"] is not None, w
    assert isinstance(f["failures"], list) and isinstance(f["scaling_events"], list)
    # an operator also reads the per-tier backlog
    assert env.api("GET", "/api/v1/queue", token=ops).status == 200
    # the dashboard's files, compiled in
    page = pv.http("GET", env.url + "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html"), page
    assert b"/dashboard/app.js" in page.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    js = pv.http("GET", env.url + "/dashboard/app.js")
    assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript")
    assert pv.http("GET", env.url + "/dashboard/app.css").status == 200
    for bad in ("/dashboard/nope.js", "/dashboard/../pingvas.db", "/dashboard/x/app.js"):
        assert pv.http("GET", env.url + bad).status == 404, bad


def test_keepalive_comments(env):
    env.start_server(*FAST, "--sse-keepalive", "200ms")
    tok = env.add_user("ka")
    s = SSE(env.url, tok)
    pv.wait_for(lambda: s.comments.count(": keep-alive") >= 3, what="keep-alive comments")
    assert not s.events and not s.closed
    # a keep-alive does not move the stream: an event after them still arrives
    jid = env.create(tok, {"prompt": "after the comments"}).json()["id"]
    pv.wait_for(lambda: s.job_statuses(jid) == ["queued"], what="the event after keep-alives")
    s.close()


def test_live_stream_is_the_log_under_concurrent_writers(env):
    """Many transactions end at once (PostgreSQL may commit seq N+1 before N): the live stream
    still delivers exactly the log, in order, nothing skipped."""
    env.start_server(*FAST)
    tok = env.add_user("cc")
    live = SSE(env.url, admin_token(env), last_id=0)
    pv.wait_for(lambda: live.comments, what="stream open")
    for i in range(3):
        env.start_worker("--time-scale", "0.02", name=f"cw{i}")
    ids = []

    def burst(k):
        for i in range(10):
            ids.append(env.create(tok, {"prompt": f"c{k}-{i}", "steps": 1}).json()["id"])
    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for j in ids:
        env.wait_status(tok, j, "completed")
    replay = SSE(env.url, admin_token(env), last_id=0)
    pv.wait_for(lambda: all("completed" in replay.job_statuses(j) for j in ids),
                what="the replay")
    pv.wait_for(lambda: live.events and live.events[-1][0] >= replay.events[-1][0],
                what="the live stream to catch up")
    n = len(replay.events)
    assert live.events[:n] == replay.events, [e[0] for e in live.events][:50]
    for x in (live, replay):
        x.close()


if __name__ == "__main__":
    pv.main([test_wait_answers_when_the_job_ends, test_events_own_jobs_and_operator_view,
             test_stream_cap_per_user, test_resume_across_kill9_misses_nothing,
             test_fleet_view_and_dashboard_files, test_keepalive_comments,
             test_live_stream_is_the_log_under_concurrent_writers])
