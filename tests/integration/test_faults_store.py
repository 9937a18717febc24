"""A stalled or slow store (issue 15, section 3), on a throwaway PostgreSQL cluster of the test's
own (pv_pg.Cluster; never the shared one), on both stacks.

Stalled: the whole cluster is SIGSTOPped for longer than a lease while two workers run long jobs,
then SIGCONTed. While it is stopped its kernel still accepts connections and acknowledges what is
sent, so nothing fails by itself: a store operation gives up after PINGVAS_PG_TIMEOUT (2 s here;
default 10 s: pool wait, connect and statements of one operation all within it), and the server
answers 503 with a JSON error. Asserted: 24 concurrent requests made during the stall are all
answered 503 with an error body within the bound (PINGVAS_PG_TIMEOUT + the 2 s connect timeout
+ slack, as the client's timeout); the server's thread count falls back once they are answered
(no pile-up); the two workers, whose heartbeats failed during the stall, keep their jobs (the
reaper takes no lease back until the store has served for a full lease, and a heartbeat renews
an expired lease the reaper has not taken): each job completes with attempts 1, no worker is
told its lease is gone, the server logs no expired lease; then everything drains and every job
is charged once.

Slow: the server reaches PostgreSQL through a loopback proxy that holds every chunk 100 ms each
way (200 ms per round trip): jobs complete, no lease is lost, every job charged once.

Refused complete: the store fails a worker's complete (a trigger on credit_ledger raises): the
503 and /readyz carry the store's message (not "store: "), and the job completes once the fault
is gone."""
import concurrent.futures
import os
import threading
import time

import faults
import pv
import pv_pg

PG_TIMEOUT_S = 2
BOUND_S = PG_TIMEOUT_S + 2 + 6  # operation timeout + connect timeout + slack (ASan, 2 cores)


def own_cluster(env, proxy_delay_ms=0):
    cluster = pv_pg.Cluster()
    env.cleanups.append(cluster.close)
    db_env, _ = cluster.provision()
    url = db_env["DATABASE_URL"]
    proxy = None
    if proxy_delay_ms:
        proxy = faults.Proxy(("127.0.0.1", cluster.port), delay_ms=proxy_delay_ms)
        env.cleanups.append(proxy.close)
        url = url.replace(f":{cluster.port}/", f":{proxy.port}/")
    env.extra_env["DATABASE_URL"] = url  # on the production stack, replaces the shared one
    return cluster, proxy


def threads(p):
    return len(os.listdir(f"/proc/{p.pid}/task"))


def during_stall(env, load, jid):
    """24 concurrent requests while the store is stopped: each a 503 with a JSON error."""
    tok = load.tokens["ava"]

    def one(i):
        kind = i % 3
        if kind == 0:
            r = env.api("GET", f"/api/v1/generation/{jid}", token=tok, timeout=BOUND_S)
        elif kind == 1:
            r = env.create(tok, {"prompt": "during the stall"}, timeout=BOUND_S,
                           headers={"Idempotency-Key": f"stall-{i}"})
        else:
            r = env.api("GET", "/api/v1/credits", token=tok, timeout=BOUND_S)
        return r

    with concurrent.futures.ThreadPoolExecutor(24) as ex:
        futs = [ex.submit(one, i) for i in range(24)]
        rs = [f.result() for f in futs]
    for r in rs:
        assert r.status == 503, r
        err = r.json()["error"]
        assert err["code"] == "unavailable" and err["message"], err
    return len(rs)


def test_store_stalled(env):
    seed = faults.seed()
    t0 = time.monotonic()
    cluster, _ = own_cluster(env)
    env.extra_env["PINGVAS_PG_TIMEOUT"] = f"{PG_TIMEOUT_S}s"
    server = env.start_server("--lease", "3s", "--heartbeat", "500ms", "--reaper-interval",
                              "100ms", "--worker-ttl", "30s")
    load = faults.Load(env, seed)
    for _ in range(2):
        env.start_worker("--time-scale", "0.5", "--imds-url", "off")
    load.submit(2, prefix="long", min_steps=90, max_steps=90)
    long_ids = [jid for _, jid in load.accepted]
    owner = dict((jid, u) for u, jid in load.accepted)
    pv.wait_for(lambda: all(env.job(load.tokens[owner[j]], j)["status"] == "in_progress"
                            for j in long_ids), timeout=30, what="both long jobs to run")
    base = threads(server)

    pids = cluster.pause()
    load.faults["store_sigstop"] += 1
    stalled_at = time.monotonic()
    load.faults["requests_503_in_stall"] += during_stall(env, load, long_ids[0])
    pv.wait_for(lambda: threads(server) <= base + 4, timeout=BOUND_S,
                what="the server's request threads to end")
    # Hold the stall past a lease (3 s) and a bit: the fault's length, not a wait for a result.
    time.sleep(max(0.0, 4.5 - (time.monotonic() - stalled_at)))
    cluster.resume(pids)
    load.faults["store_sigcont"] += 1

    for jid in long_ids:
        j = env.wait_status(load.tokens[owner[jid]], jid, ("completed", "failed"), timeout=60)
        assert j["status"] == "completed" and j["attempts"] == 1, j
    lost = faults.leases_lost(env)
    assert not lost, f"workers lost their jobs to the store's stall: {lost[:3]}"
    assert not faults.log_events(env, "server.log", "leases_expired"), \
        faults.log_events(env, "server.log", "leases_expired")
    load.submit(6, prefix="after")
    load.drain(timeout=90)
    _, figures = load.account()
    # The reaper says why it defers: the server's start first, then the stall's store faults.
    deferred = faults.log_events(env, "server.log", "reap_deferred")
    assert deferred and "reason=server_start " in deferred[0], deferred
    load.faults["reap_deferred"] = sum("reason=store_fault " in d for d in deferred)
    assert load.faults["reap_deferred"] >= 1, deferred
    load.report("store_stalled", figures, t0)


