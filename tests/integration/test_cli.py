"""The command line: help that tells the truth, errors that name the bad value (exit 2),
administration commands."""
import base64
import json

import pv


def test_help_and_usage_errors(env):
    r = pv.run_cli("help", check=False)
    assert r.returncode == 0 and "up" in r.stdout and "loadtest" in r.stdout
    # `help` is listed as a command, so `pingvas help help` is its help, not an error.
    r = pv.run_cli("help", "help", check=False)
    assert r.returncode == 0 and "Commands:" in r.stdout, (r.returncode, r.stderr)
    r = pv.run_cli("help", "user", check=False)
    assert r.returncode == 0 and "user disable" in r.stdout, r.stdout
    for cmd in ["up", "server", "worker", "autoscale", "loadtest", "token", "migrate"]:
        r = pv.run_cli(cmd, "--help", check=False)
        assert r.returncode == 0 and "usage: pingvas " + cmd in r.stdout, (cmd, r.stdout)
    r = pv.run_cli("up", "--help", check=False)
    assert "not Stable Diffusion" in r.stdout and "[env: DATABASE_URL]" in r.stdout
    cases = [
        (["up", "--port", "70000"], "--port"),
        (["up", "--bogus"], "--bogus"),
        (["server", "--lease", "soon"], "--lease"),
        (["worker", "--worker-token", "x" * 20, "--tier", "gold"], "--tier"),
        (["worker", "--worker-token", "x" * 20, "--gpu-profile", "v100"], "v100"),
        (["up", "--autoscale-mode", "fast"], "--autoscale-mode"),
        (["up", "--gpus", "0,0"], "--gpus"),
        (["user", "add"], "NAME"),
        (["token"], "NAME"),
        (["token", "ops", "--role", "root"], "--role"),
        (["nonsense"], "nonsense"),
    ]
    for args, word in cases:
        r = pv.run_cli(*args, data=env.data if args[0] in ("up", "server") else None,
                       check=False)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert word in r.stderr, (args, r.stderr)
    r = pv.run_cli("server", data=env.data, check=False,
                   env={"DATABASE_URL": "mysql://x"})
    assert r.returncode == 1 and "DATABASE_URL" in r.stderr, r.stderr


def test_user_and_token_commands(env):
    r = pv.run_cli("migrate", data=env.data, env=env.env())
    assert "schema up to date" in r.stdout
    pv.run_cli("migrate", data=env.data, env=env.env())  # again: nothing to do
    pv.run_cli("user", "add", "zoe", "--credits", "50", "--tier", "enterprise", data=env.data, env=env.env())
    r = pv.run_cli("user", "add", "zoe", data=env.data, env=env.env(), check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = pv.run_cli("user", "add", "bad name!", data=env.data, env=env.env(), check=False)
    assert r.returncode == 2
    r = pv.run_cli("user", "credits", "zoe", "+25", data=env.data, env=env.env())
    assert "balance 75" in r.stdout
    r = pv.run_cli("user", "credits", "zoe", "-100", data=env.data, env=env.env(), check=False)
    assert r.returncode == 1 and "below zero" in r.stderr
    r = pv.run_cli("user", "credits", "nobody", "+1", data=env.data, env=env.env(), check=False)
    assert r.returncode == 1 and "no user" in r.stderr
    env.start_server()
    tok = pv.run_cli("token", "zoe", "--ttl", "1h", data=env.data, env=env.env()).stdout.strip()
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    assert c["balance"] == 75 and c["tier"] == "enterprise"
    j = env.create(tok).json()
    assert j["tier"] == "enterprise"
    assert "role" not in jwt_claims(tok)
    admin = pv.run_cli("token", "ops", "--role", "admin", data=env.data, env=env.env()).stdout.strip()
    claims = jwt_claims(admin)
    assert claims["role"] == "admin" and claims["sub"] == "ops", claims


def jwt_claims(tok):
    """The payload of a JWT (base64url JSON), as a dict."""
    part = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


if __name__ == "__main__":
    pv.main([test_help_and_usage_errors, test_user_and_token_commands])
