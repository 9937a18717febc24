"""Power loss (issue 12, section 1): every acknowledged job and every acknowledged completion (and
its charge) survives a power loss with the shipped defaults (SQLite synchronous=FULL with group
commit; PostgreSQL's own defaults).

The server runs under tests/lazyfs_shim.c (LD_PRELOAD, built by CMake; PINGVAS_LAZYFS_SHIM names
it): every write to a file of the data directory stays in memory until fsync/fdatasync, and
"pulling the plug" (a byte on the shim's FIFO) drops whatever was not synced and kills the
server, as a power loss would (Jepsen's LazyFS does the same with a FUSE file system). While
four clients submit and a worker (speaking the worker protocol from this test, so that it sees
each acknowledgement) claims, uploads and completes jobs, the test pulls the plug, three times
in a row, then restarts the server on the same data directory and checks that every 201 and every completion answered
200 is there, charged once, and that the balance adds up.

On the production stack the server's state is in PostgreSQL (the shared loopback cluster, run
with fsync off as a throwaway test service), so there the plug only kills the server: the test
checks the same acknowledgements but cannot simulate PostgreSQL's own power loss.

test_shim_drops_unsynced_writes checks the shim itself: a process under it writes, syncs, writes
again, sees its own unsynced bytes, and after the plug only the synced bytes are on disk."""
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib

import pv

SHIM = os.environ.get("PINGVAS_LAZYFS_SHIM") or os.path.join(
    os.path.dirname(pv.BIN), "liblazyfs_shim.so")


def tiny_png():
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def shim_env(env, fifo):
    e = env.env()
    e["LD_PRELOAD"] = SHIM
    e["PINGVAS_LAZYFS_DIR"] = env.data
    e["PINGVAS_LAZYFS_PLUG"] = fifo
    # Under the sanitizer build ASan must come first among the preloaded libraries; the shim
    # is not instrumented and only wraps libc's file calls, so the order check is waived.
    e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    return e


def pull_plug(fifo, proc):
    with open(fifo, "wb") as f:
        f.write(b"x")
    proc.wait(timeout=30)
    assert proc.returncode == -9, f"the server was not killed by the plug: {proc.returncode}"


def worker_loop(env, stop, completed, lock, png):
    """Works jobs as pingvas worker does (issue 12, item 3: complete-and-claim, the image in the
    complete where the server stores images, else uploaded first); records every completion
    answered 200. The server batches those completes (one commit, their images fsynced
    together), so a plug pulled mid-batch must lose none of the answered ones."""
    hdr = {"Authorization": "Bearer " + pv.WORKER_TOKEN}
    ask = {"worker_id": "plw", "tier": "standard", "wait_ms": 0}
    c = None
    while not stop.is_set():
        try:
            if c is None:
                r = pv.http("POST", env.url + "/internal/v1/claim",
                            {"worker_id": "plw", "wait_ms": 200}, headers=hdr, timeout=5)
                if r.status != 200:
                    continue
                c = r.json()
            jid, up = c["job"]["id"], c["upload"]
            report = {"lease_id": c["lease_id"], "gpu_seconds": 1.5, "next": ask}
            c = None
            url = f"{env.url}/internal/v1/jobs/{jid}/complete"
            if up["needs_lease"]:
                d = pv.http("POST", url, png, raw=True, timeout=5,
                            headers=dict(hdr, **{"Content-Type": "image/png",
                                                 "X-Pingvas-Report": json.dumps(report)}))
            else:
                u = pv.http(up["method"], up["url"], png, headers={"Content-Type": "image/png"},
                            raw=True, timeout=5)
                if u.status not in (200, 201, 204):
                    continue
                d = pv.http("POST", url, report, headers=hdr, timeout=5)
        except Exception:
            return  # the plug was pulled mid-request: that answer was never seen
        if d.status == 200:
            with lock:
                completed[jid] = d.json()["credits_charged"]
            c = d.json()["next"]


def start_under_shim(env, fifo):
    log = open(os.path.join(env.dir, "server.log"), "ab")
    srv = subprocess.Popen([pv.BIN, "server", "--port", "0", "--data", env.data],
                           stdout=subprocess.PIPE, stderr=log, env=shim_env(env, fifo),
                           start_new_session=True)
    srv.logname = "server.log"
    env.procs.append(srv)
    env.url = env._await_url(srv)
    threading.Thread(target=lambda: srv.stdout.read(), daemon=True).start()
    return srv


