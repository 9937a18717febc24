"""The dashboard (issue 14) in a real browser: Debian's chromium, headless, driven by puppeteer-core
from npm (tests/peers/browser; no browser download). A user signs in with a pasted token, submits
a job from the page, watches its progress bar move and its image appear, and sees the charge in
the ledger; an operator watches the local autoscaler's workers go 0 -> N -> 0 on the fleet view.
Screenshots are kept as test artifacts (their paths are printed): under $PINGVAS_TEST_ARTIFACTS,
else in a new directory under the system's temp directory."""
import json
import os
import subprocess
import tempfile

import pv

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FAST = ["--lease", "2s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]


def artifacts(name):
    base = os.environ.get("PINGVAS_TEST_ARTIFACTS")
    if base:
        d = os.path.join(base, name)
        os.makedirs(d, exist_ok=True)
        return d
    return tempfile.mkdtemp(prefix=f"pingvas-{name}-")


def ensure_peer():
    """npm ci from the lock file when node_modules is missing (puppeteer-core downloads no
    browser; PUPPETEER_SKIP_DOWNLOAD makes sure)."""
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: scripts/deps.sh --test installs chromium"
    if not os.path.isdir(os.path.join(PEER, "node_modules", "puppeteer-core")):
        env = dict(os.environ, PUPPETEER_SKIP_DOWNLOAD="1")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER,
                       check=True, env=env, timeout=300)


def drive(mode, url, token, outdir, on_ready=None):
    """Runs drive.js; calls on_ready() when it prints READY; returns its JSON report."""
    p = subprocess.Popen(["node", os.path.join(PEER, "drive.js"), mode, url, token, outdir],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, CHROMIUM=CHROMIUM))
    report = None
    for line in p.stdout:
        line = line.strip()
        if line == "READY" and on_ready:
            on_ready()
        elif line.startswith("{"):
            report = json.loads(line)
    p.wait(timeout=120)
    err = p.stderr.read()
    for s in (report or {}).get("screenshots", []):
        print(f"screenshot: {s}", flush=True)
    assert p.returncode == 0 and report, f"drive.js {mode} failed: {report} {err[-2000:]}"
    return report


def test_user_submits_and_watches_a_job(env):
    ensure_peer()
    env.start_server(*FAST)
    tok = env.add_user("alice", credits=5000)
    # 30 steps at 0.3x the t4 profile: about 1.5 s of work, a heartbeat (progress) every 200 ms
    env.start_worker("--time-scale", "0.3")
    r = drive("user", env.url, tok, artifacts("dashboard-user"))
    print("report:", {k: v for k, v in r.items() if k != "screenshots"})
    assert not r["errors"], r["errors"]
    assert r["status"] == "completed" and r["image_width"] == 512, r
    seen = r["progress_seen"]
    assert any(0 < v < 100 for v in seen), seen
    assert seen == sorted(seen), seen  # the bar only moves forward
    job = env.job(tok, r["job_id"])
    assert job["status"] == "completed" and job["steps"] == 30
    assert job["prompt"] == "a lighthouse at dawn, from the dashboard"
    assert r["credits_after"] == 5000 - job["credits_charged"], r  # charged, nothing reserved
    assert r["ledger_rows"] >= 2  # the grant and the charge


def test_operator_watches_workers_scale(env):
    ensure_peer()
    env.start_server("--cooldown", "1s", "--time-scale", "0.2", "--max-workers", "2",
                     "--enterprise-workers", "0", *FAST, cmd="up")
    user = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    ops = pv.run_cli("token", "ops", "--role", "admin", data=env.data,
                     env=env.env()).stdout.strip()
    jobs = []

    def submit():
        for i in range(3):
            jobs.append(env.create(user, {"prompt": f"burst {i}", "steps": 20}).json()["id"])
    r = drive("ops", env.url, ops, artifacts("dashboard-ops"), on_ready=submit)
    assert not r["errors"], r["errors"]
    assert r["workers_at_start"] == 0 and r["max_workers"] >= 1, r
    assert r["counts"][-1] == 0, r
    assert r["scaling_marks"] >= 2, r  # up and down, marked on the chart
    assert r["cost_shown"], r
    for j in jobs:
        assert env.job(user, j)["status"] == "completed"


if __name__ == "__main__":
    pv.main([test_user_submits_and_watches_a_job, test_operator_watches_workers_scale])
