/* loadtest.c: `pingvas loadtest`, the seed's load test against a running server.
 *
 * Submits N jobs with at most C requests in flight (libcurl multi, keep-alive connections),
 * then polls each unfinished job (GET /api/v1/generation/{id}, same bounded concurrency) until
 * every job has ended or --timeout passes, sampling GET /api/v1/queue every poll interval for
 * the worker-count timeline. A poll round goes oldest first and starts no more polls once one
 * answers that its job is still queued: the queue runs a user's jobs in order, so the jobs after
 * it are queued too, and polling them would only take the server's CPU from the jobs measured
 * (in bench (b) they were about half the server's requests). If --timeout passes, a round over
 * the unfinished jobs (up to LT_POLL_WINDOW) comes before the report, so that a job that ended
 * out of order is counted.
 * Latencies that happen on the server (queue wait, end to end) come from the job's own timestamps,
 * so the polling rate does not distort them; submit latency is the client-side transfer time of
 * each POST. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/job.h"
#include "lib/clock.h"
#include "cli/cmd.h"
#include "lib/config.h"

#define EXIT_USAGE 2
#define LT_BODY_MAX (1024 * 1024) /* cap on one response body */
#define LT_PROMPT_MAX 4096        /* cap on one expanded prompt */
#define LT_TOKEN_MAX 8192         /* cap on the bearer token */
#define LT_URL_MAX 2048           /* cap on the server URL plus path */
#define LT_TIMELINE_MAX 10000     /* cap on stored worker-count changes */
#define LT_FAIL_KINDS 64          /* cap on distinct failure labels */
#define LT_POLL_WINDOW 2000       /* unfinished jobs looked at per poll round, oldest first */

typedef struct lt_config {
    const char *server;
    const char *token;
    int jobs;
    int concurrency;
    const char *prompt;
    const char *model;
    int width;
    int height;
    int steps;
    int64_t timeout_ms;
    int64_t poll_ms;
    int no_wait;
    int json;
} lt_config_t;

#define O(field) offsetof(lt_config_t, field)
static const opt_t lt_opts[] = {
    {"server", "PINGVAS_SERVER_URL", OPT_STR, "http://127.0.0.1:8080", 0, 0, O(server),
     "URL of the pingvas server"},
    {"token", "PINGVAS_TOKEN", OPT_STR, NULL, 0, 0, O(token),
     "user JWT (required; mint one with 'pingvas token NAME')"},
    {"jobs", NULL, OPT_INT, "100", 1, 10000000, O(jobs), "jobs to submit"},
    {"concurrency", NULL, OPT_INT, "10", 1, 4096, O(concurrency),
     "requests in flight at once (submissions, then status polls)"},
    {"prompt", NULL, OPT_STR, "Test image {i}", 0, 0, O(prompt),
     "prompt; {i} becomes the job's number (0..N-1)"},
    {"model", NULL, OPT_STR, "sd15", 0, 0, O(model), "model name"},
    {"width", NULL, OPT_INT, "512", 64, 2048, O(width), "image width (multiple of 8)"},
    {"height", NULL, OPT_INT, "512", 64, 2048, O(height), "image height (multiple of 8)"},
    {"steps", NULL, OPT_INT, "20", 1, 150, O(steps), "sampling steps"},
    {"timeout", NULL, OPT_DURATION, "30m", 1000, 7 * 86400000.0, O(timeout_ms),
     "how long to wait for every job to end, after submitting"},
    {"poll", NULL, OPT_DURATION, "500ms", 10, 600000, O(poll_ms),
     "how often to poll job status and the queue"},
    {"no-wait", NULL, OPT_BOOL, "0", 0, 0, O(no_wait), "report after submitting; do not wait"},
    {"json", NULL, OPT_BOOL, "0", 0, 0, O(json), "print the report as one JSON object"},
};
#undef O
#define NOPTS (sizeof lt_opts / sizeof lt_opts[0])

enum { ST_NONE = 0, ST_QUEUED, ST_RUNNING, ST_COMPLETED, ST_FAILED, ST_CANCELED, ST_LOST };
enum { X_SUBMIT = 1, X_POLL, X_QUEUE };

typedef struct lt_job {
    char id[64];        /* empty until the submission was accepted */
    int answered;       /* the create got an answer (or a transport error) */
    long submit_status; /* HTTP status of the create; 0 = transport error */
    double submit_ms;   /* client-side transfer time of the create */
    int state;          /* ST_* */
    int64_t created_at; /* ms since the epoch, 0 when unknown */
    int64_t started_at;
    int64_t completed_at;
    double gpu_seconds;
    int64_t credits;
    int step, steps; /* the job JSON's progress while in_progress; 0 0 otherwise */
} lt_job_t;

typedef struct lt_buf {
    char *p;
    size_t len;
    int over; /* the body passed LT_BODY_MAX */
} lt_buf_t;

