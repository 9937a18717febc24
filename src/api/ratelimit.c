#include "api/ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RL_SLOTS 4096 /* cap: at most this many keys tracked; a full table recycles idle ones */
#define RL_KEY_MAX 64

typedef struct bucket {
    char key[RL_KEY_MAX + 1];
    double tokens;
    int64_t last_ms;
    int used;
} bucket_t;

struct ratelimit {
    double rate;
    double burst;
    pthread_mutex_t mu;
    bucket_t slots[RL_SLOTS];
};

ratelimit_t *ratelimit_new(double rate, int burst)
{
    ratelimit_t *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->rate = rate;
    rl->burst = burst;
    pthread_mutex_init(&rl->mu, NULL);
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int ratelimit_take(ratelimit_t *rl, const char *key, int64_t now_ms, double *retry_after_s)
{
    pthread_mutex_lock(&rl->mu);
    size_t start = hash(key) % RL_SLOTS;
    bucket_t *b = NULL, *victim = NULL;
    for (size_t i = 0; i < 16; i++) {
        bucket_t *c = &rl->slots[(start + i) % RL_SLOTS];
        if (c->used && strncmp(c->key, key, RL_KEY_MAX) == 0) {
            b = c;
            break;
        }
        if (!c->used && !victim)
            victim = c;
    }
    if (!b) {
        if (!victim) /* probe window full: recycle the least recently used of it */
            for (size_t i = 0; i < 16; i++) {
                bucket_t *c = &rl->slots[(start + i) % RL_SLOTS];
                if (!victim || c->last_ms < victim->last_ms)
                    victim = c;
            }
        b = victim;
        memset(b, 0, sizeof *b);
        memcpy(b->key, key, strnlen(key, RL_KEY_MAX));
        b->used = 1;
        b->tokens = rl->burst;
        b->last_ms = now_ms;
    }
    double elapsed = (double)(now_ms - b->last_ms) / 1000.0;
    if (elapsed > 0) {
        b->tokens += elapsed * rl->rate;
        if (b->tokens > rl->burst)
            b->tokens = rl->burst;
        b->last_ms = now_ms;
    }
    int ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    else
        *retry_after_s = (1.0 - b->tokens) / rl->rate;
    pthread_mutex_unlock(&rl->mu);
    return ok;
}
