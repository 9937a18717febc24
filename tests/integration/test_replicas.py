"""Two `pingvas server` replicas on one PostgreSQL database, with workers attached to both:
every job completes exactly once and is charged once, balances add up, and an idle worker on
one replica is woken (LISTEN/NOTIFY) by a job submitted to the other.

PostgreSQL is what makes replicas possible, so this test runs on PostgreSQL on either stack:
the production stack's database, or on the embedded stack a fresh database on
PINGVAS_TEST_PG_URL, or else a private throwaway cluster (pv_pg.Cluster). No wall-clock figure
is asserted; the wakeup latency is printed for information (bench/ measures it)."""
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pv
import pv_pg

JOBS = 200
FAST_WORKER = ["--time-scale", "0.02"]


def start_replica(env, name, *args):
    """Starts one `pingvas server` on the shared data dir and database; returns its URL."""
    p = env._spawn(["server", "--port", "0", "--data", env.data] + list(args), f"{name}.log")
    url = env._await_url(p)
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    pv.wait_for(lambda: pv.http("GET", url + "/healthz").status == 200, what=f"{name} healthz")
    return url


def start_worker_on(env, url, wid, *args):
    env.url = url
    return env.start_worker(*(FAST_WORKER + list(args)), name=wid)


def test_two_replicas_complete_each_job_once(env):
    db = pv_pg.provision_for(env)
    a = start_replica(env, "server-a")
    b = start_replica(env, "server-b")
    tokens = {u: env.add_user(u, credits=10_000_000) for u in ("alice", "bob")}
    before = {u: pv.http("GET", a + "/api/v1/credits", token=t).json()["balance"]
              for u, t in tokens.items()}
    for i, url in enumerate((a, a, b, b)):
        start_worker_on(env, url, f"w{i}")

    def submit(i):
        url = (a, b)[i % 2]
        user = ("alice", "bob")[(i // 2) % 2]
        r = pv.http("POST", url + "/api/v1/generation/create", {"prompt": f"job {i}", "steps": 2},
                    token=tokens[user])
        assert r.status == 201, r
        return user, r.json()["id"]

    start = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        jobs = list(ex.map(submit, range(JOBS)))

    def all_done():
        rows = pv_pg.psql(db, "SELECT status, COUNT(*) FROM generation_jobs GROUP BY status")
        counts = dict(line.split("|") for line in rows.split())
        return counts if counts.get("completed") == str(JOBS) else None

    pv.wait_for(all_done, timeout=240, interval=0.2, what=f"{JOBS} jobs to complete")
    took = time.monotonic() - start
    print(f"  {JOBS} jobs through 2 replicas x 2 workers: {took:.1f}s "
          f"({JOBS / took:.0f} jobs/s incl. simulated GPU time)")

    # Each job: completed once, claimed once, one charge; read through either replica.
    charged = {"alice": 0, "bob": 0}
    for i, (user, jid) in enumerate(jobs):
        j = pv.http("GET", (b, a)[i % 2] + f"/api/v1/generation/{jid}", token=tokens[user]).json()
        assert j["status"] == "completed" and j["attempts"] == 1, j
        assert j["credits_charged"] > 0, j
        charged[user] += j["credits_charged"]
    ledger = pv_pg.psql(db, "SELECT COUNT(*), COUNT(DISTINCT job_id) FROM credit_ledger"
                            " WHERE kind = 'charge'").strip()
    assert ledger == f"{JOBS}|{JOBS}", ledger
    logs = env.log("server-a.log") + env.log("server-b.log")
    completed = re.findall(r"event=job_completed job=(\S+)", open_full(env, "server-a.log") +
                           open_full(env, "server-b.log"))
    assert len(completed) == JOBS and len(set(completed)) == JOBS, (len(completed), logs[-2000:])
    for u, t in tokens.items():
        c = pv.http("GET", b + "/api/v1/credits", token=t).json()
        assert c["reserved"] == 0, c
        assert c["balance"] == before[u] - charged[u], (u, c, before[u], charged[u])
    # Both replicas handed out work.
    for name in ("server-a.log", "server-b.log"):
        assert "event=job_claimed" in open_full(env, name), name


def test_concurrent_creates_never_overspend(env):
    """Credits for exactly N jobs, 3N creates at once through both replicas: exactly N are
    accepted (the user row lock makes the reservation check exact across replicas)."""
    pv_pg.provision_for(env)
    a = start_replica(env, "server-a")
    b = start_replica(env, "server-b")
    probe = env.add_user("probe", credits=1_000_000)
    body = {"prompt": "priced", "steps": 10}
    jid = pv.http("POST", a + "/api/v1/generation/create", body, token=probe).json()["id"]
    cost = pv.http("GET", a + "/api/v1/credits", token=probe).json()["reserved"]
    assert cost > 0
    assert pv.http("POST", a + f"/api/v1/generation/{jid}/cancel", token=probe).status == 200
    n = 12
    tok = env.add_user("frank", credits=n * cost)

    def submit(i):
        return pv.http("POST", (a, b)[i % 2] + "/api/v1/generation/create", body,
                       token=tok).status

    with ThreadPoolExecutor(16) as ex:
        statuses = list(ex.map(submit, range(3 * n)))
    assert statuses.count(201) == n and statuses.count(402) == 2 * n, statuses
    c = pv.http("GET", b + "/api/v1/credits", token=tok).json()
    assert c["balance"] == n * cost and c["reserved"] == n * cost, c


def metric(url, name):
    for line in pv.http("GET", url + "/metrics", token=pv.WORKER_TOKEN).body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def test_lost_worker_reaped_once_by_two_reapers(env):
    """Both replicas run their reaper on short leases; a worker killed mid-job has its lease
    taken back exactly once, and the job completes once on the other replica."""
    pv_pg.provision_for(env)
    fast = ["--lease", "1s", "--heartbeat", "200ms", "--reaper-interval", "50ms"]
    a = start_replica(env, "server-a", *fast)
    b = start_replica(env, "server-b", *fast)
    tok = env.add_user("gina", credits=1_000_000)
    env.url = a
    wa = env.start_worker("--time-scale", "0.2", name="wa")
    jid = pv.http("POST", a + "/api/v1/generation/create", {"prompt": "lost", "steps": 150},
                  token=tok).json()["id"]
    pv.wait_for(lambda: pv.http("GET", a + f"/api/v1/generation/{jid}", token=tok).json()
                ["status"] == "in_progress", what="the job to start on A's worker")
    env.kill9(wa)
    env.url = b
    env.start_worker("--time-scale", "0.2", name="wb")
    j = pv.wait_for(lambda: (lambda x: x if x["status"] == "completed" else None)(
        pv.http("GET", b + f"/api/v1/generation/{jid}", token=tok).json()), timeout=90,
        what="the job to complete on B's worker")
    assert j["attempts"] == 2 and j["releases"] == 0, j
    assert metric(a, "pingvas_leases_expired_total") + \
        metric(b, "pingvas_leases_expired_total") == 1
    assert pv_pg.psql(env.extra_env["DATABASE_URL"],
                      "SELECT COUNT(*) FROM credit_ledger WHERE kind = 'charge'").strip() == "1"


def open_full(env, name):
    with open(os.path.join(env.dir, name), errors="replace") as f:
        return f.read()


def test_idle_worker_on_other_replica_is_woken(env):
    pv_pg.provision_for(env)
    a = start_replica(env, "server-a")
    b = start_replica(env, "server-b", "--log-level", "debug")
    tok = env.add_user("carol", credits=1_000_000)
    # One worker, on B, long-polling (a claim parked up to 30 s); none on A.
    start_worker_on(env, b, "wb", "--claim-wait", "30s")
    pv.wait_for(lambda: pv.http("GET", b + "/api/v1/queue", token=tok).json()["tiers"]
                ["standard"]["idle_workers"] >= 1, what="the worker on B to be idle")
    time.sleep(0.5)  # let its claim park
    waits = []
    for i in range(5):
        notified = open_full(env, "server-b.log").count("event=store_notified")
        r = pv.http("POST", a + "/api/v1/generation/create", {"prompt": f"wake {i}", "steps": 1},
                    token=tok)
        assert r.status == 201, r
        jid = r.json()["id"]
        j = pv.wait_for(lambda: (lambda x: x if x["status"] == "completed" else None)(
            pv.http("GET", a + f"/api/v1/generation/{jid}", token=tok).json()),
            timeout=60, what=f"job {jid} submitted to A to complete on B")
        log_b = open_full(env, "server-b.log")
        assert f"event=job_claimed job={jid} worker=wb" in log_b
        # B learned of the job from PostgreSQL's NOTIFY, not only from its polling fallback.
        assert log_b.count("event=store_notified") > notified, "no NOTIFY reached server B"
        waits.append(iso_ms(j["started_at"]) - iso_ms(j["created_at"]))
        time.sleep(0.3)  # the worker parks its next claim
    print(f"  submit on A -> claim on B: {sorted(waits)} ms (polling fallback: up to 500 ms)")


def iso_ms(s):
    import datetime
    return int(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


if __name__ == "__main__":
    pv.main([test_two_replicas_complete_each_job_once, test_idle_worker_on_other_replica_is_woken,
             test_concurrent_creates_never_overspend, test_lost_worker_reaped_once_by_two_reapers])
