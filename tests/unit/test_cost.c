/* test_cost.c: the cost report as a pure function of worker lifetimes, usage rows and prices:
 * window clipping, the loading / busy / idle split, spot vs on-demand, unknown instance types,
 * the per-user allocation, days, and the time and by= parsers. */
#include "api/cost.h"
#include "t.h"

#define H 3600000LL
#define T0 1767225600000LL /* 2026-01-01T00:00:00Z */

static double num(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
}

static worker_life_t life(const char *id, const char *tier, const char *type, const char *cap,
                          int64_t start, int64_t loaded, int64_t end, int64_t busy)
{
    worker_life_t w;
    memset(&w, 0, sizeof w);
    snprintf(w.worker_id, sizeof w.worker_id, "%s", id);
    snprintf(w.tier, sizeof w.tier, "%s", tier);
    snprintf(w.instance_type, sizeof w.instance_type, "%s", type);
    snprintf(w.capacity_type, sizeof w.capacity_type, "%s", cap);
    w.gpus = 1;
    w.started_at = start;
    w.loaded_at = loaded;
    w.last_seen = end;
    w.ended_at = end;
    w.busy_ms = busy;
    return w;
}

static void test_parsers(void)
{
    int64_t ms;
    CHECK(cost_parse_time("2026-01-01T00:00:00Z", &ms) == 0 && ms == T0);
    CHECK(cost_parse_time("2026-01-01T00:00:01.250Z", &ms) == 0 && ms == T0 + 1000);
    CHECK(cost_parse_time("2026-01-01", &ms) == 0 && ms == T0);
    CHECK(cost_parse_time("1767225600", &ms) == 0 && ms == T0);
    const char *bad[] = {"",   "yesterday",     "2026-01-01T00:00:00+02:00", "2026-13-01x",
                         "-5", "99999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(cost_parse_time(bad[i], &ms) == -1);
    cost_by_t by;
    CHECK(cost_parse_by(NULL, &by) == 0 && by == COST_BY_NONE);
    CHECK(cost_parse_by("instance_type", &by) == 0 && by == COST_BY_TYPE);
    CHECK(cost_parse_by("worker", &by) == -1);
}

static void test_report(void)
{
    price_catalog_t p;
    prices_default(&p);
    worker_life_t w[3] = {
        /* spot, 2 h: 0.5 h loading, 1 h busy, 0.5 h idle */
        life("a", "standard", "g4dn.xlarge", "spot", T0, T0 + H / 2, T0 + 2 * H, H),
        /* on demand, 1 h, half of it inside the window's end */
        life("b", "enterprise", "g5.4xlarge", "on-demand", T0 + 3 * H, T0 + 3 * H, T0 + 4 * H,
             H / 2),
        /* not in the catalog */
        life("c", "standard", "p9.mega", "spot", T0, T0, T0 + H, 0),
    };
    usage_row_t u[3] = {{"alice", "standard", T0 / 86400000, 10, 2400},
                        {"bob", "standard", T0 / 86400000, 5, 1200},
                        {"carol", "enterprise", T0 / 86400000, 2, 1800}};
    json_t *r = cost_report(w, 3, u, 3, &p, T0, T0 + 3 * H + H / 2, T0 + 10 * H, COST_BY_USER);
    CHECK(r != NULL);
    if (!r)
        return;
    double spot = 2 * 0.21, od = 0.5 * 1.624;
    CHECK_NEAR(num(json_object_get(r, "spot"), "usd"), spot, 1e-9);
    CHECK_NEAR(num(json_object_get(r, "spot"), "hours"), 3, 1e-9); /* c is paid time, unpriced */
    CHECK_NEAR(num(json_object_get(r, "on_demand"), "usd"), od, 1e-9);
    CHECK_NEAR(num(r, "total_usd"), spot + od, 1e-9);
    CHECK_NEAR(num(r, "unpriced_hours"), 1, 1e-9);
    CHECK_NEAR(num(r, "loading_usd"), 0.5 * 0.21, 1e-9);
    /* b: half its life in the window, so half its busy time */
    CHECK_NEAR(num(r, "busy_hours"), 1 + 0.25, 1e-9);
    CHECK_NEAR(num(r, "busy_usd"), 0.21 + 0.25 * 1.624, 1e-9);
    CHECK_NEAR(num(r, "idle_usd"), 0.5 * 0.21 + 0.25 * 1.624, 1e-9);
    CHECK_NEAR(num(r, "gpu_utilization"), 1.25 / 3.5, 1e-9); /* 2 + 0.5 + 1 h paid */
    CHECK_INT(num(r, "images"), 17);
    CHECK_NEAR(num(r, "lower_bound_usd"), 5400 * 0.20 / 3600, 1e-9);
    /* The standard tier's cost is shared by its users in proportion to their GPU-seconds. */
    json_t *g = json_object_get(r, "groups");
    CHECK_NEAR(num(json_object_get(g, "alice"), "usd"), spot * 2 / 3, 1e-9);
    CHECK_NEAR(num(json_object_get(g, "bob"), "usd"), spot / 3, 1e-9);
    CHECK_NEAR(num(json_object_get(g, "carol"), "usd"), od, 1e-9);
    CHECK_NEAR(num(json_object_get(g, "alice"), "per_image_usd"), spot * 2 / 3 / 10, 1e-9);
    json_decref(r);

    /* By day: a worker across midnight is split at it. */
    worker_life_t x = life("d", "standard", "g4dn.xlarge", "spot", T0 - H, T0 - H, T0 + H, 0);
    r = cost_report(&x, 1, NULL, 0, &p, T0 - 24 * H, T0 + 24 * H, T0 + 48 * H, COST_BY_DAY);
    g = json_object_get(r, "groups");
    CHECK_NEAR(num(json_object_get(g, "2025-12-31"), "usd"), 0.21, 1e-9);
    CHECK_NEAR(num(json_object_get(g, "2026-01-01"), "usd"), 0.21, 1e-9);
    json_decref(r);

    /* A worker that stopped reporting ends STORE_LIFE_GRACE_MS after its last report; one that
     * is still reporting runs until now. */
    x.ended_at = 0;
    x.last_seen = T0;
    r = cost_report(&x, 1, NULL, 0, &p, T0 - 24 * H, T0 + 24 * H, T0 + 5 * H, COST_BY_NONE);
    CHECK_NEAR(num(json_object_get(r, "spot"), "hours"), 1 + STORE_LIFE_GRACE_MS / (double)H, 1e-9);
    json_decref(r);
    r = cost_report(&x, 1, NULL, 0, &p, T0 - 24 * H, T0 + 24 * H, T0 + 60000, COST_BY_NONE);
    CHECK_NEAR(num(json_object_get(r, "spot"), "hours"), 1 + 60000 / (double)H, 1e-9);
    CHECK(json_object_get(r, "groups") == NULL);
    json_decref(r);
}

#define TESTS(X)                                                                                   \
    X(test_parsers)                                                                                \
    X(test_report)
#include "t_main.h"
