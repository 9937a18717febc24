/* test_jwtcache.c: the cache of verified tokens answers only for the same token at the same
 * second it was verified at, gives back its subject and role, and misses otherwise. */
#include <stdlib.h>

#include "lib/jwtcache.h"
#include "t.h"

static void test_same_token_same_second_only(void)
{
    jwtcache_t *c = jwtcache_new();
    char sub[65], role[JWT_ROLE_MAX];
    const char *tok = "aaa.bbb.ccc";
    CHECK(c != NULL);
    CHECK_INT(jwtcache_get(c, tok, strlen(tok), 100, sub, sizeof sub, role), 0);
    jwtcache_put(c, tok, strlen(tok), 100, "alice", "admin");
    CHECK_INT(jwtcache_get(c, tok, strlen(tok), 100, sub, sizeof sub, role), 1);
    CHECK_STR(sub, "alice");
    CHECK_STR(role, "admin");
    /* another second (later: exp may have passed; earlier: a clock steered back): a miss */
    CHECK_INT(jwtcache_get(c, tok, strlen(tok), 101, sub, sizeof sub, role), 0);
    CHECK_INT(jwtcache_get(c, tok, strlen(tok), 99, sub, sizeof sub, role), 0);
    /* another token of the same length, a prefix, a longer one: misses */
    CHECK_INT(jwtcache_get(c, "aaa.bbb.ccd", 11, 100, sub, sizeof sub, role), 0);
    CHECK_INT(jwtcache_get(c, tok, strlen(tok) - 1, 100, sub, sizeof sub, role), 0);
    CHECK_INT(jwtcache_get(c, "aaa.bbb.cccc", 12, 100, sub, sizeof sub, role), 0);
    /* a subject that does not fit the caller's buffer: a miss, not a truncation */
    CHECK_INT(jwtcache_get(c, tok, strlen(tok), 100, sub, 5, role), 0);
    /* re-verified at a new second: a hit at that second only */
    jwtcache_put(c, tok, strlen(tok), 101, "alice", "");
    CHECK_INT(jwtcache_get(c, tok, strlen(tok), 101, sub, sizeof sub, role), 1);
    CHECK_STR(role, "");
    CHECK_INT(jwtcache_get(c, tok, strlen(tok), 100, sub, sizeof sub, role), 0);
    jwtcache_free(c);
}

static void test_many_tokens_and_limits(void)
{
    jwtcache_t *c = jwtcache_new();
    char tok[64], sub[65], role[JWT_ROLE_MAX];
    for (int i = 0; i < 500; i++) {
        snprintf(tok, sizeof tok, "t%d.payload.sig", i);
        snprintf(sub, sizeof sub, "user%d", i);
        jwtcache_put(c, tok, strlen(tok), 7, sub, "");
    }
    /* whatever is still cached answers with its own subject; evicted ones miss */
    int hits = 0;
    for (int i = 0; i < 500; i++) {
        char want[65];
        snprintf(tok, sizeof tok, "t%d.payload.sig", i);
        snprintf(want, sizeof want, "user%d", i);
        if (jwtcache_get(c, tok, strlen(tok), 7, sub, sizeof sub, role)) {
            hits++;
            CHECK_STR(sub, want);
        }
    }
    CHECK(hits > 0 && hits <= JWTCACHE_SLOTS);
    /* a token too long to cache is never cached; a NULL cache never hits */
    char *big = malloc(JWTCACHE_TOKEN_MAX + 1);
    memset(big, 'x', JWTCACHE_TOKEN_MAX);
    big[JWTCACHE_TOKEN_MAX] = '\0';
    jwtcache_put(c, big, JWTCACHE_TOKEN_MAX, 7, "bob", "");
    CHECK_INT(jwtcache_get(c, big, JWTCACHE_TOKEN_MAX, 7, sub, sizeof sub, role), 0);
    free(big);
    jwtcache_put(NULL, "a.b.c", 5, 7, "bob", "");
    CHECK_INT(jwtcache_get(NULL, "a.b.c", 5, 7, sub, sizeof sub, role), 0);
    jwtcache_free(c);
}

#define TESTS(X) X(test_same_token_same_second_only) X(test_many_tokens_and_limits)
#include "t_main.h"
