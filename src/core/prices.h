/* prices.h: the price catalog: what one GPU instance costs an hour, on demand and on spot.
 *
 * A catalog is text, one line per fact, '#' starts a comment:
 *
 *   region us-east-1
 *   date 2026-11-29
 *   source AWS EC2 On-Demand pricing page and Spot Instance Advisor (...)
 *   # instance_type  gpus  on_demand_usd_h  spot_low_usd_h  spot_high_usd_h
 *   g4dn.xlarge      1     0.526            0.20            0.22
 *
 * The shipped default (prices_default) is such a text for us-east-1, parsed by the same code as
 * `--prices FILE`. A spot hour is priced at the middle of its range; the lower bound of a
 * report or a simulation uses the cheapest spot_low per GPU in the catalog. */
#ifndef PINGVAS_PRICES_H
#define PINGVAS_PRICES_H

#include <stddef.h>

#define PRICES_MAX 64       /* instance types in one catalog */
#define PRICES_NAME_MAX 48  /* bytes of an instance type name, NUL included */
#define PRICES_TEXT_MAX 256 /* bytes of region, date and source, NUL included */

typedef struct price_entry {
    char instance_type[PRICES_NAME_MAX];
    int gpus;         /* GPUs on the instance, >= 1 */
    double on_demand; /* $/h */
    double spot_low;  /* $/h */
    double spot_high; /* $/h, >= spot_low */
} price_entry_t;

typedef struct price_catalog {
    char region[PRICES_TEXT_MAX];
    char date[PRICES_TEXT_MAX];
    char source[PRICES_TEXT_MAX];
    int n;
    price_entry_t e[PRICES_MAX];
} price_catalog_t;

/* The text of the shipped default catalog (static). */
const char *prices_default_text(void);
/* Fills c with the shipped default. Never fails. */
void prices_default(price_catalog_t *c);
/* Parses a catalog text (len bytes). 0, or -1 with "line N: ..." in err. */
int prices_parse(const char *text, size_t len, price_catalog_t *c, char *err, size_t errlen);
/* Reads and parses a catalog file (at most 256 KiB). 0, or -1 with the path in err. */
int prices_load(const char *path, price_catalog_t *c, char *err, size_t errlen);
/* The entry for an instance type, or NULL. */
const price_entry_t *prices_find(const price_catalog_t *c, const char *instance_type);
/* $ per GPU-hour: on demand, or the middle of the spot range when spot is nonzero. */
double prices_gpu_hour(const price_entry_t *e, int spot);
/* The cheapest spot_low per GPU-hour in the catalog (0 for an empty catalog). */
double prices_cheapest_spot_gpu_hour(const price_catalog_t *c);

#endif
