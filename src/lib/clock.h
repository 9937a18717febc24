/* clock.h: the one place time comes from. Lease, reaper and autoscaling logic take `now` as an
 * argument; callers get it here. Tests steer time with clock_advance_ms() instead of sleeping. */
#ifndef PINGVAS_CLOCK_H
#define PINGVAS_CLOCK_H

#include <stdint.h>

/* Wall-clock milliseconds since the Unix epoch, plus the steered offset. */
int64_t clock_now_ms(void);
/* Monotonic milliseconds (for measuring durations), plus the steered offset. */
int64_t clock_mono_ms(void);
/* Moves both clocks forward by ms (tests only). Thread safe. */
void clock_advance_ms(int64_t ms);
/* Formats ms since the epoch as RFC 3339 UTC with milliseconds into buf (at least 32 bytes). */
void clock_format_rfc3339(int64_t ms, char *buf, unsigned long size);
/* Sleeps for ms real milliseconds (not steered). */
void clock_sleep_ms(int64_t ms);

#endif
