"""Durability (issue 4, section 6): kill -9 the server in a loop while clients submit and workers
run jobs. After each kill: the database passes `PRAGMA integrity_check` (embedded stack: SQLite
in WAL mode, see docs/reliability.md), the server starts again cleanly on
the same data directory (healthy, ready, no error logged), and every job that got a 201 exists
with its parameters. Requests whose answer was lost in the kill are retried with their
Idempotency-Key: the job exists at most once. At the end every accepted job completes with one
charge and balances add up."""
import collections
import concurrent.futures
import os
import random
import re
import sqlite3
import threading
import time

import pv

ROUNDS = int(os.environ.get("PINGVAS_DURABILITY_ROUNDS", "12"))
FLAGS = ["--lease", "1s", "--heartbeat", "200ms", "--reaper-interval", "100ms",
         "--max-attempts", "20"]


def integrity_check(env):
    db = sqlite3.connect(os.path.join(env.data, "pingvas.db"), timeout=10)
    try:
        res = db.execute("PRAGMA integrity_check").fetchall()
        fk = db.execute("PRAGMA foreign_key_check").fetchall()
        return res, fk
    finally:
        db.close()


def start_on(env, port):
    p = env._spawn(["server", "--port", str(port), "--data", env.data] + FLAGS, "server.log")
    t0 = time.monotonic()
    url = env._await_url(p)
    env.server = p
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    pv.wait_for(lambda: pv.http("GET", url + "/readyz", timeout=5).status == 200, timeout=30,
                what="readyz after restart")
    return url, time.monotonic() - t0


def test_kill9_loop_while_submitting(env):
    seed = int(os.environ.get("PINGVAS_DURABILITY_SEED", str(int(time.time()) % 100000)))
    rng = random.Random(seed)
    print(f"durability seed: {seed}", flush=True)
    env.start_server(*FLAGS)
    port = int(env.url.rsplit(":", 1)[1])
    users = ["kim", "lee"]
    tokens = {u: env.add_user(u, credits=10_000_000) for u in users}
    before = {u: env.api("GET", "/api/v1/credits", token=tokens[u]).json()["balance"] for u in users}
    for _ in range(4):
        env.start_worker("--time-scale", "0.03", "--imds-url", "off")

    created = {}          # idem key -> (user, job id) for every 201/200
    unknown = {}         # idem key -> (user, body) whose answer was lost
    lock = threading.Lock()
    seq = iter(range(10 ** 9))
    stats = collections.Counter()

    def submitter(stop, user):
        while not stop.is_set():
            i = next(seq)
            key = f"d-{i}"
            body = {"prompt": f"durable {i}", "steps": 3 + i % 20, "seed": i}
            try:
                r = env.create(tokens[user], body, headers={"Idempotency-Key": key}, timeout=5)
            except Exception:
                with lock:
                    unknown[key] = (user, body)
                    stats["lost_answers"] += 1
                time.sleep(0.05)
                continue
            time.sleep(0.03)  # a steady stream, not a flood: the workers must keep up
            with lock:
                if r.status in (200, 201):
                    created[key] = (user, r.json()["id"], body)
                    stats[f"http_{r.status}"] += 1
                else:
                    stats[f"http_{r.status}"] += 1
                    if r.status < 500:
                        raise AssertionError(f"unexpected {r.status} {r.body[:200]!r}")
                    unknown[key] = (user, body)

    restarts = 0
    startup = []
    for rnd in range(ROUNDS):
        stop = threading.Event()
        ts = [threading.Thread(target=submitter, args=(stop, users[k % 2]), daemon=True)
              for k in range(4)]
        for t in ts:
            t.start()
        time.sleep(rng.uniform(0.2, 0.8))
        env.kill9(env.server)  # mid-traffic
        stop.set()
        for t in ts:
            t.join(timeout=30)
        if env.stack == "embedded":
            res, fk = integrity_check(env)
            assert res == [("ok",)], f"round {rnd}: integrity_check {res}"
            assert fk == [], f"round {rnd}: foreign_key_check {fk[:5]}"
        log_size = os.path.getsize(os.path.join(env.dir, "server.log"))
        url, took = start_on(env, port)
        assert url == env.url
        restarts += 1
        startup.append(took)
        tail = open(os.path.join(env.dir, "server.log"), "rb").read()[log_size:].decode(errors="replace")
        assert "level=error" not in tail, f"round {rnd}: error on restart:\n{tail[-2000:]}"
        # Every job that got a 201 (or 200) before the kill is there, with its parameters.
        with lock:
            snapshot = list(created.values())
        for user, jid, body in snapshot:
            j = env.job(tokens[user], jid)
            assert j and j.get("id") == jid, f"round {rnd}: accepted job {jid} is gone: {j}"
            assert j["prompt"] == body["prompt"] and j["steps"] == body["steps"], j
    # Retry the requests whose answer was lost: each makes one job at most.
    for key, (user, body) in unknown.items():
        r = env.create(tokens[user], body, headers={"Idempotency-Key": key})
        assert r.status in (200, 201), r
        stats[f"retry_{r.status}"] += 1
        created[key] = (user, r.json()["id"], body)
    # Drain and account.
    pv.wait_for(lambda: sum(v["queued"] + v["running"] for v in env.api(
        "GET", "/api/v1/queue", token=pv.WORKER_TOKEN).json()["tiers"].values()) == 0,
        timeout=180, interval=0.2, what="the backlog to drain")
    ids = {jid for _, jid, _ in created.values()}
    assert len(ids) == len(created), "two idempotency keys map to one job"
    jobs = {}
    for u in users:
        cursor = None
        while True:
            page = env.api("GET", "/api/v1/generation?limit=100" + (f"&cursor={cursor}" if cursor else ""),
                           token=tokens[u]).json()
            for j in page["jobs"]:
                jobs[j["id"]] = (u, j)
            cursor = page["next_cursor"]
            if not cursor:
                break
    assert set(jobs) == ids, f"store {len(jobs)} jobs vs {len(ids)} accepted"
    assert all(j["status"] == "completed" for _, j in jobs.values()), collections.Counter(
        j["status"] for _, j in jobs.values())
    for u in users:
        c = env.api("GET", "/api/v1/credits", token=tokens[u]).json()
        charged = sum(j["credits_charged"] for uu, j in jobs.values() if uu == u)
        assert before[u] - c["balance"] == charged and c["reserved"] == 0, (u, c, charged)
    # Clean stops, workers first (under ASan, a leak or any report makes the exit non-zero).
    for w in [p for p in env.procs if p.logname.startswith("worker") and p.poll() is None]:
        assert env.stop(w) == 0, f"{w.logname} did not exit cleanly on SIGTERM"
    assert env.stop(env.server) == 0, "server did not exit cleanly on SIGTERM"
    if env.stack == "embedded":
        res, _ = integrity_check(env)
        assert res == [("ok",)]
    print(f"durability: rounds={ROUNDS} server_kill9={ROUNDS} restarts={restarts} "
          f"jobs={len(ids)} answers={dict(stats)} startup_s(max)={max(startup):.2f}", flush=True)


if __name__ == "__main__":
    pv.main([test_kill9_loop_while_submitting])
