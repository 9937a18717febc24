#include "api/cost.h"

#include "lib/clock.h"
#include "core/job.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_MS 86400000LL

int cost_parse_by(const char *s, cost_by_t *out)
{
    static const char *const names[] = {"", "user", "tier", "day", "instance_type"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s ? s : "", names[i]) == 0) {
            *out = (cost_by_t)i;
            return 0;
        }
    return -1;
}

int cost_parse_time(const char *s, int64_t *ms)
{
    if (!s || !*s)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end) {
        if (*end == '.')
            for (end++; *end >= '0' && *end <= '9'; end++)
                ;
        if (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)
            return -1;
    } else {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
        if (!end || *end) {
            char *e;
            errno = 0;
            long long v = strtoll(s, &e, 10);
            if (errno || *e || v < 0 || v > 253402300799LL) /* up to 9999-12-31 */
                return -1;
            *ms = v * 1000;
            return 0;
        }
    }
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    *ms = (int64_t)t * 1000;
    return 0;
}

/* Money and time of one slice of the fleet. */
typedef struct acc {
    double paid_ms, load_ms, busy_ms, idle_ms;
    double usd, load_usd, busy_usd, idle_usd;
} acc_t;

/* One worker inside the window. */
typedef struct seg {
    int64_t start, end;            /* clipped to the window */
    double paid, load, busy, idle; /* ms */
    double usd_per_ms;             /* 0 when unpriced */
} seg_t;

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* The worker's part of [since, until): 0 and seg, or -1 when it did not run then. */
static int life_segment(const worker_life_t *w, int64_t since, int64_t until, int64_t now, seg_t *g)
{
    int64_t end = w->ended_at ? w->ended_at : min64(now, w->last_seen + STORE_LIFE_GRACE_MS);
    end = max64(end, w->started_at);
    int64_t loaded = w->loaded_at ? min64(w->loaded_at, end) : end;
    g->start = max64(w->started_at, since);
    g->end = min64(end, until);
    if (g->end <= g->start)
        return -1;
    g->paid = (double)(g->end - g->start);
    g->load = (double)max64(0, min64(loaded, g->end) - g->start);
    /* busy_ms covers the whole loaded life: the window gets its share of it. */
    double after = (double)(end - loaded), after_in = g->paid - g->load;
    double busy = after > 0 ? (double)w->busy_ms * after_in / after : 0;
    g->busy = busy < after_in ? busy : after_in;
    g->idle = g->paid - g->load - g->busy;
    return 0;
}

static void acc_add(acc_t *a, const seg_t *g)
{
    a->paid_ms += g->paid;
    a->load_ms += g->load;
    a->busy_ms += g->busy;
    a->idle_ms += g->idle;
    a->usd += g->paid * g->usd_per_ms;
    a->load_usd += g->load * g->usd_per_ms;
    a->busy_usd += g->busy * g->usd_per_ms;
    a->idle_usd += g->idle * g->usd_per_ms;
}

/* $ per ms of one GPU of the worker's instance; 0 when its type is not in the catalog. */
static double usd_per_ms(const worker_life_t *w, const price_catalog_t *prices)
{
    const price_entry_t *e = prices_find(prices, w->instance_type);
    if (!e)
        return 0;
    return prices_gpu_hour(e, strcmp(w->capacity_type, "spot") == 0) / 3600000.0;
}

/* Adds v to groups[key][field] (creating both as needed). */
static void group_add(json_t *groups, const char *key, const char *field, double v)
{
    json_t *g = json_object_get(groups, key);
    if (!g) {
        g = json_object();
        json_object_set_new(groups, key, g);
    }
    json_t *x = json_object_get(g, field);
    json_object_set_new(g, field, json_real((x ? json_real_value(x) : 0) + v));
}

static void day_name(int64_t day, char *buf, size_t size)
{
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d", &tm);
}

/* A worker's cost spread over the UTC days it ran. */
static void by_day_workers(json_t *groups, const seg_t *g)
{
    for (int64_t d = g->start / DAY_MS; d * DAY_MS < g->end; d++) {
        int64_t a = max64(g->start, d * DAY_MS), b = min64(g->end, (d + 1) * DAY_MS);
        char key[16];
        day_name(d, key, sizeof key);
        group_add(groups, key, "usd", (double)(b - a) * g->usd_per_ms);
        group_add(groups, key, "paid_hours", (double)(b - a) / 3600000.0);
    }
}

/* What the report sums up while reading the rows. */
typedef struct sums {
    acc_t all, tier[TIER_COUNT], spot, on_demand;
    double unpriced_ms;
    int64_t images, tier_images[TIER_COUNT];
    double gpu_s, tier_gpu_s[TIER_COUNT];
} sums_t;

/* The tier's index; an unknown name counts as standard. */
static int tier_of(const char *tier)
{
    return tier_index(tier) > 0 ? tier_index(tier) : 0;
}

