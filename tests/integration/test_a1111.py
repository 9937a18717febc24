"""The a1111 backend against a fake AUTOMATIC1111 server (tests/peers/a1111/fake_a1111.py, run
in-process on 127.0.0.1:0): the job gets the server's image, the request carries the job's
parameters, a cancel reaches /sdapi/v1/interrupt, server errors fail the attempt with the
server's message, and a worker that cannot reach (or does not recognise) the server exits
non-zero with a clear message. Uses only the public API, so it also runs with
PINGVAS_TEST_STACK=production."""
import math
import os
import sys

import pv

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "peers", "a1111"))
import fake_a1111  # noqa: E402

FAST = ["--lease", "1s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]


def fake(env, **kw):
    return pv.start_peer(env, fake_a1111.FakeA1111(**kw))


def a1111_worker(env, url, *args):
    return env.start_worker("--backend", "a1111", "--a1111-url", url, *args)


@pv.clean_exit
def test_job_gets_server_image_and_parameters(env):
    png = fake_a1111.make_png(16, 8, (10, 120, 250))
    f = fake(env, delay=0.3, png=png)
    env.start_server(*FAST)
    tok = env.add_user("a1")
    a1111_worker(env, f.url)
    body = {"prompt": "a red fox in snow", "negative_prompt": "blurry, text", "width": 576,
            "height": 448, "steps": 12, "cfg_scale": 5.5, "seed": 4294967295, "model": "sdxl"}
    jid = env.create(tok, body).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "completed", j
    assert pv.image_bytes(env, tok, j["image_url"]) == png
    assert len(f.txt2img) == 1, f.txt2img
    req = f.txt2img[0]
    for k in ("prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "seed"):
        assert req[k] == body[k], (k, req)
    assert req["batch_size"] == 1 and req["n_iter"] == 1, req
    # "sdxl" is not in any title; "sd15" neither: the model rule sends no override then.
    assert "override_settings" not in req, req
    # gpu_seconds is the measured request time: at least the fake's delay.
    assert j["gpu_seconds"] >= 0.3, j
    assert ("GET", "/sdapi/v1/sd-models", None) in f.requests


@pv.clean_exit
def test_model_name_maps_to_checkpoint(env):
    f = fake(env, models=[{"title": "other.ckpt [1]", "model_name": "other"},
                          {"title": "my-SD15-finetune.safetensors [abc]",
                           "model_name": "my-SD15-finetune"}])
    env.start_server(*FAST)
    tok = env.add_user("a2")
    a1111_worker(env, f.url)
    jid = env.create(tok, {"prompt": "x", "model": "sd15", "steps": 2}).json()["id"]
    assert env.wait_status(tok, jid, ("completed", "failed"))["status"] == "completed"
    assert f.txt2img[0]["override_settings"] == {
        "sd_model_checkpoint": "my-SD15-finetune.safetensors [abc]"}, f.txt2img[0]


@pv.clean_exit
def test_cancel_interrupts_server(env):
    f = fake(env, delay=60)
    env.start_server(*FAST)
    tok = env.add_user("a3")
    w = a1111_worker(env, f.url)
    jid = env.create(tok, {"prompt": "a long one", "steps": 50}).json()["id"]
    env.wait_status(tok, jid, "in_progress")
    pv.wait_for(lambda: len(f.txt2img) == 1, timeout=20, what="txt2img to reach the fake")
    r = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert r.status == 200 and r.json()["status"] == "canceled"
    pv.wait_for(lambda: f.interrupts >= 1, timeout=20, what="the worker to POST /interrupt")
    pv.wait_for(lambda: "job_abandoned" in env.log("worker-w0.log"), timeout=20,
                what="worker to drop the canceled job")
    j = env.job(tok, jid)
    assert j["status"] == "canceled" and j["credits_charged"] == 0 and not j["image_url"], j
    assert pv.charges_for(env, tok, jid) == []
    # The worker is free again: the next job completes.
    f.delay = 0
    j2 = env.create(tok, {"prompt": "next", "steps": 1}).json()["id"]
    assert env.wait_status(tok, j2, ("completed", "failed"), timeout=30)["status"] == "completed"
    assert w.poll() is None


@pv.clean_exit
def test_server_error_fails_attempts(env):
    f = fake(env)
    f.fail_status = 500
    env.start_server(*FAST, "--max-attempts", "2")
    tok = env.add_user("a4")
    a1111_worker(env, f.url)
    jid = env.create(tok, {"prompt": "doomed", "steps": 3}).json()["id"]
    j = env.wait_status(tok, jid, "failed", timeout=60)
    assert len(f.txt2img) == 2, len(f.txt2img)  # retried once: back in the queue after the first
    assert j["attempts"] == 2 and j["credits_charged"] == 0, j
    msg = j["error_message"] or ""
    assert "500" in msg and "CUDA out of memory (fake)" in msg, msg
    assert pv.charges_for(env, tok, jid) == []


def test_unreachable_url_exits_nonzero(env):
    env.start_server(*FAST)
    url = pv.free_port_url()
    w = a1111_worker(env, url)
    rc = w.wait(timeout=60)
    assert rc == 2, rc
    log = env.log("worker-w0.log")
    assert url in log and "not reachable" in log, log


def test_not_an_a1111_server_exits_nonzero(env):
    env.start_server(*FAST)
    w = a1111_worker(env, env.url)  # pingvas itself: no /sdapi/v1/sd-models
    rc = w.wait(timeout=30)
    assert rc != 0, rc
    log = env.log("worker-w0.log")
    assert env.url in log and "not an A1111-compatible server" in log and "404" in log, log


@pv.clean_exit
def test_progress_while_txt2img_runs(env):
    f = fake(env, delay=0.2, pause_at=5)  # holds the run at step 5 until the test has seen it
    env.start_server("--lease", "2s", "--heartbeat", "100ms", "--reaper-interval", "100ms")
    tok = env.add_user("a5")
    a1111_worker(env, f.url)
    jid = env.create(tok, {"prompt": "slow", "steps": 10}).json()["id"]
    pv.wait_for(lambda: (env.job(tok, jid).get("progress") or {}).get("step") == 5, timeout=60,
                what="progress step 5 of 10 while txt2img runs")
    f.resume.set()
    j, seen = pv.watch_progress(env, tok, jid)
    assert j["status"] == "completed", j
    assert all(p["steps"] == 10 for p in seen), seen
    assert j["gpu_seconds"] > 0 and j["credits_charged"] == math.ceil(j["gpu_seconds"]), j
    assert f.violations == [], f.violations


@pv.clean_exit
def test_hung_server_fails_at_deadline(env):
    f = fake(env)
    f.hang = True
    env.start_server(*FAST, "--max-attempts", "1")
    tok = env.add_user("a6")
    a1111_worker(env, f.url, "--hang-grace", "1s")
    jid = env.create(tok, {"prompt": "stuck", "steps": 2}).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "failed", j
    msg = j["error_message"] or ""
    assert "did not answer txt2img within" in msg and "hung" in msg, msg
    assert j["credits_charged"] == 0 and pv.charges_for(env, tok, jid) == []
    assert f.interrupts >= 1


@pv.clean_exit
def test_connection_dropped_mid_job(env):
    f = fake(env, delay=0.3)
    f.drop = True
    env.start_server(*FAST, "--max-attempts", "1")
    tok = env.add_user("a8")
    a1111_worker(env, f.url)
    jid = env.create(tok, {"prompt": "dropped", "steps": 3}).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "failed", j
    msg = j["error_message"] or ""
    assert "txt2img failed" in msg and f.url in msg, msg
    assert j["credits_charged"] == 0 and pv.charges_for(env, tok, jid) == []


@pv.clean_exit
def test_sd_server_subset(env):
    """stable-diffusion.cpp's sd-server: one model, no /progress, no /interrupt."""
    png = fake_a1111.make_png(12, 12, (90, 90, 90))
    f = fake(env, flavor="sd-server", delay=0.2, png=png)
    env.start_server("--lease", "2s", "--heartbeat", "100ms", "--reaper-interval", "100ms")
    tok = env.add_user("a7")
    a1111_worker(env, f.url)
    body = {"prompt": "a cat", "negative_prompt": "dog", "width": 512, "height": 512,
            "steps": 4, "cfg_scale": 7.0, "seed": 7}
    jid = env.create(tok, body).json()["id"]
    j, seen = pv.watch_progress(env, tok, jid)
    assert j["status"] == "completed", j
    assert pv.image_bytes(env, tok, j["image_url"]) == png
    assert seen == [] or seen == [{"step": 4, "steps": 4}], seen  # sd-server reports none
    req = f.txt2img[0]
    for k in ("prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "seed"):
        assert req[k] == body[k], (k, req)
    assert f.violations == [], f.violations
    assert "a1111_no_progress" in env.log("worker-w0.log")
    # A cancel frees the worker at once (sd-server cannot be interrupted: it finishes alone).
    f.delay = 2.0
    j2 = env.create(tok, {"prompt": "canceled", "steps": 4}).json()["id"]
    pv.wait_for(lambda: len(f.txt2img) == 2, timeout=20, what="the second txt2img")
    assert env.api("POST", f"/api/v1/generation/{j2}/cancel", token=tok).status == 200
    pv.wait_for(lambda: "job_abandoned" in env.log("worker-w0.log"), timeout=20,
                what="the worker to drop the canceled job")
    assert ("POST", "/sdapi/v1/interrupt", None) in f.requests
    assert pv.charges_for(env, tok, j2) == []
    # sd-server's own error shape reaches the job's message.
    f.delay, f.fail_status = 0, 500
    f.fail_body = {"error": "server_error", "message": "generate_image failed (fake)"}
    j3 = env.create(tok, {"prompt": "broken", "steps": 2}).json()["id"]
    pv.wait_for(lambda: "generate_image failed (fake)" in (env.job(tok, j3)["error_message"]
                                                          or ""), timeout=30,
                what="the sd-server error in the job")


def test_up_with_a1111(env):
    """`pingvas up --backend a1111`: the README's way to run with a local A1111 or sd-server."""
    png = fake_a1111.make_png(10, 10, (1, 2, 3))
    f = fake(env, delay=0.2, png=png, pause_at=5)
    pv.up_engine_job(env, f, png, "--backend", "a1111", "--a1111-url", f.url)
    assert f.violations == [], f.violations


if __name__ == "__main__":
    pv.main([test_job_gets_server_image_and_parameters, test_model_name_maps_to_checkpoint,
             test_cancel_interrupts_server, test_server_error_fails_attempts,
             test_unreachable_url_exits_nonzero, test_not_an_a1111_server_exits_nonzero,
             test_progress_while_txt2img_runs, test_hung_server_fails_at_deadline,
             test_connection_dropped_mid_job,
             test_sd_server_subset, test_up_with_a1111])
