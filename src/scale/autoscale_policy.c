/* autoscale_policy.c: the policy engine. See autoscale_policy.h and docs/autoscaling.md.
 *
 * The keda mode follows, step by step, KEDA's scale executor (RequestScale, scaleToZero,
 * scaleFromZero) and the Kubernetes HPA controller (reconcileAutoscaler,
 * GetExternalPerPodMetricReplicas, normalizeDesiredReplicas[WithBehaviors],
 * stabilizeRecommendation[WithBehaviors], convertDesiredReplicasWith{Rules,BehaviorRate},
 * calculateScale{Up,Down}Limit*, getReplicasChangePerPeriod, storeScaleEvent,
 * recordInitialRecommendation), including which time comparisons are strict, so that a replay
 * here gives the replica counts a cluster would. Versions followed: Kubernetes 1.33 and later
 * (the tolerance test is Tolerances.isWithin, (1 - t) <= ratio <= (1 + t); up to 1.32 it was
 * |1 - ratio| > t, which scales at a ratio of exactly 1.1) and KEDA 2.20 (lastActiveTime kept
 * at whole seconds; initialCooldownPeriod 0). docs/autoscaling.md says what is not modelled. */
#include "scale/autoscale_policy.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MS_PER_S 1000
#define METRIC_LIMIT ((int64_t)1000000000000)        /* 1e12 jobs: keeps milli-units in int64 */
#define HPA_WINDOW_MAX_MS ((int64_t)3600 * MS_PER_S) /* HPA validation: stabilization <= 1 h */
#define HPA_PERIOD_MAX_MS ((int64_t)1800 * MS_PER_S) /* HPA validation: periodSeconds <= 30 min */
#define RULE_VALUE_MAX 100000

/* Writes a reason; a reason longer than the buffer is cut, which is harmless by design. */
static void reasonf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reasonf(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, AUTOSCALE_REASON_SIZE, fmt, ap);
    va_end(ap);
    if (n < 0)
        buf[0] = '\0';
}

static int imin(int a, int b)
{
    return a < b ? a : b;
}

static int imax(int a, int b)
{
    return a > b ? a : b;
}

/* Converts a non-negative double count to int, saturating at AUTOSCALE_REPLICAS_LIMIT (and at
 * -AUTOSCALE_REPLICAS_LIMIT below), so no float-to-int conversion can overflow. */
static int clamp_count(double x)
{
    if (x > AUTOSCALE_REPLICAS_LIMIT)
        return AUTOSCALE_REPLICAS_LIMIT;
    if (x < -AUTOSCALE_REPLICAS_LIMIT)
        return -AUTOSCALE_REPLICAS_LIMIT;
    return (int)x;
}

static double seconds(int64_t ms)
{
    return (double)ms / MS_PER_S;
}

/* ---- configuration ---------------------------------------------------------------------- */

autoscale_policy_t autoscale_policy_defaults(autoscale_mode_t mode)
{
    autoscale_policy_t p;
    memset(&p, 0, sizeof p);
    p.mode = mode;
    p.metric = AUTOSCALE_METRIC_QUEUED_RUNNING;
    p.target = 5;
    p.activation_target = 0;
    p.min_replicas = 0;
    p.max_replicas = 20;
    p.polling_interval_ms = 30 * MS_PER_S;
    p.cooldown_ms = (mode == AUTOSCALE_LOCAL ? 30 : 300) * MS_PER_S;
    p.sync_period_ms = 15 * MS_PER_S;
    p.tolerance = 0.1;
    p.downscale_stabilization_ms = 300 * MS_PER_S;
    p.behavior.enabled = 0;
    return p;
}

