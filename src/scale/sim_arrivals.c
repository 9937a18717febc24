/* sim_arrivals.c: the simulator's input: generated arrival processes and CSV traces. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/job.h"
#include "lib/config.h"
#include "scale/sim_rng.h"
#include "scale/simulate.h"

#define SIM_RATE_MAX 10000.0
#define TRACE_LINE_MAX 256

static int parse_rate(const char *s, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    int64_t ms;
    if (config_parse_duration(s, &ms) != 0 || ms <= 0)
        return -1;
    *out = (double)ms / 1000.0;
    return 0;
}

/* Splits "a,b,c" (modifiable) into at most max fields; returns the count. */
static int split_commas(char *s, char **f, int max)
{
    int n = 0;
    while (n < max) {
        f[n++] = s;
        char *c = strchr(s, ',');
        if (!c)
            return n;
        *c = '\0';
        s = c + 1;
    }
    return n + 1; /* too many */
}

static int parse_fields(sim_arrivals_t *a, char **f, int nf)
{
    switch (a->kind) {
    case SIM_POISSON:
        return nf == 1 && parse_rate(f[0], SIM_RATE_MAX, &a->rate) == 0 ? 0 : -1;
    case SIM_BURST:
        return nf == 4 && parse_rate(f[0], SIM_RATE_MAX, &a->rate) == 0 &&
                       parse_rate(f[1], SIM_RATE_MAX, &a->peak) == 0 &&
                       parse_seconds(f[2], &a->every_s) == 0 &&
                       parse_seconds(f[3], &a->length_s) == 0 && a->length_s <= a->every_s
                   ? 0
                   : -1;
    case SIM_DIURNAL:
        a->peak_hour = 15;
        return (nf == 2 || nf == 3) && parse_rate(f[0], SIM_RATE_MAX, &a->rate) == 0 &&
                       parse_rate(f[1], 1.0, &a->peak) == 0 &&
                       (nf == 2 || parse_rate(f[2], 24.0, &a->peak_hour) == 0)
                   ? 0
                   : -1;
    }
    return -1;
}

int sim_arrivals_parse(const char *spec, sim_arrivals_t *a, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        sim_process_t kind;
        const char *usage;
    } kinds[] = {
        {"poisson:", SIM_POISSON, "poisson:RATE (jobs/s)"},
        {"burst:", SIM_BURST,
         "burst:BASE,PEAK,EVERY,LENGTH (jobs/s, jobs/s, duration, duration "
         "<= EVERY), e.g. burst:0.5,20,2h,5m"},
        {"diurnal:", SIM_DIURNAL,
         "diurnal:MEAN,AMPLITUDE[,PEAK_HOUR] (jobs/s, 0..1, 0..24), "
         "e.g. diurnal:1.2,0.8,15"},
    };
    memset(a, 0, sizeof *a);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t kl = strlen(kinds[k].name);
        if (!spec || strncmp(spec, kinds[k].name, kl) != 0)
            continue;
        char buf[128], *f[5];
        if (strlen(spec + kl) >= sizeof buf)
            break;
        memcpy(buf, spec + kl, strlen(spec + kl) + 1);
        a->kind = kinds[k].kind;
        if (parse_fields(a, f, split_commas(buf, f, 4)) == 0)
            return 0;
        snprintf(err, errlen, "--arrivals %s: expected %s, rates 0..%g", spec, kinds[k].usage,
                 SIM_RATE_MAX);
        return -1;
    }
    snprintf(err, errlen,
             "--arrivals %s: expected poisson:RATE, burst:BASE,PEAK,EVERY,LENGTH or "
             "diurnal:MEAN,AMPLITUDE[,PEAK_HOUR]",
             spec ? spec : "(none)");
    return -1;
}

/* The rate at t seconds, and the highest rate (for thinning). */
static double rate_at(const sim_arrivals_t *a, double t)
{
    switch (a->kind) {
    case SIM_POISSON:
        return a->rate;
    case SIM_BURST: {
        double phase = fmod(t, a->every_s);
        return t >= a->every_s && phase < a->length_s ? a->peak : a->rate;
    }
    case SIM_DIURNAL:
        return a->rate * (1 + a->peak * cos(2 * M_PI * (t / 3600.0 - a->peak_hour) / 24.0));
    }
    return 0;
}

static double rate_max(const sim_arrivals_t *a)
{
    switch (a->kind) {
    case SIM_POISSON:
        return a->rate;
    case SIM_BURST:
        return a->peak > a->rate ? a->peak : a->rate;
    case SIM_DIURNAL:
        return a->rate * (1 + a->peak);
    }
    return 0;
}

static int push_job(sim_jobs_t *j, const sim_job_t *job)
{
    if (j->n == j->cap) {
        size_t ncap = j->cap ? j->cap * 2 : 1024;
        if (j->n >= SIM_MAX_JOBS)
            return -1;
        sim_job_t *nv = realloc(j->v, ncap * sizeof *nv);
        if (!nv)
            return -1;
        j->v = nv;
        j->cap = ncap;
    }
    j->v[j->n++] = *job;
    return 0;
}

