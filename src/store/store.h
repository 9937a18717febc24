/* store.h: the store contract. The store is the truth: every job state change is one
 * transaction. One implementation per file (store_sqlite.c, store_pg.c); the rest of the
 * code only sees this header.
 *
 * Every function returns a STORE_* code. STORE_ERR means the store failed (unreachable,
 * I/O): callers answer 503. All times are ms since the epoch and are passed in (`now`) so the
 * lease state machine is driven by the caller's clock. Output jobs must be released with
 * job_clear(). Functions are safe to call from several threads on one store_t. */
#ifndef PINGVAS_STORE_H
#define PINGVAS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/job.h"

enum store_rc {
    STORE_OK = 0,
    STORE_ERR = -1,       /* internal or unavailable; message via store_last_error() */
    STORE_NOT_FOUND = 1,  /* no such row (or not the caller's) */
    STORE_CONFLICT = 2,   /* state does not allow it (e.g. cancel of a completed job) */
    STORE_NO_CREDITS = 3, /* balance minus reservations cannot cover the reservation */
    STORE_EXISTS = 4,     /* already there: user add, or idempotent replay (job filled) */
    STORE_EMPTY = 5,      /* nothing to claim */
    STORE_LEASE_LOST = 6, /* lease expired or belongs to another claim */
    STORE_CANCELED = 7,   /* job was canceled while leased */
    STORE_LIMIT = 8,      /* the user's queued-job cap is reached */
    STORE_DISABLED = 9,   /* the user is disabled (job create) */
    STORE_FULL = 10,      /* the user's cap on stored jobs (any status) is reached */
};

typedef struct user {
    char name[USER_NAME_MAX + 1];
    char tier[16];
    int64_t balance;  /* never below zero */
    int64_t reserved; /* sum of credits_reserved of the user's queued and running jobs */
    int64_t stored;   /* the user's jobs in the store, any status (ended ones until purged) */
    int64_t created_at;
    int64_t disabled_at; /* 0: active; else when `pingvas user disable` refused the user */
} user_t;

typedef struct ledger_entry {
    int64_t id;
    char kind[16]; /* "charge" or "grant" */
    char job_id[JOB_ID_SIZE];
    int64_t amount; /* negative for a charge */
    int64_t balance_after;
    int64_t created_at;
} ledger_entry_t;

typedef struct queue_stats {
    int64_t queued;
    int64_t running;
    int64_t workers;      /* seen within the worker TTL */
    int64_t idle_workers; /* of those, waiting for a job */
} queue_stats_t;

typedef struct store_job_counts {
    int64_t completed, failed, canceled;
    double gpu_seconds;
    int64_t credits_charged;
} store_job_counts_t;

/* One entry of the durable event log (GET /api/v1/events). Rows are written by triggers in the
 * same transaction as the change they describe: "job" when a job's status changes (and when it
 * is created), "progress" when its step changes,
 * "worker" when a worker appears, changes state or goes; "scaling" by store_event_add. seq comes
 * from one durable sequence; user is "" for operator-only events (workers, scaling). */
typedef struct store_event {
    int64_t seq;
    int64_t created_at;
    char kind[16];
    char user[USER_NAME_MAX + 1];
    char *data; /* a JSON object, malloc'd */
} store_event_t;

/* A job's webhook delivery (the outbox row), written with the job by store_job_create when the
 * job has a webhook_url, and made due (state "pending", next_at = now) by a trigger in the same
 * transaction that ends the job. */
typedef struct store_webhook {
    char job_id[JOB_ID_SIZE];
    char url[2049];
    char state[16]; /* "waiting" (job not ended), "pending", "delivered", "failed" (gave up) */
    int attempts;
    int64_t next_at;      /* pending: due at (ms since the epoch) */
    int64_t ended_at;     /* when the job ended: retries stop 24 h after it */
    int64_t delivered_at; /* 0: not delivered */
    char last_error[256];
} store_webhook_t;

/* Frees the data of n events and the array. */
void store_events_free(store_event_t *v, size_t n);

typedef struct store store_t;

