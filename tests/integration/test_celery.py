"""The Celery bridge (DESIGN section 8, docs/celery.md) against a real Redis and the real binary.

The seed's API inserts a generation_jobs row (seed columns, status 'pending') and enqueues
tasks.generate_image(job_id) with Celery on Redis. Here the row is inserted the same way (sqlite3
into DATA/pingvas.db, or psql on the production stack) and the message comes from a real Celery
client from npm (celery-node, waiting on its AsyncResult.get()) or is pushed byte for byte as
Python Celery 5 / kombu write it. Needs scripts/services/redis.sh (PINGVAS_TEST_REDIS_URL). Each
test takes a Redis database of its own, so the suite runs in parallel with other suites."""
import base64
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid

import pv

REDIS_URL = os.environ.get("PINGVAS_TEST_REDIS_URL")
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers", "celery")
SEP = b"\x06\x16"
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
WORKER = ["--time-scale", "0"]


class Redis:
    """A minimal RESP2 client (binary-safe), enough for the tests."""

    def __init__(self, url, db):
        m = re.match(r"^redis://(?::([^@]*)@)?([^:/]+)(?::(\d+))?", url)
        self.sock = socket.create_connection((m.group(2), int(m.group(3) or 6379)), timeout=30)
        self.buf = b""
        if m.group(1):
            self.cmd("AUTH", m.group(1))
        self.cmd("SELECT", str(db))

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def cmd(self, *args):
        self.send(*args)
        return self.read()

    def close(self):
        self.sock.close()


def take_db(env):
    """Claims a free Redis database number (1..255) for this test; released at close."""
    ctl = Redis(REDIS_URL, 0)
    for n in range(1, 256):
        if ctl.cmd("SET", f"pingvas-test-db:{n}", str(os.getpid()), "NX", "EX", "900") == "OK":
            r = Redis(REDIS_URL, n)
            r.cmd("FLUSHDB")
            env.cleanups.append(lambda: (ctl.cmd("DEL", f"pingvas-test-db:{n}"), ctl.close()))
            env.cleanups.append(r.close)
            url = re.sub(r"/\d*$", "", REDIS_URL.rstrip("/")) + f"/{n}"
            env.extra_env["REDIS_URL"] = url
            return r, url
    raise AssertionError("no free Redis database (255 in use?)")


def insert_seed_row(env, user, prompt="a lighthouse at dawn", steps=20, job_id=None):
    """Inserts a generation_jobs row as the seed's API does: seed columns, status 'pending'."""
    jid = job_id or str(uuid.uuid4())
    cols = "id, user_id, status, prompt, negative_prompt, width, height, steps, cfg_scale, seed"
    if env.stack == "production":
        sql = (f"INSERT INTO generation_jobs ({cols}) VALUES ('{jid}', '{user}', 'pending', "
               f"'{prompt}', '', 512, 512, {steps}, 7.5, NULL)")
        subprocess.run(["psql", env.extra_env["DATABASE_URL"], "-v", "ON_ERROR_STOP=1", "-qc", sql],
                       check=True, capture_output=True, timeout=30)
    else:
        db = sqlite3.connect(os.path.join(env.data, "pingvas.db"), timeout=30)
        with db:
            db.execute(f"INSERT INTO generation_jobs ({cols}) VALUES (?, ?, 'pending', ?, '', 512,"
                       " 512, ?, 7.5, NULL)", (jid, user, prompt, steps))
        db.close()
    return jid