def test_store_slow(env):
    seed = faults.seed()
    t0 = time.monotonic()
    cluster, proxy = own_cluster(env, proxy_delay_ms=100)
    slow = env.extra_env["DATABASE_URL"]
    direct = slow.replace(f":{proxy.port}/", f":{cluster.port}/")
    # The server under test goes through the slow link; the setup (schema, users) goes direct.
    env.extra_env["DATABASE_URL"] = direct
    pv.run_cli("migrate", data=env.data, env=env.env())
    env.extra_env["DATABASE_URL"] = slow
    env.start_server("--lease", "6s", "--heartbeat", "1s", "--reaper-interval", "200ms")
    env.extra_env["DATABASE_URL"] = direct
    load = faults.Load(env, seed, users=["ava", "bo"])
    env.extra_env["DATABASE_URL"] = slow
    for _ in range(3):
        env.start_worker("--time-scale", "0.05", "--imds-url", "off")
    n = 60 if faults.long_run() else 6
    load.submit(n, threads=3)
    load.drain(timeout=120)
    _, figures = load.account()
    lost = faults.leases_lost(env)
    assert not lost, f"workers lost leases to a slow store: {lost[:3]}"
    assert figures["lost_leases"] == 0, figures
    load.faults["store_round_trip_ms"] = 2 * proxy.delay_ms
    load.faults["store_503"] = len(faults.log_events(env, "server.log", "store_error"))
    load.report("store_slow", figures, t0)


def test_complete_refused_names_the_cause(env):
    """A worker's complete the store refuses (a trigger on credit_ledger raises, as a full disk
    or any store error would): the 503 is logged with the store's message and /readyz names it,
    although the complete ran on the complete writer's thread and is answered on another (the
    store's last error is per thread: /readyz once said only 'store: '). Once the trigger is gone
    the worker's retry completes the job, attempts 1, charged once."""
    seed = faults.seed()
    t0 = time.monotonic()
    url = pv_pg.provision_for(env)
    env.start_server("--lease", "5s", "--heartbeat", "300ms")
    load = faults.Load(env, seed)
    pv_pg.psql(url, "CREATE FUNCTION refuse_ledger() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$BEGIN RAISE EXCEPTION 'ledger refused by the test'; END$$;"
                    " CREATE TRIGGER refuse_ledger BEFORE INSERT ON credit_ledger"
                    " FOR EACH ROW EXECUTE FUNCTION refuse_ledger()")
    load.faults["ledger_refused"] += 1
    env.start_worker("--time-scale", "0.05", "--imds-url", "off")
    load.submit(1, prefix="refused")
    errors = lambda: faults.log_events(env, env.server.logname, "store_error")
    pv.wait_for(errors, timeout=30, what="the worker's complete to be refused")
    assert all("ledger refused by the test" in e for e in errors()), errors()
    r = env.api("GET", "/readyz", timeout=10)
    assert r.status == 503, r
    reasons = r.json()["reasons"]
    assert any("ledger refused by the test" in x["error"] for x in reasons), reasons
    pv_pg.psql(url, "DROP TRIGGER refuse_ledger ON credit_ledger")
    load.drain(timeout=60)
    jobs, figures = load.account()
    for _, j in jobs.values():
        assert j["attempts"] == 1, j
    load.faults["completes_503"] = len(errors())
    load.report("complete_refused", figures, t0)


if __name__ == "__main__":
    pv.main([pv.clean_exit(test_store_stalled), pv.clean_exit(test_store_slow),
             pv.clean_exit(test_complete_refused_names_the_cause)])
