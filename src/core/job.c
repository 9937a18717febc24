#include "core/job.h"

#include <math.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"

static const char *status_names[] = {"queued", "in_progress", "completed", "failed", "canceled"};

const char *const tier_names[TIER_COUNT] = {"standard", "enterprise"};

int tier_index(const char *name)
{
    for (int i = 0; name && i < TIER_COUNT; i++)
        if (strcmp(name, tier_names[i]) == 0)
            return i;
    return -1;
}

const char *job_status_name(job_status_t s)
{
    if ((int)s < 0 || (int)s > JOB_CANCELED)
        return "unknown";
    return status_names[s];
}

int job_status_parse(const char *name)
{
    for (int i = 0; i <= JOB_CANCELED; i++)
        if (strcmp(name, status_names[i]) == 0)
            return i;
    return -1;
}

job_status_t job_status_stored(const char *name)
{
    int code = name ? job_status_parse(name) : -1;
    if (code < 0 && name && strcmp(name, "pending") == 0)
        code = JOB_QUEUED;
    return code < 0 ? JOB_FAILED : (job_status_t)code;
}

int job_status_is_final(job_status_t s)
{
    return s == JOB_COMPLETED || s == JOB_FAILED || s == JOB_CANCELED;
}

void job_params_clear(job_params_t *p)
{
    free(p->prompt);
    free(p->negative_prompt);
    free(p->webhook_url);
    memset(p, 0, sizeof *p);
}

void job_clear(job_t *j)
{
    job_params_clear(&j->params);
    free(j->image_key);
    free(j->error_message);
    memset(j, 0, sizeof *j);
}

int job_params_copy(job_params_t *dst, const job_params_t *src)
{
    *dst = *src;
    dst->prompt = strdup(src->prompt ? src->prompt : "");
    dst->negative_prompt = strdup(src->negative_prompt ? src->negative_prompt : "");
    dst->webhook_url = src->webhook_url ? strdup(src->webhook_url) : NULL;
    if (!dst->prompt || !dst->negative_prompt || (src->webhook_url && !dst->webhook_url)) {
        job_params_clear(dst);
        return -1;
    }
    return 0;
}

static json_t *time_or_null(int64_t ms)
{
    char buf[40];
    if (ms <= 0)
        return json_null();
    clock_format_rfc3339(ms, buf, sizeof buf);
    return json_string(buf);
}

json_t *job_to_json(const job_t *j, const char *image_url)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "status", json_string(job_status_name(j->status)));
    json_object_set_new(o, "prompt", json_string(j->params.prompt ? j->params.prompt : ""));
    json_object_set_new(o, "negative_prompt",
                        json_string(j->params.negative_prompt ? j->params.negative_prompt : ""));
    json_object_set_new(o, "model", json_string(j->params.model));
    json_object_set_new(o, "width", json_integer(j->params.width));
    json_object_set_new(o, "height", json_integer(j->params.height));
    json_object_set_new(o, "steps", json_integer(j->params.steps));
    json_object_set_new(o, "cfg_scale", json_real(j->params.cfg_scale));
    json_object_set_new(o, "seed", json_integer(j->params.seed));
    json_object_set_new(o, "tier", json_string(j->tier));
    json_object_set_new(o, "created_at", time_or_null(j->created_at));
    json_object_set_new(o, "started_at", time_or_null(j->started_at));
    json_object_set_new(o, "completed_at", time_or_null(j->completed_at));
    json_object_set_new(o, "attempts", json_integer(j->attempts));
    json_object_set_new(o, "releases", json_integer(j->releases));
    json_object_set_new(o, "image_url", image_url ? json_string(image_url) : json_null());
    json_object_set_new(o, "error_message",
                        j->error_message ? json_string(j->error_message) : json_null());
    json_object_set_new(o, "gpu_seconds", json_real(j->gpu_seconds));
    json_object_set_new(o, "credits_reserved", json_integer(j->credits_reserved));
    json_object_set_new(o, "credits_charged", json_integer(j->credits_charged));
    json_object_set_new(
        o, "progress",
        j->status == JOB_IN_PROGRESS && j->progress_steps > 0
            ? json_pack("{s:i, s:i}", "step", j->progress_step, "steps", j->progress_steps)
            : json_null());
    return o;
}

