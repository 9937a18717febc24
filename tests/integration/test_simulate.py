"""`pingvas simulate` as a user runs it: the report's exact keys in the table and in --json, the
plot, --compare, --optimize, traces, and errors that name the bad value (exit 2)."""
import json
import os

import pv

KEYS = ["jobs", "completed", "cost_usd", "cost_per_1000_images", "lower_bound_usd",
        "gpu_utilization", "node_hours_spot", "node_hours_on_demand", "wait_p50_s", "wait_p95_s",
        "wait_p99_s", "interruptions", "jobs_restarted", "max_workers"]


def test_report_plot_and_trace(env):
    trace = os.path.join(env.dir, "day.csv")
    plot = os.path.join(env.dir, "t.svg")
    args = ["simulate", "--arrivals", "burst:0.5,3,1h,5m", "--hours", "3", "--seed", "4"]
    r = pv.run_cli(*args, "--json", "--write-trace", trace, "--plot", plot)
    rep = json.loads(r.stdout)
    assert list(rep) == KEYS, list(rep)
    assert rep["completed"] == rep["jobs"] > 4000
    assert rep["lower_bound_usd"] < rep["cost_usd"]
    assert 0 < rep["gpu_utilization"] <= 1
    svg = open(plot).read()
    assert svg.startswith("<svg") and svg.count("<polyline") == 4 and "cumulative cost" in svg
    # The written trace simulates to the same report (same seed for the fleet).
    r2 = pv.run_cli("simulate", "--trace", trace, "--hours", "3", "--seed", "4", "--json")
    assert json.loads(r2.stdout) == rep
    # Same seed, same result; the table shows every key.
    assert pv.run_cli(*args, "--json").stdout == r.stdout
    table = pv.run_cli(*args).stdout
    for k in KEYS:
        assert k in table, k


def test_compare_and_optimize(env):
    base = ["simulate", "--arrivals", "poisson:0.5", "--hours", "2"]
    r = json.loads(pv.run_cli(*base, "--json", "--compare", "keda", "local").stdout)
    assert list(r) == ["keda", "local"] and list(r["keda"]) == KEYS
    assert r["keda"]["jobs"] == r["local"]["jobs"]
    # local stops idle workers after 30 s; KEDA holds them for its 300 s windows.
    assert r["local"]["cost_usd"] < r["keda"]["cost_usd"]
    out = pv.run_cli(*base, "--optimize", "--p95-wait", "90s").stdout
    assert "--policy keda --target" in out and "pollingInterval:" in out
    assert "cooldownPeriod:" in out and "targetValue:" in out


def test_usage_errors(env):
    cases = [
        ([], "--trace FILE or --arrivals"),
        (["--arrivals", "poisson"], "poisson:RATE"),
        (["--arrivals", "burst:1,2,5m,10m"], "burst:BASE"),
        (["--arrivals", "poisson:1", "--target", "0"], "target"),
        (["--arrivals", "poisson:1", "--boot", "90s-45s"], "--boot"),
        (["--arrivals", "poisson:1", "--instance-type", "p9.huge"], "p9.huge"),
        (["--arrivals", "poisson:1", "--compare", "keda"], "two policies"),
        (["--arrivals", "poisson:1", "--compare", "keda", "local,tgt=3"], "tgt"),
        (["--trace", "/nonexistent.csv"], "/nonexistent.csv"),
        (["--arrivals", "poisson:1", "--prices", "/nonexistent.prices"], "/nonexistent.prices"),
    ]
    for args, word in cases:
        r = pv.run_cli("simulate", *args, check=False)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert word in r.stderr, (args, r.stderr)


if __name__ == "__main__":
    pv.main([test_report_plot_and_trace, test_compare_and_optimize, test_usage_errors])
