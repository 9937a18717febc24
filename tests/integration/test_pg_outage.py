"""PostgreSQL going away and coming back under a running server: while the database is down,
requests that need it answer 503 with a JSON error, /readyz is 503, /healthz stays 200 and the
server stays up; when it is back the server reconnects by itself (no restart), every job it
accepted before is there and completes, and new jobs work.

The test runs its own throwaway cluster (pv_pg.Cluster: initdb in a temp dir on a free port) so
stopping it disturbs no other test, on either stack."""
import os

import pv
import pv_pg


def test_database_restart_under_running_server(env):
    cluster = pv_pg.Cluster()
    env.cleanups.append(cluster.close)
    db_env, _ = cluster.provision()
    env.extra_env.update(db_env)  # on the production stack, replaces the shared database

    server = env.start_server("--reaper-interval", "200ms")
    tok = env.add_user("dora", credits=1_000_000)
    accepted = []
    for i in range(5):
        r = env.create(tok, {"prompt": f"before {i}", "steps": 1})
        assert r.status == 201, r
        accepted.append(r.json()["id"])
    assert env.api("GET", "/readyz").status == 200

    cluster.stop("fast")

    r = env.create(tok, {"prompt": "during the outage"})
    assert r.status == 503, r
    err = r.json()["error"]
    assert err["code"] and err["message"], err
    assert env.api("GET", "/readyz").status == 503
    assert env.api("GET", "/healthz").status == 200
    m = env.api("GET", "/metrics", token=pv.WORKER_TOKEN)  # no zeros for a store that is away
    assert m.status == 503 and m.json()["error"]["code"] == "unavailable", m
    r = env.api("GET", f"/api/v1/generation/{accepted[0]}", token=tok)
    assert r.status == 503 and "error" in r.json(), r
    # The reaper keeps ticking against the dead database; the server must not die of it.
    pv.wait_for(lambda: "event=store_listen_down" in log(env), timeout=30,
                what="the LISTEN connection to notice the outage")
    assert server.poll() is None, log(env)[-3000:]

    cluster.start()

    # Back without a restart of pingvas.
    pv.wait_for(lambda: env.api("GET", "/readyz").status == 200, timeout=30,
                what="/readyz after the database came back")
    pv.wait_for(lambda: "event=store_listen_up" in log(env), timeout=30,
                what="the LISTEN connection to come back")
    for jid in accepted:
        j = env.job(tok, jid)
        assert j and j["status"] == "queued", j
    r = env.create(tok, {"prompt": "after the outage", "steps": 1})
    assert r.status == 201, r
    accepted.append(r.json()["id"])
    env.start_worker("--time-scale", "0.05")
    for jid in accepted:
        j = env.wait_status(tok, jid, "completed", timeout=60)
        assert j["attempts"] == 1 and j["credits_charged"] > 0, j
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    assert c["reserved"] == 0, c
    assert server.poll() is None


def test_worker_rides_out_an_outage(env):
    """A worker attached during the outage keeps retrying and picks the job up afterwards."""
    cluster = pv_pg.Cluster()
    env.cleanups.append(cluster.close)
    db_env, _ = cluster.provision()
    env.extra_env.update(db_env)

    env.start_server()
    tok = env.add_user("erin", credits=1_000_000)
    jid = env.create(tok, {"prompt": "waits out the outage", "steps": 1}).json()["id"]
    cluster.stop("fast")
    env.start_worker("--time-scale", "0.05")
    assert env.api("GET", "/api/v1/queue", token=tok).status == 503
    cluster.start()
    j = env.wait_status(tok, jid, "completed", timeout=90)
    assert j["attempts"] == 1, j


def log(env):
    with open(os.path.join(env.dir, "server.log"), errors="replace") as f:
        return f.read()


if __name__ == "__main__":
    pv.main([test_database_restart_under_running_server, test_worker_rides_out_an_outage])
