"""scripts/up.sh, the README's first command, run as a user runs it.

From a copy of the source tree (the files a clone has, plus new ones not yet committed; no build
directory, no data), first scripts/deps.sh and deps.sh --test in a network namespace with no
network (everything is installed: they must install nothing and succeed offline), then
`scripts/up.sh` with no arguments: it checks the packages (scripts/deps.sh; it must install
nothing), builds Release into the copy's build/ and execs `build/pingvas up` on its default address, http://127.0.0.1:8080. The test then
does what the README and the banner tell a user to do: runs the printed curl command that
submits a job, polls with the printed fetch command until it is completed, fetches its image,
mints a token with `build/pingvas token demo` as the README's "API in one minute" shows, and
stops it with Ctrl-C (SIGINT): exit status 0 and no worker left behind. A second `scripts/up.sh`
(nothing to install or rebuild) finds the job and the demo user again and stops on SIGTERM.

It listens on the fixed default port, so CMake runs it once per CI run (the plain build, not the
sanitizer build: up.sh builds its own Release binary anyway), as CTest `scripts.up_sh` with a
RESOURCE_LOCK on the port. It prints how long each phase took."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pv

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
URL = "http://127.0.0.1:8080"  # the README's address
# The configuration a user would not have set (the test harness's own environment).
CONFIG_VARS = ("DATABASE_URL", "STORAGE_URL", "REDIS_URL", "JWT_SECRET", "PUBLIC_IMAGE_BASE_URL",
               "MODEL_DIR", "CELERY_QUEUE", "CELERY_VISIBILITY_TIMEOUT")


def copy_tree(dst):
    """The files a clone of the repository has, plus untracked files not ignored (this tree's
    uncommitted work); without git, the tree minus builds, data and node_modules."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], check=True, capture_output=True).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        shutil.copytree(ROOT, dst, symlinks=True, ignore=shutil.ignore_patterns(
            "build*", "data", "node_modules", ".git", "__pycache__"))
        return
    for f in files:
        src = os.path.join(ROOT, f)
        if not os.path.lexists(src):  # deleted in the work tree, not committed yet
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, f), follow_symlinks=False)


def user_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PINGVAS_") and k not in CONFIG_VARS}
    return env


