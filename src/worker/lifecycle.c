#include "worker/lifecycle.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/wire.h"
#include "lib/clock.h"
#include "lib/httpc.h"
#include "lib/log.h"
#include "worker/imds.h"

struct lifecycle {
    const worker_config_t *cfg;
    httpc_t *h; /* under mu */
    char url[1024];
    char worker_id[160];
    char instance_type[64], capacity_type[32], zone[64];
    int gpus;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, thread_ok;
    pthread_t thread;
    int64_t busy_ms;   /* finished jobs; under mu */
    int64_t job_start; /* monotonic ms of the running job, 0 when idle; under mu */
};

/* The placement: the configuration's when any part is given, else the node's labels on
 * Kubernetes, else IMDSv2's when it is on. */
static void placement(lifecycle_t *l, const worker_config_t *cfg)
{
    int given = (cfg->instance_type && *cfg->instance_type) ||
                (cfg->capacity_type && *cfg->capacity_type) || (cfg->zone && *cfg->zone);
    if (!given && cfg->guard)
        given = pod_guard_placement(cfg->guard, l->instance_type, sizeof l->instance_type,
                                    l->capacity_type, sizeof l->capacity_type, l->zone,
                                    sizeof l->zone) == 0
                    ? 2
                    : 0;
    if (!given && cfg->imds_url && *cfg->imds_url)
        imds_placement(cfg->imds_url, l->instance_type, sizeof l->instance_type, l->capacity_type,
                       sizeof l->capacity_type, l->zone, sizeof l->zone);
    if (given == 1) {
        snprintf(l->instance_type, sizeof l->instance_type, "%s",
                 cfg->instance_type ? cfg->instance_type : "");
        snprintf(l->capacity_type, sizeof l->capacity_type, "%s",
                 cfg->capacity_type ? cfg->capacity_type : "");
        snprintf(l->zone, sizeof l->zone, "%s", cfg->zone ? cfg->zone : "");
    }
    l->gpus = cfg->instance_gpus > 0 ? cfg->instance_gpus : 1;
    log_info("event=worker_placement worker=%s instance_type=%s capacity_type=%s zone=%s gpus=%d",
             l->worker_id, l->instance_type[0] ? l->instance_type : "unknown",
             l->capacity_type[0] ? l->capacity_type : "unknown", l->zone[0] ? l->zone : "unknown",
             l->gpus);
}

/* Sends one report; called with mu held. */
static void send_report(lifecycle_t *l, const char *event)
{
    int64_t busy = l->busy_ms + (l->job_start ? clock_mono_ms() - l->job_start : 0);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:f}", "worker_id", l->worker_id,
                          "tier", l->cfg->tier, "event", event, "instance_type", l->instance_type,
                          "capacity_type", l->capacity_type, "zone", l->zone, "gpus", l->gpus,
                          "busy_s", (double)busy / 1000.0);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body || !l->h) {
        free(body);
        return;
    }
    httpc_req_t req = {.method = "POST",
                       .url = l->url,
                       .bearer = l->cfg->token,
                       .body = body,
                       .body_len = strlen(body),
                       .timeout_ms = 5000};
    httpc_resp_t resp;
    httpc_do(l->h, &req, &resp);
    if (resp.status != 200)
        log_warn("event=lifecycle_report_failed worker=%s report=%s status=%ld err=\"%s\"",
                 l->worker_id, event, resp.status, resp.error);
    httpc_resp_free(&resp);
    free(body);
}

static void *alive_main(void *arg)
{
    lifecycle_t *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        struct timespec ts = clock_deadline(LIFECYCLE_ALIVE_MS);
        while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) == 0)
            ;
        if (!l->stop)
            send_report(l, "alive");
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

lifecycle_t *lifecycle_start(const worker_config_t *cfg, const char *worker_id)
{
    lifecycle_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->cfg = cfg;
    l->h = httpc_new();
    snprintf(l->url, sizeof l->url, "%s" WIRE_PATH_WORKER_REPORT, cfg->server_url);
    snprintf(l->worker_id, sizeof l->worker_id, "%s", worker_id);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    placement(l, cfg);
    pthread_mutex_lock(&l->mu);
    send_report(l, "started");
    pthread_mutex_unlock(&l->mu);
    l->thread_ok = pthread_create(&l->thread, NULL, alive_main, l) == 0;
    return l;
}

void lifecycle_loaded(lifecycle_t *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    send_report(l, "loaded");
    pthread_mutex_unlock(&l->mu);
}

void lifecycle_busy(lifecycle_t *l, int busy)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    int64_t now = clock_mono_ms();
    if (busy && !l->job_start)
        l->job_start = now;
    else if (!busy && l->job_start) {
        l->busy_ms += now - l->job_start;
        l->job_start = 0;
    }
    pthread_mutex_unlock(&l->mu);
}

void lifecycle_end(lifecycle_t *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->thread_ok)
        pthread_join(l->thread, NULL);
    lifecycle_busy(l, 0);
    pthread_mutex_lock(&l->mu);
    send_report(l, "ended");
    pthread_mutex_unlock(&l->mu);
    if (l->h)
        httpc_free(l->h);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
