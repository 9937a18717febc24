"""fake_a1111.py: a small stand-in for an AUTOMATIC1111-compatible server (Python 3 stdlib only).

Implements GET /sdapi/v1/sd-models, POST /sdapi/v1/txt2img (answers a real PNG, base64, after a
configurable delay, or a configurable error status), POST /sdapi/v1/interrupt (ends a txt2img in
progress early) and GET /sdapi/v1/progress. It records every request so tests can check what the
pingvas worker sent. Run standalone with `python3 fake_a1111.py [port]` for manual tries.
"""
import base64
import json
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


class FakeA1111:
    def __init__(self, delay=0.0, png=None, models=None):
        self.delay = delay              # seconds a txt2img takes
        self.png = png or make_png()
        self.fail_status = 0            # nonzero: txt2img answers this status
        self.fail_body = {"error": "OutOfMemoryError", "detail": "CUDA out of memory (fake)"}
        self.models = models if models is not None else [
            {"title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
             "model_name": "v1-5-pruned-emaonly", "hash": "6ce0161689"},
            {"title": "sd_xl_base_1.0.safetensors [31e35c80fc]",
             "model_name": "sd_xl_base_1.0", "hash": "31e35c80fc"},
        ]
        self.requests = []              # (method, path, parsed JSON body or None)
        self.txt2img = []               # parsed txt2img bodies
        self.interrupts = 0
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
        self.httpd.shutdown()
        self.httpd.server_close()

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
                elif self.path.startswith("/sdapi/v1/progress"):
                    self._send(200, {"progress": 0.0, "eta_relative": 0.0, "state": {},
                                     "current_image": None})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                body = self._body()
                with fake.lock:
                    fake.requests.append(("POST", self.path, body))
                if self.path == "/sdapi/v1/interrupt":
                    with fake.lock:
                        fake.interrupts += 1
                    fake._interrupted.set()
                    self._send(200, {})
                elif self.path == "/sdapi/v1/txt2img":
                    with fake.lock:
                        fake.txt2img.append(body)
                    fake._interrupted.clear()
                    fake._interrupted.wait(fake.delay)
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
    f = FakeA1111(delay=1.0)
    if len(sys.argv) > 1:
        f.httpd.server_close()
        f.httpd = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), f._handler())
        f.url = f"http://127.0.0.1:{sys.argv[1]}"
    print(f"fake A1111 on {f.url}", flush=True)
    f.httpd.serve_forever()
