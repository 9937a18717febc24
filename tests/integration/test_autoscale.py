"""Autoscaling from zero and back, against the real binary: `pingvas up` (event-driven local
autoscaler in the server process) and `pingvas autoscale` (a separate process reading the
server's backlog). Cooldowns are set short with flags; the policy is the same."""
import os
import signal
import subprocess

import pv


def events(env, tok):
    # Scaling events are an operator view: the worker token (or an admin JWT) reads them.
    return env.api("GET", "/api/v1/scaling/events", token=pv.WORKER_TOKEN).json()["events"]


def workers(env, tok, tier="standard"):
    return env.api("GET", "/api/v1/queue", token=tok).json()["tiers"][tier]["workers"]


def burst_then_zero(env, tok):
    # 40 jobs of about 0.5 s each: the backlog needs ceil(40 / 5) = 8 workers (max is 10).
    ids = [env.create(tok, {"prompt": f"burst {i}"}).json()["id"] for i in range(40)]
    for jid in ids:
        env.wait_status(tok, jid, "completed", timeout=120)
    ev = [e for e in events(env, tok) if e["tier"] == "standard"]
    assert ev and ev[0]["from"] == 0, ev
    peak = max(e["to"] for e in ev)
    assert peak == 8, ev
    # After the cooldown every worker is gone again.
    pv.wait_for(lambda: any(e["to"] == 0 for e in events(env, tok)[len(ev) - 1:]) and
                workers(env, tok) == 0, timeout=60, what="scale to zero")
    n = len(events(env, tok))
    # The next job starts a worker again.
    jid = env.create(tok, {"prompt": "after zero"}).json()["id"]
    env.wait_status(tok, jid, "completed", timeout=60)
    again = events(env, tok)[n:]
    assert again and again[0]["from"] == 0 and again[0]["to"] == 1, again
    for e in ev + again:
        assert e["reason"] and e["time"].endswith("Z")


def test_up_scales_from_zero_and_back(env):
    env.start_server("--max-workers", "10", "--target-per-worker", "5", "--cooldown", "2s",
                     "--max-enterprise-workers", "0", "--time-scale", "0.15", cmd="up")
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    assert workers(env, tok) == 0
    burst_then_zero(env, tok)


def test_autoscale_process_against_server(env):
    env.start_server()
    tok = env.add_user("scaler", credits=100000)
    p = env._spawn(["autoscale", "--server", env.url, "--max-workers", "10",
                    "--target-per-worker", "5", "--cooldown", "2s", "--max-enterprise-workers",
                    "0", "--time-scale", "0.15", "--poll", "100ms"], "autoscale.log")
    burst_then_zero(env, tok)
    assert env.stop(p) == 0


def test_crashed_worker_is_restarted(env):
    env.start_server("--workers", "2", "--enterprise-workers", "0", "--time-scale", "0.01",
                     cmd="up")
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    pv.wait_for(lambda: workers(env, tok) == 2, what="two workers")
    kids = subprocess.run(["pgrep", "-P", str(env.server.pid)], capture_output=True,
                          text=True).stdout.split()
    assert len(kids) == 2, kids
    os.kill(int(kids[0]), signal.SIGKILL)
    pv.wait_for(lambda: "worker_crashed" in env.log("up.log"), what="crash noticed")
    pv.wait_for(lambda: len(subprocess.run(["pgrep", "-P", str(env.server.pid)],
                                           capture_output=True, text=True).stdout.split()) == 2,
                timeout=30, what="restart")
    jid = env.create(tok).json()["id"]
    env.wait_status(tok, jid, "completed")


def test_gpus_pinned_one_worker_each(env):
    # Two GPUs named: at most two workers whatever the backlog, each on its own device.
    env.start_server("--gpus", "0,1", "--max-workers", "8", "--max-enterprise-workers", "0",
                     "--time-scale", "0.3", cmd="up")
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    for i in range(6):
        env.create(tok, {"prompt": f"gpu {i}"})
    pv.wait_for(lambda: workers(env, tok) == 2, what="two workers")
    kids = pv.wait_for(lambda: (lambda k: k if len(k) == 2 else None)(
        subprocess.run(["pgrep", "-P", str(env.server.pid)], capture_output=True,
                       text=True).stdout.split()), what="two worker processes")
    devs = []
    for k in kids:
        with open(f"/proc/{k}/environ", "rb") as f:
            envs = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
        devs.append(envs.get(b"CUDA_VISIBLE_DEVICES"))
    assert sorted(devs) == [b"0", b"1"], devs
    assert max(e["to"] for e in events(env, tok)) == 2
    pv.wait_for(lambda: "pingvas_worker_cold_start_seconds_count 2" in
                env.api("GET", "/metrics", token=pv.WORKER_TOKEN).body.decode(),
                what="two cold starts measured")


if __name__ == "__main__":
    pv.main([test_up_scales_from_zero_and_back, test_autoscale_process_against_server,
             test_crashed_worker_is_restarted, test_gpus_pinned_one_worker_each])
