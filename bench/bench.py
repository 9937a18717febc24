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
import resource
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
                        "--max-queued-per-user", "0", "--max-jobs-per-user", "1000000000"]
                       + list(args), f"{cmd}.log",
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


# ---------- CPU per operation: what each process of a measurement spent ----------

def run_ns(pid):
    """CPU time of all of pid's threads, ns (schedstat: finer than /proc/PID/stat's ticks)."""
    return sum(ns for _, ns in thread_ns(pid).values())


def thread_ns(pid):
    """CPU time of each of pid's threads, ns, by thread id: (name, ns). The server names its
    threads (pv-create, pv-complete, ...); libmicrohttpd's front threads are MHD-worker."""
    out = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                out[t] = (name, int(f.read().split()[0]))
        except OSError:
            pass
    return out


def steal_ticks():
    """(steal, all) clock ticks of this machine's CPUs from /proc/stat: steal is the time the
    hypervisor gave this virtual machine's cores to something else. Neither schedstat nor
    getrusage counts it as a process's CPU, but the cores cannot run the measurement meanwhile."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user .. steal; guest is in user
    return (v[7] if len(v) > 7 else 0), sum(v)


def steal_pct(t0):
    """The share of the cores' time the hypervisor took since steal_ticks() gave t0, %."""
    s1, a1 = steal_ticks()
    return 100.0 * (s1 - t0[0]) / max(1, a1 - t0[1])


def pg_backends(pgdb):
    """The pids of the client backends of database pgdb (the server's pool) on the loopback
    cluster. Autovacuum workers and the cluster's own processes are left out."""
    out = subprocess.run(["psql", os.environ["PINGVAS_TEST_PG_URL"], "-Atc",
                          "SELECT pid FROM pg_stat_activity WHERE datname = "
                          f"'{pgdb}' AND backend_type = 'client backend'"],
                         capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if os.path.exists(f"/proc/{p}")]


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """The CPU time a measurement cost per operation: of named long-lived processes (schedstat),
    of the PostgreSQL client backends of a stack's database, and of the child processes this
    script ran and waited for meanwhile (getrusage: wrk, loadtest, node with its worker process),
    under the name `child`. Start it right before the measured command, stop it right after."""

    def __init__(self, procs, child, pgdb=None):
        self.procs, self.child, self.pgdb = procs, child, pgdb
        self.ns0 = {pid: run_ns(pid) for pids in procs.values() for pid in pids}
        self.threads0 = {pid: thread_ns(pid) for pid in procs.get("server", [])}
        self.pg0 = {pid: run_ns(pid) for pid in pg_backends(pgdb)} if pgdb else {}
        self.ru0 = children_cpu()
        self.steal0 = steal_ticks()

    def stop(self, n):
        """The CPU per operation (us) of each part, and their total, for n operations."""
        child = (children_cpu() - self.ru0) * 1e6
        parts = {name: sum(max(0, run_ns(p) - self.ns0.get(p, 0)) for p in pids) / 1e3
                 for name, pids in self.procs.items()}
        if self.pgdb:  # backends that came after the start count whole
            parts["PostgreSQL"] = sum(max(0, run_ns(p) - self.pg0.get(p, 0))
                                      for p in pg_backends(self.pgdb)) / 1e3
        parts[self.child] = child
        per = {k: v / max(n, 1) for k, v in parts.items()}
        return {"n": n, "parts_us": per, "total_us": sum(per.values()),
                "server_threads_us": self.server_threads(n), "steal_pct": steal_pct(self.steal0)}

    def server_threads(self, n):
        """The server's CPU per operation by thread name (us), largest first; the front threads
        (libmicrohttpd's MHD-worker) summed as "front"."""
        by = {}
        for pid, before in self.threads0.items():
            for tid, (name, ns) in thread_ns(pid).items():
                name = "front" if name == "MHD-worker" else name
                by[name] = by.get(name, 0) + max(0, ns - before.get(tid, (name, 0))[1])
        return dict(sorted(((k, v / 1e3 / max(n, 1)) for k, v in by.items()),
                           key=lambda kv: -kv[1]))


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
        meter = CpuMeter({"server": [srv.pid]}, "wrk", st.pgdb)
        w = run_wrk(st.url + "/api/v1/generation/create", token)
        key = "a_pg" if pg else "a_pingvas"
        results[key] = w
        results["cpu_" + key] = meter.stop(w["requests"] - w["non2xx"])
        if not pg:
            results["server_hwm_kb_submit"] = hwm_kb(srv.pid)
        # count what the server really holds: every 201 must be a queued job
        q = api(st.url, "/api/v1/queue", token)["tiers"]["standard"]["queued"]
        results[key]["queued_after"] = q
        if not pg:
            jid = api(st.url, "/api/v1/generation?limit=1", token)["jobs"][0]["id"]
            log(f"GET job: wrk -t2 -c64 -d{SUBMIT_SECONDS}s GET /api/v1/generation/{{id}}")
            meter = CpuMeter({"server": [srv.pid]}, "wrk")
            results["get"] = g = run_wrk(st.url + "/api/v1/generation/" + jid, token, get=True)
            results["cpu_get"] = meter.stop(g["requests"] - g["non2xx"])
    finally:
        st.close()


