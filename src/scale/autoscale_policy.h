/* autoscale_policy.h: the autoscaling policy engine (DESIGN section 7).
 *
 * Pure functions of (policy, metrics, history, now): no clock, no I/O, no malloc. The caller
 * owns the history, passes the time, and applies the decision. Two modes:
 *
 *   AUTOSCALE_KEDA   reproduces KEDA 2.x (the operator's 0<->1 loop, every pollingInterval)
 *                    driving the HPA it creates (every sync period): activation, cooldown,
 *                    ceil(metric / target) with the 0.1 tolerance, the legacy scale-up limit
 *                    max(2 x current, 4) and the 300 s downscale stabilization, or, with a
 *                    behavior, the Pods/Percent policies, selectPolicy and both windows.
 *   AUTOSCALE_LOCAL  the default of `pingvas up`: evaluated on every event (a submit, a job
 *                    ending) or tick, scales up to what the backlog needs at once, scales down
 *                    after a 30 s cooldown and only ever stops idle workers.
 *
 * docs/autoscaling.md explains both, the mapping to KEDA and HPA fields, and a timeline. */
#ifndef PINGVAS_AUTOSCALE_POLICY_H
#define PINGVAS_AUTOSCALE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define AUTOSCALE_NEVER INT64_MIN       /* "no such time yet" in the history */
#define AUTOSCALE_NO_DEADLINE INT64_MAX /* next_eval_ms when only an event can change anything */
#define AUTOSCALE_MAX_RULES 4           /* policies per direction (the HPA allows any number) */
#define AUTOSCALE_HISTORY_CAP 256       /* samples per series; see autoscale_policy_validate() */
#define AUTOSCALE_REPLICAS_LIMIT 100000 /* upper bound for max_replicas and computed counts */
#define AUTOSCALE_REASON_SIZE 160       /* bytes, NUL included; longer reasons are cut */

typedef enum autoscale_mode {
    AUTOSCALE_KEDA = 0,
    AUTOSCALE_LOCAL,
} autoscale_mode_t;

/* What the metric counts. KEDA on the seed scaled on the Redis list length (queued only); pingvas
 * scales on jobs in the system, so a fleet busy with long jobs is not scaled down mid-job. */
typedef enum autoscale_metric {
    AUTOSCALE_METRIC_QUEUED_RUNNING = 0, /* queued + running (default) */
    AUTOSCALE_METRIC_QUEUED,             /* queued only */
} autoscale_metric_t;

/* HPAScalingPolicy.type */
typedef enum autoscale_rule_kind {
    AUTOSCALE_RULE_PODS = 0,
    AUTOSCALE_RULE_PERCENT,
} autoscale_rule_kind_t;

/* HPAScalingRules.selectPolicy */
typedef enum autoscale_select {
    AUTOSCALE_SELECT_MAX = 0, /* the policy allowing the biggest change (Kubernetes default) */
    AUTOSCALE_SELECT_MIN,     /* the policy allowing the smallest change */
    AUTOSCALE_SELECT_DISABLED /* no scaling in this direction */
} autoscale_select_t;

/* One HPAScalingPolicy: at most `value` pods (or percent of the replicas at the start of the
 * period) may be added (removed) within any `period_ms`. */
typedef struct autoscale_rule {
    autoscale_rule_kind_t kind;
    int value;         /* > 0 */
    int64_t period_ms; /* 1 s .. 1800 s, as the HPA validates */
} autoscale_rule_t;

/* HPAScalingRules for one direction. */
typedef struct autoscale_rules {
    int64_t stabilization_ms; /* 0 .. 3600 s */
    autoscale_select_t select;
    int n_rules; /* 1 .. AUTOSCALE_MAX_RULES */
    autoscale_rule_t rules[AUTOSCALE_MAX_RULES];
} autoscale_rules_t;

/* HorizontalPodAutoscalerBehavior. With enabled == 0 the HPA takes its legacy path
 * (normalizeDesiredReplicas: max(2 x current, 4) and downscale_stabilization_ms). */
typedef struct autoscale_behavior {
    int enabled;
    autoscale_rules_t up, down;
} autoscale_behavior_t;

typedef struct autoscale_policy {
    autoscale_mode_t mode;
    autoscale_metric_t metric;
    double target;               /* metric per replica: KEDA targetValue / listLength (> 0) */
    double activation_target;    /* active when metric > this: KEDA activationTargetValue */
    int min_replicas;            /* KEDA minReplicaCount; the HPA gets max(min, 1) */
    int max_replicas;            /* KEDA maxReplicaCount, >= 1 */
    int64_t polling_interval_ms; /* KEDA pollingInterval (keda mode) */
    int64_t cooldown_ms;         /* KEDA cooldownPeriod; local: how long a surplus lasts */
    int64_t sync_period_ms; /* kube-controller-manager --horizontal-pod-autoscaler-sync-period */
    double tolerance;       /* --horizontal-pod-autoscaler-tolerance */
    int64_t downscale_stabilization_ms; /* --horizontal-pod-autoscaler-downscale-stabilization */
    autoscale_behavior_t behavior;      /* advanced.horizontalPodAutoscalerConfig.behavior */
} autoscale_policy_t;