typedef struct lt_xfer {
    CURL *easy;
    int kind; /* 0 when idle, else X_* */
    size_t job;
    lt_buf_t body;
    char *post; /* request body (submissions), owned */
} lt_xfer_t;

typedef struct lt_sample {
    double t;       /* seconds since the start */
    int workers[2]; /* standard, enterprise */
    int queued;
    int running;
} lt_sample_t;

typedef struct lt_fail {
    char label[24];
    int count;
} lt_fail_t;

typedef struct lt {
    lt_config_t cfg;
    char base[LT_URL_MAX];
    char auth[LT_TOKEN_MAX + 32];
    struct curl_slist *hdrs;
    CURLM *multi;
    lt_xfer_t *slots;
    int nslots;
    int busy;
    lt_xfer_t qx; /* the queue sampler's own handle */
    lt_job_t *jobs;
    size_t njobs;
    size_t next_submit;
    size_t submitted; /* answered, any status */
    size_t accepted;
    size_t ended; /* accepted jobs in a terminal state */
    size_t completed;
    int round_queued;    /* a poll of this round found its job queued: start no more polls */
    int64_t t0;          /* monotonic ms at the start */
    int64_t submit_end;  /* monotonic ms when the last submission was answered */
    int64_t next_sample; /* monotonic ms of the next queue sample */
    lt_sample_t last;    /* latest queue sample */
    int have_sample;
    lt_sample_t *timeline; /* worker-count changes */
    size_t ntimeline;
    int peak_workers;
    lt_fail_t fails[LT_FAIL_KINDS];
    int nfails;
    int tty;
    int64_t last_progress;
    int progress_drawn;
    char err[256]; /* first transport error, for the report */
} lt_t;

static volatile sig_atomic_t lt_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    lt_interrupted = 1;
}

/* ---------- small helpers ---------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    lt_buf_t *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n > LT_BODY_MAX) {
        b->over = 1;
        return 0;
    }
    char *nb = realloc(b->p, b->len + n + 1);
    if (!nb)
        return 0;
    b->p = nb;
    memcpy(b->p + b->len, ptr, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

static void fail_count(lt_t *lt, const char *label)
{
    for (int i = 0; i < lt->nfails; i++)
        if (strcmp(lt->fails[i].label, label) == 0) {
            lt->fails[i].count++;
            return;
        }
    if (lt->nfails >= LT_FAIL_KINDS)
        label = "other";
    if (lt->nfails < LT_FAIL_KINDS) {
        snprintf(lt->fails[lt->nfails].label, sizeof lt->fails[0].label, "%s", label);
        lt->fails[lt->nfails++].count = 1;
    } else {
        lt->fails[LT_FAIL_KINDS - 1].count++;
    }
}

static int64_t json_time_ms(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    int64_t ms;
    if (clock_parse_iso8601_ms(s, &ms) != 0)
        return 0;
    return ms;
}

static int state_parse(const char *s)
{
    if (!s)
        return ST_NONE;
    if (strcmp(s, "queued") == 0)
        return ST_QUEUED;
    if (strcmp(s, "in_progress") == 0)
        return ST_RUNNING;
    if (strcmp(s, "completed") == 0)
        return ST_COMPLETED;
    if (strcmp(s, "failed") == 0)
        return ST_FAILED;
    if (strcmp(s, "canceled") == 0)
        return ST_CANCELED;
    return ST_NONE;
}

static int is_terminal(int st)
{
    return st == ST_COMPLETED || st == ST_FAILED || st == ST_CANCELED || st == ST_LOST;
}

/* Copies the fields a job JSON carries into j. Returns the new state. */
static int job_update(lt_job_t *j, json_t *o)
{
    const char *id = json_string_value(json_object_get(o, "id"));
    if (id && !j->id[0])
        snprintf(j->id, sizeof j->id, "%s", id);
    int st = state_parse(json_string_value(json_object_get(o, "status")));
    if (st != ST_NONE)
        j->state = st;
    int64_t t = json_time_ms(o, "created_at");
    if (t)
        j->created_at = t;
    t = json_time_ms(o, "started_at");
    if (t)
        j->started_at = t;
    t = json_time_ms(o, "completed_at");
    if (t)
        j->completed_at = t;
    json_t *g = json_object_get(o, "gpu_seconds");
    if (json_is_number(g))
        j->gpu_seconds = json_number_value(g);
    json_t *c = json_object_get(o, "credits_charged");
    if (json_is_integer(c))
        j->credits = (int64_t)json_integer_value(c);
    json_t *pr = json_object_get(o, "progress");
    json_t *ps = json_object_get(pr, "step"), *pn = json_object_get(pr, "steps");
    int has = j->state == ST_RUNNING && json_is_integer(ps) && json_is_integer(pn);
    j->step = has ? (int)json_integer_value(ps) : 0;
    j->steps = has ? (int)json_integer_value(pn) : 0;
    return j->state;
}

static double since_start(const lt_t *lt)
{
    return (double)(clock_mono_ms() - lt->t0) / 1000.0;
}