def python_celery_envelope(job_id, task_id=None, queue="celery", task="tasks.generate_image",
                           priority=0, body=None):
    """The exact bytes Python Celery 5 (amqp.as_task_v2) and kombu's Redis transport (Channel
    ._put: LPUSH of json.dumps(message)) put on the list for apply_async((job_id,))."""
    task_id = task_id or str(uuid.uuid4())
    if body is None:
        body = [[job_id], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(tuple(body[0])) if isinstance(body, list) else "()",
            "kwargsrepr": "{}",
            "origin": "gen12345@api-7d9f",
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "8a4b3c2d-0000-4000-8000-000000000001",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return task_id, json.dumps(message).encode()


def list_name(queue, priority):
    step = max(s for s in (0, 3, 6, 9) if s <= priority)
    return queue.encode() + (SEP + str(step).encode() if step else b"")


def wait_meta(r, task_id, timeout=60):
    def get():
        v = r.cmd("GET", f"celery-task-meta-{task_id}")
        return json.loads(v) if v else None
    return pv.wait_for(get, timeout=timeout, interval=0.1, what=f"result of task {task_id}")


def same_image(a, b):
    return bool(a) and a.split("?", 1)[0] == b.split("?", 1)[0]


def check_meta_shape(meta, task_id):
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"], meta
    assert meta["task_id"] == task_id and meta["children"] == []
    assert DATE_RE.match(meta["date_done"]), meta["date_done"]


def assert_drained(r, queue="celery"):
    for p in (0, 3, 6, 9):
        assert r.cmd("LLEN", list_name(queue, p)) == 0, f"list {queue} priority {p} not empty"
    pv.wait_for(lambda: r.cmd("HLEN", "unacked") == 0 and r.cmd("ZCARD", "unacked_index") == 0,
                timeout=20, what="unacked to be empty")


def start(env, *args, worker=True):
    """The server (REDIS_URL from take_db), user alice, and a worker unless worker=False."""
    env.start_server(*args)
    tok = env.add_user("alice", credits=1000000)
    if worker:
        env.start_worker(*WORKER)
    return tok


def test_npm_celery_client_gets_success(env):
    r, url = take_db(env)
    tok = start(env)
    jids = [insert_seed_row(env, "alice", prompt=f"npm {i}") for i in range(3)]
    p = subprocess.run(["node", os.path.join(PEER, "client.js"), url, "celery",
                        "tasks.generate_image", "60000"] + jids,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert len(out) == 3
    for o in out:
        assert o["status"] == "SUCCESS", o
        j = env.job(tok, o["job_id"])
        assert j["status"] == "completed", j
        # (on S3 the URL is presigned per request: the same object, maybe another signature)
        assert o["result"]["success"] is True and same_image(o["result"]["image_url"],
                                                            j["image_url"]), (o, j)
        assert j["image_url"] and o["task_id"] != o["job_id"]
        raw = r.cmd("GET", f"celery-task-meta-{o['task_id']}")
        meta = json.loads(raw)
        check_meta_shape(meta, o["task_id"])
        assert meta["status"] == "SUCCESS" and meta["traceback"] is None
        ttl = r.cmd("TTL", f"celery-task-meta-{o['task_id']}")
        assert 86000 < ttl <= 86400, ttl
    assert_drained(r)
    assert r.cmd("HLEN", "pingvas-celery-tasks") == 0


def test_python_celery5_envelope_and_publish(env):
    r, url = take_db(env)
    tok = start(env, worker=False)
    jid = insert_seed_row(env, "alice")
    tid, raw = python_celery_envelope(jid)
    sub = Redis(url, 0)
    env.cleanups.append(sub.close)
    sub.cmd("SUBSCRIBE", f"celery-task-meta-{tid}")
    r.cmd("LPUSH", "celery", raw)
    # Adopted as a queued job of alice's tier; the list is drained and the message acked.
    # Until the bridge adopts it, the seed's row has no tier and no created_at.
    j = pv.wait_for(lambda: (lambda x: x if x and x.get("status") == "queued" and x.get("tier")
                             and x.get("created_at") else None)(env.job(tok, jid)),
                    timeout=20, what="the seed row to be adopted")
    assert j["prompt"] == "a lighthouse at dawn" and j["tier"] == "standard" and j["seed"] >= 0, j
    assert_drained(r)
    assert r.cmd("HGET", "pingvas-celery-tasks", jid) == tid.encode()
    assert "event=celery_adopted" in env.log("server.log")
    # KEDA scales on /api/v1/queue: the job shows there while the list stays empty.
    q = env.api("GET", "/api/v1/queue", token=tok).json()
    assert q["tiers"]["standard"]["queued"] == 1, q
    env.start_worker(*WORKER)
    meta = wait_meta(r, tid)
    check_meta_shape(meta, tid)
    j = env.job(tok, jid)
    assert meta["status"] == "SUCCESS" and meta["result"]["success"] is True
    assert same_image(meta["result"]["image_url"], j["image_url"]), (meta, j)
    kind, channel, data = sub.read()
    assert kind == b"message" and channel == f"celery-task-meta-{tid}".encode()
    assert json.loads(data) == meta
    assert r.cmd("HLEN", "pingvas-celery-tasks") == 0


def test_priority_lists_plain_json_body_and_queue_name(env):
    r, url = take_db(env)
    env.start_server("--celery-queue", "gpu")  # creates the schema
    tok = env.add_user("alice", credits=1000000)
    env.stop(env.server)
    order = []
    for pri in (9, 6, 3, 0):  # pushed lowest first; consumed in kombu's order 0, 3, 6, 9
        jid = insert_seed_row(env, "alice", prompt=f"priority {pri}")
        tid, raw = python_celery_envelope(jid, queue="gpu", priority=pri)
        if pri == 3:  # a plain JSON body (no body_encoding) is accepted too
            m = json.loads(raw)
            m["body"] = [[jid], {}, {}]
            del m["properties"]["body_encoding"]
            raw = json.dumps(m).encode()
        r.cmd("LPUSH", list_name("gpu", pri), raw)
        order.append((pri, jid, tid))
    # a message on the default queue is not ours
    _, other = python_celery_envelope(str(uuid.uuid4()))
    r.cmd("LPUSH", "celery", other)
    env.start_server("--celery-queue", "gpu")
    pv.wait_for(lambda: env.log("server.log").count("event=celery_adopted") == 4, timeout=20,
                what="four adoptions")
    log = env.log("server.log")
    pos = {jid: log.index(f"event=celery_adopted job_id={jid}") for _, jid, _ in order}
    by_pri = sorted(order)
    assert [pos[jid] for _, jid, _ in by_pri] == sorted(pos.values()), log
    assert_drained(r, "gpu")
    assert r.cmd("LLEN", "celery") == 1
    env.start_worker(*WORKER)
    for _, jid, tid in order:
        assert wait_meta(r, tid)["status"] == "SUCCESS"
        assert env.job(tok, jid)["status"] == "completed"


def test_rejects_write_failure_and_keep_running(env):
    r, url = take_db(env)
    tok = start(env)
    missing = str(uuid.uuid4())
    t_unknown, m_unknown = python_celery_envelope(str(uuid.uuid4()), task="tasks.other")
    t_missing, m_missing = python_celery_envelope(missing)
    t_badid, m_badid = python_celery_envelope(None, body=[[42], {}, {}])
    t_noargs, m_noargs = python_celery_envelope(None, body=[[], {}, {}])
    nouser = insert_seed_row(env, "bob")  # no such pingvas user
    t_nouser, m_nouser = python_celery_envelope(nouser)
    good = insert_seed_row(env, "alice")
    t_good, m_good = python_celery_envelope(good)
    for m in (b"{not json", b"[]", m_unknown, m_missing, m_badid, m_noargs, m_nouser, m_good):
        r.cmd("LPUSH", "celery", m)
    expect = {
        t_unknown: ("NotRegistered", "celery.exceptions", "'tasks.other'"),
        t_missing: ("ValueError", "builtins", f"Job {missing} not found"),
        t_badid: ("ValueError", "builtins", None),
        t_noargs: ("TypeError", "builtins",
                   "generate_image() missing 1 required positional argument: 'job_id'"),
        t_nouser: ("ValueError", "builtins", f"Job {nouser}: user bob not found"),
    }
    for tid, (etype, emod, emsg) in expect.items():
        meta = wait_meta(r, tid, timeout=20)
        check_meta_shape(meta, tid)
        assert meta["status"] == "FAILURE", meta
        res = meta["result"]
        assert res["exc_type"] == etype and res["exc_module"] == emod, meta
        assert isinstance(res["exc_message"], list) and len(res["exc_message"]) == 1
        if emsg:
            assert res["exc_message"] == [emsg], meta
        assert meta["traceback"].startswith("Traceback (most recent call last):"), meta
    assert wait_meta(r, t_good)["status"] == "SUCCESS"
    assert_drained(r)
    log = env.log("server.log")
    for reason in ("bad_json", "bad_envelope", "unknown_task", "missing_row", "bad_job_id",
                   "missing_args", "no_such_user"):
        assert f"event=celery_rejected reason={reason}" in log, (reason, log)
    assert env.server.poll() is None
    assert env.api("GET", "/healthz").status == 200


def test_kill9_between_pop_and_ack_loses_nothing(env):
    r, url = take_db(env)
    vis = ["--celery-visibility-timeout", "1s"]
    env.start_server(*vis)
    tok = env.add_user("alice", credits=10000000)
    env.stop(env.server)
    n = 60
    tasks = []
    for i in range(n):
        jid = insert_seed_row(env, "alice", prompt=f"crash {i}", steps=1)
        tid, raw = python_celery_envelope(jid)
        r.cmd("LPUSH", "celery", raw)
        tasks.append((jid, tid))
    # The same message twice (a producer retry): one job, both results.
    dup_tid, dup_raw = python_celery_envelope(tasks[0][0])
    r.cmd("LPUSH", "celery", dup_raw)
    # Kill -9 as soon as the server has popped something, a few times over.
    for _ in range(3):
        left = r.cmd("LLEN", "celery")
        p = env.start_server(*vis)
        pv.wait_for(lambda: r.cmd("LLEN", "celery") < left or left == 0, timeout=20,
                    interval=0.001, what="a pop")
        env.kill9(p)
    in_flight = r.cmd("HLEN", "unacked")
    env.start_server(*vis)
    env.start_worker(*WORKER)
    env.start_worker(*WORKER)
    for jid, tid in tasks + [(tasks[0][0], dup_tid)]:
        meta = wait_meta(r, tid, timeout=120)
        assert meta["status"] == "SUCCESS", meta
    assert_drained(r)
    for jid, _ in tasks:
        j = env.job(tok, jid)
        assert j["status"] == "completed", j
    led = env.api("GET", "/api/v1/credits", token=tok).json()
    charged = [e["job_id"] for e in led["ledger"] if e["kind"] == "charge"]
    assert len(charged) == len(set(charged)), "a job was charged twice"
    assert led["reserved"] == 0, led
    print(f"   (messages in unacked after the kills: {in_flight})", flush=True)


def test_every_task_of_a_job_gets_its_result(env):
    """70 tasks for one job id (a publisher retrying): each gets its result, none is dropped."""
    r, url = take_db(env)
    tok = start(env, worker=False)
    jid = insert_seed_row(env, "alice")
    tids = []
    for _ in range(70):
        tid, raw = python_celery_envelope(jid)
        r.cmd("LPUSH", "celery", raw)
        tids.append(tid)
    pv.wait_for(lambda: len((r.cmd("HGET", "pingvas-celery-tasks", jid) or b"").split()) == 70,
                timeout=30, what="all 70 tasks recorded for the job")
    env.start_worker(*WORKER)
    for tid in tids:
        meta = wait_meta(r, tid)
        assert meta["status"] == "SUCCESS", meta
    assert env.job(tok, jid)["status"] == "completed"
    assert r.cmd("HLEN", "pingvas-celery-tasks") == 0


def main(tests):
    """pv.main for the Celery suites, which need the Redis service."""
    if not REDIS_URL:
        print("PINGVAS_TEST_REDIS_URL is not set: run `eval \"$(scripts/services/redis.sh)\"` "
              "first (scripts/test.sh does)", file=sys.stderr)
        print("0 passed, 1 failed")
        sys.exit(1)
    pv.main(tests)


if __name__ == "__main__":
    main([test_npm_celery_client_gets_success, test_python_celery5_envelope_and_publish,
          test_priority_lists_plain_json_body_and_queue_name,
          test_rejects_write_failure_and_keep_running, test_kill9_between_pop_and_ack_loses_nothing,
          test_every_task_of_a_job_gets_its_result])
