"""The comfyui backend against a ComfyUI stand-in (tests/peers/comfyui/fake_comfyui.py, run
in-process on 127.0.0.1:0, speaking ComfyUI's HTTP and /ws WebSocket protocol and checking every
field it receives): the job gets the engine's PNG, shows the engine's progress in its JSON while
it runs, and is charged by the measured execution time;
an engine that is down or lacks the checkpoint stops the worker at start with exit status 2;
execution_error, a WebSocket that drops mid-job and an engine that hangs fail the job with a
message that says so (never stuck, never charged); a cancel interrupts the running prompt or
takes a waiting one out of ComfyUI's queue. Uses only the public API, so it also runs with
PINGVAS_TEST_STACK=production."""
import json
import math
import os
import sys

import pv

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "peers", "comfyui"))
import fake_comfyui  # noqa: E402

FAST = ["--lease", "2s", "--heartbeat", "100ms", "--reaper-interval", "100ms"]


def fake(env, **kw):
    return pv.start_peer(env, fake_comfyui.FakeComfyUI(**kw))


def comfy_worker(env, url, *args):
    return env.start_worker("--backend", "comfyui", "--comfyui-url", url, *args)


def assert_not_charged(env, tok, j):
    assert j["credits_charged"] == 0 and not j["image_url"], j
    assert pv.charges_for(env, tok, j["id"]) == []