/* ---------- progress ---------- */

/* "running R  steps S/N": the jobs last seen in_progress and the sums of their reported
 * progress (the job JSON's progress), or "" before any job runs. */
static void running_text(const lt_t *lt, char *buf, size_t size)
{
    long running = 0, step = 0, steps = 0;
    for (size_t i = 0; i < lt->njobs; i++) {
        const lt_job_t *j = &lt->jobs[i];
        if (j->state != ST_RUNNING)
            continue;
        running++;
        step += j->step;
        steps += j->steps;
    }
    buf[0] = '\0';
    if (running && steps)
        snprintf(buf, size, "  running %ld  steps %ld/%ld", running, step, steps);
    else if (running)
        snprintf(buf, size, "  running %ld", running);
}

static void progress(lt_t *lt, int final)
{
    int64_t now = clock_mono_ms();
    int64_t every = lt->tty ? 100 : 5000;
    if (!final && now - lt->last_progress < every)
        return;
    if (!lt->tty && final)
        return; /* the report follows; no need for a last plain line */
    lt->last_progress = now;
    size_t n = lt->njobs;
    char workers[32] = "?";
    if (lt->have_sample)
        snprintf(workers, sizeof workers, "%d", lt->last.workers[0] + lt->last.workers[1]);
    char run[80];
    running_text(lt, run, sizeof run);
    if (lt->tty) {
        int submitting = lt->submitted < n;
        size_t done = submitting ? lt->submitted : lt->ended + (lt->submitted - lt->accepted);
        const int width = 30;
        int fill = n ? (int)((double)done / (double)n * width) : width;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[width] = '\0';
        fprintf(stderr, "\r\033[K[%s] %s %zu/%zu  completed %zu%s  workers %s  %.1fs", bar,
                submitting ? "submitted" : "ended", done, n, lt->completed, run, workers,
                since_start(lt));
        lt->progress_drawn = 1;
        if (final) {
            fprintf(stderr, "\r\033[K");
            lt->progress_drawn = 0;
        }
    } else {
        fprintf(stderr,
                "loadtest: t=%.1fs submitted %zu/%zu accepted %zu ended %zu completed %zu%s "
                "workers %s\n",
                since_start(lt), lt->submitted, n, lt->accepted, lt->ended, lt->completed, run,
                workers);
    }
    fflush(stderr);
}

/* ---------- transfers ---------- */

static void xfer_prepare(lt_t *lt, lt_xfer_t *x, const char *url)
{
    CURL *e = x->easy;
    curl_easy_reset(e);
    free(x->body.p);
    memset(&x->body, 0, sizeof x->body);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, lt->hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &x->body);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
}

/* Expands {i} in the prompt into out (capped). */
static void expand_prompt(const char *tmpl, size_t i, char *out, size_t cap)
{
    size_t o = 0;
    char num[32];
    snprintf(num, sizeof num, "%zu", i);
    for (const char *p = tmpl; *p && o + 1 < cap; p++) {
        if (p[0] == '{' && p[1] == 'i' && p[2] == '}') {
            for (const char *q = num; *q && o + 1 < cap; q++)
                out[o++] = *q;
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static int start_submit(lt_t *lt, lt_xfer_t *x)
{
    size_t i = lt->next_submit++;
    char prompt[LT_PROMPT_MAX];
    expand_prompt(lt->cfg.prompt, i, prompt, sizeof prompt);
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i}", "prompt", prompt, "model", lt->cfg.model,
                          "width", lt->cfg.width, "height", lt->cfg.height, "steps", lt->cfg.steps);
    free(x->post);
    x->post = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!x->post)
        return -1;
    char url[LT_URL_MAX + 64];
    snprintf(url, sizeof url, "%s/api/v1/generation/create", lt->base);
    xfer_prepare(lt, x, url);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->post);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(x->post));
    x->kind = X_SUBMIT;
    x->job = i;
    if (curl_multi_add_handle(lt->multi, x->easy) != CURLM_OK)
        return -1;
    lt->busy++;
    return 0;
}

static int start_poll(lt_t *lt, lt_xfer_t *x, size_t i)
{
    char url[LT_URL_MAX + 128];
    snprintf(url, sizeof url, "%s/api/v1/generation/%s", lt->base, lt->jobs[i].id);
    xfer_prepare(lt, x, url);
    x->kind = X_POLL;
    x->job = i;
    if (curl_multi_add_handle(lt->multi, x->easy) != CURLM_OK)
        return -1;
    lt->busy++;
    return 0;
}

static void maybe_sample(lt_t *lt)
{
    int64_t now = clock_mono_ms();
    if (lt->qx.kind || now < lt->next_sample)
        return;
    lt->next_sample = now + lt->cfg.poll_ms;
    char url[LT_URL_MAX + 64];
    snprintf(url, sizeof url, "%s/api/v1/queue", lt->base);
    xfer_prepare(lt, &lt->qx, url);
    lt->qx.kind = X_QUEUE;
    if (curl_multi_add_handle(lt->multi, lt->qx.easy) != CURLM_OK)
        lt->qx.kind = 0;
}

