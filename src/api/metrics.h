/* metrics.h: process-wide counters and histograms, rendered as Prometheus text. Lock-free
 * (atomics); safe from any thread. */
#ifndef PINGVAS_METRICS_H
#define PINGVAS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_BUCKETS 16

typedef struct histogram {
    const char *name;
    const char *help;
    double bounds[HIST_BUCKETS]; /* upper bounds in seconds, ascending; 0 terminates */
    _Atomic uint64_t counts[HIST_BUCKETS + 1];
    _Atomic uint64_t sum_us; /* sum in microseconds */
    _Atomic uint64_t total;
} histogram_t;

typedef struct metrics {
    _Atomic uint64_t http_requests[6]; /* by status class: index 1..5 */
    _Atomic uint64_t jobs_created;
    _Atomic uint64_t jobs_rejected_credits;
    _Atomic uint64_t claims;
    _Atomic uint64_t leases_expired;
    _Atomic uint64_t releases;
    _Atomic uint64_t late_completes_refused;
    histogram_t http_latency;
    histogram_t queue_wait;
    histogram_t run_time;
    histogram_t cold_start; /* local workers: spawn to first claim */
} metrics_t;

extern metrics_t metrics;

void histogram_observe(histogram_t *h, double seconds);
/* Appends the histogram in Prometheus text to buf (at most size bytes, NUL-terminated).
 * Returns the new length. */
size_t histogram_render(const histogram_t *h, char *buf, size_t len, size_t size);

#endif
