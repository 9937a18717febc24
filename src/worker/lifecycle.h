/* lifecycle.h: a worker's reports for cost accounting (DESIGN section 10): where it runs
 * (instance type, capacity type, GPUs, zone: from the worker's configuration, else IMDSv2) and
 * its lifetime (started, model loaded, busy time, alive, ended), POSTed to
 * /internal/v1/workers/report. A failed report is logged and dropped: accounting never stops
 * the work. */
#ifndef PINGVAS_LIFECYCLE_H
#define PINGVAS_LIFECYCLE_H

#include <stdint.h>

#include "worker/worker.h"

#define LIFECYCLE_ALIVE_MS 30000 /* at most this long between reports (STORE_LIFE_GRACE_MS / 3) */

typedef struct lifecycle lifecycle_t;

/* Resolves the placement and returns a reporter (NULL when out of memory: nothing is
 * reported). */
lifecycle_t *lifecycle_new(const worker_config_t *cfg, const char *worker_id);
/* Reports event ("started", "loaded", "alive", "ended") with the busy time so far. "alive" is
 * sent only when LIFECYCLE_ALIVE_MS have passed since the last report. */
void lifecycle_report(lifecycle_t *l, const char *event, int64_t busy_ms);
void lifecycle_free(lifecycle_t *l);

#endif
