/* simulate.c: `pingvas simulate`: what a fleet would cost and how long jobs would wait, under a
 * policy, on a trace (scale/simulate.h has the model; docs/cost.md the grammar and the
 * assumptions). Also --compare A B and --optimize --p95-wait. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "core/prices.h"
#include "lib/config.h"
#include "scale/simulate.h"

#define EXIT_USAGE 2
#define SPEC_MAX 512

typedef struct sim_opts {
    const char *trace, *arrivals, *policy, *prices, *plot, *write_trace;
    double hours, enterprise_share, interruptions, time_scale;
    int seed, steps, width, height, json, compare, optimize;
    int64_t p95_wait_ms, drain_ms, notice_ms;
    /* policy knobs: text, applied by knob_set (the same code reads --compare specs) */
    const char *knob[12];
    /* fleet */
    const char *gpu_profile, *enterprise_gpu_profile, *instance_type, *enterprise_instance_type;
    const char *boot, *pull, *load, *consolidate_after, *enterprise_consolidate_after;
    int enterprise_max;
} sim_opts_t;

/* The policy knobs: flag / spec name, field. */
typedef enum knob_kind { K_INT, K_DOUBLE, K_MS, K_METRIC } knob_kind_t;
static const struct knob {
    const char *name;
    knob_kind_t kind;
    size_t off;
    const char *help;
} knobs[] = {
    {"target", K_DOUBLE, offsetof(autoscale_policy_t, target),
     "backlog per worker (KEDA targetValue / listLength) [5]"},
    {"activation", K_DOUBLE, offsetof(autoscale_policy_t, activation_target),
     "active above this backlog (activationTargetValue) [0]"},
    {"min", K_INT, offsetof(autoscale_policy_t, min_replicas), "minReplicaCount [0]"},
    {"max", K_INT, offsetof(autoscale_policy_t, max_replicas), "maxReplicaCount [20]"},
    {"polling", K_MS, offsetof(autoscale_policy_t, polling_interval_ms),
     "KEDA pollingInterval [30s]"},
    {"cooldown", K_MS, offsetof(autoscale_policy_t, cooldown_ms),
     "KEDA cooldownPeriod [300s]; local: how long a surplus lasts [30s]"},
    {"sync", K_MS, offsetof(autoscale_policy_t, sync_period_ms), "HPA sync period [15s]"},
    {"tolerance", K_DOUBLE, offsetof(autoscale_policy_t, tolerance), "HPA tolerance [0.1]"},
    {"stabilization", K_MS, offsetof(autoscale_policy_t, downscale_stabilization_ms),
     "HPA downscale stabilization [300s]"},
    {"metric", K_METRIC, offsetof(autoscale_policy_t, metric),
     "backlog (queued + running) or queued (the seed's list length) [backlog]"},
};
#define NKNOBS (sizeof knobs / sizeof knobs[0])

/* Sets one knob of p from text. 0, or -1 with a message. */
static int knob_set(autoscale_policy_t *p, const char *name, const char *v, char *err,
                    size_t errlen)
{
    for (size_t k = 0; k < NKNOBS; k++) {
        if (strcmp(knobs[k].name, name) != 0)
            continue;
        char *f = (char *)p + knobs[k].off, *end;
        errno = 0;
        double d = strtod(v, &end);
        int ok = !errno && end != v && !*end && isfinite(d);
        int64_t ms;
        switch (knobs[k].kind) {
        case K_INT:
            ok = ok && d == floor(d) && d >= 0 && d <= AUTOSCALE_REPLICAS_LIMIT;
            if (ok)
                *(int *)f = (int)d;
            break;
        case K_DOUBLE:
            ok = ok && d >= 0 && d <= 1e6;
            if (ok)
                *(double *)f = d;
            break;
        case K_MS:
            ok = config_parse_duration(v, &ms) == 0;
            if (ok)
                *(int64_t *)f = ms;
            break;
        case K_METRIC:
            ok = strcmp(v, "backlog") == 0 || strcmp(v, "queued") == 0;
            if (ok)
                *(autoscale_metric_t *)f =
                    v[0] == 'q' ? AUTOSCALE_METRIC_QUEUED : AUTOSCALE_METRIC_QUEUED_RUNNING;
            break;
        }
        if (ok)
            return 0;
        snprintf(err, errlen, "%s: bad value '%s' (%s)", name, v, knobs[k].help);
        return -1;
    }
    snprintf(err, errlen, "unknown policy knob '%s'", name);
    return -1;
}

