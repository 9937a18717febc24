"""pv_pg.py: a fresh PostgreSQL database per test, on the cluster named by PINGVAS_TEST_PG_URL
(scripts/services/postgres.sh starts one on loopback and prints that variable).

Uses the `psql` client through subprocess, so the tests need no Python driver.
"""
import os
import secrets
import subprocess
import urllib.parse


def admin_url():
    url = os.environ.get("PINGVAS_TEST_PG_URL")
    if not url:
        raise AssertionError(
            "PINGVAS_TEST_PG_URL is not set: start PostgreSQL with scripts/services/postgres.sh "
            "(eval its output) or point it at a server where the user may CREATE DATABASE")
    return url


def with_db(url, db):
    """url with its database (the path) replaced by db."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


def psql(url, sql, timeout=60):
    """Runs one SQL command with psql on url; returns stdout (tuples only, unaligned)."""
    p = subprocess.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"psql failed ({p.returncode}) running {sql!r}: {p.stderr.strip()}")
    return p.stdout


def provision(name="pv"):
    """Creates database pv_<random>; returns ({"DATABASE_URL": url}, drop) where drop() removes
    it, closing any connection still open to it."""
    base = admin_url()
    db = "pv_" + secrets.token_hex(6)
    psql(base, f'CREATE DATABASE "{db}"')
    dropped = []

    def drop():
        if dropped:
            return
        dropped.append(True)
        psql(base, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    return {"DATABASE_URL": with_db(base, db)}, drop


def _bindir():
    import glob
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: [int(x) for x in d.split("/")[-2].split(".") if x.isdigit()])
    for d in reversed(dirs):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    raise AssertionError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                         "install them (apt-get install postgresql, or scripts/deps.sh --test)")


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A private throwaway PostgreSQL cluster (initdb in a temp dir, loopback, a free port) that
    a test may stop and start without disturbing tests running in parallel. initdb and pg_ctl
    refuse to run as root, so as root they run as the `postgres` user."""

    def __init__(self, dir=None):
        """dir: an empty directory to hold the cluster (a small file system a test mounts);
        a new temporary one by default."""
        import pwd
        import tempfile
        self.bin = _bindir()
        self.dir = dir or tempfile.mkdtemp(prefix="pingvas-pgc-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self.prefix = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.dir, 0o700)
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _run(self, tool, *args, check=True):
        p = subprocess.run(self.prefix + [os.path.join(self.bin, tool)] + list(args),
                           capture_output=True, text=True, timeout=120, cwd=self.dir)
        if check and p.returncode != 0:
            raise AssertionError(f"{tool} failed ({p.returncode}): {p.stderr.strip()}\n"
                                 f"{self.log()}")
        return p

    def log(self):
        try:
            with open(os.path.join(self.dir, "server.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-w",
                  "-t", "60", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
                  " -c fsync=off -c synchronous_commit=off -c max_connections=100", "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-w", "-t", "60", "-m", mode, "stop")

    def pids(self):
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            pm = int(f.readline())
        out = [pm]
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == pm:
                    out.append(int(d))
        return out

    def pause(self):
        """SIGSTOPs the whole cluster: connections stay open (the kernel still acknowledges
        what is sent to it), nothing answers. Returns the stopped pids for resume()."""
        import signal
        pm = self.pids()[0]
        os.kill(pm, signal.SIGSTOP)  # first, so that it starts no process meanwhile
        pids = self.pids()
        for pid in pids[1:]:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def resume(self, pids):
        import signal
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def close(self):
        import shutil
        self._run("pg_ctl", "-D", self.data, "-w", "-t", "60", "-m", "immediate", "stop",
                  check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def provision(self):
        """A fresh database on this cluster: (env, drop) like provision()."""
        db = "pv_" + secrets.token_hex(6)
        psql(self.url, f'CREATE DATABASE "{db}"')
        return {"DATABASE_URL": with_db(self.url, db)}, (lambda: None)


def provision_for(env):
    """The PostgreSQL database for a test that needs PostgreSQL on any stack: the production
    stack's own database; else a fresh one on PINGVAS_TEST_PG_URL when set; else a private
    cluster started for this test. Registers the cleanup on env; returns the URL."""
    url = env.extra_env.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        return url
    if os.environ.get("PINGVAS_TEST_PG_URL"):
        e, drop = provision("pv")
    else:
        c = Cluster()
        env.cleanups.append(c.close)
        e, drop = c.provision()
    env.extra_env.update(e)
    env.cleanups.append(drop)
    return e["DATABASE_URL"]
