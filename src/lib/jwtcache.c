/* jwtcache.c: see jwtcache.h. */
#include "lib/jwtcache.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    size_t len; /* 0: empty */
    int64_t at_s;
    char token[JWTCACHE_TOKEN_MAX];
    char sub[JWTCACHE_SUB_MAX];
    char role[JWT_ROLE_MAX];
} slot_t;

struct jwtcache {
    pthread_mutex_t mu;
    slot_t slot[JWTCACHE_SLOTS];
};

jwtcache_t *jwtcache_new(void)
{
    jwtcache_t *c = calloc(1, sizeof *c);
    if (c)
        pthread_mutex_init(&c->mu, NULL);
    return c;
}

void jwtcache_free(jwtcache_t *c)
{
    if (!c)
        return;
    OPENSSL_cleanse(c->slot, sizeof c->slot);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* FNV-1a of the token, to pick its slot (the slot's token is compared in full). */
static slot_t *slot_of(jwtcache_t *c, const char *token, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)token[i]) * 1099511628211ULL;
    return &c->slot[h % JWTCACHE_SLOTS];
}

int jwtcache_get(jwtcache_t *c, const char *token, size_t len, int64_t now_s, char *sub,
                 size_t sub_size, char role[JWT_ROLE_MAX])
{
    if (!c || len == 0 || len >= JWTCACHE_TOKEN_MAX)
        return 0;
    slot_t *s = slot_of(c, token, len);
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    if (s->len == len && s->at_s == now_s && CRYPTO_memcmp(s->token, token, len) == 0 &&
        strlen(s->sub) < sub_size) {
        memcpy(sub, s->sub, strlen(s->sub) + 1);
        memcpy(role, s->role, JWT_ROLE_MAX);
        hit = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void jwtcache_put(jwtcache_t *c, const char *token, size_t len, int64_t now_s, const char *sub,
                  const char *role)
{
    if (!c || len == 0 || len >= JWTCACHE_TOKEN_MAX || strlen(sub) >= JWTCACHE_SUB_MAX ||
        strlen(role) >= JWT_ROLE_MAX)
        return;
    slot_t *s = slot_of(c, token, len);
    pthread_mutex_lock(&c->mu);
    memcpy(s->token, token, len);
    s->len = len;
    s->at_s = now_s;
    memcpy(s->sub, sub, strlen(sub) + 1);
    memcpy(s->role, role, strlen(role) + 1);
    pthread_mutex_unlock(&c->mu);
}