static void on_queue(lt_t *lt, long status, json_t *o)
{
    if (status != 200 || !o)
        return;
    json_t *tiers = json_object_get(o, "tiers");
    const char *const *names = tier_names;
    lt_sample_t s = {.t = since_start(lt)};
    for (int k = 0; k < 2; k++) {
        json_t *t = json_object_get(tiers, names[k]);
        s.workers[k] = (int)json_integer_value(json_object_get(t, "workers"));
        s.queued += (int)json_integer_value(json_object_get(t, "queued"));
        s.running += (int)json_integer_value(json_object_get(t, "running"));
    }
    int total = s.workers[0] + s.workers[1];
    if (total > lt->peak_workers)
        lt->peak_workers = total;
    int changed = !lt->ntimeline || lt->timeline[lt->ntimeline - 1].workers[0] != s.workers[0] ||
                  lt->timeline[lt->ntimeline - 1].workers[1] != s.workers[1];
    if (changed && lt->ntimeline < LT_TIMELINE_MAX) {
        lt_sample_t *nt = realloc(lt->timeline, (lt->ntimeline + 1) * sizeof *nt);
        if (nt) {
            lt->timeline = nt;
            lt->timeline[lt->ntimeline++] = s;
        }
    }
    lt->last = s;
    lt->have_sample = 1;
}

static void on_submit(lt_t *lt, lt_xfer_t *x, long status, double ms, json_t *o)
{
    lt_job_t *j = &lt->jobs[x->job];
    j->answered = 1;
    j->submit_status = status;
    j->submit_ms = ms;
    lt->submitted++;
    if (lt->submitted == lt->njobs)
        lt->submit_end = clock_mono_ms();
    if (status == 201 || status == 200) {
        if (o)
            job_update(j, o);
        if (j->id[0]) {
            lt->accepted++;
            if (is_terminal(j->state)) {
                lt->ended++;
                if (j->state == ST_COMPLETED)
                    lt->completed++;
            }
            return;
        }
        fail_count(lt, "bad_response");
        return;
    }
    if (status == 0) {
        fail_count(lt, "transport_error");
        return;
    }
    char label[24];
    snprintf(label, sizeof label, "%ld", status);
    fail_count(lt, label);
}

static void on_poll(lt_t *lt, lt_xfer_t *x, long status, json_t *o)
{
    lt_job_t *j = &lt->jobs[x->job];
    if (is_terminal(j->state))
        return;
    if (status == 200 && o) {
        int st = job_update(j, o);
        if (st == ST_QUEUED)
            lt->round_queued = 1;
        if (is_terminal(st)) {
            lt->ended++;
            if (j->state == ST_COMPLETED)
                lt->completed++;
        }
    } else if (status == 404) {
        j->state = ST_LOST; /* deleted, or not ours any more: it will never end for us */
        lt->ended++;
    }
    /* anything else (transport error, 5xx, 429): try again next round */
}

/* Runs transfers and dispatches completions; then, when none completed, waits up to wait_ms for
 * activity. (Waiting after completions would idle a freed slot: with one request in flight,
 * each request took until the wait ran out, about 10 submissions a second.) */
static void pump(lt_t *lt, int wait_ms)
{
    int running = 0;
    maybe_sample(lt);
    curl_multi_perform(lt->multi, &running);
    int left, done = 0;
    CURLMsg *m;
    for (;;) {
        m = curl_multi_info_read(lt->multi, &left);
        if (!m)
            break;
        if (m->msg != CURLMSG_DONE)
            continue;
        done++;
        CURL *e = m->easy_handle;
        lt_xfer_t *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        long status = 0;
        if (m->data.result == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        else if (!lt->err[0])
            snprintf(lt->err, sizeof lt->err, "%s", curl_easy_strerror(m->data.result));
        curl_off_t us = 0;
        curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &us);
        curl_multi_remove_handle(lt->multi, e);
        json_t *o = NULL;
        if (status && x->body.p && !x->body.over)
            o = json_loadb(x->body.p, x->body.len, 0, NULL);
        int kind = x->kind;
        x->kind = 0;
        if (kind == X_QUEUE) {
            on_queue(lt, status, o);
        } else {
            lt->busy--;
            if (kind == X_SUBMIT)
                on_submit(lt, x, status, (double)us / 1000.0, o);
            else
                on_poll(lt, x, status, o);
        }
        json_decref(o);
        free(x->body.p);
        memset(&x->body, 0, sizeof x->body);
    }
    progress(lt, 0);
    if (wait_ms > 0 && !done) {
        int64_t until_sample = lt->next_sample - clock_mono_ms();
        if (!lt->qx.kind && until_sample < wait_ms)
            wait_ms = until_sample < 0 ? 0 : (int)until_sample;
        curl_multi_poll(lt->multi, NULL, 0, wait_ms, NULL);
    }
}

