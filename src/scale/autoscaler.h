/* autoscaler.h: the local autoscaler. Feeds the backlog of each tier to the policy engine
 * (autoscale_policy.h) and applies its decisions to the supervisor: starts workers at once when
 * work arrives, retires only idle workers when the backlog is gone. */
#ifndef PINGVAS_AUTOSCALER_H
#define PINGVAS_AUTOSCALER_H

#include <stdint.h>

#include "scale/autoscale_policy.h"
#include "scale/supervisor.h"

typedef struct autoscaler_io {
    /* The tier's backlog. 0, or -1 when it cannot be read (no decision is taken then). */
    int (*stats)(void *arg, const char *tier, int64_t *queued, int64_t *running);
    /* Records a decision (from -> to workers). */
    void (*event)(void *arg, const char *tier, int from, int to, const char *reason);
    void *arg;
} autoscaler_io_t;

typedef struct autoscaler autoscaler_t;

/* policies[0] standard, policies[1] enterprise; a policy with max_replicas 0 leaves that tier
 * alone. The supervisor is borrowed. NULL with err on an invalid policy. */
autoscaler_t *autoscaler_new(supervisor_t *sup, const autoscale_policy_t policies[2],
                             autoscaler_io_t io, char *err, unsigned long errlen);
void autoscaler_free(autoscaler_t *a);
/* Work may have arrived (thread safe, cheap): wakes autoscaler_wait. */
void autoscaler_poke(autoscaler_t *a);
/* Waits until poked or up to max_ms. */
void autoscaler_wait(autoscaler_t *a, int64_t max_ms);
/* Evaluates both tiers now and applies the decisions. */
void autoscaler_step(autoscaler_t *a, int64_t now_ms);

#endif