/* Opens "sqlite:///path" (or a bare path) or "postgresql://...". NULL on error, with a
 * message in err. Caller owns the result (store_close). */
store_t *store_open(const char *url, char *err, size_t errlen);
void store_close(store_t *s);
/* "sqlite" or "postgresql". */
const char *store_kind(const store_t *s);
/* Message of the last STORE_ERR on this thread. */
const char *store_last_error(store_t *s);

int store_migrate(store_t *s);
int store_ping(store_t *s);

int store_user_add(store_t *s, const char *name, const char *tier, int64_t credits, int64_t now);
int store_user_get(store_t *s, const char *name, user_t *out);
/* Disables (disabled true: disabled_at = now, kept if already disabled) or enables the user.
 * A disabled user's tokens are refused; jobs already queued still run. STORE_NOT_FOUND if absent.
 */
int store_user_set_disabled(store_t *s, const char *name, bool disabled, int64_t now);
/* Adds delta (may be negative, never below zero: STORE_CONFLICT) and writes a "grant" ledger row.
 */
int store_user_credit(store_t *s, const char *name, int64_t delta, int64_t now,
                      int64_t *balance_out);
/* Newest first, at most limit entries. *out is malloc'd (caller frees). */
int store_ledger(store_t *s, const char *name, int limit, ledger_entry_t **out, size_t *n);

/* Creates a queued job for user in the user's tier, reserving `reserve` credits.
 * idem_key may be NULL; with a key already used by this user the existing job is returned with
 * STORE_EXISTS. max_queued <= 0 means no cap. STORE_NO_CREDITS / STORE_LIMIT / STORE_DISABLED
 * create nothing. */
int store_job_create(store_t *s, const char *user, const job_params_t *p, const char *idem_key,
                     int64_t reserve, int max_queued, int max_stored, int64_t now, job_t *out);
/* Retention: deletes up to limit jobs that ended (completed, failed, canceled) before
 * ended_before, oldest first; their ledger rows stay, with job_id NULL. Copies the deleted ids
 * into ids (limit entries) and their count into *n, so the caller deletes their images. */
int store_jobs_purge(store_t *s, int64_t ended_before, int limit, char (*ids)[JOB_ID_SIZE], int *n);
int store_job_get(store_t *s, const char *id, job_t *out);
/* One create of a batch for store_job_create_many: store_job_create's arguments, then its
 * outcome, rc (what store_job_create would return), out (filled on STORE_OK and STORE_EXISTS;
 * the caller job_clears it) and err (the message of a STORE_ERR). */
typedef struct store_create {
    const char *user;
    const job_params_t *p;
    const char *idem_key;
    int64_t reserve;
    int max_queued;
    int max_stored;
    int64_t now;
    int rc;
    job_t out;
    char err[256];
} store_create_t;
/* Runs n creates as one group commit where the store can (one transaction, each create keeping
 * its own outcome, as if run one after the other). Every item gets its rc; returns STORE_OK. */
int store_job_create_many(store_t *s, store_create_t *items, size_t n);
/* The user's jobs, newest first; status < 0 for any; cursor_seq 0 for the first page, else only
 * jobs with seq < cursor_seq. *out is malloc'd array of n jobs: job_clear each, then free. */
int store_job_list(store_t *s, const char *user, int status, int limit, int64_t cursor_seq,
                   job_t **out, size_t *n);
/* Queued or in_progress job of this user becomes canceled, its reservation freed, no charge.
 * STORE_NOT_FOUND if not the user's; STORE_CONFLICT if already final (out filled). */
int store_job_cancel(store_t *s, const char *user, const char *id, int64_t now, job_t *out);

/* Claims the next job of the tier: fair share first (users with the fewest running jobs in the
 * tier), then queue order (requeued jobs go to the front). Grants a new lease_id until
 * now + lease_ms; increments attempts; sets started_at on the first claim. STORE_EMPTY if none. */
int store_job_claim(store_t *s, const char *tier, const char *worker_id, int64_t lease_ms,
                    int64_t now, job_t *out);
/* Extends the lease to now + lease_ms. STORE_CANCELED if canceled, STORE_LEASE_LOST if the lease
 * is not current. A lease past its expiry that the reaper has not taken back is still current
 * (the reaper alone takes leases back). */
