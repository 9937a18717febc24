/* jwtcache.h: the outcome of verified tokens, so that a client sending the same bearer token
 * many times a second costs one HS256 verification per second, not one per request.
 *
 * A verification (jwt_verify_hs256_role) is a function of the token, the secrets and the second
 * it runs at (exp, nbf and iat are compared at a one-second grain). An entry holds a token that
 * verified OK and the second now_s it was verified at, and answers only lookups at that same
 * second: a hit gives exactly what verifying again would give, so expiry, not-before and the
 * leeway are honoured to the second, and a clock steered backwards or forwards simply misses.
 * The secrets must stay the same for the cache's lifetime (the server's are fixed at start; a
 * rotation is a restart with JWT_SECRET_PREVIOUS). Whether the user exists or is disabled is not
 * a property of the token and is never cached: the caller checks the store on every request.
 * Failed verifications are not cached. Tokens are compared in constant time. Thread-safe. */
#ifndef PINGVAS_JWTCACHE_H
#define PINGVAS_JWTCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/jwt.h"

#define JWTCACHE_SLOTS 64       /* direct-mapped by a hash of the token */
#define JWTCACHE_TOKEN_MAX 1024 /* longer tokens are verified every time */
#define JWTCACHE_SUB_MAX 128    /* bytes of a cached subject, NUL included */

typedef struct jwtcache jwtcache_t;

/* A new empty cache (NULL when out of memory: callers then verify every time). */
jwtcache_t *jwtcache_new(void);
void jwtcache_free(jwtcache_t *c);
/* 1 with sub (sub_size bytes) and role filled when token verified OK at now_s and is cached;
 * 0 otherwise (c may be NULL). */
int jwtcache_get(jwtcache_t *c, const char *token, size_t len, int64_t now_s, char *sub,
                 size_t sub_size, char role[JWT_ROLE_MAX]);
/* Records that token verified OK at now_s with subject sub and role ("" without one). */
void jwtcache_put(jwtcache_t *c, const char *token, size_t len, int64_t now_s, const char *sub,
                  const char *role);

#endif
