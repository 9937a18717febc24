"""A full disk (issue 15, section 2): small tmpfs file systems the test mounts (size=) and
fills with a filler file, then frees.

Data directory full (embedded stack: SQLite and the image files live there): jobs are created
until the store cannot write; from then creates answer 503 with a JSON error, every create
answered 201 before stays; reads (a job, the list, credits) keep working; /readyz is 503 and
names the store and SQLite's "disk is full"; once the filler is removed, creates succeed and
/readyz turns 200 by itself, with no restart; every acknowledged job completes, charged once.
On the production stack (PostgreSQL, S3) nothing is written to the data directory at run time:
a full one changes nothing, and the test checks that.

Database disk full (a throwaway PostgreSQL cluster of the test's own on a small tmpfs, either
stack): the same as for SQLite: creates answer 503 once PostgreSQL cannot extend its files,
reads keep working, /readyz names the store ("No space left on device"), and everything comes
back by itself when space returns.

Image store full (STORAGE_URL=file:// on its own full tmpfs, with either store): the server
answers the worker's upload 507 storage_full; the worker releases the job (not a failed attempt,
nothing charged) and waits before claiming again; /readyz is 503 naming the image store; once
space returns every job completes once with attempts 1, charged once."""
import errno
import os
import subprocess
import tempfile
import time

import faults
import pv
import pv_pg

FAST = ["--lease", "2s", "--heartbeat", "300ms", "--reaper-interval", "100ms"]


def mount_tmpfs(env, path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                       capture_output=True, text=True)
    assert p.returncode == 0, (f"mount tmpfs on {path} failed (the disk tests need root, as in "
                               f"CI): {p.stderr.strip()}")
    env.cleanups.append(lambda: subprocess.run(["umount", "-l", path], capture_output=True))


def fill(path):
    """Writes a filler file until the file system is full; returns its path."""
    f = os.path.join(path, "filler")
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return f


def free(filler):
    os.remove(filler)


def readyz(env):
    r = env.api("GET", "/readyz", timeout=10)
    return r.status, (r.json() or {})


def refuse_creates_keep_reads(env, load, full_words=("full", "space")):
    """Creates until the store cannot write: that create is a 503 with a JSON error; every create
    answered 201 before is kept (load.accepted); reads keep working; /readyz is 503 and says the
    disk is full; every 503 so far (the workers' completes too, answered on another thread than
    the one that ran them) logged the store's message."""
    tok = load.tokens["ava"]
    refused = None
    for i in range(3000):
        r = env.create(tok, {"prompt": f"fill {i}", "steps": 3},
                       headers={"Idempotency-Key": f"fill-{i}"}, timeout=15)
        if r.status != 201:
            refused = r
            break
        load.accepted.append(("ava", r.json()["id"]))
    assert refused is not None, "the store kept writing on a full disk?"
    assert refused.status == 503, refused
    err = refused.json()["error"]
    assert err["code"] == "unavailable" and err["message"], err
    load.faults["creates_refused_503"] += 1
    user, jid = load.accepted[-1]
    assert env.api("GET", f"/api/v1/generation/{jid}", token=load.tokens[user]).status == 200
    assert env.api("GET", "/api/v1/generation?limit=5", token=tok).status == 200
    assert env.api("GET", "/api/v1/credits", token=tok).status == 200
    st, body = readyz(env)
    assert st == 503 and any(w in r["error"] for r in body["reasons"] for w in full_words), body
    unnamed = [e for e in faults.log_events(env, env.server.logname, "store_error")
               if 'err=""' in e]
    assert not unnamed, f"503s that recorded no store error (/readyz then says 'store: '): {unnamed}"


def recover(env, load):
    """Once space is back: creates work and /readyz turns 200 by themselves (no restart), and
    every job drains."""
    tok = load.tokens["ava"]
    pv.wait_for(lambda: env.create(tok, {"prompt": "after", "steps": 3},
                                   headers={"Idempotency-Key": "after-0"}).status in (200, 201),
                timeout=30, what="creates to work again")
    load.accepted.append(("ava", env.create(tok, {"prompt": "after", "steps": 3},
                                            headers={"Idempotency-Key": "after-0"}).json()["id"]))
    pv.wait_for(lambda: readyz(env)[0] == 200, timeout=30, what="/readyz to turn 200")
    load.drain(timeout=120)