/* Parses "keda|local[,knob=value...]" into a policy. 0 or -1 with err. */
static int policy_spec(const char *spec, autoscale_policy_t *p, char *err, size_t errlen)
{
    char buf[SPEC_MAX];
    if (strlen(spec) >= sizeof buf) {
        snprintf(err, errlen, "policy spec longer than %d bytes", SPEC_MAX - 1);
        return -1;
    }
    memcpy(buf, spec, strlen(spec) + 1);
    char *rest = strchr(buf, ',');
    if (rest)
        *rest++ = '\0';
    if (strcmp(buf, "keda") != 0 && strcmp(buf, "local") != 0) {
        snprintf(err, errlen, "policy '%s': expected keda or local, then ,knob=value...", buf);
        return -1;
    }
    *p = autoscale_policy_defaults(buf[0] == 'k' ? AUTOSCALE_KEDA : AUTOSCALE_LOCAL);
    while (rest && *rest) {
        char *item = rest, *eq;
        rest = strchr(rest, ',');
        if (rest)
            *rest++ = '\0';
        eq = strchr(item, '=');
        if (!eq) {
            snprintf(err, errlen, "policy '%s': '%s' is not knob=value", spec, item);
            return -1;
        }
        *eq = '\0';
        if (knob_set(p, item, eq + 1, err, errlen) != 0)
            return -1;
    }
    return autoscale_policy_validate(p, err, errlen);
}

#define SO(f) offsetof(sim_opts_t, f)
#define KNOB_OPT(i, flag)                                                                          \
    {                                                                                              \
        flag, NULL, OPT_STR, NULL, 0, 0, SO(knob[i]), NULL                                         \
    }

