/* wire.c: worker-protocol bodies, parsed and checked without touching any state. */
#include "core/wire.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "core/job.h"

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

/* The claim's fields from object o (a claim body, or a complete's "next"). 0 or -1 with e. */
static int claim_from(json_t *o, wire_claim_t *out, api_error_t *e)
{
    const char *wid = str_field(o, "worker_id", WIRE_WORKER_ID_MAX);
    json_t *tv = json_object_get(o, "tier");
    const char *tier = tv ? json_string_value(tv) : tier_names[0];
    json_t *wv = json_object_get(o, "wait_ms");
    int64_t wait_ms = json_is_integer(wv) ? json_integer_value(wv) : 0;
    if (!wid || tier_index(tier) < 0 || wait_ms < 0 || wait_ms > WIRE_CLAIM_WAIT_MAX_MS ||
        (wv && !json_is_integer(wv)))
        return api_error_set(e, 400, "invalid_argument", NULL,
                             "claim needs worker_id (1..127 chars), tier (standard|enterprise) "
                             "and wait_ms (0..60000)");
    snprintf(out->worker_id, sizeof out->worker_id, "%s", wid);
    snprintf(out->tier, sizeof out->tier, "%s", tier);
    out->wait_ms = wait_ms;
    return 0;
}

int wire_parse_claim(const char *body, size_t len, wire_claim_t *out, api_error_t *e)
{
    memset(out, 0, sizeof *out);
    json_t *o = object_body(body, len, e);
    if (!o)
        return -1;
    int rc = claim_from(o, out, e);
    json_decref(o);
    return rc;
}

/* The complete's gpu_seconds and optional "next" (complete-and-claim). 0 or -1 with e. */
static int complete_from(json_t *o, wire_report_t *out, api_error_t *e)
{
    json_t *g = json_object_get(o, "gpu_seconds");
    double gpu = json_is_number(g) ? json_number_value(g) : -1;
    if (!(gpu >= 0 && gpu < WIRE_GPU_SECONDS_MAX))
        return api_error_set(e, 400, "invalid_argument", "gpu_seconds",
                             "gpu_seconds must be a number from 0 to 1e7");
    out->gpu_seconds = gpu;
    json_t *next = json_object_get(o, "next");
    if (!next || json_is_null(next))
        return 0;
    if (!json_is_object(next) || claim_from(next, &out->next, e) != 0)
        return api_error_set(e, 400, "invalid_argument", "next",
                             "next must be a claim: worker_id (1..127 chars), tier "
                             "(standard|enterprise) and wait_ms (0..60000)");
    out->has_next = 1;
    return 0;
}

/* The optional progress of a heartbeat: both of step and steps or neither, integers with
 * 0 <= step <= steps, 1 <= steps <= WIRE_STEPS_MAX. */
static int parse_progress(json_t *o, wire_report_t *out, api_error_t *e)
{
    json_t *sv = json_object_get(o, "step"), *nv = json_object_get(o, "steps");
    if (!sv && !nv)
        return 0;
    json_int_t s = json_is_integer(sv) ? json_integer_value(sv) : -1;
    json_int_t n = json_is_integer(nv) ? json_integer_value(nv) : -1;
    if (n < 1 || n > WIRE_STEPS_MAX || s < 0 || s > n)
        return api_error_set(e, 400, "invalid_argument", "step",
                             "step and steps must be integers with 0 <= step <= steps and "
                             "1 <= steps <= 1000000");
    out->step = (int)s;
    out->steps = (int)n;
    return 0;
}

char *wire_heartbeat_body(const char *lease_id, int step, int steps)
{
    json_t *o = json_pack("{s:s}", "lease_id", lease_id ? lease_id : "");
    if (o && steps > 0 && steps <= WIRE_STEPS_MAX) {
        json_object_set_new(o, "step", json_integer(step < 0 ? 0 : step > steps ? steps : step));
        json_object_set_new(o, "steps", json_integer(steps));
    }
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
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
        rc = complete_from(o, out, e);
    } else if (strcmp(op, "heartbeat") == 0) {
        rc = parse_progress(o, out, e);
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

/* An optional placement string: absent is "", else at most WIRE_PLACE_MAX of [a-z0-9.-]. */
static int place_field(json_t *o, const char *name, char *dst, size_t size)
{
    json_t *v = json_object_get(o, name);
    dst[0] = '\0';
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > WIRE_PLACE_MAX)
        return -1;
    const char *s = json_string_value(v);
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.' || *c == '-'))
            return -1;
    snprintf(dst, size, "%s", s);
    return 0;
}