autoscale_behavior_t autoscale_behavior_defaults(void)
{
    autoscale_behavior_t b;
    memset(&b, 0, sizeof b);
    b.enabled = 1;
    b.up.stabilization_ms = 0;
    b.up.select = AUTOSCALE_SELECT_MAX;
    b.up.n_rules = 2;
    b.up.rules[0] = (autoscale_rule_t){AUTOSCALE_RULE_PERCENT, 100, 15 * MS_PER_S};
    b.up.rules[1] = (autoscale_rule_t){AUTOSCALE_RULE_PODS, 4, 15 * MS_PER_S};
    b.down.stabilization_ms = 300 * MS_PER_S;
    b.down.select = AUTOSCALE_SELECT_MAX;
    b.down.n_rules = 1;
    b.down.rules[0] = (autoscale_rule_t){AUTOSCALE_RULE_PERCENT, 100, 15 * MS_PER_S};
    return b;
}

static int fail(char *err, size_t errsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errsize, const char *fmt, ...)
{
    if (err && errsize > 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err, errsize, fmt, ap);
        va_end(ap);
        if (n < 0)
            err[0] = '\0';
    }
    return -1;
}

/* Samples a window of `span_ms` can hold at one per sync period, plus the one being added. */
static int fits_history(int64_t span_ms, int64_t sync_ms)
{
    return span_ms / sync_ms + 2 <= AUTOSCALE_HISTORY_CAP;
}

static int validate_rules(const autoscale_rules_t *r, const char *dir, int64_t sync_ms, char *err,
                          size_t errsize)
{
    if (r->stabilization_ms < 0 || r->stabilization_ms > HPA_WINDOW_MAX_MS)
        return fail(err, errsize, "behavior.%s.stabilization must be 0..3600 s", dir);
    if (!fits_history(r->stabilization_ms, sync_ms))
        return fail(err, errsize,
                    "behavior.%s.stabilization spans more than %d sync periods; lengthen "
                    "sync_period or shorten the window",
                    dir, AUTOSCALE_HISTORY_CAP - 2);
    if (r->select != AUTOSCALE_SELECT_MAX && r->select != AUTOSCALE_SELECT_MIN &&
        r->select != AUTOSCALE_SELECT_DISABLED)
        return fail(err, errsize, "behavior.%s.select must be Max, Min or Disabled", dir);
    if (r->n_rules < (r->select == AUTOSCALE_SELECT_DISABLED ? 0 : 1) ||
        r->n_rules > AUTOSCALE_MAX_RULES)
        return fail(err, errsize, "behavior.%s needs 1..%d policies", dir, AUTOSCALE_MAX_RULES);
    for (int i = 0; i < r->n_rules; i++) {
        const autoscale_rule_t *rule = &r->rules[i];
        if (rule->kind != AUTOSCALE_RULE_PODS && rule->kind != AUTOSCALE_RULE_PERCENT)
            return fail(err, errsize, "behavior.%s.policies[%d].type must be Pods or Percent", dir,
                        i);
        if (rule->value <= 0 || rule->value > RULE_VALUE_MAX)
            return fail(err, errsize, "behavior.%s.policies[%d].value must be 1..%d", dir, i,
                        RULE_VALUE_MAX);
        if (rule->period_ms < MS_PER_S || rule->period_ms > HPA_PERIOD_MAX_MS)
            return fail(err, errsize, "behavior.%s.policies[%d].period must be 1..1800 s", dir, i);
        if (!fits_history(rule->period_ms, sync_ms))
            return fail(err, errsize,
                        "behavior.%s.policies[%d].period spans more than %d sync periods", dir, i,
                        AUTOSCALE_HISTORY_CAP - 2);
    }
    return 0;
}

