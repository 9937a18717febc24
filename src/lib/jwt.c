/* jwt.c: HS256 JSON Web Tokens (RFC 7519 / RFC 7515), and nothing else.
 *
 * Verification order matters: the token's shape, its three base64url parts and the header
 * (alg exactly "HS256") are checked first, then the HMAC in constant time, and only after the
 * signature matches is the payload parsed and any claim looked at. */
#include "lib/jwt.h"

#include <jansson.h>
#include <math.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hmac.h"

#define HS256_LEN HMAC_SHA256_LEN

/* The one header we mint. Verification does not depend on its exact bytes. */
static const char jwt_header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

char *jwt_sign_hs256(const char *secret, size_t secret_len, const char *sub, int64_t now_s,
                     int64_t ttl_s)
{
    return jwt_sign_hs256_role(secret, secret_len, sub, NULL, now_s, ttl_s);
}

/* Returns a malloc'd token (caller frees) or NULL: NULL also for an empty secret or subject,
 * a role that is empty or JWT_ROLE_MAX bytes or more, a negative ttl or a time that does not
 * fit. */
char *jwt_sign_hs256_role(const char *secret, size_t secret_len, const char *sub, const char *role,
                          int64_t now_s, int64_t ttl_s)
{
    char *token = NULL, *h64 = NULL, *p64 = NULL, *payload = NULL, *s64 = NULL;
    json_t *claims = NULL;
    if (!secret || secret_len == 0 || secret_len > INT32_MAX || !sub || !*sub || ttl_s < 0 ||
        now_s < 0 || now_s > INT64_MAX - ttl_s)
        goto out;
    if (role && (!*role || strlen(role) >= JWT_ROLE_MAX))
        goto out;
    claims = json_pack("{s:s, s:I, s:I}", "sub", sub, "iat", (json_int_t)now_s, "exp",
                       (json_int_t)(now_s + ttl_s));
    if (!claims || (role && json_object_set_new(claims, "role", json_string(role)) != 0))
        goto out;
    payload = json_dumps(claims, JSON_COMPACT);
    if (!payload)
        goto out;
    h64 = b64url_encode((const unsigned char *)jwt_header_json, strlen(jwt_header_json));
    p64 = b64url_encode((const unsigned char *)payload, strlen(payload));
    if (!h64 || !p64)
        goto out;
    size_t hl = strlen(h64), pl = strlen(p64);
    size_t signing_len = hl + 1 + pl;
    /* header "." payload "." signature(43) NUL */
    char *buf = malloc(signing_len + 1 + 43 + 1);
    if (!buf)
        goto out;
    memcpy(buf, h64, hl);
    buf[hl] = '.';
    memcpy(buf + hl + 1, p64, pl);
    buf[signing_len] = '\0';
    unsigned char mac[HS256_LEN];
    if (hmac_sha256(secret, secret_len, buf, signing_len, mac) != 0) {
        free(buf);
        goto out;
    }
    s64 = b64url_encode(mac, sizeof mac);
    OPENSSL_cleanse(mac, sizeof mac);
    if (!s64 || strlen(s64) != 43) {
        free(buf);
        goto out;
    }
    buf[signing_len] = '.';
    memcpy(buf + signing_len + 1, s64, 44); /* with its NUL */
    token = buf;
out:
    free(h64);
    free(p64);
    free(s64);
    free(payload);
    json_decref(claims);
    return token;
}

/* Reads a NumericDate claim. Returns 1 and fills *v when present and a finite number, 0 when
 * absent, -1 when present but not a number. Fractional seconds are kept in the double. */
static int numeric_date(json_t *claims, const char *name, double *v)
{
    json_t *x = json_object_get(claims, name);
    if (!x)
        return 0;
    if (!json_is_number(x))
        return -1;
    *v = json_number_value(x);
    return isfinite(*v) ? 1 : -1;
}

/* Parses a decoded part as a JSON object with no duplicate keys. Returns a new reference or
 * NULL. */