int wire_parse_life(const char *body, size_t len, wire_life_t *out, api_error_t *e)
{
    static const char *const events[] = {"started", "loaded", "alive", "ended"};
    memset(out, 0, sizeof *out);
    json_t *o = object_body(body, len, e);
    if (!o)
        return -1;
    const char *wid = str_field(o, "worker_id", WIRE_WORKER_ID_MAX);
    const char *tier = str_field(o, "tier", 15), *ev = str_field(o, "event", 15);
    json_t *g = json_object_get(o, "gpus"), *b = json_object_get(o, "busy_s");
    double busy = b ? (json_is_number(b) ? json_number_value(b) : -1) : 0;
    int ok = wid && tier_index(tier) >= 0 && ev && (!g || json_is_integer(g)) && busy >= 0 &&
             busy <= 1e9 &&
             place_field(o, "instance_type", out->instance_type, sizeof out->instance_type) == 0 &&
             place_field(o, "capacity_type", out->capacity_type, sizeof out->capacity_type) == 0 &&
             place_field(o, "zone", out->zone, sizeof out->zone) == 0;
    out->gpus = g ? (int)json_integer_value(g) : 1;
    ok = ok && (!g || (json_integer_value(g) >= 1 && json_integer_value(g) <= 64));
    ok = ok && (!out->capacity_type[0] || strcmp(out->capacity_type, "spot") == 0 ||
                strcmp(out->capacity_type, "on-demand") == 0);
    int known = 0;
    for (size_t i = 0; ok && i < sizeof events / sizeof events[0]; i++)
        known |= strcmp(ev, events[i]) == 0;
    if (!ok || !known) {
        json_decref(o);
        return api_error_set(e, 400, "invalid_argument", NULL,
                             "a worker report needs worker_id, tier, event (started|loaded|alive|"
                             "ended); optional instance_type and zone ([a-z0-9.-], up to 47), "
                             "capacity_type (spot|on-demand), gpus (1..64), busy_s (0..1e9)");
    }
    snprintf(out->worker_id, sizeof out->worker_id, "%s", wid);
    snprintf(out->tier, sizeof out->tier, "%s", tier);
    snprintf(out->event, sizeof out->event, "%s", ev);
    out->busy_ms = (int64_t)llround(busy * 1000.0);
    json_decref(o);
    return 0;
}

/* ---- paths and the worker's request bodies ---- */