static lt_xfer_t *idle_slot(lt_t *lt)
{
    for (int i = 0; i < lt->nslots; i++)
        if (!lt->slots[i].kind)
            return &lt->slots[i];
    return NULL;
}

static int submit_all(lt_t *lt)
{
    while (lt->submitted < lt->njobs && !lt_interrupted) {
        lt_xfer_t *x;
        while (lt->next_submit < lt->njobs && (x = idle_slot(lt)))
            if (start_submit(lt, x) != 0)
                return -1;
        pump(lt, 100);
    }
    return 0;
}

/* The first job from i on that was accepted and has not ended (lt->njobs when none). */
static size_t next_unfinished(const lt_t *lt, size_t i)
{
    while (i < lt->njobs && (!lt->jobs[i].id[0] || is_terminal(lt->jobs[i].state)))
        i++;
    return i;
}

/* One poll round over the unfinished jobs from *scan_from on (at most `window` of them, oldest
 * first); with stop_at_queued, no poll starts after one found its job queued. */
static void poll_round(lt_t *lt, size_t *scan_from, size_t window, int stop_at_queued)
{
    *scan_from = next_unfinished(lt, *scan_from);
    lt->round_queued = 0;
    size_t i = *scan_from, started = 0;
    while ((started < window || lt->busy) && !lt_interrupted) {
        lt_xfer_t *x;
        while (started < window && !(stop_at_queued && lt->round_queued) && (x = idle_slot(lt))) {
            i = next_unfinished(lt, i);
            if (i >= lt->njobs || start_poll(lt, x, i++) != 0) {
                window = started;
                break;
            }
            started++;
        }
        if (stop_at_queued && lt->round_queued)
            window = started;
        pump(lt, 100);
    }
}

/* Polls unfinished jobs, oldest first, until all ended, the deadline passed or SIGINT; then, if
 * some have not ended, looks once more at the oldest LT_POLL_WINDOW of them (the jobs every round
 * looked at before rounds stopped at the queue's front). */
static void wait_all(lt_t *lt, int64_t deadline)
{
    size_t scan_from = 0; /* jobs before this index have all ended */
    while (lt->ended < lt->accepted && !lt_interrupted && clock_mono_ms() < deadline) {
        int64_t round_start = clock_mono_ms();
        poll_round(lt, &scan_from, LT_POLL_WINDOW, 1);
        while (lt->ended < lt->accepted && !lt_interrupted && clock_mono_ms() < deadline) {
            int64_t left = round_start + lt->cfg.poll_ms - clock_mono_ms();
            if (left <= 0)
                break;
            pump(lt, left > 100 ? 100 : (int)left);
        }
    }
    if (lt->ended < lt->accepted && !lt_interrupted)
        poll_round(lt, &scan_from, LT_POLL_WINDOW, 0);
}

/* ---------- report ---------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct lt_pct {
    size_t n;
    double p50, p95, p99, max, mean;
} lt_pct_t;

/* Nearest-rank percentiles of v[0..n) (sorted in place). */
static lt_pct_t percentiles(double *v, size_t n)
{
    lt_pct_t p = {.n = n};
    if (!n)
        return p;
    qsort(v, n, sizeof *v, cmp_double);
    double q[3] = {0.50, 0.95, 0.99};
    double *out[3] = {&p.p50, &p.p95, &p.p99};
    for (int k = 0; k < 3; k++) {
        size_t r = (size_t)ceil(q[k] * (double)n);
        *out[k] = v[r ? r - 1 : 0];
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    p.max = v[n - 1];
    p.mean = sum / (double)n;
    return p;
}

static json_t *pct_json(const lt_pct_t *p)
{
    if (!p->n)
        return json_pack("{s:I, s:n, s:n, s:n, s:n, s:n}", "n", (json_int_t)0, "p50", "p95", "p99",
                         "max", "mean");
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)p->n, "p50", p->p50, "p95",
                     p->p95, "p99", p->p99, "max", p->max, "mean", p->mean);
}

static void pct_print(const char *what, const lt_pct_t *p)
{
    if (!p->n) {
        printf("  %-16s n/a\n", what);
        return;
    }
    printf("  %-16s p50 %9.1f  p95 %9.1f  p99 %9.1f  max %9.1f ms  (n=%zu)\n", what, p->p50, p->p95,
           p->p99, p->max, p->n);
}

/* What a run measured, for the report. */
typedef struct lt_sum {
    size_t failed, canceled, lost, unfinished;
    double gpu, submit_s, submits_per_s, span_s, jps;
    int64_t credits;
    lt_pct_t ps, pq, pe; /* submit latency, queue wait, end to end */
} lt_sum_t;

