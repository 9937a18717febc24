/* simulate.h: `pingvas simulate`, a seeded discrete-event model of a GPU fleet whose scaling
 * decisions come from autoscale_decide() (autoscale_policy.h), the code the local autoscaler
 * runs and the replay of KEDA + HPA. docs/cost.md describes the model and its assumptions.
 *
 * Model, per tier (standard on a spot pool, enterprise on an on-demand pool):
 *   - jobs arrive (a trace or a generated process, sim_arrivals_*) and wait FIFO; a job's GPU
 *     time is what the synthetic backend computes for its GPU profile (estimate_seconds);
 *   - the policy is evaluated as the real callers do (keda: at its poll and sync times; local:
 *     on every arrival, job end, worker ready and at its next deadline) and its decision applied:
 *     a new replica is a worker on an empty node of the pool (image cached: model load only) or
 *     on a new node (boot, image pull, model load); fewer replicas stop workers still starting,
 *     then idle ones, then (keda only) busy ones, which drain;
 *   - drain (DESIGN section 4): a busy worker that is stopped finishes its job when it ends
 *     within the drain window, otherwise releases it to the front of the queue (a restart);
 *   - spot interruptions: a Poisson process per node-hour on spot nodes; the notice stops the
 *     worker (drain) and the Deployment starts a replacement at once; the node is reclaimed when
 *     the notice runs out;
 *   - Karpenter consolidation: a node left empty for consolidate_after is terminated;
 *   - cost: every node from launch to termination at its pool's price per GPU-hour.
 * No wall clock and no global state: the same inputs give the same result. */
#ifndef PINGVAS_SIMULATE_H
#define PINGVAS_SIMULATE_H

#include <stddef.h>
#include <stdint.h>

#include "scale/autoscale_policy.h"

#define SIM_TIERS 2 /* 0 standard, 1 enterprise */
#define SIM_MAX_JOBS 20000000
#define SIM_MAX_HOURS (24.0 * 366)

/* One job as it arrives. */
typedef struct sim_job {
    int64_t at_ms;
    int tier; /* 0 standard, 1 enterprise */
    int width, height, steps;
} sim_job_t;

typedef struct sim_jobs {
    sim_job_t *v; /* sorted by at_ms (stable) */
    size_t n, cap;
} sim_jobs_t;

/* A generated arrival process (the --arrivals grammar, docs/cost.md):
 *   poisson:RATE                     RATE jobs/s
 *   burst:BASE,PEAK,EVERY,LENGTH     BASE jobs/s, and PEAK jobs/s for LENGTH every EVERY
 *                                    (the first burst starts at EVERY)
 *   diurnal:MEAN,AMPLITUDE[,PEAK_H]  MEAN x (1 + AMPLITUDE x cos(2 pi (h - PEAK_H) / 24)) jobs/s,
 *                                    AMPLITUDE 0..1, PEAK_H 0..24 (default 15)
 * Rates are jobs per second (0 .. 10000); durations as in config ("30s", "5m", "2h"). */
typedef enum sim_process { SIM_POISSON, SIM_BURST, SIM_DIURNAL } sim_process_t;

typedef struct sim_arrivals {
    sim_process_t kind;
    double rate;      /* poisson RATE, burst BASE, diurnal MEAN */
    double peak;      /* burst PEAK, diurnal AMPLITUDE */
    double every_s;   /* burst EVERY */
    double length_s;  /* burst LENGTH */
    double peak_hour; /* diurnal PEAK_H */
} sim_arrivals_t;

/* What generated jobs look like. */
typedef struct sim_shape {
    int width, height, steps;
    double enterprise_share; /* 0..1: fraction of jobs in the enterprise tier */
} sim_shape_t;

/* Parses the grammar above. 0, or -1 with a message in err. */
int sim_arrivals_parse(const char *spec, sim_arrivals_t *a, char *err, size_t errlen);
/* Draws the arrivals of [0, hours) into out (emptied first) with a generator seeded by seed.
 * 0, or -1 with err (more than SIM_MAX_JOBS, out of memory). */
int sim_arrivals_generate(const sim_arrivals_t *a, const sim_shape_t *shape, double hours,
                          uint64_t seed, sim_jobs_t *out, char *err, size_t errlen);
/* Reads a CSV trace "time_s,tier,width,height,steps" (a header line is allowed; tier standard
 * or enterprise) into out, sorted by time. 0, or -1 with "FILE:LINE: ..." in err. */
int sim_trace_load(const char *path, sim_jobs_t *out, char *err, size_t errlen);
/* Writes jobs as such a CSV. 0 or -1. */
int sim_trace_write(const char *path, const sim_jobs_t *jobs);
void sim_jobs_free(sim_jobs_t *j);

/* One tier's pool of nodes and its policy. */
typedef struct sim_pool {
    autoscale_policy_t policy;     /* max_replicas 0: the tier is not served (its jobs wait) */
    const char *gpu_profile;       /* synthetic backend profile: job durations and model load */
    double price_gpu_hour;         /* $ per node GPU-hour (one GPU per worker) */
    int spot;                      /* capacity type: spot nodes can be interrupted */
    double boot_min_s, boot_max_s; /* node launch to Ready, uniform */
    double pull_s;                 /* image pull on a new node */
    double load_s;                 /* model load; < 0: the profile's */
    double consolidate_s;          /* Karpenter consolidateAfter for empty nodes */
    double interruptions_per_node_hour; /* spot only */
} sim_pool_t;

typedef struct sim_config {
    sim_pool_t pool[SIM_TIERS];
    double drain_s;              /* worker drain window (90 s) */
    double notice_s;             /* spot interruption notice (120 s) */
    double hours;                /* horizon; the run goes on until every job has ended */
    uint64_t seed;               /* fleet randomness (boot times, interruptions) */
    double lower_bound_gpu_hour; /* cheapest spot $ per GPU-hour */
    double plot_step_s;          /* > 0: record a timeline point every step */
    double time_scale; /* multiplies job and model-load times, as the synthetic backend does */
} sim_config_t;

typedef struct sim_point {
    double t_s;
    int backlog; /* queued + running, both tiers */
    int workers; /* replicas */
    int nodes;   /* nodes alive (booting or up) */
    double cost_usd;
} sim_point_t;

/* The result; the first fourteen fields are the report keys. */
typedef struct sim_result {
    int64_t jobs, completed;
    double cost_usd, cost_per_1000_images, lower_bound_usd, gpu_utilization;
    double node_hours_spot, node_hours_on_demand;
    double wait_p50_s, wait_p95_s, wait_p99_s;
    int64_t interruptions, jobs_restarted;
    int max_workers;
    double worker_seconds; /* replica lifetimes (start of launch to stop) */
    double end_s;          /* simulated time at the end */
    sim_point_t *timeline; /* malloc'd when plot_step_s > 0; sim_result_free */
    size_t npoints;
} sim_result_t;

/* Defaults for a policy mode: the seed's deployment (keda: spot g4dn.xlarge with the t4
 * profile, on-demand g5.4xlarge with a10g, boot 45-90 s, pull 20 s, consolidateAfter 30 s
 * and 5 m, 0.01 interruptions per spot node-hour, drain 90 s, notice 120 s, enterprise max
 * 5), with prices set by the caller. */
void sim_config_defaults(sim_config_t *c, autoscale_mode_t mode);
/* Runs the model. 0, or -1 with err (invalid policy, unknown profile, out of memory). */
int sim_run(const sim_config_t *cfg, const sim_jobs_t *jobs, sim_result_t *out, char *err,
            size_t errlen);
void sim_result_free(sim_result_t *r);

#endif