int autoscale_policy_validate(const autoscale_policy_t *p, char *err, size_t errsize)
{
    if (!p)
        return fail(err, errsize, "no policy");
    if (p->mode != AUTOSCALE_KEDA && p->mode != AUTOSCALE_LOCAL)
        return fail(err, errsize, "mode must be keda or local");
    if (p->metric != AUTOSCALE_METRIC_QUEUED_RUNNING && p->metric != AUTOSCALE_METRIC_QUEUED)
        return fail(err, errsize, "metric must be queued+running or queued");
    if (!isfinite(p->target) || p->target < 0.001 || p->target > 1e9)
        return fail(err, errsize, "target must be 0.001..1e9 jobs per replica");
    if (!isfinite(p->activation_target) || p->activation_target < 0 || p->activation_target > 1e12)
        return fail(err, errsize, "activation_target must be 0..1e12");
    if (p->max_replicas < 1 || p->max_replicas > AUTOSCALE_REPLICAS_LIMIT)
        return fail(err, errsize, "max_replicas must be 1..%d", AUTOSCALE_REPLICAS_LIMIT);
    if (p->min_replicas < 0 || p->min_replicas > p->max_replicas)
        return fail(err, errsize, "min_replicas must be 0..max_replicas (%d)", p->max_replicas);
    if (p->cooldown_ms < 0)
        return fail(err, errsize, "cooldown must not be negative");
    if (p->mode == AUTOSCALE_LOCAL)
        return 0;
    if (p->polling_interval_ms <= 0)
        return fail(err, errsize, "polling_interval must be positive");
    if (p->sync_period_ms <= 0)
        return fail(err, errsize, "sync_period must be positive");
    if (!isfinite(p->tolerance) || p->tolerance < 0 || p->tolerance >= 1)
        return fail(err, errsize, "tolerance must be 0..1 (exclusive)");
    if (p->downscale_stabilization_ms < 0 || p->downscale_stabilization_ms > HPA_WINDOW_MAX_MS)
        return fail(err, errsize, "downscale_stabilization must be 0..3600 s");
    if (!fits_history(p->downscale_stabilization_ms, p->sync_period_ms))
        return fail(err, errsize, "downscale_stabilization spans more than %d sync periods",
                    AUTOSCALE_HISTORY_CAP - 2);
    if (p->behavior.enabled) {
        if (validate_rules(&p->behavior.up, "scaleUp", p->sync_period_ms, err, errsize) != 0)
            return -1;
        if (validate_rules(&p->behavior.down, "scaleDown", p->sync_period_ms, err, errsize) != 0)
            return -1;
    }
    return 0;
}

/* ---- history ---------------------------------------------------------------------------- */

void autoscale_history_init(autoscale_history_t *h)
{
    memset(h, 0, sizeof *h);
    h->last_eval_ms = AUTOSCALE_NEVER;
    h->last_poll_ms = AUTOSCALE_NEVER;
    h->last_sync_ms = AUTOSCALE_NEVER;
    h->last_active_ms = AUTOSCALE_NEVER;
    h->surplus_since_ms = AUTOSCALE_NEVER;
}

/* Adds (at, value). Like the HPA, reuses a sample older than `obsolete_before` (one no window
 * reads any more) instead of growing; when the set is full and none is obsolete, replaces the
 * oldest sample (validation keeps that from happening). */
static void series_put(autoscale_series_t *s, int64_t at, int value, int64_t obsolete_before)
{
    int slot = -1;
    for (int i = 0; i < s->n; i++)
        if (s->s[i].at_ms < obsolete_before)
            slot = i;
    if (slot < 0 && s->n < AUTOSCALE_HISTORY_CAP)
        slot = s->n++;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < s->n; i++)
            if (s->s[i].at_ms < s->s[slot].at_ms)
                slot = i;
    }
    s->s[slot].at_ms = at;
    s->s[slot].value = value;
}

/* getReplicasChangePerPeriod: the changes strictly after now - period. */
static int events_in_period(const autoscale_series_t *s, int64_t now, int64_t period_ms)
{
    int64_t cutoff = now - period_ms;
    int sum = 0;
    for (int i = 0; i < s->n; i++)
        if (s->s[i].at_ms > cutoff)
            sum += s->s[i].value;
    return sum;
}

static int64_t longest_period(const autoscale_rules_t *r)
{
    int64_t longest = 0;
    for (int i = 0; i < r->n_rules; i++)
        if (r->rules[i].period_ms > longest)
            longest = r->rules[i].period_ms;
    return longest;
}

