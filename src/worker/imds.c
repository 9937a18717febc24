#include "worker/imds.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/httpc.h"
#include "lib/log.h"

#define TOKEN_TTL_S 21600
#define DRAIN_MARGIN_MS 5000 /* stop this long before the action time */

struct imds_watch {
    char base[512];
    int64_t poll_ms;
    imds_stop_fn on_notice;
    pthread_t thread;
    atomic_int stop;
    httpc_t *h;
    char token[512];
    int64_t token_expires_mono;
};

int imds_parse_instance_action(const char *body, size_t len, int64_t *time_ms)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    const char *t = o ? json_string_value(json_object_get(o, "time")) : NULL;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int rc = -1;
    if (t) {
        const char *end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
        if (end && (*end == 'Z' || *end == '\0' || *end == '.')) {
            *time_ms = (int64_t)timegm(&tm) * 1000;
            rc = 0;
        }
    }
    json_decref(o);
    return rc;
}

/* Gets an IMDSv2 session token. 0 or -1. */
static int fetch_token(imds_watch_t *w)
{
    char url[600], hdr[80];
    snprintf(url, sizeof url, "%s/latest/api/token", w->base);
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token-ttl-seconds: %d", TOKEN_TTL_S);
    httpc_req_t req = {.method = "PUT", .url = url, .extra_header = hdr, .timeout_ms = 2000};
    httpc_resp_t resp;
    httpc_do(w->h, &req, &resp);
    int rc = -1;
    if (resp.status == 200 && resp.body && resp.len < sizeof w->token) {
        snprintf(w->token, sizeof w->token, "%s", resp.body);
        w->token_expires_mono = clock_mono_ms() + (TOKEN_TTL_S - 60) * 1000LL;
        rc = 0;
    }
    httpc_resp_free(&resp);
    return rc;
}

/* GETs a metadata path: the status (0 on transport error), body in resp. */
static long get_meta(imds_watch_t *w, const char *path, httpc_resp_t *resp)
{
    if (clock_mono_ms() >= w->token_expires_mono && fetch_token(w) != 0) {
        memset(resp, 0, sizeof *resp);
        return 0;
    }
    char url[700], hdr[600];
    snprintf(url, sizeof url, "%s%s", w->base, path);
    snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", w->token);
    httpc_req_t req = {.method = "GET", .url = url, .extra_header = hdr, .timeout_ms = 2000};
    httpc_do(w->h, &req, resp);
    if (resp->status == 401)
        w->token_expires_mono = 0; /* token expired: fetch a new one next time */
    return resp->status;
}

static void *watch_main(void *arg)
{
    imds_watch_t *w = arg;
    int fired = 0, rebalance_seen = 0;
    while (!atomic_load(&w->stop) && !fired) {
        httpc_resp_t resp;
        if (get_meta(w, "/latest/meta-data/spot/instance-action", &resp) == 200) {
            int64_t at;
            if (imds_parse_instance_action(resp.body ? resp.body : "", resp.len, &at) == 0) {
                int64_t drain = at - clock_now_ms() - DRAIN_MARGIN_MS;
                if (drain < 0)
                    drain = 0;
                log_warn("event=spot_interruption_notice action_in_ms=%lld drain_ms=%lld",
                         (long long)(at - clock_now_ms()), (long long)drain);
                w->on_notice(drain);
                fired = 1;
            }
        }
        httpc_resp_free(&resp);
        /* A rebalance recommendation is only a raised risk: Karpenter does not act on it, and a
         * worker that left would be restarted on the same node and leave again, leaving a paid
         * GPU node without a worker. It is logged once; the interruption notice (or Karpenter's
         * drain) is what stops the worker. */
        if (!fired && !rebalance_seen &&
            get_meta(w, "/latest/meta-data/events/recommendations/rebalance", &resp) == 200) {
            log_warn("event=rebalance_recommendation msg=\"noted; the worker keeps serving until "
                     "an interruption notice or SIGTERM\"");
            rebalance_seen = 1;
        }
        httpc_resp_free(&resp);
        for (int64_t slept = 0; slept < w->poll_ms && !atomic_load(&w->stop); slept += 50)
            clock_sleep_ms(50);
    }
    return NULL;
}

/* Copies a metadata value into dst when it answers 200 with a short single-line body. */
static void meta_value(imds_watch_t *w, const char *path, char *dst, size_t size)
{
    httpc_resp_t resp;
    dst[0] = '\0';
    if (get_meta(w, path, &resp) == 200 && resp.body && resp.len < size &&
        !memchr(resp.body, '\n', resp.len))
        snprintf(dst, size, "%s", resp.body);
    httpc_resp_free(&resp);
}

int imds_placement(const char *base_url, char *instance_type, size_t itsize, char *capacity,
                   size_t capsize, char *zone, size_t zsize)
{
    instance_type[0] = capacity[0] = zone[0] = '\0';
    imds_watch_t w;
    memset(&w, 0, sizeof w);
    snprintf(w.base, sizeof w.base, "%s", base_url);
    size_t n = strlen(w.base);
    while (n && w.base[n - 1] == '/')
        w.base[--n] = '\0';
    w.h = httpc_new();
    int rc = -1;
    if (w.h && fetch_token(&w) == 0) {
        meta_value(&w, "/latest/meta-data/instance-type", instance_type, itsize);
        meta_value(&w, "/latest/meta-data/instance-life-cycle", capacity, capsize);
        meta_value(&w, "/latest/meta-data/placement/availability-zone", zone, zsize);
        rc = 0;
    }
    if (w.h)
        httpc_free(w.h);
    return rc;
}

imds_watch_t *imds_watch_start(const char *base_url, int64_t poll_ms, imds_stop_fn on_notice)
{
    imds_watch_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    snprintf(w->base, sizeof w->base, "%s", base_url);
    size_t n = strlen(w->base);
    while (n && w->base[n - 1] == '/')
        w->base[--n] = '\0';
    w->poll_ms = poll_ms > 0 ? poll_ms : 5000;
    w->on_notice = on_notice;
    w->h = httpc_new();
    if (!w->h || fetch_token(w) != 0) {
        log_info("event=imds_off url=%s msg=\"instance metadata not reachable; spot notices "
                 "will not be watched\"",
                 w->base);
        if (w->h)
            httpc_free(w->h);
        free(w);
        return NULL;
    }
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        httpc_free(w->h);
        free(w);
        return NULL;
    }
    log_info("event=imds_on url=%s poll_ms=%lld", w->base, (long long)w->poll_ms);
    return w;
}

void imds_watch_stop(imds_watch_t *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    httpc_free(w->h);
    free(w);
}
