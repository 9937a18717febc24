/* wire.h: the worker protocol (DESIGN section 6), both sides, as pure functions so that they can
 * be fuzzed: its paths, the request bodies the worker encodes and the server parses and checks
 * (claim, heartbeat, complete, fail, release, bye, lifecycle report), and the claim answer the
 * server encodes and the worker decodes and checks. A refusal on the server side fills an
 * api_error_t that the server sends as is. */
#ifndef PINGVAS_WIRE_H
#define PINGVAS_WIRE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/apierr.h"
#include "core/job.h"

#define WIRE_WORKER_ID_MAX 127
#define WIRE_ERROR_MAX 1000
#define WIRE_CLAIM_WAIT_MAX_MS 60000
#define WIRE_GPU_SECONDS_MAX 1e7
#define WIRE_STEPS_MAX 1000000

typedef struct wire_claim {
    char worker_id[WIRE_WORKER_ID_MAX + 1];
    char tier[16];   /* "standard" (default) or "enterprise" */
    int64_t wait_ms; /* 0..WIRE_CLAIM_WAIT_MAX_MS, default 0 */
} wire_claim_t;

/* What a lease holder reports. Which fields are read depends on the operation. */
typedef struct wire_report {
    char lease_id[JOB_ID_SIZE];
    double gpu_seconds;             /* complete: 0 <= x < 1e7 */
    char error[WIRE_ERROR_MAX + 1]; /* fail: the message ("worker reported an error") */
    int retryable;                  /* fail: default 1 */
    int step, steps;   /* heartbeat: progress, 0 <= step <= steps <= WIRE_STEPS_MAX; 0 0: none */
    int has_next;      /* complete: a "next" claim came with it (complete-and-claim) */
    wire_claim_t next; /* complete: that claim */
} wire_report_t;

typedef struct wire_bye {
    char worker_id[WIRE_WORKER_ID_MAX + 1]; /* "" when absent or invalid */
} wire_bye_t;

/* A worker's lifecycle report (POST /internal/v1/workers/report, DESIGN section 10): where it
 * runs and what it did so far. */
#define WIRE_PLACE_MAX 47
typedef struct wire_life {
    char worker_id[WIRE_WORKER_ID_MAX + 1];
    char tier[16];
    char event[16];                         /* "started", "loaded", "alive" or "ended" */
    char instance_type[WIRE_PLACE_MAX + 1]; /* "" when unknown; [a-z0-9.-] */
    char capacity_type[16];                 /* "spot", "on-demand" or "" */
    char zone[WIRE_PLACE_MAX + 1];          /* "" when unknown; [a-z0-9-] */
    int gpus;                               /* GPUs on the instance, 1..64 (default 1) */
    int64_t busy_ms;                        /* time spent on jobs so far, 0..1e12 */
} wire_life_t;

int wire_parse_life(const char *body, size_t len, wire_life_t *out, api_error_t *e);

/* Each returns 0 with out filled, or -1 with e filled (400 invalid_json or invalid_argument).
 * body need not be NUL-terminated; len may be 0. Nothing to free. */
int wire_parse_claim(const char *body, size_t len, wire_claim_t *out, api_error_t *e);

/* op is "heartbeat", "complete", "fail" or "release" (any other op only needs a lease_id). */
int wire_parse_report(const char *op, const char *body, size_t len, wire_report_t *out,
                      api_error_t *e);

/* The heartbeat body {"lease_id":...[,"step":S,"steps":N]} (progress only when steps > 0;
 * step clamped to 0..steps). Returns a malloc'd NUL-terminated string the caller frees, or
 * NULL when out of memory. */
char *wire_heartbeat_body(const char *lease_id, int step, int steps);

int wire_parse_bye(const char *body, size_t len, wire_bye_t *out, api_error_t *e);

/* A scaling decision of `pingvas autoscale` (POST /internal/v1/scaling/events). */
#define WIRE_REPLICAS_MAX 100000
#define WIRE_REASON_MAX 255
typedef struct wire_scaling {
    char tier[16];
    int from, to;                     /* 0..WIRE_REPLICAS_MAX */
    char reason[WIRE_REASON_MAX + 1]; /* "" when absent; cut at WIRE_REASON_MAX bytes */
} wire_scaling_t;

