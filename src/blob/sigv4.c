/* sigv4.c: AWS Signature Version 4 with HMAC-SHA256 (lib/hmac.h) and OpenSSL's SHA-256. See
 * sigv4.h; the steps and names follow AWS's "Signature Version 4 signing process": canonical
 * request, string to sign, signing key, signature. */
#include "blob/sigv4.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/b64.h"
#include "lib/hmac.h"

#define SIGV4_CANON_MAX 16384 /* bytes; cap on a canonical request (our requests are < 1 KiB) */
#define SIGV4_SCOPE_MAX 256

int sigv4_format_time(int64_t t, char amz_date[17], char date[9])
{
    if (t < 0 || t > INT64_C(253402300799)) /* 9999-12-31T23:59:59Z */
        return -1;
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm))
        return -1;
    if (amz_date && strftime(amz_date, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        return -1;
    if (date && strftime(date, 9, "%Y%m%d", &tm) != 8)
        return -1;
    return 0;
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(len ? data : (const void *)"", len, md);
    hex_encode(md, sizeof md, out);
}

int sigv4_signing_key(const char *secret, const char *date, const char *region, const char *service,
                      unsigned char out[32])
{
    if (!secret || !date || !region || !service)
        return -1;
    char k[512];
    int n = snprintf(k, sizeof k, "AWS4%s", secret);
    if (n < 0 || (size_t)n >= sizeof k)
        return -1;
    unsigned char a[32], b[32];
    int rc = -1;
    if (hmac_sha256(k, (size_t)n, date, strlen(date), a) != 0 ||
        hmac_sha256(a, 32, region, strlen(region), b) != 0 ||
        hmac_sha256(b, 32, service, strlen(service), a) != 0 ||
        hmac_sha256(a, 32, "aws4_request", 12, out) != 0)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(a, sizeof a);
    OPENSSL_cleanse(b, sizeof b);
    return rc;
}

int sigv4_uri_encode(const char *s, int keep_slash, char *out, size_t size)
{
    static const char HEX[] = "0123456789ABCDEF";
    size_t o = 0;
    if (!s || !out || size == 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        size_t need = plain ? 1 : 3;
        if (o + need >= size) {
            out[0] = '\0';
            return -1;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = HEX[c >> 4];
            out[o++] = HEX[c & 15];
        }
    }
    out[o] = '\0';
    return (int)o;
}

/* A fixed buffer that refuses to overflow: once too small, it stays failed. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int bad;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *fmt, ...)
{
    if (b->bad)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->bad = 1;
        return;
    }
    b->len += (size_t)n;
}

/* "20130524/us-east-1/s3/aws4_request" into scope; the date into date. 0 or -1. */
static int make_scope(const sigv4_signer_t *sg, char amz_date[17], char date[9], char *scope,
                      size_t size)
{
    if (!sg || !sg->access_key || !sg->secret_key || !sg->region || !sg->service ||
        !sg->access_key[0] || !sg->region[0] || !sg->service[0])
        return -1;
    if (sigv4_format_time(sg->now, amz_date, date) != 0)
        return -1;
    int n = snprintf(scope, size, "%s/%s/%s/aws4_request", date, sg->region, sg->service);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* The signature over a canonical request: string to sign, signing key, HMAC. 0 or -1. */
static int sign_canonical(const sigv4_signer_t *sg, const char *amz_date, const char *date,
                          const char *scope, const char *canonical, size_t clen, char sig[65])
{
    char creq_hash[65], sts[512];
    sigv4_sha256_hex(canonical, clen, creq_hash);
    int n = snprintf(sts, sizeof sts, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amz_date, scope, creq_hash);
    if (n < 0 || (size_t)n >= sizeof sts)
        return -1;
    unsigned char key[32], mac[32];
    int rc = -1;
    if (sigv4_signing_key(sg->secret_key, date, sg->region, sg->service, key) != 0 ||
        hmac_sha256(key, sizeof key, sts, (size_t)n, mac) != 0)
        goto out;
    hex_encode(mac, sizeof mac, sig);
    rc = 0;
out:
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

int sigv4_sign(const sigv4_signer_t *sg, const sigv4_request_t *req, char sig[65], char *auth,
               size_t auth_size)
{
    char amz_date[17], date[9], scope[SIGV4_SCOPE_MAX];
    if (!req || !req->method || !req->canonical_uri || !req->payload_hash ||
        (req->n_headers > 0 && !req->headers) ||
        make_scope(sg, amz_date, date, scope, sizeof scope) != 0)
        return -1;
    char canon[SIGV4_CANON_MAX], signed_hdrs[1024];
    sbuf_t c = {canon, 0, sizeof canon, 0}, h = {signed_hdrs, 0, sizeof signed_hdrs, 0};
    sb_add(&c, "%s\n%s\n%s\n", req->method, req->canonical_uri,
           req->canonical_query ? req->canonical_query : "");
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!req->headers[i].name || !req->headers[i].value)
            return -1;
        sb_add(&c, "%s:%s\n", req->headers[i].name, req->headers[i].value);
        sb_add(&h, "%s%s", i ? ";" : "", req->headers[i].name);
    }
    sb_add(&c, "\n%s\n%s", signed_hdrs, req->payload_hash);
    if (c.bad || h.bad)
        return -1;
    if (sign_canonical(sg, amz_date, date, scope, canon, c.len, sig) != 0)
        return -1;
    if (auth) {
        int n = snprintf(auth, auth_size,
                         "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                         sg->access_key, scope, signed_hdrs, sig);
        if (n < 0 || (size_t)n >= auth_size)
            return -1;
    }
    return 0;
}

int sigv4_presign(const sigv4_signer_t *sg, const char *method, const char *host, const char *path,
                  int64_t expires_s, char *query, size_t query_size)
{
    char amz_date[17], date[9], scope[SIGV4_SCOPE_MAX];
    if (!method || !host || !host[0] || !path || path[0] != '/' || !query || query_size == 0 ||
        expires_s < 1 || expires_s > SIGV4_MAX_EXPIRES ||
        make_scope(sg, amz_date, date, scope, sizeof scope) != 0)
        return -1;
    query[0] = '\0';
    char uri[4096], cred[1024], token[4096] = "";
    char credential[SIGV4_SCOPE_MAX + 256];
    int n = snprintf(credential, sizeof credential, "%s/%s", sg->access_key, scope);
    if (n < 0 || (size_t)n >= sizeof credential || sigv4_uri_encode(path, 1, uri, sizeof uri) < 0 ||
        sigv4_uri_encode(credential, 0, cred, sizeof cred) < 0)
        return -1;
    if (sg->session_token && sg->session_token[0] &&
        sigv4_uri_encode(sg->session_token, 0, token, sizeof token) < 0)
        return -1;
    /* The canonical query: parameter names sorted by byte value (Security-Token < SignedHeaders).
     */
    sbuf_t q = {query, 0, query_size, 0};
    sb_add(&q,
           "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%s&X-Amz-Date=%s"
           "&X-Amz-Expires=%lld",
           cred, amz_date, (long long)expires_s);
    if (token[0])
        sb_add(&q, "&X-Amz-Security-Token=%s", token);
    sb_add(&q, "&X-Amz-SignedHeaders=host");
    if (q.bad) {
        query[0] = '\0';
        return -1;
    }
    char canon[SIGV4_CANON_MAX], sig[65];
    sbuf_t c = {canon, 0, sizeof canon, 0};
    sb_add(&c, "%s\n%s\n%s\nhost:%s\n\nhost\n%s", method, uri, query, host, SIGV4_UNSIGNED_PAYLOAD);
    if (c.bad || sign_canonical(sg, amz_date, date, scope, canon, c.len, sig) != 0) {
        query[0] = '\0';
        return -1;
    }
    sb_add(&q, "&X-Amz-Signature=%s", sig);
    if (q.bad) {
        query[0] = '\0';
        return -1;
    }
    return 0;
}