def bench_submit_bullmq(port, redis_pid):
    log(f"(a) BullMQ: 64 concurrent Queue.add for {SUBMIT_SECONDS}s")
    meter = CpuMeter({"redis-server": [redis_pid]}, "node")
    out = subprocess.run(["node", os.path.join(PEER, "bullmq-bench.js"), "add", str(port),
                          str(SUBMIT_SECONDS), "64"], capture_output=True, text=True, check=True,
                         cwd=PEER, timeout=SUBMIT_SECONDS + 120).stdout
    results["a_bullmq"] = a = json.loads(out.strip().splitlines()[-1])
    results["cpu_a_bullmq"] = meter.stop(a["adds"])


# ---------- (b) end-to-end jobs/s, 64x64, zero GPU time, 4 workers ----------

def bench_e2e(pg=False):
    st = Stack("e2e-pg" if pg else "e2e", pg=pg)
    try:
        srv = st.start("server")
        token = st.user()
        ws = [st.worker("--time-scale", "0", "--worker-id", f"b{i}") for i in range(4)]
        time.sleep(1)
        log(f"(b) pingvas: loadtest --jobs {E2E_JOBS} --concurrency 64 through 4 workers")
        meter = CpuMeter({"server": [srv.pid], "4 workers": [w.pid for w in ws]}, "loadtest",
                         st.pgdb)
        out = subprocess.run([BIN, "loadtest", "--server", st.url, "--token", token, "--jobs",
                              str(E2E_JOBS), "--concurrency", "64", "--width", "64", "--height",
                              "64", "--steps", "1", "--poll", "1s", "--json"],
                             env=st.env, capture_output=True, text=True, timeout=600)
        rep = json.loads(out.stdout)
        results["cpu_b_pg" if pg else "cpu_b_pingvas"] = meter.stop(rep["completed"])
        results["b_pg" if pg else "b_pingvas"] = {
            k: rep[k] for k in ("completed", "jobs", "jobs_per_second", "submits_per_second",
                                "queue_wait_ms", "end_to_end_ms", "failures_by_status")}
        if not pg:
            results["server_hwm_kb_e2e"] = hwm_kb(srv.pid)
            results["worker_hwm_kb"] = max(hwm_kb(w.pid) or 0 for w in ws)
    finally:
        st.close()


def bench_e2e_bullmq(port, redis_pid):
    log(f"(b) BullMQ: {E2E_JOBS} adds at 64 concurrent, no-op worker at concurrency 50")
    meter = CpuMeter({"redis-server": [redis_pid]}, "node")
    out = subprocess.run(["node", os.path.join(PEER, "bullmq-bench.js"), "e2e", str(port),
                          str(E2E_JOBS), "64", "50"], capture_output=True, text=True, check=True,
                         cwd=PEER, timeout=300).stdout
    results["b_bullmq"] = b = json.loads(out.strip().splitlines()[-1])
    results["cpu_b_bullmq"] = meter.stop(b["jobs"])


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


# ---------- size rows: per-operation cost at 0 / 100,000 / 1,000,000 stored jobs ----------
#
# The store is filled with N jobs in SQL against the schema `pingvas migrate` created (the
# shipped schema, its triggers put back as they were): the history of SIZE_USERS users, ended
# jobs (97 % completed, each with its charge in the ledger, 2 % failed, 1 % canceled) spread
# over the last 25 days (inside the default 30-day retention, so the purge has nothing to do at
# start). The job-event triggers are off during the fill (the event log keeps 24 h, not the
# history), and so are those that add to a few hot rows, whose sums are set from the rows after.
# Then `pingvas server` runs on it and each operation is timed one request at a time on one
# keep-alive connection (median and p99 of SIZE_REQS requests, client included), with the CPU
# per request (the sum of the server's threads' run time from /proc/PID/task/*/schedstat, and
# on PostgreSQL that of the database's backends). The backlog is the same at every size: the SIZE_REQS measured
# creates, from the SIZE_USERS users in turn, are what the claims then take; so the rows compare
# the cost of the stored history alone (the queue statistics and the fair-share pick grow with
# the backlog and the users waiting, which do not change here).

SIZES = [0, 100000, 1000000]
SIZE_USERS = 50
SIZE_REQS = 300 if QUICK else 1000
SIZE_USER = "fill000"  # the measured user: one of the fill's users, with its share of the jobs