/* storeScaleEvent: only with a behavior (the legacy path never reads events). */
static void store_scale_event(const autoscale_policy_t *p, autoscale_history_t *h, int64_t now,
                              int from, int to)
{
    if (!p->behavior.enabled || from == to)
        return;
    if (to > from)
        series_put(&h->scale_up_events, now, to - from, now - longest_period(&p->behavior.up));
    else
        series_put(&h->scale_down_events, now, from - to, now - longest_period(&p->behavior.down));
}

/* ---- metric ----------------------------------------------------------------------------- */

int64_t autoscale_metric_value(const autoscale_policy_t *p, const autoscale_metrics_t *m)
{
    int64_t v = m->queued;
    if (p->metric == AUTOSCALE_METRIC_QUEUED_RUNNING)
        v += m->running;
    return v;
}

/* ceil(metric / target) in the HPA's milli-units, saturated. */
static int replicas_for(int64_t metric, int64_t target_milli)
{
    return clamp_count(ceil((double)(metric * MS_PER_S) / (double)target_milli));
}

static int64_t target_milli(const autoscale_policy_t *p)
{
    return (int64_t)llround(p->target * 1000.0);
}

/* ---- the HPA ---------------------------------------------------------------------------- */

/* calculateScaleUpLimitWithScalingRules */
static int scale_up_limit_rules(const autoscale_rules_t *r, const autoscale_history_t *h,
                                int64_t now, int current)
{
    if (r->select == AUTOSCALE_SELECT_DISABLED)
        return current;
    int result = r->select == AUTOSCALE_SELECT_MIN ? INT_MAX : INT_MIN;
    for (int i = 0; i < r->n_rules; i++) {
        const autoscale_rule_t *rule = &r->rules[i];
        int added = events_in_period(&h->scale_up_events, now, rule->period_ms);
        int deleted = events_in_period(&h->scale_down_events, now, rule->period_ms);
        int start = current - added + deleted;
        int proposed;
        if (rule->kind == AUTOSCALE_RULE_PODS)
            proposed = start + rule->value;
        else
            proposed = clamp_count(ceil((double)start * (1 + (double)rule->value / 100)));
        result =
            r->select == AUTOSCALE_SELECT_MIN ? imin(result, proposed) : imax(result, proposed);
    }
    return result;
}

/* calculateScaleDownLimitWithBehaviors */
static int scale_down_limit_rules(const autoscale_rules_t *r, const autoscale_history_t *h,
                                  int64_t now, int current)
{
    if (r->select == AUTOSCALE_SELECT_DISABLED)
        return current;
    int result = r->select == AUTOSCALE_SELECT_MIN ? INT_MIN : INT_MAX;
    for (int i = 0; i < r->n_rules; i++) {
        const autoscale_rule_t *rule = &r->rules[i];
        int added = events_in_period(&h->scale_up_events, now, rule->period_ms);
        int deleted = events_in_period(&h->scale_down_events, now, rule->period_ms);
        int start = current - added + deleted;
        int proposed;
        if (rule->kind == AUTOSCALE_RULE_PODS)
            proposed = start - rule->value;
        else
            proposed = clamp_count((double)start * (1 - (double)rule->value / 100));
        result =
            r->select == AUTOSCALE_SELECT_MIN ? imax(result, proposed) : imin(result, proposed);
    }
    return result;
}

/* normalizeDesiredReplicas: the path without a behavior. */
static int hpa_normalize_legacy(const autoscale_policy_t *p, autoscale_history_t *h, int64_t now,
                                int current, int raw, int hpa_min, char *why)
{
    /* stabilizeRecommendation: the max of raw and every sample not before now - window. */
    int64_t cutoff = now - p->downscale_stabilization_ms;
    int stabilized = raw;
    for (int i = 0; i < h->recommendations.n; i++) {
        const autoscale_sample_t *rec = &h->recommendations.s[i];
        if (rec->at_ms >= cutoff && rec->value > stabilized)
            stabilized = rec->value;
    }
    series_put(&h->recommendations, now, raw, cutoff);

    /* convertDesiredReplicasWithRules */
    int up_limit = imax(2 * current, 4); /* calculateScaleUpLimit */
    int max_allowed = imin(p->max_replicas, up_limit);
    int desired = stabilized;
    const char *limit = "";
    if (stabilized < hpa_min) {
        desired = hpa_min;
        limit = "raised to min";
    } else if (stabilized > max_allowed) {
        desired = max_allowed;
        limit =
            p->max_replicas > up_limit ? "limited by scale-up rate max(2x,4) to" : "limited by max";
    }
    if (stabilized != raw && limit[0])
        reasonf(why, "held at %d by %.0fs scale-down stabilization, %s %d", stabilized,
                seconds(p->downscale_stabilization_ms), limit, desired);
    else if (stabilized != raw)
        reasonf(why, "held at %d by %.0fs scale-down stabilization", stabilized,
                seconds(p->downscale_stabilization_ms));
    else if (limit[0])
        reasonf(why, "%s %d", limit, desired);
    else
        why[0] = '\0';
    return desired;
}

