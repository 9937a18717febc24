"""Limits and fairness (issue 4, section 4): the per-user token-bucket rate limit (429 with
Retry-After), the cap on a user's queued jobs (429 too_many_queued), both configurable and both
refusing without creating a job or moving a credit; and fair share within a tier: when user A
has 500 jobs queued and user B then submits 5, B's jobs start long before A's backlog drains."""
import concurrent.futures
import signal
import time

import pv

FAST = ["--lease", "2s", "--heartbeat", "200ms", "--reaper-interval", "100ms"]


def credits(env, tok):
    c = env.api("GET", "/api/v1/credits", token=tok).json()
    return c["balance"], c["reserved"]


def count_jobs(env, tok, status=None):
    n, cursor = 0, None
    while True:
        q = "/api/v1/generation?limit=100" + (f"&status={status}" if status else "")
        if cursor:
            q += f"&cursor={cursor}"
        page = env.api("GET", q, token=tok).json()
        n += len(page["jobs"])
        cursor = page["next_cursor"]
        if not cursor:
            return n


def test_rate_limit_token_bucket(env):
    env.start_server("--rate-limit", "2", "--rate-burst", "5", *FAST)
    a = env.add_user("ann", credits=10000)
    b = env.add_user("ben", credits=10000)
    # The burst passes, the next request is refused with Retry-After.
    for i in range(5):
        r = env.create(a, {"prompt": f"burst {i}", "steps": 1})
        assert r.status == 201, (i, r)
    before = credits(env, a)
    n_before = count_jobs(env, a)
    r = env.create(a, {"prompt": "one too many", "steps": 1})
    assert r.status == 429, r
    assert r.json()["error"]["code"] == "rate_limited", r
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.isdigit() and 1 <= int(ra) <= 1, r.headers
    # Refused requests change nothing, even when they would also be invalid.
    for body in ({"prompt": "x"}, {"prompt": ""}, {"nope": 1}):
        assert env.create(a, body).status == 429
    assert credits(env, a) == before and count_jobs(env, a) == n_before
    # Another user has a bucket of their own.
    for i in range(5):
        assert env.create(b, {"prompt": f"ben {i}", "steps": 1}).status == 201
    # After Retry-After seconds the bucket has a token again (2 per second).
    time.sleep(int(ra) + 0.05)
    assert env.create(a, {"prompt": "after waiting", "steps": 1}).status == 201
    # Reads are not rate limited.
    for _ in range(20):
        assert env.api("GET", "/api/v1/credits", token=a).status == 200


def test_queued_cap_per_user(env):
    env.start_server("--max-queued-per-user", "3", *FAST)
    a = env.add_user("cat", credits=10000)
    b = env.add_user("dan", credits=10000)
    ids = [env.create(a, {"prompt": f"q{i}", "steps": 1}).json()["id"] for i in range(3)]
    before = credits(env, a)
    r = env.create(a, {"prompt": "fourth", "steps": 1})
    assert r.status == 429 and r.json()["error"]["code"] == "too_many_queued", r
    assert credits(env, a) == before and count_jobs(env, a) == 3
    # Idempotent replays of an accepted job are not new jobs and are not refused.
    k = env.create(a, {"prompt": "q0", "steps": 1}, headers={"Idempotency-Key": "k1"})
    assert k.status == 429  # a new key is a new job: refused at the cap
    assert env.create(b, {"prompt": "other user", "steps": 1}).status == 201
    # Freeing a slot (cancel) lets the user submit again.
    assert env.api("POST", f"/api/v1/generation/{ids[0]}/cancel", token=a).status == 200
    assert env.create(a, {"prompt": "fits again", "steps": 1}).status == 201
    # Running jobs do not count as queued: a worker drains one, and one more fits.
    w = env.start_worker("--time-scale", "0.02")
    pv.wait_for(lambda: count_jobs(env, a, "queued") < 3, timeout=30, what="a job to start")
    assert env.create(a, {"prompt": "after a claim", "steps": 1}).status == 201
    env.stop(w)


def test_fair_share_within_tier(env):
    env.start_server(*FAST)
    a = env.add_user("alice", credits=10_000_000)
    b = env.add_user("bob", credits=10_000)
    # About 0.1 s of simulated GPU time per job, two workers.
    job = {"prompt": "backlog", "steps": 20}
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda i: env.create(a, dict(job, seed=i)).status, range(500)))
    assert rs.count(201) == 500, {s: rs.count(s) for s in set(rs)}
    for _ in range(2):
        env.start_worker("--time-scale", "0.03")
    # Let A's backlog start draining, then B arrives.
    pv.wait_for(lambda: count_jobs(env, a, "completed") >= 4, timeout=60, what="A's jobs to run")
    a_done_at_submit = count_jobs(env, a, "completed")
    b_ids = [env.create(b, dict(job, prompt=f"bob {i}")).json()["id"] for i in range(5)]
    for jid in b_ids:
        env.wait_status(b, jid, "completed", timeout=60)
    a_done = count_jobs(env, a, "completed")
    a_queued = count_jobs(env, a, "queued")
    # Fair share: B's 5 jobs needed about 5 of the next ~10 slots; FIFO would have run all of
    # A's ~490 remaining jobs first.
    print(f"A completed when B submitted: {a_done_at_submit}; when B finished: {a_done}; "
          f"A still queued: {a_queued}")
    assert a_done - a_done_at_submit <= 20, (a_done_at_submit, a_done)
    assert a_queued >= 450, a_queued
    # And B's jobs started in submission order among themselves.
    starts = [env.job(b, jid)["started_at"] for jid in b_ids]
    assert starts == sorted(starts), starts


if __name__ == "__main__":
    pv.main([
        pv.clean_exit(test_rate_limit_token_bucket),
        pv.clean_exit(test_queued_cap_per_user),
        pv.clean_exit(test_fair_share_within_tier),
    ])