int wire_parse_scaling(const char *body, size_t len, wire_scaling_t *out, api_error_t *e);
/* The body wire_parse_scaling reads (malloc'd; NULL when out of memory). */
char *wire_scaling_body(const char *tier, int from, int to, const char *reason);

/* ---- paths (after the server's base URL) ---- */
#define WIRE_PATH_CLAIM "/internal/v1/claim"
#define WIRE_PATH_BYE "/internal/v1/bye"
#define WIRE_PATH_SCALING_EVENTS "/internal/v1/scaling/events"
#define WIRE_PATH_WORKER_REPORT "/internal/v1/workers/report"
#define WIRE_PATH_JOBS "/internal/v1/jobs/" /* + <id>/<op>: heartbeat ... release, image */
/* A complete that carries the image (the server's own image store): Content-Type image/png, the
 * PNG as the body, and the complete's JSON body in this header instead. */
#define WIRE_HEADER_REPORT "X-Pingvas-Report"

/* base + WIRE_PATH_JOBS + id + "/" + op into buf. 0, or -1 when it does not fit. */
int wire_job_url(char *buf, size_t size, const char *base, const char *id, const char *op);

/* ---- request bodies the worker sends (malloc'd, NUL-terminated; NULL when out of memory) ---- */
char *wire_claim_body(const char *worker_id, const char *tier, int64_t wait_ms);
char *wire_bye_body(const char *worker_id);
/* next: also ask for the next job (complete-and-claim; NULL: no). ASCII only, so that it also
 * fits the WIRE_HEADER_REPORT header of a complete that carries the image. */
char *wire_complete_body(const char *lease_id, double gpu_seconds, const wire_claim_t *next);
char *wire_fail_body(const char *lease_id, const char *error, int retryable);
char *wire_release_body(const char *lease_id);

/* ---- the claim answer ---- */
#define WIRE_HEARTBEAT_DEFAULT_MS 3000
#define WIRE_URL_MAX 2048

typedef struct wire_upload {
    char method[8];         /* "PUT" or "POST" */
    char url[WIRE_URL_MAX]; /* where the image goes */
    int needs_lease;        /* send the worker token and the lease (the server's own store) */
} wire_upload_t;

typedef struct wire_job {
    char id[JOB_ID_SIZE];
    char lease_id[JOB_ID_SIZE];
    int64_t lease_ms, heartbeat_ms; /* 1..3600000; heartbeat WIRE_HEARTBEAT_DEFAULT_MS if absent */
    job_params_t params;            /* owned: wire_job_clear */
    wire_upload_t upload;
} wire_job_t;

/* The server's 200 answer to a claim for job j (leased: j->lease_id set). NULL when out of
 * memory; the caller frees the text. */
char *wire_claim_answer(const job_t *j, int64_t lease_ms, int64_t heartbeat_ms,
                        const char *up_method, const char *up_url, int up_needs_lease);
/* Decodes and checks a claim answer: the job's id and lease, its parameters inside the create
 * body's bounds (job.h), the upload target. 0 with out filled (wire_job_clear), or -1 with a
 * reason in err (out cleared). */
int wire_parse_job(const char *body, size_t len, wire_job_t *out, char *err, size_t errlen);
void wire_job_clear(wire_job_t *j);

/* Writes the claim answer (wire_claim_answer's text) into w: as the member key of the object w
 * is in (the complete answer's "next"), or with key NULL as the whole document. */
void wire_claim_answer_write(jsonw_t *w, const char *key, const job_t *j, int64_t lease_ms,
                             int64_t heartbeat_ms, const char *up_method, const char *up_url,
                             int up_needs_lease);
/* The answer to a complete (the completed job's JSON) and its "next": 1 with next filled
 * (wire_job_clear) when it carries a claim answer that wire_parse_job accepts, 0 when it has
 * none ("next" null or absent), -1 with err when the body or the next job is malformed. */
int wire_parse_complete_answer(const char *body, size_t len, wire_job_t *next, char *err,
                               size_t errlen);

#endif