SQLITE_FILL = """WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n),
r AS (SELECT i, lower(hex(randomblob(16))) AS h,
  CASE WHEN i % 50 = 7 THEN 'failed' WHEN i % 100 = 13 THEN 'canceled'
       ELSE 'completed' END AS st,
  :now - (:n - i) * (25 * 86400000 / (:n + 1)) - 60000 AS t FROM c)
INSERT INTO generation_jobs(id, user_id, status, prompt, width, height, steps, cfg_scale, seed,
  seq, model, tier, created_at, started_at, completed_at, attempts, image_url, error_message,
  gpu_seconds, credits_charged, credits_reserved, queue_pos, worker_id)
SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a' ||
  substr(h, 18, 3) || '-' || substr(h, 21, 12), printf('fill%03d', abs(random()) % :users), st,
  'a photo of a cat number ' || i, 512, 512, 20, 7.0, i, i, 'sd15', 'standard', t,
  IIF(st IN ('completed', 'failed'), t + 2000, NULL), IIF(st = 'queued', NULL, t + 5000),
  IIF(st = 'queued', 0, 1), IIF(st = 'completed', 'images/' || h || '.png', NULL),
  IIF(st = 'failed', 'lease expired 3 times (worker lost)', NULL),
  IIF(st = 'completed', 3.0, 0), IIF(st = 'completed', 3, 0), IIF(st = 'queued', 10, 0), i,
  IIF(st = 'queued', NULL, 'w' || (i % 8)) FROM r"""

PG_FILL = """INSERT INTO generation_jobs(id, user_id, status, prompt, width, height, steps, cfg_scale,
  seed, seq, model, tier, created_at, started_at, completed_at, attempts, image_url,
  error_message, gpu_seconds, credits_charged, credits_reserved, queue_pos, worker_id)
SELECT md5(i::text || random()::text)::uuid::text, format('fill%s', lpad((random() * (:users - 1))
  ::int::text, 3, '0')), st, 'a photo of a cat number ' || i, 512, 512, 20, 7.0, i, i, 'sd15',
  'standard', t, CASE WHEN st IN ('completed', 'failed') THEN t + 2000 END,
  CASE WHEN st <> 'queued' THEN t + 5000 END, CASE WHEN st = 'queued' THEN 0 ELSE 1 END,
  CASE WHEN st = 'completed' THEN 'images/' || i || '.png' END,
  CASE WHEN st = 'failed' THEN 'lease expired 3 times (worker lost)' END,
  CASE WHEN st = 'completed' THEN 3.0 ELSE 0 END, CASE WHEN st = 'completed' THEN 3 ELSE 0 END,
  CASE WHEN st = 'queued' THEN 10 ELSE 0 END, i,
  CASE WHEN st <> 'queued' THEN 'w' || (i % 8) END
FROM (SELECT i, CASE WHEN i % 50 = 7 THEN 'failed' WHEN i % 100 = 13 THEN 'canceled'
        ELSE 'completed' END AS st,
        :now - (:n - i) * (25 * 86400000::bigint / (:n + 1)) - 60000 AS t
      FROM generate_series(1::bigint, :n) AS i) AS r"""


def fill_sqlite(path, n):
    import sqlite3
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA synchronous = OFF")  # the fill only; the server opens it with its defaults
    c.execute("PRAGMA cache_size = -262144")
    c.execute("BEGIN IMMEDIATE")
    # As on PostgreSQL (fill_pg): the job-event triggers and those that add to a few hot rows are
    # off during the fill and put back as they were (their SQL from the schema itself); the sums
    # the latter keep are then set from the rows. The fill inserts ended jobs only, which
    # reserve and queue nothing.
    trig = c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN"
                     " ('events_job_ai', 'events_job_au', 'generation_jobs_ai',"
                     " 'generation_jobs_stored_ai')").fetchall()
    for name, _ in trig:
        c.execute(f"DROP TRIGGER {name}")
    p = {"n": n, "users": SIZE_USERS, "now": int(time.time() * 1000)}
    c.execute("WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c"
              " WHERE i < :users - 1) INSERT INTO users(name, tier, balance, created_at)"
              " SELECT printf('fill%03d', i), 'standard', 1000000000000, :now FROM c", p)
    if n:
        c.execute(SQLITE_FILL, p)
        c.execute("INSERT INTO credit_ledger(user_id, job_id, kind, amount, balance_after,"
                  " created_at) SELECT user_id, id, 'charge', -3, 1000000000000, completed_at"
                  " FROM generation_jobs WHERE status = 'completed' ORDER BY seq")
        c.execute("UPDATE users SET stored = (SELECT COUNT(*) FROM generation_jobs j"
                  " WHERE j.user_id = name)")
        c.execute("UPDATE job_totals SET (jobs, gpu_seconds, credits_charged) = (SELECT"
                  " COUNT(*), TOTAL(gpu_seconds), TOTAL(credits_charged) FROM generation_jobs j"
                  " WHERE j.status = job_totals.status)")
    for _, sql in trig:
        c.execute(sql)
    c.execute("COMMIT")
    c.close()


