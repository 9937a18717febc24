"""Clock steps (issue 15, section 4): the server's wall clock is stepped forward and back by
minutes while jobs run, through the clock module's test hook (PINGVAS_TEST_CLOCK_STEP_FILE: the
file's content, in ms, is added to this process's wall clock; time namespaces do not virtualize
CLOCK_REALTIME). Steps of up to 4 minutes either way, every 0.2-0.5 s, while 4 workers run jobs
and some are kill -9'd right after a backward step.

Leases, the reaper and worker presence run on the steady clock (clock_steady_ms: the wall clock
read once at start, advanced by the monotonic clock), so:
- no lease is lost by a step: a forward step does not expire the leases of live workers (no live
  worker is ever told its lease is gone, no job has more attempts than kill -9s explain);
- no lease is extended by a step: the job of a worker kill -9'd just after a backward step is
  requeued one lease later, not minutes later (the run drains within a bound far shorter than
  the step);
- the hook really moved the server's wall clock: a JWT that expires in 2 minutes (plus the 60 s leeway) is refused
  while the clock is 4 minutes ahead and accepted again once it is back (JWT exp is an absolute
  instant by RFC 7519, compared with the wall clock on purpose).
At the end every job completed once with one charge. PINGVAS_FAULTS_LONG=1: 2,000 jobs.
Autoscaling cooldowns run on the same steady clock: test_cooldown_after_step_back."""
import os
import threading
import time

import faults
import pv

LEASE = ["--lease", "2s", "--heartbeat", "300ms", "--reaper-interval", "100ms",
         "--worker-ttl", "5s", "--max-attempts", "20"]
STEPS_MS = [-240_000, -120_000, 0, 120_000, 240_000]


def set_step(path, ms):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(ms))
    os.replace(tmp, path)


def test_clock_steps(env):
    seed = faults.seed()
    jobs_n = 2000 if faults.long_run() else 150
    t0 = time.monotonic()
    step_file = os.path.join(env.dir, "clock_step")
    set_step(step_file, 0)
    env.extra_env["PINGVAS_TEST_CLOCK_STEP_FILE"] = step_file
    env.start_server(*LEASE)
    # Tokens minted 4 minutes back (the CLI reads the hook too): their iat is never in the
    # future of the stepped server, which would refuse them (RFC 7519 iat/nbf, 60 s leeway).
    set_step(step_file, -240_000)
    load = faults.Load(env, seed)
    set_step(step_file, 0)
    short = pv.run_cli("token", "ava", "--ttl", "2m", data=env.data, env=env.env()).stdout.strip()
    wall = [0]

    def step(ms):
        load.faults["step_forward" if ms > wall[0] else "step_back"] += 1
        set_step(step_file, ms)
        wall[0] = ms
        time.sleep(0.05)  # the hook re-reads the file every 20 ms

    # The hook moves the server's wall clock: a 2-minute token dies 4 minutes ahead.
    step(240_000)
    assert env.api("GET", "/api/v1/credits", token=short).status == 401
    step(0)
    assert env.api("GET", "/api/v1/credits", token=short).status == 200

    workers = [env.start_worker("--time-scale", "0.05", "--imds-url", "off") for _ in range(4)]
    killed = set()
    sub = threading.Thread(target=load.submit, args=(jobs_n,), kwargs={"min_steps": 10,
                                                                       "max_steps": 40})
    sub.start()
    rng = load.rng
    while sub.is_alive() or (load.backlog() or 0) > 10:
        time.sleep(rng.uniform(0.2, 0.5))
        ms = rng.choice([m for m in STEPS_MS if m != wall[0]])
        back = ms < wall[0]
        step(ms)
        if back and rng.random() < 0.25:
            # Kill a worker right after the clock went back: its lease must not live minutes.
            w = rng.choice([w for w in workers if w.poll() is None])
            env.kill9(w)
            killed.add(w.logname)
            load.faults["worker_kill9"] += 1
            workers.remove(w)
            workers.append(env.start_worker("--time-scale", "0.05", "--imds-url", "off"))
    sub.join()
    step(-240_000)  # ends 4 minutes behind: a lease extended by the step would hold the drain
    load.drain(timeout=60)
    jobs, figures = load.account()

    lost = faults.leases_lost(env, exclude=killed)
    assert not lost, f"live workers lost leases to a clock step: {lost[:5]}"
    assert figures["lost_leases"] <= load.faults["worker_kill9"], (figures, load.faults)
    expired = sum(int(m) for line in faults.log_events(env, "server.log", "leases_expired")
                  for m in [line.split("requeued=")[1].split()[0]])
    assert expired <= load.faults["worker_kill9"], (expired, load.faults)
    load.report("clock_steps", figures, t0)


def test_cooldown_after_step_back(env):
    """`pingvas up`: once the last job is done, the idle worker is stopped after the 3 s
    cooldown even though the wall clock went 4 minutes back meanwhile (a cooldown measured on the
    wall clock would keep it for 4 minutes more)."""
    step_file = os.path.join(env.dir, "clock_step")
    set_step(step_file, 0)
    env.extra_env["PINGVAS_TEST_CLOCK_STEP_FILE"] = step_file
    env.start_server("--max-workers", "2", "--cooldown", "3s", "--max-enterprise-workers", "0",
                     "--time-scale", "0.05", cmd="up")
    set_step(step_file, -240_000)  # mint the token 4 minutes back: valid at either step
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    set_step(step_file, 0)
    jid = env.create(tok, {"prompt": "one job", "steps": 5}).json()["id"]
    env.wait_status(tok, jid, "completed", timeout=60)
    set_step(step_file, -240_000)

    def scaled_to_zero():
        ev = env.api("GET", "/api/v1/scaling/events", token=pv.WORKER_TOKEN).json()["events"]
        return [e for e in ev if e["tier"] == "standard" and e["from"] > 0 and e["to"] == 0]
    ev = pv.wait_for(scaled_to_zero, timeout=45, what="the idle worker to be scaled down")
    print(f"cooldown_after_step_back: step_back=1 scale_down={ev[0]['reason']!r}", flush=True)


if __name__ == "__main__":
    pv.main([pv.clean_exit(test_clock_steps), pv.clean_exit(test_cooldown_after_step_back)])
