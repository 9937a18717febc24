#include "lib/clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Atomic int64_t offset_ms;

/* Test hook (PINGVAS_TEST_CLOCK_STEP_FILE): the wall clock's step, re-read at most every
 * STEP_POLL_MS of monotonic time. */
#define STEP_POLL_MS 20
static const char *step_file;
static _Atomic int64_t step_ms, step_next_read;
static int64_t steady_anchor_wall, steady_anchor_mono;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int64_t read_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void read_step(int64_t mono)
{
    if (mono < atomic_load(&step_next_read))
        return;
    atomic_store(&step_next_read, mono + STEP_POLL_MS);
    FILE *f = fopen(step_file, "r");
    long long v;
    if (!f)
        return;
    if (fscanf(f, "%lld", &v) == 1)
        atomic_store(&step_ms, (int64_t)v);
    fclose(f);
}

static int64_t wall_ms(void)
{
    int64_t wall = read_clock(CLOCK_REALTIME) + atomic_load(&offset_ms);
    if (step_file) {
        read_step(read_clock(CLOCK_MONOTONIC));
        wall += atomic_load(&step_ms);
    }
    return wall;
}

static void init_once(void)
{
    const char *f = getenv("PINGVAS_TEST_CLOCK_STEP_FILE");
    step_file = f && *f ? f : NULL;
    steady_anchor_mono = read_clock(CLOCK_MONOTONIC);
    steady_anchor_wall = wall_ms();
}

int64_t clock_now_ms(void)
{
    pthread_once(&once, init_once);
    return wall_ms();
}

int64_t clock_mono_ms(void)
{
    return read_clock(CLOCK_MONOTONIC) + atomic_load(&offset_ms);
}

int64_t clock_steady_ms(void)
{
    pthread_once(&once, init_once);
    return steady_anchor_wall + (read_clock(CLOCK_MONOTONIC) - steady_anchor_mono) +
           atomic_load(&offset_ms);
}

void clock_advance_ms(int64_t ms)
{
    atomic_fetch_add(&offset_ms, ms);
}

/* v (0 <= v < 10^n) as n decimal digits at p. */
static void put_digits(char *p, unsigned v, int n)
{
    while (n-- > 0) {
        p[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* The civil date of a day count since 1970-01-01 (days >= 0; Howard Hinnant's civil_from_days):
 * no gmtime_r, which takes glibc's time zone lock on every call (every job JSON writes three
 * times). */
static void civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t z = days + 719468, era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void clock_format_rfc3339(int64_t ms, char *buf, unsigned long size)
{
    int64_t y;
    unsigned mo, d;
    if (ms >= 0 && size > 24) {
        int64_t secs = ms / 1000;
        civil_from_days(secs / 86400, &y, &mo, &d);
        if (y <= 9999) {
            unsigned sod = (unsigned)(secs % 86400);
            memcpy(buf, "0000-00-00T00:00:00.000Z", 25);
            put_digits(buf, (unsigned)y, 4);
            put_digits(buf + 5, mo, 2);
            put_digits(buf + 8, d, 2);
            put_digits(buf + 11, sod / 3600, 2);
            put_digits(buf + 14, sod / 60 % 60, 2);
            put_digits(buf + 17, sod % 60, 2);
            put_digits(buf + 20, (unsigned)(ms % 1000), 3);
            return;
        }
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* Reads exactly n decimal digits at *s, advancing *s; -1 when they are not there. */
static int take_digits(const char **s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*s)++) {
        if (**s < '0' || **s > '9')
            return -1;
        v = v * 10 + (**s - '0');
    }
    return v;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (the inverse of civil_from_days). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* The zone at s: "", Z/z, or +HH:MM / -HH:MM into *off_ms (what to subtract). 0 or -1. */
static int parse_zone(const char *s, int64_t *off_ms)
{
    *off_ms = 0;
    if (!*s || ((*s == 'Z' || *s == 'z') && !s[1]))
        return 0;
    if (*s != '+' && *s != '-')
        return -1;
    const char *p = s + 1;
    int oh = take_digits(&p, 2), colon = *p++ == ':', om = take_digits(&p, 2);
    if (oh < 0 || oh > 23 || !colon || om < 0 || om > 59 || *p)
        return -1;
    *off_ms = (*s == '-' ? -1 : 1) * (int64_t)(oh * 60 + om) * 60000;
    return 0;
}

int clock_parse_iso8601_ms(const char *s, int64_t *ms)
{
    static const int width[6] = {4, 2, 2, 2, 2, 2};
    static const char after[6] = {'-', '-', 'T', ':', ':', '\0'};
    int f[6]; /* year, month, day, hour, minute, second */
    if (!s)
        return -1;
    for (int k = 0; k < 6; k++) {
        if ((f[k] = take_digits(&s, width[k])) < 0)
            return -1;
        if (k == 2 && (*s == 'T' || *s == 't'))
            s++;
        else if (after[k] && *s++ != after[k])
            return -1;
    }
    if (f[0] < 1970 || f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 ||
        f[5] > 60)
        return -1;
    int64_t frac = 0, off;
    if (*s == '.') {
        const char *digits = ++s;
        for (int64_t scale = 100; *s >= '0' && *s <= '9'; s++, scale /= 10)
            frac += (*s - '0') * scale;
        if (s == digits)
            return -1;
    }
    if (parse_zone(s, &off) != 0)
        return -1;
    int64_t days = days_from_civil(f[0], (unsigned)f[1], (unsigned)f[2]);
    *ms = ((days * 24 + f[3]) * 60 + f[4]) * 60000 + (int64_t)f[5] * 1000 + frac - off;
    return 0;
}

void clock_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

struct timespec clock_deadline(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (ms % 1000) * 1000000;
    ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}