int store_job_heartbeat(store_t *s, const char *id, const char *lease_id, int64_t lease_ms,
                        int64_t now);
/* The same, also recording the attempt's progress (step of steps) when steps > 0. A claim
 * clears the progress; the job JSON shows it while the job is in_progress. */
int store_job_heartbeat_progress(store_t *s, const char *id, const char *lease_id, int64_t lease_ms,
                                 int64_t now, int step, int steps);
/* Completes a leased job: status, image, gpu_seconds, charge = min(ceil(gpu_seconds * rate),
 * balance), reservation freed, one "charge" ledger row, all in one transaction. Idempotent for
 * the same lease_id (returns STORE_OK with the job). STORE_LEASE_LOST / STORE_CANCELED change
 * nothing. */
int store_job_complete(store_t *s, const char *id, const char *lease_id, double gpu_seconds,
                       const char *image_key, double credit_rate, int64_t now, job_t *out);
/* Complete-and-claim (the worker protocol's complete with "next", DESIGN section 5): completes
 * job id exactly as store_job_complete does and then claims the tier's next job for worker_id
 * exactly as store_job_claim does, in ONE transaction. A refused complete (any code but STORE_OK)
 * claims nothing. When the complete is STORE_OK, next_rc is the claim's code: STORE_OK (next
 * filled, job_clear it) or STORE_EMPTY. A store error inside the transaction rolls both back and
 * returns STORE_ERR. */
typedef struct store_complete {
    const char *id, *lease_id, *image_key;
    double gpu_seconds, credit_rate;
    int64_t now;
    job_t done;       /* out: the completed job (job_clear it) */
    const char *tier; /* NULL: claim nothing (a plain complete) */
    const char *worker_id;
    int64_t lease_ms;
    int next_rc; /* out */
    job_t next;  /* out */
    int rc;      /* out: the item's code in store_job_complete_many */
    /* out: the message of a STORE_ERR, copied on the thread that ran the store operation
     * (store_last_error is per thread: the server's complete writer runs it, a connection's
     * thread answers it) */
    char err[256];
} store_complete_t;
int store_job_complete_claim(store_t *s, store_complete_t *c);
/* A batch of them (the server's complete writer): each item exactly as store_job_complete_claim,
 * its code in items[i].rc, all in ONE transaction (one commit) when the store implements
 * job_complete_many (SQLite), else one by one. A refused item writes nothing and changes nothing
 * for the others; a store error fails the whole batch (every rc STORE_ERR, nothing written). */
void store_job_complete_many(store_t *s, store_complete_t *items, size_t n);
/* 1 when the store commits a batch of completes in one transaction (job_complete_many). */
int store_batches_completes(const store_t *s);
/* Ends an attempt with an error. Back to the front of the queue when retryable and
 * attempts < max_attempts; else failed (reservation freed, nothing charged). */
int store_job_fail(store_t *s, const char *id, const char *lease_id, const char *message,
                   bool retryable, int max_attempts, int64_t now, job_t *out);
/* Gives the job back (graceful stop): front of the queue, attempts decremented, releases
 * incremented. Not a failure. */
int store_job_release(store_t *s, const char *id, const char *lease_id, int64_t now, job_t *out);
/* Expired leases: requeue at the front, or fail when attempts >= max_attempts. Also forgets
 * workers not seen for worker_ttl_ms. Safe to run concurrently on several servers. */
int store_reap(store_t *s, int max_attempts, int64_t worker_ttl_ms, int64_t now, int *requeued,
               int *failed);

/* Celery bridge (DESIGN section 8): a generation_jobs row written by the seed's API (seed
 * columns only, status "pending" or "queued", pingvas columns NULL) becomes a queued pingvas job
 * of its user_id's tier: next queue position, reservation job_estimate_credits(params, rate),
 * defaults for absent parameters (job.h), a seed picked when NULL. STORE_NOT_FOUND when there is
 * no such row or no such user; STORE_EXISTS when it already is a pingvas job (out filled);
 * STORE_NO_CREDITS as for create (nothing changes). */
