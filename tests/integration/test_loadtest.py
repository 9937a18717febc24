"""`pingvas loadtest` against the real binary: the seed's load test (100 jobs, 10 concurrent)
passes against `pingvas up`, its report carries the figures it promises, `--no-wait` returns
after submitting, bad flags exit 2, a 402 is counted under failures by status code, and a job
that ends out of order while its polls stop at the queue's front is still counted.

No wall-clock figure is asserted here: these are checks of behaviour, not benchmarks (bench/)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pv  # noqa: E402

PCT_KEYS = ("n", "p50", "p95", "p99", "max", "mean")


def loadtest(env, token, *args, check=False):
    e = env.env()
    e["PINGVAS_TOKEN"] = token
    p = pv.run_cli("loadtest", "--server", env.url, *args, env=e, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"loadtest failed ({p.returncode}): {p.stdout}\n{p.stderr}")
    return p


def all_jobs(env, token, status=None):
    jobs, cursor = [], None
    while True:
        q = "limit=100" + (f"&status={status}" if status else "") + (f"&cursor={cursor}" if cursor else "")
        r = env.api("GET", "/api/v1/generation?" + q, token=token)
        assert r.status == 200, r
        page = r.json()
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


def test_seed_load_test_against_up(env):
    # time-scale 0.001: near-instant jobs that still cost one credit each, so the credit check
    # below compares real charges rather than zeros.
    env.start_server("--workers", "4", "--enterprise-workers", "0", "--time-scale", "0.001",
                     cmd="up")
    token = env.add_user("load", credits=100000)
    pv.wait_for(lambda: env.api("GET", "/api/v1/queue", token=token).json()["tiers"]["standard"]
                ["workers"] >= 1, what="a worker to register")
    p = loadtest(env, token, "--jobs", "100", "--concurrency", "10", "--json", check=True)
    rep = json.loads(p.stdout)
    assert rep["jobs"] == 100 and rep["concurrency"] == 10 and rep["waited"] is True
    assert rep["submitted"] == 100 and rep["accepted"] == 100, rep
    assert rep["completed"] == 100, rep
    assert rep["failed"] == 0 and rep["canceled"] == 0 and rep["unfinished"] == 0
    assert rep["failures_by_status"] == {}, rep["failures_by_status"]
    for k in ("submit_latency_ms", "queue_wait_ms", "end_to_end_ms"):
        assert set(PCT_KEYS) <= set(rep[k]), rep[k]
        assert rep[k]["n"] == 100
        assert 0 <= rep[k]["p50"] <= rep[k]["p95"] <= rep[k]["p99"] <= rep[k]["max"], rep[k]
    assert rep["queue_wait_ms"]["p99"] <= rep["end_to_end_ms"]["max"]
    assert rep["jobs_per_second"] is not None and rep["jobs_per_second"] > 0
    assert rep["submits_per_second"] > 0
    tl = rep["worker_timeline"]
    assert tl and all({"t", "workers", "standard", "enterprise", "queued", "running"} <= set(s)
                      for s in tl), tl
    assert [s["t"] for s in tl] == sorted(s["t"] for s in tl)
    assert rep["peak_workers"] >= 1 and rep["peak_workers"] <= 4, rep

    # Every job the server holds for this user is completed, and the sums match the report.
    jobs = all_jobs(env, token)
    assert len(jobs) == 100 and all(j["status"] == "completed" for j in jobs)
    assert sorted(j["prompt"] for j in jobs) == sorted(f"Test image {i}" for i in range(100))
    assert all(j["model"] == "sd15" and j["width"] == 512 and j["height"] == 512
               and j["steps"] == 20 for j in jobs)
    charged = sum(j["credits_charged"] for j in jobs)
    assert charged == rep["credits_charged"] and charged >= 100, (charged, rep["credits_charged"])
    assert abs(sum(j["gpu_seconds"] for j in jobs) - rep["gpu_seconds"]) < 1e-6

    # The credits ledger agrees: the balance fell by exactly what was charged, nothing is left
    # reserved, and every charge entry the endpoint lists is the charge of its job.
    cr = env.api("GET", "/api/v1/credits", token=token).json()
    assert cr["reserved"] == 0, cr
    assert 100000 - cr["balance"] == rep["credits_charged"], (cr["balance"], rep)
    assert cr["ledger"][0]["balance_after"] == cr["balance"]
    by_id = {j["id"]: j for j in jobs}
    charges = [e for e in cr["ledger"] if e["kind"] == "charge"]
    assert charges
    for e in charges:
        assert -e["amount"] == by_id[e["job_id"]]["credits_charged"], e

    # The human report (stdout not a terminal: plain lines) names every figure.
    p = loadtest(env, token, "--jobs", "10", "--concurrency", "3", check=True)
    for word in ("submit latency", "queue wait", "end to end", "jobs/s", "GPU-seconds",
                 "credits charged", "failures", "workers", "completed 10 of 10"):
        assert word in p.stdout, (word, p.stdout)


def test_terminal_shows_progress(env):
    """On a terminal the live line shows the running jobs' progress (their steps so far)."""
    import pty
    import subprocess
    env.start_server("--workers", "2", "--enterprise-workers", "0", "--time-scale", "0.3",
                     "--heartbeat", "100ms", cmd="up")
    token = env.add_user("tty", credits=100000)
    master, slave = pty.openpty()
    e = env.env()
    e["PINGVAS_TOKEN"] = token
    p = subprocess.Popen([pv.BIN, "loadtest", "--server", env.url, "--jobs", "4",
                          "--concurrency", "4", "--poll", "50ms"], stdout=subprocess.PIPE,
                         stderr=slave, env=e)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(timeout=120) == 0, (p.stdout.read(), out[-2000:])
    text = out.decode(errors="replace")
    import re
    seen = [(int(a), int(b)) for a, b in re.findall(r"running \d+  steps (\d+)/(\d+)", text)]
    # the sums over the running jobs of 20 steps each, part-way at least once
    assert any(0 < a < b and b % 20 == 0 for a, b in seen), text[-2000:]