def fill_pg(url, n):
    now = int(time.time() * 1000)
    sql = PG_FILL.replace(":users", str(SIZE_USERS)).replace(":now", str(now)).replace(
        ":n", str(n))
    # A superuser (the loopback test cluster's role) also skips the ledger's foreign-key checks,
    # which lock each job row they look up (two thirds of the fill's time): the fill's rows
    # reference what it has just inserted.
    superuser = subprocess.run(["psql", url, "-Atc", "SELECT rolsuper FROM pg_roles"
                                " WHERE rolname = current_user"], capture_output=True,
                               text=True).stdout.strip() == "t"
    script = "\n".join([
        "BEGIN;",
        "SET LOCAL session_replication_role = replica;" if superuser else "",
        # Row triggers that add to a few hot rows (job_totals, each user's stored count) are
        # off during the fill (in one transaction each of their updates would leave a dead row
        # version behind for the next to step over: hours for 1,000,000 rows); the sums they
        # keep are set afterwards from the rows, as the schema's own migration does for
        # users.stored. The fill inserts ended jobs only, which reserve and queue nothing.
        "ALTER TABLE generation_jobs DISABLE TRIGGER events_job;",
        "ALTER TABLE generation_jobs DISABLE TRIGGER generation_jobs_sums;",
        "ALTER TABLE generation_jobs DISABLE TRIGGER generation_jobs_stored;",
        f"INSERT INTO users(name, tier, balance, created_at) SELECT format('fill%s',"
        f" lpad(i::text, 3, '0')), 'standard', 1000000000000, {now}"
        f" FROM generate_series(0, {SIZE_USERS - 1}) AS i;",
        (sql + ";") if n else "",
        "INSERT INTO credit_ledger(user_id, job_id, kind, amount, balance_after, created_at)"
        " SELECT user_id, id, 'charge', -3, 1000000000000, completed_at FROM generation_jobs"
        " WHERE status = 'completed' ORDER BY seq;",
        f"SELECT setval('generation_jobs_seq', {max(n, 1)});",
        "UPDATE users u SET stored = c.n FROM (SELECT user_id, COUNT(*) AS n"
        " FROM generation_jobs GROUP BY user_id) c WHERE u.name = c.user_id;",
        "UPDATE job_totals t SET jobs = a.jobs, gpu_seconds = a.gpu, credits_charged = a.charged"
        " FROM (SELECT status, COUNT(*) AS jobs, SUM(gpu_seconds) AS gpu,"
        " SUM(credits_charged) AS charged FROM generation_jobs GROUP BY status) a"
        " WHERE t.status = a.status;",
        "ALTER TABLE generation_jobs ENABLE TRIGGER generation_jobs_stored;",
        "ALTER TABLE generation_jobs ENABLE TRIGGER generation_jobs_sums;",
        "ALTER TABLE generation_jobs ENABLE TRIGGER events_job;",
        "COMMIT;",
        "VACUUM ANALYZE;",
    ])
    p = subprocess.run(["psql", url, "-qv", "ON_ERROR_STOP=1"], input=script, text=True,
                       capture_output=True)
    if p.returncode:
        raise SystemExit(f"bench: filling PostgreSQL failed: {p.stderr.strip()}")


def _png():
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


PNG = _png()


class Conn:
    """One keep-alive HTTP connection; call() returns (status, parsed body or None)."""

    def __init__(self, url):
        self.url = url
        self.c = None
        self.fresh()

    def fresh(self):
        """A new connection, already open (the server closes one idle for --header-timeout)."""
        import http.client
        if self.c:
            self.c.close()
        host, port = self.url.split("//", 1)[1].rsplit(":", 1)
        self.c = http.client.HTTPConnection(host, int(port), timeout=60)
        self.c.request("GET", "/healthz")
        self.c.getresponse().read()

    def call(self, method, path, token, body=None, ctype="application/json", headers=None):
        h = {"Authorization": "Bearer " + token}
        if body is not None:
            h["Content-Type"] = ctype
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data and data[:1] in (b"{", b"[") else None)


def expect(status, want, what):
    if status not in want:
        raise SystemExit(f"bench: size rows: {what} answered {status}")