static void add_workers(sums_t *s, json_t *groups, const worker_life_t *lives, size_t n,
                        const price_catalog_t *prices, int64_t since, int64_t until, int64_t now,
                        cost_by_t by)
{
    for (size_t i = 0; i < n; i++) {
        const worker_life_t *w = &lives[i];
        seg_t g;
        if (life_segment(w, since, until, now, &g) != 0)
            continue;
        g.usd_per_ms = usd_per_ms(w, prices);
        if (g.usd_per_ms == 0)
            s->unpriced_ms += g.paid;
        acc_add(&s->all, &g);
        acc_add(&s->tier[tier_of(w->tier)], &g);
        acc_add(strcmp(w->capacity_type, "spot") == 0 ? &s->spot : &s->on_demand, &g);
        if (by == COST_BY_DAY)
            by_day_workers(groups, &g);
        if (by == COST_BY_TYPE) {
            char key[80];
            snprintf(key, sizeof key, "%s %s", w->instance_type[0] ? w->instance_type : "unknown",
                     w->capacity_type[0] ? w->capacity_type : "unknown");
            group_add(groups, key, "usd", g.paid * g.usd_per_ms);
            group_add(groups, key, "paid_hours", g.paid / 3600000.0);
            group_add(groups, key, "busy_hours", g.busy / 3600000.0);
            group_add(groups, key, "workers", 1);
        }
    }
}

static void add_usage(sums_t *s, json_t *groups, const usage_row_t *usage, size_t n, cost_by_t by)
{
    for (size_t i = 0; i < n; i++) {
        int t = tier_of(usage[i].tier);
        s->images += usage[i].images;
        s->gpu_s += usage[i].gpu_seconds;
        s->tier_images[t] += usage[i].images;
        s->tier_gpu_s[t] += usage[i].gpu_seconds;
    }
    for (size_t i = 0; i < n && (by == COST_BY_USER || by == COST_BY_DAY); i++) {
        const usage_row_t *u = &usage[i];
        int t = tier_of(u->tier);
        char key[USER_NAME_MAX + 16];
        if (by == COST_BY_DAY)
            day_name(u->day, key, sizeof key);
        else
            snprintf(key, sizeof key, "%s", u->user);
        group_add(groups, key, "images", (double)u->images);
        group_add(groups, key, "gpu_seconds", u->gpu_seconds);
        if (by == COST_BY_USER) /* the tier's cost per GPU-second of work */
            group_add(groups, key, "usd",
                      s->tier_gpu_s[t] > 0 ? u->gpu_seconds * s->tier[t].usd / s->tier_gpu_s[t]
                                           : 0);
    }
    for (int t = 0; by == COST_BY_TIER && t < TIER_COUNT; t++) {
        if (s->tier[t].paid_ms == 0 && s->tier_images[t] == 0)
            continue;
        group_add(groups, tier_names[t], "usd", s->tier[t].usd);
        group_add(groups, tier_names[t], "images", (double)s->tier_images[t]);
        group_add(groups, tier_names[t], "gpu_seconds", s->tier_gpu_s[t]);
        group_add(groups, tier_names[t], "paid_hours", s->tier[t].paid_ms / 3600000.0);
        group_add(groups, tier_names[t], "busy_hours", s->tier[t].busy_ms / 3600000.0);
        group_add(groups, tier_names[t], "idle_usd", s->tier[t].idle_usd);
        group_add(groups, tier_names[t], "loading_usd", s->tier[t].load_usd);
    }
}

/* Derived fields of each group: per image and utilization where the inputs are there. */
static void finish_groups(json_t *groups)
{
    const char *key;
    json_t *g;
    json_object_foreach(groups, key, g)
    {
        json_t *usd = json_object_get(g, "usd"), *img = json_object_get(g, "images");
        json_t *paid = json_object_get(g, "paid_hours"), *busy = json_object_get(g, "busy_hours");
        if (!usd)
            json_object_set_new(g, "usd", json_real(0));
        if (usd && img && json_real_value(img) > 0)
            json_object_set_new(g, "per_image_usd",
                                json_real(json_real_value(usd) / json_real_value(img)));
        if (paid && busy && json_real_value(paid) > 0)
            json_object_set_new(g, "gpu_utilization",
                                json_real(json_real_value(busy) / json_real_value(paid)));
        if (img)
            json_object_set_new(g, "images", json_integer((json_int_t)json_real_value(img)));
    }
}

static json_t *capacity_json(const acc_t *a)
{
    return json_pack("{s:f, s:f}", "usd", a->usd, "hours", a->paid_ms / 3600000.0);
}