/* A time member: RFC 3339, null when unset. */
static void time_member(jsonw_t *w, const char *key, int64_t ms)
{
    char buf[40];
    if (ms <= 0) {
        jsonw_null(w, key);
        return;
    }
    clock_format_rfc3339(ms, buf, sizeof buf);
    jsonw_str(w, key, buf);
}

void job_json_members(jsonw_t *w, const job_t *j, const char *image_url)
{
    jsonw_str(w, "id", j->id);
    jsonw_str(w, "status", job_status_name(j->status));
    jsonw_str(w, "prompt", j->params.prompt ? j->params.prompt : "");
    jsonw_str(w, "negative_prompt", j->params.negative_prompt ? j->params.negative_prompt : "");
    jsonw_str(w, "model", j->params.model);
    jsonw_int(w, "width", j->params.width);
    jsonw_int(w, "height", j->params.height);
    jsonw_int(w, "steps", j->params.steps);
    jsonw_real(w, "cfg_scale", j->params.cfg_scale);
    jsonw_int(w, "seed", j->params.seed);
    jsonw_str(w, "tier", j->tier);
    time_member(w, "created_at", j->created_at);
    time_member(w, "started_at", j->started_at);
    time_member(w, "completed_at", j->completed_at);
    jsonw_int(w, "attempts", j->attempts);
    jsonw_int(w, "releases", j->releases);
    jsonw_str(w, "image_url", image_url);
    jsonw_str(w, "error_message", j->error_message);
    jsonw_real(w, "gpu_seconds", j->gpu_seconds);
    jsonw_int(w, "credits_reserved", j->credits_reserved);
    jsonw_int(w, "credits_charged", j->credits_charged);
    if (j->status == JOB_IN_PROGRESS && j->progress_steps > 0) {
        jsonw_open_key(w, "progress");
        jsonw_int(w, "step", j->progress_step);
        jsonw_int(w, "steps", j->progress_steps);
        jsonw_close(w);
    } else {
        jsonw_null(w, "progress");
    }
}

void random_hex(char *buf, int nbytes)
{
    unsigned char raw[64];
    static const char hex[] = "0123456789abcdef";
    if (nbytes > 64)
        nbytes = 64;
    if (RAND_bytes(raw, nbytes) != 1)
        abort(); /* no entropy: nothing safe to do */
    for (int i = 0; i < nbytes; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 15];
    }
    buf[2 * nbytes] = '\0';
}

void job_new_id(char *buf)
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1)
        abort();
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    snprintf(buf, JOB_ID_SIZE,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1],
             r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
}

int64_t job_cost(double gpu_seconds, double rate)
{
    double units = gpu_seconds * rate;
    if (units >= 9e15)
        return INT64_C(9000000000000000);
    if (units > 0) /* also false for NaN */
        return (int64_t)ceil(units - 1e-9);
    return 0;
}

int64_t job_charge(double gpu_seconds, double rate, int64_t balance, int64_t user_reserved,
                   int64_t job_reserved)
{
    int64_t cost = job_cost(gpu_seconds, rate);
    int64_t payable = balance - (user_reserved - job_reserved);
    if (payable > balance)
        payable = balance; /* a reservation never adds to what there is */
    if (payable < 0)
        payable = 0;
    return cost < payable ? cost : payable;
}

int64_t job_estimate_credits(const job_params_t *p, double rate)
{
    double pixels = (double)p->width * (double)p->height / (512.0 * 512.0);
    double seconds = (double)p->steps / 6.9 * pixels + 0.35;
    double credits = ceil(seconds * rate - 1e-9);
    return credits < 0 ? 0 : (int64_t)credits;
}