/* The queue as seen at `now` (GET /api/v1/queue for one tier). */
typedef struct autoscale_metrics {
    int64_t queued;
    int64_t running;
    int current_replicas; /* the replica count last applied (the scale target's spec.replicas) */
    int idle_replicas;    /* local mode: workers without a job; 0 .. current_replicas */
} autoscale_metrics_t;

typedef struct autoscale_sample {
    int64_t at_ms;
    int value; /* a recommendation, or a replica change (> 0) for a scale event */
} autoscale_sample_t;

/* A bounded, unordered set of timestamped samples. Samples that no window can read any more are
 * overwritten first; when none is, the oldest is (only with windows the validator rejects). */
typedef struct autoscale_series {
    int n;
    autoscale_sample_t s[AUTOSCALE_HISTORY_CAP];
} autoscale_series_t;

/* What the controllers remember between evaluations. Initialize with autoscale_history_init();
 * the caller owns it (about 12 KiB) and passes the same one to every autoscale_decide() call. */
typedef struct autoscale_history {
    int64_t last_eval_ms;               /* time must not go back */
    int64_t last_poll_ms;               /* keda: the operator's last poll */
    int64_t last_sync_ms;               /* keda: the HPA's last sync */
    int64_t last_active_ms;             /* keda: status.lastActiveTime; NEVER = nil */
    int64_t surplus_since_ms;           /* local: since when fewer workers were needed than run */
    autoscale_series_t recommendations; /* HPA: (time, unstabilized desired) per sync */
    autoscale_series_t scale_up_events; /* HPA with behavior: (time, replicas added) */
    autoscale_series_t scale_down_events;
} autoscale_history_t;

typedef struct autoscale_decision {
    int desired_replicas; /* apply this; equal to current_replicas when nothing changes */
    int stop_idle;        /* local: how many idle workers to stop (<= idle_replicas); keda: 0 */
    int64_t metric;       /* the backlog value the decision used */
    int active;           /* metric > activation_target */
    int64_t next_eval_ms; /* when a re-evaluation could change something without a new event */
    char reason[AUTOSCALE_REASON_SIZE]; /* one line, e.g. "hpa: ceil(100/5)=20 ..." */
} autoscale_decision_t;

/* Defaults for a mode. keda: target 5, activation 0, min 0, max 20, polling 30 s, cooldown
 * 300 s, sync 15 s, tolerance 0.1, downscale stabilization 300 s, no behavior.
 * local: the same target, activation and bounds, cooldown 30 s, the rest unused. */
autoscale_policy_t autoscale_policy_defaults(autoscale_mode_t mode);

/* The behavior Kubernetes fills in for a behavior with nothing set: scale up with no
 * stabilization, Max of Percent 100 / 15 s and Pods 4 / 15 s; scale down with 300 s
 * stabilization, Percent 100 / 15 s. Returned with enabled = 1. */
autoscale_behavior_t autoscale_behavior_defaults(void);

/* Returns 0 when p is usable, else -1 with a message naming the field in err (when err is not
 * NULL and errsize > 0). Windows and policy periods must fit AUTOSCALE_HISTORY_CAP samples at
 * one per sync period. */
int autoscale_policy_validate(const autoscale_policy_t *p, char *err, size_t errsize);

/* Starts an empty history (KEDA's lastActiveTime nil, nothing polled or synced yet). */
void autoscale_history_init(autoscale_history_t *h);

/* The metric value for a policy: queued + running, or queued only. */
int64_t autoscale_metric_value(const autoscale_policy_t *p, const autoscale_metrics_t *m);

/* Evaluates the policy at now_ms (monotonic milliseconds). keda mode runs the operator's poll
 * when pollingInterval has passed since the last one and the HPA's sync when the sync period
 * has, so it can be called at any rate (every second, or every 15 s); local mode decides on every
 * call. Updates h (the caller must then apply out->desired_replicas; the history assumes it did)
 * and fills out. Returns 0, or -1 on a bad argument (invalid policy, negative counts, idle >
 * current, time going back) with the cause in out->reason, h untouched and desired = current. */
int autoscale_decide(const autoscale_policy_t *p, const autoscale_metrics_t *m,
                     autoscale_history_t *h, int64_t now_ms, autoscale_decision_t *out);

#endif
