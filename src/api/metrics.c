#include "api/metrics.h"

#include <stdio.h>

#define LAT_BOUNDS                                                                                 \
    {                                                                                              \
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10             \
    }
#define JOB_BOUNDS                                                                                 \
    {                                                                                              \
        0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800                         \
    }

metrics_t metrics = {
    .http_latency = {.name = "pingvas_http_request_duration_seconds",
                     .help = "HTTP request latency",
                     .bounds = LAT_BOUNDS},
    .queue_wait = {.name = "pingvas_job_queue_wait_seconds",
                   .help = "Time from submit to first claim",
                   .bounds = JOB_BOUNDS},
    .cold_start = {.name = "pingvas_worker_cold_start_seconds",
                   .help = "Local workers: process spawn to first claim (model load included)",
                   .bounds = JOB_BOUNDS},
    .run_time = {.name = "pingvas_job_run_seconds",
                 .help = "GPU time of completed jobs as reported by workers",
                 .bounds = JOB_BOUNDS},
};

void histogram_observe(histogram_t *h, double seconds)
{
    int i = 0;
    while (i < HIST_BUCKETS && h->bounds[i] > 0 && seconds > h->bounds[i])
        i++;
    if (i < HIST_BUCKETS && h->bounds[i] <= 0)
        i = HIST_BUCKETS; /* past the last bound: +Inf only */
    atomic_fetch_add(&h->counts[i], 1);
    atomic_fetch_add(&h->sum_us, (uint64_t)(seconds > 0 ? seconds * 1e6 : 0));
    atomic_fetch_add(&h->total, 1);
}

size_t histogram_render(const histogram_t *h, char *buf, size_t len, size_t size)
{
    uint64_t cum = 0;
    int n;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (len < size) {                                                                          \
            n = snprintf(buf + len, size - len, __VA_ARGS__);                                      \
            if (n > 0)                                                                             \
                len = len + (size_t)n < size ? len + (size_t)n : size - 1;                         \
        }                                                                                          \
    } while (0)
    APPEND("# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    for (int i = 0; i < HIST_BUCKETS && h->bounds[i] > 0; i++) {
        cum += atomic_load(&h->counts[i]);
        APPEND("%s_bucket{le=\"%g\"} %llu\n", h->name, h->bounds[i], (unsigned long long)cum);
    }
    APPEND("%s_bucket{le=\"+Inf\"} %llu\n", h->name, (unsigned long long)atomic_load(&h->total));
    APPEND("%s_sum %.6f\n", h->name, (double)atomic_load(&h->sum_us) / 1e6);
    APPEND("%s_count %llu\n", h->name, (unsigned long long)atomic_load(&h->total));
#undef APPEND
    return len;
}
