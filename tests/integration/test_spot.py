"""Spot interruption notices (issue 4, section 2). Each test starts an IMDSv2-speaking server on
127.0.0.1 (never the real 169.254.169.254) and points `pingvas worker --imds-url` at it:
PUT /latest/api/token issues a session token, GETs need it (401 without), and
/latest/meta-data/spot/instance-action and /latest/meta-data/events/recommendations/rebalance
answer 404 until the test posts a notice. A notice triggers the graceful stop of DESIGN
section 4 with the time left before the action time as the drain window: a job that ends inside
it finishes, a longer one is released at once and another worker runs it; the worker claims
nothing more and exits 0. An IMDS that is not reachable at start turns the watcher off and the
worker works normally."""
import datetime
import http.server
import json
import signal
import socket
import threading
import time

import pv

FAST = ["--lease", "2s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]
POLL = ["--imds-poll", "200ms"]


class FakeIMDS:
    """A loopback IMDSv2 with switchable notices; records what the worker asked."""

    def __init__(self):
        self.tokens = set()
        self.action = None      # instance-action document, or None (404)
        self.rebalance = None   # rebalance document, or None (404)
        self.meta = {}          # other metadata paths and their text (instance-type, ...)
        self.requests = []
        self.unauthorized = 0
        imds = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body=b"", ctype="text/plain"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                imds.requests.append(("PUT", self.path))
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path != "/latest/api/token" or not ttl or not ttl.isdigit():
                    return self._send(400)
                tok = f"tok-{len(imds.tokens)}-{time.monotonic_ns()}"
                imds.tokens.add(tok)
                self._send(200, tok.encode())

            def do_GET(self):
                imds.requests.append(("GET", self.path))
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    imds.unauthorized += 1
                    return self._send(401)
                doc = None
                if self.path == "/latest/meta-data/spot/instance-action":
                    doc = imds.action
                elif self.path == "/latest/meta-data/events/recommendations/rebalance":
                    doc = imds.rebalance
                elif self.path in imds.meta:
                    return self._send(200, imds.meta[self.path].encode())
                if doc is None:
                    return self._send(404, b"Not Found")
                self._send(200, json.dumps(doc).encode(), "application/json")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def notice_in(self, seconds):
        t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
        self.action = {"action": "terminate", "time": t.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def polls(self, path):
        return sum(1 for m, p in self.requests if m == "GET" and p == path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def with_imds(test):
    def run(env):
        imds = FakeIMDS()
        env.cleanups.append(imds.close)
        test(env, imds)
    run.__name__ = test.__name__
    return run


ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"


@with_imds
def test_watcher_speaks_imdsv2(env, imds):
    env.start_server(*FAST)
    w = env.start_worker("--imds-url", imds.url, *POLL)
    pv.wait_for(lambda: imds.polls(ACTION) >= 3 and imds.polls(REBALANCE) >= 3, timeout=30,
                what="the worker to poll both notice paths")
    assert ("PUT", "/latest/api/token") in imds.requests
    assert imds.unauthorized == 0, "a metadata GET went out without the session token"
    assert "event=imds_on" in env.log(f"worker-{w.worker_id}.log")
    # An expired token (401) makes the worker fetch a new one and keep watching.
    puts = sum(1 for m, _ in imds.requests if m == "PUT")
    imds.tokens.clear()
    pv.wait_for(lambda: sum(1 for m, _ in imds.requests if m == "PUT") > puts, timeout=10,
                what="a new token after a 401")
    n = imds.polls(ACTION)
    pv.wait_for(lambda: imds.polls(ACTION) >= n + 3, timeout=10, what="polling to continue")
    assert w.poll() is None


@with_imds
def test_notice_short_window_releases(env, imds):
    """Action in 6 s (drain window ~1 s after the 5 s margin): a 10 s job is released at once."""
    env.start_server(*FAST)
    tok = env.add_user("sam")
    w = env.start_worker("--imds-url", imds.url, *POLL, "--time-scale", "0.5",
                         "--drain-timeout", "90s")
    jid = env.create(tok, {"prompt": "long", "steps": 150}).json()["id"]
    env.wait_status(tok, jid, "in_progress", timeout=30)
    imds.notice_in(6)
    assert w.wait(timeout=60) == 0
    # Released, not finished: a 10 s job that the worker had run to the end would be completed.
    log = env.log(f"worker-{w.worker_id}.log")
    assert "event=spot_interruption_notice" in log and "event=drain_release" in log, log
    j = env.job(tok, jid)
    assert j["status"] == "queued" and j["releases"] == 1 and j["attempts"] == 0, j
    # Another worker runs it; the release was not a failed attempt and nothing was charged twice.
    env.start_worker("--imds-url", "off", "--time-scale", "0.02")
    j = env.wait_status(tok, jid, "completed", timeout=60)
    assert j["attempts"] == 1 and j["releases"] == 1, j
    led = env.api("GET", "/api/v1/credits", token=tok).json()["ledger"]
    assert len([e for e in led if e["kind"] == "charge" and e["job_id"] == jid]) == 1


@with_imds
def test_notice_long_window_finishes(env, imds):
    """Action in 40 s (window ~35 s): the running ~3 s job finishes, nothing more is claimed."""
    env.start_server(*FAST)
    tok = env.add_user("tia")
    w = env.start_worker("--imds-url", imds.url, *POLL, "--time-scale", "0.15",
                         "--drain-timeout", "1s")
    jid = env.create(tok, {"prompt": "fits", "steps": 150}).json()["id"]
    env.wait_status(tok, jid, "in_progress", timeout=30)
    imds.notice_in(40)
    # Queued after the notice: must not be claimed by the stopping worker.
    later = env.create(tok, {"prompt": "later", "steps": 1}).json()["id"]
    assert w.wait(timeout=40) == 0
    j = env.job(tok, jid)
    # The notice's window (35 s) wins over --drain-timeout 1s: the job finished.
    assert j["status"] == "completed" and j["releases"] == 0 and j["attempts"] == 1, j
    assert env.job(tok, later)["status"] == "queued"
    log = env.log(f"worker-{w.worker_id}.log")
    assert "event=spot_interruption_notice" in log and "drain_release" not in log, log


@with_imds
def test_rebalance_recommendation_keeps_serving(env, imds):
    """A rebalance recommendation is logged, not obeyed (issue 9, finding 5): Karpenter does not act
    on it, and a worker that left would be restarted on the same node and leave again, leaving a
    paid GPU node without a worker. The worker finishes its job and goes on claiming."""
    env.start_server(*FAST)
    tok = env.add_user("uma")
    w = env.start_worker("--imds-url", imds.url, *POLL, "--time-scale", "0.1",
                         "--drain-timeout", "60s")
    jid = env.create(tok, {"prompt": "rebalance", "steps": 150}).json()["id"]
    env.wait_status(tok, jid, "in_progress", timeout=30)
    t = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    imds.rebalance = {"noticeTime": t}
    log = lambda: env.log(f"worker-{w.worker_id}.log")
    pv.wait_for(lambda: "event=rebalance_recommendation" in log(), timeout=30,
                what="the rebalance recommendation to be noticed")
    env.wait_status(tok, jid, "completed", timeout=60)
    # The interruption notice is still watched.
    n = imds.polls(ACTION)
    pv.wait_for(lambda: imds.polls(ACTION) >= n + 3, timeout=10, what="polling to continue")
    # Still serving: a job submitted after the recommendation runs on the same worker.
    later = env.create(tok, {"prompt": "after rebalance", "steps": 5}).json()["id"]
    env.wait_status(tok, later, "completed", timeout=60)
    assert w.poll() is None, "the worker left on a rebalance recommendation"
    assert log().count("event=rebalance_recommendation") == 1, log()
    assert "worker_exit" not in log()
    assert env.stop(w, signal.SIGTERM) == 0


def test_unreachable_imds_is_off(env):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    env.start_server(*FAST)
    tok = env.add_user("vic")
    w = env.start_worker("--imds-url", f"http://127.0.0.1:{port}", *POLL, "--time-scale", "0.02")
    jid = env.create(tok, {"prompt": "no imds", "steps": 5}).json()["id"]
    env.wait_status(tok, jid, "completed", timeout=60)
    assert "event=imds_off" in env.log(f"worker-{w.worker_id}.log")
    assert w.poll() is None
    assert env.stop(w, signal.SIGTERM) == 0


def test_imds_flags_documented(env):
    out = pv.run_cli("help", "worker").stdout + pv.run_cli("help", "worker", check=False).stderr
    assert "--imds-url" in out and "--imds-poll" in out, out
    assert "5s" in out.split("--imds-poll", 1)[1].split("\n", 2)[0] + out.split("--imds-poll", 1)[1][:200]


if __name__ == "__main__":
    pv.main([
        pv.clean_exit(test_watcher_speaks_imdsv2),
        pv.clean_exit(test_notice_short_window_releases),
        pv.clean_exit(test_notice_long_window_finishes),
        pv.clean_exit(test_rebalance_recommendation_keeps_serving),
        pv.clean_exit(test_unreachable_imds_is_off),
        pv.clean_exit(test_imds_flags_documented),
    ])