def traffic_then_plug(env, fifo, tok, accepted, completed, seq):
    """One round: the server under the shim, four submitters and a worker, then the plug."""
    srv = start_under_shim(env, fifo)
    lock, stop = threading.Lock(), threading.Event()
    goal = (len(accepted) + 300, len(completed) + 20)

    def submitter():
        while not stop.is_set():
            i = next(seq)
            try:
                r = env.create(tok, {"prompt": f"power {i}", "steps": 1 + i % 30, "seed": i},
                               timeout=5)
            except Exception:
                return
            if r.status == 201:
                with lock:
                    accepted[r.json()["id"]] = i
    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(4)]
    threads.append(threading.Thread(target=worker_loop, daemon=True,
                                    args=(env, stop, completed, lock, tiny_png())))
    for t in threads:
        t.start()
    pv.wait_for(lambda: len(accepted) >= goal[0] and len(completed) >= goal[1], timeout=120,
                what="acknowledged creates and completions")
    pull_plug(fifo, srv)  # mid-traffic
    stop.set()
    for t in threads:
        t.join(timeout=30)


def test_acknowledged_survive_power_loss(env):
    os.makedirs(env.data, exist_ok=True)
    tok = env.add_user("pat", credits=10_000_000)  # before the server: nothing else writes later
    before = 10_000_000
    fifo = os.path.join(env.dir, "plug")
    os.mkfifo(fifo)
    accepted, completed = {}, {}
    seq = iter(range(10 ** 9))
    for _ in range(3):  # three power losses, each restart on what the last one left
        traffic_then_plug(env, fifo, tok, accepted, completed, seq)

    env.start_server()  # no shim: the disk as the power loss left it
    for jid, i in accepted.items():
        j = env.job(tok, jid)
        assert j and j.get("id") == jid, f"acknowledged job {jid} lost in the power loss: {j}"
        assert j["prompt"] == f"power {i}" and j["steps"] == 1 + i % 30, j
    for jid, charged in completed.items():
        j = env.job(tok, jid)
        assert j["status"] == "completed" and j["credits_charged"] == charged > 0, (jid, j)
        if env.stack == "embedded":  # the image of an answered complete was durable too
            got = pv.http("GET", j["image_url"])
            assert got.status == 200 and got.body == tiny_png(), (jid, got)
    jobs = {}
    cursor = None
    while True:
        page = env.api("GET", "/api/v1/generation?limit=100" +
                       (f"&cursor={cursor}" if cursor else ""), token=tok).json()
        jobs.update({j["id"]: j for j in page["jobs"]})
        cursor = page["next_cursor"]
        if not cursor:
            break
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    charged = sum(j["credits_charged"] for j in jobs.values() if j["status"] == "completed")
    assert before - c["balance"] == charged, (c, charged)
    print(f"powerloss: stack={env.stack} acknowledged_creates={len(accepted)} "
          f"acknowledged_completes={len(completed)} jobs_after={len(jobs)}", flush=True)
    assert env.stop(env.server) == 0, "server did not exit cleanly"


SELF_TEST = r"""
import os, sys
d = sys.argv[1]
fd = os.open(os.path.join(d, "f"), os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
os.write(fd, b"A" * 5000)
os.fsync(fd)
os.pwrite(fd, b"B" * 10, 100)
os.write(fd, b"C" * 3000)
assert os.pread(fd, 20, 95) == b"AAAAA" + b"B" * 10 + b"AAAAA", os.pread(fd, 20, 95)
assert os.fstat(fd).st_size == 8000
g = os.open(os.path.join(d, "g"), os.O_CREAT | os.O_WRONLY, 0o644)
os.write(g, b"never synced")
print("ready", flush=True)
sys.stdin.read()
"""


def test_shim_drops_unsynced_writes(env):
    os.makedirs(env.data)
    fifo = os.path.join(env.dir, "plug")
    os.mkfifo(fifo)
    e = shim_env(env, fifo)
    e.pop("ASAN_OPTIONS", None)
    p = subprocess.Popen([sys.executable, "-c", SELF_TEST, env.data], env=e,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready", "the shim self-test did not start"
    assert os.path.getsize(os.path.join(env.data, "f")) == 5000  # only the synced bytes
    pull_plug(fifo, p)
    data = open(os.path.join(env.data, "f"), "rb").read()
    assert data == b"A" * 5000, (len(data), set(data))
    assert os.path.getsize(os.path.join(env.data, "g")) == 0


if __name__ == "__main__":
    pv.main([test_shim_drops_unsynced_writes, test_acknowledged_survive_power_loss])
