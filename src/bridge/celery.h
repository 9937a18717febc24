/* celery.h: the Celery bridge (DESIGN section 8, docs/celery.md). With REDIS_URL set, the server
 * consumes the seed's `tasks.generate_image(job_id)` messages (Celery message protocol v2, or
 * v1) from a kombu Redis queue and its priority lists, adopts the referenced generation_jobs row
 * as a queued job (store_job_adopt), acknowledges the message the way kombu does (`unacked`,
 * `unacked_index`) only after the store committed, and writes the Celery result
 * (`celery-task-meta-<task id>`, SETEX and PUBLISH) when the job ends.
 *
 * The envelope parser and the result formatter are plain functions (unit tests, fuzzing); the
 * bridge itself needs hiredis (PINGVAS_HAVE_HIREDIS). */
#ifndef PINGVAS_CELERY_H
#define PINGVAS_CELERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/job.h"
#include "store/store.h"

#define CELERY_TASK_NAME "tasks.generate_image"
#define CELERY_DEFAULT_QUEUE "celery"
#define CELERY_MESSAGE_MAX (1024 * 1024) /* a larger envelope is rejected unread */
#define CELERY_ID_MAX 128                /* task ids and delivery tags (UUIDs in practice) */
#define CELERY_NAME_MAX 200              /* task, queue, exchange and routing key names */
#define CELERY_DEFAULT_VISIBILITY_MS (3600 * 1000) /* kombu's visibility_timeout */
#define CELERY_DEFAULT_RESULT_EXPIRES 86400        /* Celery's result_expires, seconds */

/* A parsed message. Strings are "" when absent. */
typedef struct celery_msg {
    int protocol; /* 1 or 2 */
    char task[CELERY_NAME_MAX + 1];
    char task_id[CELERY_ID_MAX + 1]; /* set as soon as the envelope names it, even on a reject */
    char job_id[JOB_ID_SIZE];
    char delivery_tag[CELERY_ID_MAX + 1];
    char exchange[CELERY_NAME_MAX + 1];
    char routing_key[CELERY_NAME_MAX + 1];
    char reply_to[CELERY_NAME_MAX + 1];
    int priority;       /* properties.priority clamped to 0..255; 0 when absent */
    int64_t expires_ms; /* the task's expires (ms since the epoch); 0 when none */
    int64_t eta_ms;     /* the task's eta (apply_async eta= or countdown=); 0 when none */
} celery_msg_t;

/* Why a message is refused; the exception a Celery worker would have raised for it. */
typedef struct celery_reject {
    const char *reason;   /* short key for the log: bad_json, bad_envelope, unknown_task, ... */
    const char *exc_type; /* e.g. "TypeError" */
    const char *exc_module;
    char message[256]; /* the exception's message */
} celery_reject_t;

/* Parses a kombu Redis envelope (the JSON pushed on the queue list). The body may be base64
 * ("body_encoding": "base64", what kombu and Celery write) or inline JSON; protocol v2 bodies
 * are [args, kwargs, embed] with the task name in the headers, v1 bodies are
 * {"task", "id", "args", "kwargs"}. The task must be CELERY_TASK_NAME with exactly one job id
 * (a string, positionally or as kwargs "job_id"). Returns 0 with out filled, or -1 with out
 * filled as far as it could be (task_id may be known) and rej set. Never reads past len. */
int celery_parse(const char *data, size_t len, celery_msg_t *out, celery_reject_t *rej);

/* A revoke sent with Celery's remote control (`AsyncResult.revoke()`, `app.control.revoke(ids,
 * terminate=...)`): kombu publishes it as an envelope like a task's, on the Redis channel
 * "/<db>.celery.pidbox", with the body {"method": "revoke", "arguments": {"task_id": id or
 * [ids], "terminate": bool, "signal": ...}, "destination": null or [worker names], ...}. */
