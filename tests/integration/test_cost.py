"""Cost accounting (issue 13): workers report where they run (flags, or IMDSv2 when nothing is
given) and their lifetime; GET /api/v1/cost (operators only) and `pingvas cost` turn the
lifetimes and the completed jobs into dollars at the catalog's prices."""
import datetime
import json
import os

import pv
from test_spot import FakeIMDS

FAST = ["--time-scale", "0.05", "--claim-wait", "1s"]


def run_fleet(env):
    """Two users, a spot standard worker (placement from flags) and an on-demand enterprise
    worker (placement from a loopback IMDSv2); five jobs; both workers stopped."""
    imds = FakeIMDS()
    env.cleanups.append(imds.close)
    imds.meta = {"/latest/meta-data/instance-type": "g5.4xlarge",
                 "/latest/meta-data/instance-life-cycle": "on-demand",
                 "/latest/meta-data/placement/availability-zone": "us-east-1b"}
    env.start_server()
    alice = env.add_user("alice")
    bob = env.add_user("bob", tier="enterprise")
    w0 = env.start_worker(*FAST, "--instance-type", "g4dn.xlarge", "--capacity-type", "spot",
                          "--zone", "us-east-1a")
    w1 = env.start_worker(*FAST, "--tier", "enterprise", "--imds-url", imds.url)
    jobs = [(alice, env.create(alice).json()["id"]) for _ in range(3)]
    jobs += [(bob, env.create(bob).json()["id"]) for _ in range(2)]
    done = [env.wait_status(tok, jid, ["completed"]) for tok, jid in jobs]
    assert env.stop(w0) == 0 and env.stop(w1) == 0
    assert ("GET", "/latest/meta-data/instance-type") in imds.requests
    return alice, done


def test_cost_report(env):
    alice, done = run_fleet(env)
    admin = pv.run_cli("token", "ops", "--role", "admin", data=env.data,
                       env=env.env()).stdout.strip()
    assert env.api("GET", "/api/v1/cost", token=alice).status == 403
    assert env.api("GET", "/api/v1/cost").status == 401
    r = env.api("GET", "/api/v1/cost", token=admin)
    assert r.status == 200, r
    c = r.json()
    gpu_s = sum(j["gpu_seconds"] for j in done)
    assert c["images"] == 5 and abs(c["gpu_seconds"] - gpu_s) < 1e-6
    assert c["prices"]["region"] == "us-east-1" and c["prices"]["source"]
    assert c["spot"]["hours"] > 0 and c["on_demand"]["hours"] > 0 and c["unpriced_hours"] == 0
    # g4dn.xlarge spot at the middle of 0.20-0.22, g5.4xlarge on demand at 1.624
    assert abs(c["spot"]["usd"] - c["spot"]["hours"] * 0.21) < 1e-9
    assert abs(c["on_demand"]["usd"] - c["on_demand"]["hours"] * 1.624) < 1e-9
    assert abs(c["total_usd"] - c["spot"]["usd"] - c["on_demand"]["usd"]) < 1e-9
    assert abs(c["busy_usd"] + c["loading_usd"] + c["idle_usd"] - c["total_usd"]) < 1e-9
    assert c["loading_hours"] > 0 and c["busy_hours"] > 0
    assert 0 < c["gpu_utilization"] < 1
    assert abs(c["lower_bound_usd"] - gpu_s * 0.20 / 3600) < 1e-9
    assert c["lower_bound_usd"] < c["total_usd"]
    assert abs(c["per_image_usd"] - c["total_usd"] / 5) < 1e-12

    users = env.api("GET", "/api/v1/cost?by=user", token=admin).json()["groups"]
    assert users["alice"]["images"] == 3 and users["bob"]["images"] == 2
    # each tier's users carry that tier's whole cost
    assert abs(users["alice"]["usd"] + users["bob"]["usd"] - c["total_usd"]) < 1e-9
    tiers = env.api("GET", "/api/v1/cost?by=tier", token=admin).json()["groups"]
    assert abs(tiers["standard"]["usd"] - c["spot"]["usd"]) < 1e-9
    assert abs(tiers["enterprise"]["usd"] - users["bob"]["usd"]) < 1e-9
    types = env.api("GET", "/api/v1/cost?by=instance_type", token=admin).json()["groups"]
    assert set(types) == {"g4dn.xlarge spot", "g5.4xlarge on-demand"}, types
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    days = env.api("GET", "/api/v1/cost?by=day", token=admin).json()["groups"]
    assert sum(d["images"] for d in days.values()) == 5 and (today in days or len(days) == 2)
    # a window before anything ran is empty
    empty = env.api("GET", "/api/v1/cost?since=2020-01-01&until=2020-01-02", token=admin).json()
    assert empty["total_usd"] == 0 and empty["images"] == 0
    for q in ["by=worker", "since=yesterday", "since=2030-01-01&until=2029-01-01"]:
        r = env.api("GET", "/api/v1/cost?" + q, token=admin)
        assert r.status == 400, (q, r)

    # The command reads the same store and prints the same report.
    out = pv.run_cli("cost", "--json", "--data", env.data, env=env.env()).stdout
    cli = json.loads(out)
    assert abs(cli["total_usd"] - c["total_usd"]) < 1e-9 and cli["images"] == 5
    table = pv.run_cli("cost", "--by", "user", "--data", env.data, env=env.env()).stdout
    assert "lower bound" in table and "alice" in table and "spot / on-demand" in table
    r = pv.run_cli("cost", "--by", "worker", "--data", env.data, env=env.env(), check=False)
    assert r.returncode == 2 and "--by" in r.stderr


def test_prices_file_and_bad_reports(env):
    prices = os.path.join(env.dir, "prices.txt")
    with open(prices, "w") as f:
        f.write("region test\ndate 2026-01-01\nsource a test\ng4dn.xlarge 1 1.0 0.5 0.5\n")
    env.start_server("--prices", prices)
    tok = pv.WORKER_TOKEN
    base = {"worker_id": "w9", "tier": "standard", "instance_type": "g4dn.xlarge",
            "capacity_type": "spot"}
    for ev in ["started", "loaded", "alive", "ended"]:
        r = env.api("POST", "/internal/v1/workers/report", dict(base, event=ev, busy_s=0), tok)
        assert r.status == 200, r
    for bad in [dict(base, event="exploded"), dict(base, event="alive", capacity_type="cheap"),
                dict(base, event="alive", instance_type="G4DN; drop"),
                dict(base, event="alive", gpus=0), dict(base, event="alive", busy_s=-1),
                {"event": "alive", "tier": "standard"}]:
        r = env.api("POST", "/internal/v1/workers/report", bad, tok)
        assert r.status == 400, (bad, r)
    assert env.api("POST", "/internal/v1/workers/report", dict(base, event="alive")).status == 401
    admin = pv.run_cli("token", "ops", "--role", "admin", data=env.data,
                       env=env.env()).stdout.strip()
    c = env.api("GET", "/api/v1/cost", token=admin).json()
    assert c["prices"]["region"] == "test" and c["spot"]["hours"] >= 0
    assert abs(c["spot"]["usd"] - c["spot"]["hours"] * 0.5) < 1e-9
    r = pv.run_cli("server", "--prices", "/nonexistent/p.txt", data=env.data, env=env.env(),
                   check=False)
    assert r.returncode != 0 and "/nonexistent/p.txt" in r.stderr


if __name__ == "__main__":
    pv.main([test_cost_report, test_prices_file_and_bad_reports])