json_t *cost_report(const worker_life_t *lives, size_t nlives, const usage_row_t *usage,
                    size_t nusage, const price_catalog_t *prices, int64_t since, int64_t until,
                    int64_t now, cost_by_t by)
{
    sums_t s;
    memset(&s, 0, sizeof s);
    json_t *groups = json_object();
    if (!groups)
        return NULL;
    add_workers(&s, groups, lives, nlives, prices, since, until, now, by);
    add_usage(&s, groups, usage, nusage, by);
    finish_groups(groups);
    static const char *const by_names[] = {"", "user", "tier", "day", "instance_type"};
    char from[40], to[40];
    clock_format_rfc3339(since, from, sizeof from);
    clock_format_rfc3339(until, to, sizeof to);
    double lower = s.gpu_s * prices_cheapest_spot_gpu_hour(prices) / 3600.0;
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:f, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, "
        "s:f, s:f, s:f, s:o, s:o, s:f, s:f}",
        "since", from, "until", to, "currency", "USD", "prices", "region", prices->region, "date",
        prices->date, "source", prices->source, "total_usd", s.all.usd, "images",
        (json_int_t)s.images, "per_image_usd", s.images ? s.all.usd / (double)s.images : 0.0,
        "gpu_seconds", s.gpu_s, "paid_gpu_hours", s.all.paid_ms / 3600000.0, "busy_hours",
        s.all.busy_ms / 3600000.0, "loading_hours", s.all.load_ms / 3600000.0, "idle_hours",
        s.all.idle_ms / 3600000.0, "gpu_utilization",
        s.all.paid_ms > 0 ? s.all.busy_ms / s.all.paid_ms : 0.0, "busy_usd", s.all.busy_usd,
        "loading_usd", s.all.load_usd, "idle_usd", s.all.idle_usd, "lower_bound_usd", lower, "spot",
        capacity_json(&s.spot), "on_demand", capacity_json(&s.on_demand), "unpriced_hours",
        s.unpriced_ms / 3600000.0, "lower_bound_ratio", lower > 0 ? s.all.usd / lower : 0.0);
    if (o && by != COST_BY_NONE) {
        json_object_set_new(o, "by", json_string(by_names[by]));
        json_object_set(o, "groups", groups);
    }
    json_decref(groups);
    return o;
}

int cost_from_store(store_t *st, const price_catalog_t *prices, int64_t since, int64_t until,
                    int64_t now, cost_by_t by, json_t **out)
{
    worker_life_t *lives = NULL;
    usage_row_t *usage = NULL;
    size_t nl = 0, nu = 0;
    *out = NULL;
    int rc = store_worker_lives(st, since, until, &lives, &nl);
    if (rc == STORE_OK)
        rc = store_usage(st, since, until, &usage, &nu);
    if (rc == STORE_OK) {
        *out = cost_report(lives, nl, usage, nu, prices, since, until, now, by);
        rc = *out ? STORE_OK : STORE_ERR;
    }
    free(lives);
    free(usage);
    return rc;
}

static double num(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
}

void cost_print(FILE *f, const json_t *r)
{
    const json_t *p = json_object_get(r, "prices");
    const json_t *spot = json_object_get(r, "spot"), *od = json_object_get(r, "on_demand");
    fprintf(f, "cost from %s to %s (prices: %s, %s)\n",
            json_string_value(json_object_get(r, "since")),
            json_string_value(json_object_get(r, "until")),
            json_string_value(json_object_get(p, "region")),
            json_string_value(json_object_get(p, "date")));
    fprintf(f, "  %-22s $%.6f\n", "total", num(r, "total_usd"));
    fprintf(f, "  %-22s %.0f, $%.6f per image\n", "images", num(r, "images"),
            num(r, "per_image_usd"));
    fprintf(f, "  %-22s %.1f %% (busy %.4f h of %.3f GPU-h paid)\n", "GPU utilization",
            100 * num(r, "gpu_utilization"), num(r, "busy_hours"), num(r, "paid_gpu_hours"));
    fprintf(f, "  %-22s $%.6f / $%.6f / $%.6f (%.4f h loading, %.4f h idle)\n",
            "busy / loading / idle", num(r, "busy_usd"), num(r, "loading_usd"), num(r, "idle_usd"),
            num(r, "loading_hours"), num(r, "idle_hours"));
    fprintf(f, "  %-22s $%.6f (%.4f h) / $%.6f (%.4f h)\n", "spot / on-demand", num(spot, "usd"),
            num(spot, "hours"), num(od, "usd"), num(od, "hours"));
    fprintf(f, "  %-22s $%.6f (%.0f GPU-s of work at the cheapest spot price; total is %.2fx)\n",
            "lower bound", num(r, "lower_bound_usd"), num(r, "gpu_seconds"),
            num(r, "lower_bound_ratio"));
    if (num(r, "unpriced_hours") > 0)
        fprintf(f, "  %-22s %.4f h of workers whose instance type is not in the catalog\n",
                "unpriced", num(r, "unpriced_hours"));
    const json_t *groups = json_object_get(r, "groups");
    if (!groups)
        return;
    fprintf(f, "\nby %s:\n  %-28s %10s %12s %12s %14s %8s\n",
            json_string_value(json_object_get(r, "by")), "", "images", "GPU-s", "usd", "usd/image",
            "util");
    const char *key;
    json_t *g;
    json_object_foreach((json_t *)groups, key, g)
    {
        fprintf(f, "  %-28.28s %10.0f %12.1f %12.4f %14.6f", key, num(g, "images"),
                num(g, "gpu_seconds"), num(g, "usd"), num(g, "per_image_usd"));
        if (json_object_get(g, "gpu_utilization"))
            fprintf(f, " %7.1f%%", 100 * num(g, "gpu_utilization"));
        fprintf(f, "\n");
    }
}