int wire_job_url(char *buf, size_t size, const char *base, const char *id, const char *op)
{
    int n = snprintf(buf, size, "%s" WIRE_PATH_JOBS "%s/%s", base, id, op);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

/* Dumps o (taking it) as compact JSON; NULL when o is NULL or out of memory. */
static char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

char *wire_claim_body(const char *worker_id, const char *tier, int64_t wait_ms)
{
    return dump(json_pack("{s:s, s:s, s:I}", "worker_id", worker_id, "tier", tier, "wait_ms",
                          (json_int_t)wait_ms));
}

char *wire_bye_body(const char *worker_id)
{
    return dump(json_pack("{s:s}", "worker_id", worker_id));
}

char *wire_complete_body(const char *lease_id, double gpu_seconds, const wire_claim_t *next)
{
    json_t *o = json_pack("{s:s, s:f}", "lease_id", lease_id, "gpu_seconds", gpu_seconds);
    if (o && next &&
        json_object_set_new(o, "next",
                            json_pack("{s:s, s:s, s:I}", "worker_id", next->worker_id, "tier",
                                      next->tier, "wait_ms", (json_int_t)next->wait_ms)) != 0) {
        json_decref(o);
        return NULL;
    }
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(o);
    return text;
}

char *wire_fail_body(const char *lease_id, const char *error, int retryable)
{
    return dump(
        json_pack("{s:s, s:s, s:b}", "lease_id", lease_id, "error", error, "retryable", retryable));
}

char *wire_release_body(const char *lease_id)
{
    return dump(json_pack("{s:s}", "lease_id", lease_id));
}

/* ---- the claim answer ---- */

char *wire_claim_answer(const job_t *j, int64_t lease_ms, int64_t heartbeat_ms,
                        const char *up_method, const char *up_url, int up_needs_lease)
{
    jsonw_t w = {0};
    wire_claim_answer_write(&w, NULL, j, lease_ms, heartbeat_ms, up_method, up_url, up_needs_lease);
    return jsonw_take(&w, NULL);
}

void wire_claim_answer_write(jsonw_t *w, const char *key, const job_t *j, int64_t lease_ms,
                             int64_t heartbeat_ms, const char *up_method, const char *up_url,
                             int up_needs_lease)
{
    jsonw_open_key(w, key);
    jsonw_open_key(w, "job");
    job_json_members(w, j, NULL);
    jsonw_close(w);
    jsonw_str(w, "lease_id", j->lease_id);
    jsonw_int(w, "lease_ms", lease_ms);
    jsonw_int(w, "heartbeat_ms", heartbeat_ms);
    jsonw_open_key(w, "upload");
    jsonw_str(w, "method", up_method);
    jsonw_str(w, "url", up_url);
    jsonw_bool(w, "needs_lease", up_needs_lease);
    jsonw_close(w);
    jsonw_close(w);
}

void wire_job_clear(wire_job_t *j)
{
    job_params_clear(&j->params);
    memset(j, 0, sizeof *j);
}

/* An integer field in lo..hi into *v; def when absent (def < lo: required). 0 or -1. */
static int int_in(json_t *o, const char *name, int64_t lo, int64_t hi, int64_t def, int64_t *v)
{
    json_t *x = json_object_get(o, name);
    if (!x && def >= lo) {
        *v = def;
        return 0;
    }
    if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
        return -1;
    *v = json_integer_value(x);
    return 0;
}

/* The job's parameters, inside the create body's bounds. NULL, or the name of the bad field. */
static const char *job_params_from(json_t *job, job_params_t *p)
{
    int64_t w, h, steps, seed;
    json_t *cfg = json_object_get(job, "cfg_scale");
    const char *prompt = str_field(job, "prompt", (size_t)PROMPT_MAX_CHARS * 4);
    json_t *neg = json_object_get(job, "negative_prompt");
    const char *model = str_field(job, "model", MODEL_NAME_MAX);
    if (!prompt)
        return "prompt";
    if (neg && !json_is_null(neg) &&
        (!json_is_string(neg) || strlen(json_string_value(neg)) != json_string_length(neg)))
        return "negative_prompt";
    if (int_in(job, "width", JOB_SIZE_MIN, JOB_SIZE_MAX, -1, &w) ||
        int_in(job, "height", JOB_SIZE_MIN, JOB_SIZE_MAX, -1, &h))
        return "width/height";
    if (int_in(job, "steps", JOB_STEPS_MIN, JOB_STEPS_MAX, -1, &steps))
        return "steps";
    if (!json_is_number(cfg) || !(json_number_value(cfg) >= JOB_CFG_MIN) ||
        !(json_number_value(cfg) <= JOB_CFG_MAX))
        return "cfg_scale";
    if (int_in(job, "seed", 0, JOB_SEED_MAX, -1, &seed))
        return "seed";
    p->prompt = strdup(prompt);
    p->negative_prompt = strdup(json_is_string(neg) ? json_string_value(neg) : "");
    snprintf(p->model, sizeof p->model, "%s", model ? model : JOB_DEFAULT_MODEL);
    p->width = (int)w;
    p->height = (int)h;
    p->steps = (int)steps;
    p->cfg_scale = json_number_value(cfg);
    p->seed = seed;
    return p->prompt && p->negative_prompt ? NULL : "(out of memory)";
}

/* The upload target. NULL, or the name of the bad field. */
static const char *upload_from(json_t *up, wire_upload_t *out)
{
    const char *method = str_field(up, "method", sizeof out->method - 1);
    const char *url = str_field(up, "url", sizeof out->url - 1);
    json_t *nl = json_object_get(up, "needs_lease");
    if (!method || (strcmp(method, "PUT") != 0 && strcmp(method, "POST") != 0))
        return "upload.method";
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return "upload.url";
    if (nl && !json_is_boolean(nl))
        return "upload.needs_lease";
    snprintf(out->method, sizeof out->method, "%s", method);
    snprintf(out->url, sizeof out->url, "%s", url);
    out->needs_lease = json_is_true(nl);
    return NULL;
}

/* A claim answer from object o (NULL: not a JSON object). 0 or -1 with err (out cleared). */
static int job_from(json_t *o, wire_job_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_t *job = json_object_get(o, "job");
    const char *id = str_field(job, "id", JOB_ID_SIZE - 1);
    const char *lease = str_field(o, "lease_id", JOB_ID_SIZE - 1);
    const char *bad =
        !o                                                          ? "(not a JSON object)"
        : !json_is_object(job)                                      ? "job"
        : !id                                                       ? "job.id"
        : !lease                                                    ? "lease_id"
        : int_in(o, "lease_ms", 1, 3600000, 0, &out->lease_ms) != 0 ? "lease_ms"
        : int_in(o, "heartbeat_ms", 1, 3600000, WIRE_HEARTBEAT_DEFAULT_MS, &out->heartbeat_ms) != 0
            ? "heartbeat_ms"
            : NULL;
    if (!bad)
        bad = job_params_from(job, &out->params);
    if (!bad)
        bad = upload_from(json_object_get(o, "upload"), &out->upload);
    if (!bad) {
        snprintf(out->id, sizeof out->id, "%s", id);
        snprintf(out->lease_id, sizeof out->lease_id, "%s", lease);
    }
    if (bad) {
        snprintf(err, errlen, "the claim answer has no valid %s", bad);
        wire_job_clear(out);
        return -1;
    }
    return 0;
}

int wire_parse_job(const char *body, size_t len, wire_job_t *out, char *err, size_t errlen)
{
    api_error_t e;
    json_t *o = object_body(body, len, &e);
    int rc = job_from(o, out, err, errlen);
    json_decref(o);
    return rc;
}

int wire_parse_complete_answer(const char *body, size_t len, wire_job_t *next, char *err,
                               size_t errlen)
{
    api_error_t e;
    memset(next, 0, sizeof *next);
    json_t *o = object_body(body, len, &e);
    json_t *n = json_object_get(o, "next");
    int rc = 0;
    if (!o) {
        snprintf(err, errlen, "the complete answer is not a JSON object");
        rc = -1;
    } else if (n && !json_is_null(n)) {
        rc = job_from(n, next, err, errlen) == 0 ? 1 : -1;
    }
    json_decref(o);
    return rc;
}

/* ---- scaling events ---- */

int wire_parse_scaling(const char *body, size_t len, wire_scaling_t *out, api_error_t *e)
{
    memset(out, 0, sizeof *out);
    json_t *o = object_body(body, len, e);
    if (!o)
        return -1;
    const char *tier = json_string_value(json_object_get(o, "tier"));
    json_t *from = json_object_get(o, "from"), *to = json_object_get(o, "to");
    json_t *reason = json_object_get(o, "reason");
    int ok = tier_index(tier) >= 0 && json_is_integer(from) && json_is_integer(to) &&
             json_integer_value(from) >= 0 && json_integer_value(to) >= 0 &&
             json_integer_value(from) <= WIRE_REPLICAS_MAX &&
             json_integer_value(to) <= WIRE_REPLICAS_MAX &&
             (!reason || (json_is_string(reason) &&
                          strlen(json_string_value(reason)) == json_string_length(reason)));
    if (ok) {
        snprintf(out->tier, sizeof out->tier, "%s", tier);
        out->from = (int)json_integer_value(from);
        out->to = (int)json_integer_value(to);
        snprintf(out->reason, sizeof out->reason, "%s", reason ? json_string_value(reason) : "");
    } else {
        api_error_set(e, 400, "invalid_argument", NULL,
                      "a scaling event needs tier, from and to (0..100000) and a reason");
    }
    json_decref(o);
    return ok ? 0 : -1;
}

char *wire_scaling_body(const char *tier, int from, int to, const char *reason)
{
    return dump(json_pack("{s:s, s:i, s:i, s:s}", "tier", tier, "from", from, "to", to, "reason",
                          reason ? reason : ""));
}