/* normalizeDesiredReplicasWithBehaviors */
static int hpa_normalize_behavior(const autoscale_policy_t *p, autoscale_history_t *h, int64_t now,
                                  int current, int raw, int hpa_min, char *why)
{
    const autoscale_rules_t *up = &p->behavior.up, *down = &p->behavior.down;

    /* stabilizeRecommendationWithBehaviors: samples strictly after each cutoff count. */
    int64_t up_cutoff = now - up->stabilization_ms;
    int64_t down_cutoff = now - down->stabilization_ms;
    int up_rec = raw, down_rec = raw;
    for (int i = 0; i < h->recommendations.n; i++) {
        const autoscale_sample_t *rec = &h->recommendations.s[i];
        if (rec->at_ms > up_cutoff)
            up_rec = imin(up_rec, rec->value);
        if (rec->at_ms > down_cutoff)
            down_rec = imax(down_rec, rec->value);
    }
    int stabilized = current;
    if (stabilized < up_rec)
        stabilized = up_rec;
    if (stabilized > down_rec)
        stabilized = down_rec;
    int64_t longest_window = up->stabilization_ms > down->stabilization_ms ? up->stabilization_ms
                                                                           : down->stabilization_ms;
    series_put(&h->recommendations, now, raw, now - longest_window);

    /* convertDesiredReplicasWithBehaviorRate */
    int desired = stabilized;
    const char *limit = "";
    if (stabilized > current) {
        int up_limit = scale_up_limit_rules(up, h, now, current);
        if (up_limit < current)
            up_limit = current;
        int max_allowed = p->max_replicas;
        const char *kind = "limited by max";
        if (max_allowed > up_limit) {
            max_allowed = up_limit;
            kind = "limited by scaleUp policies to";
        }
        if (stabilized > max_allowed) {
            desired = max_allowed;
            limit = kind;
        }
    } else if (stabilized < current) {
        int down_limit = scale_down_limit_rules(down, h, now, current);
        if (down_limit > current)
            down_limit = current;
        int min_allowed = hpa_min;
        const char *kind = "raised to min";
        if (min_allowed < down_limit) {
            min_allowed = down_limit;
            kind = "limited by scaleDown policies to";
        }
        if (stabilized < min_allowed) {
            desired = min_allowed;
            limit = kind;
        }
    }
    if (stabilized != raw && limit[0])
        reasonf(why, "stabilized to %d, %s %d", stabilized, limit, desired);
    else if (stabilized != raw)
        reasonf(why, "stabilized to %d (%s window)", stabilized,
                stabilized > raw ? "scaleDown" : "scaleUp");
    else if (limit[0])
        reasonf(why, "%s %d", limit, desired);
    else
        why[0] = '\0';
    return desired;
}

