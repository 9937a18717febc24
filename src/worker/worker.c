/* worker.c: the worker loop. The main thread claims and generates; a monitor thread heartbeats
 * and decides, during a graceful stop, whether the running job can finish inside the drain
 * window or must be released at once. */
#include "worker/worker.h"

#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/httpc.h"
#include "core/wire.h"
#include "worker/imds.h"
#include "worker/lifecycle.h"
#include "lib/log.h"

/* After an upload refused for a full image store: the first wait before claiming again (doubles
 * to 30 s while the store stays full). */
#define FULL_BACKOFF_MS 1000

enum cancel_reason { CANCEL_NONE = 0, CANCEL_RELEASE = 1, CANCEL_LOST = 2, CANCEL_CANCELED = 3 };

/* Stop request: set from signal handlers and the IMDS watcher. */
static atomic_int stop_requested;
static _Atomic int64_t stop_drain_ms = -1;
static _Atomic int64_t stop_at_mono;

void worker_request_stop(int64_t drain_ms)
{
    if (atomic_exchange(&stop_requested, 1) == 0) {
        atomic_store(&stop_drain_ms, drain_ms);
        atomic_store(&stop_at_mono, clock_mono_ms());
    } else if (drain_ms >= 0) {
        int64_t cur = atomic_load(&stop_drain_ms);
        if (cur < 0 || drain_ms < cur)
            atomic_store(&stop_drain_ms, drain_ms);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    worker_request_stop(-1);
}

/* Retire request (SIGUSR1, from the local autoscaler): exit at the next idle moment. The
 * running job, and a claim already in flight, are never interrupted. */
static atomic_int retire_requested;

static void on_retire(int sig)
{
    (void)sig;
    atomic_store(&retire_requested, 1);
}

/* Reports state changes to a local supervisor through the fd in PINGVAS_STATUS_FD:
 * one byte each, 'S' started (the process runs; sent first, before the model loads), 'R' model
 * loaded, 'I' idle (claiming), 'B' busy (running a job). */
static int status_fd = -1;

static void report(char state)
{
    if (status_fd >= 0 && write(status_fd, &state, 1) != 1)
        status_fd = -1;
}

typedef struct running {
    const worker_config_t *cfg;
    char id[64];
    char lease[64];
    int64_t heartbeat_ms;
    int64_t started_mono;
    double estimate_s;
    backend_ctl_t ctl; /* cancel (nonzero: backend stops) and the backend's progress */
    atomic_int reason; /* enum cancel_reason */
    atomic_int generating;
    int64_t next_hb; /* clock_mono_ms() of the next heartbeat; the monitor's alone */
} running_t;

/* The thread that heartbeats the running job and watches for a drain (monitor_tick). One per
 * worker, started with its first job and kept between jobs: a thread per job cost a clone and
 * a stack unmap each, 12 % of a worker's CPU per job with no GPU time. */
typedef struct monitor {
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    running_t *cur; /* the job it watches; NULL between jobs */
    int busy;       /* 1 while it uses cur outside mu */
    int quit;
} monitor_t;

static int64_t drain_deadline(const worker_config_t *cfg)
{
    int64_t d = atomic_load(&stop_drain_ms);
    if (d < 0)
        d = cfg->drain_ms;
    return atomic_load(&stop_at_mono) + d;
}

/* A PNG that goes in the request itself (a complete that carries its image), or none. */
typedef struct image_body {
    const unsigned char *png;
    size_t len;
} image_body_t;

/* Posts body (wire.h; NULL: out of memory, status 0) to the job's op; with img->png the PNG is
 * the body and body goes in the WIRE_HEADER_REPORT header. Returns the HTTP status (0 on
 * transport error); the answer is kept in *keep when keep is not NULL (httpc_resp_free it). */
static long post_op(httpc_t *h, const worker_config_t *cfg, const char *id, const char *op,
                    const char *body, const image_body_t *img, httpc_resp_t *keep)
{
    char url[1024], *hdr = NULL;
    httpc_resp_t resp;
    memset(&resp, 0, sizeof resp);
    if (img && body && asprintf(&hdr, WIRE_HEADER_REPORT ": %s", body) < 0)
        hdr = NULL;
    if (!body || (img && !hdr) || wire_job_url(url, sizeof url, cfg->server_url, id, op) != 0) {
        free(hdr);
        if (keep)
            *keep = resp;
        return 0;
    }
    httpc_req_t req = {.method = "POST",
                       .url = url,
                       .bearer = cfg->token,
                       .extra_header = hdr,
                       .body = img ? (const void *)img->png : body,
                       .body_len = img ? img->len : strlen(body),
                       .content_type = img ? "image/png" : NULL,
                       .timeout_ms = img ? 60000 : 10000};
    httpc_do(h, &req, &resp);
    free(hdr);
    long st = resp.status;
    if (st == 0)
        log_warn("event=http_error op=%s job=%s err=\"%s\"", op, id, resp.error);
    if (keep)
        *keep = resp;
    else
        httpc_resp_free(&resp);
    return st;
}

static long post_body(httpc_t *h, const worker_config_t *cfg, const char *id, const char *op,
                      const char *body)
{
    return post_op(h, cfg, id, op, body, NULL, NULL);
}

/* One look at the running job: releases it when a stop's drain window cannot fit what remains,
 * heartbeats it when due (a lease gone cancels it). */
static void monitor_tick(running_t *r, httpc_t *h)
{
    int64_t now = clock_mono_ms();
    if (atomic_load(&stop_requested) && atomic_load(&r->generating) &&
        atomic_load(&r->reason) == CANCEL_NONE) {
        double elapsed = (double)(now - r->started_mono) / 1000.0;
        double remaining = r->estimate_s - elapsed;
        int64_t deadline = drain_deadline(r->cfg);
        if (remaining * 1000.0 > (double)(deadline - now) || now >= deadline) {
            log_info("event=drain_release job=%s remaining_s=%.1f window_s=%.1f", r->id, remaining,
                     (double)(deadline - now) / 1000.0);
            atomic_store(&r->reason, CANCEL_RELEASE);
            atomic_store(&r->ctl.cancel, 1);
        }
    }
    if (now >= r->next_hb && atomic_load(&r->reason) != CANCEL_LOST) {
        int step = 0, steps = 0;
        backend_progress_get(&r->ctl, &step, &steps);
        char *hb = wire_heartbeat_body(r->lease, step, steps);
        long st = post_body(h, r->cfg, r->id, "heartbeat", hb);
        free(hb);
        if (st == 409 || st == 404) {
            log_warn("event=lease_gone job=%s status=%ld", r->id, st);
            int expected = CANCEL_NONE;
            atomic_compare_exchange_strong(&r->reason, &expected, CANCEL_LOST);
            atomic_store(&r->ctl.cancel, 1);
        }
        r->next_hb = clock_mono_ms() + r->heartbeat_ms;
    }
}

/* The monitor thread: every 50 ms (or when woken) a tick of the job it watches, until quit. */
static void *monitor_main(void *arg)
{
    monitor_t *m = arg;
    httpc_t *h = httpc_new();
    pthread_mutex_lock(&m->mu);
    while (!m->quit) {
        running_t *r = m->cur;
        if (!r) {
            pthread_cond_wait(&m->cv, &m->mu);
            continue;
        }
        m->busy = 1;
        pthread_mutex_unlock(&m->mu);
        monitor_tick(r, h);
        pthread_mutex_lock(&m->mu);
        m->busy = 0;
        pthread_cond_broadcast(&m->cv);
        if (m->cur == r && !m->quit) {
            struct timespec ts = clock_deadline(50);
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
    }
    pthread_mutex_unlock(&m->mu);
    httpc_free(h);
    return NULL;
}

/* Hands r to the monitor (started on first use; a job runs unwatched if it cannot start). */
static void monitor_watch(monitor_t *m, running_t *r)
{
    pthread_mutex_lock(&m->mu);
    if (!m->started)
        m->started = pthread_create(&m->thread, NULL, monitor_main, m) == 0;
    r->next_hb = clock_mono_ms() + r->heartbeat_ms;
    m->cur = m->started ? r : NULL;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* Takes the job back: once this returns the monitor no longer touches it. */
static void monitor_unwatch(monitor_t *m)
{
    pthread_mutex_lock(&m->mu);
    m->cur = NULL;
    pthread_cond_broadcast(&m->cv);
    while (m->busy)
        pthread_cond_wait(&m->cv, &m->mu);
    pthread_mutex_unlock(&m->mu);
}

static void monitor_stop(monitor_t *m)
{
    pthread_mutex_lock(&m->mu);
    m->quit = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->started)
        pthread_join(m->thread, NULL);
}

/* Retries op (post_op) until a definite answer: 2xx -> 0 (the answer in *keep when keep is not
 * NULL), 409/404 -> 1 (lease gone), 507 -> 2 (the image it carries met a full image store), gives
 * up after give_up_ms -> -1. Transient errors back off from 100 ms to 5 s. */
static int send_op(httpc_t *h, const worker_config_t *cfg, const char *id, const char *op,
                   const char *body, const image_body_t *img, int64_t give_up_ms,
                   httpc_resp_t *keep)
{
    int64_t backoff = 100, end = clock_mono_ms() + give_up_ms;
    for (;;) {
        httpc_resp_t resp;
        long st = post_op(h, cfg, id, op, body, img, &resp);
        if (st >= 200 && st < 300 && keep) {
            *keep = resp;
            return 0;
        }
        httpc_resp_free(&resp);
        if (st >= 200 && st < 300)
            return 0;
        if (st == 409 || st == 404)
            return 1;
        if (st == 507 && img) {
            log_warn("event=upload_storage_full job=%s", id);
            return 2;
        }
        if (st >= 400 && st < 500 && st != 429) {
            log_error("event=protocol_error op=%s job=%s status=%ld", op, id, st);
            return -1;
        }
        if (clock_mono_ms() >= end)
            return -1;
        clock_sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

static int until_answered(httpc_t *h, const worker_config_t *cfg, const char *id, const char *op,
                          const char *body, int64_t give_up_ms)
{
    return send_op(h, cfg, id, op, body, NULL, give_up_ms, NULL);
}

static int upload(httpc_t *h, const worker_config_t *cfg, const wire_upload_t *up,
                  const char *lease, const backend_result_t *res, const char *id)
{
    const char *url = up->url, *method = up->method;
    int needs_lease = up->needs_lease;
    char lease_hdr[128];
    snprintf(lease_hdr, sizeof lease_hdr, "X-Pingvas-Lease: %s", lease);
    int64_t backoff = 100, end = clock_mono_ms() + 120000;
    for (;;) {
        httpc_req_t req = {.method = method,
                           .url = url,
                           .bearer = needs_lease ? cfg->token : NULL,
                           .extra_header = needs_lease ? lease_hdr : NULL,
                           .body = res->png,
                           .body_len = res->png_len,
                           .content_type = "image/png",
                           .timeout_ms = 60000};
        httpc_resp_t resp;
        httpc_do(h, &req, &resp);
        long st = resp.status;
        if (st == 0)
            log_warn("event=upload_error job=%s err=\"%s\"", id, resp.error);
        httpc_resp_free(&resp);
        if (st >= 200 && st < 300)
            return 0;
        if (st == 409 || st == 404)
            return 1;
        if (st == 507) { /* Insufficient Storage: the image store is full */
            log_warn("event=upload_storage_full job=%s", id);
            return 2;
        }
        if ((st >= 400 && st < 500 && st != 429) || clock_mono_ms() >= end) {
            log_error("event=upload_failed job=%s status=%ld", id, st);
            return -1;
        }
        clock_sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

/* Reports a job's end under its lease until the server answers (body from wire.h; NULL when out
 * of memory: nothing sent). Returns what until_answered returns. */
static int report_end(httpc_t *h, const worker_config_t *cfg, const running_t *r, const char *op,
                      char *body, int64_t give_up_ms)
{
    int rc = body ? until_answered(h, cfg, r->id, op, body, give_up_ms) : -1;
    free(body);
    return rc;
}

/* The complete of a generated image, asking for the next job when ask is set
 * (complete-and-claim). Where the server hosts the images (upload.needs_lease) the PNG goes in
 * the complete itself, else it is uploaded first. 0 done (*has_next and next filled when the
 * answer carried a job), 1 lease gone, 2 the image store was full, -1 the image could not be
 * stored. */
static int complete_job(httpc_t *h, const worker_config_t *cfg, const running_t *r,
                        const wire_job_t *wj, const backend_result_t *res, const wire_claim_t *ask,
                        wire_job_t *next, int *has_next)
{
    image_body_t img = {.png = res->png, .len = res->png_len};
    int carry = wj->upload.needs_lease;
    if (!carry) {
        int up = upload(h, cfg, &wj->upload, r->lease, res, r->id);
        if (up != 0)
            return up;
    }
    char *body = wire_complete_body(r->lease, res->gpu_seconds, ask);
    httpc_resp_t resp;
    memset(&resp, 0, sizeof resp);
    int rc =
        body ? send_op(h, cfg, r->id, "complete", body, carry ? &img : NULL, 600000, &resp) : -1;
    free(body);
    if (rc == -1 && !carry) {
        log_warn("event=complete_failed job=%s", r->id);
        rc = 0; /* the image is up: nothing to fail; the lease runs out if it never lands */
    }
    char why[128];
    if (rc == 0 && ask) {
        *has_next = wire_parse_complete_answer(resp.body, resp.len, next, why, sizeof why);
        if (*has_next < 0) /* the lease of a job in it runs out and the job goes back */
            log_error("event=bad_complete_response job=%s err=\"%s\"", r->id, why);
        *has_next = *has_next > 0;
    }
    httpc_resp_free(&resp);
    return rc;
}

/* What the claim loop works with. */
typedef struct claimer {
    const worker_config_t *cfg;
    backend_t *be;
    lifecycle_t *life;
    httpc_t *h;
    const char *wid;
    int jobs;
    int64_t full_backoff;
    monitor_t mon;
} claimer_t;

/* Whether the complete of the job running now may ask for the next one: not when this job is
 * the last one allowed (--max-jobs), nor once a stop or a retire was asked, nor while the node is
 * being disrupted: a draining or retiring worker is never handed a job. */
static int may_take_next(const claimer_t *c)
{
    return !atomic_load(&stop_requested) && !atomic_load(&retire_requested) &&
           !(c->cfg->max_jobs > 0 && c->jobs + 1 >= c->cfg->max_jobs) &&
           !pod_guard_hold(c->cfg->guard);
}

/* After a generation that worked: the image and the complete (asking for the next job with ask
 * when may_take_next says so now); release on a full image store (returns 1), fail (retryable)
 * when the image could not be stored. */
static int finish_generated(const claimer_t *c, const running_t *r, const wire_job_t *wj,
                            const backend_result_t *res, const wire_claim_t *ask, wire_job_t *next,
                            int *has_next)
{
    httpc_t *h = c->h;
    const worker_config_t *cfg = c->cfg;
    int rc = complete_job(h, cfg, r, wj, res, may_take_next(c) ? ask : NULL, next, has_next);
    if (rc == 0) {
        log_info("event=job_done job=%s gpu_seconds=%.3f next=%s", r->id, res->gpu_seconds,
                 *has_next ? next->id : "-");
    } else if (rc == 1) {
        log_warn("event=complete_refused job=%s (lease lost or canceled)", r->id);
    } else if (rc == 2) {
        report_end(h, cfg, r, "release", wire_release_body(r->lease), 30000);
        log_info("event=job_released job=%s reason=storage_full", r->id);
        return 1;
    } else {
        report_end(h, cfg, r, "fail", wire_fail_body(r->lease, "image upload failed", 1), 60000);
    }
    return 0;
}

/* Runs one claimed job to its end; a complete asks for the next job when ask is not NULL, and
 * *has_next tells whether next was filled. Returns 1 when the image store was full (the job was
 * released: no failed attempt, no charge), else 0. */
static int run_job(claimer_t *c, const wire_job_t *wj, const wire_claim_t *ask, wire_job_t *next,
                   int *has_next)
{
    const worker_config_t *cfg = c->cfg;
    backend_t *be = c->be;
    httpc_t *h = c->h;
    running_t r;
    const job_params_t *p = &wj->params;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    snprintf(r.id, sizeof r.id, "%s", wj->id);
    snprintf(r.lease, sizeof r.lease, "%s", wj->lease_id);
    r.heartbeat_ms = wj->heartbeat_ms;
    r.estimate_s = be->ops->estimate_seconds(be, p);
    r.started_mono = clock_mono_ms();
    atomic_store(&r.generating, 1);
    monitor_watch(&c->mon, &r);

    log_info("event=job_start job=%s steps=%d size=%dx%d estimate_s=%.2f", r.id, p->steps, p->width,
             p->height, r.estimate_s);
    backend_result_t res = {0};
    char err[256] = "";
    int rc = be->ops->generate(be, p, &r.ctl, &res, err, sizeof err), full = 0;
    atomic_store(&r.generating, 0);

    if (rc == BACKEND_OK && atomic_load(&r.reason) == CANCEL_NONE) {
        full = finish_generated(c, &r, wj, &res, ask, next, has_next);
    } else if (atomic_load(&r.reason) == CANCEL_RELEASE) {
        report_end(h, cfg, &r, "release", wire_release_body(r.lease), 30000);
        log_info("event=job_released job=%s", r.id);
    } else if (atomic_load(&r.reason) != CANCEL_NONE) {
        log_info("event=job_abandoned job=%s (lease lost or canceled)", r.id);
    } else {
        report_end(h, cfg, &r, "fail",
                   wire_fail_body(r.lease, err[0] ? err : "generation failed", 1), 60000);
        log_warn("event=job_error job=%s err=\"%s\"", r.id, err);
    }
    free(res.png);

    monitor_unwatch(&c->mon);
    return full;
}

/* After a job released for a full image store, waits before claiming again (the next job would
 * meet the same full store): 1 s, doubling to 30 s while it stays full; reset by any other end. */
static void full_store_wait(int full, int64_t *backoff)
{
    if (!full) {
        *backoff = FULL_BACKOFF_MS;
        return;
    }
    log_warn("event=storage_full_backoff ms=%lld", (long long)*backoff);
    for (int64_t t = 0; t < *backoff && !atomic_load(&stop_requested); t += 50)
        clock_sleep_ms(50);
    *backoff = *backoff * 2 > 30000 ? 30000 : *backoff * 2;
}

/* While the pod's node is being disrupted (podguard.h) the worker takes no new job there: it
 * reports idle and waits a second (or for SIGTERM). 1 when it waited, 0 when free to claim. */
static int held_by_node(const worker_config_t *cfg)
{
    if (!pod_guard_hold(cfg->guard))
        return 0;
    pod_guard_set_busy(cfg->guard, 0);
    report('I');
    for (int64_t slept = 0; slept < 1000 && !atomic_load(&stop_requested); slept += 50)
        clock_sleep_ms(50);
    return 1;
}

/* Signals (SIGTERM/SIGINT drain, SIGUSR1 retire) and the supervisor's status pipe. */
static void worker_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_retire;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    const char *sfd = getenv("PINGVAS_STATUS_FD");
    if (sfd && *sfd) {
        char *end;
        long v = strtol(sfd, &end, 10);
        if (*end == '\0' && v > 2 && v < 65536)
            status_fd = (int)v;
    }
}

/* --worker-id, or host-pid-random. */
static void worker_id(const worker_config_t *cfg, char *wid, size_t size)
{
    if (cfg->worker_id && *cfg->worker_id) {
        snprintf(wid, size, "%s", cfg->worker_id);
        return;
    }
    char host[64] = "host", rnd[9];
    gethostname(host, sizeof host - 1);
    random_hex(rnd, 4);
    snprintf(wid, size, "%.60s-%d-%s", host, (int)getpid(), rnd);
}

/* A 200 claim answer: decodes it and runs the job, then each next job its complete brought
 * (complete-and-claim), until a complete brings none. */
static void take_job(claimer_t *c, const httpc_resp_t *resp)
{
    wire_job_t wj, next;
    char why[128];
    if (wire_parse_job(resp->body, resp->len, &wj, why, sizeof why) != 0) {
        /* the lease runs out and the job goes back to the queue */
        log_error("event=bad_claim_response err=\"%s\"", why);
        return;
    }
    report('B');
    pod_guard_set_busy(c->cfg->guard, 1);
    lifecycle_busy(c->life, 1);
    wire_claim_t ask;
    memset(&ask, 0, sizeof ask);
    snprintf(ask.worker_id, sizeof ask.worker_id, "%s", c->wid);
    snprintf(ask.tier, sizeof ask.tier, "%s", c->cfg->tier);
    for (;;) {
        int has_next = 0;
        memset(&next, 0, sizeof next);
        int full = run_job(c, &wj, &ask, &next, &has_next);
        wire_job_clear(&wj);
        c->jobs++;
        if (!has_next) {
            lifecycle_busy(c->life, 0);
            pod_guard_set_busy(c->cfg->guard, 0); /* idle again (the next claim may mark it) */
            full_store_wait(full, &c->full_backoff);
            return;
        }
        full_store_wait(0, &c->full_backoff);
        wj = next;
    }
}

/* 0 to claim again, 1 to stop (max jobs done, retire asked, stop asked). */
static int claim_loop_done(claimer_t *c)
{
    if (atomic_load(&stop_requested) || (c->cfg->max_jobs > 0 && c->jobs >= c->cfg->max_jobs))
        return 1;
    if (atomic_load(&retire_requested)) {
        log_info("event=worker_retire worker=%s msg=\"idle; leaving as the autoscaler asked\"",
                 c->wid);
        return 1;
    }
    return 0;
}

/* Claims and runs jobs until told to stop. The worker's exit status (1: the token refused). */
static int claim_loop(claimer_t *c, const char *claim_body)
{
    const worker_config_t *cfg = c->cfg;
    char url[1024];
    int64_t backoff = 100;
    snprintf(url, sizeof url, "%s" WIRE_PATH_CLAIM, cfg->server_url);
    while (!claim_loop_done(c)) {
        if (held_by_node(cfg))
            continue;
        report('I');
        httpc_req_t req = {.method = "POST",
                           .url = url,
                           .bearer = cfg->token,
                           .body = claim_body,
                           .body_len = strlen(claim_body),
                           .timeout_ms = cfg->claim_wait_ms + 15000,
                           .abort_flag = &stop_requested};
        httpc_resp_t resp;
        httpc_do(c->h, &req, &resp);
        long st = resp.status;
        if (st == 200) {
            backoff = 100;
            take_job(c, &resp);
        } else if (st == 204) {
            pod_guard_set_busy(cfg->guard, 0); /* idle: first to go on a scale-down */
        } else if (st == 401) {
            log_error("event=unauthorized msg=\"the server refused the worker token; set "
                      "PINGVAS_WORKER_TOKEN to the server's token\"");
        } else if (!atomic_load(&stop_requested)) {
            log_warn("event=claim_retry status=%ld err=\"%s\" backoff_ms=%lld", st, resp.error,
                     (long long)backoff);
        }
        httpc_resp_free(&resp);
        if (st == 401)
            return 1;
        if (st == 200 || st == 204)
            continue;
        for (int64_t slept = 0; slept < backoff && !atomic_load(&stop_requested); slept += 50)
            clock_sleep_ms(50);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    return 0;
}

/* Tells the server this worker is gone so the fleet view is right at once. */
static void say_bye(const worker_config_t *cfg, httpc_t *h, const char *wid)
{
    char url[1024], *body = wire_bye_body(wid);
    snprintf(url, sizeof url, "%s" WIRE_PATH_BYE, cfg->server_url);
    if (!body)
        return;
    httpc_req_t req = {.method = "POST",
                       .url = url,
                       .bearer = cfg->token,
                       .body = body,
                       .body_len = strlen(body),
                       .timeout_ms = 2000};
    httpc_resp_t resp;
    httpc_do(h, &req, &resp);
    httpc_resp_free(&resp);
    free(body);
}

int worker_run(const worker_config_t *cfg)
{
    char wid[160], err[512];
    /* Each job's PNG encode allocates and frees about 300 KB of zlib state. With glibc's defaults
     * those blocks were mmap'd or the heap trimmed back after every job, and the next job faulted
     * the pages in again (brk, munmap and page faults: 15 % of a worker's CPU per job with no GPU
     * time). Kept in the heap instead; the peak (VmHWM) is the same. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    worker_signals();
    report('S'); /* the supervisor stops waiting for this process to start */
    worker_id(cfg, wid, sizeof wid);
    backend_t *be = backend_create(&cfg->backend, err, sizeof err);
    if (!be) {
        log_error("event=backend_error err=\"%s\"", err);
        return 1;
    }
    lifecycle_t *life = lifecycle_start(cfg, wid);
    int64_t t0 = clock_mono_ms();
    if (be->ops->load(be, err, sizeof err) != BACKEND_OK) {
        log_error("event=model_load_failed err=\"%s\"", err);
        lifecycle_end(life);
        be->ops->destroy(be);
        return 2; /* the engine or its models are not there: a configuration error */
    }
    lifecycle_loaded(life);
    log_info("event=worker_ready worker=%s tier=%s backend=%s model_load_ms=%lld server=%s", wid,
             cfg->tier, cfg->backend.name, (long long)(clock_mono_ms() - t0), cfg->server_url);
    report('R');
    imds_watch_t *imds = NULL;
    if (cfg->imds_url && *cfg->imds_url)
        imds = imds_watch_start(cfg->imds_url, cfg->imds_poll_ms, worker_request_stop);
    claimer_t c = {.cfg = cfg,
                   .be = be,
                   .life = life,
                   .wid = wid,
                   .h = httpc_new(),
                   .full_backoff = FULL_BACKOFF_MS,
                   .mon = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER}};
    char *claim_body = wire_claim_body(wid, cfg->tier, cfg->claim_wait_ms);
    int status = 1;
    if (c.h && claim_body)
        status = claim_loop(&c, claim_body);
    else
        log_error("event=worker_out_of_memory worker=%s", wid);
    free(claim_body);
    monitor_stop(&c.mon);
    say_bye(cfg, c.h, wid);
    httpc_free(c.h);
    imds_watch_stop(imds);
    lifecycle_end(life);
    be->ops->destroy(be);
    log_info("event=worker_exit worker=%s jobs=%d", wid, c.jobs);
    return status;
}