typedef struct celery_revoke {
    int n;
    char (*task_ids)[CELERY_ID_MAX + 1]; /* n task ids, malloc'd */
    bool terminate;
} celery_revoke_t;
/* 1 for a revoke addressed to every worker (out filled; celery_revoke_free it), 0 for another
 * command or one addressed to named workers, -1 for a message that is not one. */
int celery_parse_revoke(const char *data, size_t len, celery_revoke_t *out);
void celery_revoke_free(celery_revoke_t *r);

/* The JSON Celery 5's Redis result backend stores for a task: {"status", "result", "traceback",
 * "children": [], "date_done": ISO 8601 with "+00:00", "task_id"}. Caller frees the result
 * (NULL on allocation failure). */
char *celery_result_success(const char *task_id, const char *image_url, int64_t now_ms);
/* status "FAILURE" (traceback in Python's format) or "REVOKED" (traceback null); result is
 * Celery's JSON form of an exception {"exc_type", "exc_message": [message], "exc_module"}. */
char *celery_result_exception(const char *status, const char *task_id, const char *exc_type,
                              const char *exc_module, const char *message, int64_t now_ms);
/* The result for a job in a final state (completed, failed, canceled); image_url is used for a
 * completed one. NULL when the job is not final. Caller frees. */
char *celery_result_for_job(const job_t *j, const char *task_id, const char *image_url,
                            int64_t now_ms);

/* "redis://[[user]:password@]host[:port][/db]" */
typedef struct celery_redis_addr {
    char host[256];
    int port;
    int db;
    char user[128];
    char password[256];
} celery_redis_addr_t;
/* 0, or -1 with a message naming the problem in err. */
int celery_parse_redis_url(const char *url, celery_redis_addr_t *out, char *err, size_t errlen);

/* The queue list name for a priority: kombu's _q_for_pri with priority_steps [0, 3, 6, 9] and
 * sep "\x06\x16" ("celery", "celery\x06\x163", ...). Returns the length written, or -1 when it
 * does not fit. */
int celery_queue_for_priority(const char *queue, int priority, char *buf, size_t size);

typedef struct celery_config {
    const char *redis_url;
    const char *queue;             /* NULL: CELERY_DEFAULT_QUEUE */
    int64_t visibility_timeout_ms; /* <= 0: CELERY_DEFAULT_VISIBILITY_MS */
    int64_t result_expires_s;      /* <= 0: CELERY_DEFAULT_RESULT_EXPIRES */
    double credit_rate;            /* for the reservation of adopted jobs */
} celery_config_t;

/* Returns the public image URL of a completed job (malloc'd), or NULL. */
typedef char *(*celery_image_url_fn)(void *arg, const job_t *j);
/* Called after a job was adopted (new work for the claim long-polls). */
typedef void (*celery_work_fn)(void *arg);
/* A Celery revoke of one of job_id's tasks: cancels the job if it has not started, or also a
 * running one when terminate (Celery's revoke(terminate=True)). 1 canceled, 0 left as it is
 * (running without terminate, or already ended), -1 the store failed. */
typedef int (*celery_revoke_fn)(void *arg, const char *job_id, bool terminate);

typedef struct celery_bridge celery_bridge_t;

/* Starts the consumer thread (it connects, and reconnects with backoff, by itself). NULL with a
 * message in err for a bad configuration, a store without job_adopt, or a build without
 * hiredis. The store must outlive the bridge. Caller owns the result (celery_bridge_stop). */
celery_bridge_t *celery_bridge_start(const celery_config_t *cfg, store_t *store,
                                     celery_image_url_fn url_fn, celery_work_fn work_fn,
                                     celery_revoke_fn revoke_fn, void *arg, char *err,
                                     size_t errlen);
/* Tells the bridge that a job reached a final state (any thread; never blocks on Redis). Jobs
 * that end elsewhere (the reaper, another server) are found by the bridge's periodic sweep. */
void celery_bridge_job_ended(celery_bridge_t *b, const char *job_id);
/* Stops the thread and frees the bridge. NULL is a no-op. */
void celery_bridge_stop(celery_bridge_t *b);

#endif
