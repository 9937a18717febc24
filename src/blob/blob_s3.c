/* blob_s3.c: the S3 image store. STORAGE_URL=s3://bucket/prefix; place from the environment
 * (AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), credentials from the AWS SDKs' chain
 * (awscreds.h: environment, web identity, container, IMDSv2; temporary ones refreshed before they
 * expire and carried as x-amz-security-token). The server signs its own calls (bucket check, HEAD,
 * PUT) with libcurl's CURLOPT_AWS_SIGV4; workers get a presigned PUT URL per job and hold no
 * credentials. Clients get PUBLIC_IMAGE_BASE_URL + "/" + key, or a presigned GET valid for 7 days.
 * See docs/storage.md. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob/awscreds.h"
#include "blob/blob.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "blob/sigv4.h"
#include "lib/url.h"

#define S3_KEY_MAX 1024            /* bytes; S3's own limit on a key */
#define S3_URL_MAX 8192            /* bytes; cap on any URL built here */
#define S3_ERRBODY_MAX 512         /* bytes of an error response kept for messages */
#define S3_GET_TTL_S (7 * 86400)   /* presigned GET lifetime: the SigV4 maximum */
#define S3_CONNECT_TIMEOUT_MS 5000 /* server calls: connect */
#define S3_TIMEOUT_MS 30000        /* server calls: whole request */

typedef struct blob_s3 {
    blob_t base; /* first: a blob_t * is a blob_s3_t * */
    char *bucket;
    char *prefix; /* "" or "a/b" (no leading, trailing or doubled slashes) */
    char *region;
    aws_chain_t *creds; /* the credential chain; aws_chain_get per signed request */
    char *scheme;       /* "http" or "https" */
    char *host;         /* as signed and sent: "127.0.0.1:59000", "b.s3.us-east-1.amazonaws.com" */
    char *base_path;    /* unencoded path before the key: "/bucket" (path style) or "" */
    char *endpoint;     /* for messages: "http://127.0.0.1:59000" */
    char *public_base;  /* NULL or the CDN prefix, no trailing slash */
    char sigv4_param[128]; /* "aws:amz:REGION:s3" */
} blob_s3_t;

/* strdup that treats NULL as NULL; sets *oom on allocation failure of a non-NULL string. */
static char *dup_or_null(const char *s, int *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* A key (or prefix) is 1..S3_KEY_MAX bytes of segments separated by single '/', none empty, "."
 * or "..", and no control character or backslash. */
static int key_is_safe(const char *key)
{
    if (!key || !key[0])
        return 0;
    size_t len = strnlen(key, S3_KEY_MAX + 1);
    if (len > S3_KEY_MAX)
        return 0;
    const char *seg = key;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c == '/' || c == '\0') {
            size_t n = (size_t)(key + i - seg);
            if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                return 0;
            seg = key + i + 1;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c == '\\')
            return 0;
    }
    return 1;
}

/* S3 bucket naming rules: 3..63 of [a-z0-9.-], starting and ending with a letter or digit. */
static int bucket_is_valid(const char *b, size_t n)
{
    if (n < 3 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '.' || c == '-'))
            return 0;
        if (!alnum && (i == 0 || i == n - 1))
            return 0;
    }
    return 1;
}