class SizeRun:
    """One size: its stack (store filled with n jobs), server, connection and figures."""

    def __init__(self, n, pg):
        self.n, self.pg = n, pg
        self.st = Stack(f"size-{n}-pg" if pg else f"size-{n}", pg=pg)
        self.lat, self.rounds = {}, {}  # rounds: an operation's batches, (CPU ns, requests)
        self.created, self.claimed = [], []

    def fill(self):
        st = self.st
        os.makedirs(st.data, exist_ok=True)
        subprocess.run([BIN, "migrate", "--data", st.data, "--log-level", "warn"], env=st.env,
                       check=True, capture_output=True)
        t0 = time.monotonic()
        if self.pg:
            fill_pg(st.env["DATABASE_URL"], self.n)
        else:
            fill_sqlite(os.path.join(st.data, "pingvas.db"), self.n)
        self.fill_s = time.monotonic() - t0
        os.sync()  # the fill's pages on disk now, not written back under the measurement
        self.ids = []
        if self.n:
            q = (f"SELECT id FROM generation_jobs WHERE user_id = '{SIZE_USER}'"
                 f" ORDER BY random() LIMIT {SIZE_REQS}")
            if self.pg:
                self.ids = subprocess.run(["psql", st.env["DATABASE_URL"], "-Atc", q],
                                          check=True, capture_output=True,
                                          text=True).stdout.split()
            else:
                import sqlite3
                with sqlite3.connect(os.path.join(st.data, "pingvas.db")) as db:
                    self.ids = [row[0] for row in db.execute(q)]
        self.tokens = [subprocess.run([BIN, "token", f"fill{u:03d}", "--data", st.data],
                                      env=st.env, check=True, capture_output=True,
                                      text=True).stdout.strip() for u in range(SIZE_USERS)]
        self.token = self.tokens[0]  # SIZE_USER's: GET job and list

    def start(self, *args):
        t0 = time.monotonic()
        self.srv = self.st.start("server", *args)
        self.start_ms = (time.monotonic() - t0) * 1000
        self.c = Conn(self.st.url)

    def stop(self):
        os.killpg(self.srv.pid, signal.SIGTERM)
        self.srv.wait(timeout=60)

    def cpu_ns(self):
        """The server's CPU time, and on PostgreSQL also that of the database's client backends
        (the server's pool; the loopback cluster's processes are on this machine). Autovacuum
        workers are left out: one that starts during a batch would add its whole run (an ANALYZE
        of the table, started by earlier batches' changes too) to that batch alone."""
        ns = run_ns(self.srv.pid)
        if self.pg:
            ns += sum(run_ns(p) for p in pg_backends(self.st.pgdb))
        return ns

    def batch(self, name, fn, count):
        """count requests of fn, each timed; the CPU spent over the batch."""
        lat = self.lat.setdefault(name, [])
        self.c.fresh()  # untimed: the other sizes' batches may have kept this one idle for long
        cpu0 = self.cpu_ns()
        for _ in range(count):
            t0 = time.perf_counter()
            fn()
            lat.append((time.perf_counter() - t0) * 1000)
        self.rounds.setdefault(name, []).append((self.cpu_ns() - cpu0, count))

    def create(self):
        # every other create is SIZE_USER's (it lists and GETs its own), the others in turn
        i = len(self.lat.get("create", ()))
        tok = self.tokens[0 if i % 2 == 0 else 1 + i // 2 % (len(self.tokens) - 1)]
        s, j = self.c.call("POST", "/api/v1/generation/create", tok, JOB)
        expect(s, (201,), "create")
        if i % 2 == 0:
            self.created.append(j["id"])

    def get(self):
        ids = self.ids or self.created
        jid = ids[len(self.lat["get"]) % len(ids)]
        expect(self.c.call("GET", "/api/v1/generation/" + jid, self.token)[0], (200,), "GET job")

    def get_recent(self):
        # what a client polls: one of the jobs this run created, at every size alike
        jid = self.created[len(self.lat["get_recent"]) % len(self.created)]
        expect(self.c.call("GET", "/api/v1/generation/" + jid, self.token)[0], (200,), "GET job")

    def list(self):
        expect(self.c.call("GET", "/api/v1/generation?limit=20", self.token)[0], (200,), "list")

    def list_status(self):
        # the user's running jobs: none (no claim has run yet), the most a filter can read
        expect(self.c.call("GET", "/api/v1/generation?status=in_progress&limit=20",
                           self.token)[0], (200,), "list by status")

    def queue(self):
        expect(self.c.call("GET", "/api/v1/queue", self.token)[0], (200,), "queue")

    def claim(self):
        s, b = self.c.call("POST", "/internal/v1/claim", ENV["PINGVAS_WORKER_TOKEN"],
                           {"worker_id": "size-w1", "tier": "standard", "wait_ms": 0})
        expect(s, (200,), "claim")
        self.claimed.append((b["job"]["id"], b["lease_id"]))

    def upload(self):
        jid, lease = self.claimed[len(self.lat["upload"]) % len(self.claimed)]
        s, _ = self.c.call("PUT", f"/internal/v1/jobs/{jid}/image", ENV["PINGVAS_WORKER_TOKEN"],
                           PNG, "image/png", {"X-Pingvas-Lease": lease})
        expect(s, (200, 201, 204), "image upload")

    def complete(self):
        jid, lease = self.claimed.pop()
        s, _ = self.c.call("POST", f"/internal/v1/jobs/{jid}/complete",
                           ENV["PINGVAS_WORKER_TOKEN"], {"lease_id": lease, "gpu_seconds": 1.0})
        expect(s, (200,), "complete")

    def figures(self, name):
        v = self.lat[name]
        # The CPU per request is the median over the operation's rounds (batches): a round that
        # a burst of other work on the machine (hypervisor steal, a writeback, a timer) hit
        # does not weigh on its size alone. The mean over every request stays beside it.
        per = [ns / 1000 / max(count, 1) for ns, count in self.rounds[name]]
        total_ns = sum(ns for ns, _ in self.rounds[name])
        return {"p50_ms": statistics.median(v), "p99_ms": pct(v, 99),
                "cpu_us": statistics.median(per), "cpu_us_mean": total_ns / 1000 / len(v),
                "cpu_us_rounds": per, "n": len(v)}


SIZE_OPS = ["create", "get", "get_recent", "list", "list_status", "queue", "claim", "upload",
            "complete"]
SIZE_ROUNDS = 5


def bench_sizes(pg=False):
    """The size rows on one store: the sizes run side by side, and each operation's requests
    are spread over SIZE_ROUNDS rounds that go through the sizes in turn, so that the machine's
    load changes weigh on every size alike."""
    runs = [SizeRun(n, pg) for n in SIZES]
    try:
        for r in runs:
            r.fill()
            r.start()
            log(f"size rows{' (PostgreSQL)' if pg else ''}: {r.n:,} jobs filled in "
                f"{r.fill_s:.1f} s, server up in {r.start_ms:.0f} ms")
        for r in runs:  # warm-up: the first requests (statements prepared, caches)
            r.c.fresh()
            for _ in range(20):
                r.create()
                r.list()
                r.queue()
            r.lat.clear()
            r.rounds.clear()
            r.created.clear()
        per = SIZE_REQS // SIZE_ROUNDS
        log(f"size rows: {per * SIZE_ROUNDS} requests of each operation per size, 1 connection")
        for ops in (["create"], ["get"], ["get_recent"], ["list"], ["list_status"], ["queue"],
                    ["claim", "upload", "complete"]):
            for _ in range(SIZE_ROUNDS):
                for r in runs:
                    for op in ops:  # claims, then their uploads, then their completes
                        r.batch(op, getattr(r, op), per)
        # The reaper (leases and the retention purge) ticking every 10 ms on idle servers: the
        # server's CPU per tick (all of its idle CPU counted), the median over half-second
        # windows, so that a one-off burst (a start's own work, a timer of another component
        # firing in one window) does not count as the tick's cost.
        for r in runs:
            r.stop()
            r.start("--reaper-interval", "10ms")
        time.sleep(1)
        samples = []
        for _ in range(5 if QUICK else 9):
            samples.append(([r.cpu_ns() for r in runs], time.monotonic()))
            time.sleep(0.5)
        out = {}
        for i, r in enumerate(runs):
            per_tick = sorted((b[0][i] - a[0][i]) / 1000 / ((b[1] - a[1]) / 0.010)
                              for a, b in zip(samples, samples[1:]))
            fig = {op: r.figures(op) for op in SIZE_OPS}
            fig["reaper_tick"] = {"cpu_us": per_tick[len(per_tick) // 2]}
            fig["fill_s"], fig["start_ms"] = r.fill_s, r.start_ms
            out[str(r.n)] = fig
        results["size_pg" if pg else "size"] = out
    finally:
        for r in runs:
            r.st.close()


SIZE_NAMES = {
    "create": "create (POST /api/v1/generation/create)",
    "get": "GET /api/v1/generation/{id} (a random one of the user's jobs)",
    "get_recent": "GET /api/v1/generation/{id} (one of the jobs created in this run)",
    "list": "list the user's jobs (GET /api/v1/generation?limit=20)",
    "list_status": "list the user's running jobs, none (?status=in_progress&limit=20)",
    "queue": "queue statistics (GET /api/v1/queue)",
    "claim": "claim (POST /internal/v1/claim)",
    "upload": "image upload (PUT /internal/v1/jobs/{id}/image)",
    "complete": "complete (POST /internal/v1/jobs/{id}/complete)",
    "reaper_tick": "reaper tick (leases, retention purge), idle server every 10 ms",
}


def size_spread(r, op):
    """(max / min - 1) of the server's CPU per request over the sizes, in %."""
    v = [r[str(n)][op]["cpu_us"] for n in SIZES]
    return 100.0 * (max(v) / min(v) - 1) if min(v) > 0 else None


def size_worst(key):
    r = results.get(key)
    if not r:
        return None, None
    return max(((size_spread(r, op), op) for op in SIZE_NAMES), key=lambda x: x[0] or 0)


def size_table(key, label):
    r = results[key]
    head = " | ".join(f"{n:,} jobs" for n in SIZES)
    cpu = ("the CPU per request of the server and its PostgreSQL backends" if key == "size_pg"
           else "the server's CPU per request")
    cpu += f" (the median of its {SIZE_ROUNDS} rounds)"
    lines = [f"**{label}**: median latency (p99) at 1 connection, and {cpu}",
             "",
             f"| operation | {head} | CPU spread | flat within 20 % |",
             "|---|" + "---|" * len(SIZES) + "---|---|"]
    for op, name in SIZE_NAMES.items():
        cells = []
        for n in SIZES:
            f = r[str(n)][op]
            lat = (f"{f['p50_ms']:.2f} ms ({f['p99_ms']:.1f}), " if "p50_ms" in f else "")
            cells.append(f"{lat}{f['cpu_us']:.0f} us")
        sp = size_spread(r, op)
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {fmt(sp, ' %')} | {'yes' if sp is not None and sp <= 20 else 'no'} |")
    fills = ", ".join(f"{n:,} in {r[str(n)]['fill_s']:.1f} s" for n in SIZES if n)
    starts = ", ".join(f"{r[str(n)]['start_ms']:.0f} ms" for n in SIZES)
    lines += ["", f"Filled (SQL against the migrated schema): {fills}; server start to listening "
              f"at each size: {starts}."]
    return "\n".join(lines)


def write_size_block(m):
    parts = [f"Measured {m['date']} with `{CMDLINE}` on {m['nproc']} cores ({m['cpu']}), "
             f"{SIZE_REQS} requests of each operation per size in {SIZE_ROUNDS} rounds that go "
             f"through the sizes in turn.", ""]
    if "size" in results:
        parts += [size_table("size", "SQLite (the default)"), ""]
    if "size_pg" in results:
        parts += [size_table("size_pg", "PostgreSQL"), ""]
    replace_block(RESULTS, "bench-size", "\n".join(parts))


def replace_block(path, name, body):
    begin_m, end_m = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin_m}\n{body.rstrip()}\n{end_m}"
    with open(path) as f:
        old = f.read()
    b, e = old.find(begin_m), old.find(end_m)
    new = (old.rstrip() + "\n\n" + block + "\n" if b < 0 or e < 0 else
           old[:b] + block + old[e + len(end_m):])
    with open(path, "w") as f:
        f.write(new)


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
    try:  # the peer's versions (absent in a BENCH_ONLY=size run)
        node = subprocess.run(["node", "--version"], capture_output=True,
                              text=True).stdout.strip()
        redis = subprocess.run(["redis-server", "--version"], capture_output=True,
                               text=True).stdout.split()[2]
        with open(os.path.join(PEER, "node_modules", "bullmq", "package.json")) as f:
            bull = json.load(f)["version"]
    except (OSError, IndexError, ValueError):
        node = redis = bull = "n/a"
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
    ]
    for key, store in (("size", "SQLite"), ("size_pg", "PostgreSQL")):
        sp, op = size_worst(key)
        if sp is not None:
            cpu = "CPU per request" + (" (server and backends)" if key == "size_pg" else "")
            rows.append((f"size rows, {store}: the largest spread of the {cpu} over "
                         f"{' / '.join(f'{n:,}' for n in SIZES)} stored jobs (the bench-size "
                         f"table)", f"{sp:.0f} % ({op})", "-", "flat within 20 %", sp <= 20))
    rows += [
        (f"(f) CPU of an idle `pingvas up --workers 2` ({f['processes']} processes, "
         f"{f['seconds']:.0f} s)", fmt(f["percent_of_one_core"], " % of a core", 3), "-", "< 1 %",
         f["percent_of_one_core"] < 1),
    ]
    lines = ["| measurement | pingvas | BullMQ | target | reached |", "|---|---|---|---|---|"]
    for name, pv, bq, target, ok in rows:
        lines.append(f"| {name} | {pv} | {bq} | {target} | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def cpu_text(c):
    if not c:
        return "n/a"
    threads = c.get("server_threads_us") or {}
    big = ", ".join(f"{k} {v:,.0f}" for k, v in threads.items() if v >= 1)

    def part(k, v):
        return f"{k} {v:,.0f}" + (f" [{big}]" if k == "server" and big else "")
    parts = ", ".join(part(k, v) for k, v in c["parts_us"].items())
    return f"{c['total_us']:,.0f} us ({parts})"


def cpu_table(m):
    """The CPU each operation cost, by process, beside what the machine's cores allow at that
    cost and what the row's target leaves per operation: why a row misses, in numbers."""
    r, cores = results, m["nproc"]
    rows = [
        ("(a) SQLite, per create", "cpu_a_pingvas", "cpu_a_bullmq", r["a_bullmq"]["per_second"]),
        ("(a) PostgreSQL, per create", "cpu_a_pg", None, 10000),
        ("GET job, per GET", "cpu_get", None, 80000),
        ("(b) SQLite, per job", "cpu_b_pingvas", "cpu_b_bullmq",
         0.5 * r["b_bullmq"]["jobs_per_second"]),
        ("(b) PostgreSQL, per job", "cpu_b_pg", None, 2000),
    ]
    lines = [f"| row | pingvas: CPU per operation (by process, us; the server's threads in "
             f"brackets) | at that cost {cores} cores "
             "do at most | hypervisor steal during the row (what the cores had left) | BullMQ: "
             "CPU per operation | the target leaves per operation |",
             "|---|---|---|---|---|---|"]
    for name, key, peer, target in rows:
        c = r.get(key)
        most = fmt(cores * 1e6 / c["total_us"], "/s") if c and c["total_us"] else "n/a"
        st = c.get("steal_pct") if c else None
        left = (f"{st:.0f} % ({cores * (100 - st) / 100:.2f} cores)" if st is not None
                else "n/a")
        lines.append(f"| {name} | {cpu_text(c)} | {most} | {left} | "
                     f"{cpu_text(r.get(peer)) if peer else '-'} | "
                     f"{cores * 1e6 / target:,.0f} us ({fmt(target, '/s')}) |")
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
        f"DATABASE_URL on a loopback PostgreSQL 15 cluster of its own with PostgreSQL's default "
        f"durability (scripts/services/postgres.sh with PINGVAS_PG_DURABLE=1: fsync, "
        f"synchronous_commit and full_page_writes on); (a) {r['a_pg']['requests']:,} requests, p50 "
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
        f"node {m['node']}, redis-server {m['redis']}, BullMQ {m['bullmq']}. The hypervisor "
        f"took {r['steal_pct_run']:.0f} % of the cores' time over the whole run (steal, "
        f"/proc/stat).",
        "",
        tbl,
        "",
        *detail,
        "",
        "CPU per operation: what every process of the measurement spent (the server's and the "
        "workers' threads from /proc/PID/task/*/schedstat, PostgreSQL's client backends of the "
        "stack's database likewise, wrk, loadtest and the BullMQ node processes from getrusage; "
        "redis-server from schedstat). In brackets, the server's CPU by thread: front "
        "(libmicrohttpd's epoll threads: parsing, validation, reads, answers), pv-create (the "
        "create writer's group commits), pv-complete (the complete writer; on PostgreSQL its "
        "image stage is pv-images), pv-claims (the claim dispatcher), pv-events (the event hub). "
        "Everything runs on this machine's cores, so a row cannot "
        "go faster than the cores divided by its CPU per operation; the last column is the CPU "
        "per operation the row's target leaves here. This machine is a virtual one: the "
        "steal column is the share of its cores' time the hypervisor gave to something else "
        "during the row (/proc/stat), time no process here was charged for and none could use.",
        "",
        cpu_table(m),
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
    steal0 = steal_ticks()
    m = machine()
    redis, port, rdir = start_redis()
    try:
        bench_submit()
        bench_submit_bullmq(port, redis.pid)
        bench_e2e()
        bench_e2e_bullmq(port, redis.pid)
        bench_submit(pg=True)
        bench_e2e(pg=True)
    finally:
        os.killpg(redis.pid, signal.SIGTERM)
        redis.wait()
        shutil.rmtree(rdir, ignore_errors=True)
    bench_pickup()
    bench_scale_from_zero()
    bench_idle_cpu()
    bench_sizes()
    bench_sizes(pg=True)
    results["steal_pct_run"] = steal_pct(steal0)
    tbl = table()
    print(tbl)
    with open(os.path.join(os.path.dirname(BIN), "bench-last-run.json"), "w") as f:
        json.dump({"machine": m, "results": results}, f, indent=1)
    write_results(m, tbl)
    write_size_block(m)
    log(f"done in {time.monotonic() - t0:.0f} s; wrote {RESULTS}")


def main_size():
    """BENCH_ONLY=size: the size rows alone; rewrites only their block of RESULTS_MD."""
    t0 = time.monotonic()
    m = machine()
    bench_sizes()
    bench_sizes(pg=True)
    for key, label in (("size", "SQLite"), ("size_pg", "PostgreSQL")):
        print(size_table(key, label) + "\n")
    with open(os.path.join(os.path.dirname(BIN), "bench-size-last-run.json"), "w") as f:
        json.dump({"machine": m, "results": results}, f, indent=1)
    write_size_block(m)
    log(f"done in {time.monotonic() - t0:.0f} s; wrote {RESULTS}")


if __name__ == "__main__":
    main_size() if os.environ.get("BENCH_ONLY") == "size" else main()
