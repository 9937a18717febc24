/* backend_a1111.c: the a1111 backend. It sends each job to a server with the AUTOMATIC1111 web API
 * (AUTOMATIC1111, Forge, SD.Next, or anything else answering /sdapi/v1/txt2img): load checks the
 * server and lists its checkpoints (GET /sdapi/v1/sd-models), generate POSTs /sdapi/v1/txt2img
 * and decodes the first base64 PNG of the answer; a cancel aborts the request and POSTs
 * /sdapi/v1/interrupt. Rules and limits: docs/backends.md. */
#include "backend/backend.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/a1111_proto.h"
#include "lib/httpc.h"
#include "lib/clock.h"
#include "lib/log.h"

#define A1_URL_MAX BACKEND_URL_MAX
#define A1_PNG_MAX (64u * 1024u * 1024u)                      /* decoded image cap */
#define A1_RESP_MAX ((size_t)A1_PNG_MAX / 3 * 4 + (1u << 20)) /* base64 of the cap + JSON */
#define A1_SMALL_RESP_MAX (4u * 1024u * 1024u)                /* sd-models, errors, interrupt */
#define A1_PROGRESS_MS 250 /* how often /sdapi/v1/progress is read while a txt2img runs */

typedef struct a1111 {
    backend_t base;       /* first: a backend_t * is an a1111_t * */
    char url[A1_URL_MAX]; /* base URL without a trailing slash */
    httpc_t *h;
    int loaded;
    a1111_model_t *models;
    int nmodels;
    backend_rate_t rate; /* completed jobs, for estimate_seconds */
    int has_progress;    /* GET /sdapi/v1/progress answered at load (sd-server has none) */
    int64_t hang_grace_ms;
} a1111_t;

/* Reads /sdapi/v1/progress on its own connection while a txt2img runs. */
typedef struct poller {
    a1111_t *a;
    backend_ctl_t *ctl;
    int steps; /* the job's steps, for servers that give only a fraction */
    pthread_t th;
    int started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} poller_t;

static int a1_request(a1111_t *a, const char *method, const char *path, const char *body,
                      long timeout_ms, size_t cap, atomic_int *cancel, httpc_resp_t *out)
{
    return backend_request(a->h, a->url, method, path, body, timeout_ms, cap, cancel, out);
}

/* ---- models ---- */

static int contains_nocase(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    if (!nl)
        return 0;
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, nl) == 0)
            return 1;
    return 0;
}

/* The checkpoint title for a pingvas model name: the first server model whose title or
 * model_name contains the name, case-insensitively; NULL (no override) otherwise. */
static const char *checkpoint_for(const a1111_t *a, const char *model)
{
    for (int i = 0; i < a->nmodels; i++)
        if (contains_nocase(a->models[i].title, model) || contains_nocase(a->models[i].name, model))
            return a->models[i].title[0] ? a->models[i].title : a->models[i].name;
    return NULL;
}

/* Reads the sd-models answer into a->models. 0, or -1 when it is not a list of models. */
static int parse_models(a1111_t *a, const httpc_resp_t *r)
{
    a1111_model_t *v = NULL;
    int n = 0;
    if (a1111_parse_models(r->body, r->len, &v, &n) != 0)
        return -1;
    free(a->models);
    a->models = v;
    a->nmodels = n;
    return 0;
}

/* ---- backend_ops ---- */

static int a1_load(backend_t *b, char *err, size_t errlen)
{
    a1111_t *a = (a1111_t *)b;
    char why[300] = "";
    httpc_resp_t r;
    backend_get_patient(a->h, a->url, "/sdapi/v1/sd-models", A1_SMALL_RESP_MAX, &r);
    if (r.status == 200 && parse_models(a, &r) == 0) {
        httpc_resp_free(&r);
        a1_request(a, "GET", "/sdapi/v1/progress?skip_current_image=true", NULL, 10000L,
                   A1_SMALL_RESP_MAX, NULL, &r);
        a->has_progress = r.status == 200;
        if (!a->has_progress)
            log_info("event=a1111_no_progress url=%s status=%ld msg=\"GET /sdapi/v1/progress is "
                     "not served (sd-server): jobs report no progress\"",
                     a->url, r.status);
        httpc_resp_free(&r);
        a->loaded = 1;
        return BACKEND_OK;
    }
    if (r.status == 0) {
        snprintf(why, sizeof why, "not reachable: %s", r.error);
    } else if (r.status == 200) {
        snprintf(why, sizeof why,
                 "not an A1111-compatible server: GET /sdapi/v1/sd-models did not answer a "
                 "JSON list of models");
    } else {
        char detail[BACKEND_DETAIL_MAX + 1];
        backend_error_detail(&r, detail, sizeof detail);
        snprintf(why, sizeof why,
                 "not an A1111-compatible server: GET /sdapi/v1/sd-models answered HTTP %ld%s%s",
                 r.status, detail[0] ? ": " : "", detail);
    }
    httpc_resp_free(&r);
    snprintf(err, errlen, "a1111 backend: server %s %s", a->url, why);
    return BACKEND_ERR;
}

