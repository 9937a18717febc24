"""fake_comfyui.py: a loopback stand-in for a ComfyUI server (Python 3 stdlib only).

It speaks the parts of ComfyUI's HTTP and WebSocket protocol that the pingvas comfyui backend
uses, in the shapes ComfyUI's server.py and execution.py produce them:

  GET  /object_info/CheckpointLoaderSimple   the node's ckpt_name choices (old or COMBO form)
  GET  /models/checkpoints                   the checkpoint file names
  GET  /ws?clientId=ID                       WebSocket (RFC 6455): {"type","data"} text messages:
       status, execution_start, execution_cached, executing, progress, executed,
       execution_success, execution_error, execution_interrupted
  POST /prompt {"prompt","client_id"}        validates the API-format workflow like ComfyUI
       (node classes, required inputs, their types and ranges, links, the checkpoint name, an
       output node) and queues it: {"prompt_id","number","node_errors"}; else 400
       {"error":{...},"node_errors":{...}}
  GET  /queue, POST /queue {"delete":[id]}   queue_running / queue_pending, removal
  POST /interrupt [{"prompt_id"}]            stops the running prompt
  GET  /history/{prompt_id}                  outputs and status of a finished prompt
  GET  /view?filename=&subfolder=&type=      the PNG

Every field it receives is checked; anything ComfyUI would not accept, or that the backend
should not send, is answered as ComfyUI would and recorded in `violations` (tests assert that
list stays empty). Behaviour knobs (`mode`): "ok", "error" (execution_error in KSampler),
"hang" (stops sending after `hang_after` steps), "drop" (closes every WebSocket after
`drop_after` steps while the prompt keeps running), "hold" (prompts stay pending until
`release()`). Run standalone: `python3 fake_comfyui.py [port]`.
"""
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "a1111"))
from fake_a1111 import make_png  # noqa: E402

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Required inputs per node class: name -> (kind, extra). kind: "INT" (min, max), "FLOAT"
# (min, max), "STRING", "COMBO" (choices or None: checked elsewhere), or a link type.
NODES = {
    "CheckpointLoaderSimple": ({"ckpt_name": ("COMBO", None)}, ("MODEL", "CLIP", "VAE"), False),
    "CLIPTextEncode": ({"text": ("STRING",), "clip": ("CLIP",)}, ("CONDITIONING",), False),
    "EmptyLatentImage": ({"width": ("INT", 16, 16384, 8), "height": ("INT", 16, 16384, 8),
                          "batch_size": ("INT", 1, 4096, 1)}, ("LATENT",), False),
    "KSampler": ({"model": ("MODEL",), "seed": ("INT", 0, 0xffffffffffffffff, 1),
                  "steps": ("INT", 1, 10000, 1), "cfg": ("FLOAT", 0.0, 100.0),
                  "sampler_name": ("COMBO", ["euler", "euler_ancestral", "dpmpp_2m", "ddim"]),
                  "scheduler": ("COMBO", ["normal", "karras", "simple"]),
                  "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                  "latent_image": ("LATENT",), "denoise": ("FLOAT", 0.0, 1.0)},
                 ("LATENT",), False),
    "VAEDecode": ({"samples": ("LATENT",), "vae": ("VAE",)}, ("IMAGE",), False),
    "SaveImage": ({"images": ("IMAGE",), "filename_prefix": ("STRING",)}, (), True),
}


def ws_frame(opcode, payload):
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


class WsClient:
    def __init__(self, sock, sid):
        self.sock, self.sid, self.lock, self.open = sock, sid, threading.Lock(), True

    def send_json(self, obj):
        data = ws_frame(1, json.dumps(obj).encode())
        with self.lock:
            if not self.open:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.open = False

    def drop(self):
        with self.lock:
            self.open = False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeComfyUI:
    def __init__(self, checkpoints=None, png=None, step_delay=0.02, combo_form=False,
                 pause_at=0):
        self.checkpoints = checkpoints if checkpoints is not None else [
            "v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]
        self.png = png or make_png(8, 8, (30, 160, 90))
        self.step_delay = step_delay
        self.combo_form = combo_form
        self.mode = "ok"
        self.pause_at = pause_at   # nonzero: the sampler stops at this step until resume is set
        self.resume = threading.Event()
        self.hang_after = 2
        self.drop_after = 2
        self.history_late = False  # say "executing" None before the history is stored
        self.error_message = "Allocation on device 0 would exceed allowed memory. (fake)"
        self.lock = threading.Condition()
        self.sockets = {}        # sid -> WsClient
        self.ws_connects = []    # client ids that connected
        self.prompts = []        # (prompt_id, body) as received
        self.pending = []        # queue entries [number, prompt_id, prompt, extra, outputs]
        self.running = None
        self.history = {}
        self.files = {}          # (filename, subfolder, type) -> bytes
        self.interrupts = []     # bodies of POST /interrupt
        self.deleted = []        # prompt ids removed with POST /queue
        self.views = []
        self.stamps = {}         # prompt_id -> [execution_start timestamp, end timestamp]
        self.sent = []           # (sid, type) of every message sent
        self.violations = []
        self.number = 0
        self._interrupt = threading.Event()
        self._released = threading.Event()
        self._stopping = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.executor = threading.Thread(target=self._execute_loop, daemon=True)

    # ---- control ----
    def start(self):
        self.thread.start()
        self.executor.start()
        return self

    def stop(self):
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        self._interrupt.set()
        self._released.set()
        self.resume.set()
        for c in list(self.sockets.values()):
            c.drop()
        self.httpd.shutdown()
        self.httpd.server_close()

    def release(self):
        self._released.set()
        with self.lock:
            self.lock.notify_all()

    def violation(self, what):
        with self.lock:
            self.violations.append(what)

    def types_sent(self):
        with self.lock:
            return [t for _, t in self.sent]

    # ---- messages ----
    def send(self, sid, typ, data):
        c = self.sockets.get(sid)
        with self.lock:
            self.sent.append((sid, typ))
        if c:
            c.send_json({"type": typ, "data": data})

    def queue_info(self):
        return {"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running else 0)}}

    # ---- validation of POST /prompt (ComfyUI's validate_prompt, for the nodes used) ----
    def validate(self, prompt):
        if not isinstance(prompt, dict) or not prompt:
            return {"type": "invalid_prompt", "message": "Cannot execute because the prompt "
                    "is not a non-empty object of nodes", "details": "", "extra_info": {}}, {}
        errors, outputs = {}, []
        for nid, node in prompt.items():
            errs = self.validate_node(prompt, nid, node)
            if errs:
                errors[nid] = {"errors": errs, "dependent_outputs": [],
                               "class_type": (node or {}).get("class_type")}
            elif NODES[node["class_type"]][2]:
                outputs.append(nid)
        if not outputs and not errors:
            return {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                    "details": "", "extra_info": {}}, {}
        if errors:
            return {"type": "prompt_outputs_failed_validation",
                    "message": "Prompt outputs failed validation", "details": "",
                    "extra_info": {}}, errors
        return None, outputs

    def validate_node(self, prompt, nid, node):
        def err(typ, msg, details):
            return {"type": typ, "message": msg, "details": details, "extra_info": {}}
        if not isinstance(node, dict) or set(node) - {"class_type", "inputs", "_meta"}:
            return [err("invalid_node", "Node is not {class_type, inputs}", str(nid))]
        cls = node.get("class_type")
        if cls not in NODES:
            return [err("missing_node_type", f"Node '{cls}' not found", str(cls))]
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            return [err("invalid_inputs", "inputs is not an object", str(nid))]
        required, _, _ = NODES[cls]
        out = []
        for name in set(inputs) - set(required):
            out.append(err("unknown_input", "Input is not one of the node's", name))
        for name, spec in required.items():
            if name not in inputs:
                out.append(err("required_input_missing", "Required input is missing", name))
                continue
            e = self.check_input(prompt, name, spec, inputs[name])
            if e:
                out.append(err(e[0], e[1], f"{name}: {e[2]}"))
        return out

    def check_input(self, prompt, name, spec, val):
        kind = spec[0]
        if kind in ("INT", "FLOAT", "STRING", "COMBO"):
            if isinstance(val, list):
                return ("bad_linked_input", "Linked input where a value is expected", val)
            if kind == "INT":
                if not isinstance(val, int) or isinstance(val, bool):
                    return ("invalid_input_type", "Failed to convert an input value to a INT",
                            repr(val))
                if val < spec[1] or val > spec[2] or val % spec[3]:
                    return ("value_out_of_range", "Value out of range", repr(val))
            elif kind == "FLOAT":
                if not isinstance(val, (int, float)) or isinstance(val, bool):
                    return ("invalid_input_type", "Failed to convert an input value to a FLOAT",
                            repr(val))
                if val < spec[1] or val > spec[2]:
                    return ("value_out_of_range", "Value out of range", repr(val))
            elif kind == "STRING":
                if not isinstance(val, str) or "{{" in val:
                    return ("invalid_input_type", "Not a filled-in STRING", repr(val))
            else:
                choices = spec[1] if spec[1] is not None else self.checkpoints
                if val not in choices:
                    return ("value_not_in_list", "Value not in list",
                            f"'{val}' not in {choices}")
            return None
        if (not isinstance(val, list) or len(val) != 2 or not isinstance(val[0], str)
                or not isinstance(val[1], int) or val[0] not in prompt):
            return ("bad_linked_input", "Bad linked input, must be a length-2 list of "
                    "[node_id, slot_index]", repr(val))
        src = prompt[val[0]]
        outs = NODES.get((src or {}).get("class_type"), (None, ()))[1]
        if val[1] >= len(outs) or outs[val[1]] != kind:
            return ("return_type_mismatch", "Return type mismatch between linked nodes",
                    f"{val} is not {kind}")
        return None

    # ---- the executor (ComfyUI's prompt worker: one prompt at a time) ----
    def _execute_loop(self):
        while True:
            with self.lock:
                while not self._stopping and (not self.pending or (
                        self.mode == "hold" and not self._released.is_set())):
                    self.lock.wait()
                if self._stopping:
                    return
                self.running = self.pending.pop(0)
                self._interrupt.clear()
            self._execute(self.running)
            with self.lock:
                self.running = None
                self.lock.notify_all()

    def _execute(self, item):
        number, pid, prompt, extra, outputs = item
        sid = extra.get("client_id")
        ts = lambda: int(time.time() * 1000)  # noqa: E731
        msgs = [["execution_start", {"prompt_id": pid, "timestamp": ts()}]]
        self.stamps[pid] = [msgs[0][1]["timestamp"], None]
        self.send(sid, "execution_start", msgs[-1][1])
        self.send(sid, "execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": ts()})
        executed, status, outs = [], "success", {}
        for nid in self.order(prompt):
            cls = prompt[nid]["class_type"]
            self.send(sid, "executing", {"node": nid, "display_node": nid, "prompt_id": pid})
            if cls == "KSampler":
                r = self.sample(sid, pid, nid, prompt[nid]["inputs"]["steps"], executed)
                if r:
                    status = r
                    break
            if cls == "SaveImage":
                name = f"{prompt[nid]['inputs']['filename_prefix']}_{number:05d}_.png"
                self.files[(name, "", "output")] = self.png
                outs[nid] = {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
                self.send(sid, "executed", {"node": nid, "display_node": nid,
                                            "output": outs[nid], "prompt_id": pid})
            executed.append(nid)
        if status == "success":
            msgs.append(["execution_success", {"prompt_id": pid, "timestamp": ts()}])
            self.stamps[pid][1] = msgs[-1][1]["timestamp"]
            self.send(sid, "execution_success", msgs[-1][1])
        # ComfyUI's prompt_worker stores the history (task_done) a moment after execute()
        # returned, then says "executing" None: a client must not read /history before that.
        # (history_late: the other order, as older servers did it.)
        if self.history_late and status != "hung":
            self.send(sid, "executing", {"node": None, "prompt_id": pid})
        time.sleep(0.05 if not self.history_late else 0.15)
        entry = {"prompt": [number, pid, prompt, extra, outputs], "outputs": outs,
                 "status": {"status_str": "success" if status == "success" else "error",
                            "completed": status == "success", "messages": msgs}, "meta": {}}
        self.history[pid] = entry
        if status != "hung" and not self.history_late:
            self.send(sid, "executing", {"node": None, "prompt_id": pid})

    def order(self, prompt):
        done, out = set(), []

        def visit(n):
            if n in done:
                return
            done.add(n)
            for v in prompt[n]["inputs"].values():
                if isinstance(v, list):
                    visit(v[0])
            out.append(n)
        for n in sorted(prompt):
            visit(n)
        return out

    def sample(self, sid, pid, nid, steps, executed):
        """Runs the sampler's steps; returns None, or "error" / "interrupted" / "hung"."""
        base = {"prompt_id": pid, "node_id": nid, "node_type": "KSampler",
                "executed": list(executed), "timestamp": int(time.time() * 1000)}
        for step in range(1, steps + 1):
            if self._interrupt.wait(self.step_delay) or self._stopping:
                self.send(sid, "execution_interrupted", base)
                return "interrupted"
            if self.mode == "error" and step == 2:
                self.send(sid, "execution_error", dict(
                    base, exception_message=self.error_message,
                    exception_type="torch.OutOfMemoryError",
                    traceback=["  File \"execution.py\", line 1, in execute\n"],
                    current_inputs={"steps": [steps]}, current_outputs={}))
                return "error"
            self.send(sid, "progress", {"value": step, "max": steps, "prompt_id": pid,
                                        "node": nid})
            while step == self.pause_at and not self.resume.wait(0.05):
                if self._interrupt.is_set() or self._stopping:
                    break
            if self.mode == "drop" and step == self.drop_after:
                for c in list(self.sockets.values()):
                    c.drop()
            if self.mode == "hang" and step == self.hang_after:
                self._interrupt.wait()  # a hung engine: silence until interrupted or stopped
                return "hung"
        return None

    # ---- HTTP ----
    def _handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                # aiohttp (ComfyUI's server) sets TCP_NODELAY; without it Nagle holds a body
                # written after its headers until the client's delayed ACK (40 ms).
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def reply(self, status, obj=None, raw=None, ctype="application/json"):
                data = raw if raw is not None else (json.dumps(obj).encode()
                                                    if obj is not None else b"")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if raw and "application/json" not in (self.headers.get("Content-Type") or ""):
                    fake.violation(f"{self.path}: Content-Type {self.headers.get('Content-Type')}")
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    fake.violation(f"{self.path}: body is not JSON: {raw[:80]!r}")
                    return None

            def host_ok(self):
                """ComfyUI's origin_only_middleware: a loopback Host with an Origin that does not
                match is refused (403); and the Host must name this server."""
                host, origin = self.headers.get("Host"), self.headers.get("Origin")
                if host != fake.url[len("http://"):]:
                    fake.violation(f"{self.path}: Host {host!r}")
                if origin is not None and urlparse(origin).netloc.lower() != (host or "").lower():
                    fake.violation(f"{self.path}: Origin {origin!r} for Host {host!r}")
                    self.reply(403, raw=b"")
                    return False
                return True

            def do_GET(self):
                if not self.host_ok():
                    return
                u = urlparse(self.path)
                q = parse_qs(u.query, keep_blank_values=True)
                if u.path == "/ws":
                    return self.websocket(q)
                if u.path == "/object_info/CheckpointLoaderSimple":
                    return self.reply(200, fake.object_info())
                if u.path == "/models/checkpoints":
                    return self.reply(200, fake.checkpoints)
                if u.path == "/queue":
                    with fake.lock:
                        run = [fake.running] if fake.running else []
                        return self.reply(200, {"queue_running": run,
                                                "queue_pending": list(fake.pending)})
                if u.path.startswith("/history/"):
                    pid = u.path[len("/history/"):]
                    h = fake.history.get(pid)
                    return self.reply(200, {pid: h} if h else {})
                if u.path == "/view":
                    return self.view(q)
                self.reply(404, raw=b"404: Not Found", ctype="text/plain")

            def view(self, q):
                fake.views.append(q)
                if set(q) - {"filename", "subfolder", "type"} or "filename" not in q:
                    fake.violation(f"/view query {q}")
                    return self.reply(400, raw=b"")
                key = (q["filename"][0], q.get("subfolder", [""])[0], q.get("type", ["output"])[0])
                data = fake.files.get(key)
                if data is None:
                    fake.violation(f"/view of a file never made: {key}")
                    return self.reply(404, raw=b"")
                self.reply(200, raw=data, ctype="image/png")

            def do_POST(self):
                b = self.body()
                if not self.host_ok():
                    return
                if self.path == "/prompt":
                    return self.prompt(b)
                if self.path == "/interrupt":
                    if b is not None and (not isinstance(b, dict) or set(b) - {"prompt_id"}):
                        fake.violation(f"/interrupt body {b}")
                    with fake.lock:
                        fake.interrupts.append(b)
                        run = fake.running
                    pid = (b or {}).get("prompt_id")
                    if run and (pid is None or pid == run[1]):
                        fake._interrupt.set()
                    return self.reply(200, raw=b"")
                if self.path == "/queue":
                    if not isinstance(b, dict) or set(b) - {"delete", "clear"} or not all(
                            isinstance(x, str) for x in b.get("delete", [])):
                        fake.violation(f"/queue body {b}")
                        return self.reply(400, raw=b"")
                    with fake.lock:
                        for pid in b.get("delete", []):
                            fake.deleted.append(pid)
                            fake.pending = [e for e in fake.pending if e[1] != pid]
                    return self.reply(200, raw=b"")
                self.reply(404, raw=b"404: Not Found", ctype="text/plain")

            def prompt(self, b):
                if not isinstance(b, dict) or "prompt" not in b:
                    fake.violation(f"/prompt body {str(b)[:100]}")
                    return self.reply(400, {"error": {"type": "no_prompt", "message":
                                                      "No prompt provided", "details": "",
                                                      "extra_info": {}}, "node_errors": {}})
                extra_keys = set(b) - {"prompt", "client_id"}
                cid = b.get("client_id")
                if extra_keys or not isinstance(cid, str) or cid not in fake.sockets:
                    fake.violation(f"/prompt: keys {sorted(b)}, client_id {cid!r} "
                                   f"(connected: {sorted(fake.sockets)})")
                error, outputs = fake.validate(b["prompt"])
                with fake.lock:
                    fake.prompts.append((None, b))
                if error:
                    return self.reply(400, {"error": error, "node_errors": outputs})
                pid = str(uuid.uuid4())
                with fake.lock:
                    fake.prompts[-1] = (pid, b)
                    number = fake.number
                    fake.number += 1
                    fake.pending.append([number, pid, b["prompt"], {"client_id": cid}, outputs])
                    fake.lock.notify_all()
                self.reply(200, {"prompt_id": pid, "number": number, "node_errors": {}})

            def websocket(self, q):
                key = self.headers.get("Sec-WebSocket-Key", "")
                ok = ("websocket" in (self.headers.get("Upgrade") or "").lower()
                      and "upgrade" in (self.headers.get("Connection") or "").lower()
                      and self.headers.get("Sec-WebSocket-Version") == "13")
                try:
                    ok = ok and len(base64.b64decode(key, validate=True)) == 16
                except ValueError:
                    ok = False
                sid = q.get("clientId", [""])[0]
                if not ok or not sid or set(q) - {"clientId"}:
                    fake.violation(f"/ws handshake: headers {dict(self.headers)}, query {q}")
                    return self.reply(400, raw=b"")
                accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept.decode())
                self.end_headers()
                self.wfile.flush()
                client = WsClient(self.connection, sid)
                with fake.lock:
                    fake.sockets[sid] = client
                    fake.ws_connects.append(sid)
                fake.send(sid, "status", {"status": fake.queue_info(), "sid": sid})
                try:
                    self.ws_read(client)
                finally:
                    with fake.lock:
                        if fake.sockets.get(sid) is client:
                            del fake.sockets[sid]
                    self.close_connection = True

            def ws_read(self, client):
                """Reads client frames until close: they must be masked (RFC 6455 5.1)."""
                r = self.rfile
                while client.open:
                    try:
                        h = r.read(2)
                    except OSError:
                        return
                    if len(h) < 2:
                        return
                    op, masked, n = h[0] & 0x0F, h[1] & 0x80, h[1] & 0x7F
                    if n == 126:
                        n = struct.unpack(">H", r.read(2))[0]
                    elif n == 127:
                        n = struct.unpack(">Q", r.read(8))[0]
                    if not masked:
                        fake.violation("unmasked frame from the client")
                        return
                    mask = r.read(4)
                    data = bytes(c ^ mask[i % 4] for i, c in enumerate(r.read(n)))
                    if op == 8:
                        with client.lock:
                            try:
                                client.sock.sendall(ws_frame(8, data[:2]))
                            except OSError:
                                pass
                            client.open = False
                        return
                    if op == 9:
                        with client.lock:
                            client.sock.sendall(ws_frame(10, data))

        return H

    def object_info(self):
        choices = (["COMBO", {"options": list(self.checkpoints),
                              "tooltip": "The name of the checkpoint (model) to load."}]
                   if self.combo_form else
                   [list(self.checkpoints), {"tooltip": "The name of the checkpoint (model) to "
                                                        "load."}])
        return {"CheckpointLoaderSimple": {
            "input": {"required": {"ckpt_name": choices}},
            "input_order": {"required": ["ckpt_name"]},
            "output": ["MODEL", "CLIP", "VAE"], "output_is_list": [False, False, False],
            "output_name": ["MODEL", "CLIP", "VAE"], "name": "CheckpointLoaderSimple",
            "display_name": "Load Checkpoint", "description": "Loads a diffusion model "
            "checkpoint.", "python_module": "nodes", "category": "loaders",
            "output_node": False}}


if __name__ == "__main__":
    f = FakeComfyUI(step_delay=0.2)
    if len(sys.argv) > 1:
        f.httpd.server_close()
        f.httpd = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), f._handler())
        f.httpd.daemon_threads = True
        f.url = f"http://127.0.0.1:{sys.argv[1]}"
        f.thread = threading.Thread(target=f.httpd.serve_forever, daemon=True)
    f.start()
    print(f"fake ComfyUI on {f.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        f.stop()
