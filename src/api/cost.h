/* cost.h: what the fleet cost (DESIGN section 10): the report behind GET /api/v1/cost and
 * `pingvas cost`, computed from the workers' lifetimes, the completed jobs and a price catalog.
 *
 * Counting (docs/cost.md): a worker is paid from its first report to its end (its last report
 * when it said it ended, else its last report plus STORE_LIFE_GRACE_MS, or now), clipped to the
 * window, at its instance type's price per GPU (spot: the middle of the catalog's range; an
 * unknown capacity type is priced on demand); its paid time splits into loading (start to model
 * loaded), busy (the busy seconds it reported) and idle (the rest). Users are charged their
 * jobs' GPU-seconds at their tier's cost per GPU-second, so the users of a tier share its idle
 * and loading cost in proportion to their work. The lower bound is the work's GPU-seconds at the
 * cheapest spot price per GPU in the catalog. */
#ifndef PINGVAS_COST_H
#define PINGVAS_COST_H

#include <jansson.h>
#include <stdint.h>

#include "core/prices.h"
#include "store/store.h"

typedef enum cost_by {
    COST_BY_NONE = 0,
    COST_BY_USER,
    COST_BY_TIER,
    COST_BY_DAY,
    COST_BY_TYPE
} cost_by_t;

/* "user", "tier", "day", "instance_type" (or NULL / "": none). 0 or -1. */
int cost_parse_by(const char *s, cost_by_t *out);
/* A time for since/until: RFC 3339 UTC ("2026-11-29T10:00:00Z", fractions ignored), a date
 * ("2026-11-29", midnight UTC) or Unix seconds. 0 and ms since the epoch, or -1. */
int cost_parse_time(const char *s, int64_t *ms);

/* Builds the report for [since, until) as of now. Returns a new JSON object (caller decrefs) or
 * NULL when out of memory. */
json_t *cost_report(const worker_life_t *lives, size_t nlives, const usage_row_t *usage,
                    size_t nusage, const price_catalog_t *prices, int64_t since, int64_t until,
                    int64_t now, cost_by_t by);

/* Reads what the report needs from the store and builds it. STORE_OK with *out, or a STORE_*
 * error (out of memory: STORE_ERR). */
int cost_from_store(store_t *st, const price_catalog_t *prices, int64_t since, int64_t until,
                    int64_t now, cost_by_t by, json_t **out);

/* Prints a report as a table. */
void cost_print(FILE *f, const json_t *report);

#endif
