/* lifecycle.h: a worker's reports for cost accounting (DESIGN section 10): where it runs
 * (instance type, capacity type, GPUs, zone: from the worker's configuration, else IMDSv2) and
 * its lifetime (started, model loaded, busy time, alive, ended), POSTed to
 * /internal/v1/workers/report. A thread reports "alive" every LIFECYCLE_ALIVE_MS, during jobs
 * too. A failed report is logged and dropped: accounting never stops the work. */
#ifndef PINGVAS_LIFECYCLE_H
#define PINGVAS_LIFECYCLE_H

#include <stdint.h>

#include "worker/worker.h"

#define LIFECYCLE_ALIVE_MS 30000 /* between reports (STORE_LIFE_GRACE_MS / 3) */

typedef struct lifecycle lifecycle_t;

/* Resolves the placement, reports "started" and starts the alive thread. Returns the reporter,
 * or NULL when out of memory (nothing is reported; the other calls accept NULL). */
lifecycle_t *lifecycle_start(const worker_config_t *cfg, const char *worker_id);
/* The model is loaded. */
void lifecycle_loaded(lifecycle_t *l);
/* A job starts (busy 1) or ends (busy 0): the busy time reported is the sum of job times. */
void lifecycle_busy(lifecycle_t *l, int busy);
/* Reports "ended" with the final busy time, stops the thread and frees l. */
void lifecycle_end(lifecycle_t *l);

#endif