/* Counts the outcomes, the charges and the span of the run; latencies into the three arrays. */
static void tally(lt_t *lt, lt_sum_t *m, double *sub, double *qw, double *e2e)
{
    size_t nsub = 0, nqw = 0, ne2e = 0;
    int64_t first_created = 0, last_completed = 0;
    for (size_t i = 0; i < lt->njobs; i++) {
        lt_job_t *j = &lt->jobs[i];
        if (j->answered && j->submit_status)
            sub[nsub++] = j->submit_ms;
        if (!j->id[0])
            continue;
        m->gpu += j->gpu_seconds;
        m->credits += j->credits;
        if (j->created_at && (!first_created || j->created_at < first_created))
            first_created = j->created_at;
        if (j->state == ST_COMPLETED) {
            if (j->started_at && j->created_at)
                qw[nqw++] = (double)(j->started_at - j->created_at);
            if (j->completed_at && j->created_at)
                e2e[ne2e++] = (double)(j->completed_at - j->created_at);
            if (j->completed_at > last_completed)
                last_completed = j->completed_at;
        }
        m->failed += j->state == ST_FAILED;
        m->canceled += j->state == ST_CANCELED;
        m->lost += j->state == ST_LOST;
        m->unfinished += j->state != ST_COMPLETED && j->state != ST_FAILED &&
                         j->state != ST_CANCELED && j->state != ST_LOST;
    }
    m->ps = percentiles(sub, nsub);
    m->pq = percentiles(qw, nqw);
    m->pe = percentiles(e2e, ne2e);
    m->submit_s = lt->submit_end ? (double)(lt->submit_end - lt->t0) / 1000.0 : since_start(lt);
    m->submits_per_s = m->submit_s > 0 ? (double)lt->submitted / m->submit_s : 0;
    m->span_s = last_completed > first_created && first_created
                    ? (double)(last_completed - first_created) / 1000.0
                    : 0;
    m->jps = m->span_s > 0 ? (double)lt->completed / m->span_s : 0;
}

static json_t *timeline_json(const lt_t *lt)
{
    json_t *tl = json_array();
    for (size_t i = 0; i < lt->ntimeline; i++) {
        const lt_sample_t *s = &lt->timeline[i];
        json_array_append_new(tl, json_pack("{s:f, s:i, s:i, s:i, s:i, s:i}", "t", s->t, "workers",
                                            s->workers[0] + s->workers[1], tier_names[0],
                                            s->workers[0], tier_names[1], s->workers[1], "queued",
                                            s->queued, "running", s->running));
    }
    return tl;
}

