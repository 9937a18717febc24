/* wire.h: parsing and validation of worker-protocol request bodies (claim, heartbeat, complete,
 * fail, release, bye), as pure functions of the body bytes so that they can be fuzzed. The
 * server calls them; a refusal fills an api_error_t that the server sends as is. */
#ifndef PINGVAS_WIRE_H
#define PINGVAS_WIRE_H

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
    int step, steps; /* heartbeat: progress, 0 <= step <= steps <= WIRE_STEPS_MAX; 0 0: none */
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

#endif
