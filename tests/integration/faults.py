"""faults.py: shared pieces of the fault tests (issue 15): a seeded job load with its fault
counter, the end-of-run accounting (every accepted job completed once, one charge each, balances
moved by exactly the charges), and a loopback TCP proxy the test controls (cuts, delays, one-way
drops, random loss) for network faults.

Why a proxy and not network namespaces: `ip netns` and veth pairs can be made on the CI machine,
but its kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is off), so latency and jitter could not be
made there, and traffic must stay on loopback. The proxy gives the same faults at the TCP level:
a cut closes every connection through it and refuses new ones (a worker behind it sees what a
partition shows: connections reset or timing out); a one-way drop holds a matching request
without forwarding it (the server never hears it, the worker waits in vain); delay and jitter
hold each chunk before forwarding it; loss closes a connection at a random point, before or after
the request reached the server (so the request may or may not have taken effect, and its answer
is lost)."""
import collections
import concurrent.futures
import os
import random
import re
import select
import socket
import sqlite3
import threading
import time

import pv

USERS = ["ava", "bo", "cy"]


class Load:
    """Users, their starting balances, submissions with Idempotency-Keys retried through 5xx and
    connection errors, and the fault counter printed beside the outcome."""

    def __init__(self, env, seed, users=USERS, credits=10_000_000):
        self.env = env
        self.seed = seed
        self.rng = random.Random(seed)
        self.tokens = {u: env.add_user(u, credits=credits) for u in users}
        self.before = {u: self.credits(u)["balance"] for u in users}
        self.accepted = []
        self.errors = []
        self.faults = collections.Counter()
        print(f"seed: {seed} (replay with PINGVAS_FAULTS_SEED={seed})", flush=True)

    def credits(self, user):
        r = pv.wait_for(lambda: (lambda r: r if r.status == 200 else None)(
            self.env.api("GET", "/api/v1/credits", token=self.tokens[user], timeout=10)),
            timeout=60, what="credits")
        return r.json()

    def submit(self, n, prefix="job", min_steps=3, max_steps=25, threads=4, give_up_s=120):
        rng = random.Random(self.rng.random())
        plan = [(f"{prefix}-{i}", rng.choice(list(self.tokens)), rng.randint(min_steps, max_steps))
                for i in range(n)]

        def one(item):
            key, user, steps = item
            body = {"prompt": f"fault job {key}", "steps": steps, "seed": len(key)}
            jid, err = self.env.create_retrying(self.tokens[user], body, key, give_up_s, 15)
            if jid:
                return user, jid
            self.errors.append((key, err))
            return None

        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            for res in ex.map(one, plan):
                if res:
                    self.accepted.append(res)

    def backlog(self):
        try:
            r = self.env.api("GET", "/api/v1/queue", token=pv.WORKER_TOKEN, timeout=5)
            t = r.json()["tiers"]["standard"]
            return t["queued"] + t["running"]
        except Exception:
            return None

    def drain(self, timeout=120):
        pv.wait_for(lambda: self.backlog() == 0, timeout=timeout, interval=0.1,
                    what="the backlog to drain")

    def jobs(self):
        out = {}
        for u, tok in self.tokens.items():
            cursor = None
            while True:
                q = "/api/v1/generation?limit=100" + (f"&cursor={cursor}" if cursor else "")
                page = self.env.api("GET", q, token=tok).json()
                for j in page["jobs"]:
                    assert j["id"] not in out
                    out[j["id"]] = (u, j)
                cursor = page["next_cursor"]
                if not cursor:
                    break
        return out

    def account(self):
        """Asserts: every accepted job exists once and is completed, one ledger charge per job
        equal to its credits_charged, balances moved by exactly the charges, nothing reserved.
        Returns (jobs, figures)."""
        assert not self.errors, f"refused submissions: {self.errors[:5]}"
        ids = {jid for _, jid in self.accepted}
        assert len(ids) == len(self.accepted), "one Idempotency-Key gave two jobs"
        jobs = self.jobs()
        assert set(jobs) == ids, f"store has {len(jobs)} jobs, accepted {len(ids)}"
        status = collections.Counter(j["status"] for _, j in jobs.values())
        assert status == {"completed": len(ids)}, status
        for u in self.tokens:
            c = self.credits(u)
            charged = sum(j["credits_charged"] for uu, j in jobs.values() if uu == u)
            assert c["reserved"] == 0, (u, c)
            assert self.before[u] - c["balance"] == charged, (u, self.before[u], c, charged)
        charges = self.ledger_charges()
        per_job = collections.Counter(jid for jid, _ in charges)
        double = sum(1 for n in per_job.values() if n > 1)
        assert double == 0, [k for k, n in per_job.items() if n > 1][:5]
        assert set(per_job) == ids, (len(per_job), len(ids))
        for jid, amount in charges:
            assert -amount == jobs[jid][1]["credits_charged"], (jid, amount)
        figures = {"jobs": len(ids), "completed": status["completed"], "lost": 0,
                   "double_charges": double, "ledger_charges": len(charges),
                   "lost_leases": sum(j["attempts"] - 1 for _, j in jobs.values()),
                   "releases": sum(j["releases"] for _, j in jobs.values())}
        return jobs, figures

    def ledger_charges(self):
        """(job_id, amount) of every charge row, read from the store itself."""
        url = self.env.extra_env.get("DATABASE_URL", "")
        sql = "SELECT job_id, amount FROM credit_ledger WHERE kind = 'charge'"
        if url.startswith("postgres"):
            import pv_pg
            out = pv_pg.psql(url, sql)
            return [(a, int(b)) for a, b in (l.split("|") for l in out.split("\n") if l)]
        db = sqlite3.connect(f"file:{os.path.join(self.env.data, 'pingvas.db')}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def report(self, name, figures, t0):
        faults = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        figs = " ".join(f"{k}={v}" for k, v in figures.items())
        print(f"{name}: {figs} faults: {faults} seed={self.seed} "
              f"elapsed={time.monotonic() - t0:.1f}s", flush=True)


def seed():
    return int(os.environ.get("PINGVAS_FAULTS_SEED", str(int(time.time()) % 100000)))


def long_run():
    """PINGVAS_FAULTS_LONG=1 selects the long schedules (docs/reliability.md)."""
    return os.environ.get("PINGVAS_FAULTS_LONG", "") not in ("", "0")


def read_log(env, logname):
    with open(os.path.join(env.dir, logname), "rb") as f:
        return f.read().decode(errors="replace")


def log_events(env, logname, event):
    """Every `event=NAME ...` line of a process's log."""
    return re.findall(r"event=(?:" + event + r")\b[^\n]*", read_log(env, logname))


def job_of(line):
    m = re.search(r"\bjob=(\S+)", line)
    return m.group(1) if m else None


def leases_lost(env, exclude=()):
    """Lines where a worker (other than those in exclude, by log name) was told its lease was
    gone, or its late report refused, for a job it had not itself finished (a heartbeat racing
    the job's own completion is answered 409: no loss)."""
    lost = []
    for p in env.procs:
        if not p.logname.startswith("worker") or p.logname in exclude:
            continue
        done = {job_of(l) for l in log_events(env, p.logname, "job_done")}
        lost += [f"{p.logname}: {l}" for l in log_events(
            env, p.logname, "lease_gone|complete_refused|upload_refused") if job_of(l) not in done]
    return lost


class Proxy:
    """A loopback TCP proxy the test controls, between clients and target (host, port): every
    connection gets two pump threads, one a direction. Faults, each settable while it runs:
    - delay_ms (+ up to jitter_ms, random): each chunk is held that long before it is forwarded
      (set both directions' delay to add a round trip of twice that; `up_only` holds only the
      client's chunks, so a request/answer round trip pays it once);
    - cut(): every open connection is reset and new ones are closed at once, until heal();
    - drop_up(pattern): a client chunk containing pattern (bytes) is swallowed, and that
      connection forwards nothing more from its client: the server never hears the request,
      the client waits for an answer that does not come (one-way loss);
    - loss: the probability that a client chunk (a request) is lost with its connection: half
      the time before it reaches the target, half the time after (its answer is then lost).
    counts: connections, cuts, drops, requests_lost, answers_lost."""

    def __init__(self, target, seed=0, delay_ms=0, jitter_ms=0, up_only=False, loss=0.0):
        self.target = target
        self.rng = random.Random(seed)
        self.delay_ms, self.jitter_ms, self.up_only, self.loss = delay_ms, jitter_ms, up_only, loss
        self.cut_now = False
        self.drop_patterns = []
        self.counts = collections.Counter()
        self.lock = threading.Lock()
        self.conns = set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}"

    def cut(self):
        with self.lock:
            self.cut_now = True
            conns = list(self.conns)
        self.counts["cuts"] += 1
        for a, b in conns:
            self._reset(a, b)

    def heal(self):
        with self.lock:
            self.cut_now = False

    def drop_up(self, pattern):
        with self.lock:
            self.drop_patterns.append(pattern)

    def clear_drops(self):
        with self.lock:
            self.drop_patterns = []

    def close(self):
        self.closed = True
        self.cut()
        try:
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def _reset(a, b):
        for s in (a, b):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                refuse = self.cut_now
            if refuse:
                self._reset(c, c)
                c.close()
                continue
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            u.settimeout(None)
            self.counts["connections"] += 1
            state = {"dropping": False, "lose_answer": False}
            with self.lock:
                self.conns.add((c, u))
            threading.Thread(target=self._pump, args=(c, u, True, state), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False, state), daemon=True).start()

    def _pump(self, src, dst, up, state):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if up and not state["dropping"]:
                    with self.lock:
                        pats = list(self.drop_patterns)
                    if any(p in data for p in pats):
                        state["dropping"] = True
                        self.counts["drops"] += 1
                if state["dropping"] and up:
                    continue  # swallowed: the target never hears this client again
                if not up and state["lose_answer"]:
                    self.counts["answers_lost"] += 1
                    break  # the request took effect; its answer is lost with the connection
                if up:
                    self.counts["requests"] += 1
                if up and self.loss and self.rng.random() < self.loss:
                    if self.rng.random() < 0.5:
                        self.counts["requests_lost"] += 1
                        break  # the server never hears it
                    state["lose_answer"] = True
                d = self.delay_ms + (self.rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0)
                if d and (up or not self.up_only):
                    time.sleep(d / 1000.0)
                dst.sendall(data)
        except OSError:
            pass
        self._reset(src, dst)
        with self.lock:
            self.conns.discard((src, dst) if up else (dst, src))
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass
