#include "lib/clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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

void clock_format_rfc3339(int64_t ms, char *buf, unsigned long size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
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
