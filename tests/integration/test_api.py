"""The public API against the real server: a table of requests and expected answers, then the
flows that need state (credits, idempotency, pagination, cancel, isolation between users)."""
import base64
import hashlib
import hmac
import json
import time

import pv


def b64(d):
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def make_jwt(claims, secret=pv.JWT_SECRET, alg="HS256"):
    h = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    p = b64(json.dumps(claims).encode())
    if alg == "none":
        return f"{h}.{p}."
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


# (name, body, expected status, expected error code, expected field)
CREATE_TABLE = [
    ("minimal", {"prompt": "a cat"}, 201, None, None),
    ("all fields", {"prompt": "a cat", "negative_prompt": "blurry", "model": "sdxl",
                    "width": 1024, "height": 768, "steps": 30, "cfg_scale": 7.5,
                    "seed": 4294967295}, 201, None, None),
    ("missing prompt", {}, 422, "invalid_argument", "prompt"),
    ("empty prompt", {"prompt": ""}, 422, "invalid_argument", "prompt"),
    ("prompt too long", {"prompt": "x" * 2001}, 422, "invalid_argument", "prompt"),
    ("prompt not string", {"prompt": 5}, 422, "invalid_argument", "prompt"),
    ("width not multiple of 8", {"prompt": "a", "width": 500}, 422, "invalid_argument", "width"),
    ("width too small", {"prompt": "a", "width": 56}, 422, "invalid_argument", "width"),
    ("height too big", {"prompt": "a", "height": 2056}, 422, "invalid_argument", "height"),
    ("width string", {"prompt": "a", "width": "512"}, 422, "invalid_argument", "width"),
    ("steps zero", {"prompt": "a", "steps": 0}, 422, "invalid_argument", "steps"),
    ("steps 151", {"prompt": "a", "steps": 151}, 422, "invalid_argument", "steps"),
    ("cfg 31", {"prompt": "a", "cfg_scale": 31}, 422, "invalid_argument", "cfg_scale"),
    ("seed negative", {"prompt": "a", "seed": -1}, 422, "invalid_argument", "seed"),
    ("seed too big", {"prompt": "a", "seed": 4294967296}, 422, "invalid_argument", "seed"),
    ("unknown model", {"prompt": "a", "model": "dalle"}, 422, "invalid_argument", "model"),
    ("unknown field", {"prompt": "a", "sampler": "euler"}, 422, "invalid_argument", "sampler"),
    ("seed null", {"prompt": "a", "seed": None}, 201, None, None),
]


def test_create_validation_table(env):
    env.start_server()
    tok = env.add_user("alice", credits=100000)
    for name, body, status, code, field in CREATE_TABLE:
        r = env.create(tok, body)
        assert r.status == status, (name, r)
        if code:
            err = r.json()["error"]
            assert err["code"] == code, (name, err)
            assert err.get("field") == field, (name, err)
            assert err["message"], name
    # Raw bodies that are not valid JSON objects.
    for raw in [b"", b"{", b"[]", b"null", b"\"x\"", b"{\"prompt\":\"a\",}",
                b"{\"prompt\":\"\xff\xfe\"}"]:
        r = env.create(tok, raw, raw=True, headers={"Content-Type": "application/json"})
        assert r.status in (400, 422), (raw, r)
        assert "error" in r.json()
    r = env.create(tok, b"x" * (64 * 1024 + 1), raw=True,
                   headers={"Content-Type": "application/json"})
    assert r.status == 413, r
    r = env.create(tok, b"prompt=a", raw=True, headers={"Content-Type": "text/plain"})
    assert r.status == 415, r
    # None of the bad requests created a job: only the 201 rows did.
    jobs = env.api("GET", "/api/v1/generation?limit=100", token=tok).json()["jobs"]
    assert len(jobs) == sum(1 for row in CREATE_TABLE if row[2] == 201)
    # Defaults are applied and the seed is chosen by the server when absent.
    j = env.create(tok, {"prompt": "defaults"}).json()
    assert (j["model"], j["width"], j["height"], j["steps"], j["cfg_scale"]) == \
        ("sd15", 512, 512, 20, 7.0)
    assert 0 <= j["seed"] <= 4294967295


def test_authentication(env):
    env.start_server()
    tok = env.add_user("bob")
    now = int(time.time())
    cases = [
        ("no header", None),
        ("garbage", "not.a.jwt"),
        ("expired", make_jwt({"sub": "bob", "exp": now - 3600})),
        ("not yet valid", make_jwt({"sub": "bob", "exp": now + 3600, "nbf": now + 3600})),
        ("wrong key", make_jwt({"sub": "bob", "exp": now + 3600}, secret="another-secret-1234")),
        ("alg none", make_jwt({"sub": "bob", "exp": now + 3600}, alg="none")),
        ("unknown user", make_jwt({"sub": "mallory", "exp": now + 3600})),
    ]
    for name, t in cases:
        r = env.api("GET", "/api/v1/credits", token=t)
        assert r.status == 401, (name, r)
        assert r.json()["error"]["code"] == "unauthenticated", name
        r = env.create(t, {"prompt": "x"})
        assert r.status == 401, (name, r)
    assert env.api("GET", "/api/v1/credits", token=tok).status == 200
    # Within the 60 s leeway an expired token still works.
    assert env.api("GET", "/api/v1/credits",
                   token=make_jwt({"sub": "bob", "exp": now - 30})).status == 200
    # The worker protocol refuses user tokens and no token.
    assert env.api("POST", "/internal/v1/claim", {"worker_id": "x"}, token=tok).status == 401
    assert env.api("POST", "/internal/v1/claim", {"worker_id": "x"}).status == 401


