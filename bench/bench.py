"""bench.py: the measurements of bench/run.sh (issue 3 section 6, issue 12), pingvas beside BullMQ.

Run through bench/run.sh, which builds the Release binary and installs the peer first:
    python3 bench/bench.py BIN PEER_DIR RESULTS_MD COMMAND_LINE

Every figure is measured in this one run on this machine; nothing is copied from elsewhere.
Each measurement starts its own processes in a fresh temporary directory and stops them.
"""
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN, PEER, RESULTS, CMDLINE = sys.argv[1:5]
QUICK = os.environ.get("BENCH_QUICK") == "1"  # shorter runs while developing the script
ENV = dict(os.environ)
ENV["JWT_SECRET"] = "bench-jwt-secret-0123456789abcdef"
ENV["PINGVAS_WORKER_TOKEN"] = "bench-worker-token-0123456789abcdef"
ENV["PINGVAS_RATE_LIMIT"] = "0"  # throughput is the point here, not the per-user limit
ENV.pop("PINGVAS_TOKEN", None)
TICK = os.sysconf("SC_CLK_TCK")
SUBMIT_SECONDS = 3 if QUICK else 10
E2E_JOBS = 2000 if QUICK else 10000
PICKUP_SAMPLES = 50 if QUICK else 300
SCALE_SAMPLES = 3 if QUICK else 8
IDLE_SECONDS = 5 if QUICK else 30
results = {}
notes = []


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Stack:
    """Processes of one measurement in one temporary directory."""

    def __init__(self, name, pg=False):
        self.dir = tempfile.mkdtemp(prefix=f"pingvas-bench-{name}-")
        self.data = os.path.join(self.dir, "data")
        self.procs = []
        self.url = None
        self.env = dict(ENV)
        self.pgdb = None
        if pg:
            # A fresh database on the loopback PostgreSQL of scripts/services/postgres.sh.
            base = os.environ["PINGVAS_TEST_PG_URL"]
            self.pgdb = "bench_" + name.replace("-", "_") + "_" + str(os.getpid())
            subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {self.pgdb}"], check=True,
                           capture_output=True)
            self.env["DATABASE_URL"] = base.rsplit("/", 1)[0] + "/" + self.pgdb

    def spawn(self, args, log_name, stdout=subprocess.DEVNULL):
        f = open(os.path.join(self.dir, log_name), "ab")
        p = subprocess.Popen(args, stdout=stdout, stderr=f, env=self.env, start_new_session=True)
        self.procs.append(p)
        return p

    def start(self, cmd, *args):
        """`pingvas server|up` on an ephemeral port; returns the process, sets self.url."""
        p = self.spawn([BIN, cmd, "--port", "0", "--data", self.data, "--log-level", "warn",
                        "--max-queued-per-user", "0"] + list(args), f"{cmd}.log",
                       stdout=subprocess.PIPE)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            line = p.stdout.readline().decode()
            if not line:
                break
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].strip()
                break
        if not self.url:
            raise SystemExit(f"bench: pingvas {cmd} did not start; see {self.dir}/{cmd}.log")
        import threading
        threading.Thread(target=p.stdout.read, daemon=True).start()
        return p

    def worker(self, *args):
        return self.spawn([BIN, "worker", "--server", self.url, "--log-level", "warn",
                           "--imds-url", "off"] + list(args), f"worker-{len(self.procs)}.log")

    def user(self, name="bench", credits=2000000000):
        subprocess.run([BIN, "user", "add", name, "--credits", str(credits), "--data", self.data],
                       env=self.env, check=True, capture_output=True)
        return subprocess.run([BIN, "token", name, "--data", self.data], env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.pgdb:
            subprocess.run(["psql", os.environ["PINGVAS_TEST_PG_URL"], "-qc",
                            f"DROP DATABASE IF EXISTS {self.pgdb} WITH (FORCE)"],
                           capture_output=True)


def api(url, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if data else "GET",
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def ms_of(ts):
    """RFC 3339 with milliseconds to ms since the epoch."""
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(?:\.(\d+))?Z$", ts)
    import calendar
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = (m.group(7) or "0")[:3].ljust(3, "0")
    return calendar.timegm((y, mo, d, h, mi, s)) * 1000 + int(frac)


def pct(v, q):
    v = sorted(v)
    return v[max(0, -(-len(v) * q // 100) - 1)] if v else None


def hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


JOB = {"prompt": "Test image", "model": "sd15", "width": 64, "height": 64, "steps": 1}


# ---------- (a) submissions/s at 64 connections ----------

def run_wrk(url, token, get=False):
    """wrk -t2 -c64 for SUBMIT_SECONDS with create.lua (creates, or GETs of url with get); its
    WRK_JSON line, with per_second (2xx only)."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(ENV, PINGVAS_TOKEN=token, PINGVAS_WRK_GET="1" if get else "0")
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{SUBMIT_SECONDS}s", "--latency", "-s",
                          os.path.join(here, "create.lua"), url], env=env,
                         capture_output=True, text=True, timeout=SUBMIT_SECONDS + 60).stdout
    w = json.loads(re.search(r"WRK_JSON (\{.*\})", out).group(1))
    w["per_second"] = (w["requests"] - w["non2xx"]) / w["seconds"]
    return w


def bench_submit(pg=False):
    st = Stack("submit-pg" if pg else "submit", pg=pg)
    try:
        srv = st.start("server")
        token = st.user()
        log(f"(a) pingvas: wrk -t2 -c64 -d{SUBMIT_SECONDS}s POST /api/v1/generation/create")
        w = run_wrk(st.url + "/api/v1/generation/create", token)
        key = "a_pg" if pg else "a_pingvas"
        results[key] = w
        if not pg:
            results["server_hwm_kb_submit"] = hwm_kb(srv.pid)
        # count what the server really holds: every 201 must be a queued job
        q = api(st.url, "/api/v1/queue", token)["tiers"]["standard"]["queued"]
        results[key]["queued_after"] = q
        if not pg:
            jid = api(st.url, "/api/v1/generation?limit=1", token)["jobs"][0]["id"]
            log(f"GET job: wrk -t2 -c64 -d{SUBMIT_SECONDS}s GET /api/v1/generation/{{id}}")
            results["get"] = run_wrk(st.url + "/api/v1/generation/" + jid, token, get=True)
    finally:
        st.close()


def bench_submit_bullmq(port):
    log(f"(a) BullMQ: 64 concurrent Queue.add for {SUBMIT_SECONDS}s")
    out = subprocess.run(["node", os.path.join(PEER, "bullmq-bench.js"), "add", str(port),
                          str(SUBMIT_SECONDS), "64"], capture_output=True, text=True, check=True,
                         cwd=PEER, timeout=SUBMIT_SECONDS + 120).stdout
    results["a_bullmq"] = json.loads(out.strip().splitlines()[-1])


# ---------- (b) end-to-end jobs/s, 64x64, zero GPU time, 4 workers ----------

def bench_e2e(pg=False):
    st = Stack("e2e-pg" if pg else "e2e", pg=pg)
    try:
        srv = st.start("server")
        token = st.user()
        ws = [st.worker("--time-scale", "0", "--worker-id", f"b{i}") for i in range(4)]
        time.sleep(1)
        log(f"(b) pingvas: loadtest --jobs {E2E_JOBS} --concurrency 64 through 4 workers")
        out = subprocess.run([BIN, "loadtest", "--server", st.url, "--token", token, "--jobs",
                              str(E2E_JOBS), "--concurrency", "64", "--width", "64", "--height",
                              "64", "--steps", "1", "--poll", "1s", "--json"],
                             env=st.env, capture_output=True, text=True, timeout=600)
        rep = json.loads(out.stdout)
        results["b_pg" if pg else "b_pingvas"] = {
            k: rep[k] for k in ("completed", "jobs", "jobs_per_second", "submits_per_second",
                                "queue_wait_ms", "end_to_end_ms", "failures_by_status")}
        if not pg:
            results["server_hwm_kb_e2e"] = hwm_kb(srv.pid)
            results["worker_hwm_kb"] = max(hwm_kb(w.pid) or 0 for w in ws)
    finally:
        st.close()


def bench_e2e_bullmq(port):
    log(f"(b) BullMQ: {E2E_JOBS} adds at 64 concurrent, no-op worker at concurrency 50")
    out = subprocess.run(["node", os.path.join(PEER, "bullmq-bench.js"), "e2e", str(port),
                          str(E2E_JOBS), "64", "50"], capture_output=True, text=True, check=True,
                         cwd=PEER, timeout=300).stdout
    results["b_bullmq"] = json.loads(out.strip().splitlines()[-1])


# ---------- (c) idle-worker pickup latency ----------

def one_job(url, token):
    """Submits one job and returns its (created_at, started_at) in ms once it has started."""
    j = api(url, "/api/v1/generation/create", token, JOB)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if j.get("started_at"):
            return ms_of(j["created_at"]), ms_of(j["started_at"])
        time.sleep(0.002)
        j = api(url, "/api/v1/generation/" + j["id"], token)
    raise SystemExit("bench: a job did not start within 60 s")


def bench_pickup():
    st = Stack("pickup")
    try:
        st.start("server")
        token = st.user()
        for i in range(4):
            st.worker("--time-scale", "0", "--worker-id", f"c{i}")
        time.sleep(1.5)  # all four are now parked in their long-poll claim
        log(f"(c) pickup: {PICKUP_SAMPLES} jobs one at a time to 4 idle workers")
        lat = []
        for _ in range(PICKUP_SAMPLES):
            c, s = one_job(st.url, token)
            lat.append(s - c)
            time.sleep(0.01)  # let the worker finish and park again
        results["c_pickup_ms"] = {"n": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99),
                                  "max": max(lat), "mean": statistics.mean(lat)}
    finally:
        st.close()


# ---------- (d) scale from zero ----------

def bench_scale_from_zero():
    st = Stack("scale")
    try:
        up = st.start("up", "--min-workers", "0", "--max-workers", "4",
                      "--max-enterprise-workers", "0", "--cooldown", "300ms", "--time-scale", "0")
        token = st.user()
        log(f"(d) scale from zero: {SCALE_SAMPLES} jobs, each after the workers scaled to 0")
        lat = []
        for _ in range(SCALE_SAMPLES):
            end = time.monotonic() + 60
            while children(up.pid):  # no worker process at all: a real scale-from-zero
                if time.monotonic() > end:
                    raise SystemExit("bench: workers did not scale to zero within 60 s")
                time.sleep(0.05)
            time.sleep(0.2)
            c, s = one_job(st.url, token)
            lat.append(s - c)
        ev = api(st.url, "/api/v1/scaling/events", ENV["PINGVAS_WORKER_TOKEN"])["events"]
        ups = [e for e in ev if e["tier"] == "standard" and e["from"] == 0 and e["to"] > 0]
        results["d_scale_ms"] = {"n": len(lat), "p50": pct(lat, 50), "max": max(lat),
                                 "min": min(lat), "samples": lat, "scale_ups_from_zero": len(ups)}
    finally:
        st.close()


# ---------- (f) idle CPU ----------

def bench_idle_cpu():
    st = Stack("idle")
    try:
        up = st.start("up", "--workers", "2", "--enterprise-workers", "0")
        time.sleep(3)  # workers started and parked
        pids = [up.pid] + children(up.pid)
        log(f"(f) idle CPU: pingvas up --workers 2, {len(pids)} processes, {IDLE_SECONDS}s")
        before = sum(cpu_ticks(p) for p in pids)
        t0 = time.monotonic()
        time.sleep(IDLE_SECONDS)
        after = sum(cpu_ticks(p) for p in pids if os.path.exists(f"/proc/{p}"))
        secs = time.monotonic() - t0
        cpu_s = (after - before) / TICK
        results["f_idle"] = {"processes": len(pids), "seconds": secs, "cpu_seconds": cpu_s,
                             "percent_of_one_core": 100.0 * cpu_s / secs}
    finally:
        st.close()


# ---------- peer: redis-server ----------

def start_redis():
    d = tempfile.mkdtemp(prefix="pingvas-bench-redis-")
    port = 16379 + os.getpid() % 1000
    # AOF with fsync every second (BullMQ's usual setup): an acknowledged job survives a crash of
    # the process, not necessarily a power loss. pingvas runs its durable default here
    # (synchronous=FULL: every acknowledgement survives a power loss), the stricter of the two.
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                          "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                          text=True).stdout.strip() == "PONG":
            return p, port, d
        time.sleep(0.05)
    raise SystemExit("bench: redis-server did not start")


# ---------- report ----------

def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    redis = subprocess.run(["redis-server", "--version"], capture_output=True,
                           text=True).stdout.split()[2]
    with open(os.path.join(PEER, "node_modules", "bullmq", "package.json")) as f:
        bull = json.load(f)["version"]
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory": f"{mem_kb / 1048576:.1f} GiB",
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                 time.gmtime()),
            "node": node, "redis": redis.replace("v=", ""), "bullmq": bull}


def fmt(v, unit="", digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}{unit}"


def table():
    r = results
    a, ab = r["a_pingvas"], r["a_bullmq"]
    b, bb = r["b_pingvas"], r["b_bullmq"]
    c, d, f = r["c_pickup_ms"], r["d_scale_ms"], r["f_idle"]
    srv_mb = max(r["server_hwm_kb_submit"] or 0, r["server_hwm_kb_e2e"] or 0) / 1024
    wrk_mb = (r["worker_hwm_kb"] or 0) / 1024
    rows = [
        ("(a) job submissions/s, 64 connections, SQLite (synchronous=FULL, the default)",
         fmt(a["per_second"], "/s"), fmt(ab["per_second"], "/s"),
         f">= 1.0x BullMQ (ratio {a['per_second'] / ab['per_second']:.2f}x)",
         a["per_second"] >= ab["per_second"]),
        (f"(b) end-to-end jobs/s, 64x64, 0 GPU time, 4 workers ({b['jobs']:,} jobs)",
         fmt(b["jobs_per_second"], "/s"), fmt(bb["jobs_per_second"], "/s"),
         f">= 0.5x BullMQ (ratio {(b['jobs_per_second'] or 0) / bb['jobs_per_second']:.2f}x)",
         (b["jobs_per_second"] or 0) >= 0.5 * bb["jobs_per_second"] and
         b["completed"] == b["jobs"]),
        ("(a) on the PostgreSQL store, one user", fmt(r["a_pg"]["per_second"], "/s"), "-",
         ">= 10,000/s", r["a_pg"]["per_second"] >= 10000),
        (f"(b) on the PostgreSQL store ({r['b_pg']['jobs']:,} jobs)",
         fmt(r["b_pg"]["jobs_per_second"], "/s"), "-", ">= 2,000/s",
         (r["b_pg"]["jobs_per_second"] or 0) >= 2000 and r["b_pg"]["completed"] ==
         r["b_pg"]["jobs"]),
        ("GET /api/v1/generation/{id}, 64 connections", fmt(r["get"]["per_second"], "/s"), "-",
         ">= 80,000/s", r["get"]["per_second"] >= 80000),
        ("(c) idle-worker pickup p50 / p99 (submit to claim)",
         f"{fmt(c['p50'], ' ms')} / {fmt(c['p99'], ' ms')}", "-", "p99 < 5 ms", c["p99"] < 5),
        ("(d) scale from zero (submit to first claim, model load excluded), median of "
         f"{d['n']}", f"{fmt(d['p50'], ' ms')} (max {fmt(d['max'], ' ms')})", "-", "< 50 ms",
         d["p50"] < 50),
        ("(e) peak RSS of the server (VmHWM)", fmt(srv_mb, " MB", 1), "-", "< 50 MB",
         srv_mb < 50),
        ("(e) peak RSS of a worker (VmHWM)", fmt(wrk_mb, " MB", 1), "-", "<= 10 MB",
         wrk_mb <= 10),
        (f"(f) CPU of an idle `pingvas up --workers 2` ({f['processes']} processes, "
         f"{f['seconds']:.0f} s)", fmt(f["percent_of_one_core"], " % of a core", 3), "-", "< 1 %",
         f["percent_of_one_core"] < 1),
    ]
    lines = ["| measurement | pingvas | BullMQ | target | reached |", "|---|---|---|---|---|"]
    for name, pv, bq, target, ok in rows:
        lines.append(f"| {name} | {pv} | {bq} | {target} | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def write_results(m, tbl):
    r = results
    a, ab, b, bb = r["a_pingvas"], r["a_bullmq"], r["b_pingvas"], r["b_bullmq"]
    detail = [
        f"- (a) pingvas: {a['requests']:,} requests in {a['seconds']:.1f} s, {a['non2xx']} not "
        f"2xx, {a['socket_errors']} socket errors, latency p50 {a['p50_ms']:.2f} ms / p99 "
        f"{a['p99_ms']:.2f} ms (wrk, which shares the 2 cores); {a['queued_after']:,} jobs "
        f"queued afterwards. BullMQ: {ab['adds']:,} adds in {ab['seconds']:.1f} s, p50 "
        f"{ab['latency_ms']['p50']:.2f} ms / p99 {ab['latency_ms']['p99']:.2f} ms (redis-server "
        f"with AOF appendfsync everysec: a power loss may lose its last second of adds, where "
        f"pingvas's defaults lose none).",
        f"- GET job: {r['get']['requests']:,} requests in {r['get']['seconds']:.1f} s, "
        f"{r['get']['non2xx']} not 2xx, p50 {r['get']['p50_ms']:.2f} ms / p99 "
        f"{r['get']['p99_ms']:.2f} ms (wrk on the same 2 cores).",
        f"- (b) pingvas: {b['completed']:,} of {b['jobs']:,} completed, submitted at "
        f"{b['submits_per_second']:,.0f}/s, queue wait p50 {b['queue_wait_ms']['p50']:.0f} ms, "
        f"failures {b['failures_by_status'] or 'none'}. BullMQ: {bb['jobs']:,} jobs in "
        f"{bb['seconds']:.2f} s (adds done after {bb['submit_seconds']:.2f} s).",
        f"- PostgreSQL rows: the same (a) and (b) against `pingvas server` with "
        f"DATABASE_URL on the loopback PostgreSQL 15 of scripts/services/postgres.sh (fsync off, "
        f"as a throwaway test cluster: these rows do not include PostgreSQL's own disk "
        f"flushes); (a) {r['a_pg']['requests']:,} requests, p50 "
        f"{r['a_pg']['p50_ms']:.2f} ms / p99 {r['a_pg']['p99_ms']:.2f} ms; (b) "
        f"{r['b_pg']['completed']:,} of {r['b_pg']['jobs']:,} completed.",
        f"- (c) {r['c_pickup_ms']['n']} samples, mean {r['c_pickup_ms']['mean']:.2f} ms, max "
        f"{r['c_pickup_ms']['max']} ms (server timestamps, 1 ms resolution).",
        f"- (d) `pingvas up --min-workers 0 --cooldown 300ms --time-scale 0`: before each "
        f"sample no worker process runs; the autoscaler logged "
        f"{r['d_scale_ms']['scale_ups_from_zero']} scale-ups from 0 for "
        f"{r['d_scale_ms']['n']} samples; samples (ms): {r['d_scale_ms']['samples']}.",
        f"- (e) server: {(r['server_hwm_kb_submit'] or 0) / 1024:.1f} MB after (a), "
        f"{(r['server_hwm_kb_e2e'] or 0) / 1024:.1f} MB after (b); worker: largest of the 4 of "
        f"(b).",
        f"- (f) {r['f_idle']['cpu_seconds']:.3f} CPU-seconds in {r['f_idle']['seconds']:.1f} s "
        f"(utime+stime of `up` and its workers from /proc/PID/stat).",
    ]
    block = "\n".join([
        "<!-- bench:begin (written by bench/run.sh; edits between these markers are lost) -->",
        f"Measured {m['date']} with `{CMDLINE}`",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} memory, Linux {m['kernel']}; "
        f"node {m['node']}, redis-server {m['redis']}, BullMQ {m['bullmq']}.",
        "",
        tbl,
        "",
        *detail,
        "",
        "<!-- bench:end -->",
    ])
    try:
        with open(RESULTS) as f:
            old = f.read()
    except OSError:
        old = "# Benchmarks\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"
    begin = old.find("<!-- bench:begin")
    end = old.find("<!-- bench:end -->")
    if begin < 0 or end < 0:
        new = old.rstrip() + "\n\n" + block + "\n"
    else:
        new = old[:begin] + block + old[end + len("<!-- bench:end -->"):]
    with open(RESULTS, "w") as f:
        f.write(new)


def main():
    t0 = time.monotonic()
    m = machine()
    redis, port, rdir = start_redis()
    try:
        bench_submit()
        bench_submit_bullmq(port)
        bench_e2e()
        bench_e2e_bullmq(port)
        bench_submit(pg=True)
        bench_e2e(pg=True)
    finally:
        os.killpg(redis.pid, signal.SIGTERM)
        redis.wait()
        shutil.rmtree(rdir, ignore_errors=True)
    bench_pickup()
    bench_scale_from_zero()
    bench_idle_cpu()
    tbl = table()
    print(tbl)
    with open(os.path.join(os.path.dirname(BIN), "bench-last-run.json"), "w") as f:
        json.dump({"machine": m, "results": results}, f, indent=1)
    write_results(m, tbl)
    log(f"done in {time.monotonic() - t0:.0f} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