int sim_arrivals_generate(const sim_arrivals_t *a, const sim_shape_t *shape, double hours,
                          uint64_t seed, sim_jobs_t *out, char *err, size_t errlen)
{
    out->n = 0;
    uint64_t rng = seed ^ 0x61727269766c73ULL; /* "arrivls": its own stream */
    double top = rate_max(a), end = hours * 3600.0;
    /* Thinning (Lewis and Shedler): candidates at the top rate, each kept with rate(t) / top. */
    for (double t = top > 0 ? sim_rng_exp(&rng, top) : end; t < end; t += sim_rng_exp(&rng, top)) {
        double keep = sim_rng_unit(&rng);
        if (keep * top >= rate_at(a, t))
            continue;
        sim_job_t job = {.at_ms = (int64_t)llround(t * 1000.0),
                         .tier = sim_rng_unit(&rng) < shape->enterprise_share,
                         .width = shape->width,
                         .height = shape->height,
                         .steps = shape->steps};
        if (push_job(out, &job) != 0) {
            snprintf(err, errlen, "more than %d jobs or out of memory: lower the rate or --hours",
                     SIM_MAX_JOBS);
            return -1;
        }
    }
    return 0;
}

/* One CSV line into job; 0 or -1 with the reason in why. */
static int trace_line(char *line, sim_job_t *job, const char **why)
{
    char *f[6];
    int nf = split_commas(line, f, 5);
    double t;
    long v[3];
    *why = "expected time_s,tier,width,height,steps";
    if (nf != 5 || parse_rate(f[0], SIM_MAX_HOURS * 3600.0, &t) != 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        char *end;
        errno = 0;
        v[i] = strtol(f[2 + i], &end, 10);
        if (errno || end == f[2 + i] || *end)
            return -1;
    }
    if (tier_index(f[1]) < 0) {
        *why = "tier must be standard or enterprise";
        return -1;
    }
    if (v[0] < 64 || v[0] > 2048 || v[0] % 8 || v[1] < 64 || v[1] > 2048 || v[1] % 8 || v[2] < 1 ||
        v[2] > 150) {
        *why = "width and height 64..2048 (multiples of 8), steps 1..150";
        return -1;
    }
    *job = (sim_job_t){.at_ms = (int64_t)llround(t * 1000.0),
                       .tier = f[1][0] == 'e',
                       .width = (int)v[0],
                       .height = (int)v[1],
                       .steps = (int)v[2]};
    return 0;
}

/* Sorts jobs by time, keeping the file order of equal times (a bottom-up merge sort). 0 or -1
 * when out of memory. */
static int sort_stable(sim_jobs_t *j)
{
    sim_job_t *tmp = malloc(j->n * sizeof *tmp), *src = j->v, *dst = tmp;
    if (!tmp)
        return -1;
    for (size_t w = 1; w < j->n; w *= 2) {
        for (size_t lo = 0; lo < j->n; lo += 2 * w) {
            size_t mid = lo + w < j->n ? lo + w : j->n, hi = lo + 2 * w < j->n ? lo + 2 * w : j->n;
            size_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi)
                dst[k++] = src[b].at_ms < src[a].at_ms ? src[b++] : src[a++];
            while (a < mid)
                dst[k++] = src[a++];
            while (b < hi)
                dst[k++] = src[b++];
        }
        sim_job_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != j->v)
        memcpy(j->v, src, j->n * sizeof *src);
    free(tmp);
    return 0;
}

/* Reads the lines of an open trace. */
static int trace_read(FILE *f, const char *path, sim_jobs_t *out, char *err, size_t errlen)
{
    char line[TRACE_LINE_MAX];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            snprintf(err, errlen, "%s:%d: line longer than %d bytes", path, lineno,
                     TRACE_LINE_MAX - 2);
            return -1;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#' || (lineno == 1 && strncmp(line, "time_s", 6) == 0))
            continue;
        sim_job_t job;
        const char *why;
        if (trace_line(line, &job, &why) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            return -1;
        }
        if (push_job(out, &job) != 0) {
            snprintf(err, errlen, "%s: more than %d jobs or out of memory", path, SIM_MAX_JOBS);
            return -1;
        }
    }
    return 0;
}

int sim_trace_load(const char *path, sim_jobs_t *out, char *err, size_t errlen)
{
    out->n = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = trace_read(f, path, out, err, errlen);
    fclose(f);
    if (rc == 0 && out->n == 0) {
        snprintf(err, errlen, "%s: no jobs in the trace", path);
        rc = -1;
    }
    if (rc == 0 && sort_stable(out) != 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    }
    return rc;
}

int sim_trace_write(const char *path, const sim_jobs_t *jobs)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "time_s,tier,width,height,steps\n");
    for (size_t i = 0; i < jobs->n; i++) {
        const sim_job_t *j = &jobs->v[i];
        fprintf(f, "%.3f,%s,%d,%d,%d\n", (double)j->at_ms / 1000.0, tier_names[j->tier != 0],
                j->width, j->height, j->steps);
    }
    return fclose(f) == 0 ? 0 : -1;
}

void sim_jobs_free(sim_jobs_t *j)
{
    free(j->v);
    memset(j, 0, sizeof *j);
}
