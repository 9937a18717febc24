"""`pingvas up` end to end: the README's first experience."""
import os
import urllib.parse

import pv
from test_security import fs_stored_keys


def test_submit_wait_fetch_png(env):
    env.start_server("--workers", "2", "--enterprise-workers", "1", "--time-scale", "0.05",
                     cmd="up")
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    r = env.create(tok, {"prompt": "a lighthouse at dawn", "width": 256, "height": 384,
                         "seed": 42})
    assert r.status == 201, r
    job = r.json()
    assert job["status"] == "queued" and job["seed"] == 42 and job["tier"] == "standard"
    done = env.wait_status(tok, job["id"], "completed")
    assert done["attempts"] == 1 and done["releases"] == 0
    assert done["gpu_seconds"] > 0 and done["credits_charged"] >= 1
    assert done["started_at"] and done["completed_at"]
    img = pv.http("GET", done["image_url"])
    assert img.status == 200 and img.headers.get("Content-Type") == "image/png"
    assert pv.png_size(img.body) == (256, 384)
    # The same parameters give the same picture; another prompt a different one.
    j2 = env.wait_status(tok, env.create(tok, {"prompt": "a lighthouse at dawn", "width": 256,
                                               "height": 384, "seed": 42}).json()["id"],
                         "completed")
    j3 = env.wait_status(tok, env.create(tok, {"prompt": "a forest at night", "width": 256,
                                               "height": 384, "seed": 42}).json()["id"],
                         "completed")
    assert pv.http("GET", j2["image_url"]).body == img.body
    assert pv.http("GET", j3["image_url"]).body != img.body
    # Credits: charged once per job, recorded in the ledger.
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    charges = [e for e in c["ledger"] if e["kind"] == "charge"]
    assert len(charges) == 3
    assert c["reserved"] == 0
    assert c["balance"] == 10000 - sum(-e["amount"] for e in charges)
    if env.stack == "embedded":  # the image lives in DATA/images/images.db
        key = urllib.parse.urlsplit(done["image_url"]).path[len("/images/"):]
        assert key.startswith(f"jobs/{job['id']}-"), key  # an unguessable key (security.md)
        assert key in fs_stored_keys(os.path.join(env.data, "images"))
    # Each worker counts once it has said it started. Three jobs can be done by one of the two
    # before the other has (CI saw it under ASan), so this waits as a user watching /queue would.
    def registered():
        q = env.api("GET", "/api/v1/queue", token=tok).json()["tiers"]
        return q if (q["standard"]["workers"], q["enterprise"]["workers"]) == (2, 1) else None

    q = pv.wait_for(registered, what="two standard and one enterprise worker on /queue")
    assert q["standard"]["queued"] == 0 and q["standard"]["running"] == 0


def test_restart_keeps_demo_and_secrets(env):
    p = env.start_server("--workers", "0", "--enterprise-workers", "0", cmd="up")
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    jid = env.create(tok).json()["id"]
    env.stop(p)
    env.start_server("--workers", "1", "--enterprise-workers", "0", "--time-scale", "0.01",
                     cmd="up")
    # The same token still works (same secret) and the job is still there and now runs.
    env.wait_status(tok, jid, "completed")
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    assert len([e for e in c["ledger"] if e["kind"] == "grant"]) == 1  # demo created once


def test_default_data_directory(env):
    """`pingvas up` exactly as scripts/up.sh runs it: no --data, so DATA is ./data under the
    working directory (a relative path). A job completes and its image is served."""
    import threading
    p = env._spawn(["up", "--port", "0", "--workers", "1", "--enterprise-workers", "0",
                    "--time-scale", "0.05"], "up-default.log", cwd=env.dir)
    env.url = env._await_url(p)
    env.server = p
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    pv.wait_for(lambda: pv.http("GET", env.url + "/healthz").status == 200, what="healthz")
    data = os.path.join(env.dir, "data")
    tok = pv.run_cli("token", "demo", data=data, env=env.env()).stdout.strip()
    r = env.create(tok, {"prompt": "a lighthouse at dawn", "width": 64, "height": 64})
    assert r.status == 201, r
    done = env.wait_status(tok, r.json()["id"], "completed")
    img = pv.http("GET", done["image_url"])
    assert img.status == 200 and pv.png_size(img.body) == (64, 64), img
    if env.stack == "embedded":
        assert os.path.exists(os.path.join(data, "pingvas.db"))
        assert os.path.isdir(os.path.join(data, "images"))


if __name__ == "__main__":
    pv.main([test_submit_wait_fetch_png, test_restart_keeps_demo_and_secrets,
             test_default_data_directory])