static opt_t sim_opts[] = {
    {"trace", NULL, OPT_STR, NULL, 0, 0, SO(trace),
     "CSV of arrivals: time_s,tier,width,height,steps"},
    {"arrivals", NULL, OPT_STR, NULL, 0, 0, SO(arrivals),
     "poisson:RATE | burst:BASE,PEAK,EVERY,LENGTH | diurnal:MEAN,AMPLITUDE[,PEAK_HOUR] (jobs/s)"},
    {"hours", NULL, OPT_DOUBLE, "24", 0.001, SIM_MAX_HOURS, SO(hours), "simulated horizon"},
    {"seed", NULL, OPT_INT, "1", 0, 2147483647, SO(seed), "random seed (arrivals and fleet)"},
    {"steps", NULL, OPT_INT, "20", 1, 150, SO(steps), "generated jobs: steps"},
    {"width", NULL, OPT_INT, "512", 64, 2048, SO(width), "generated jobs: width"},
    {"height", NULL, OPT_INT, "512", 64, 2048, SO(height), "generated jobs: height"},
    {"enterprise-share", NULL, OPT_DOUBLE, "0", 0, 1, SO(enterprise_share),
     "generated jobs: fraction in the enterprise tier"},
    {"write-trace", NULL, OPT_STR, NULL, 0, 0, SO(write_trace), "also write the arrivals as CSV"},
    {"policy", NULL, OPT_STR, "keda", 0, 0, SO(policy),
     "keda (the seed's KEDA + HPA settings) or local (pingvas up's defaults)"},
    KNOB_OPT(0, "target"),
    KNOB_OPT(1, "activation"),
    KNOB_OPT(2, "min"),
    KNOB_OPT(3, "max"),
    KNOB_OPT(4, "polling"),
    KNOB_OPT(5, "cooldown"),
    KNOB_OPT(6, "sync"),
    KNOB_OPT(7, "tolerance"),
    KNOB_OPT(8, "stabilization"),
    KNOB_OPT(9, "metric"),
    {"enterprise-max", NULL, OPT_INT, "5", 0, AUTOSCALE_REPLICAS_LIMIT, SO(enterprise_max),
     "maxReplicaCount of the enterprise tier (on-demand pool)"},
    {"gpu-profile", NULL, OPT_STR, "t4", 0, 0, SO(gpu_profile), "standard tier GPU profile"},
    {"enterprise-gpu-profile", NULL, OPT_STR, "a10g", 0, 0, SO(enterprise_gpu_profile),
     "enterprise tier GPU profile"},
    {"instance-type", NULL, OPT_STR, "g4dn.xlarge", 0, 0, SO(instance_type),
     "standard tier instance (spot price from the catalog)"},
    {"enterprise-instance-type", NULL, OPT_STR, "g5.4xlarge", 0, 0, SO(enterprise_instance_type),
     "enterprise tier instance (on-demand price)"},
    {"boot", NULL, OPT_STR, "45s-90s", 0, 0, SO(boot),
     "node launch to Ready: MIN-MAX or one value"},
    {"pull", NULL, OPT_STR, "20s", 0, 0, SO(pull), "image pull on a new node"},
    {"load", NULL, OPT_STR, NULL, 0, 0, SO(load), "model load [the GPU profile's]"},
    {"time-scale", NULL, OPT_DOUBLE, "1", 0.001, 1000, SO(time_scale),
     "multiplies job and profile model-load times (as pingvas up --time-scale)"},
    {"consolidate-after", NULL, OPT_STR, "30s", 0, 0, SO(consolidate_after),
     "Karpenter consolidateAfter, spot pool"},
    {"enterprise-consolidate-after", NULL, OPT_STR, "5m", 0, 0, SO(enterprise_consolidate_after),
     "Karpenter consolidateAfter, on-demand pool"},
    {"interruptions", NULL, OPT_DOUBLE, "0.01", 0, 100, SO(interruptions),
     "spot interruptions per node-hour"},
    {"notice", NULL, OPT_DURATION, "2m", 0, 3600000, SO(notice_ms), "spot interruption notice"},
    {"drain", NULL, OPT_DURATION, "90s", 0, 3600000, SO(drain_ms), "worker drain window"},
    {"prices", "PINGVAS_PRICES", OPT_STR, NULL, 0, 0, SO(prices),
     "price catalog file [the shipped us-east-1 catalog]"},
    {"json", NULL, OPT_BOOL, NULL, 0, 0, SO(json), "print JSON"},
    {"plot", NULL, OPT_STR, NULL, 0, 0, SO(plot), "write an SVG timeline to FILE"},
    {"compare", NULL, OPT_BOOL, NULL, 0, 0, SO(compare),
     "run the two policies A B given as arguments (keda|local[,knob=value...])"},
    {"optimize", NULL, OPT_BOOL, NULL, 0, 0, SO(optimize),
     "search target, cooldown, polling and min for the cheapest policy meeting --p95-wait"},
    {"p95-wait", NULL, OPT_DURATION, "30s", 0, 86400000, SO(p95_wait_ms), "wait target"},
};
#define NSIMOPTS (sizeof sim_opts / sizeof sim_opts[0])

/* Fills the knob rows' help from the knob table (one text for flag and spec). */
static void knob_help(void)
{
    for (size_t i = 0; i < NSIMOPTS; i++)
        for (size_t k = 0; k < NKNOBS; k++)
            if (strcmp(sim_opts[i].name, knobs[k].name) == 0)
                sim_opts[i].help = knobs[k].help;
}

static int seconds_of(const char *name, const char *v, double *out, char *err, size_t errlen)
{
    int64_t ms;
    if (config_parse_duration(v, &ms) != 0 || ms < 0) {
        snprintf(err, errlen, "--%s: bad duration '%s' (e.g. 20s, 5m)", name, v);
        return -1;
    }
    *out = (double)ms / 1000.0;
    return 0;
}

/* --boot MIN-MAX or one value. */
static int boot_range(const char *v, sim_pool_t *p, char *err, size_t errlen)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", v);
    char *dash = strchr(buf, '-');
    if (dash)
        *dash = '\0';
    if (seconds_of("boot", buf, &p->boot_min_s, err, errlen) != 0 ||
        seconds_of("boot", dash ? dash + 1 : buf, &p->boot_max_s, err, errlen) != 0)
        return -1;
    if (p->boot_max_s < p->boot_min_s) {
        snprintf(err, errlen, "--boot %s: MIN must not exceed MAX", v);
        return -1;
    }
    return 0;
}

/* The policy of the flags: --policy, then every knob flag given. */
static int flag_policy(const sim_opts_t *o, autoscale_policy_t *p, char *err, size_t errlen)
{
    if (policy_spec(o->policy, p, err, errlen) != 0)
        return -1;
    for (size_t k = 0; k < NKNOBS; k++)
        if (o->knob[k] && knob_set(p, knobs[k].name, o->knob[k], err, errlen) != 0)
            return -1;
    return autoscale_policy_validate(p, err, errlen);
}