/* The unencoded object path: base_path + "/" + prefix + "/" + key, into buf. 0 or -1. */
static int object_path(const blob_s3_t *s, const char *key, char *buf, size_t size)
{
    if (!key_is_safe(key))
        return -1;
    int n = snprintf(buf, size, "%s/%s%s%s", s->base_path, s->prefix, s->prefix[0] ? "/" : "", key);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* scheme://host + the encoded path (+ "?" + query). 0 or -1. */
static int make_url(const blob_s3_t *s, const char *path, const char *query, char *buf, size_t size)
{
    char enc[S3_URL_MAX];
    if (sigv4_uri_encode(path, 1, enc, sizeof enc) < 0)
        return -1;
    int n = snprintf(buf, size, "%s://%s%s%s%s", s->scheme, s->host, enc, query ? "?" : "",
                     query ? query : "");
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int presign(const blob_s3_t *s, const char *method, const char *key, int64_t ttl_s,
                   char *url, size_t size)
{
    char path[S3_URL_MAX], query[S3_URL_MAX], err[512];
    aws_creds_t *cr = malloc(sizeof *cr);
    if (!cr || aws_chain_get(s->creds, cr, err, sizeof err) != 0) {
        if (cr)
            log_error("event=s3_presign_failed key=%s err=\"%s\"", key, err);
        free(cr);
        return -1;
    }
    /* A presigned URL carries the session token too, so it cannot outlive the credentials. */
    if (cr->expires_ms) {
        int64_t left = (cr->expires_ms - clock_now_ms()) / 1000;
        ttl_s = ttl_s < left ? ttl_s : left;
    }
    sigv4_signer_t sg = {.access_key = cr->access_key,
                         .secret_key = cr->secret_key,
                         .session_token = cr->session_token,
                         .region = s->region,
                         .service = "s3",
                         .now = clock_now_ms() / 1000};
    if (ttl_s < 1)
        ttl_s = 1;
    if (ttl_s > SIGV4_MAX_EXPIRES)
        ttl_s = SIGV4_MAX_EXPIRES;
    int rc = -1;
    if (object_path(s, key, path, sizeof path) == 0 &&
        sigv4_presign(&sg, method, s->host, path, ttl_s, query, sizeof query) == 0)
        rc = make_url(s, path, query, url, size);
    aws_creds_wipe(cr);
    free(cr);
    return rc;
}

/* The first S3_ERRBODY_MAX bytes of a response body, for error messages. */
typedef struct s3_body {
    char text[S3_ERRBODY_MAX + 1];
    size_t len;
} s3_body_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    s3_body_t *b = userdata;
    size_t n = size * nmemb, room = S3_ERRBODY_MAX - b->len;
    size_t take = n < room ? n : room;
    memcpy(b->text + b->len, ptr, take);
    b->len += take;
    b->text[b->len] = '\0';
    return n;
}

/* The <Code> of an S3 XML error body ("NoSuchBucket"), or "" when there is none. */
static void error_code(const s3_body_t *b, char *code, size_t size)
{
    code[0] = '\0';
    const char *p = strstr(b->text, "<Code>");
    if (!p)
        return;
    p += 6;
    const char *e = strstr(p, "</Code>");
    if (e && (size_t)(e - p) < size)
        snprintf(code, size, "%.*s", (int)(e - p), p);
}

/* Appends "Name: value" to *hdrs (libcurl copies it). Sets *oom when it cannot. */
static void add_header(struct curl_slist **hdrs, const char *name, const char *value, int *oom)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    struct curl_slist *tmp = NULL;
    if (line) {
        snprintf(line, n, "%s: %s", name, value);
        tmp = curl_slist_append(*hdrs, line);
        memset(line, 0, n);
        free(line);
    }
    if (tmp)
        *hdrs = tmp;
    else
        *oom = 1;
}

/* The headers of a signed call: payload hash (S3 wants it in x-amz-content-sha256; libcurl signs
 * it and uses it), the session token of temporary credentials, the body's type. NULL on OOM. */
static struct curl_slist *call_headers(const aws_creds_t *cr, const void *body, size_t len,
                                       const char *content_type)
{
    struct curl_slist *hdrs = NULL;
    char hash[65];
    int oom = 0;
    sigv4_sha256_hex(body, body ? len : 0, hash);
    add_header(&hdrs, "x-amz-content-sha256", hash, &oom);
    if (cr->session_token[0])
        add_header(&hdrs, "x-amz-security-token", cr->session_token, &oom);
    if (body)
        add_header(&hdrs, "Content-Type", content_type ? content_type : "application/octet-stream",
                   &oom);
    /* No "Expect:" suppression header here: libcurl 7.88 signs the empty header it then omits,
     * and S3 refuses the signature. */
    if (oom) {
        curl_slist_free_all(hdrs);
        return NULL;
    }
    return hdrs;
}

/* One request signed by libcurl (SigV4, service s3) with the chain's current credentials:
 * method "HEAD", "DELETE" (body NULL) or "PUT" (with body). Returns the HTTP status, or 0 on a
 * transport error (err says why). code gets the S3 error code when the body has one. */