def test_credits_402_creates_nothing(env):
    env.start_server()
    tok = env.add_user("carol", credits=5)  # one 512x512x20 job reserves 4 credits
    assert env.create(tok).status == 201
    r = env.create(tok)
    assert r.status == 402, r
    assert r.json()["error"]["code"] == "insufficient_credits"
    # The message names the user's real numbers and name (not zeros and an empty name).
    msg = r.json()["error"]["message"]
    assert "needs 4 credits but only 1 are available (balance 5, reserved 4)" in msg, msg
    assert "'pingvas user credits carol +N'" in msg, msg
    jobs = env.api("GET", "/api/v1/generation", token=tok).json()["jobs"]
    assert len(jobs) == 1
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    assert c["balance"] == 5 and c["reserved"] == 4 and c["available"] == 1
    # Canceling frees the reservation; nothing is charged.
    env.api("POST", f"/api/v1/generation/{jobs[0]['id']}/cancel", token=tok)
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    assert c["balance"] == 5 and c["reserved"] == 0
    pv.run_cli("user", "credits", "carol", "+100", data=env.data, env=env.env())
    assert env.create(tok).status == 201


def test_idempotency_key(env):
    env.start_server()
    tok = env.add_user("dave")
    r1 = env.create(tok, {"prompt": "once"}, headers={"Idempotency-Key": "k-1"})
    r2 = env.create(tok, {"prompt": "once"}, headers={"Idempotency-Key": "k-1"})
    assert r1.status == 201 and r2.status == 200
    assert r1.json()["id"] == r2.json()["id"]
    # Another user with the same key gets their own job.
    tok2 = env.add_user("erin")
    r3 = env.create(tok2, {"prompt": "once"}, headers={"Idempotency-Key": "k-1"})
    assert r3.status == 201 and r3.json()["id"] != r1.json()["id"]
    assert len(env.api("GET", "/api/v1/generation", token=tok).json()["jobs"]) == 1


def test_list_pagination_and_isolation(env):
    env.start_server()
    tok = env.add_user("frank")
    other = env.add_user("grace")
    ids = [env.create(tok, {"prompt": f"p{i}"}).json()["id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        path = "/api/v1/generation?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = env.api("GET", path, token=tok).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids)), "newest first, each job once"
    assert env.api("GET", "/api/v1/generation?status=queued", token=tok).status == 200
    assert env.api("GET", "/api/v1/generation?status=bogus", token=tok).status == 400
    assert env.api("GET", "/api/v1/generation?limit=0", token=tok).status == 400
    assert env.api("GET", "/api/v1/generation?cursor=abc", token=tok).status == 400
    # Another user's job is 404, for reading and for canceling.
    assert env.api("GET", f"/api/v1/generation/{ids[0]}", token=other).status == 404
    assert env.api("POST", f"/api/v1/generation/{ids[0]}/cancel", token=other).status == 404
    assert env.api("GET", "/api/v1/generation", token=other).json()["jobs"] == []
    assert env.api("GET", "/api/v1/generation/nope", token=tok).status == 404


def test_cancel_queued(env):
    env.start_server()
    tok = env.add_user("heidi")
    jid = env.create(tok).json()["id"]
    r = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert r.status == 200 and r.json()["status"] == "canceled"
    assert r.json()["credits_charged"] == 0
    r = env.api("POST", f"/api/v1/generation/{jid}/cancel", token=tok)
    assert r.status == 409


def test_health_queue_metrics(env):
    env.start_server()
    tok = env.add_user("ivan")
    assert env.api("GET", "/healthz").status == 200
    assert env.api("GET", "/readyz").status == 200
    env.create(tok)
    q = env.api("GET", "/api/v1/queue", token=pv.WORKER_TOKEN).json()
    assert q["tiers"]["standard"]["queued"] == 1
    assert q["tiers"]["standard"]["workers"] == 0
    assert env.api("GET", "/api/v1/queue").status == 401
    assert env.api("GET", "/metrics").status == 401  # fleet totals: operators only
    assert env.api("GET", "/metrics", token=tok).status == 403
    m = env.api("GET", "/metrics", token=pv.WORKER_TOKEN).body.decode()
    assert 'pingvas_jobs_queued{tier="standard"} 1' in m
    assert "pingvas_http_request_duration_seconds_bucket" in m
    assert env.api("GET", "/nope").status == 404
    assert env.api("GET", "/images/../pingvas.db").status == 404
    assert env.api("GET", "/images/jobs/none.png").status == 404


if __name__ == "__main__":
    pv.main([test_create_validation_table, test_authentication, test_credits_402_creates_nothing,
             test_idempotency_key, test_list_pagination_and_isolation, test_cancel_queued,
             test_health_queue_metrics])