/* Best effort: asks the server to stop the generation in progress. */
static void a1_interrupt(a1111_t *a)
{
    httpc_resp_t r;
    a1_request(a, "POST", "/sdapi/v1/interrupt", NULL, 5000L, A1_SMALL_RESP_MAX, NULL, &r);
    httpc_resp_free(&r);
}

static char *txt2img_body(const a1111_t *a, const job_params_t *p)
{
    json_t *o =
        json_pack("{s:s, s:s, s:i, s:i, s:i, s:f, s:I, s:i, s:i, s:b}", "prompt", p->prompt,
                  "negative_prompt", p->negative_prompt ? p->negative_prompt : "", "width",
                  p->width, "height", p->height, "steps", p->steps, "cfg_scale", p->cfg_scale,
                  "seed", (json_int_t)p->seed, "batch_size", 1, "n_iter", 1, "send_images", 1);
    if (!o)
        return NULL;
    const char *ckpt = checkpoint_for(a, p->model);
    if (ckpt)
        json_object_set_new(o, "override_settings",
                            json_pack("{s:s}", "sd_model_checkpoint", ckpt));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Records the server's progress (a1111_parse_progress). */
static void progress_from(poller_t *pl, const httpc_resp_t *r)
{
    int step = 0, steps = 0;
    if (a1111_parse_progress(r->body, r->len, pl->steps, &step, &steps))
        backend_progress(pl->ctl, step, steps);
}

static void *poll_main(void *arg)
{
    poller_t *pl = arg;
    httpc_t *h = httpc_new();
    pthread_mutex_lock(&pl->mu);
    while (!pl->stop && h) {
        pthread_mutex_unlock(&pl->mu);
        httpc_resp_t r;
        backend_request(h, pl->a->url, "GET", "/sdapi/v1/progress?skip_current_image=true", NULL,
                        5000L, A1_SMALL_RESP_MAX, NULL, &r);
        if (r.status == 200)
            progress_from(pl, &r);
        httpc_resp_free(&r);
        pthread_mutex_lock(&pl->mu);
        struct timespec ts = clock_deadline(A1_PROGRESS_MS);
        if (!pl->stop)
            pthread_cond_timedwait(&pl->cv, &pl->mu, &ts);
    }
    pthread_mutex_unlock(&pl->mu);
    if (h)
        httpc_free(h);
    return NULL;
}

static void poller_stop(poller_t *pl)
{
    if (!pl->started)
        return;
    pthread_mutex_lock(&pl->mu);
    pl->stop = 1;
    pthread_cond_signal(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    pthread_join(pl->th, NULL);
    pthread_cond_destroy(&pl->cv);
    pthread_mutex_destroy(&pl->mu);
}

/* POSTs txt2img with the job's hang deadline as its timeout, reading progress meanwhile.
 * Returns BACKEND_OK with *r the answer (any status; the caller frees it), BACKEND_CANCELED, or
 * BACKEND_ERR with err set (no answer, or none in time: the server is then interrupted). */
static int run_txt2img(a1111_t *a, const job_params_t *p, backend_ctl_t *ctl, httpc_resp_t *r,
                       double *seconds, char *err, size_t errlen)
{
    char *body = txt2img_body(a, p);
    if (!body) {
        snprintf(err, errlen, "a1111 backend: out of memory");
        return BACKEND_ERR;
    }
    poller_t pl = {.a = a, .ctl = ctl, .steps = p->steps};
    if (a->has_progress) {
        pthread_mutex_init(&pl.mu, NULL);
        pthread_cond_init(&pl.cv, NULL);
        pl.started = pthread_create(&pl.th, NULL, poll_main, &pl) == 0;
    }
    int64_t limit = backend_hang_deadline_ms(backend_rate_estimate(&a->rate, p), a->hang_grace_ms);
    int64_t t0 = clock_mono_ms();
    a1_request(a, "POST", "/sdapi/v1/txt2img", body, (long)limit, A1_RESP_MAX, &ctl->cancel, r);
    *seconds = (double)(clock_mono_ms() - t0) / 1000.0;
    poller_stop(&pl);
    free(body);
    int step = 0, steps = 0;
    backend_progress_get(ctl, &step, &steps);
    if (atomic_load(&ctl->cancel) || (r->status == 0 && *seconds * 1000.0 >= (double)limit))
        a1_interrupt(a);
    if (atomic_load(&ctl->cancel))
        return BACKEND_CANCELED;
    if (r->status == 0 && *seconds * 1000.0 >= (double)limit)
        snprintf(err, errlen,
                 "a1111 backend: the server did not answer txt2img within %.0f s (hung at step "
                 "%d/%d; deadline 4 x the estimate + grace); interrupted",
                 (double)limit / 1000.0, step, steps);
    else if (r->status == 0)
        snprintf(err, errlen, "a1111 backend: POST %s/sdapi/v1/txt2img failed: %s", a->url,
                 r->error);
    return r->status == 0 ? BACKEND_ERR : BACKEND_OK;
}

static int a1_generate(backend_t *b, const job_params_t *p, backend_ctl_t *ctl,
                       backend_result_t *out, char *err, size_t errlen)
{
    a1111_t *a = (a1111_t *)b;
    memset(out, 0, sizeof *out);
    if (!a->loaded) {
        snprintf(err, errlen, "a1111 backend: generate called before load");
        return BACKEND_ERR;
    }
    if (!p->prompt || p->width < 1 || p->height < 1 || p->steps < 1) {
        snprintf(err, errlen, "a1111 backend: invalid job parameters");
        return BACKEND_ERR;
    }
    if (atomic_load(&ctl->cancel))
        return BACKEND_CANCELED;
    httpc_resp_t r;
    double seconds = 0;
    int rc = run_txt2img(a, p, ctl, &r, &seconds, err, errlen);
    if (rc == BACKEND_OK && r.status != 200) {
        char detail[BACKEND_DETAIL_MAX + 1];
        backend_error_detail(&r, detail, sizeof detail);
        snprintf(err, errlen, "a1111 backend: txt2img answered HTTP %ld%s%s", r.status,
                 detail[0] ? ": " : "", detail);
        rc = BACKEND_ERR;
    }
    if (rc == BACKEND_OK) {
        out->png = a1111_parse_image(r.body, r.len, A1_PNG_MAX, &out->png_len, err, errlen);
        rc = out->png ? BACKEND_OK : BACKEND_ERR;
    }
    if (rc == BACKEND_OK) {
        out->gpu_seconds = seconds;
        backend_rate_add(&a->rate, p, seconds);
        backend_progress(ctl, p->steps, p->steps);
    }
    httpc_resp_free(&r);
    return rc;
}

static double a1_estimate_seconds(backend_t *b, const job_params_t *p)
{
    return backend_rate_estimate(&((const a1111_t *)b)->rate, p);
}

static void a1_destroy(backend_t *b)
{
    a1111_t *a = (a1111_t *)b;
    if (!a)
        return;
    if (a->h)
        httpc_free(a->h);
    free(a->models);
    free(a);
}

static const struct backend_ops a1111_ops = {
    .name = "a1111",
    .load = a1_load,
    .generate = a1_generate,
    .estimate_seconds = a1_estimate_seconds,
    .destroy = a1_destroy,
};

/* Returns a new backend the caller destroys with ops->destroy, or NULL with err set when no URL
 * (http:// or https://) is configured. */
backend_t *backend_a1111_create(const backend_config_t *cfg, char *err, size_t errlen)
{
    char url[A1_URL_MAX];
    if (backend_base_url(cfg->url, "a1111", "--a1111-url or PINGVAS_A1111_URL", url, sizeof url,
                         err, errlen) != 0)
        return NULL;
    a1111_t *a = calloc(1, sizeof *a);
    if (!a || !(a->h = httpc_new())) {
        free(a);
        snprintf(err, errlen, "a1111 backend: out of memory");
        return NULL;
    }
    a->base.ops = &a1111_ops;
    a->hang_grace_ms = cfg->hang_grace_ms;
    memcpy(a->url, url, sizeof a->url);
    return &a->base;
}