/* Applies a policy to both tiers (the enterprise tier keeps its own maximum). */
static void set_policy(sim_config_t *c, const autoscale_policy_t *p, int enterprise_max)
{
    c->pool[0].policy = *p;
    c->pool[1].policy = *p;
    c->pool[1].policy.max_replicas = enterprise_max;
    if (c->pool[1].policy.min_replicas > enterprise_max)
        c->pool[1].policy.min_replicas = enterprise_max;
}

/* Prices from the catalog: the standard pool is spot, the enterprise pool on demand. */
static int fleet_prices(const sim_opts_t *o, sim_config_t *c, char *err, size_t errlen)
{
    price_catalog_t cat;
    if (o->prices) {
        if (prices_load(o->prices, &cat, err, errlen) != 0)
            return -1;
    } else {
        prices_default(&cat);
    }
    const char *types[2] = {o->instance_type, o->enterprise_instance_type};
    for (int t = 0; t < SIM_TIERS; t++) {
        const price_entry_t *e = prices_find(&cat, types[t]);
        if (!e) {
            snprintf(err, errlen, "instance type %s is not in the price catalog (%s)", types[t],
                     o->prices ? o->prices : "shipped default");
            return -1;
        }
        c->pool[t].price_gpu_hour = prices_gpu_hour(e, c->pool[t].spot);
    }
    c->lower_bound_gpu_hour = prices_cheapest_spot_gpu_hour(&cat);
    return 0;
}

/* The configuration of the flags, with the flags' policy. */
static int build_config(const sim_opts_t *o, sim_config_t *c, char *err, size_t errlen)
{
    autoscale_policy_t p;
    if (flag_policy(o, &p, err, errlen) != 0)
        return -1;
    sim_config_defaults(c, p.mode);
    set_policy(c, &p, o->enterprise_max);
    c->hours = o->hours;
    c->seed = (uint64_t)o->seed;
    c->time_scale = o->time_scale;
    c->drain_s = (double)o->drain_ms / 1000.0;
    c->notice_s = (double)o->notice_ms / 1000.0;
    c->pool[0].gpu_profile = o->gpu_profile;
    c->pool[1].gpu_profile = o->enterprise_gpu_profile;
    c->pool[0].interruptions_per_node_hour = o->interruptions;
    for (int t = 0; t < SIM_TIERS; t++) {
        sim_pool_t *pl = &c->pool[t];
        if (boot_range(o->boot, pl, err, errlen) != 0 ||
            seconds_of("pull", o->pull, &pl->pull_s, err, errlen) != 0 ||
            (o->load && seconds_of("load", o->load, &pl->load_s, err, errlen) != 0))
            return -1;
    }
    if (seconds_of("consolidate-after", o->consolidate_after, &c->pool[0].consolidate_s, err,
                   errlen) != 0 ||
        seconds_of("enterprise-consolidate-after", o->enterprise_consolidate_after,
                   &c->pool[1].consolidate_s, err, errlen) != 0)
        return -1;
    return fleet_prices(o, c, err, errlen);
}

