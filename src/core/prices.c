#include "core/prices.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRICES_FILE_MAX (256 * 1024)

/* Figures as recorded in issue 13 from AWS's public pages (Linux, us-east-1). Spot prices move
 * hourly: the range is what the Spot pricing history showed around that date. */
static const char default_text[] =
    "region us-east-1\n"
    "date 2026-11-29\n"
    "source AWS EC2 On-Demand pricing and Spot pricing history, Linux, us-east-1 (figures of "
    "pingvas issue 13)\n"
    "# instance_type  gpus  on_demand_usd_h  spot_low_usd_h  spot_high_usd_h\n"
    "g4dn.xlarge  1  0.526  0.20  0.22\n"
    "g5.xlarge    1  1.006  0.43  0.45\n"
    "g5.2xlarge   1  1.212  0.47  0.59\n"
    "g5.4xlarge   1  1.624  0.64  0.71\n"
    "g5.8xlarge   1  2.448  0.84  0.96\n";

const char *prices_default_text(void)
{
    return default_text;
}

void prices_default(price_catalog_t *c)
{
    char err[16];
    prices_parse(default_text, sizeof default_text - 1, c, err, sizeof err);
}

/* Parses a price in $/h: a finite number 0 .. 10000. */
static int parse_price(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 10000)
        return -1;
    *out = v;
    return 0;
}

/* One "TYPE GPUS OD SPOT_LOW SPOT_HIGH" line (fields already split). */
static int parse_entry(char **f, int nf, price_catalog_t *c, char *err, size_t errlen, int line)
{
    price_entry_t e;
    memset(&e, 0, sizeof e);
    char *end;
    long g = nf == 5 ? strtol(f[1], &end, 10) : 0;
    if (nf != 5 || *end || g < 1 || g > 64) {
        snprintf(err, errlen,
                 "line %d: expected 'instance_type gpus on_demand spot_low spot_high' with "
                 "gpus 1..64",
                 line);
        return -1;
    }
    if (strlen(f[0]) >= sizeof e.instance_type || parse_price(f[2], &e.on_demand) ||
        parse_price(f[3], &e.spot_low) || parse_price(f[4], &e.spot_high) ||
        e.spot_high < e.spot_low) {
        snprintf(err, errlen,
                 "line %d: bad price for %s (numbers 0..10000 $/h, spot_low <= spot_high)", line,
                 f[0]);
        return -1;
    }
    if (prices_find(c, f[0]) || c->n >= PRICES_MAX) {
        snprintf(err, errlen, "line %d: %s listed twice or more than %d types", line, f[0],
                 PRICES_MAX);
        return -1;
    }
    memcpy(e.instance_type, f[0], strlen(f[0]) + 1);
    e.gpus = (int)g;
    c->e[c->n++] = e;
    return 0;
}

/* One line (NUL-terminated, modifiable). */
static int parse_line(char *s, price_catalog_t *c, char *err, size_t errlen, int line)
{
    char *hash = strchr(s, '#');
    if (hash)
        *hash = '\0';
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return 0;
    const char *keys[] = {"region", "date", "source"};
    char *dst[] = {c->region, c->date, c->source};
    for (int k = 0; k < 3; k++) {
        size_t kl = strlen(keys[k]);
        if (strncmp(s, keys[k], kl) == 0 && isspace((unsigned char)s[kl])) {
            char *v = s + kl;
            while (isspace((unsigned char)*v))
                v++;
            size_t n = strlen(v);
            while (n > 0 && isspace((unsigned char)v[n - 1]))
                n--;
            if (n == 0 || n >= PRICES_TEXT_MAX) {
                snprintf(err, errlen, "line %d: %s needs a value under %d bytes", line, keys[k],
                         PRICES_TEXT_MAX);
                return -1;
            }
            memcpy(dst[k], v, n);
            dst[k][n] = '\0';
            return 0;
        }
    }
    char *f[6];
    int nf = 0;
    for (char *tok = s; *tok && nf < 6;) {
        f[nf++] = tok;
        while (*tok && !isspace((unsigned char)*tok))
            tok++;
        if (*tok)
            *tok++ = '\0';
        while (isspace((unsigned char)*tok))
            tok++;
    }
    return parse_entry(f, nf, c, err, errlen, line);
}

int prices_parse(const char *text, size_t len, price_catalog_t *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    char buf[512];
    int line = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        line++;
        if (j - i >= sizeof buf || memchr(text + i, '\0', j - i)) {
            snprintf(err, errlen, "line %d: longer than %zu bytes or not text", line,
                     sizeof buf - 1);
            return -1;
        }
        memcpy(buf, text + i, j - i);
        buf[j - i] = '\0';
        if (parse_line(buf, c, err, errlen, line) != 0)
            return -1;
        i = j + 1;
    }
    if (c->n == 0 || !c->region[0] || !c->date[0] || !c->source[0]) {
        snprintf(err, errlen,
                 "a catalog needs region, date, source and at least one instance type");
        return -1;
    }
    return 0;
}

int prices_load(const char *path, price_catalog_t *c, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(PRICES_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, PRICES_FILE_MAX + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    int rc = -1;
    char why[256];
    if (!buf || bad)
        snprintf(err, errlen, "%s: cannot read", path);
    else if (n > PRICES_FILE_MAX)
        snprintf(err, errlen, "%s: over %d KiB", path, PRICES_FILE_MAX / 1024);
    else if (prices_parse(buf, n, c, why, sizeof why) != 0)
        snprintf(err, errlen, "%s: %s", path, why);
    else
        rc = 0;
    free(buf);
    return rc;
}

const price_entry_t *prices_find(const price_catalog_t *c, const char *instance_type)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].instance_type, instance_type) == 0)
            return &c->e[i];
    return NULL;
}

double prices_gpu_hour(const price_entry_t *e, int spot)
{
    double h = spot ? (e->spot_low + e->spot_high) / 2 : e->on_demand;
    return h / e->gpus;
}

double prices_cheapest_spot_gpu_hour(const price_catalog_t *c)
{
    double best = 0;
    for (int i = 0; i < c->n; i++) {
        double v = c->e[i].spot_low / c->e[i].gpus;
        if (i == 0 || v < best)
            best = v;
    }
    return best;
}