static long s3_call(const blob_s3_t *s, const char *method, const char *path, const void *body,
                    size_t len, const char *content_type, char *code, size_t code_size, char *err,
                    size_t errlen)
{
    char url[S3_URL_MAX];
    long status = 0;
    struct curl_slist *hdrs = NULL;
    s3_body_t resp = {.len = 0};
    resp.text[0] = '\0';
    if (code_size)
        code[0] = '\0';
    err[0] = '\0';
    if (make_url(s, path, NULL, url, sizeof url) != 0) {
        snprintf(err, errlen, "object path too long");
        return 0;
    }
    aws_creds_t *cr = malloc(sizeof *cr);
    CURL *c = cr ? curl_easy_init() : NULL;
    if (!c) {
        snprintf(err, errlen, "cannot create an HTTP client (out of memory)");
        goto out;
    }
    if (aws_chain_get(s->creds, cr, err, errlen) != 0)
        goto out;
    hdrs = call_headers(cr, body, len, content_type);
    if (!hdrs) {
        snprintf(err, errlen, "cannot build the request headers");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)S3_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)S3_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4_param);
    curl_easy_setopt(c, CURLOPT_USERNAME, cr->access_key);
    curl_easy_setopt(c, CURLOPT_PASSWORD, cr->secret_key);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        }
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s", curl_easy_strerror(rc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (code_size)
        error_code(&resp, code, code_size);
out:
    curl_slist_free_all(hdrs);
    if (c)
        curl_easy_cleanup(c);
    if (cr)
        aws_creds_wipe(cr);
    free(cr);
    return status;
}

static int s3_put(blob_t *b, const char *key, const void *data, size_t len)
{
    blob_s3_t *s = (blob_s3_t *)b;
    char path[S3_URL_MAX], code[64], err[256];
    if (object_path(s, key, path, sizeof path) != 0 || (len > 0 && !data))
        return -1;
    size_t kl = strlen(key);
    const char *ct =
        kl > 4 && strcmp(key + kl - 4, ".png") == 0 ? "image/png" : "application/octet-stream";
    long st =
        s3_call(s, "PUT", path, data ? data : "", len, ct, code, sizeof code, err, sizeof err);
    if (st >= 200 && st < 300)
        return 0;
    log_error("event=s3_put_failed bucket=%s key=%s status=%ld code=%s err=\"%s\"", s->bucket, key,
              st, code, err);
    return -1;
}

static int s3_exists(blob_t *b, const char *key)
{
    blob_s3_t *s = (blob_s3_t *)b;
    char path[S3_URL_MAX], code[64], err[256];
    if (object_path(s, key, path, sizeof path) != 0)
        return -1;
    long st = s3_call(s, "HEAD", path, NULL, 0, NULL, code, sizeof code, err, sizeof err);
    if (st >= 200 && st < 300)
        return 1;
    if (st == 404)
        return 0;
    log_warn("event=s3_head_failed bucket=%s key=%s status=%ld err=\"%s\"", s->bucket, key, st,
             err);
    return -1;
}

static int s3_delete(blob_t *b, const char *key)
{
    blob_s3_t *s = (blob_s3_t *)b;
    char path[S3_URL_MAX], code[64], err[256];
    if (object_path(s, key, path, sizeof path) != 0)
        return -1;
    long st = s3_call(s, "DELETE", path, NULL, 0, NULL, code, sizeof code, err, sizeof err);
    if ((st >= 200 && st < 300) || st == 404)
        return 0;
    log_warn("event=s3_delete_failed bucket=%s key=%s status=%ld code=%s err=\"%s\"", s->bucket,
             key, st, code, err);
    return -1;
}

/* A presigned PUT for key, valid ttl_s seconds (clamped to 1..7 days): the worker needs no
 * credentials and no lease header. */
static int s3_upload_target(blob_t *b, const char *key, const char *job_id, int64_t ttl_s,
                            upload_target_t *out)
{
    blob_s3_t *s = (blob_s3_t *)b;
    memset(out, 0, sizeof *out);
    if (presign(s, "PUT", key, ttl_s, out->url, sizeof out->url) != 0) {
        log_error("event=s3_presign_failed key=%s (URL longer than %zu bytes or unsafe key)", key,
                  sizeof out->url);
        memset(out, 0, sizeof *out);
        return -1;
    }
    snprintf(out->method, sizeof out->method, "PUT");
    out->needs_lease = 0;
    return 0;
}