@pv.clean_exit
def test_job_gets_engine_png_and_measured_charge(env):
    png = fake_comfyui.make_png(24, 16, (250, 120, 10))
    f = fake(env, png=png, step_delay=0.05, pause_at=6)
    env.start_server(*FAST)
    tok = env.add_user("c1")
    comfy_worker(env, f.url)
    body = {"prompt": "a lighthouse at dawn", "negative_prompt": "blurry", "width": 576,
            "height": 448, "steps": 12, "cfg_scale": 6.5, "seed": 4294967295}
    jid = env.create(tok, body).json()["id"]
    # The engine holds at step 6 until the job JSON has shown it (heartbeats every 100 ms).
    pv.wait_for(lambda: env.job(tok, jid).get("progress") == {"step": 6, "steps": 12},
                what="progress 6 of 12 while ComfyUI runs")
    f.resume.set()
    j, seen = pv.watch_progress(env, tok, jid)
    assert j["status"] == "completed", j
    assert pv.image_bytes(env, tok, j["image_url"]) == png
    assert all(p["steps"] == 12 for p in seen), seen
    assert [p["step"] for p in seen] == sorted(p["step"] for p in seen), seen
    assert f.violations == [], f.violations
    # The workflow carried the job's values, typed as ComfyUI wants them.
    (pid, sent), = f.prompts
    wf = sent["prompt"]
    ks = wf["3"]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"]) == (4294967295, 12, 6.5), ks
    assert wf["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert (wf["5"]["inputs"]["width"], wf["5"]["inputs"]["height"]) == (576, 448)
    assert wf["6"]["inputs"]["text"] == body["prompt"]
    assert wf["7"]["inputs"]["text"] == body["negative_prompt"]
    assert sent["client_id"] in f.ws_connects
    assert f.views and f.views[0]["type"] == ["output"], f.views
    # Charged by the measured execution time: ComfyUI's own execution_start and
    # execution_success timestamps (its queueing excluded): 12 steps of 50 ms at least.
    start, end = f.stamps[pid]
    assert abs(j["gpu_seconds"] - (end - start) / 1000.0) < 1e-6, (j, start, end)
    assert j["gpu_seconds"] >= 12 * 0.05, j
    assert j["credits_charged"] == math.ceil(j["gpu_seconds"]), j
    assert [c["amount"] for c in pv.charges_for(env, tok, jid)] in ([-j["credits_charged"]],
                                                                 [j["credits_charged"]])


def test_engine_down_exits_2(env):
    env.start_server(*FAST)
    url = pv.free_port_url()
    w = comfy_worker(env, url)
    assert w.wait(timeout=60) == 2
    log = env.log("worker-w0.log")
    assert url in log and "not reachable" in log, log


def test_checkpoint_missing_exits_2(env):
    f = fake(env, checkpoints=["something_else.safetensors"])
    env.start_server(*FAST)
    w = comfy_worker(env, f.url)
    assert w.wait(timeout=60) == 2
    log = env.log("worker-w0.log")
    assert "v1-5-pruned-emaonly.safetensors" in log and "is not on the ComfyUI server" in log, log


def test_not_comfyui_exits_2(env):
    env.start_server(*FAST)
    w = comfy_worker(env, env.url)  # pingvas itself: no /object_info
    assert w.wait(timeout=60) == 2
    log = env.log("worker-w0.log")
    assert "is not a ComfyUI server" in log and "404" in log, log


@pv.clean_exit
def test_execution_error_fails_with_engine_message(env):
    f = fake(env)
    f.mode = "error"
    env.start_server(*FAST, "--max-attempts", "1")
    tok = env.add_user("c2")
    comfy_worker(env, f.url)
    jid = env.create(tok, {"prompt": "too big", "steps": 5}).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "failed", j
    msg = j["error_message"] or ""
    assert "execution_error" in msg and "KSampler" in msg and f.error_message in msg, msg
    assert_not_charged(env, tok, j)
    assert f.violations == [], f.violations


@pv.clean_exit
def test_websocket_drop_fails_and_stops_prompt(env):
    f = fake(env, step_delay=0.05)
    f.mode = "drop"
    env.start_server(*FAST, "--max-attempts", "1")
    tok = env.add_user("c3")
    comfy_worker(env, f.url)
    jid = env.create(tok, {"prompt": "dropped", "steps": 20}).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "failed", j
    msg = j["error_message"] or ""
    assert "WebSocket" in msg and "dropped mid-job" in msg and "interrupted" in msg, msg
    assert_not_charged(env, tok, j)
    # The prompt that kept running on the engine was interrupted, by its id.
    pid = f.prompts[0][0]
    assert {"prompt_id": pid} in f.interrupts, f.interrupts
    assert f.violations == [], f.violations


@pv.clean_exit
def test_hung_engine_fails_at_deadline(env):
    f = fake(env, step_delay=0.02)
    f.mode = "hang"
    env.start_server(*FAST, "--max-attempts", "1")
    tok = env.add_user("c4")
    # deadline = 4 x the estimate (2 steps at 512x512: ~0.3 s) + 1 s of grace
    comfy_worker(env, f.url, "--hang-grace", "1s")
    jid = env.create(tok, {"prompt": "stuck", "steps": 2}).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "failed", j
    msg = j["error_message"] or ""
    assert "did not finish" in msg and "in time" in msg and "step 2/2" in msg, msg
    assert_not_charged(env, tok, j)
    pid = f.prompts[0][0]
    assert {"prompt_id": pid} in f.interrupts, f.interrupts
    assert f.violations == [], f.violations


@pv.clean_exit
def test_cancel_mid_job_interrupts_prompt(env):
    f = fake(env, step_delay=0.2)
    env.start_server(*FAST)
    tok = env.add_user("c5")
    w = comfy_worker(env, f.url)
    jid = env.create(tok, {"prompt": "a long one", "steps": 100}).json()["id"]
    pv.wait_for(lambda: "progress" in f.types_sent(), timeout=30, what="the prompt to run")
    r = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert r.status == 200 and r.json()["status"] == "canceled", r
    pid = f.prompts[0][0]
    pv.wait_for(lambda: {"prompt_id": pid} in f.interrupts, timeout=30,
                what="the worker to POST /interrupt")
    pv.wait_for(lambda: "job_abandoned" in env.log("worker-w0.log"), timeout=30,
                what="the worker to drop the canceled job")
    j = env.job(tok, jid)
    assert j["status"] == "canceled", j
    assert_not_charged(env, tok, j)
    assert f.deleted == [], f.deleted  # it was running: interrupted, not taken off the queue
    # The worker is free again: the next job completes.
    f.step_delay = 0.0
    j2 = env.create(tok, {"prompt": "next", "steps": 2}).json()["id"]
    assert env.wait_status(tok, j2, ("completed", "failed"), timeout=30)["status"] == "completed"
    assert w.poll() is None
    assert f.violations == [], f.violations


@pv.clean_exit
def test_cancel_before_start_removes_from_queue(env):
    f = fake(env)
    f.mode = "hold"  # ComfyUI busy: our prompt waits in its queue
    env.start_server(*FAST)
    tok = env.add_user("c6")
    comfy_worker(env, f.url)
    jid = env.create(tok, {"prompt": "waiting", "steps": 3}).json()["id"]
    pv.wait_for(lambda: f.pending, timeout=30, what="the prompt to wait in the queue")
    r = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert r.status == 200, r
    pid = f.prompts[0][0]
    pv.wait_for(lambda: pid in f.deleted, timeout=30, what="POST /queue delete")
    assert f.interrupts == [], f.interrupts  # nothing of ours ran: no /interrupt
    assert not f.pending
    pv.wait_for(lambda: "job_abandoned" in env.log("worker-w0.log"), timeout=30,
                what="the worker to drop the canceled job")
    assert_not_charged(env, tok, env.job(tok, jid))
    assert f.violations == [], f.violations


@pv.clean_exit
def test_custom_workflow_and_checkpoints(env):
    f = fake(env, combo_form=True, checkpoints=["dreamshaper_8.safetensors"])
    wf = json.loads(json.dumps(fake_comfyui_shipped()))
    wf["6"]["inputs"]["text"] = "masterpiece, {{prompt}}"
    wf["3"]["inputs"]["sampler_name"] = "dpmpp_2m"
    wf["9"]["inputs"]["filename_prefix"] = "pv_{{model}}_{{width}}x{{height}}_{{seed}}"
    path = os.path.join(env.dir, "wf.json")
    with open(path, "w") as fh:
        json.dump(wf, fh)
    env.start_server(*FAST)
    tok = env.add_user("c7")
    comfy_worker(env, f.url, "--comfyui-workflow", path, "--comfyui-checkpoints",
                 "sd15=dreamshaper_8.safetensors")
    jid = env.create(tok, {"prompt": "a fox", "steps": 3}).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "completed", j
    sent = f.prompts[0][1]["prompt"]
    assert sent["6"]["inputs"]["text"] == "masterpiece, a fox"
    assert sent["3"]["inputs"]["sampler_name"] == "dpmpp_2m"
    assert sent["4"]["inputs"]["ckpt_name"] == "dreamshaper_8.safetensors"
    assert sent["9"]["inputs"]["filename_prefix"] == f"pv_sd15_512x512_{j['seed']}"
    # A model with no configured checkpoint fails the job with a message that says so.
    j2 = env.create(tok, {"prompt": "xl", "model": "sdxl", "steps": 3}).json()["id"]
    pv.wait_for(lambda: "no checkpoint configured for model" in env.log("worker-w0.log"),
                timeout=30, what="the sdxl job to be refused by the worker")
    assert_not_charged(env, tok, env.job(tok, j2))
    assert f.violations == [], f.violations


@pv.clean_exit
def test_history_stored_after_the_end_message(env):
    """Servers that say "executing" null before /history has the prompt: the worker reads the
    history again instead of failing the job."""
    png = fake_comfyui.make_png(4, 4, (1, 1, 1))
    f = fake(env, png=png)
    f.history_late = True
    env.start_server(*FAST)
    tok = env.add_user("c8")
    comfy_worker(env, f.url)
    jid = env.create(tok, {"prompt": "late", "steps": 2}).json()["id"]
    j = env.wait_status(tok, jid, ("completed", "failed"), timeout=60)
    assert j["status"] == "completed" and j["attempts"] == 1, j
    assert pv.image_bytes(env, tok, j["image_url"]) == png
    assert f.violations == [], f.violations


def test_bad_workflow_is_a_usage_error(env):
    env.start_server(*FAST)
    path = os.path.join(env.dir, "bad.json")
    with open(path, "w") as fh:
        json.dump({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{promt}}"}}}, fh)
    w = comfy_worker(env, "http://127.0.0.1:1", "--comfyui-workflow", path)
    assert w.wait(timeout=30) == 2
    out = env.log("worker-w0.log")
    assert "unknown placeholder {{promt}}" in out, out


def test_up_with_comfyui(env):
    """`pingvas up --backend comfyui`: the README's way to run on a GPU with a local ComfyUI."""
    png = fake_comfyui.make_png(16, 16, (5, 5, 200))
    f = fake(env, png=png, step_delay=0.03, pause_at=5)
    j = pv.up_engine_job(env, f, png, "--backend", "comfyui", "--comfyui-url", f.url)
    assert j["gpu_seconds"] >= 10 * 0.03 and j["credits_charged"] == math.ceil(j["gpu_seconds"])
    # The default --models follows the engine: sdxl has no checkpoint, so it is refused at
    # submission instead of failing on the worker.
    tok = pv.run_cli("token", "demo", data=env.data, env=env.env()).stdout.strip()
    r = env.create(tok, {"prompt": "xl", "model": "sdxl"})
    assert r.status in (400, 422) and "sd15" in r.body.decode(), (r.status, r.body)
    assert f.violations == [], f.violations


def test_up_refuses_engine_without_checkpoint(env):
    """`pingvas up --backend comfyui` checks the engine as its workers would (the same load as
    test_engine_down_exits_2, whose unreachable case takes the ~8 s of retries): a missing
    checkpoint is exit 2 and the reason, before anything starts."""
    f = fake(env, checkpoints=[])
    p = pv.run_cli("up", "--port", "0", "--data", env.data, "--backend", "comfyui",
                   "--comfyui-url", f.url, env=env.env(), check=False)
    assert p.returncode == 2 and "is not on the ComfyUI server" in p.stderr, p.stderr
    # A --models list the engine cannot serve is refused before anything starts.
    f.checkpoints.append("v1-5-pruned-emaonly.safetensors")
    p = pv.run_cli("up", "--port", "0", "--data", env.data, "--backend", "comfyui",
                   "--comfyui-url", f.url, "--models", "sd15,flux", env=env.env(), check=False)
    assert p.returncode == 2 and "cannot run model(s) flux" in p.stderr, p.stderr


def test_no_option_names_a_refused_backend(env):
    """sdcpp is not in this build: no help text offers it, and naming it is a usage error."""
    for cmd in ("up", "worker", "autoscale"):
        out = pv.run_cli("help", cmd, env=env.env()).stdout
        assert "sdcpp" not in out and "comfyui" in out and "a1111" in out, out
    p = pv.run_cli("worker", "--backend", "sdcpp", env=env.env(), check=False)
    assert p.returncode == 2 and 'unknown backend "sdcpp"' in p.stderr, p.stderr


def fake_comfyui_shipped():
    """The shipped workflow, as the worker sends it (read back from a first run would need a
    server; the node graph is the documented one)."""
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": "{{seed}}", "steps": "{{steps}}", "cfg": "{{cfg}}", "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "{{checkpoint}}"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {
            "width": "{{width}}", "height": "{{height}}", "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}",
                                                          "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative_prompt}}",
                                                          "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "pingvas",
                                                     "images": ["8", 0]}},
    }


if __name__ == "__main__":
    pv.main([test_job_gets_engine_png_and_measured_charge, test_engine_down_exits_2,
             test_checkpoint_missing_exits_2, test_not_comfyui_exits_2,
             test_execution_error_fails_with_engine_message,
             test_websocket_drop_fails_and_stops_prompt, test_hung_engine_fails_at_deadline,
             test_cancel_mid_job_interrupts_prompt, test_cancel_before_start_removes_from_queue,
             test_custom_workflow_and_checkpoints, test_history_stored_after_the_end_message,
             test_bad_workflow_is_a_usage_error,
             test_up_with_comfyui, test_up_refuses_engine_without_checkpoint,
             test_no_option_names_a_refused_backend])
