"""Webhooks (issue 14): a job created with webhook_url is POSTed, when it ends, to a receiver that
checks every Standard Webhooks signature (webhook-id, webhook-timestamp, webhook-signature: v1,
base64 HMAC-SHA256 of "id.timestamp.body"). The receiver refuses the first deliveries, is killed
and restarted, and still gets every job exactly once per webhook-id; a kill -9 of the server
between the jobs' end and their delivery loses nothing (the outbox row is written in the
transaction that ends the job); URLs that could reach private, loopback, link-local or metadata
addresses are refused with 400 (resolved addresses, not the text), malformed ones with 422."""
import base64
import hashlib
import hmac
import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pv

FAST = ["--lease", "2s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]
HOOKS = ["--allow-private-webhooks", "--webhook-retry", "100ms"]


class Receiver:
    """A webhook receiver on loopback that verifies signatures with key; refuses (503) the first
    `refuse` deliveries; .accepted maps webhook-id -> [bodies answered 2xx]."""

    def __init__(self, key, port=0, refuse=0):
        self.key, self.port, self.refuse = key, port, refuse
        self.accepted, self.refused, self.bad = {}, [], []
        self.lock = threading.Lock()
        self.httpd = None

    def start(self):
        rcv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                wid, ts = self.headers["webhook-id"], self.headers["webhook-timestamp"]
                sigs = (self.headers["webhook-signature"] or "").split()
                mac = hmac.new(rcv.key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()
                want = "v1," + base64.b64encode(mac).decode()
                with rcv.lock:
                    if want not in sigs or not wid or not ts.isdigit():
                        rcv.bad.append((wid, ts, sigs))
                        code = 401
                    elif rcv.refuse > 0:
                        rcv.refuse -= 1
                        rcv.refused.append(wid)
                        code = 503
                    else:
                        rcv.accepted.setdefault(wid, []).append(json.loads(body))
                        code = 204
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks/pingvas"


def secret_key(env):
    """The HMAC key of the secret the server generated into its data directory."""
    path = os.path.join(env.data, "webhook_secret")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        return f.read().strip().encode()


def webhook(env, tok, jid):
    return env.job(tok, jid).get("webhook")


def wait_delivered(env, tok, jobs, timeout=60):
    for j in jobs:
        pv.wait_for(lambda: (webhook(env, tok, j) or {}).get("state") == "delivered",
                    timeout=timeout, what=f"webhook of {j} delivered")


def check_once(rcv, jobs):
    """Every job reached the receiver exactly once under its own stable webhook-id, signed."""
    assert not rcv.bad, rcv.bad
    assert set(rcv.accepted) == {f"msg_{j}" for j in jobs}, (sorted(rcv.accepted), jobs)
    for wid, bodies in rcv.accepted.items():
        assert len(bodies) == 1, (wid, bodies)
        b = bodies[0]
        assert b["type"] == "generation.completed" and b["data"]["id"] == wid[4:], b
        assert b["data"]["status"] == "completed" and b["data"]["image_url"], b


def test_ssrf_and_malformed_urls_refused(env):
    env.start_server(*FAST)
    tok = env.add_user("ssrf")
    refused = ["https://127.0.0.1/x", "https://localhost/x", "https://10.1.2.3/hook",
               "https://172.16.5.4/", "https://192.168.0.1:8443/a?b=c",
               "https://169.254.169.254/latest/meta-data/", "https://[::1]/",
               "https://[fe80::1]/", "https://[fd00:ec2::254]/", "https://[::ffff:127.0.0.1]/",
               "https://[::ffff:a9fe:a9fe]/", "https://0.0.0.0/", "https://100.64.0.1/",
               "https://2130706433/", "https://0x7f.1/", "http://93.184.216.34/hook",
               "https://no-such-host.invalid/hook"]
    for url in refused:
        r = env.create(tok, {"prompt": "x", "webhook_url": url})
        assert r.status == 400 and r.json()["error"]["field"] == "webhook_url", (url, r)
    malformed = ["ftp://example.com/", "https://user:pw@example.com/", "example.com/hook",
                 "https:///path", "https://example.com/#frag", "https://exa mple.com/", 5,
                 None, "https://example.com:99999/", "https://" + "a" * 2050 + ".com/"]
    for url in malformed:
        r = env.create(tok, {"prompt": "x", "webhook_url": url})
        assert r.status == 422 and r.json()["error"]["field"] == "webhook_url", (url, r)
    assert env.api("GET", "/api/v1/generation", token=tok).json()["jobs"] == []
    # a public address is accepted (nothing runs the job here, so nothing is sent)
    r = env.create(tok, {"prompt": "x", "webhook_url": "https://93.184.216.34/hook"})
    assert r.status == 201, r
    assert r.json()["webhook"]["state"] == "waiting" and r.json()["webhook"]["attempts"] == 0


@pv.clean_exit
def test_receiver_refuses_dies_and_returns(env):
    env.start_server(*FAST, *HOOKS)
    tok = env.add_user("hooks")
    rcv = pv.start_peer(env, Receiver(secret_key(env), refuse=3))
    env.start_worker("--time-scale", "0.05")
    first = [env.create(tok, {"prompt": f"a{i}", "steps": 2, "webhook_url": rcv.url}).json()["id"]
             for i in range(4)]
    wait_delivered(env, tok, first)
    assert len(rcv.refused) == 3 and set(rcv.refused) <= {f"msg_{j}" for j in first}
    retried = [j for j in first if webhook(env, tok, j)["attempts"] > 1]
    assert retried, [webhook(env, tok, j) for j in first]
    w = webhook(env, tok, retried[0])
    assert w["last_error"] == "the receiver answered HTTP 503" and w["delivered_at"], w
    # The receiver dies: jobs end meanwhile and their deliveries fail and wait.
    port = rcv.port
    rcv.stop()
    more = [env.create(tok, {"prompt": f"b{i}", "steps": 2, "webhook_url": rcv.url}).json()["id"]
            for i in range(3)]
    for j in more:
        pv.wait_for(lambda: (webhook(env, tok, j) or {}).get("attempts", 0) >= 1,
                    what="a failed attempt while the receiver is down")
        assert webhook(env, tok, j)["state"] == "pending"
        assert "onnect" in webhook(env, tok, j)["last_error"], webhook(env, tok, j)
    back = Receiver(rcv.key, port=port).start()
    env.cleanups.append(back.stop)
    wait_delivered(env, tok, more)
    merged = Receiver(rcv.key)
    merged.accepted = {**rcv.accepted, **back.accepted}
    merged.bad = rcv.bad + back.bad
    assert not set(rcv.accepted) & set(back.accepted)
    check_once(merged, first + more)


def test_kill9_between_end_and_delivery(env):
    env.start_server(*FAST, *HOOKS)
    tok = env.add_user("k9")
    port = int(pv.free_port_url().rsplit(":", 1)[1])
    url = f"http://127.0.0.1:{port}/hooks/pingvas"  # nothing listens yet
    w = env.start_worker("--time-scale", "0.05")
    jobs = [env.create(tok, {"prompt": f"k{i}", "steps": 2, "webhook_url": url}).json()["id"]
            for i in range(3)]
    for j in jobs:
        env.wait_status(tok, j, "completed")
    env.kill9(env.server)  # some may have had a failed attempt, some none yet
    env.kill9(w)
    rcv = pv.start_peer(env, Receiver(secret_key(env), port=port))
    env.start_server(*FAST, *HOOKS)
    wait_delivered(env, tok, jobs)
    check_once(rcv, jobs)


@pv.clean_exit
def test_whsec_secret(env):
    key = os.urandom(24)
    secret = "whsec_" + base64.b64encode(key).decode()
    env.start_server(*FAST, *HOOKS, "--webhook-secret", secret)
    tok = env.add_user("ws")
    rcv = pv.start_peer(env, Receiver(key))
    env.start_worker("--time-scale", "0.05")
    jid = env.create(tok, {"prompt": "w", "steps": 2, "webhook_url": rcv.url}).json()["id"]
    wait_delivered(env, tok, [jid])
    check_once(rcv, [jid])
    assert not os.path.exists(os.path.join(env.data, "webhook_secret"))


if __name__ == "__main__":
    pv.main([test_ssrf_and_malformed_urls_refused, test_receiver_refuses_dies_and_returns,
             test_kill9_between_end_and_delivery, test_whsec_secret])