/* public_base + "/" + prefix/key (encoded, '/' kept), or a presigned GET valid 7 days.
 * malloc'd; caller frees. NULL for an unsafe key or on allocation failure. */
static char *s3_public_url(blob_t *b, const char *key)
{
    blob_s3_t *s = (blob_s3_t *)b;
    char url[S3_URL_MAX];
    if (s->public_base) {
        char full[S3_URL_MAX], enc[S3_URL_MAX];
        int n = snprintf(full, sizeof full, "%s%s%s", s->prefix, s->prefix[0] ? "/" : "", key);
        if (!key_is_safe(key) || n < 0 || (size_t)n >= sizeof full ||
            sigv4_uri_encode(full, 1, enc, sizeof enc) < 0)
            return NULL;
        n = snprintf(url, sizeof url, "%s/%s", s->public_base, enc);
        if (n < 0 || (size_t)n >= sizeof url)
            return NULL;
        return strdup(url);
    }
    if (presign(s, "GET", key, S3_GET_TTL_S, url, sizeof url) != 0)
        return NULL;
    return strdup(url);
}

static int s3_local_path(blob_t *b, const char *key, char *buf, size_t size)
{
    if (buf && size)
        buf[0] = '\0';
    return -1; /* not a filesystem store: /images/ answers 404 */
}

static void s3_close(blob_t *b)
{
    blob_s3_t *s = (blob_s3_t *)b;
    if (!s)
        return;
    free(s->bucket);
    free(s->prefix);
    free(s->region);
    aws_chain_close(s->creds);
    free(s->scheme);
    free(s->host);
    free(s->base_path);
    free(s->endpoint);
    free(s->public_base);
    free(s);
}

static const struct blob_ops s3_ops = {
    .name = "s3",
    .close = s3_close,
    .put = s3_put,
    .exists = s3_exists,
    .del = s3_delete,
    .upload_target = s3_upload_target,
    .public_url = s3_public_url,
    .local_path = s3_local_path,
};

/* Splits "s3://bucket/a//b/" into bucket and a normalised prefix ("a/b"). 0 or -1 with err. */
static int parse_storage_url(blob_s3_t *s, const char *url, char *err, size_t errlen)
{
    const char *p = url + 5; /* after "s3://" */
    size_t blen = strcspn(p, "/?#");
    if (!bucket_is_valid(p, blen)) {
        snprintf(err, errlen,
                 "storage URL \"%s\": the bucket name must be 3 to 63 characters of a-z, 0-9, '.' "
                 "and '-' (s3://bucket/prefix)",
                 url);
        return -1;
    }
    if (p[blen] == '?' || p[blen] == '#') {
        snprintf(err, errlen,
                 "storage URL \"%s\": no query or fragment allowed (s3://bucket/prefix)", url);
        return -1;
    }
    s->bucket = strndup(p, blen);
    const char *rest = p + blen;
    size_t rl = strlen(rest);
    s->prefix = malloc(rl + 1);
    if (!s->bucket || !s->prefix) {
        snprintf(err, errlen, "S3 store: out of memory");
        return -1;
    }
    size_t o = 0;
    for (const char *q = rest; *q; q++) {
        if (*q == '/' && (o == 0 || s->prefix[o - 1] == '/'))
            continue;
        s->prefix[o++] = *q;
    }
    if (o > 0 && s->prefix[o - 1] == '/')
        o--;
    s->prefix[o] = '\0';
    if (o > 0 && (!key_is_safe(s->prefix) || o > S3_KEY_MAX - 128)) {
        snprintf(err, errlen,
                 "storage URL \"%s\": the prefix has an unsafe segment (\".\", \"..\", a control "
                 "character or a backslash) or is too long",
                 url);
        return -1;
    }
    return 0;
}

/* A custom endpoint (MinIO, Ceph, R2, a local test server), path style: scheme://host[:port][/path]
 * read by curl_url() (url.h). 0 or -1 with err. */
