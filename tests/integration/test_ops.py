"""What an operator does (docs/operations.md): mint tokens only for the server's users, rotate
JWT_SECRET and the worker token without downtime, disable a user, bind IPv6, and never share a
port with another pingvas."""
import os
import subprocess

import pv

OLD_JWT = pv.JWT_SECRET
NEW_JWT = "rotated-jwt-secret-fedcba9876543210"
OLD_WTOKEN = pv.WORKER_TOKEN
NEW_WTOKEN = "rotated-worker-token-fedcba9876543210"


def cli(env, *args, drop=(), extra=None):
    """Runs pingvas with the test's environment minus the variables in drop."""
    e = env.env()
    for k in drop:
        e.pop(k, None)
    e.update(extra or {})
    return subprocess.run([pv.BIN] + list(args), capture_output=True, text=True, env=e, timeout=60)


def claim_status(env, token):
    return env.api("POST", "/internal/v1/claim",
                   {"worker_id": "rot", "tier": "standard", "wait_ms": 0}, token=token).status


def test_token_refuses_unknown_users_and_foreign_data(env):
    env.start_server()
    env.add_user("zoe")
    r = cli(env, "token", "nobody", "--data", env.data)
    assert r.returncode == 1 and "no user 'nobody'" in r.stderr and not r.stdout, r
    # A data directory that is not the server's: no database there (embedded defaults) ...
    other = os.path.join(env.dir, "elsewhere")
    r = cli(env, "token", "zoe", "--data", other, drop=("DATABASE_URL",))
    assert r.returncode == 1 and "no database at" in r.stderr and not r.stdout, r
    assert not os.path.exists(other), "token must not create a data directory"
    # ... or no secret there: the server was given JWT_SECRET, so its data directory has none,
    # and token must not invent one the server would refuse.
    r = cli(env, "token", "zoe", "--data", env.data, drop=("JWT_SECRET",))
    assert r.returncode == 1 and "jwt_secret does not exist" in r.stderr and not r.stdout, r
    assert not os.path.exists(os.path.join(env.data, "jwt_secret"))
    tok = cli(env, "token", "zoe", "--data", env.data).stdout.strip()
    assert env.api("GET", "/api/v1/credits", token=tok).status == 200


def test_rotation_accepts_the_previous_secrets(env):
    env.start_server()
    old_tok = env.add_user("rita")
    assert claim_status(env, OLD_WTOKEN) in (200, 204)
    env.stop(env.server)
    # Step 1: the new secrets, the old ones as *_PREVIOUS: tokens of both are accepted.
    env.extra_env.update({"JWT_SECRET": NEW_JWT, "JWT_SECRET_PREVIOUS": OLD_JWT,
                          "PINGVAS_WORKER_TOKEN": NEW_WTOKEN,
                          "PINGVAS_WORKER_TOKEN_PREVIOUS": OLD_WTOKEN})
    env.start_server()
    new_tok = cli(env, "token", "rita", "--data", env.data).stdout.strip()
    assert new_tok and new_tok != old_tok
    for tok in (old_tok, new_tok):
        assert env.api("GET", "/api/v1/credits", token=tok).status == 200
        assert env.create(tok).status == 201
    assert claim_status(env, OLD_WTOKEN) in (200, 204)
    assert claim_status(env, NEW_WTOKEN) in (200, 204)
    assert claim_status(env, "some-other-token-0123456789") == 401
    other = pv.run_cli("token", "rita", data=env.data,
                       env={**env.env(), "JWT_SECRET": "a-third-secret-0123456789"}).stdout.strip()
    assert env.api("GET", "/api/v1/credits", token=other).status == 401
    env.stop(env.server)
    # Step 2: the overlap window is over: only the new secrets.
    del env.extra_env["JWT_SECRET_PREVIOUS"]
    del env.extra_env["PINGVAS_WORKER_TOKEN_PREVIOUS"]
    env.start_server()
    r = env.api("GET", "/api/v1/credits", token=old_tok)
    assert r.status == 401 and "signature" in r.json()["error"]["message"], r
    assert env.api("GET", "/api/v1/credits", token=new_tok).status == 200
    assert claim_status(env, OLD_WTOKEN) == 401
    assert claim_status(env, NEW_WTOKEN) in (200, 204)
    # A previous secret shorter than a secret may be is a configuration error.
    r = cli(env, "server", "--port", "0", "--data", env.data,
            extra={"JWT_SECRET_PREVIOUS": "short"})
    assert r.returncode == 2 and "JWT_SECRET_PREVIOUS" in r.stderr, r


def test_disabled_user_is_refused(env):
    env.start_server()
    tok = env.add_user("mallory", credits=1000)
    jid = env.create(tok).json()["id"]
    r = pv.run_cli("user", "disable", "mallory", data=env.data, env=env.env())
    assert "disabled" in r.stdout
    for method, path in [("GET", "/api/v1/credits"), ("GET", f"/api/v1/generation/{jid}"),
                         ("GET", "/api/v1/generation"),
                         ("POST", f"/api/v1/generation/{jid}/cancel")]:
        r = env.api(method, path, token=tok)
        assert r.status == 403 and r.json()["error"]["code"] == "user_disabled", (path, r)
    r = env.create(tok)
    assert r.status == 403 and r.json()["error"]["code"] == "user_disabled", r
    assert "'pingvas user enable mallory'" in r.json()["error"]["message"]
    r = cli(env, "token", "mallory", "--data", env.data)
    assert r.returncode == 1 and "disabled" in r.stderr and not r.stdout, r
    # Disabling twice keeps it disabled; an unknown user is an error.
    pv.run_cli("user", "disable", "mallory", data=env.data, env=env.env())
    r = pv.run_cli("user", "disable", "nobody", data=env.data, env=env.env(), check=False)
    assert r.returncode == 1 and "no user 'nobody'" in r.stderr, r
    pv.run_cli("user", "enable", "mallory", data=env.data, env=env.env())
    assert env.api("GET", "/api/v1/credits", token=tok).status == 200
    assert env.api("GET", f"/api/v1/generation/{jid}", token=tok).status == 200
    assert env.create(tok).status == 201


def test_second_server_on_a_held_port_fails(env):
    env.start_server()
    port = env.url.rsplit(":", 1)[1]
    other = os.path.join(env.dir, "other")
    r = cli(env, "server", "--port", port, "--data", other, drop=("DATABASE_URL",))
    assert r.returncode == 1 and "cannot listen on 127.0.0.1:" + port in r.stderr, r
    assert pv.http("GET", env.url + "/healthz").status == 200


def test_ipv6_bind(env):
    env.start_server("--bind", "::1")
    assert env.url.startswith("http://[::1]:"), env.url
    assert pv.http("GET", env.url + "/healthz").status == 200
    r = cli(env, "server", "--port", "0", "--data", env.data, "--bind", "localhost")
    assert r.returncode == 1 and "not an IPv4 or IPv6 address" in r.stderr, r


if __name__ == "__main__":
    pv.main([pv.clean_exit(t) for t in [
        test_token_refuses_unknown_users_and_foreign_data,
        test_rotation_accepts_the_previous_secrets, test_disabled_user_is_refused,
        test_second_server_on_a_held_port_fails, test_ipv6_bind]])