int store_job_adopt(store_t *s, const char *id, double credit_rate, int64_t now, job_t *out);

/* Optional: calls cb(arg) from a store thread whenever another process may have made work
 * available (PostgreSQL LISTEN/NOTIFY). STORE_OK when listening, STORE_NOT_FOUND when this
 * store has no such channel (SQLite: one process, the server's own wakeups suffice). */
int store_listen(store_t *s, void (*cb)(void *arg), void *arg);

/* Worker presence for /api/v1/queue: state is "idle" or "busy". */
int store_worker_seen(store_t *s, const char *worker_id, const char *tier, const char *state,
                      int64_t now);
int store_worker_gone(store_t *s, const char *worker_id);
/* A running job leased to a worker (store_worker_leases). */
typedef struct store_lease {
    char job_id[JOB_ID_SIZE];
    char lease_id[JOB_ID_SIZE];
} store_lease_t;
/* The running jobs leased to worker_id, with their leases, in job id order (a worker runs one job
 * at a time: at most a few). *out is malloc'd (caller frees; NULL when none). */
int store_worker_leases(store_t *s, const char *worker_id, store_lease_t **out, size_t *n);
/* A worker as the presence table knows it (GET /api/v1/fleet). */
typedef struct store_worker {
    char id[128];
    char tier[16];
    char state[16]; /* "idle" or "busy" */
    int64_t last_seen;
} store_worker_t;
/* Every worker in the presence table. *out is malloc'd (caller frees). */
int store_workers_list(store_t *s, store_worker_t **out, size_t *n);
int store_queue_stats(store_t *s, const char *tier, int64_t worker_ttl_ms, int64_t now,
                      queue_stats_t *out);
int store_job_counts(store_t *s, store_job_counts_t *out);

/* ---- cost accounting (DESIGN section 10) ---- */

/* Where a worker process runs and what it did: one row per worker id. */
typedef struct worker_life {
    char worker_id[128];
    char tier[16];
    char instance_type[48]; /* "" when unknown */
    char capacity_type[16]; /* "spot", "on-demand" or "" */
    char zone[48];
    int gpus;           /* GPUs on the instance, >= 1 */
    int64_t started_at; /* the first report */
    int64_t loaded_at;  /* model loaded; 0: not (yet) */
    int64_t last_seen;  /* the latest report */
    int64_t ended_at;   /* the worker said it ended; 0: not (crashed, or still running) */
    int64_t busy_ms;    /* time spent running jobs, as last reported */
} worker_life_t;

enum worker_event { WORKER_STARTED = 0, WORKER_LOADED, WORKER_ALIVE, WORKER_ENDED };

/* Records a worker's report at now. The first report for an id creates its row (started_at =
 * now); every report sets the placement fields, last_seen = now and busy_ms = the larger of the
 * stored and the reported value; WORKER_LOADED sets loaded_at once, WORKER_ENDED ended_at.
 * Workers report at least every STORE_LIFE_GRACE_MS / 3 while they run. */
int store_worker_report(store_t *s, const worker_life_t *r, int event, int64_t now);
/* The rows of workers that lived at some time in [since, until): started_at < until and
 * COALESCE(ended_at, last_seen + STORE_LIFE_GRACE_MS) >= since, oldest first, at most
 * STORE_LIVES_MAX. *out is malloc'd (caller frees). */
#define STORE_LIVES_MAX 1000000
#define STORE_LIFE_GRACE_MS 90000 /* a worker not heard of for this long has ended */
int store_worker_lives(store_t *s, int64_t since, int64_t until, worker_life_t **out, size_t *n);

/* Completed jobs grouped by user, tier and UTC day of completed_at. */
typedef struct usage_row {
    char user[USER_NAME_MAX + 1];
    char tier[16];
    int64_t day; /* completed_at / 86400000 */
    int64_t images;
    double gpu_seconds;
} usage_row_t;
/* Jobs completed in [since, until), grouped as above. *out is malloc'd (caller frees). */
int store_usage(store_t *s, int64_t since, int64_t until, usage_row_t **out, size_t *n);
/* Appends an operator-only event (user NULL) or a user's event; data is a JSON object. */
int store_event_add(store_t *s, const char *kind, const char *user, const char *data);
/* Events with after < seq <= upto, oldest first, at most limit; user NULL for every event, else
 * only that user's. *out is malloc'd (store_events_free). */
