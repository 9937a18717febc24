"""Network faults between workers and the server (issue 15, section 1), made with a loopback
TCP proxy the test controls (faults.Proxy: why not network namespaces is said there): the
workers under test reach the server through it, everything else directly.

- Partition past the lease: a worker's link is cut mid-job for longer than its lease, then
  healed. Its job is requeued and done by another worker; the cut-off worker's late heartbeat,
  upload or complete is refused when the link is back; the job completes once, charged once,
  with attempts 2 (the lost lease counts).
- One-way loss: the worker hears the server (its claim is answered) but every heartbeat it sends
  is swallowed. Its lease expires, the job is done once elsewhere, its late upload is refused.
- A lossy, slow network: every worker and every client goes through proxies that hold each
  chunk 250 ms each way plus up to 100 ms of jitter (a round trip of 500-700 ms) and cut 5 % of
  connections at a random point (before the request reached the server, or after: the answer
  is lost). Submissions retry with their Idempotency-Key, workers retry their reports. Every
  accepted job completes once, charged once. PINGVAS_FAULTS_LONG=1: 300 jobs instead of 24."""
import time

import faults
import pv

FAST = ["--lease", "1s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]
REFUSED = "lease_gone|upload_refused|complete_refused"


def server_addr(env):
    return ("127.0.0.1", int(env.url.rsplit(":", 1)[1]))


def worker_via(env, proxy, *args, name=None):
    """A worker whose server URL is the proxy."""
    direct = env.url
    env.url = proxy.url()
    try:
        return env.start_worker(*args, name=name)
    finally:
        env.url = direct


def started(env, worker, jid):
    return any(faults.job_of(l) == jid for l in faults.log_events(env, worker.logname, "job_start"))


def done_by(env, worker, jid):
    return any(faults.job_of(l) == jid for l in faults.log_events(env, worker.logname, "job_done"))


def one_long_job(env, load, steps=40):
    load.submit(1, prefix=f"long{len(load.accepted)}", min_steps=steps, max_steps=steps)
    user, jid = load.accepted[-1]
    return load.tokens[user], jid


def isolated_worker(env, fault, heal):
    """One worker behind a proxy runs a long job; fault(proxy) breaks its link; another worker,
    direct, must do the job (attempts 2: the lost lease counts); heal(proxy) mends the link;
    the isolated worker's late report is refused and never completes the job. Returns the
    load after the accounting, and the figures."""
    env.start_server(*FAST)
    load = faults.Load(env, faults.seed())
    proxy = faults.Proxy(server_addr(env), seed=load.seed)
    env.cleanups.append(proxy.close)
    iso = worker_via(env, proxy, "--time-scale", "0.3", "--imds-url", "off", name="isolated")
    tok, jid = one_long_job(env, load)
    pv.wait_for(lambda: started(env, iso, jid), timeout=30, what="the worker to run it")
    fault(proxy, load)
    other = env.start_worker("--time-scale", "0.05", "--imds-url", "off", name="other")
    j = env.wait_status(tok, jid, "completed", timeout=60)
    assert j["attempts"] == 2, j
    pv.wait_for(lambda: done_by(env, other, jid), timeout=10, what="the other worker's job_done")
    heal(proxy, load)
    late = pv.wait_for(lambda: faults.log_events(env, iso.logname, REFUSED), timeout=60,
                       what="the isolated worker's late report to be refused")
    load.faults["late_refused"] += len(late)
    assert not faults.log_events(env, iso.logname, "job_done"), "a late complete was accepted"
    load.drain(timeout=30)
    _, figures = load.account()
    load.faults.update({"proxy_" + k: v for k, v in proxy.counts.items()})
    return load, figures


def test_partition_past_lease(env):
    t0 = time.monotonic()

    def cut(proxy, load):
        proxy.cut()
        load.faults["partition"] += 1

    def heal(proxy, load):
        proxy.heal()
        load.faults["heal"] += 1

    load, figures = isolated_worker(env, cut, heal)
    load.report("partition_past_lease", figures, t0)


def test_heartbeats_dropped(env):
    t0 = time.monotonic()

    def deafen(proxy, load):
        proxy.drop_up(b"/heartbeat")  # the server never hears this worker's heartbeats
        load.faults["one_way_loss"] += 1

    load, figures = isolated_worker(env, deafen, lambda proxy, load: None)
    load.report("heartbeats_dropped", figures, t0)


def test_lossy_slow_network(env):
    seed = faults.seed()
    t0 = time.monotonic()
    env.start_server("--lease", "5s", "--heartbeat", "1s", "--reaper-interval", "200ms",
                     "--max-attempts", "20")
    load = faults.Load(env, seed)
    link = dict(delay_ms=250, jitter_ms=100, loss=0.05)
    wproxy = faults.Proxy(server_addr(env), seed=seed, **link)
    cproxy = faults.Proxy(server_addr(env), seed=seed + 1, **link)
    env.cleanups += [wproxy.close, cproxy.close]
    for i in range(4):
        worker_via(env, wproxy, "--time-scale", "0.05", "--imds-url", "off", name=f"lossy{i}")
    direct = env.url
    env.url = cproxy.url()
    try:
        load.submit(300 if faults.long_run() else 24, threads=6)
    finally:
        env.url = direct
    load.drain(timeout=180)
    _, figures = load.account()
    for name, p in (("workers", wproxy), ("clients", cproxy)):
        for k, v in p.counts.items():
            load.faults[f"{name}_{k}"] = v
    load.faults["latency_ms"] = "500+0..200"
    load.faults["loss_pct"] = 5
    load.report("lossy_slow_network", figures, t0)


if __name__ == "__main__":
    pv.main([pv.clean_exit(test_partition_past_lease), pv.clean_exit(test_heartbeats_dropped),
             pv.clean_exit(test_lossy_slow_network)])