/* One HPA sync (reconcileAutoscaler) at `current` replicas. Returns the new replica count. */
static int hpa_sync(const autoscale_policy_t *p, autoscale_history_t *h, int64_t now, int current,
                    int64_t metric, char *reason)
{
    int hpa_min = imax(p->min_replicas, 1); /* KEDA gives the HPA max(minReplicaCount, 1) */
    if (current == 0) {
        reasonf(reason, "hpa: idle at 0 replicas (scaling disabled until KEDA activates)");
        return 0;
    }
    int desired;
    if (current > p->max_replicas) {
        desired = p->max_replicas;
        reasonf(reason, "hpa: %d above max -> %d", current, desired);
    } else if (current < hpa_min) {
        desired = hpa_min;
        reasonf(reason, "hpa: %d below min -> %d", current, desired);
    } else {
        /* GetExternalPerPodMetricReplicas, AverageValue target: the ratio compares the total
         * with target x replicas; outside the tolerance the count is ceil(total / target). */
        int64_t tm = target_milli(p);
        double ratio = (double)(metric * MS_PER_S) / ((double)tm * (double)current);
        int within = (1.0 - p->tolerance) <= ratio && ratio <= (1.0 + p->tolerance);
        int raw = within ? current : replicas_for(metric, tm);
        char why[AUTOSCALE_REASON_SIZE];
        if (p->behavior.enabled)
            desired = hpa_normalize_behavior(p, h, now, current, raw, hpa_min, why);
        else
            desired = hpa_normalize_legacy(p, h, now, current, raw, hpa_min, why);
        if (within)
            reasonf(reason, "hpa: ratio %" PRId64 "/(%g x %d)=%.2f within tolerance %g, %d%s%s",
                    metric, p->target, current, ratio, p->tolerance, raw, why[0] ? ", " : "", why);
        else
            reasonf(reason, "hpa: ceil(%" PRId64 "/%g)=%d%s%s", metric, p->target, raw,
                    why[0] ? " " : "", why);
    }
    store_scale_event(p, h, now, current, desired);
    return desired;
}

/* ---- keda mode -------------------------------------------------------------------------- */

/* KEDA keeps status.lastActiveTime as a metav1.Time, which the API server stores as RFC 3339 with
 * whole seconds: the poll reads back the active instant cut down to its second. */
static int64_t whole_second(int64_t ms)
{
    int64_t rem = ms % MS_PER_S;
    return ms - (rem < 0 ? rem + MS_PER_S : rem);
}

/* One poll of the KEDA operator (RequestScale). Returns the new count; *acted says whether the
 * operator itself changed the scale target. */
static int keda_poll(const autoscale_policy_t *p, autoscale_history_t *h, int64_t now, int current,
                     int64_t metric, int active, int *acted, char *reason)
{
    *acted = 0;
    if (active && current == 0) { /* scaleFromZero */
        int to = imax(p->min_replicas, 1);
        h->last_active_ms = whole_second(now);
        *acted = 1;
        reasonf(reason, "keda: activation 0->%d (value %" PRId64 " > activation %g)", to, metric,
                p->activation_target);
        return to;
    }
    if (!active && current > 0 && p->min_replicas == 0) { /* scaleToZero */
        /* A nil lastActiveTime (scaled outside KEDA) skips the cooldown, as in KEDA. */
        if (h->last_active_ms == AUTOSCALE_NEVER) {
            *acted = 1;
            reasonf(reason, "cooldown: never active -> 0");
            return 0;
        }
        /* KEDA: lastActiveTime + cooldownPeriod before now. lastActiveTime is whole seconds and
         * a poll runs a moment after the millisecond it stands for here, so the strict test
         * holds from the first poll at or after (truncated last active + cooldown). */
        int64_t idle = now - h->last_active_ms;
        if (h->last_active_ms + p->cooldown_ms <= now) {
            *acted = 1;
            reasonf(reason, "cooldown: inactive for %.0fs -> 0", seconds(idle));
            return 0;
        }
        reasonf(reason,
                "keda: inactive (value %" PRId64 " <= activation %g), cooling down %.0fs of %.0fs",
                metric, p->activation_target, seconds(idle), seconds(p->cooldown_ms));
        return current;
    }
    if (!active && current < p->min_replicas) {
        *acted = 1;
        reasonf(reason, "keda: inactive below minReplicaCount -> %d", p->min_replicas);
        return p->min_replicas;
    }
    if (active) {
        h->last_active_ms = whole_second(now);
        reasonf(reason, "keda: active (value %" PRId64 " > activation %g)", metric,
                p->activation_target);
    } else {
        reasonf(reason, "keda: inactive (value %" PRId64 " <= activation %g), %d replicas", metric,
                p->activation_target, current);
    }
    return current;
}

