#include "core/job.h"

#include <math.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/b64.h"
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

/* Where a job's members go: the text writer w (hot answers), else the jansson object obj. */
typedef struct {
    jsonw_t *w;
    json_t *obj, *outer; /* outer: the object around obj while a nested one is open */
} members_t;

/* A string member; NULL writes null. */
static void m_str(members_t *m, const char *key, const char *v)
{
    if (m->w)
        jsonw_str(m->w, key, v);
    else
        json_object_set_new(m->obj, key, v ? json_string(v) : json_null());
}

static void m_int(members_t *m, const char *key, int64_t v)
{
    if (m->w)
        jsonw_int(m->w, key, v);
    else
        json_object_set_new(m->obj, key, json_integer(v));
}

static void m_real(members_t *m, const char *key, double v)
{
    if (m->w)
        jsonw_real(m->w, key, v);
    else
        json_object_set_new(m->obj, key, json_real(v));
}

/* Opens an object member (one level deep); m_close ends it. */
static void m_open(members_t *m, const char *key)
{
    if (m->w) {
        jsonw_open_key(m->w, key);
        return;
    }
    m->outer = m->obj;
    m->obj = json_object();
    json_object_set_new(m->outer, key, m->obj);
}

static void m_close(members_t *m)
{
    if (m->w)
        jsonw_close(m->w);
    else
        m->obj = m->outer;
}

/* A time member: RFC 3339, null when unset. */
static void m_time(members_t *m, const char *key, int64_t ms)
{
    char buf[40];
    if (ms > 0)
        clock_format_rfc3339(ms, buf, sizeof buf);
    m_str(m, key, ms > 0 ? buf : NULL);
}

/* The public job JSON's one field list (DESIGN section 3), in its order. */
static void job_members(members_t *m, const job_t *j, const char *image_url)
{
    m_str(m, "id", j->id);
    m_str(m, "status", job_status_name(j->status));
    m_str(m, "prompt", j->params.prompt ? j->params.prompt : "");
    m_str(m, "negative_prompt", j->params.negative_prompt ? j->params.negative_prompt : "");
    m_str(m, "model", j->params.model);
    m_int(m, "width", j->params.width);
    m_int(m, "height", j->params.height);
    m_int(m, "steps", j->params.steps);
    m_real(m, "cfg_scale", j->params.cfg_scale);
    m_int(m, "seed", j->params.seed);
    m_str(m, "tier", j->tier);
    m_time(m, "created_at", j->created_at);
    m_time(m, "started_at", j->started_at);
    m_time(m, "completed_at", j->completed_at);
    m_int(m, "attempts", j->attempts);
    m_int(m, "releases", j->releases);
    m_str(m, "image_url", image_url);
    m_str(m, "error_message", j->error_message);
    m_real(m, "gpu_seconds", j->gpu_seconds);
    m_int(m, "credits_reserved", j->credits_reserved);
    m_int(m, "credits_charged", j->credits_charged);
    if (j->status == JOB_IN_PROGRESS && j->progress_steps > 0) {
        m_open(m, "progress");
        m_int(m, "step", j->progress_step);
        m_int(m, "steps", j->progress_steps);
        m_close(m);
    } else {
        m_str(m, "progress", NULL);
    }
}

void job_json_members(jsonw_t *w, const job_t *j, const char *image_url)
{
    members_t m = {.w = w};
    job_members(&m, j, image_url);
}

json_t *job_to_json(const job_t *j, const char *image_url)
{
    members_t m = {.obj = json_object()};
    if (m.obj)
        job_members(&m, j, image_url);
    return m.obj;
}

/* random_bytes' per-thread pool: OpenSSL's RAND_bytes costs about a microsecond a call whatever
 * its size (its provider's parameter lookups and locks), which was about 4 % of the create
 * writer's time at two calls a create (the id and the seed); drawing 256 bytes at a time makes it
 * one call per about twenty creates. Bytes handed out are wiped from the pool. A fork (without
 * exec) bumps pool_gen, so that a child never hands out bytes its parent also had. */
#define POOL_BYTES 256
static _Thread_local struct {
    unsigned char b[POOL_BYTES];
    size_t left; /* the last `left` bytes of b are unused */
    unsigned gen;
} pool;
static atomic_uint pool_gen = 1;

static void pool_forked(void)
{
    atomic_fetch_add(&pool_gen, 1);
}

static void pool_once(void)
{
    pthread_atfork(NULL, NULL, pool_forked);
}

void random_bytes(unsigned char *out, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, pool_once);
    unsigned gen = atomic_load(&pool_gen);
    if (pool.gen != gen) {
        OPENSSL_cleanse(pool.b, sizeof pool.b);
        pool.left = 0;
        pool.gen = gen;
    }
    if (n > POOL_BYTES) {
        if (RAND_bytes(out, (int)n) != 1)
            abort(); /* no entropy: nothing safe to do */
        return;
    }
    if (pool.left < n) {
        if (RAND_bytes(pool.b, POOL_BYTES) != 1)
            abort();
        pool.left = POOL_BYTES;
    }
    unsigned char *from = pool.b + POOL_BYTES - pool.left;
    memcpy(out, from, n);
    OPENSSL_cleanse(from, n);
    pool.left -= n;
}

void random_hex(char *buf, int nbytes)
{
    unsigned char raw[64];
    if (nbytes > 64)
        nbytes = 64;
    if (nbytes < 0)
        nbytes = 0;
    random_bytes(raw, (size_t)nbytes);
    hex_encode(raw, (size_t)nbytes, buf);
    OPENSSL_cleanse(raw, sizeof raw);
}

void job_new_id(char *buf, int64_t created_ms)
{
    /* A UUID version 7 (RFC 9562): the creation time in milliseconds, then 74 random bits. Ids
     * made close in time sort close together, so the jobs people ask about (the recent ones)
     * share the few pages at the end of every id index, which stay in memory whatever the store
     * holds, and a create writes there instead of into a random page of the whole index. */
    unsigned char r[16];
    random_bytes(r + 6, sizeof r - 6);
    uint64_t ms = created_ms > 0 ? (uint64_t)created_ms : 0;
    for (int i = 0; i < 6; i++)
        r[i] = (unsigned char)(ms >> (40 - 8 * i));
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x70);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    static const size_t groups[] = {4, 2, 2, 2, 6}; /* bytes: 8-4-4-4-12 hex digits */
    char *p = buf;
    const unsigned char *in = r;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        if (g > 0)
            *p++ = '-';
        hex_encode(in, groups[g], p); /* and a NUL, overwritten by the next group's dash */
        p += 2 * groups[g];
        in += groups[g];
    }
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