class Up:
    """One `scripts/up.sh` run: its stdout lines as they come, its stderr in a file."""

    def __init__(self, tree, logdir, n):
        self.lines = []
        self.err = os.path.join(logdir, f"up-{n}.err")
        self.t0 = time.monotonic()
        with open(self.err, "wb") as err:
            self.p = subprocess.Popen(["scripts/up.sh"], cwd=tree, env=user_env(),
                                      stdout=subprocess.PIPE, stderr=err,
                                      start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def text(self):
        return "\n".join(self.lines)

    def stderr(self):
        with open(self.err, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def wait_listening(self, timeout):
        def ready():
            if self.p.poll() is not None:
                raise AssertionError(f"scripts/up.sh exited {self.p.returncode}:\n{self.text()}\n"
                                     f"{self.stderr()}")
            return next((ln for ln in self.lines if "listening on " in ln), None)
        line = pv.wait_for(ready, timeout=timeout, interval=0.2, what="scripts/up.sh to listen")
        assert line.split("listening on ", 1)[1].strip() == URL, line
        pv.wait_for(lambda: self.banner_done(), timeout=30, what="the banner")
        return time.monotonic() - self.t0

    def banner_done(self):
        return any("open the dashboard" in ln for ln in self.lines)

    def curl_commands(self):
        """The banner's two curl commands (continuation lines joined)."""
        cmds, cur = [], None
        for ln in self.lines:
            s = ln.strip()
            if s.startswith("curl "):
                cur = s
            elif cur is not None:
                cur += " " + s
            if cur is not None and not cur.endswith("\\"):
                cmds.append(cur)
                cur = None
            elif cur is not None:
                cur = cur[:-1].rstrip()
        assert len(cmds) == 2, self.text()
        return cmds

    def stop(self, sig):
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            raise AssertionError(f"pingvas up did not stop on {sig.name}:\n{self.stderr()}")

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


def sh(cmd, cwd):
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=user_env(), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, (cmd, p.returncode, p.stderr)
    return p.stdout


def pingvas_procs(tree):
    """Processes still running the copy's binary."""
    exe = os.path.realpath(os.path.join(tree, "build", "pingvas"))
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/exe") == exe:
                left.append(int(pid))
        except OSError:
            pass
    return left


def port_free():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", 8080))
        return True
    except OSError:
        return False
    finally:
        s.close()


def submit_and_fetch(up, tree):
    create, fetch = up.curl_commands()
    job = json.loads(sh(create, tree))
    assert job["status"] == "queued" and job["prompt"] == "a lighthouse at dawn", job
    assert "JOB_ID" in fetch, fetch
    fetch = fetch.replace("JOB_ID", job["id"])
    done = pv.wait_for(lambda: (lambda j: j if j["status"] in ("completed", "failed") else None)(
        json.loads(sh(fetch, tree))), timeout=120, interval=0.5, what="the job to end")
    assert done["status"] == "completed" and done["credits_charged"] > 0, done
    assert done["image_url"].startswith(URL + "/images/"), done
    img = pv.http("GET", done["image_url"])
    assert img.status == 200 and img.headers.get("Content-Type") == "image/png", img
    assert pv.png_size(img.body) == (done["width"], done["height"]), done
    return done


def deps_offline(tree):
    """scripts/deps.sh (what up.sh runs) and deps.sh --test (what CI runs), again, with no
    network at all (a network namespace of their own): with everything installed they install
    nothing and need no network."""
    for args in ([], ["--test"]):
        p = subprocess.run(["unshare", "--net", "--", "scripts/deps.sh"] + args, cwd=tree,
                           env=user_env(), capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "deps: installing" not in p.stdout, (args, p.stdout,
                                                                          p.stderr)


def run(tmp):
    assert port_free(), ("127.0.0.1:8080, the README's default port, is in use by another "
                         "process: stop it and run this test again")
    tree = os.path.join(tmp, "pingvas")
    t = time.monotonic()
    copy_tree(tree)
    print(f"   copy of the tree: {time.monotonic() - t:.1f}s", flush=True)
    t = time.monotonic()
    deps_offline(tree)
    print(f"   scripts/deps.sh and deps.sh --test without a network: {time.monotonic() - t:.1f}s",
          flush=True)
    up = Up(tree, tmp, 1)
    try:
        print(f"   scripts/up.sh to listening (deps, Release build from nothing, start): "
              f"{up.wait_listening(900):.1f}s", flush=True)
        assert "deps: installing" not in up.text(), up.text()
        assert os.access(os.path.join(tree, "build", "pingvas"), os.X_OK)
        t = time.monotonic()
        done = submit_and_fetch(up, tree)
        print(f"   the banner's curl: job submitted and completed (a worker started from zero): "
              f"{time.monotonic() - t:.1f}s", flush=True)
        # README, "API in one minute": TOKEN=$(build/pingvas token demo), from the tree's root.
        tok = sh("build/pingvas token demo", tree).strip()
        c = pv.http("GET", URL + "/api/v1/credits", token=tok)
        assert c.status == 200 and c.json()["reserved"] == 0, c
        assert [e["job_id"] for e in c.json()["ledger"] if e["kind"] == "charge"] == [done["id"]]
        assert up.stop(signal.SIGINT) == 0, up.stderr()
        assert pingvas_procs(tree) == [], "workers left behind after Ctrl-C"
        assert "event=up_stopping" in up.stderr()
        # Again: nothing to install or build, the same data, stopped by SIGTERM.
        up = Up(tree, tmp, 2)
        print(f"   scripts/up.sh again (nothing to build): {up.wait_listening(300):.1f}s",
              flush=True)
        assert "deps: installing" not in up.text(), up.text()
        create, fetch = up.curl_commands()
        again = json.loads(sh(fetch.replace("JOB_ID", done["id"]), tree))
        assert again["status"] == "completed" and again["image_url"] == done["image_url"], again
        assert up.stop(signal.SIGTERM) == 0, up.stderr()
        assert pingvas_procs(tree) == []
    except BaseException:
        print(f"--- up.sh stdout ---\n{up.text()}\n--- up.sh stderr (tail) ---\n{up.stderr()}")
        raise
    finally:
        up.kill()
        for pid in pingvas_procs(tree):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    tmp = tempfile.mkdtemp(prefix="pingvas-up-sh-")
    t0 = time.monotonic()
    try:
        run(tmp)
        print(f"ok   scripts/up.sh ({time.monotonic() - t0:.1f}s)\n1 passed, 0 failed")
    except Exception:
        import traceback
        traceback.print_exc()
        print("FAIL scripts/up.sh\n0 passed, 1 failed")
        sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
