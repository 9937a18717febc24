/* clock.h: the one place time comes from. Lease, reaper and autoscaling logic take `now` as an
 * argument; callers get it here. Tests steer time with clock_advance_ms() instead of sleeping. */
#ifndef PINGVAS_CLOCK_H
#define PINGVAS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Wall-clock milliseconds since the Unix epoch, plus the steered offset. Steps with the system
 * clock (NTP, an operator): use it for instants shown to people or exchanged with other systems
 * (JWT exp, S3 signatures, created_at), never to measure an interval.
 * Test hook: when PINGVAS_TEST_CLOCK_STEP_FILE names a file, its integer content (ms, re-read
 * every 20 ms) is added, so a test can step this process's wall clock while it runs. */
int64_t clock_now_ms(void);
/* Steady wall clock: the wall clock read once (at the first clock call of the process), advanced
 * by the monotonic clock since. Ms since the epoch, comparable with stored times, but a step of
 * the wall clock during the run does not move it. Lease deadlines, the reaper, worker presence
 * and autoscaling cooldowns use it. */
int64_t clock_steady_ms(void);
/* Monotonic milliseconds (for measuring durations), plus the steered offset. */
int64_t clock_mono_ms(void);
/* Moves both clocks forward by ms (tests only). Thread safe. */
void clock_advance_ms(int64_t ms);
/* Formats ms since the epoch as RFC 3339 UTC with milliseconds into buf (at least 32 bytes). */
void clock_format_rfc3339(int64_t ms, char *buf, unsigned long size);
/* Parses an ISO 8601 / RFC 3339 time as Python's datetime.isoformat() and pingvas write it:
 * YYYY-MM-DDTHH:MM:SS (or a t for the T), optional fraction (milliseconds kept), then Z,
 * z, +HH:MM, -HH:MM or nothing (read as UTC). 0 with *ms since the epoch, or -1 for anything
 * else (years before 1970 included). */
int clock_parse_iso8601_ms(const char *s, int64_t *ms);
/* The CLOCK_REALTIME instant ms real milliseconds from now (not steered), normalised: the
 * deadline pthread_cond_timedwait takes. */
struct timespec clock_deadline(int64_t ms);
/* Sleeps for ms real milliseconds (not steered). */
void clock_sleep_ms(int64_t ms);

#endif
