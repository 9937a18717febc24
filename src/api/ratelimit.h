/* ratelimit.h: per-key token buckets (requests per second with a burst). Thread safe. */
#ifndef PINGVAS_RATELIMIT_H
#define PINGVAS_RATELIMIT_H

#include <stdint.h>

typedef struct ratelimit ratelimit_t;

/* rate tokens per second, burst bucket size. NULL on allocation failure. */
ratelimit_t *ratelimit_new(double rate, int burst);
void ratelimit_free(ratelimit_t *rl);
/* Takes one token for key at now_ms. 1 if allowed; 0 if not, with *retry_after_s set. */
int ratelimit_take(ratelimit_t *rl, const char *key, int64_t now_ms, double *retry_after_s);

#endif