int store_events_read(store_t *s, int64_t after, int64_t upto, const char *user, int limit,
                      store_event_t **out, size_t *n);
/* The highest seq written so far (0 when none). */
int store_events_last(store_t *s, int64_t *seq);
/* The webhook of a job; STORE_NOT_FOUND when the job has none. */
int store_webhook_get(store_t *s, const char *job_id, store_webhook_t *out);
/* A job (store_job_get) and its webhook delivery (store_webhook_get): STORE_OK with *has_webhook
 * telling whether w was filled, STORE_NOT_FOUND when there is no such job, or STORE_ERR. Two
 * reads; GET /api/v1/generation/{id} reads both in one through store_user_job_get. */
int store_job_get_webhook(store_t *s, const char *id, job_t *out, store_webhook_t *w,
                          bool *has_webhook);
/* What store_user_job_get reads: a user's row and one of that user's jobs with its webhook. */
typedef struct store_user_job {
    user_t user;
    job_t job;               /* filled when job_rc is STORE_OK (job_clear it) */
    store_webhook_t webhook; /* filled when has_webhook */
    bool has_webhook;
    int job_rc; /* STORE_OK, or STORE_NOT_FOUND: no such job, or another user's */
} store_user_job_t;
/* The user named user (store_user_get) and its job id with the job's webhook
 * (store_job_get_webhook), in one read transaction where the store can (GET
 * /api/v1/generation/{id}: the user row is read on every request, so disabling a user takes
 * effect at once, and the job is its latest committed state). Returns the user's outcome:
 * STORE_OK (out->user filled, out->job_rc tells the job's), STORE_NOT_FOUND (no such user, no
 * job read) or STORE_ERR (either read failed; nothing to clear). */
int store_user_job_get(store_t *s, const char *user, const char *id, store_user_job_t *out);
/* Takes up to limit pending webhooks due at now (oldest first) and holds them for hold_ms (their
 * next_at moves there, so another replica does not send them meanwhile). *out is malloc'd (caller
 * frees). */
int store_webhooks_due(store_t *s, int64_t now, int64_t hold_ms, int limit, store_webhook_t **out,
                       size_t *n);
/* Records an attempt: delivered (state "delivered" at now), else the error and either the next
 * attempt at next_at or, when give_up, state "failed". attempts grows by one. */
int store_webhook_attempt(store_t *s, const char *job_id, bool delivered, const char *error,
                          int64_t next_at, bool give_up, int64_t now);
/* Retention: deletes events older than keep_ms, and progress events older than
 * keep_progress_ms (by the store's own clock). */
int store_events_trim(store_t *s, int64_t keep_ms, int64_t keep_progress_ms);

/* The plan the database chooses for one of the store's statements on the hot paths and the
 * background ticks (create, claim, get, list, reaper, purge, queue statistics), by name
 * ("job_get", "job_list", "reap_list", "stats_jobs", ...; see each store's table), as text into
 * out: for tests that keep those statements searching an index as the history grows (issue 12).
 * STORE_NOT_FOUND for a name this store does not have. */
int store_explain(store_t *s, const char *name, char *out, size_t len);