static int64_t due_at(int64_t last, int64_t period)
{
    return last == AUTOSCALE_NEVER ? AUTOSCALE_NEVER : last + period;
}

static int decide_keda(const autoscale_policy_t *p, const autoscale_metrics_t *m,
                       autoscale_history_t *h, int64_t now, autoscale_decision_t *out)
{
    int current = m->current_replicas;
    int64_t metric = out->metric;
    int poll_due =
        h->last_poll_ms == AUTOSCALE_NEVER || now - h->last_poll_ms >= p->polling_interval_ms;
    int sync_due = h->last_sync_ms == AUTOSCALE_NEVER || now - h->last_sync_ms >= p->sync_period_ms;
    int replicas = current, acted = 0;

    if (poll_due) {
        replicas = keda_poll(p, h, now, current, metric, out->active, &acted, out->reason);
        h->last_poll_ms = now;
    }
    if (sync_due) {
        /* recordInitialRecommendation: at its first sync the HPA records the replica count it
         * reads as a recommendation, so a fresh HPA (or one after a controller restart: start a
         * new history) holds the current count for the scale-down window. */
        if (h->last_sync_ms == AUTOSCALE_NEVER)
            series_put(&h->recommendations, now, current, AUTOSCALE_NEVER);
        /* When the operator changed the scale target in this instant, the HPA's sync saw it
         * mid-change (at 0 it is disabled anyway): the sync is spent without a decision. */
        if (!acted) {
            char hpa_reason[AUTOSCALE_REASON_SIZE];
            replicas = hpa_sync(p, h, now, replicas, metric, hpa_reason);
            /* Say what mattered: the operator's view at 0 replicas or while cooling down with
             * nothing changing, the HPA's otherwise. */
            int keda_says = poll_due && (current == 0 || (!out->active && replicas == current));
            if (!keda_says)
                memcpy(out->reason, hpa_reason, sizeof hpa_reason);
        }
        h->last_sync_ms = now;
    }
    if (!poll_due && !sync_due)
        reasonf(out->reason, "keda: no poll or sync due, %d replicas", current);

    out->desired_replicas = replicas;
    int64_t next_poll = due_at(h->last_poll_ms, p->polling_interval_ms);
    int64_t next_sync = due_at(h->last_sync_ms, p->sync_period_ms);
    out->next_eval_ms = next_poll < next_sync ? next_poll : next_sync;
    return 0;
}

/* ---- local mode ------------------------------------------------------------------------- */

