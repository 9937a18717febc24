"""Worker protocol, one request per job (issue 12, item 3; docs/protocol.md): complete-and-claim
(a complete with "next" answers the worker's next job, claimed in the completing transaction),
and the image carried in the complete itself (Content-Type: image/png, the report in the
X-Pingvas-Report header). Raw protocol calls where the answer is the point, the real worker
where its loop is."""
import json
import signal
import threading
import urllib.parse

import pv
from test_security import PNG, claim, keys_of, op, raw_request, stored_keys, upload

LONG_JOB = {"prompt": "a long job", "steps": 150}  # ~2 s at --time-scale 0.1 (test_lifecycle)


def next_of(wid="raw", wait_ms=0):
    return {"worker_id": wid, "tier": "standard", "wait_ms": wait_ms}


def complete_with_image(env, c, png=PNG, report=None, **kw):
    """The complete that carries its PNG; report defaults to the lease and 1 GPU-second."""
    rep = report if report is not None else {"lease_id": c["lease_id"], "gpu_seconds": 1.0}
    rep.update(kw)
    return pv.http("POST", f"{env.url}/internal/v1/jobs/{c['job']['id']}/complete", png,
                   token=pv.WORKER_TOKEN, raw=True,
                   headers={"Content-Type": "image/png", "X-Pingvas-Report": json.dumps(rep)})


def charges(env, tok):
    led = env.api("GET", "/api/v1/credits", token=tok).json()["ledger"]
    return sorted(e["job_id"] for e in led if e["kind"] == "charge")


def test_complete_and_claim(env):
    """A complete with "next" answers the completed job and the next job's claim answer (its own
    lease, where its image goes), one charge each; the last one answers "next": null; a replay
    of a complete is still answered 200."""
    env.start_server()
    tok = env.add_user("alice")
    ids = [env.create(tok, {"prompt": f"job {i}", "steps": 2}).json()["id"] for i in range(3)]
    c = claim(env)
    assert c["job"]["id"] == ids[0]
    for i in range(3):
        upload(env, c)
        r = op(env, c, "complete", gpu_seconds=1.0, next=next_of())
        assert r.status == 200, r
        a = r.json()
        assert a["id"] == ids[i] and a["status"] == "completed" and a["credits_charged"] >= 1, a
        assert env.job(tok, ids[i])["status"] == "completed"
        if i == 2:
            assert a["next"] is None, a
            break
        n = a["next"]
        assert n["job"]["id"] == ids[i + 1] and n["lease_id"] and n["lease_ms"] > 0, n
        assert n["upload"]["url"] and n["upload"]["method"] in ("PUT", "POST"), n
        j = env.job(tok, ids[i + 1])
        assert j["status"] == "in_progress" and j["attempts"] == 1, j
        c = n
    assert charges(env, tok) == sorted(ids)
    # A replay of the last complete changes nothing and claims nothing new.
    extra = env.create(tok, {"prompt": "extra", "steps": 2}).json()["id"]
    r = op(env, c, "complete", gpu_seconds=1.0)
    assert r.status == 200 and "next" not in r.json(), r
    assert env.job(tok, extra)["status"] == "queued"
    assert charges(env, tok) == sorted(ids)
    # Without "next" the answer is the completed job, as it always was; a claim still works.
    assert claim(env)["job"]["id"] == extra


def test_refused_complete_claims_nothing(env):
    """A complete refused with 409 (a lease that is not the job's, a canceled job) or 400 claims
    no job, whatever its "next" asks."""
    env.start_server()
    tok = env.add_user("bob")
    a = env.create(tok, {"prompt": "a", "steps": 2}).json()["id"]
    c = claim(env)
    assert c["job"]["id"] == a
    b = env.create(tok, {"prompt": "b", "steps": 2}).json()["id"]
    upload(env, c)
    forged = dict(c, lease_id="0" * 32)
    r = op(env, forged, "complete", gpu_seconds=1.0, next=next_of())
    assert r.status == 409 and r.json()["error"]["code"] == "lease_lost", r
    r = op(env, c, "complete", gpu_seconds=1.0, next={"worker_id": "raw", "tier": "gold"})
    assert r.status == 400 and r.json()["error"]["field"] == "next", r
    assert env.job(tok, b)["status"] == "queued"
    r = env.api("POST", f"/api/v1/generation/{a}/cancel", token=tok)
    assert r.status == 200, r
    r = op(env, c, "complete", gpu_seconds=1.0, next=next_of())
    assert r.status == 409, r  # "image_missing": the cancel deleted the image
    r = complete_with_image(env, c, next=next_of())
    assert r.status == 409 and r.json()["error"]["code"] == "canceled", r
    j = env.job(tok, b)
    assert j["status"] == "queued" and j["attempts"] == 0, j
    assert charges(env, tok) == []


