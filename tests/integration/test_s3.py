"""The S3 image store against a real S3-compatible server on loopback (scripts/services/s3.sh):
the server signs its own calls, workers upload to presigned PUT URLs and never see a credential,
image_url is a presigned GET (or PUBLIC_IMAGE_BASE_URL + key), the S3 server refuses tampered and
expired URLs, and a wrong endpoint, bucket or key stops the server from starting.

Runs on every stack; without PINGVAS_TEST_S3_ENDPOINT it fails and says to run
scripts/services/s3.sh."""
import os
import subprocess
import time
import urllib.parse

import pv
import pv_s3

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def use_s3(env, **extra):
    """Points env at a fresh bucket (the production stack already did); returns the S3 env."""
    if not env.extra_env.get("STORAGE_URL", "").startswith("s3://"):
        s3env, drop = pv_s3.provision(env.dir.rsplit("/", 1)[-1][:24])
        env.extra_env.update(s3env)
        env.cleanups.append(drop)
    env.extra_env.update(extra)
    return env.extra_env


def bucket_and_prefix(s3env):
    rest = s3env["STORAGE_URL"][len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def object_url(s3env, key):
    bucket, prefix = bucket_and_prefix(s3env)
    return f"{s3env['AWS_ENDPOINT_URL']}/{bucket}/{prefix + '/' if prefix else ''}{key}"


def claim(env, wait_ms=5000):
    return env.api("POST", "/internal/v1/claim", {"worker_id": "raw", "tier": "standard",
                                                  "wait_ms": wait_ms}, token=pv.WORKER_TOKEN)


def query_of(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def tamper_signature(url):
    sig = query_of(url)["X-Amz-Signature"]
    flipped = ("0" if sig[-1] != "0" else "1")
    return url.replace("X-Amz-Signature=" + sig, "X-Amz-Signature=" + sig[:-1] + flipped)


def start_fails(env, *args, extra=None):
    """Runs `pingvas server` expecting it to refuse to start; returns its stderr."""
    e = env.env()
    e.update(extra or {})
    p = subprocess.run([pv.BIN, "server", "--port", "0", "--data", env.data] + list(args),
                       capture_output=True, text=True, env=e, timeout=60)
    assert p.returncode != 0, f"server started: {p.stdout} {p.stderr}"
    assert "listening on" not in p.stdout, p.stdout
    return p.stderr


def test_job_image_is_presigned_get(env):
    s3env = use_s3(env)
    env.start_server()
    tok = env.add_user("s3user")
    env.start_worker()
    j = env.create(tok, {"prompt": "a lighthouse", "width": 256, "height": 192, "steps": 2}).json()
    j = env.wait_status(tok, j["id"], "completed", timeout=60)
    url = j["image_url"]
    want = url.split("?")[0]
    assert want.startswith(object_url(s3env, f"jobs/{j['id']}-")) and want.endswith(".png"), url
    q = query_of(url)
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and q["X-Amz-SignedHeaders"] == "host"
    assert q["X-Amz-Expires"] == str(7 * 86400), q
    assert q["X-Amz-Credential"].startswith(s3env["AWS_ACCESS_KEY_ID"] + "/")
    assert s3env["AWS_SECRET_ACCESS_KEY"] not in url
    r = pv.http("GET", url)
    assert r.status == 200, r
    assert pv.png_size(r.body) == (256, 192)
    assert r.headers.get("Content-Type") == "image/png", r.headers
    # The object is in the bucket (read back with an independent signer), not on local disk.
    st, body = pv_s3.request("GET", urllib.parse.urlsplit(want).path)
    assert st == 200 and body == r.body
    assert env.api("GET", f"/images/jobs/{j['id']}.png").status == 404
    assert not os.path.exists(os.path.join(env.data, "images", "jobs"))
    # The worker used no credentials: nothing secret in its environment is needed.
    assert "upload_failed" not in env.log("worker-w0.log")


def test_public_image_base_url(env):
    use_s3(env, PUBLIC_IMAGE_BASE_URL="https://cdn.example.test/img/")
    s3env = env.extra_env
    _, prefix = bucket_and_prefix(s3env)
    env.start_server()
    tok = env.add_user("cdnuser")
    env.start_worker()
    jid = env.create(tok, {"prompt": "cdn", "steps": 1}).json()["id"]
    j = env.wait_status(tok, jid, "completed", timeout=60)
    key = f"{prefix + '/' if prefix else ''}jobs/{jid}-"
    assert j["image_url"].startswith(f"https://cdn.example.test/img/{key}"), j["image_url"]
    assert len(j["image_url"]) == len(f"https://cdn.example.test/img/{key}") + 32 + 4


def test_worker_gets_presigned_put_without_credentials(env):
    s3env = use_s3(env)
    env.start_server()
    tok = env.add_user("rawclaim")
    jid = env.create(tok, {"prompt": "raw", "width": 64, "height": 64, "steps": 1}).json()["id"]
    r = claim(env)
    assert r.status == 200, r
    c = r.json()
    assert c["job"]["id"] == jid
    up = c["upload"]
    assert up["method"] == "PUT" and up["needs_lease"] is False, up
    url = up["url"]
    # A key nobody else can name: jobs/<id>-<128-bit tag>.png (issue 16).
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    assert url.startswith(object_url(s3env, f"jobs/{jid}-")) and name.endswith(".png"), url
    assert len(name) == len(f"{jid}-") + 32 + 4, name
    q = query_of(url)
    assert "X-Amz-Signature" in q and q["X-Amz-SignedHeaders"] == "host"
    assert "X-Amz-Security-Token" not in q
    # Nothing secret anywhere in the claim: not the secret key, not the derived signing key.
    raw = r.body.decode()
    assert s3env["AWS_SECRET_ACCESS_KEY"] not in raw
    date = q["X-Amz-Date"][:8]
    assert pv_s3.signing_key(s3env["AWS_SECRET_ACCESS_KEY"], date, "us-east-1").hex() not in raw
    # Valid for the lease plus an hour, signed just now.
    assert int(q["X-Amz-Expires"]) == c["lease_ms"] // 1000 + 3600, q
    signed_at = time.mktime(time.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ")) - time.timezone
    assert abs(signed_at - time.time()) < 120, q["X-Amz-Date"]
    # The same URL from an independent SigV4 implementation (Python's hmac/hashlib).
    again = pv_s3.presign("PUT", url.split("?")[0], expires=int(q["X-Amz-Expires"]),
                          now=signed_at)
    assert query_of(again)["X-Amz-Signature"] == q["X-Amz-Signature"], (again, url)
    # A worker with no credentials at all: a tampered URL is refused, the real one accepted.
    body = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
    bad = pv.http("PUT", tamper_signature(url), body, raw=True,
                  headers={"Content-Type": "image/png"})
    assert bad.status == 403 and b"SignatureDoesNotMatch" in bad.body, bad
    other = url.replace(f"jobs/{name}", f"jobs/{jid}.png")
    bad = pv.http("PUT", other, body, raw=True, headers={"Content-Type": "image/png"})
    assert bad.status == 403, bad
    # Completing before the upload is refused: the server checks the bucket (HEAD) first.
    r = env.api("POST", f"/internal/v1/jobs/{jid}/complete",
                {"lease_id": c["lease_id"], "gpu_seconds": 0.5}, token=pv.WORKER_TOKEN)
    assert r.status == 409 and r.json()["error"]["code"] == "image_missing", r
    ok = pv.http("PUT", url, body, raw=True, headers={"Content-Type": "image/png"})
    assert ok.status == 200, ok
    r = env.api("POST", f"/internal/v1/jobs/{jid}/complete",
                {"lease_id": c["lease_id"], "gpu_seconds": 0.5}, token=pv.WORKER_TOKEN)
    assert r.status == 200, r
    j = env.job(tok, jid)
    assert j["status"] == "completed"
    got = pv.http("GET", j["image_url"])
    assert got.status == 200 and got.body == body


def test_tampered_and_expired_urls_refused(env):
    use_s3(env)
    env.start_server()
    tok = env.add_user("tamper")
    env.start_worker()
    jid = env.create(tok, {"prompt": "t", "steps": 1}).json()["id"]
    url = env.wait_status(tok, jid, "completed", timeout=60)["image_url"]
    assert pv.http("GET", url).status == 200
    r = pv.http("GET", tamper_signature(url))
    assert r.status == 403 and b"SignatureDoesNotMatch" in r.body, r
    # A holder cannot stretch its URL's lifetime, nor point it at another object.
    q = query_of(url)
    longer = url.replace("X-Amz-Expires=" + q["X-Amz-Expires"], "X-Amz-Expires=604000")
    assert pv.http("GET", longer).status == 403
    assert pv.http("GET", url.replace(f"jobs/{jid}", "jobs/x")).status == 403
    # Expired: a URL signed two hours ago for one hour.
    old = pv_s3.presign("GET", url.split("?")[0], expires=3600, now=time.time() - 7200)
    r = pv.http("GET", old)
    assert r.status == 403 and b"expired" in r.body, r
    # Freshly signed the same way, it works: the refusal above is the expiry, not the signer.
    assert pv.http("GET", pv_s3.presign("GET", url.split("?")[0])).status == 200


def test_server_signed_put_and_head(env):
    """The server's own calls, signed by libcurl (CURLOPT_AWS_SIGV4): a server-hosted upload
    (PUT /internal/v1/jobs/ID/image stores through blob_put), small and over 1 MiB (where libcurl
    sends Expect: 100-continue), then complete (HEAD) and read back."""
    s3env = use_s3(env)
    env.start_server()
    tok = env.add_user("srvput")
    for size in (100, 1536 * 1024):
        jid = env.create(tok, {"prompt": "srv", "steps": 1}).json()["id"]
        c = claim(env).json()
        assert c["job"]["id"] == jid
        body = PNG_MAGIC + os.urandom(size)
        r = env.api("PUT", f"/internal/v1/jobs/{jid}/image", body, token=pv.WORKER_TOKEN,
                    raw=True, headers={"X-Pingvas-Lease": c["lease_id"],
                                       "Content-Type": "image/png"})
        assert r.status == 200, r
        r = env.api("POST", f"/internal/v1/jobs/{jid}/complete",
                    {"lease_id": c["lease_id"], "gpu_seconds": 0.1}, token=pv.WORKER_TOKEN)
        assert r.status == 200, r
        url = env.job(tok, jid)["image_url"]
        st, got = pv_s3.request("GET", urllib.parse.urlsplit(url).path)
        assert st == 200 and got == body, (st, len(got))
        img = pv.http("GET", url)
        assert img.status == 200 and img.body == body
        assert img.headers.get("Content-Type") == "image/png"
    assert "s3_put_failed" not in env.log("server.log")


def test_bad_configuration_stops_start(env):
    s3env = use_s3(env)
    err = start_fails(env, extra={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert "unreachable" in err and "AWS_ENDPOINT_URL" in err and "127.0.0.1:9" in err, err
    err = start_fails(env, extra={"AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    assert "refused access" in err and "AWS_SECRET_ACCESS_KEY" in err, err
    bucket, _ = bucket_and_prefix(s3env)
    err = start_fails(env, extra={"STORAGE_URL": f"s3://{bucket}-missing/p"})
    assert "does not exist" in err and f"{bucket}-missing" in err, err
    err = start_fails(env, extra={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert "AWS_ACCESS_KEY_ID" in err and "AWS_SECRET_ACCESS_KEY" in err, err
    err = start_fails(env, extra={"STORAGE_URL": "s3://Bad_Bucket/x"})
    assert "bucket name" in err, err
    err = start_fails(env, extra={"AWS_ENDPOINT_URL": "ftp://127.0.0.1:59000"})
    assert "http://" in err, err
    # And the right configuration starts.
    env.start_server()


if __name__ == "__main__":
    pv.main([test_job_image_is_presigned_get, test_public_image_base_url,
             test_worker_gets_presigned_put_without_credentials,
             test_tampered_and_expired_urls_refused, test_server_signed_put_and_head,
             test_bad_configuration_stops_start])
