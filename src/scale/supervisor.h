/* supervisor.h: keeps local `pingvas worker` processes running per tier. Driven by a fixed count
 * (pingvas up --workers N) or by the autoscaler. Never stops a busy worker unless told to stop
 * everything; restarts crashed workers with backoff. */
#ifndef PINGVAS_SUPERVISOR_H
#define PINGVAS_SUPERVISOR_H

#include <stdint.h>
#include <sys/types.h>

#define SUP_MAX_SLOTS 64

/* A worker process that has not said it started ('S' on its status pipe, its first act) this
 * long after its spawn is killed and restarted like a crashed one: a child stuck before exec, or
 * an exec'd process stuck before main, would otherwise hold its slot for ever, counted as a
 * worker that never comes. */
#define SUP_START_DEADLINE_MS 30000

typedef struct supervisor supervisor_t;

typedef struct sup_worker_info {
    char worker_id[64];
    pid_t pid;              /* 0 when not running */
    int gpu;                /* GPU index or -1 */
    int64_t started_ms;     /* mono */
    int64_t ready_ms;       /* model loaded (mono), 0 until known */
    int64_t first_claim_ms; /* cold start end: first claim request (mono), 0 until known */
    char state;             /* 'S' starting, 'R' loaded, 'I' idle, 'B' busy */
    int stopping;           /* SIGTERM sent */
    int retiring;           /* asked to leave at its next idle moment */
} sup_worker_info_t;

/* Called (from supervisor_tick) when a worker made its first claim: the cold start. */
typedef void (*sup_cold_start_fn)(void *arg, const char *tier, const char *worker_id,
                                  int64_t spawn_to_ready_ms, int64_t spawn_to_claim_ms);

/* exe: path of the pingvas binary; worker_args: extra arguments for every worker (NULL-ended;
 * copied). gpus: GPU indexes to pin (count ngpus; 0 = no pinning, slots limited by max). */
supervisor_t *supervisor_new(const char *exe, const char *server_url, const char *worker_token,
                             const char *const *worker_args, const int *gpus, int ngpus);
void supervisor_free(supervisor_t *s);

/* Starts workers of tier until `n` are running (bounded by free slots/GPUs). Returns the count
 * running or starting afterwards. */
int supervisor_scale_up(supervisor_t *s, const char *tier, int n);
/* Asks an idle worker to leave (SIGUSR1): it exits before its next claim and never drops a job
 * it holds. It stops counting as live at once. 0, or -1 if unknown. */
int supervisor_retire_worker(supervisor_t *s, const char *worker_id);
void supervisor_set_cold_start_hook(supervisor_t *s, sup_cold_start_fn fn, void *arg);
/* Sends SIGTERM to the worker with this id (a graceful stop). 0, or -1 if unknown. */
int supervisor_stop_worker(supervisor_t *s, const char *worker_id);
/* Number of live (not stopping, not retiring) workers of tier. */
int supervisor_count(supervisor_t *s, const char *tier);
/* Copies up to max infos of live workers of tier. Returns the count. */
int supervisor_list(supervisor_t *s, const char *tier, sup_worker_info_t *out, int max);
/* Reaps exited children; restarts crashed ones (backoff 1 s doubling to 30 s) and kills those
 * that did not start within SUP_START_DEADLINE_MS. Call often. */
void supervisor_tick(supervisor_t *s);
/* SIGTERM to all, wait up to timeout_ms, then SIGKILL. */
void supervisor_stop_all(supervisor_t *s, int64_t timeout_ms);
/* Sets the fixed target for tier: tick() keeps that many running (restarts). -1 = unmanaged. */
void supervisor_set_target(supervisor_t *s, const char *tier, int n);
int supervisor_target(supervisor_t *s, const char *tier);

#endif
