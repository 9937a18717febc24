/* jwt.h: HS256 JSON Web Tokens, and nothing else. */
#ifndef PINGVAS_JWT_H
#define PINGVAS_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "lib/b64.h" /* the base64url codec of the tokens */

#define JWT_LEEWAY_S 60
#define JWT_MAX_LEN 8192
#define JWT_ROLE_MAX 32        /* bytes of the "role" claim, NUL included */
#define JWT_ROLE_ADMIN "admin" /* the operator role (DESIGN section 2) */

enum jwt_rc {
    JWT_OK = 0,
    JWT_MALFORMED = -1,  /* not three base64url parts of JSON objects, too long, ... */
    JWT_BAD_ALG = -2,    /* header alg is not exactly "HS256" (none, RS256, ...) */
    JWT_BAD_SIG = -3,    /* signature does not match */
    JWT_EXPIRED = -4,    /* exp missing, not a number, or exp + leeway < now */
    JWT_NOT_YET = -5,    /* nbf or iat more than leeway in the future */
    JWT_NO_SUBJECT = -6, /* sub missing, not a string, or empty */
};

/* Mints "header.payload.signature" with sub, iat = now_s, exp = now_s + ttl_s. Returns a
 * malloc'd string (caller frees) or NULL. */
char *jwt_sign_hs256(const char *secret, size_t secret_len, const char *sub, int64_t now_s,
                     int64_t ttl_s);
/* The same with a "role" claim when role is not NULL (1 to JWT_ROLE_MAX - 1 bytes, else NULL). */
char *jwt_sign_hs256_role(const char *secret, size_t secret_len, const char *sub, const char *role,
                          int64_t now_s, int64_t ttl_s);
/* Verifies token against secret at now_s with JWT_LEEWAY_S leeway. On JWT_OK copies sub into
 * sub_out (truncation is an error: JWT_NO_SUBJECT). Constant-time signature compare. */
int jwt_verify_hs256(const char *token, size_t token_len, const char *secret, size_t secret_len,
                     int64_t now_s, char *sub_out, size_t sub_size);
/* The same, and copies the "role" claim into role_out ("" without one). A role that is not a
 * string or is JWT_ROLE_MAX bytes or longer makes the token JWT_MALFORMED. role_out is ""
 * unless the result is JWT_OK. */
int jwt_verify_hs256_role(const char *token, size_t token_len, const char *secret,
                          size_t secret_len, int64_t now_s, char *sub_out, size_t sub_size,
                          char role_out[JWT_ROLE_MAX]);
/* A short human reason for a rc ("token expired", ...). */
const char *jwt_strerror(int rc);

#endif
