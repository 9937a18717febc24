/* imds.h: watches the EC2 instance metadata service (IMDSv2) for a spot interruption notice or
 * a rebalance recommendation; a notice asks the worker to stop gracefully, a rebalance
 * recommendation is only logged (docs/deploy.md, "Disruption"). */
#ifndef PINGVAS_IMDS_H
#define PINGVAS_IMDS_H

#include <stddef.h>
#include <stdint.h>

typedef struct imds_watch imds_watch_t;

/* Called with the drain window in ms (-1: the worker's configured window). */
typedef void (*imds_stop_fn)(int64_t drain_ms);

/* Probes base_url (e.g. "http://169.254.169.254") once; if it does not answer, returns NULL and
 * logs that spot notices are off. Otherwise polls every poll_ms in a thread. */
imds_watch_t *imds_watch_start(const char *base_url, int64_t poll_ms, imds_stop_fn on_notice);
void imds_watch_stop(imds_watch_t *w);

/* Reads where this instance runs from IMDSv2 at base_url: instance-type, instance-life-cycle
 * ("spot" or "on-demand") and placement/availability-zone, each into its buffer ("" when not
 * answered). Returns 0 when the service answered, -1 otherwise (buffers left ""). */
int imds_placement(const char *base_url, char *instance_type, size_t itsize, char *capacity,
                   size_t capsize, char *zone, size_t zsize);

/* Parses an instance-action document ({"action":"terminate","time":"2017-09-18T08:22:00Z"}).
 * Returns 0 and the action time in ms since the epoch, or -1. */
int imds_parse_instance_action(const char *body, size_t len, int64_t *time_ms);

#endif