def test_no_wait_returns_after_submitting(env):
    env.start_server()  # no workers: nothing would ever complete
    token = env.add_user("nowait", credits=100000)
    p = loadtest(env, token, "--jobs", "20", "--concurrency", "4", "--no-wait", "--json",
                 check=True)
    rep = json.loads(p.stdout)
    assert rep["waited"] is False and rep["accepted"] == 20 and rep["completed"] == 0, rep
    assert rep["submit_latency_ms"]["n"] == 20
    assert rep["queue_wait_ms"]["n"] == 0 and rep["queue_wait_ms"]["p50"] is None
    assert rep["worker_timeline"] and rep["worker_timeline"][-1]["workers"] == 0
    assert len(all_jobs(env, token, "queued")) == 20
    # Waiting with no workers ends at --timeout with the jobs counted as timed out (exit 1).
    p = loadtest(env, token, "--jobs", "2", "--timeout", "1s", "--poll", "100ms", "--json")
    assert p.returncode == 1, p
    rep = json.loads(p.stdout)
    assert rep["failures_by_status"] == {"timed_out": 2}, rep


def test_polls_stop_at_the_queue_and_look_again_at_the_end(env):
    """A poll round goes oldest first and starts no more polls once a job is still queued (the
    jobs behind it are queued too; bench (b) counts the requests this saves). So that a job that
    ended out of order is not missed, the unfinished jobs (the oldest 2,000) are looked at once
    more before the report: here the newest is canceled while the oldest still waits, and with
    one poll in flight no round ever reaches it."""
    import subprocess
    env.start_server()  # no workers: the queue does not move
    token = env.add_user("order", credits=100000)
    e = env.env()
    e["PINGVAS_TOKEN"] = token
    p = subprocess.Popen([pv.BIN, "loadtest", "--server", env.url, "--jobs", "6", "--concurrency",
                          "1", "--poll", "100ms", "--timeout", "3s", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=e)
    jobs = []
    while len(jobs) < 6:
        jobs = all_jobs(env, token)
    newest = max(jobs, key=lambda j: j["created_at"])
    r = env.api("POST", f"/api/v1/generation/{newest['id']}/cancel", token=token)
    assert r.status == 200, r
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 1, out  # five timed out
    rep = json.loads(out)
    assert rep["accepted"] == 6 and rep["canceled"] == 1 and rep["unfinished"] == 5, rep


def test_bad_flags_exit_2(env):
    env.start_server()
    token = env.add_user("flags")
    cases = [
        (["--jobs", "abc"], "--jobs"),
        (["--jobs", "0"], "--jobs"),
        (["--concurrency", "0"], "--concurrency"),
        (["--width", "100"], "--width"),
        (["--steps", "151"], "--steps"),
        (["--timeout", "soon"], "--timeout"),
        (["--poll", "1ms"], "--poll"),
        (["--server", "ftp://x"], "--server"),
        (["--bogus"], "--bogus"),
    ]
    for args, flag in cases:
        p = loadtest(env, token, *args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert flag in p.stderr, (args, p.stderr)
        assert p.stdout == "", (args, p.stdout)
    e = env.env()
    e.pop("PINGVAS_TOKEN", None)
    p = pv.run_cli("loadtest", "--server", env.url, env=e, check=False)
    assert p.returncode == 2 and "--token" in p.stderr, p
    p = pv.run_cli("loadtest", "--help", env=e, check=False)
    assert p.returncode == 0 and "--concurrency" in p.stdout and "PINGVAS_TOKEN" in p.stdout


def test_402_counted_by_status(env):
    env.start_server()  # no workers, so reservations stay in place while submitting
    # A 512x512, 20-step job reserves 4 credits: 8 credits admit exactly two of five.
    token = env.add_user("poor", credits=8)
    p = loadtest(env, token, "--jobs", "5", "--concurrency", "1", "--no-wait", "--json")
    assert p.returncode == 1, p
    rep = json.loads(p.stdout)
    assert rep["accepted"] == 2 and rep["submitted"] == 5, rep
    assert rep["failures_by_status"] == {"402": 3}, rep
    p = loadtest(env, token, "--jobs", "3", "--no-wait")
    assert p.returncode == 1 and "402: 3" in p.stdout, p.stdout


if __name__ == "__main__":
    pv.main([test_terminal_shows_progress, test_seed_load_test_against_up, test_no_wait_returns_after_submitting,
             test_bad_flags_exit_2, test_402_counted_by_status,
             test_polls_stop_at_the_queue_and_look_again_at_the_end])