static int load_jobs(const sim_opts_t *o, sim_jobs_t *jobs, char *err, size_t errlen)
{
    if (!o->trace == !o->arrivals) {
        snprintf(err, errlen, "give exactly one of --trace FILE or --arrivals SPEC");
        return -1;
    }
    if (o->trace)
        return sim_trace_load(o->trace, jobs, err, errlen);
    sim_arrivals_t a;
    if (o->width % 8 || o->height % 8) {
        snprintf(err, errlen, "--width and --height must be multiples of 8");
        return -1;
    }
    sim_shape_t shape = {o->width, o->height, o->steps, o->enterprise_share};
    if (sim_arrivals_parse(o->arrivals, &a, err, errlen) != 0 ||
        sim_arrivals_generate(&a, &shape, o->hours, (uint64_t)o->seed, jobs, err, errlen) != 0)
        return -1;
    if (o->write_trace && sim_trace_write(o->write_trace, jobs) != 0) {
        snprintf(err, errlen, "--write-trace %s: %s", o->write_trace, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---------- output ---------- */

typedef enum col_kind { C_I64, C_INT, C_DBL } col_kind_t;
static const struct col {
    const char *key;
    col_kind_t kind;
    size_t off;
    int decimals;
} cols[] = {
    {"jobs", C_I64, offsetof(sim_result_t, jobs), 0},
    {"completed", C_I64, offsetof(sim_result_t, completed), 0},
    {"cost_usd", C_DBL, offsetof(sim_result_t, cost_usd), 2},
    {"cost_per_1000_images", C_DBL, offsetof(sim_result_t, cost_per_1000_images), 4},
    {"lower_bound_usd", C_DBL, offsetof(sim_result_t, lower_bound_usd), 2},
    {"gpu_utilization", C_DBL, offsetof(sim_result_t, gpu_utilization), 4},
    {"node_hours_spot", C_DBL, offsetof(sim_result_t, node_hours_spot), 2},
    {"node_hours_on_demand", C_DBL, offsetof(sim_result_t, node_hours_on_demand), 2},
    {"wait_p50_s", C_DBL, offsetof(sim_result_t, wait_p50_s), 2},
    {"wait_p95_s", C_DBL, offsetof(sim_result_t, wait_p95_s), 2},
    {"wait_p99_s", C_DBL, offsetof(sim_result_t, wait_p99_s), 2},
    {"interruptions", C_I64, offsetof(sim_result_t, interruptions), 0},
    {"jobs_restarted", C_I64, offsetof(sim_result_t, jobs_restarted), 0},
    {"max_workers", C_INT, offsetof(sim_result_t, max_workers), 0},
};
#define NCOLS (sizeof cols / sizeof cols[0])

static void print_value(const sim_result_t *r, const struct col *c, int width)
{
    const char *p = (const char *)r + c->off;
    if (c->kind == C_I64)
        printf("%*lld", width, (long long)*(const int64_t *)p);
    else if (c->kind == C_INT)
        printf("%*d", width, *(const int *)p);
    else if (width == 0) /* JSON: every digit that matters */
        printf("%.10g", *(const double *)p);
    else
        printf("%*.*f", width, c->decimals, *(const double *)p);
}

/* One JSON object with exactly the report keys. */
static void print_json_object(const sim_result_t *r)
{
    printf("{");
    for (size_t i = 0; i < NCOLS; i++) {
        printf("%s\"%s\":", i ? "," : "", cols[i].key);
        print_value(r, &cols[i], 0);
    }
    printf("}");
}

/* A table of n results side by side under the given headings. */
static void print_table(const sim_result_t *r, const char *const *names, int n)
{
    printf("%-22s", "");
    for (int k = 0; k < n; k++)
        printf(" %24.24s", names[k]);
    printf("\n");
    for (size_t i = 0; i < NCOLS; i++) {
        printf("%-22s", cols[i].key);
        for (int k = 0; k < n; k++) {
            printf(" ");
            print_value(&r[k], &cols[i], 24);
        }
        printf("\n");
    }
}

static double point_value(const sim_point_t *p, int panel)
{
    return panel == 0 ? p->backlog : panel == 1 ? p->workers : panel == 2 ? p->nodes : p->cost_usd;
}

static void svg_series(FILE *f, const sim_result_t *r, int panel, const char *label,
                       const char *color)
{
    double top = 1;
    for (size_t i = 0; i < r->npoints; i++) {
        const sim_point_t *p = &r->timeline[i];
        double v = point_value(p, panel);
        if (v > top)
            top = v;
    }
    double y0 = 20 + panel * 150, tend = r->npoints ? r->timeline[r->npoints - 1].t_s : 1;
    fprintf(f, "<text x=\"10\" y=\"%.0f\" font-size=\"13\">%s (max %.2f)</text>\n", y0 + 12, label,
            top);
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1\" points=\"", color);
    for (size_t i = 0; i < r->npoints; i++) {
        const sim_point_t *p = &r->timeline[i];
        double v = point_value(p, panel);
        fprintf(f, "%.1f,%.1f ", 60 + 880 * p->t_s / (tend > 0 ? tend : 1),
                y0 + 140 - 120 * v / top);
    }
    fprintf(f, "\"/>\n<line x1=\"60\" y1=\"%.0f\" x2=\"940\" y2=\"%.0f\" stroke=\"#999\"/>\n",
            y0 + 140, y0 + 140);
}

/* The timeline as an SVG: backlog, workers, nodes and cumulative cost, one panel each. */
static int write_svg(const char *path, const sim_result_t *r, const char *title)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"640\" "
            "font-family=\"sans-serif\">\n<rect width=\"960\" height=\"640\" fill=\"white\"/>\n"
            "<title>pingvas simulate: %s</title>\n",
            title);
    svg_series(f, r, 0, "backlog (queued + running)", "#c0392b");
    svg_series(f, r, 1, "workers", "#2980b9");
    svg_series(f, r, 2, "nodes", "#27ae60");
    svg_series(f, r, 3, "cumulative cost, $", "#8e44ad");
    fprintf(f,
            "<text x=\"60\" y=\"632\" font-size=\"12\">0 h</text><text x=\"900\" y=\"632\" "
            "font-size=\"12\">%.1f h</text>\n</svg>\n",
            r->npoints ? r->timeline[r->npoints - 1].t_s / 3600 : 0);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---------- modes ---------- */

static int run_one(const sim_config_t *c, const sim_jobs_t *jobs, sim_result_t *r)
{
    char err[512];
    if (sim_run(c, jobs, r, err, sizeof err) != 0) {
        fprintf(stderr, "pingvas simulate: %s\n", err);
        return -1;
    }
    return 0;
}

static void print_flags(const autoscale_policy_t *p)
{
    printf("  flags: --policy %s --target %g --min %d --max %d --cooldown %llds",
           p->mode == AUTOSCALE_KEDA ? "keda" : "local", p->target, p->min_replicas,
           p->max_replicas, (long long)(p->cooldown_ms / 1000));
    if (p->mode == AUTOSCALE_KEDA)
        printf(" --polling %llds", (long long)(p->polling_interval_ms / 1000));
    printf("\n");
    if (p->mode != AUTOSCALE_KEDA)
        return;
    printf("  KEDA ScaledObject:\n"
           "    spec:\n"
           "      pollingInterval: %lld\n"
           "      cooldownPeriod: %lld\n"
           "      minReplicaCount: %d\n"
           "      maxReplicaCount: %d\n"
           "      triggers:\n"
           "        - type: metrics-api\n"
           "          metadata:\n"
           "            targetValue: \"%g\"\n"
           "            activationTargetValue: \"%g\"\n",
           (long long)(p->polling_interval_ms / 1000), (long long)(p->cooldown_ms / 1000),
           p->min_replicas, p->max_replicas, p->target, p->activation_target);
}

/* Searches target x cooldown x polling x min (polling only in keda mode) for the cheapest
 * policy whose p95 wait meets the target; ties go to the lower p95. */
static int optimize(sim_config_t *c, const sim_jobs_t *jobs, int64_t p95_ms, int json)
{
    static const double targets[] = {1, 2, 3, 4, 5, 8, 10};
    static const int64_t cooldowns[] = {15000, 30000, 60000, 120000, 300000};
    static const int64_t pollings[] = {5000, 10000, 15000, 30000};
    static const int mins[] = {0, 1, 2, 3};
    autoscale_policy_t base = c->pool[0].policy, best = base;
    int ent_max = c->pool[1].policy.max_replicas, npoll = base.mode == AUTOSCALE_KEDA ? 4 : 1;
    sim_result_t bestr = {0}, r;
    int found = 0, runs = 0;
    for (size_t a = 0; a < sizeof targets / sizeof targets[0]; a++)
        for (size_t b = 0; b < sizeof cooldowns / sizeof cooldowns[0]; b++)
            for (int d = 0; d < npoll; d++)
                for (size_t m = 0; m < sizeof mins / sizeof mins[0]; m++) {
                    autoscale_policy_t p = base;
                    p.target = targets[a];
                    p.cooldown_ms = cooldowns[b];
                    if (npoll > 1)
                        p.polling_interval_ms = pollings[d];
                    p.min_replicas = mins[m] < p.max_replicas ? mins[m] : p.max_replicas;
                    set_policy(c, &p, ent_max);
                    if (run_one(c, jobs, &r) != 0)
                        return 1;
                    runs++;
                    int ok = r.wait_p95_s * 1000 <= (double)p95_ms && r.completed == r.jobs;
                    if (ok && (!found || r.cost_usd < bestr.cost_usd - 1e-9 ||
                               (fabs(r.cost_usd - bestr.cost_usd) <= 1e-9 &&
                                r.wait_p95_s < bestr.wait_p95_s))) {
                        found = 1;
                        best = p;
                        bestr = r;
                    }
                }
    if (!found) {
        fprintf(stderr, "pingvas simulate: no setting of %d tried meets p95 wait <= %.1f s\n", runs,
                (double)p95_ms / 1000);
        return 1;
    }
    if (json) {
        print_json_object(&bestr);
        printf("\n");
        return 0;
    }
    const char *name = "optimized";
    print_table(&bestr, &name, 1);
    printf("\ncheapest of %d settings with p95 wait <= %.1f s:\n", runs, (double)p95_ms / 1000);
    print_flags(&best);
    return 0;
}

static int compare(sim_config_t *c, const sim_jobs_t *jobs, char **specs, int ent_max, int json)
{
    sim_result_t r[2];
    for (int k = 0; k < 2; k++) {
        autoscale_policy_t p;
        char err[512];
        if (policy_spec(specs[k], &p, err, sizeof err) != 0) {
            fprintf(stderr, "pingvas simulate: --compare: %s\n", err);
            return EXIT_USAGE;
        }
        set_policy(c, &p, ent_max);
        if (run_one(c, jobs, &r[k]) != 0)
            return 1;
    }
    if (json) {
        printf("{\"%s\":", specs[0]);
        print_json_object(&r[0]);
        printf(",\"%s\":", specs[1]);
        print_json_object(&r[1]);
        printf("}\n");
    } else {
        print_table(r, (const char *const *)specs, 2);
    }
    return 0;
}

static int single(sim_config_t *c, const sim_jobs_t *jobs, const sim_opts_t *o)
{
    sim_result_t r;
    if (o->plot)
        c->plot_step_s = c->hours * 3600.0 / 1000.0;
    if (run_one(c, jobs, &r) != 0)
        return 1;
    int status = 0;
    if (o->plot && write_svg(o->plot, &r, o->policy) != 0) {
        fprintf(stderr, "pingvas simulate: --plot %s: %s\n", o->plot, strerror(errno));
        status = 1;
    }
    if (o->json) {
        print_json_object(&r);
        printf("\n");
    } else {
        const char *name = o->policy;
        print_table(&r, &name, 1);
        printf("(%.0f worker-seconds; simulated %.2f h)\n", r.worker_seconds, r.end_s / 3600);
    }
    sim_result_free(&r);
    return status;
}

int cmd_simulate(int argc, char **argv)
{
    sim_opts_t o;
    memset(&o, 0, sizeof o);
    char err[512], *pos[3];
    int npos = 0;
    knob_help();
    int rc = config_parse(sim_opts, NSIMOPTS, &o, argc, argv, 2, pos, 3, &npos, err, sizeof err);
    if (rc == 1) {
        printf("usage: pingvas simulate (--trace FILE | --arrivals SPEC) [options] [--compare A B]"
               "\n\nSimulates a GPU fleet (nodes booting, image pulls, model loads, spot "
               "interruptions, Karpenter consolidation) scaled by pingvas's autoscaling policy "
               "engine, and reports cost, waits and utilization. Deterministic for a --seed. A "
               "policy for --compare is keda|local[,knob=value...], e.g. "
               "keda,target=2,cooldown=60s. docs/cost.md explains the model.\n\n");
        config_usage(stdout, sim_opts, NSIMOPTS);
        return 0;
    }
    sim_config_t c;
    sim_jobs_t jobs = {0};
    if (rc == 0 && npos != (o.compare ? 2 : 0)) {
        snprintf(err, sizeof err, "%s",
                 o.compare ? "--compare needs two policies A B"
                           : "unexpected argument (policies go with "
                             "--compare)");
        rc = -1;
    }
    if (rc == 0 && o.compare && o.optimize) {
        snprintf(err, sizeof err, "--compare and --optimize do not go together");
        rc = -1;
    }
    if (rc == 0 &&
        (build_config(&o, &c, err, sizeof err) != 0 || load_jobs(&o, &jobs, err, sizeof err) != 0))
        rc = -1;
    if (rc != 0) {
        fprintf(stderr, "pingvas simulate: %s\n", err);
        sim_jobs_free(&jobs);
        return EXIT_USAGE;
    }
    int status = o.compare    ? compare(&c, &jobs, pos, o.enterprise_max, o.json)
                 : o.optimize ? optimize(&c, &jobs, o.p95_wait_ms, o.json)
                              : single(&c, &jobs, &o);
    sim_jobs_free(&jobs);
    return status;
}
