"""The simulator against reality (issue 13): `pingvas up` (synthetic backend, time-scaled, local
autoscaler) runs a burst of jobs; `pingvas simulate` replays the same arrivals (the server's own
created_at stamps) with the same policy, the same GPU profile and time scale, and the cold start
measured in the run. Predicted and measured p95 wait and worker-seconds must agree within 15 %.

What varies on a loaded machine is kept out of the comparison: arrivals are the times the server
recorded, not the times the test meant to submit; the cold start (process start, model load,
first claim) is measured, not assumed; worker-seconds are counted from the autoscaler's own
scaling events (decision to decision, as the simulator counts them), not from process exits,
which lag by up to a claim poll. Job times (1.7 s) are long beside the per-job overhead of the
worker protocol (milliseconds), and nothing is asserted on wall-clock durations."""
import datetime
import json
import math
import os

import pv

SCALE = "0.3"        # 256x256, 150 steps on a t4: 5.78 s, so 1.73 s; model load 1.8 s
MAX_WORKERS = 4
COOLDOWN = "2s"
JOBS = 12
BODY = {"prompt": "reality check", "width": 256, "height": 256, "steps": 150}


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def p95(values):
    v = sorted(values)
    return v[math.ceil(0.95 * len(v)) - 1]


def worker_seconds(events):
    """Replicas integrated over time, from the autoscaler's scaling events."""
    total, n, last = 0.0, 0, None
    for e in events:
        t = ts(e["time"])
        if last is not None:
            total += n * (t - last)
        n, last = e["to"], t
    assert n == 0, events
    return total


def test_simulator_matches_up(env):
    env.start_server("--time-scale", SCALE, "--max-workers", str(MAX_WORKERS),
                     "--max-enterprise-workers", "0", "--min-workers", "0",
                     "--target-per-worker", "1", "--cooldown", COOLDOWN, cmd="up")
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    ids = [env.create(tok, BODY).json()["id"] for _ in range(JOBS)]
    jobs = [env.wait_status(tok, jid, "completed", timeout=120) for jid in ids]

    def scaled_to_zero():
        ev = env.api("GET", "/api/v1/scaling/events", token=pv.WORKER_TOKEN).json()["events"]
        ev = [e for e in ev if e["tier"] == "standard"]
        return ev if ev and ev[-1]["to"] == 0 else None
    events = pv.wait_for(scaled_to_zero, timeout=60, what="scale to zero")

    created = sorted(ts(j["created_at"]) for j in jobs)
    waits = [ts(j["started_at"]) - ts(j["created_at"]) for j in jobs]
    by_arrival = [w for _, w in sorted(zip([ts(j["created_at"]) for j in jobs], waits))]
    # Each of the first MAX_WORKERS jobs started a worker of its own: their wait is the cold start.
    cold = sorted(by_arrival[:MAX_WORKERS])[MAX_WORKERS // 2]
    measured = {"p95": p95(waits), "worker_s": worker_seconds(events)}

    trace = os.path.join(env.dir, "trace.csv")
    with open(trace, "w") as f:
        f.write("time_s,tier,width,height,steps\n")
        for t in created:
            f.write(f"{t - created[0]:.3f},standard,256,256,150\n")
    r = pv.run_cli("simulate", "--trace", trace, "--hours", "0.05", "--policy", "local",
                   "--target", "1", "--max", str(MAX_WORKERS), "--min", "0", "--cooldown",
                   COOLDOWN, "--enterprise-max", "0", "--time-scale", SCALE, "--boot", "0s",
                   "--pull", "0s", "--load", f"{cold:.3f}s", "--consolidate-after", "0s",
                   "--interruptions", "0", "--json")
    sim = json.loads(r.stdout)
    assert sim["completed"] == JOBS, sim
    # No node outlives its worker here (no boot, no consolidation delay): node-hours are
    # worker-hours.
    predicted = {"p95": sim["wait_p95_s"], "worker_s": sim["node_hours_spot"] * 3600}
    print(f"cold start {cold:.3f} s; measured {measured}; predicted {predicted}")
    for j in sorted(jobs, key=lambda j: j["created_at"]):  # created, started, completed
        print(" ".join(f"{ts(j[k]) - created[0]:.3f}" for k in
                       ("created_at", "started_at", "completed_at")))
    for k in measured:
        err = abs(predicted[k] - measured[k]) / measured[k]
        assert err <= 0.15, (k, measured, predicted, err)


if __name__ == "__main__":
    pv.main([test_simulator_matches_up])
