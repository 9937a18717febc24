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
