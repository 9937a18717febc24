#include "worker/lifecycle.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/httpc.h"
#include "lib/log.h"
#include "worker/imds.h"

struct lifecycle {
    const worker_config_t *cfg;
    CURL *h;
    char url[1024];
    char worker_id[160];
    char instance_type[64], capacity_type[32], zone[64];
    int gpus;
    int64_t last_mono;
};

lifecycle_t *lifecycle_new(const worker_config_t *cfg, const char *worker_id)
{
    lifecycle_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->cfg = cfg;
    l->h = curl_easy_init();
    snprintf(l->url, sizeof l->url, "%s/internal/v1/workers/report", cfg->server_url);
    snprintf(l->worker_id, sizeof l->worker_id, "%s", worker_id);
    int given = (cfg->instance_type && *cfg->instance_type) ||
                (cfg->capacity_type && *cfg->capacity_type) || (cfg->zone && *cfg->zone);
    if (!given && cfg->imds_url && *cfg->imds_url)
        imds_placement(cfg->imds_url, l->instance_type, sizeof l->instance_type, l->capacity_type,
                       sizeof l->capacity_type, l->zone, sizeof l->zone);
    if (given) {
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
    return l;
}

void lifecycle_report(lifecycle_t *l, const char *event, int64_t busy_ms)
{
    if (!l || !l->h)
        return;
    int64_t now = clock_mono_ms();
    if (strcmp(event, "alive") == 0 && now - l->last_mono < LIFECYCLE_ALIVE_MS)
        return;
    l->last_mono = now;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:f}", "worker_id", l->worker_id,
                          "tier", l->cfg->tier, "event", event, "instance_type", l->instance_type,
                          "capacity_type", l->capacity_type, "zone", l->zone, "gpus", l->gpus,
                          "busy_s", (double)busy_ms / 1000.0);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        return;
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

void lifecycle_free(lifecycle_t *l)
{
    if (!l)
        return;
    if (l->h)
        curl_easy_cleanup(l->h);
    free(l);
}
