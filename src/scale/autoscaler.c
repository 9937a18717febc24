#include "scale/autoscaler.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/job.h"
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"

struct autoscaler {
    supervisor_t *sup;
    autoscale_policy_t policy[2];
    autoscale_history_t history[2];
    autoscaler_io_t io;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int poked;
};

autoscaler_t *autoscaler_new(supervisor_t *sup, const autoscale_policy_t policies[2],
                             autoscaler_io_t io, char *err, unsigned long errlen)
{
    for (int t = 0; t < 2; t++)
        if (policies[t].max_replicas > 0 &&
            autoscale_policy_validate(&policies[t], err, errlen) != 0)
            return NULL;
    autoscaler_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->sup = sup;
    a->io = io;
    for (int t = 0; t < 2; t++) {
        a->policy[t] = policies[t];
        autoscale_history_init(&a->history[t]);
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    return a;
}

void autoscaler_free(autoscaler_t *a)
{
    if (!a)
        return;
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void autoscaler_poke(autoscaler_t *a)
{
    pthread_mutex_lock(&a->mu);
    a->poked = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void autoscaler_wait(autoscaler_t *a, int64_t max_ms)
{
    struct timespec ts = clock_deadline(max_ms);
    pthread_mutex_lock(&a->mu);
    while (!a->poked)
        if (pthread_cond_timedwait(&a->cv, &a->mu, &ts) != 0)
            break;
    a->poked = 0;
    pthread_mutex_unlock(&a->mu);
}

static void step_tier(autoscaler_t *a, int t, int64_t now)
{
    const autoscale_policy_t *p = &a->policy[t];
    if (p->max_replicas <= 0)
        return;
    int64_t queued, running;
    if (a->io.stats(a->io.arg, tier_names[t], &queued, &running) != 0)
        return;
    sup_worker_info_t w[SUP_MAX_SLOTS];
    int n = supervisor_list(a->sup, tier_names[t], w, SUP_MAX_SLOTS);
    int idle = 0;
    for (int i = 0; i < n; i++)
        if (w[i].state == 'I' || w[i].state == 'R')
            idle++;
    autoscale_metrics_t m = {
        .queued = queued, .running = running, .current_replicas = n, .idle_replicas = idle};
    autoscale_decision_t d;
    if (autoscale_decide(p, &m, &a->history[t], now, &d) != 0) {
        log_warn("event=autoscale_error tier=%s reason=\"%s\"", tier_names[t], d.reason);
        return;
    }
    if (d.desired_replicas > n) {
        int got = supervisor_scale_up(a->sup, tier_names[t], d.desired_replicas);
        char reason[AUTOSCALE_REASON_SIZE + 64];
        if (got < d.desired_replicas)
            snprintf(reason, sizeof reason, "%s (capped at %d by free GPU slots)", d.reason, got);
        else
            snprintf(reason, sizeof reason, "%s", d.reason);
        if (got != n)
            a->io.event(a->io.arg, tier_names[t], n, got, reason);
    } else if (d.stop_idle > 0 || d.desired_replicas < n) {
        /* Retire the most recently started idle workers first; never a busy one. */
        int want = d.stop_idle > 0 ? d.stop_idle : n - d.desired_replicas;
        int stopped = 0;
        for (int i = n - 1; i >= 0 && stopped < want; i--)
            if ((w[i].state == 'I' || w[i].state == 'R') &&
                supervisor_retire_worker(a->sup, w[i].worker_id) == 0)
                stopped++;
        if (stopped)
            a->io.event(a->io.arg, tier_names[t], n, n - stopped, d.reason);
    }
}

void autoscaler_step(autoscaler_t *a, int64_t now_ms)
{
    for (int t = 0; t < 2; t++)
        step_tier(a, t, now_ms);
}
