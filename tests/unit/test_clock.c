/* test_clock.c: the steady clock against steps of the wall clock (the test hook
 * PINGVAS_TEST_CLOCK_STEP_FILE, as the integration test test_faults_clock uses it). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "lib/clock.h"
#include "t.h"

static char step_path[64];

static void set_step(long long ms)
{
    FILE *f = fopen(step_path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fprintf(f, "%lld\n", ms);
    fclose(f);
}

/* Waits (at most 2 s) until the hook has picked the step up: the wall clock moved by about `step`
 * from `before`; returns it. */
static int64_t wall_after_step(int64_t before, int64_t step)
{
    int64_t now = clock_now_ms();
    for (int i = 0; i < 400; i++) {
        now = clock_now_ms();
        if (step > 0 ? now - before >= step : before - now >= -step - 1000)
            break;
        clock_sleep_ms(5);
    }
    return now;
}

static void t_setup(void)
{
    snprintf(step_path, sizeof step_path, "/tmp/pingvas-test-clock-%d", (int)getpid());
    set_step(0);
    setenv("PINGVAS_TEST_CLOCK_STEP_FILE", step_path, 1); /* before the first clock call */
}
#define T_SETUP t_setup

static void t_teardown(void)
{
    unlink(step_path);
}
#define T_TEARDOWN t_teardown

static void test_steady_starts_at_the_wall_clock(void)
{
    int64_t wall = clock_now_ms(), steady = clock_steady_ms();
    CHECK(steady - wall < 1000 && wall - steady < 1000);
}

static void test_steps_move_the_wall_clock_only(void)
{
    int64_t wall0 = clock_now_ms(), steady0 = clock_steady_ms(), mono0 = clock_mono_ms();
    set_step(240000);
    int64_t wall1 = wall_after_step(wall0, 240000);
    CHECK(wall1 - wall0 >= 240000);
    int64_t steady1 = clock_steady_ms(), mono1 = clock_mono_ms();
    CHECK(steady1 >= steady0 && steady1 - steady0 <= mono1 - mono0 + 1);

    set_step(-240000);
    int64_t wall2 = wall_after_step(wall1, -480000);
    CHECK(wall1 - wall2 >= 479000);
    int64_t steady2 = clock_steady_ms();
    CHECK(steady2 >= steady1 && steady2 - steady1 < 5000); /* never backwards, never jumps */
    set_step(0);
    wall_after_step(wall2, 240000);
}

static void test_advance_moves_every_clock(void)
{
    int64_t wall = clock_now_ms(), steady = clock_steady_ms(), mono = clock_mono_ms();
    clock_advance_ms(60000);
    CHECK(clock_now_ms() - wall >= 60000);
    CHECK(clock_steady_ms() - steady >= 60000);
    CHECK(clock_mono_ms() - mono >= 60000);
}

/* What clock_format_rfc3339 wrote through gmtime_r before it computed the date itself. */
static void rfc3339_by_gmtime(int64_t ms, char *buf, size_t size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* The RFC 3339 text of a time is gmtime's, over leap years, century years, every day of a few
 * years, the last second of 9999 and times past it (the slow path). */
static void test_rfc3339_matches_gmtime(void)
{
    static const int64_t fixed[] = {0,
                                    999,
                                    1000,
                                    86399999,
                                    951782400000LL,    /* 2000-02-29 */
                                    4107542400000LL,   /* 2100-03-01 */
                                    1764460800123LL,   /* 2025-11-30 */
                                    253402300799999LL, /* 9999-12-31T23:59:59.999 */
                                    253402300800000LL, /* 10000-01-01 */
                                    -1000};
    char got[40], want[40];
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        clock_format_rfc3339(fixed[i], got, sizeof got);
        rfc3339_by_gmtime(fixed[i], want, sizeof want);
        CHECK_STR(got, want);
    }
    /* every day from 1999 to 2005 and from 2096 to 2104, at an odd time of day */
    static const int64_t from[] = {915148800000LL, 3976214400000LL};
    for (int r = 0; r < 2; r++)
        for (int64_t day = 0; day < 9 * 366; day++) {
            int64_t ms = from[r] + day * 86400000LL + 45296789LL;
            clock_format_rfc3339(ms, got, sizeof got);
            rfc3339_by_gmtime(ms, want, sizeof want);
            CHECK_STR(got, want);
        }
    /* a short buffer is cut as snprintf cuts */
    clock_format_rfc3339(1764460800123LL, got, 11);
    CHECK_STR(got, "2025-11-30");
}

/* clock_parse_iso8601_ms reads back what clock_format_rfc3339 writes, day by day, and the forms
 * Python's isoformat() writes (offsets, microseconds, no zone); refuses the rest. */
static void test_iso8601_parse(void)
{
    char buf[40];
    int64_t ms = 0;
    for (int64_t day = 0; day < 9 * 366; day++) {
        int64_t want = 915148800000LL + day * 86400000LL + 45296789LL;
        clock_format_rfc3339(want, buf, sizeof buf);
        CHECK(clock_parse_iso8601_ms(buf, &ms) == 0 && ms == want);
    }
    static const struct {
        const char *s;
        int64_t ms;
    } ok[] = {
        {"2025-11-30T00:00:00Z", 1764460800000LL},
        {"2025-11-30T00:00:00", 1764460800000LL},
        {"2025-11-30t00:00:00z", 1764460800000LL},
        {"2025-11-30T00:00:00.123456", 1764460800123LL},
        {"2025-11-30T00:00:00.5+00:00", 1764460800500LL},
        {"2025-11-30T02:00:00+02:00", 1764460800000LL},
        {"2025-11-29T18:30:00-05:30", 1764460800000LL},
        {"1970-01-01T00:00:00Z", 0},
        {"2000-02-29T23:59:60Z", 951868800000LL}, /* a leap second reads as the next second */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ms = -7;
        CHECK(clock_parse_iso8601_ms(ok[i].s, &ms) == 0);
        if (ms != ok[i].ms)
            fprintf(stderr, "  %s: got %lld, want %lld\n", ok[i].s, (long long)ms,
                    (long long)ok[i].ms);
        CHECK(ms == ok[i].ms);
    }
    static const char *bad[] = {NULL,
                                "",
                                "2025-11-30",
                                "2025-11-30T00:00",
                                "2025-13-01T00:00:00Z",
                                "2025-11-30T24:00:00Z",
                                "1969-12-31T23:59:59Z",
                                "2025-11-30T00:00:00.Z",
                                "2025-11-30T00:00:00+0200",
                                "2025-11-30T00:00:00+02:00x",
                                "2025-11-30T00:00:00ZZ",
                                "2025-11-30T 0:00:00Z",
                                "+2025-11-30T00:00:00Z",
                                "2025-11-30X00:00:00Z",
                                "2025-11-30 00:00:00Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(clock_parse_iso8601_ms(bad[i], &ms) == -1);
}

#define TESTS(X)                                                                                   \
    X(test_steady_starts_at_the_wall_clock)                                                        \
    X(test_steps_move_the_wall_clock_only)                                                         \
    X(test_advance_moves_every_clock) X(test_rfc3339_matches_gmtime) X(test_iso8601_parse)
#include "t_main.h"
