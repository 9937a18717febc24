/* job.h: a generation job, its parameters and its JSON form. */
#ifndef PINGVAS_JOB_H
#define PINGVAS_JOB_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "lib/jsonw.h"

#define JOB_ID_SIZE 40   /* UUID text plus NUL */
#define USER_NAME_MAX 64 /* bytes, [A-Za-z0-9_.-] */
#define MODEL_NAME_MAX 64
#define PROMPT_MAX_CHARS 2000

typedef enum job_status {
    JOB_QUEUED = 0,
    JOB_IN_PROGRESS,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELED,
} job_status_t;

/* The request fields of a job. Strings are owned by the struct: job_params_clear() frees them. */
typedef struct job_params {
    char *prompt;          /* never NULL once valid */
    char *negative_prompt; /* "" when absent */
    char model[MODEL_NAME_MAX + 1];
    int width;
    int height;
    int steps;
    double cfg_scale;
    int64_t seed;      /* 0..4294967295 */
    char *webhook_url; /* NULL: none (create only: the store keeps it with the delivery) */
} job_params_t;

typedef struct job {
    char id[JOB_ID_SIZE];
    char user[USER_NAME_MAX + 1];
    char tier[16];
    job_status_t status;
    job_params_t params;
    int64_t seq;          /* insertion order; the list cursor */
    int64_t created_at;   /* ms since epoch; 0 = null */
    int64_t started_at;   /* first claim */
    int64_t completed_at; /* completed, failed or canceled */
    int attempts;         /* claims that ended other than by a release */
    int releases;         /* graceful releases (not failures) */
    char *image_key;      /* owned; NULL until completed */
    char *error_message;  /* owned; NULL unless failed */
    double gpu_seconds;
    int64_t credits_reserved;
    int64_t credits_charged;
    char lease_id[JOB_ID_SIZE]; /* "" when not leased */
    char worker_id[128];
    int64_t lease_expires_at;
    int progress_step;  /* the last progress a heartbeat reported for this attempt: step of */
    int progress_steps; /* steps; 0 steps: none yet */
    int has_webhook;    /* the job has a webhook delivery: set by the stores only on the job a
                         * complete, fail or cancel returns (what the server kicks the webhook
                         * sender for); 0 elsewhere */
} job_t;

/* The service tiers, in index order (0 standard, 1 enterprise). */
#define TIER_COUNT 2
extern const char *const tier_names[TIER_COUNT];
/* The index of a tier name, or -1 (NULL and unknown names). */
int tier_index(const char *name);

const char *job_status_name(job_status_t s);
/* Returns the status for a name, or -1. */
int job_status_parse(const char *name);
/* The status of a stored row: a job status, or the seed's 'pending' (a generation_jobs row the
 * Celery bridge has not adopted yet), which reads as queued on every store; anything else, or
 * NULL, reads as failed. */
job_status_t job_status_stored(const char *name);
int job_status_is_final(job_status_t s);

/* Frees the owned strings and zeroes the struct. Safe on a zeroed struct. */
void job_params_clear(job_params_t *p);
void job_clear(job_t *j);
/* Deep copy; returns 0, or -1 on allocation failure (dst then cleared). */
int job_params_copy(job_params_t *dst, const job_params_t *src);

/* The public job JSON (DESIGN section 3), its one field list: the members written to w
 * (lib/jsonw.h) without a tree, for the hot answers (create, GET); the caller opens and closes
 * the object (and may add members). image_url may be NULL. */
void job_json_members(jsonw_t *w, const job_t *j, const char *image_url);
/* The same object (the same field list) as a jansson tree, for answers that put it in a larger
 * tree (lists, claims, completions); NULL on allocation failure. Caller owns it. */
json_t *job_to_json(const job_t *j, const char *image_url);

/* Parameter bounds (DESIGN section 3): the create body and the worker's claim decoder check
 * the same ones. */
#define JOB_SIZE_MIN 64
#define JOB_SIZE_MAX 2048
#define JOB_STEPS_MIN 1
#define JOB_STEPS_MAX 150
#define JOB_CFG_MIN 1.0
#define JOB_CFG_MAX 30.0
#define JOB_SEED_MAX 4294967295LL

/* Parameter defaults (DESIGN section 3). */
#define JOB_DEFAULT_MODEL "sd15"
#define JOB_DEFAULT_SIZE 512
#define JOB_DEFAULT_STEPS 20
#define JOB_DEFAULT_CFG 7.0

/* Credits to reserve for a job: ceil(estimated GPU-seconds on the reference GPU, a T4 at 6.9
 * steps/s for 512x512 scaled by pixel count, plus 0.35 s decode, x rate). */
int64_t job_estimate_credits(const job_params_t *p, double rate);

/* What completing a job charges: ceil(gpu_seconds x rate) (a 1e-9 tolerance keeps 2.0000000001
 * at 2), capped at what the user can pay without touching the other jobs' reservations: this
 * job's own reservation plus the balance nobody has reserved, balance - (user_reserved -
 * job_reserved), never below 0. A job slower than its estimate thus can never leave the user's
 * later, already reserved jobs unpaid (issue 16, finding 8). */
int64_t job_charge(double gpu_seconds, double rate, int64_t balance, int64_t user_reserved,
                   int64_t job_reserved);
/* job_charge's ceil(gpu_seconds x rate) alone, before the cap (store_pg.c applies the cap in SQL,
 * on the user's row as it is when the charge is written). */
int64_t job_cost(double gpu_seconds, double rate);

/* Fills buf (JOB_ID_SIZE) with a new UUIDv7 (RFC 9562): created_ms (ms since the epoch, the
 * job's created_at) in its first 48 bits, then 74 random bits. */
void job_new_id(char *buf, int64_t created_ms);
/* Random hex token of 2*nbytes chars (nbytes at most 64) into buf (size >= 2*nbytes+1). */
void random_hex(char *buf, int nbytes);
/* n bytes from OpenSSL's generator (RAND_bytes), drawn in blocks into a pool per thread; aborts
 * when the generator fails (no entropy: nothing safe to do). */
void random_bytes(unsigned char *out, size_t n);

#endif