static int decide_local(const autoscale_policy_t *p, const autoscale_metrics_t *m,
                        autoscale_history_t *h, int64_t now, autoscale_decision_t *out)
{
    int current = m->current_replicas;
    int busy = current - m->idle_replicas;
    int64_t metric = out->metric;
    int raw = out->active ? replicas_for(metric, target_milli(p)) : 0;
    int needed = imin(imax(raw, p->min_replicas), p->max_replicas);

    out->desired_replicas = current;
    out->next_eval_ms = AUTOSCALE_NO_DEADLINE;
    if (needed > current) {
        h->surplus_since_ms = AUTOSCALE_NEVER;
        out->desired_replicas = needed;
        reasonf(out->reason, "local: backlog %" PRId64 " needs %d workers, %d->%d", metric, needed,
                current, needed);
        return 0;
    }
    if (needed == current) {
        h->surplus_since_ms = AUTOSCALE_NEVER;
        reasonf(out->reason, "local: backlog %" PRId64 " needs %d workers, have %d", metric, needed,
                current);
        return 0;
    }

    /* A surplus. Only idle workers beyond the need can stop: floor_ is the need or the busy
     * count, whichever is larger. Above max_replicas (the bound was lowered) they stop at once;
     * otherwise once such a stoppable surplus has lasted cooldown_ms without a break. */
    int floor_ = imax(needed, busy);
    if (floor_ >= current) {
        h->surplus_since_ms = AUTOSCALE_NEVER;
        reasonf(out->reason,
                "local: backlog %" PRId64 " needs %d workers, keeping %d (%d busy, none to stop)",
                metric, needed, current, busy);
        return 0;
    }
    if (current > p->max_replicas) {
        out->desired_replicas = floor_;
        out->stop_idle = current - floor_;
        h->surplus_since_ms = AUTOSCALE_NEVER;
        reasonf(out->reason, "local: %d above max %d, stopping %d idle -> %d", current,
                p->max_replicas, out->stop_idle, floor_);
        return 0;
    }
    if (h->surplus_since_ms == AUTOSCALE_NEVER)
        h->surplus_since_ms = now;
    int64_t lasted = now - h->surplus_since_ms;
    if (lasted < p->cooldown_ms) {
        out->next_eval_ms = h->surplus_since_ms + p->cooldown_ms;
        reasonf(out->reason,
                "local: backlog %" PRId64 " needs %d workers, keeping %d (cooldown %.0fs of %.0fs)",
                metric, needed, current, seconds(lasted), seconds(p->cooldown_ms));
        return 0;
    }
    out->desired_replicas = floor_;
    out->stop_idle = current - floor_;
    h->surplus_since_ms = AUTOSCALE_NEVER; /* what is left is needed or busy */
    if (floor_ == 0)
        reasonf(out->reason, "local: no work for %.0fs -> 0", seconds(lasted));
    else
        reasonf(out->reason,
                "local: backlog %" PRId64
                " needs %d workers; after %.0fs stopping %d idle (%d busy) "
                "%d->%d",
                metric, needed, seconds(lasted), out->stop_idle, busy, current, floor_);
    return 0;
}

/* ---- entry point ------------------------------------------------------------------------ */

int autoscale_decide(const autoscale_policy_t *p, const autoscale_metrics_t *m,
                     autoscale_history_t *h, int64_t now_ms, autoscale_decision_t *out)
{
    if (!out)
        return -1;
    memset(out, 0, sizeof *out);
    out->next_eval_ms = AUTOSCALE_NO_DEADLINE;
    if (!m || !h) {
        reasonf(out->reason, "error: no metrics or history");
        return -1;
    }
    out->desired_replicas = m->current_replicas;
    char err[AUTOSCALE_REASON_SIZE - 8];
    if (autoscale_policy_validate(p, err, sizeof err) != 0) {
        reasonf(out->reason, "error: %s", err);
        return -1;
    }
    if (m->queued < 0 || m->running < 0 || m->queued > METRIC_LIMIT || m->running > METRIC_LIMIT) {
        reasonf(out->reason, "error: queued and running must be 0..1e12");
        return -1;
    }
    if (m->current_replicas < 0 || m->current_replicas > AUTOSCALE_REPLICAS_LIMIT) {
        reasonf(out->reason, "error: current_replicas must be 0..%d", AUTOSCALE_REPLICAS_LIMIT);
        return -1;
    }
    if (p->mode == AUTOSCALE_LOCAL &&
        (m->idle_replicas < 0 || m->idle_replicas > m->current_replicas)) {
        reasonf(out->reason, "error: idle_replicas must be 0..current_replicas");
        return -1;
    }
    if (now_ms == AUTOSCALE_NEVER ||
        (h->last_eval_ms != AUTOSCALE_NEVER && now_ms < h->last_eval_ms)) {
        reasonf(out->reason, "error: time went back (now %" PRId64 " ms)", now_ms);
        return -1;
    }
    h->last_eval_ms = now_ms;
    out->metric = autoscale_metric_value(p, m);
    /* isActive: the metric strictly above the activation target (KEDA's scalers). */
    out->active = (double)out->metric > p->activation_target;
    if (p->mode == AUTOSCALE_LOCAL)
        return decide_local(p, m, h, now_ms, out);
    return decide_keda(p, m, h, now_ms, out);
}
