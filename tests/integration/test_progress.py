"""Job progress (DESIGN section 3): the synthetic backend reports step of steps, the worker sends
it with its heartbeats, the server stores it and the job JSON shows it while the job is
in_progress (null when queued or ended); a new attempt starts without the old one's progress.
Uses only the public API, so it also runs with PINGVAS_TEST_STACK=production."""
import pv

FAST = ["--lease", "2s", "--heartbeat", "100ms", "--reaper-interval", "100ms"]


@pv.clean_exit
def test_synthetic_progress_in_job_json(env):
    env.start_server(*FAST)
    tok = env.add_user("p1")
    # 20 steps on the t4 profile: 3.25 s of simulated GPU time, x0.6 = about 2 s
    jid = env.create(tok, {"prompt": "progress", "steps": 20}).json()["id"]
    assert env.job(tok, jid)["progress"] is None  # queued: no worker yet
    env.start_worker("--time-scale", "0.6")
    j, seen = pv.watch_progress(env, tok, jid)
    assert j["status"] == "completed" and j["progress"] is None, j
    assert seen and all(p["steps"] == 20 for p in seen), seen
    steps = [p["step"] for p in seen]
    assert steps == sorted(steps) and steps[0] < 20, seen


@pv.clean_exit
def test_progress_cleared_for_a_new_attempt(env):
    env.start_server(*FAST)
    tok = env.add_user("p2")
    w = env.start_worker("--time-scale", "1", "--drain-timeout", "0s")
    jid = env.create(tok, {"prompt": "released", "steps": 40}).json()["id"]
    pv.wait_for(lambda: (env.job(tok, jid).get("progress") or {}).get("step", 0) > 0,
                timeout=60, what="progress on the first attempt")
    env.stop(w)  # SIGTERM with a zero drain window: the job is released at once
    j = env.wait_status(tok, jid, "queued")
    assert j["progress"] is None, j
    env.start_worker("--time-scale", "0")
    j, seen = pv.watch_progress(env, tok, jid)
    assert j["status"] == "completed" and j["releases"] == 1, j


if __name__ == "__main__":
    pv.main([test_synthetic_progress_in_job_json, test_progress_cleared_for_a_new_attempt])
