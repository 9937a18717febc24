"""Job lifecycle against the real server and real worker processes: cancel reaching a running
job, a worker killed mid-job, graceful stop with a short and a long drain window, a stopped
worker's late completion, and a server restart. Leases are made short with the server's flags so
the tests run in seconds; the logic under test is the same as with the defaults."""
import signal

import pv

FAST = ["--lease", "1s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]
# 150 steps on the t4 profile is about 22 s of simulated GPU time; --time-scale shrinks it.
LONG_JOB = {"prompt": "a long job", "steps": 150}


def charges_for(env, tok, jid):
    led = env.api("GET", "/api/v1/credits", token=tok).json()["ledger"]
    return [e for e in led if e["kind"] == "charge" and e["job_id"] == jid]


def test_cancel_running_job_stops_worker(env):
    env.start_server(*FAST)
    tok = env.add_user("u1")
    w = env.start_worker("--time-scale", "0.5")
    jid = env.create(tok, LONG_JOB).json()["id"]
    env.wait_status(tok, jid, "in_progress")
    r = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert r.status == 200 and r.json()["status"] == "canceled"
    # The worker learns it on its next heartbeat, drops the job and takes the next one.
    pv.wait_for(lambda: "job_abandoned" in env.log("worker-w0.log"), timeout=20,
                what="worker to drop the canceled job")
    j2 = env.create(tok, {"prompt": "next", "steps": 1}).json()["id"]
    env.wait_status(tok, j2, "completed", timeout=30)
    j = env.job(tok, jid)
    assert j["status"] == "canceled" and j["credits_charged"] == 0 and not j["image_url"]
    assert charges_for(env, tok, jid) == []
    assert w.poll() is None


def test_kill9_worker_midjob_completes_once(env):
    env.start_server(*FAST)
    tok = env.add_user("u2", credits=1000)
    before = env.api("GET", "/api/v1/credits", token=tok).json()["balance"]
    a = env.start_worker("--time-scale", "0.2")
    jid = env.create(tok, LONG_JOB).json()["id"]
    # Mid-job: the worker has reported progress through a heartbeat.
    pv.wait_for(lambda: (env.job(tok, jid).get("progress") or {}).get("step", 0) >= 1,
                what="the worker to report progress")
    env.kill9(a)
    env.start_worker("--time-scale", "0.2")
    j = env.wait_status(tok, jid, "completed", timeout=60)
    assert j["attempts"] == 2, j  # the lost lease counts as an attempt
    ch = charges_for(env, tok, jid)
    assert len(ch) == 1 and -ch[0]["amount"] == j["credits_charged"]
    after = env.api("GET", "/api/v1/credits", token=tok).json()
    assert after["balance"] == before - j["credits_charged"] and after["reserved"] == 0


def test_sigterm_short_drain_releases(env):
    env.start_server(*FAST)
    tok = env.add_user("u3")
    a = env.start_worker("--time-scale", "0.5", "--drain-timeout", "500ms")
    jid = env.create(tok, LONG_JOB).json()["id"]
    # Mid-job for the worker itself: "in_progress" alone is set as the server claims, before the
    # worker has read the claim's answer (a SIGTERM then makes it give up that claim, and its
    # bye releases the job: test_protocol's test_bye_releases_unread_claims).
    pv.wait_for(lambda: f"event=job_start job={jid}" in env.log(f"worker-{a.worker_id}.log"),
                what="the worker to start the job")
    assert env.stop(a, signal.SIGTERM) == 0
    assert "event=drain_release" in env.log(f"worker-{a.worker_id}.log")  # released, not finished
    j = env.job(tok, jid)
    assert j["status"] == "queued" and j["releases"] == 1 and j["attempts"] == 0, j
    env.start_worker("--time-scale", "0.05")
    j = env.wait_status(tok, jid, "completed")
    assert j["attempts"] == 1 and j["releases"] == 1, j
    assert len(charges_for(env, tok, jid)) == 1


def test_sigterm_long_drain_finishes(env):
    env.start_server(*FAST)
    tok = env.add_user("u4")
    a = env.start_worker("--time-scale", "0.1", "--drain-timeout", "60s")
    jid = env.create(tok, LONG_JOB).json()["id"]
    env.wait_status(tok, jid, "in_progress")
    assert env.stop(a, signal.SIGTERM) == 0
    j = env.job(tok, jid)
    assert j["status"] == "completed" and j["attempts"] == 1 and j["releases"] == 0, j


def test_stopped_worker_late_complete_refused(env):
    env.start_server(*FAST)
    tok = env.add_user("u5")
    a = env.start_worker("--time-scale", "0.1")
    jid = env.create(tok, LONG_JOB).json()["id"]
    env.wait_status(tok, jid, "in_progress")
    a.send_signal(signal.SIGSTOP)
    env.start_worker("--time-scale", "0.02")
    env.wait_status(tok, jid, "completed", timeout=60)
    a.send_signal(signal.SIGCONT)
    # The stopped worker wakes up, is told its lease is gone, and changes nothing.
    pv.wait_for(lambda: "lease_gone" in env.log("worker-w0.log")
                or "refused" in env.log("worker-w0.log"), timeout=30,
                what="the stale worker to be refused")
    # The refusal is the server's answer: nothing the stale worker sent changed the job.
    j = env.job(tok, jid)
    assert j["status"] == "completed" and len(charges_for(env, tok, jid)) == 1


def test_stopped_idle_worker_is_not_handed_a_job(env):
    # A worker stopped while it waits in a long-poll claim must not be given the next job: the
    # job would sit leased to nobody until the lease expired, and lose an attempt.
    env.start_server(*FAST)
    tok = env.add_user("u7")
    a = env.start_worker("--claim-wait", "30s")
    pv.wait_for(lambda: env.api("GET", "/api/v1/queue", token=tok).json()["tiers"]["standard"]
                ["idle_workers"] == 1, what="an idle worker")
    # The server marks a worker idle in the claim's first try, then parks the claim at once.
    assert env.stop(a, signal.SIGTERM) == 0
    jid = env.create(tok, {"prompt": "after the stop", "steps": 1}).json()["id"]
    env.start_worker("--time-scale", "0")
    j = env.wait_status(tok, jid, "completed")
    assert j["attempts"] == 1, j


def test_server_restart_keeps_jobs(env):
    p = env.start_server(*FAST)
    tok = env.add_user("u6")
    ids = [env.create(tok, {"prompt": f"keep {i}", "steps": 1}).json()["id"] for i in range(20)]
    env.kill9(p)
    env.start_server(*FAST)
    for jid in ids:
        assert env.job(tok, jid)["status"] == "queued"
    env.start_worker("--time-scale", "0")
    for jid in ids:
        env.wait_status(tok, jid, "completed")


if __name__ == "__main__":
    pv.main([test_cancel_running_job_stops_worker, test_kill9_worker_midjob_completes_once,
             test_sigterm_short_drain_releases, test_sigterm_long_drain_finishes,
             test_stopped_worker_late_complete_refused, test_stopped_idle_worker_is_not_handed_a_job,
             test_server_restart_keeps_jobs])