def test_complete_next_waits_for_work(env):
    """With wait_ms > 0 and nothing queued, the answer of a complete-and-claim waits (parked,
    like a long-poll claim) and carries the job that arrives; at the deadline it carries null."""
    env.start_server()
    tok = env.add_user("carol")
    a = env.create(tok, {"prompt": "a", "steps": 2}).json()["id"]
    c = claim(env)
    upload(env, c)
    got = {}
    t = threading.Thread(target=lambda: got.update(
        r=op(env, c, "complete", gpu_seconds=1.0, next=next_of(wait_ms=30000))))
    t.start()
    pv.wait_for(lambda: env.job(tok, a)["status"] == "completed", what="the completion")
    b = env.create(tok, {"prompt": "b", "steps": 2}).json()["id"]
    t.join(60)
    r = got["r"]
    assert r.status == 200 and r.json()["id"] == a and r.json()["next"]["job"]["id"] == b, r
    c = r.json()["next"]
    upload(env, c)
    r = op(env, c, "complete", gpu_seconds=1.0, next=next_of(wait_ms=300))
    assert r.status == 200 and r.json()["id"] == b and r.json()["next"] is None, r


def test_image_in_complete(env):
    """The PNG in the complete: stored for the current lease holder only, revealed by the
    charging transaction, served; not a PNG 422; no report header 400; a refused complete stores
    nothing; a body over 64 MiB is refused on its headers (413), before it is sent."""
    env.start_server()
    tok = env.add_user("dave")
    a = env.create(tok, {"prompt": "a", "steps": 2}).json()["id"]
    b = env.create(tok, {"prompt": "b", "steps": 2}).json()["id"]
    c = claim(env)
    assert c["job"]["id"] == a
    assert complete_with_image(env, c, b"GIF89a not a png").status == 422
    r = pv.http("POST", f"{env.url}/internal/v1/jobs/{a}/complete", PNG, token=pv.WORKER_TOKEN,
                raw=True, headers={"Content-Type": "image/png"})
    assert r.status == 400, r
    forged = dict(c, lease_id="f" * 32)
    r = complete_with_image(env, forged)
    assert r.status == 409 and not keys_of(env, a), (r, stored_keys(env))
    assert env.job(tok, a)["image_url"] is None
    r = complete_with_image(env, c, next=next_of())
    assert r.status == 200 and r.json()["status"] == "completed", r
    assert r.json()["next"]["job"]["id"] == b, r
    j = env.job(tok, a)
    [key] = keys_of(env, a)
    assert urllib.parse.urlsplit(j["image_url"]).path.endswith(key), (j, key)
    got = pv.http("GET", j["image_url"])
    assert got.status == 200 and got.body == PNG, got
    assert complete_with_image(env, c).status == 200  # a replay changes nothing
    assert keys_of(env, a) == [key]
    c = r.json()["next"]
    head = (f"POST /internal/v1/jobs/{b}/complete HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {65 * 1024 * 1024}\r\nContent-Type: image/png\r\n"
            f"X-Pingvas-Report: {json.dumps({'lease_id': c['lease_id'], 'gpu_seconds': 1})}\r\n"
            f"Authorization: Bearer {pv.WORKER_TOKEN}\r\n\r\n")
    assert raw_request(env, head).startswith(b"HTTP/1.1 413")
    # A JSON complete keeps its 16 KiB cap.
    r = env.api("POST", f"/internal/v1/jobs/{b}/complete", {"lease_id": "x" * 20000},
                token=pv.WORKER_TOKEN)
    assert r.status == 413, r
    assert env.job(tok, b)["status"] == "in_progress" and not keys_of(env, b)