static int custom_endpoint(blob_s3_t *s, const char *ep, char *err, size_t errlen)
{
    url_parts_t u;
    char why[128], host[300], buf[1400];
    int bad = url_parse(ep, 0, &u, why, sizeof why) != 0;
    if (bad || (strcmp(u.scheme, "http") != 0 && strcmp(u.scheme, "https") != 0)) {
        if (bad && (strncmp(ep, "http://", 7) == 0 || strncmp(ep, "https://", 8) == 0))
            snprintf(err, errlen,
                     "AWS_ENDPOINT_URL \"%s\": %s; expected scheme://host[:port][/path] with no "
                     "user, query or fragment",
                     ep, why);
        else
            snprintf(err, errlen,
                     "AWS_ENDPOINT_URL \"%s\" must start with http:// or https:// "
                     "(for example http://127.0.0.1:9000)",
                     ep);
        return -1;
    }
    if (u.user[0] || u.has_password || u.has_query || u.has_fragment) {
        snprintf(err, errlen,
                 "AWS_ENDPOINT_URL \"%s\": expected scheme://host[:port][/path] with no user, "
                 "query or fragment",
                 ep);
        return -1;
    }
    /* The Host header clients send omits the scheme's default port; sign what they send. */
    int dflt = strcmp(u.scheme, "http") == 0 ? 80 : 443;
    int v6 = strchr(u.host, ':') != NULL;
    snprintf(host, sizeof host, "%s%s%s", v6 ? "[" : "", u.host, v6 ? "]" : "");
    if (u.port && u.port != dflt)
        snprintf(host + strlen(host), sizeof host - strlen(host), ":%d", u.port);
    size_t pl = strlen(u.path);
    while (pl > 0 && u.path[pl - 1] == '/')
        pl--;
    snprintf(buf, sizeof buf, "%s://%s%.*s", u.scheme, host, (int)pl, u.path);
    s->scheme = strdup(u.scheme);
    s->host = strdup(host);
    s->endpoint = strdup(buf);
    size_t need = pl + strlen(s->bucket) + 2;
    s->base_path = malloc(need);
    if (s->base_path)
        snprintf(s->base_path, need, "%.*s/%s", (int)pl, u.path, s->bucket);
    if (!s->scheme || !s->host || !s->base_path || !s->endpoint) {
        snprintf(err, errlen, "S3 store: out of memory");
        return -1;
    }
    return 0;
}

/* Sets scheme, host, base_path and endpoint from AWS_ENDPOINT_URL, or AWS's own endpoint
 * (virtual-hosted style) when it is unset. 0 or -1 with err. */
static int parse_endpoint(blob_s3_t *s, const char *ep, char *err, size_t errlen)
{
    char buf[1024];
    int n;
    if (!ep) {
        /* AWS: virtual-hosted style, unless the bucket has dots (TLS wildcards do not cover them).
         */
        s->scheme = strdup("https");
        if (strchr(s->bucket, '.')) {
            n = snprintf(buf, sizeof buf, "s3.%s.amazonaws.com", s->region);
            s->base_path = malloc(strlen(s->bucket) + 2);
            if (s->base_path)
                snprintf(s->base_path, strlen(s->bucket) + 2, "/%s", s->bucket);
        } else {
            n = snprintf(buf, sizeof buf, "%s.s3.%s.amazonaws.com", s->bucket, s->region);
            s->base_path = strdup("");
        }
        if (n < 0 || (size_t)n >= sizeof buf) {
            snprintf(err, errlen, "AWS_REGION \"%s\" is too long", s->region);
            return -1;
        }
        s->host = strdup(buf);
        n = snprintf(buf, sizeof buf, "https://%s", s->host ? s->host : "");
        s->endpoint = strdup(buf);
        if (!s->scheme || !s->host || !s->base_path || !s->endpoint) {
            snprintf(err, errlen, "S3 store: out of memory");
            return -1;
        }
        return 0;
    }
    return custom_endpoint(s, ep, err, errlen);
}