def full_then_freed(env, load, path, what, while_full, t0):
    """Fills the file system at path, runs while_full(), frees it; then the recovery, the
    accounting and the report."""
    filler = fill(path)
    load.faults[what + "_full"] += 1
    while_full()
    free(filler)
    load.faults[what + "_freed"] += 1
    recover(env, load)
    _, figures = load.account()
    load.report(what + "_full", figures, t0)


def test_data_dir_full(env):
    seed = faults.seed()
    t0 = time.monotonic()
    mount_tmpfs(env, env.data, "16m")
    env.start_server(*FAST)
    load = faults.Load(env, seed)
    for _ in range(2):
        env.start_worker("--time-scale", "0.05", "--imds-url", "off")
    load.submit(10, prefix="before")
    load.drain(timeout=60)


    def while_full():
        if env.stack == "production":
            # PostgreSQL and S3 hold everything: the full data directory changes nothing.
            load.submit(10, prefix="while-full")
            assert readyz(env)[0] == 200
        else:
            refuse_creates_keep_reads(env, load)
    full_then_freed(env, load, env.data, "data_dir", while_full, t0)


def test_image_store_full(env):
    seed = faults.seed()
    t0 = time.monotonic()
    images = os.path.join(env.dir, "images")
    mount_tmpfs(env, images, "4m")
    env.extra_env["STORAGE_URL"] = "file://" + images
    env.start_server(*FAST)
    load = faults.Load(env, seed)
    filler = fill(images)
    load.faults["image_store_full"] += 1
    w = env.start_worker("--time-scale", "0.05", "--imds-url", "off")
    load.submit(4, prefix="img")
    pv.wait_for(lambda: faults.log_events(env, w.logname, "upload_storage_full"), timeout=60,
                what="an upload refused as storage full")
    pv.wait_for(lambda: faults.log_events(env, w.logname, "storage_full_backoff"), timeout=30,
                what="the worker to release and back off")
    st, body = readyz(env)
    assert st == 503 and any(r["component"] == "image_store" for r in body["reasons"]), body
    for user, jid in load.accepted:
        j = env.job(load.tokens[user], jid)
        assert j["status"] in ("queued", "in_progress") and j["credits_charged"] == 0, j
        assert j["attempts"] <= 1, j  # a release gives its attempt back
    free(filler)
    load.faults["image_store_freed"] += 1
    load.drain(timeout=120)
    jobs, figures = load.account()
    for _, j in jobs.values():
        assert j["attempts"] == 1, j
    assert figures["releases"] >= 1, figures
    load.faults["uploads_refused_507"] = len(faults.log_events(env, w.logname,
                                                               "upload_storage_full"))
    pv.wait_for(lambda: readyz(env)[0] == 200, timeout=30, what="/readyz to turn 200")
    load.report("image_store_full", figures, t0)


def test_database_disk_full(env):
    """PostgreSQL's own disk full (a throwaway cluster on a small tmpfs): creates answer 503,
    reads keep working, /readyz names the store, and all comes back once space returns."""
    seed = faults.seed()
    t0 = time.monotonic()
    pgdir = tempfile.mkdtemp(prefix="pingvas-pgdisk-")  # not under env.dir: postgres reads it
    mount_tmpfs(env, pgdir, "160m")
    env.cleanups.append(lambda: os.rmdir(pgdir))  # after the umount
    cluster = pv_pg.Cluster(dir=pgdir)
    env.cleanups.insert(0, cluster.close)
    db_env, _ = cluster.provision()
    env.extra_env.update(db_env)  # on the production stack, replaces the shared database
    env.start_server(*FAST)
    load = faults.Load(env, seed)
    env.start_worker("--time-scale", "0.05", "--imds-url", "off")
    load.submit(5, prefix="before")
    load.drain(timeout=60)
    full_then_freed(env, load, pgdir, "database_disk",
                    lambda: refuse_creates_keep_reads(env, load), t0)


if __name__ == "__main__":
    pv.main([pv.clean_exit(test_data_dir_full), pv.clean_exit(test_image_store_full),
             pv.clean_exit(test_database_disk_full)])