static json_t *parse_object(const unsigned char *buf, size_t len)
{
    json_t *v = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

int jwt_verify_hs256(const char *token, size_t token_len, const char *secret, size_t secret_len,
                     int64_t now_s, char *sub_out, size_t sub_size)
{
    char role[JWT_ROLE_MAX];
    return jwt_verify_hs256_role(token, token_len, secret, secret_len, now_s, sub_out, sub_size,
                                 role);
}

/* The optional "role" claim: absent leaves role "" and returns 0; a string shorter than
 * JWT_ROLE_MAX is copied; anything else returns -1 (the token is malformed). */
static int role_claim(json_t *claims, char *role)
{
    json_t *r = json_object_get(claims, "role");
    role[0] = '\0';
    if (!r)
        return 0;
    if (!json_is_string(r) || json_string_length(r) >= JWT_ROLE_MAX)
        return -1;
    memcpy(role, json_string_value(r), json_string_length(r) + 1);
    return 0;
}

/* The time claims against now: exp required, nbf and iat optional. JWT_OK or the refusal. */
static int check_times(json_t *claims, int64_t now_s)
{
    double exp = 0, nbf = 0, iat = 0, now = (double)now_s;
    int has = numeric_date(claims, "exp", &exp);
    if (has <= 0 || exp + JWT_LEEWAY_S < now)
        return JWT_EXPIRED;
    has = numeric_date(claims, "nbf", &nbf);
    if (has < 0)
        return JWT_MALFORMED;
    if (has > 0 && nbf > now + JWT_LEEWAY_S)
        return JWT_NOT_YET;
    has = numeric_date(claims, "iat", &iat);
    if (has < 0)
        return JWT_MALFORMED;
    return has > 0 && iat > now + JWT_LEEWAY_S ? JWT_NOT_YET : JWT_OK;
}

/* The claims, once the signature matched: times, role, subject (copied into sub_out). */
static int check_claims(json_t *claims, int64_t now_s, char *sub_out, size_t sub_size,
                        char role_out[JWT_ROLE_MAX])
{
    int rc = check_times(claims, now_s);
    if (rc != JWT_OK)
        return rc;
    if (role_claim(claims, role_out) != 0)
        return JWT_MALFORMED;
    json_t *sub = json_object_get(claims, "sub");
    size_t n = json_string_length(sub);
    if (!json_is_string(sub) || !sub_out || n == 0 || n >= sub_size)
        return JWT_NO_SUBJECT;
    memcpy(sub_out, json_string_value(sub), n + 1);
    return JWT_OK;
}

/* The header: alg exactly "HS256" and no "crit" (RFC 7515 4.1.11: extensions we do not
 * understand must be refused). */
static int check_header(const unsigned char *hdr, size_t len)
{
    json_t *header = parse_object(hdr, len);
    json_t *alg = json_object_get(header, "alg");
    int rc = !header ? JWT_MALFORMED
             : !json_is_string(alg) || json_string_length(alg) != 5 ||
                     strcmp(json_string_value(alg), "HS256") != 0
                 ? JWT_BAD_ALG
             : json_object_get(header, "crit") ? JWT_MALFORMED
                                               : JWT_OK;
    json_decref(header);
    return rc;
}

/* The HMAC of the signed part (token up to its second dot) against sig, in constant time. */
static int check_signature(const char *token, size_t signed_len, const unsigned char *sig,
                           size_t sig_len, const char *secret, size_t secret_len)
{
    unsigned char mac[HS256_LEN];
    if (!secret || secret_len == 0 || secret_len > INT32_MAX ||
        hmac_sha256(secret, secret_len, token, signed_len, mac) != 0)
        return JWT_BAD_SIG;
    int same = sig_len == HS256_LEN && CRYPTO_memcmp(mac, sig, HS256_LEN) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return same ? JWT_OK : JWT_BAD_SIG;
}

int jwt_verify_hs256_role(const char *token, size_t token_len, const char *secret,
                          size_t secret_len, int64_t now_s, char *sub_out, size_t sub_size,
                          char role_out[JWT_ROLE_MAX])
{
    int rc = JWT_MALFORMED;
    unsigned char *hdr = NULL, *pay = NULL, *sig = NULL;
    size_t hdr_len = 0, pay_len = 0, sig_len = 0;
    json_t *claims = NULL;
    if (sub_out && sub_size > 0)
        sub_out[0] = '\0';
    role_out[0] = '\0';
    if (!token || token_len == 0 || token_len > JWT_MAX_LEN)
        goto out;
    /* Exactly three parts: two dots. */
    const char *d1 = memchr(token, '.', token_len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', token_len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d2 || memchr(d2 + 1, '.', token_len - (size_t)(d2 + 1 - token)) || d1 == token ||
        d2 == d1 + 1)
        goto out;
    hdr = b64url_decode(token, (size_t)(d1 - token), &hdr_len);
    pay = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pay_len);
    sig = b64url_decode(d2 + 1, token_len - (size_t)(d2 + 1 - token), &sig_len);
    if (!hdr || !pay || !sig || (rc = check_header(hdr, hdr_len)) != JWT_OK)
        goto out;
    /* The signature, before anything in the payload is believed. */
    rc = check_signature(token, (size_t)(d2 - token), sig, sig_len, secret, secret_len);
    if (rc != JWT_OK)
        goto out;
    claims = parse_object(pay, pay_len);
    rc = claims ? check_claims(claims, now_s, sub_out, sub_size, role_out) : JWT_MALFORMED;
out:
    if (rc != JWT_OK)
        role_out[0] = '\0';
    free(hdr);
    free(pay);
    free(sig);
    json_decref(claims);
    return rc;
}

const char *jwt_strerror(int rc)
{
    switch (rc) {
    case JWT_OK:
        return "ok";
    case JWT_MALFORMED:
        return "token is malformed (expected three base64url parts of JSON)";
    case JWT_BAD_ALG:
        return "token algorithm is not HS256";
    case JWT_BAD_SIG:
        return "token signature does not match";
    case JWT_EXPIRED:
        return "token expired or has no exp claim";
    case JWT_NOT_YET:
        return "token is not valid yet (nbf or iat in the future)";
    case JWT_NO_SUBJECT:
        return "token has no usable sub claim";
    default:
        return "unknown token error";
    }
}