/* HEAD the bucket so a wrong endpoint, bucket, region or key stops the start, not the first job. */
static int check_bucket(blob_s3_t *s, char *err, size_t errlen)
{
    char code[64], cerr[256];
    const char *path = s->base_path[0] ? s->base_path : "/";
    long st = s3_call(s, "HEAD", path, NULL, 0, NULL, code, sizeof code, cerr, sizeof cerr);
    if (st >= 200 && st < 300)
        return 0;
    if (st == 0)
        snprintf(err, errlen,
                 "S3 endpoint %s is unreachable (%s): check AWS_ENDPOINT_URL and that the "
                 "service is running",
                 s->endpoint, cerr);
    else if (st == 404)
        snprintf(
            err, errlen,
            "S3 bucket \"%s\" does not exist at %s: create it, or fix the bucket in STORAGE_URL",
            s->bucket, s->endpoint);
    else if (st == 403 || st == 401)
        snprintf(err, errlen,
                 "S3 bucket \"%s\" at %s refused access (HTTP %ld%s%s) to the %s credentials: "
                 "check the role or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, and the bucket "
                 "policy",
                 s->bucket, s->endpoint, st, code[0] ? " " : "", code, aws_chain_source(s->creds));
    else if (st == 301 || st == 400)
        snprintf(err, errlen,
                 "S3 bucket \"%s\" at %s answered HTTP %ld%s%s: is AWS_REGION (%s) the bucket's "
                 "region?",
                 s->bucket, s->endpoint, st, code[0] ? " " : "", code, s->region);
    else
        snprintf(err, errlen, "S3 bucket \"%s\" at %s answered HTTP %ld%s%s", s->bucket,
                 s->endpoint, st, code[0] ? " " : "", code);
    return -1;
}

/* Opens "s3://bucket/prefix" with credentials, region and endpoint from the environment and
 * checks that the bucket answers. public_base (PUBLIC_IMAGE_BASE_URL) may be NULL. Returns a store
 * the caller frees with blob_close, or NULL with err saying what is wrong and what to set. */
blob_t *blob_s3_open(const char *url, const char *public_base, char *err, size_t errlen)
{
    if (!url || strncmp(url, "s3://", 5) != 0) {
        snprintf(err, errlen, "storage URL \"%s\" is not an s3://bucket/prefix URL",
                 url ? url : "");
        return NULL;
    }
    blob_s3_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "S3 store: out of memory");
        return NULL;
    }
    s->base.ops = &s3_ops;
    if (parse_storage_url(s, url, err, errlen) != 0)
        goto fail;
    const char *region = env_nonempty("AWS_REGION");
    if (!region)
        region = env_nonempty("AWS_DEFAULT_REGION");
    if (!region)
        region = "us-east-1";
    for (const char *r = region; *r; r++) {
        if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-') ||
            r - region > 40) {
            snprintf(err, errlen, "AWS_REGION \"%s\" is not a region name (like us-east-1)",
                     region);
            goto fail;
        }
    }
    const char *ep = env_nonempty("AWS_ENDPOINT_URL_S3");
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL");
    int oom = 0;
    s->region = dup_or_null(region, &oom);
    if (public_base && public_base[0]) {
        size_t n = strlen(public_base);
        while (n > 1 && public_base[n - 1] == '/')
            n--;
        s->public_base = strndup(public_base, n);
        oom |= !s->public_base;
    }
    if (oom) {
        snprintf(err, errlen, "S3 store: out of memory");
        goto fail;
    }
    if (parse_endpoint(s, ep, err, errlen) != 0)
        goto fail;
    char cerr[1024];
    s->creds = aws_chain_open(s->region, cerr, sizeof cerr);
    if (!s->creds) {
        snprintf(err, errlen, "storage URL \"%s\" needs S3 credentials: %s", url, cerr);
        goto fail;
    }
    int n = snprintf(s->sigv4_param, sizeof s->sigv4_param, "aws:amz:%s:s3", s->region);
    if (n < 0 || (size_t)n >= sizeof s->sigv4_param) {
        snprintf(err, errlen, "AWS_REGION \"%s\" is too long", s->region);
        goto fail;
    }
    if (check_bucket(s, err, errlen) != 0)
        goto fail;
    log_info("event=s3_store_opened bucket=%s prefix=%s endpoint=%s region=%s credentials=%s "
             "image_urls=%s",
             s->bucket, s->prefix[0] ? s->prefix : "-", s->endpoint, s->region,
             aws_chain_source(s->creds), s->public_base ? "public_base" : "presigned");
    return &s->base;
fail:
    s3_close(&s->base);
    return NULL;
}