def test_worker_one_request_per_job(env):
    """The real worker chains jobs through complete-and-claim: every job completes and is charged
    once, and most of them came in the answer of the previous complete."""
    env.start_server()
    tok = env.add_user("erin")
    ids = [env.create(tok, {"prompt": f"j{i}", "steps": 1}).json()["id"] for i in range(12)]
    w = env.start_worker("--time-scale", "0", "--log-level", "info")
    for jid in ids:
        env.wait_status(tok, jid, "completed", timeout=60)
    assert charges(env, tok) == sorted(ids)
    def done_lines():
        lines = [ln for ln in env.log(w.logname).splitlines() if "event=job_done" in ln]
        return lines if len(lines) == 12 else None
    done = pv.wait_for(done_lines, what="the worker's 12 job_done lines")
    chained = [ln for ln in done if "next=-" not in ln]
    assert len(done) == 12 and len(chained) >= 10, done
    assert all(env.job(tok, j)["attempts"] == 1 for j in ids)
    assert env.stop(w) == 0


def test_draining_worker_gets_no_next_job(env):
    """A worker that is stopping (SIGTERM), retiring (SIGUSR1) or at its last job (--max-jobs)
    completes its job without asking for the next: the queued job stays queued, untouched."""
    env.start_server()
    tok = env.add_user("frank")
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        a = env.create(tok, LONG_JOB).json()["id"]
        w = env.start_worker("--time-scale", "0.1", "--drain-timeout", "60s",
                             "--log-level", "info", name=f"w{sig.name}")
        env.wait_status(tok, a, "in_progress")
        b = env.create(tok, {"prompt": "stays queued", "steps": 1}).json()["id"]
        w.send_signal(sig)
        assert w.wait(timeout=60) == 0
        assert env.job(tok, a)["status"] == "completed"
        j = env.job(tok, b)
        assert j["status"] == "queued" and j["attempts"] == 0, (sig, j)
        assert "next=-" in env.log(w.logname), env.log(w.logname)
        env.api("POST", f"/api/v1/generation/{b}/cancel", token=tok)
    a = env.create(tok, {"prompt": "one", "steps": 1}).json()["id"]
    b = env.create(tok, {"prompt": "two", "steps": 1}).json()["id"]
    w = env.start_worker("--time-scale", "0", "--max-jobs", "1", name="wmax")
    assert w.wait(timeout=60) == 0
    assert env.job(tok, a)["status"] == "completed"
    j = env.job(tok, b)
    assert j["status"] == "queued" and j["attempts"] == 0, j


def test_bye_releases_unread_claims(env):
    """A worker that says bye holds no job. A job still leased to it is one whose claim answer it
    never read (SIGTERM made it give up the claim request as the server claimed): the bye gives
    that job back to the front of the queue as a release (no attempt lost), not when its lease
    expires. Another worker's job, and a lease the worker no longer holds, are left alone."""
    env.start_server()
    tok = env.add_user("gina")
    ids = [env.create(tok, {"prompt": f"job {i}", "steps": 2}).json()["id"] for i in range(2)]
    mine = claim(env)  # worker "raw": the answer a stopping worker would never read
    other = env.api("POST", "/internal/v1/claim", {"worker_id": "other", "tier": "standard",
                                                   "wait_ms": 5000}, token=pv.WORKER_TOKEN).json()
    assert [mine["job"]["id"], other["job"]["id"]] == ids
    before = pv.metric(env.url, "pingvas_jobs_released_total")
    r = env.api("POST", "/internal/v1/bye", {"worker_id": "raw"}, token=pv.WORKER_TOKEN)
    assert r.status == 200, r
    j = env.job(tok, ids[0])
    assert j["status"] == "queued" and j["attempts"] == 0 and j["releases"] == 1, j
    assert env.job(tok, ids[1])["status"] == "in_progress"
    assert pv.metric(env.url, "pingvas_jobs_released_total") == before + 1
    assert "reason=worker_bye" in env.log("server.log")
    # the old lease is gone: its complete is refused; a new claim runs the job to the end
    assert op(env, mine, "complete", gpu_seconds=1.0).status == 409
    again = claim(env)
    assert again["job"]["id"] == ids[0] and again["lease_id"] != mine["lease_id"]
    upload(env, again)
    assert op(env, again, "complete", gpu_seconds=1.0).status == 200
    assert charges(env, tok) == [ids[0]]
    # a second bye finds nothing of "raw" and leaves "other"'s job running
    env.api("POST", "/internal/v1/bye", {"worker_id": "raw"}, token=pv.WORKER_TOKEN)
    assert env.job(tok, ids[1])["status"] == "in_progress"


if __name__ == "__main__":
    pv.main([test_complete_and_claim, test_refused_complete_claims_nothing,
             test_complete_next_waits_for_work, test_image_in_complete,
             test_worker_one_request_per_job, test_draining_worker_gets_no_next_job,
             test_bye_releases_unread_claims])