static void report_json(const lt_t *lt, const lt_sum_t *m, int waited)
{
    json_t *fails = json_object();
    for (int i = 0; i < lt->nfails; i++)
        json_object_set_new(fails, lt->fails[i].label, json_integer(lt->fails[i].count));
    json_t *o = json_pack(
        "{s:s, s:I, s:i, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:o, s:o, s:o, s:o, s:o, "
        "s:f, s:I, s:i, s:o, s:f}",
        "server", lt->base, "jobs", (json_int_t)lt->njobs, "concurrency", lt->cfg.concurrency,
        "waited", waited, "submitted", (json_int_t)lt->submitted, "accepted",
        (json_int_t)lt->accepted, "completed", (json_int_t)lt->completed, "failed",
        (json_int_t)m->failed, "canceled", (json_int_t)m->canceled, "unfinished",
        (json_int_t)(m->unfinished + m->lost), "submit_seconds", m->submit_s, "submits_per_second",
        m->submits_per_s, "submit_latency_ms", pct_json(&m->ps), "queue_wait_ms", pct_json(&m->pq),
        "end_to_end_ms", pct_json(&m->pe), "jobs_per_second",
        m->span_s > 0 ? json_real(m->jps) : json_null(), "failures_by_status", fails, "gpu_seconds",
        m->gpu, "credits_charged", (json_int_t)m->credits, "peak_workers", lt->peak_workers,
        "worker_timeline", timeline_json(lt), "elapsed_seconds", since_start(lt));
    if (o && lt->err[0])
        json_object_set_new(o, "first_transport_error", json_string(lt->err));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

/* The failures and the worker timeline lines of the text report. */
static void print_failures_and_workers(const lt_t *lt)
{
    printf("  failures         ");
    if (!lt->nfails)
        printf("none");
    for (int i = 0; i < lt->nfails; i++)
        printf("%s%s: %d", i ? ", " : "", lt->fails[i].label, lt->fails[i].count);
    printf("\n");
    if (lt->err[0])
        printf("  first transport error: %s\n", lt->err);
    printf("  workers          ");
    if (!lt->ntimeline)
        printf("no queue samples");
    for (size_t i = 0; i < lt->ntimeline; i++) {
        const lt_sample_t *s = &lt->timeline[i];
        printf("%st=%.1fs workers=%d", i ? " -> " : "", s->t, s->workers[0] + s->workers[1]);
        if (s->workers[1])
            printf(" (%d standard, %d enterprise)", s->workers[0], s->workers[1]);
    }
    if (lt->ntimeline)
        printf("  (peak %d)", lt->peak_workers);
    printf("\n");
}

static void report_text(const lt_t *lt, const lt_sum_t *m, int waited)
{
    printf("pingvas loadtest: %zu jobs at concurrency %d against %s (%s, %dx%d, %d steps)\n",
           lt->njobs, lt->cfg.concurrency, lt->base, lt->cfg.model, lt->cfg.width, lt->cfg.height,
           lt->cfg.steps);
    printf("  submitted %zu, accepted %zu in %.2f s (%.0f submits/s)\n", lt->submitted,
           lt->accepted, m->submit_s, m->submits_per_s);
    pct_print("submit latency", &m->ps);
    if (waited) {
        pct_print("queue wait", &m->pq);
        pct_print("end to end", &m->pe);
        printf("  completed %zu of %zu; failed %zu, canceled %zu, unfinished %zu\n", lt->completed,
               lt->njobs, m->failed, m->canceled, m->unfinished + m->lost);
        if (m->span_s > 0)
            printf("  throughput       %.2f jobs/s (first created to last completed: %.3f s)\n",
                   m->jps, m->span_s);
        printf("  GPU-seconds      %.3f\n  credits charged  %lld\n", m->gpu, (long long)m->credits);
    } else {
        printf("  not waiting for the jobs (--no-wait)\n");
    }
    print_failures_and_workers(lt);
}

static int report(lt_t *lt, int waited, int timed_out)
{
    size_t n = lt->njobs;
    double *sub = calloc(n ? n : 1, sizeof *sub);
    double *qw = calloc(n ? n : 1, sizeof *qw);
    double *e2e = calloc(n ? n : 1, sizeof *e2e);
    lt_sum_t m = {0};
    if (!sub || !qw || !e2e) {
        free(sub);
        free(qw);
        free(e2e);
        fprintf(stderr, "pingvas loadtest: out of memory\n");
        return 1;
    }
    tally(lt, &m, sub, qw, e2e);
    if (waited) {
        for (size_t k = 0; k < m.failed; k++)
            fail_count(lt, "failed");
        for (size_t k = 0; k < m.canceled; k++)
            fail_count(lt, "canceled");
        for (size_t k = 0; k < m.lost; k++)
            fail_count(lt, "lost");
        for (size_t k = 0; k < m.unfinished; k++)
            fail_count(lt, timed_out ? "timed_out" : "interrupted");
    }
    if (lt->cfg.json)
        report_json(lt, &m, waited);
    else
        report_text(lt, &m, waited);
    fflush(stdout);
    free(sub);
    free(qw);
    free(e2e);
    return (waited ? lt->completed == n : lt->accepted == n) ? 0 : 1;
}

/* ---------- command ---------- */

static int check_config(lt_config_t *c, char *err, size_t errlen)
{
    if (!c->token || !*c->token) {
        snprintf(err, errlen,
                 "--token is required (or PINGVAS_TOKEN): a user's JWT, e.g. "
                 "PINGVAS_TOKEN=$(pingvas token demo)");
        return -1;
    }
    if (strlen(c->token) > LT_TOKEN_MAX) {
        snprintf(err, errlen, "--token: longer than %d characters", LT_TOKEN_MAX);
        return -1;
    }
    for (const char *p = c->token; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            snprintf(err, errlen, "--token: contains whitespace or control characters");
            return -1;
        }
    if (strncmp(c->server, "http://", 7) != 0 && strncmp(c->server, "https://", 8) != 0) {
        snprintf(err, errlen, "--server: '%s' is not an http(s) URL", c->server);
        return -1;
    }
    if (strlen(c->server) >= LT_URL_MAX - 1) {
        snprintf(err, errlen, "--server: longer than %d characters", LT_URL_MAX - 2);
        return -1;
    }
    if (c->width % 8) {
        snprintf(err, errlen, "--width: %d is not a multiple of 8", c->width);
        return -1;
    }
    if (c->height % 8) {
        snprintf(err, errlen, "--height: %d is not a multiple of 8", c->height);
        return -1;
    }
    if (!*c->prompt || strlen(c->prompt) > 2000) {
        snprintf(err, errlen, "--prompt: must be 1 to 2000 characters");
        return -1;
    }
    if (!*c->model || strlen(c->model) > 200) {
        snprintf(err, errlen, "--model: must be 1 to 200 characters");
        return -1;
    }
    return 0;
}

static void lt_free(lt_t *lt)
{
    for (int i = 0; i < lt->nslots; i++) {
        if (lt->slots[i].easy) {
            if (lt->slots[i].kind)
                curl_multi_remove_handle(lt->multi, lt->slots[i].easy);
            curl_easy_cleanup(lt->slots[i].easy);
        }
        free(lt->slots[i].body.p);
        free(lt->slots[i].post);
    }
    free(lt->slots);
    if (lt->qx.easy) {
        if (lt->qx.kind)
            curl_multi_remove_handle(lt->multi, lt->qx.easy);
        curl_easy_cleanup(lt->qx.easy);
    }
    free(lt->qx.body.p);
    if (lt->multi)
        curl_multi_cleanup(lt->multi);
    curl_slist_free_all(lt->hdrs);
    free(lt->jobs);
    free(lt->timeline);
}

/* Parses the options; 0 to run, else the exit status (usage printed, or EXIT_USAGE). */
static int lt_options(lt_t *lt, int argc, char **argv, int *exit_status)
{
    char err[512];
    char *pos[1];
    int npos = 0;
    int rc = config_parse(lt_opts, NOPTS, &lt->cfg, argc, argv, 2, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        printf("usage: pingvas loadtest [options]\n\n"
               "Submits --jobs jobs with --concurrency requests in flight (keep-alive), waits "
               "until every job has ended, and reports submit latency, queue wait and end-to-end "
               "percentiles, jobs/s, failures by status, GPU-seconds, credits charged and the "
               "worker count over time. Exit status 0 when every job completed, 1 otherwise, 2 "
               "for bad options.\n\n");
        config_usage(stdout, lt_opts, NOPTS);
        *exit_status = 0;
        return -1;
    }
    if (rc == 0 && check_config(&lt->cfg, err, sizeof err) != 0)
        rc = -1;
    if (rc != 0) {
        fprintf(stderr, "pingvas loadtest: %s\n", err);
        *exit_status = EXIT_USAGE;
        return -1;
    }
    snprintf(lt->base, sizeof lt->base, "%s", lt->cfg.server);
    size_t bl = strlen(lt->base);
    while (bl && lt->base[bl - 1] == '/')
        lt->base[--bl] = '\0';
    snprintf(lt->auth, sizeof lt->auth, "Authorization: Bearer %s", lt->cfg.token);
    return 0;
}

/* The jobs, the connection slots, the multi handle and the headers. 0, or -1 with a message. */
static int lt_alloc(lt_t *lt)
{
    static const char *fixed[] = {"Content-Type: application/json", "Expect:"};
    lt->njobs = (size_t)lt->cfg.jobs;
    lt->jobs = calloc(lt->njobs, sizeof *lt->jobs);
    lt->slots = calloc((size_t)lt->cfg.concurrency, sizeof *lt->slots);
    lt->nslots = lt->slots ? lt->cfg.concurrency : 0; /* lt_free walks nslots */
    lt->multi = curl_multi_init();
    lt->hdrs = curl_slist_append(NULL, lt->auth);
    int ok = lt->hdrs != NULL;
    for (size_t i = 0; ok && i < sizeof fixed / sizeof fixed[0]; i++)
        ok = curl_slist_append(lt->hdrs, fixed[i]) != NULL;
    ok = ok && lt->jobs && lt->slots && lt->multi;
    for (int i = 0; ok && i < lt->nslots; i++)
        ok = (lt->slots[i].easy = curl_easy_init()) != NULL;
    ok = ok && (lt->qx.easy = curl_easy_init()) != NULL;
    if (!ok) {
        fprintf(stderr, "pingvas loadtest: out of memory\n");
        return -1;
    }
    curl_multi_setopt(lt->multi, CURLMOPT_MAXCONNECTS, (long)lt->nslots + 1);
    lt->tty = isatty(STDERR_FILENO);
    return 0;
}

/* Submits, waits (unless --no-wait or ^C) and reports. The exit status. */
static int lt_run(lt_t *lt)
{
    struct sigaction sa, old_int;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    lt->t0 = clock_mono_ms();
    lt->next_sample = lt->t0;
    lt->last_progress = lt->t0;
    if (submit_all(lt) != 0) {
        fprintf(stderr, "pingvas loadtest: out of memory\n");
        sigaction(SIGINT, &old_int, NULL);
        return 1;
    }
    /* one queue sample right after submitting, so the timeline has that point */
    lt->next_sample = 0;
    do
        pump(lt, 50);
    while (lt->busy || lt->qx.kind);
    int waited = !lt->cfg.no_wait && !lt_interrupted;
    int timed_out = 0;
    if (waited) {
        wait_all(lt, clock_mono_ms() + lt->cfg.timeout_ms);
        timed_out = lt->ended < lt->accepted && !lt_interrupted;
    }
    if (lt->accepted == 0 && lt->err[0])
        fprintf(stderr, "pingvas loadtest: cannot reach %s: %s\n", lt->base, lt->err);
    progress(lt, 1);
    sigaction(SIGINT, &old_int, NULL);
    return report(lt, waited, timed_out);
}

int cmd_loadtest(int argc, char **argv)
{
    lt_t lt;
    int status = 1;
    memset(&lt, 0, sizeof lt);
    if (lt_options(&lt, argc, argv, &status) != 0)
        return status;
    if (lt_alloc(&lt) == 0)
        status = lt_run(&lt);
    lt_free(&lt);
    return status;
}
