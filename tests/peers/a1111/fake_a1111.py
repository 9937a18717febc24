"""fake_a1111.py: a small stand-in for an AUTOMATIC1111-compatible server (Python 3 stdlib only).

Two flavours:
- "a1111" (AUTOMATIC1111, Forge, SD.Next): GET /sdapi/v1/sd-models, POST /sdapi/v1/txt2img
  (a real PNG, base64, after `delay` seconds spent step by step, or `fail_status`),
  POST /sdapi/v1/interrupt (ends a txt2img in progress early) and GET /sdapi/v1/progress
  (state.sampling_step of state.sampling_steps while a txt2img runs, as A1111's State reports it).
- "sd-server" (stable-diffusion.cpp's examples/server, routes_sdapi.cpp): GET /sdapi/v1/sd-models
  (one entry, the loaded model's file stem, hash 8888888888), GET /sdapi/v1/options,
  POST /sdapi/v1/txt2img; no /progress and no /interrupt (404, as cpp-httplib answers); errors
  {"error": "..."} (400) and {"error":"server_error","message":...} (500).

Every txt2img body is checked: the fields pingvas may send, with their types and ranges;
anything else is recorded in `violations` (tests assert it stays empty). It records every
request so tests can check what the worker sent. Run standalone with
`python3 fake_a1111.py [port] [sd-server]` for manual tries.
"""
import base64
import json
import socket
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_png(width=8, height=8, rgb=(200, 40, 90)):
    """A real RGB PNG of width x height in one colour."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


TXT2IMG_FIELDS = {"prompt": str, "negative_prompt": str, "width": int, "height": int,
                  "steps": int, "cfg_scale": (int, float), "seed": int, "batch_size": int,
                  "n_iter": int, "send_images": bool, "override_settings": dict}


class FakeA1111:
    def __init__(self, delay=0.0, png=None, models=None, flavor="a1111", pause_at=0):
        self.flavor = flavor
        self.pause_at = pause_at        # nonzero: a txt2img stops at this step until resume is set
        self.resume = threading.Event()
        self.delay = delay              # seconds a txt2img takes
        self.png = png or make_png()
        self.fail_status = 0            # nonzero: txt2img answers this status
        self.fail_body = {"error": "OutOfMemoryError", "detail": "CUDA out of memory (fake)"}
        if models is None and flavor == "sd-server":
            models = [{"title": "v1-5-pruned-emaonly", "model_name": "v1-5-pruned-emaonly",
                       "filename": "v1-5-pruned-emaonly.safetensors", "hash": "8888888888",
                       "sha256": "8" * 64, "config": None}]
        self.models = models if models is not None else [
            {"title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
             "model_name": "v1-5-pruned-emaonly", "hash": "6ce0161689"},
            {"title": "sd_xl_base_1.0.safetensors [31e35c80fc]",
             "model_name": "sd_xl_base_1.0", "hash": "31e35c80fc"},
        ]
        self.requests = []              # (method, path, parsed JSON body or None)
        self.txt2img = []               # parsed txt2img bodies
        self.interrupts = 0
        self.violations = []
        self.step = 0                   # the running txt2img's step, 0 when idle
        self.steps = 0
        self.hang = False               # a txt2img never answers (until interrupted)
        self.drop = False               # a txt2img's connection is closed without an answer
        self.lock = threading.Lock()
        self._interrupted = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._interrupted.set()
        self.hang = False
        self.httpd.shutdown()
        self.httpd.server_close()

    def violation(self, what):
        with self.lock:
            self.violations.append(what)

    def check_txt2img(self, b):
        if not isinstance(b, dict):
            return self.violation(f"txt2img body {b!r}")
        for k, v in b.items():
            t = TXT2IMG_FIELDS.get(k)
            if t is None or not isinstance(v, t) or (t is int and isinstance(v, bool)):
                self.violation(f"txt2img field {k}={v!r}")
        for k in ("prompt", "width", "height", "steps", "cfg_scale", "seed"):
            if k not in b:
                self.violation(f"txt2img without {k}")
        if self.flavor == "sd-server" and "override_settings" in b:
            self.violation("override_settings sent to sd-server (it has one model)")
        if not (1 <= b.get("steps", 0) <= 150 and 0 <= b.get("seed", -1) <= 4294967295):
            self.violation(f"txt2img steps/seed out of range: {b}")

    def run_steps(self, b):
        """Spends `delay` over the job's steps (A1111's state.sampling_step counts them); ends
        early on /interrupt. With `hang`, waits until interrupted."""
        steps = max(1, int((b or {}).get("steps") or 1))
        self._interrupted.clear()
        with self.lock:
            self.step, self.steps = 0, steps
        if self.hang:
            self._interrupted.wait()
        for i in range(steps):
            if self._interrupted.wait(self.delay / steps):
                break
            with self.lock:
                self.step = i + 1
            if self.pause_at and i + 1 == self.pause_at:
                while not self.resume.wait(0.05) and not self._interrupted.is_set():
                    pass
        with self.lock:
            self.step = self.steps = 0

    def _handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client hung up (a canceled request)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return None

            def do_GET(self):
                with fake.lock:
                    fake.requests.append(("GET", self.path, None))
                if self.path == "/sdapi/v1/sd-models":
                    self._send(200, fake.models)
                elif fake.flavor == "sd-server":
                    if self.path == "/sdapi/v1/options":
                        self._send(200, {"samples_format": "png", "sd_model_checkpoint":
                                         fake.models[0]["title"]})
                    else:
                        self._send_raw(404, b"")
                elif self.path.startswith("/sdapi/v1/progress"):
                    if self.path != "/sdapi/v1/progress?skip_current_image=true":
                        fake.violation(f"progress query: {self.path}")
                    with fake.lock:
                        step, steps = fake.step, fake.steps
                    self._send(200, {"progress": step / steps if steps else 0.0,
                                     "eta_relative": 0.0, "state": {
                                         "skipped": False, "interrupted": False,
                                         "stopping_generation": False, "job": "",
                                         "job_count": 1 if steps else 0, "job_timestamp": "0",
                                         "job_no": 0, "sampling_step": step,
                                         "sampling_steps": steps},
                                     "current_image": None, "textinfo": None})
                else:
                    self._send(404, {"detail": "Not Found"})

            def _send_raw(self, status, data):
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def do_POST(self):
                body = self._body()
                with fake.lock:
                    fake.requests.append(("POST", self.path, body))
                if fake.flavor == "sd-server" and self.path != "/sdapi/v1/txt2img":
                    self._send_raw(404, b"")
                elif self.path == "/sdapi/v1/interrupt":
                    with fake.lock:
                        fake.interrupts += 1
                    fake._interrupted.set()
                    self._send(200, {})
                elif self.path == "/sdapi/v1/txt2img":
                    with fake.lock:
                        fake.txt2img.append(body)
                    fake.check_txt2img(body)
                    fake.run_steps(body)
                    if fake.drop:  # the server goes away mid-request: no answer at all
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fake.fail_status:
                        self._send(fake.fail_status, fake.fail_body)
                        return
                    b = body or {}
                    info = {"prompt": b.get("prompt"), "seed": b.get("seed"),
                            "all_seeds": [b.get("seed")], "width": b.get("width"),
                            "height": b.get("height")}
                    self._send(200, {"images": [base64.b64encode(fake.png).decode()],
                                     "parameters": b, "info": json.dumps(info)})
                else:
                    self._send(404, {"detail": "Not Found"})

        return H


if __name__ == "__main__":
    f = FakeA1111(delay=1.0, flavor=sys.argv[2] if len(sys.argv) > 2 else "a1111")
    if len(sys.argv) > 1:
        f.httpd.server_close()
        f.httpd = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), f._handler())
        f.url = f"http://127.0.0.1:{sys.argv[1]}"
    print(f"fake A1111 on {f.url}", flush=True)
    f.httpd.serve_forever()