/* Implementation side: each backend fills a vtable. */
struct store_ops {
    const char *name;
    void (*close)(store_t *s);
    int (*migrate)(store_t *s);
    int (*ping)(store_t *s);
    int (*user_add)(store_t *s, const char *name, const char *tier, int64_t credits, int64_t now);
    int (*user_get)(store_t *s, const char *name, user_t *out);
    int (*user_set_disabled)(store_t *s, const char *name, bool disabled, int64_t now);
    int (*user_credit)(store_t *s, const char *name, int64_t delta, int64_t now, int64_t *bal);
    int (*ledger)(store_t *s, const char *name, int limit, ledger_entry_t **out, size_t *n);
    int (*job_create)(store_t *s, const char *user, const job_params_t *p, const char *idem_key,
                      int64_t reserve, int max_queued, int max_stored, int64_t now, job_t *out);
    int (*jobs_purge)(store_t *s, int64_t ended_before, int limit, char (*ids)[JOB_ID_SIZE],
                      int *n);
    /* one of job_create and job_create_many may be NULL: store.c runs the other */
    int (*job_create_many)(store_t *s, store_create_t *items, size_t n);
    int (*job_get)(store_t *s, const char *id, job_t *out);
    int (*job_list)(store_t *s, const char *user, int status, int limit, int64_t cursor_seq,
                    job_t **out, size_t *n);
    int (*job_cancel)(store_t *s, const char *user, const char *id, int64_t now, job_t *out);
    int (*job_claim)(store_t *s, const char *tier, const char *worker_id, int64_t lease_ms,
                     int64_t now, job_t *out);
    int (*job_heartbeat)(store_t *s, const char *id, const char *lease_id, int64_t lease_ms,
                         int64_t now, int step, int steps);
    /* Complete-and-claim in one transaction (done and next cleared by the caller; claims nothing
     * without c->tier); serves store_job_complete too. */
    int (*job_complete_claim)(store_t *s, store_complete_t *c);
    /* The batch in one transaction (each rc set; outputs cleared by the caller), or NULL. */
    void (*job_complete_many)(store_t *s, store_complete_t *items, size_t n);
    int (*job_fail)(store_t *s, const char *id, const char *lease_id, const char *message,
                    bool retryable, int max_attempts, int64_t now, job_t *out);
    int (*job_release)(store_t *s, const char *id, const char *lease_id, int64_t now, job_t *out);
    int (*reap)(store_t *s, int max_attempts, int64_t worker_ttl_ms, int64_t now, int *requeued,
                int *failed);
    int (*worker_seen)(store_t *s, const char *worker_id, const char *tier, const char *state,
                       int64_t now);
    int (*worker_gone)(store_t *s, const char *worker_id);
    int (*worker_leases)(store_t *s, const char *worker_id, store_lease_t **out, size_t *n);
    int (*queue_stats)(store_t *s, const char *tier, int64_t worker_ttl_ms, int64_t now,
                       queue_stats_t *out);
    int (*job_counts)(store_t *s, store_job_counts_t *out);
    int (*explain)(store_t *s, const char *name, char *out, size_t len);
    int (*worker_report)(store_t *s, const worker_life_t *r, int event, int64_t now);
    int (*worker_lives)(store_t *s, int64_t since, int64_t until, worker_life_t **out, size_t *n);
    int (*usage)(store_t *s, int64_t since, int64_t until, usage_row_t **out, size_t *n);
    /* optional (NULL: unsupported) */
    int (*job_adopt)(store_t *s, const char *id, double credit_rate, int64_t now, job_t *out);
    int (*listen)(store_t *s, void (*cb)(void *arg), void *arg);
    int (*event_add)(store_t *s, const char *kind, const char *user, const char *data);
    int (*events_read)(store_t *s, int64_t after, int64_t upto, const char *user, int limit,
                       store_event_t **out, size_t *n);
    int (*events_last)(store_t *s, int64_t *seq);
    int (*events_trim)(store_t *s, int64_t keep_ms, int64_t keep_progress_ms);
    int (*webhook_get)(store_t *s, const char *job_id, store_webhook_t *out);
    int (*user_job_get)(store_t *s, const char *user, const char *id, store_user_job_t *out);
    int (*workers_list)(store_t *s, store_worker_t **out, size_t *n);
    int (*webhooks_due)(store_t *s, int64_t now, int64_t hold_ms, int limit, store_webhook_t **out,
                        size_t *n);
    int (*webhook_attempt)(store_t *s, const char *job_id, bool delivered, const char *error,
                           int64_t next_at, bool give_up, int64_t now);
};

struct store {
    const struct store_ops *ops;
};

/* Constructors of the implementations (used by store_open). */
store_t *store_sqlite_open(const char *path, char *err, size_t errlen);
store_t *store_pg_open(const char *url, char *err, size_t errlen);

#endif
