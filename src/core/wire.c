/* wire.c: worker-protocol bodies, parsed and checked without touching any state. */
#include "core/wire.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* Parses body as a JSON object (duplicates refused). NULL and e filled otherwise. */
static json_t *object_body(const char *body, size_t len, api_error_t *e)
{
    json_error_t je;
    json_t *o = json_loadb(body ? body : "", body ? len : 0, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        api_error_set(e, 400, "invalid_json", NULL, "worker request body must be a JSON object");
        return NULL;
    }
    return o;
}

/* A non-empty string field of at most maxlen bytes without NUL, or NULL. */
static const char *str_field(json_t *o, const char *name, size_t maxlen)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > maxlen || strlen(s) != n)
        return NULL;
    return s;
}

static int valid_tier(const char *t)
{
    return t && (strcmp(t, "standard") == 0 || strcmp(t, "enterprise") == 0);
}

int wire_parse_claim(const char *body, size_t len, wire_claim_t *out, api_error_t *e)
{
    memset(out, 0, sizeof *out);
    json_t *o = object_body(body, len, e);
    if (!o)
        return -1;
    const char *wid = str_field(o, "worker_id", WIRE_WORKER_ID_MAX);
    json_t *tv = json_object_get(o, "tier");
    const char *tier = tv ? json_string_value(tv) : "standard";
    json_t *wv = json_object_get(o, "wait_ms");
    int64_t wait_ms = json_is_integer(wv) ? json_integer_value(wv) : 0;
    if (!wid || !valid_tier(tier) || wait_ms < 0 || wait_ms > WIRE_CLAIM_WAIT_MAX_MS ||
        (wv && !json_is_integer(wv))) {
        json_decref(o);
        return api_error_set(e, 400, "invalid_argument", NULL,
                             "claim needs worker_id (1..127 chars), tier (standard|enterprise) "
                             "and wait_ms (0..60000)");
    }
    snprintf(out->worker_id, sizeof out->worker_id, "%s", wid);
    snprintf(out->tier, sizeof out->tier, "%s", tier);
    out->wait_ms = wait_ms;
    json_decref(o);
    return 0;
}

int wire_parse_report(const char *op, const char *body, size_t len, wire_report_t *out,
                      api_error_t *e)
{
    memset(out, 0, sizeof *out);
    out->retryable = 1;
    json_t *o = object_body(body, len, e);
    if (!o)
        return -1;
    int rc = 0;
    const char *lease = str_field(o, "lease_id", JOB_ID_SIZE - 1);
    if (!lease) {
        rc = api_error_set(e, 400, "invalid_argument", "lease_id", "lease_id is required");
        goto out;
    }
    snprintf(out->lease_id, sizeof out->lease_id, "%s", lease);
    if (strcmp(op, "complete") == 0) {
        json_t *g = json_object_get(o, "gpu_seconds");
        double gpu = json_is_number(g) ? json_number_value(g) : -1;
        if (!(gpu >= 0 && gpu < WIRE_GPU_SECONDS_MAX)) {
            rc = api_error_set(e, 400, "invalid_argument", "gpu_seconds",
                               "gpu_seconds must be a number from 0 to 1e7");
            goto out;
        }
        out->gpu_seconds = gpu;
    } else if (strcmp(op, "fail") == 0) {
        const char *msg = str_field(o, "error", WIRE_ERROR_MAX);
        json_t *rv = json_object_get(o, "retryable");
        out->retryable = rv ? json_is_true(rv) : 1;
        snprintf(out->error, sizeof out->error, "%s", msg ? msg : "worker reported an error");
    }
out:
    json_decref(o);
    return rc;
}

int wire_parse_bye(const char *body, size_t len, wire_bye_t *out, api_error_t *e)
{
    memset(out, 0, sizeof *out);
    json_t *o = object_body(body, len, e);
    if (!o)
        return -1;
    const char *wid = str_field(o, "worker_id", WIRE_WORKER_ID_MAX);
    if (wid)
        snprintf(out->worker_id, sizeof out->worker_id, "%s", wid);
    json_decref(o);
    return 0;
}
