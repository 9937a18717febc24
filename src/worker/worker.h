/* worker.h: one GPU worker (concurrency 1). Claims jobs from a server over the worker protocol
 * (DESIGN section 5), runs them on a backend, heartbeats, uploads, completes; stops gracefully
 * on SIGTERM or a spot interruption notice (DESIGN section 4). */
#ifndef PINGVAS_WORKER_H
#define PINGVAS_WORKER_H

#include <stdint.h>

#include "backend/backend.h"
#include "worker/podguard.h"

typedef struct worker_config {
    const char *server_url;
    const char *token; /* PINGVAS_WORKER_TOKEN */
    const char *tier;
    const char *worker_id; /* NULL: hostname-pid-random */
    backend_config_t backend;
    int64_t drain_ms;      /* graceful-stop window */
    int64_t claim_wait_ms; /* long-poll length */
    int max_jobs;          /* exit after this many jobs; 0 = no limit */
    const char *imds_url;  /* EC2 instance metadata base URL, or NULL/"" (off) */
    int64_t imds_poll_ms;
    pod_guard_t *guard; /* Kubernetes busy/idle marks and node watch, or NULL (off) */
    /* Where the worker runs, for cost accounting (lifecycle.h); NULL/0: unknown, then IMDSv2
     * when imds_url is set. */
    const char *instance_type;
    const char *capacity_type; /* "spot" or "on-demand" */
    const char *zone;
    int instance_gpus;
} worker_config_t;

/* Runs until stopped. Returns the process exit status (0 on a graceful stop). */
int worker_run(const worker_config_t *cfg);

/* Asks the running worker to stop gracefully within drain_ms (-1: the configured window).
 * Async-signal-safe. */
void worker_request_stop(int64_t drain_ms);

#endif
