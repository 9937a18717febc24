"""pv_s3.py: a fresh S3 bucket per test on the loopback S3-compatible server.

scripts/services/s3.sh starts the server and exports PINGVAS_TEST_S3_ENDPOINT,
PINGVAS_TEST_S3_ACCESS_KEY, PINGVAS_TEST_S3_SECRET_KEY (and PINGVAS_TEST_S3_REGION). The requests
made here are signed with SigV4 in the Python standard library (hmac, hashlib), independently of
pingvas's C signer, so a test can also check pingvas's presigned URLs against this one.
"""
import datetime
import hashlib
import hmac
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def config():
    """(endpoint, region, access_key, secret_key) or raises with what to run."""
    ep = os.environ.get("PINGVAS_TEST_S3_ENDPOINT")
    if not ep:
        raise AssertionError(
            "PINGVAS_TEST_S3_ENDPOINT is not set: start the S3 test server with "
            "`eval \"$(scripts/services/s3.sh)\"` (scripts/test.sh does this), then run again")
    return (ep.rstrip("/"), os.environ.get("PINGVAS_TEST_S3_REGION", "us-east-1"),
            os.environ.get("PINGVAS_TEST_S3_ACCESS_KEY", "S3RVER"),
            os.environ.get("PINGVAS_TEST_S3_SECRET_KEY", "S3RVER"))


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret, date, region, service="s3"):
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service),
                 "aws4_request")


def _quote(s, safe="/"):
    return urllib.parse.quote(s, safe=safe + "-_.~")


def presign(method, url, expires=3600, now=None, key=None, secret=None, region=None):
    """A SigV4 presigned URL (X-Amz-SignedHeaders=host) for url, as of now (epoch seconds)."""
    _, reg, ak, sk = config()
    key, secret, region = key or ak, secret or sk, region or reg
    u = urllib.parse.urlsplit(url)
    t = time.gmtime(now if now is not None else time.time())
    amz_date, date = time.strftime("%Y%m%dT%H%M%SZ", t), time.strftime("%Y%m%d", t)
    scope = f"{date}/{region}/s3/aws4_request"
    params = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{key}/{scope}",
              "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires),
              "X-Amz-SignedHeaders": "host"}
    query = "&".join(f"{_quote(k, '')}={_quote(v, '')}" for k, v in sorted(params.items()))
    path = _quote(urllib.parse.unquote(u.path or "/"))
    creq = f"{method}\n{path}\n{query}\nhost:{u.netloc}\n\nhost\nUNSIGNED-PAYLOAD"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    sig = hmac.new(signing_key(secret, date, region), sts.encode(), hashlib.sha256).hexdigest()
    return f"{u.scheme}://{u.netloc}{path}?{query}&X-Amz-Signature={sig}"


def request(method, path, body=b"", query=""):
    """One header-signed request to the test server; returns (status, body bytes)."""
    ep, region, ak, sk = config()
    u = urllib.parse.urlsplit(ep)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, date = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    canon_path = _quote(path)
    headers = {"host": u.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    creq = "\n".join([method, canon_path, query,
                      "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
    scope = f"{date}/{region}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    sig = hmac.new(signing_key(sk, date, region), sts.encode(), hashlib.sha256).hexdigest()
    h = {k: v for k, v in headers.items() if k != "host"}
    h["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, "
                          f"Signature={sig}")
    url = ep + canon_path + ("?" + query if query else "")
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                 method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def create_bucket(bucket):
    st, body = request("PUT", "/" + bucket)
    if st != 200:
        raise AssertionError(f"cannot create bucket {bucket}: HTTP {st} {body[:300]!r}")


def delete_bucket(bucket):
    """Deletes every object in bucket, then the bucket. Best effort for leftovers."""
    for _ in range(100):
        st, body = request("GET", "/" + bucket)
        if st != 200:
            break
        keys = re.findall(rb"<Key>(.*?)</Key>", body)
        if not keys:
            break
        for k in keys:
            request("DELETE", f"/{bucket}/" + urllib.parse.unquote(k.decode()))
    request("DELETE", "/" + bucket)


def provision(name):
    """A fresh bucket for test `name`: (env for pingvas, cleanup function)."""
    ep, region, ak, sk = config()
    slug = re.sub(r"[^a-z0-9-]", "-", name.lower())[:30].strip("-") or "t"
    bucket = f"pv-{slug}-{uuid.uuid4().hex[:12]}"
    create_bucket(bucket)
    env = {"STORAGE_URL": f"s3://{bucket}/images", "AWS_ENDPOINT_URL": ep, "AWS_REGION": region,
           "AWS_ACCESS_KEY_ID": ak, "AWS_SECRET_ACCESS_KEY": sk}
    return env, lambda: delete_bucket(bucket)
