"""The Celery bridge driven by the seed's real Celery: Debian 12's python3-celery (5.2, kombu 5.2,
redis-py 4.3; scripts/deps.sh --test installs them) as the producer and result reader, the real
`pingvas` binary as the worker side.

The app is configured as the seed's (`Celery(name, broker=REDIS_URL, backend=REDIS_URL)`, JSON,
message protocol 2, the default queue `celery`); the seed's API inserts a `generation_jobs` row
and sends `tasks.generate_image(job_id)`. Checked as a Celery user checks it: `AsyncResult.get()`
returns the seed task's return value, failures raise the exception Celery stored, a canceled job
is REVOKED, the task id chosen by the producer is the one answered. Each test takes its own Redis
database (test_celery.take_db); both stacks, as every integration test.

python3-celery lives in /usr/lib/python3/dist-packages, which only Debian's /usr/bin/python3
sees: when the interpreter running this file is another one (a pyenv or venv python3 first on
PATH), the file runs itself again under /usr/bin/python3."""
import datetime
import os
import subprocess
import sys
import uuid

try:
    import celery
except ImportError:
    if os.path.exists("/usr/bin/python3") and not os.environ.get("PINGVAS_CELERY_REEXEC"):
        os.environ["PINGVAS_CELERY_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("python3-celery is not installed: run scripts/deps.sh --test", file=sys.stderr)
    print("0 passed, 1 failed")
    sys.exit(1)

import celery.exceptions  # noqa: E402
from celery.result import AsyncResult  # noqa: E402

import pv  # noqa: E402
from test_celery import WORKER, assert_drained, insert_seed_row, main, start, take_db  # noqa: E402
from test_faults_clock import set_step  # noqa: E402
from test_protocol import complete_with_image  # noqa: E402
from test_security import claim, op  # noqa: E402

TASK = "tasks.generate_image"


def seed_app(env, url):
    """The producer as the seed configures it: broker and result backend on the same Redis."""
    app = celery.Celery("pingvas-api", broker=url, backend=url)
    app.conf.broker_connection_retry_on_startup = False
    env.cleanups.append(app.close)
    return app


def seed_task(app):
    """The seed's task as the API imports it (`generate_image.delay(job_id)`): only its name and
    signature matter to the producer; pingvas runs it."""
    @app.task(bind=True, name=TASK)
    def generate_image(self, job_id: str):
        raise AssertionError("the producer never runs the task")
    return generate_image


def raises(res, exc_type, timeout=60):
    """The exception AsyncResult.get() raises (it must raise exc_type)."""
    try:
        value = res.get(timeout=timeout)
    except exc_type as e:
        return e
    raise AssertionError(f"get() returned {value!r}, expected {exc_type.__name__}")


def adopted(env, tok, *jids):
    """Waits until the bridge adopted the rows (until then a seed row has no tier and no
    created_at; on PostgreSQL its 'pending' already reads as queued)."""
    for jid in jids:
        pv.wait_for(lambda: (lambda j: j.get("status") == "queued" and j.get("tier") and
                             j.get("created_at"))(env.job(tok, jid)), what=f"row {jid} adopted")


def check_success(env, tok, res, jid):
    out = res.get(timeout=60)
    assert out["success"] is True and set(out) == {"success", "image_url"}, out
    assert res.state == "SUCCESS" and res.successful() and res.ready(), res.state
    assert res.traceback is None and res.date_done.tzinfo is not None  # parsed by Celery
    j = env.job(tok, jid)
    assert j["status"] == "completed", j
    # (on S3 the URL is presigned per request: the same object, maybe another signature)
    assert out["image_url"].split("?", 1)[0] == j["image_url"].split("?", 1)[0], (out, j)
    img = pv.image_bytes(env, tok, out["image_url"])
    assert pv.png_size(img) == (j["width"], j["height"]), j
    return out


def test_send_task_delay_apply_async_get(env):
    """The three ways a producer sends the seed's task, each answered on its own task id."""
    r, url = take_db(env)
    tok = start(env)
    app = seed_app(env, url)
    gen = seed_task(app)
    jids = [insert_seed_row(env, "alice", prompt=f"python celery {i}") for i in range(4)]
    # Task ids chosen by the producer, unique per run: Celery's Redis result backend announces
    # results on pub/sub channels named by task id, and pub/sub spans Redis's databases, so the
    # two stacks' runs of this test (in parallel, each on its own database) must not share ids.
    chosen = [f"seed-chosen-task-id-{uuid.uuid4()}" for _ in range(2)]
    sent = [
        app.send_task(TASK, args=[jids[0]]),
        gen.delay(jids[1]),
        gen.apply_async(kwargs={"job_id": jids[2]}, task_id=chosen[0]),
        app.send_task(TASK, args=(jids[3],), task_id=chosen[1]),
    ]
    assert sent[2].id == chosen[0]
    for res, jid in zip(sent, jids):
        assert res.id != jid
        check_success(env, tok, res, jid)
    # Another process (a new app, as the seed's API answering a status request) reads the same.
    other = seed_app(env, url)
    again = other.AsyncResult(chosen[1])
    assert again.state == "SUCCESS" and again.get(timeout=10)["success"] is True
    assert again.result == sent[3].result
    assert_drained(r)
    assert r.cmd("HLEN", "pingvas-celery-tasks") == 0


def test_task_protocol_1(env):
    """An app configured with Celery's older message protocol (task_protocol = 1)."""
    r, url = take_db(env)
    tok = start(env)
    app = seed_app(env, url)
    app.conf.task_protocol = 1
    jid = insert_seed_row(env, "alice")
    check_success(env, tok, app.send_task(TASK, args=[jid]), jid)
    assert_drained(r)


CONSUME_AND_DIE = """
import os, sys, kombu
conn = kombu.Connection(sys.argv[1])
m = conn.SimpleQueue("celery").get(timeout=30)  # recorded in kombu's unacked, not acked
print(m.headers["id"], flush=True)
os._exit(0)  # a Celery worker killed mid-task
"""


def test_message_left_unacked_by_a_killed_kombu_consumer(env):
    """A Celery worker (kombu 5.2's Redis transport) took the message and died without acking:
    the bridge restores it from kombu's unacked after the visibility timeout and runs it."""
    r, url = take_db(env)
    vis = ["--celery-visibility-timeout", "1s"]
    tok = start(env, *vis, worker=False)  # creates the schema and the user
    env.stop(env.server)
    app = seed_app(env, url)
    jid = insert_seed_row(env, "alice")
    res = app.send_task(TASK, args=[jid])
    p = subprocess.run([sys.executable, "-c", CONSUME_AND_DIE, url], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == res.id, (p.stdout, p.stderr)
    assert r.cmd("LLEN", "celery") == 0 and r.cmd("HLEN", "unacked") == 1
    env.start_server(*vis)
    env.start_worker(*WORKER)
    check_success(env, tok, res, jid)
    assert "event=celery_restored" in env.log("server.log")
    assert_drained(r)


def test_expires(env):
    """apply_async(expires=...): a task already expired when it comes is discarded as REVOKED
    ("expired"), as a Celery worker does, and its row is not adopted; one that expires later
    runs."""
    r, url = take_db(env)
    tok = start(env)
    app = seed_app(env, url)
    gen = seed_task(app)
    old, fresh = insert_seed_row(env, "alice"), insert_seed_row(env, "alice")
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    res = gen.apply_async((old,), expires=past)
    e = raises(res, celery.exceptions.TaskRevokedError)
    assert str(e) == "expired" and res.state == "REVOKED", e
    check_success(env, tok, gen.apply_async((fresh,), expires=3600), fresh)
    assert not env.job(tok, old).get("created_at")  # never adopted
    pv.wait_for(lambda: f"event=celery_discarded_expired job_id={old}" in env.log("server.log"),
                what="the discard logged")
    assert_drained(r)


def steered(env):
    """The servers' wall clock steered by the test (the clock module's step file, re-read every
    20 ms): returns a function that sets it ms ahead of real time. The producer's clock is real,
    so a countdown of 60 s comes due when the step passes 60 s."""
    path = os.path.join(env.dir, "clock_step")
    set_step(path, 0)
    env.extra_env["PINGVAS_TEST_CLOCK_STEP_FILE"] = path
    return lambda ms: set_step(path, ms)


def held(env, jid, times=1):
    """Waits until the server logged holding jid's task for its eta `times` times in all."""
    pv.wait_for(lambda: env.log("server.log").count(f"event=celery_eta_held job_id={jid} ")
                >= times, what=f"the task of {jid} held ({times})")


def waiting(env, tok, res, jid):
    """The task has not run: Celery says PENDING and the row was not adopted (no job started)."""
    assert res.state == "PENDING", res.state
    j = env.job(tok, jid)
    assert not j.get("created_at") and j.get("status") in ("queued", "pending"), j


def eta_setup(env):
    """A steered server with a worker, the seed's task, and two seed rows."""
    r, url = take_db(env)
    step = steered(env)
    tok = start(env)
    gen = seed_task(seed_app(env, url))
    return r, step, tok, gen, (insert_seed_row(env, "alice"), insert_seed_row(env, "alice"))


def test_countdown_and_eta(env):
    """apply_async(countdown=...) and apply_async(eta=...): the task waits, as on a Celery worker
    (its message unacked, its row not adopted, nothing runs) until the server's clock passes its
    eta; then it runs. The clock is steered, never slept on."""
    r, step, tok, gen, (soon, later) = eta_setup(env)
    now = datetime.datetime.now(datetime.timezone.utc)
    rs = gen.apply_async((soon,), countdown=60)
    rl = gen.apply_async((later,), eta=now + datetime.timedelta(seconds=300))
    held(env, soon)
    held(env, later)
    waiting(env, tok, rs, soon)
    waiting(env, tok, rl, later)
    assert r.cmd("LLEN", "celery") == 0 and r.cmd("HLEN", "unacked") == 2
    step(90_000)
    check_success(env, tok, rs, soon)
    waiting(env, tok, rl, later)
    step(330_000)
    check_success(env, tok, rl, later)
    assert_drained(r)


def test_eta_task_across_restarts(env):
    """A task waiting for its eta survives a kill -9 of the server (its message stays in kombu's
    unacked and comes back after the visibility timeout) and a clean stop (it goes back on its
    list at once, as a stopping Celery worker restores its unacked messages); it runs neither
    early nor twice, and while held it is not redelivered although the visibility timeout is 1 s
    (the bridge keeps its delivery time fresh)."""
    r, url = take_db(env)
    step = steered(env)
    vis = ["--celery-visibility-timeout", "1s"]
    tok = start(env, *vis, worker=False)
    app = seed_app(env, url)
    jid = insert_seed_row(env, "alice")
    res = seed_task(app).apply_async((jid,), countdown=120)
    held(env, jid)
    env.kill9(env.server)
    assert r.cmd("HLEN", "unacked") == 1 and r.cmd("LLEN", "celery") == 0  # not lost
    env.start_server(*vis)
    held(env, jid, 2)  # restored after the visibility timeout, held again
    waiting(env, tok, res, jid)
    assert env.stop(env.server) == 0
    assert "event=celery_eta_released tasks=1 restored=1" in env.log("server.log")
    assert r.cmd("LLEN", "celery") == 1 and r.cmd("HLEN", "unacked") == 0
    env.start_server(*vis)
    env.start_worker(*WORKER)
    held(env, jid, 3)
    waiting(env, tok, res, jid)
    step(150_000)
    check_success(env, tok, res, jid)
    assert env.log("server.log").count(f"event=celery_eta_held job_id={jid} ") == 3
    assert_drained(r)


def test_expires_or_revoke_before_eta(env):
    """An expires that passes while the task waits for its eta: REVOKED ("expired"), its row never
    adopted. A task revoked while it waits for its eta: REVOKED at once."""
    r, step, tok, gen, (exp, rev) = eta_setup(env)
    re_ = gen.apply_async((exp,), countdown=120, expires=60)
    rr = gen.apply_async((rev,), countdown=120)
    held(env, exp)
    held(env, rev)
    rr.revoke()
    e = raises(rr, celery.exceptions.TaskRevokedError)
    assert str(e) == "revoked" and rr.state == "REVOKED", e
    pv.wait_for(lambda: f"event=celery_revoke task_id={rr.id} job_id={rev} terminate=0 "
                "outcome=discarded_before_eta" in env.log("server.log"), what="the revoke logged")
    waiting(env, tok, re_, exp)
    step(90_000)
    e = raises(re_, celery.exceptions.TaskRevokedError)
    assert str(e) == "expired" and re_.state == "REVOKED", e
    assert f"event=celery_discarded_expired job_id={exp}" in env.log("server.log")
    for jid in (exp, rev):
        assert not env.job(tok, jid).get("created_at")  # never adopted
    assert env.api("GET", "/api/v1/credits", token=tok).json()["reserved"] == 0
    assert_drained(r)


def test_group_and_custom_queue_priorities(env):
    """A group of the seed's task on a named queue at every kombu priority step: all run, and
    GroupResult.get() gives the results in order."""
    r, url = take_db(env)
    tok = start(env, "--celery-queue", "gpu")
    app = seed_app(env, url)
    gen = seed_task(app)
    jids = [insert_seed_row(env, "alice", prompt=f"group {i}") for i in range(4)]
    sigs = [gen.signature((jid,), queue="gpu", priority=p) for jid, p in zip(jids, (0, 3, 6, 9))]
    g = celery.group(sigs).apply_async()
    out = g.get(timeout=60)
    assert [o["success"] for o in out] == [True] * 4, out
    for res, jid in zip(g.results, jids):
        check_success(env, tok, res, jid)
    assert g.successful() and g.completed_count() == 4
    assert_drained(r, "gpu")


def test_failures_are_celery_failures(env):
    """A row that does not exist, a task pingvas does not run, bad arguments, and a job whose
    engine failed: get() raises what a Celery worker would have stored."""
    r, url = take_db(env)
    tok = start(env, worker=False)
    app = seed_app(env, url)
    gen = seed_task(app)
    missing = "no-such-job-0001"
    e = raises(app.send_task(TASK, args=[missing]), ValueError)
    assert str(e) == f"Job {missing} not found", e
    res = app.send_task("tasks.other", args=["x"])
    e = raises(res, celery.exceptions.NotRegistered)
    assert res.state == "FAILURE" and res.failed()
    assert res.traceback.startswith("Traceback (most recent call last):"), res.traceback
    e = raises(app.send_task(TASK, args=[]), TypeError)
    assert "missing 1 required positional argument: 'job_id'" in str(e), e
    # propagate=False gives the exception instead of raising it
    res = gen.apply_async(args=[42])
    got = res.get(timeout=60, propagate=False)
    assert isinstance(got, ValueError) and res.state == "FAILURE", got
    # The engine fails the job (reported through the worker protocol, not retryable).
    jid = insert_seed_row(env, "alice")
    res = gen.delay(jid)
    adopted(env, tok, jid)
    c = claim(env)
    assert c["job"]["id"] == jid, c
    assert op(env, c, "fail", error="CUDA out of memory", retryable=False).status == 200
    e = raises(res, RuntimeError)
    assert str(e) == "CUDA out of memory" and res.state == "FAILURE", e
    assert env.job(tok, jid)["status"] == "failed"
    assert_drained(r)


def test_cancel_is_revoked(env):
    """A job canceled through the pingvas API is REVOKED for Celery (TaskRevokedError)."""
    r, url = take_db(env)
    tok = start(env, worker=False)
    app = seed_app(env, url)
    jid = insert_seed_row(env, "alice")
    res = app.send_task(TASK, args=[jid])
    adopted(env, tok, jid)
    assert res.state == "PENDING"
    c = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert c.status == 200 and c.json()["status"] == "canceled", c
    raises(res, celery.exceptions.TaskRevokedError)
    assert res.state == "REVOKED"
    assert env.api("GET", "/api/v1/credits", token=tok).json()["reserved"] == 0


def claim_as(env, wid):
    r = env.api("POST", "/internal/v1/claim", {"worker_id": wid, "tier": "standard",
                                               "wait_ms": 5000}, token=pv.WORKER_TOKEN)
    assert r.status == 200, r
    return r.json()


@pv.clean_exit  # the server exits 0 (under ASan: no leak in the revoke paths)
def test_revoke_as_a_celery_worker_would(env):
    """AsyncResult.revoke() and app.control.revoke() (kombu's pidbox broadcast): a job not started
    is canceled and REVOKED; a running one keeps running unless terminate=True; a task revoked
    before its message came is discarded as REVOKED and its row left alone; GroupResult.revoke()
    revokes every task of the group."""
    r, url = take_db(env)
    tok = start(env, worker=False)
    app = seed_app(env, url)
    gen = seed_task(app)
    run_a, run_b, queued = (insert_seed_row(env, "alice", prompt=f"revoke {i}") for i in range(3))
    ra, rb = gen.delay(run_a), gen.delay(run_b)
    adopted(env, tok, run_a, run_b)
    leases = {c["job"]["id"]: c for c in (claim_as(env, "gpu-a"), claim_as(env, "gpu-b"))}
    assert set(leases) == {run_a, run_b}, leases
    rq = gen.delay(queued)
    adopted(env, tok, queued)
    rq.revoke()
    raises(rq, celery.exceptions.TaskRevokedError)
    assert rq.state == "REVOKED" and env.job(tok, queued)["status"] == "canceled"
    ra.revoke()  # running, not terminated: it runs to the end, as on a Celery worker
    rb.revoke(terminate=True, signal="SIGKILL")
    raises(rb, celery.exceptions.TaskRevokedError)
    assert env.job(tok, run_b)["status"] == "canceled"
    # The revokes are handled in the order sent, so a's was handled before b's: a still runs.
    assert env.job(tok, run_a)["status"] == "in_progress"
    pv.wait_for(lambda: f"event=celery_revoke task_id={ra.id} job_id={run_a} terminate=0 "
                "outcome=left_running_or_ended" in env.log("server.log"), what="a's revoke logged")
    assert op(env, leases[run_b], "heartbeat").status == 409  # the worker is told to stop
    assert complete_with_image(env, leases[run_a]).status == 200
    assert ra.get(timeout=60)["success"] is True and ra.state == "SUCCESS"
    # Revoked first, sent afterwards (a Celery worker keeps the ids it was told to revoke).
    late = insert_seed_row(env, "alice", prompt="revoked before it was sent")
    tid = f"revoked-before-it-was-sent-{uuid.uuid4()}"
    app.control.revoke(tid)
    pv.wait_for(lambda: f"event=celery_revoke task_id={tid} job_id=- terminate=0 "
                "outcome=not_adopted" in env.log("server.log"), what="the revoke handled")
    res = gen.apply_async((late,), task_id=tid)
    raises(res, celery.exceptions.TaskRevokedError)
    pv.wait_for(lambda: f"event=celery_discarded_revoked job_id={late} task_id={tid}"
                in env.log("server.log"), what="the discard logged")
    q = env.api("GET", "/api/v1/queue", token=tok).json()  # the row was not adopted
    assert q["tiers"]["standard"]["queued"] == 0 and not env.job(tok, late).get("created_at"), q
    # A group revoked at once (one broadcast with the list of ids).
    jids = [insert_seed_row(env, "alice", prompt=f"group revoke {i}") for i in range(3)]
    g = celery.group(gen.s(j) for j in jids).apply_async()
    adopted(env, tok, *jids)
    g.revoke()
    for res, jid in zip(g.results, jids):
        raises(res, celery.exceptions.TaskRevokedError)
        assert env.job(tok, jid)["status"] == "canceled"
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    assert c["reserved"] == 0 and [e["job_id"] for e in c["ledger"] if e["kind"] == "charge"] == [
        run_a], c
    assert_drained(r)
    assert r.cmd("HLEN", "pingvas-celery-tasks") == 0


if __name__ == "__main__":
    main([test_send_task_delay_apply_async_get, test_task_protocol_1,
          test_message_left_unacked_by_a_killed_kombu_consumer, test_expires,
          test_group_and_custom_queue_priorities,
          test_failures_are_celery_failures, test_cancel_is_revoked,
          test_revoke_as_a_celery_worker_would, test_countdown_and_eta,
          test_eta_task_across_restarts, test_expires_or_revoke_before_eta])
