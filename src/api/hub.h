/* hub.h: waiting for the event log without a thread per waiter.
 *
 * The hub follows the store's durable event log (store.h, store_event_t): one thread reads the
 * sequence and moves a watermark, the highest seq below which every event is committed and
 * readable, and bumps a generation each time it moves. Requests that wait for something (GET
 * /api/v1/generation/{id}?wait=, the SSE stream of GET /api/v1/events) note the generation,
 * look at the store, and call hub_wait() when there is nothing yet.
 *
 * hub_wait() works with either front of libmicrohttpd: with suspend/resume allowed (an event-loop
 * daemon) it suspends the connection and returns HUB_PARKED at once, and the hub resumes the
 * connection when the generation moves or the deadline passes (libmicrohttpd then calls the
 * handler or the content reader again); on a thread-per-connection daemon it blocks that thread
 * until then and returns HUB_WOKE.
 *
 * The hub also trims the log (retention, store_events_trim) and counts event streams per user. */
#ifndef PINGVAS_HUB_H
#define PINGVAS_HUB_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>

#include "store/store.h"

/* An event's seq can be taken before its transaction commits (PostgreSQL): at a gap in the
 * sequence the hub waits this long for the missing seq before it moves past (a rolled-back
 * transaction leaves a gap for good). */
#define HUB_GAP_WAIT_MS 5000
/* Retention of the event log: state, worker and scaling events; progress events. */
#define HUB_KEEP_MS (24LL * 3600 * 1000)
#define HUB_KEEP_PROGRESS_MS (5LL * 60 * 1000)

typedef struct hub hub_t;

/* A gap in the sequence the hub waits at: after watermark `at`, since since_ms. */
typedef struct hub_gap {
    int64_t at;
    int64_t since_ms;
} hub_gap_t;

/* The new watermark after the events v[0..n) read after wm (seq order): up to the first gap
 * younger than HUB_GAP_WAIT_MS (gap remembers where and since when it waits), past older ones. */
int64_t hub_advance(const store_event_t *v, size_t n, int64_t wm, int64_t now, hub_gap_t *gap);

enum { HUB_WOKE = 0, HUB_PARKED = 1 };

/* Starts following the log of store (not owned). NULL with a message in err. */
hub_t *hub_start(store_t *store, char *err, size_t errlen);
/* Tells the hub which daemon its connections belong to (suspend/resume when the daemon allows
 * it). Call once, before the first request. */
void hub_set_daemon(hub_t *h, struct MHD_Daemon *d);
/* A local change: the log is read now when a request or stream waits on it, else at the next
 * tick or when one comes to wait (hub_wait). */
void hub_kick(hub_t *h);
/* The current generation and watermark (read them before looking at the store). */
uint64_t hub_gen(hub_t *h);
int64_t hub_watermark(hub_t *h);
/* 1 once hub_stop began: waiters give up. */
int hub_stopping(hub_t *h);
/* Waits until the generation differs from gen, deadline_ms (CLOCK_MONOTONIC ms, hub_now_ms)
 * passes, or the hub stops. HUB_PARKED: c is suspended, return from the callback (MHD_YES from a
 * handler, 0 bytes from a content reader) and expect to be called again; HUB_WOKE: look again. */
int hub_wait(hub_t *h, struct MHD_Connection *c, uint64_t gen, int64_t deadline_ms);
int64_t hub_now_ms(void);
/* 1 if the client of c has closed its end (checked without blocking). */
int hub_client_gone(struct MHD_Connection *c);
/* Counts an event stream of user; 0, or -1 when the user already has max of them. */
int hub_stream_acquire(hub_t *h, const char *user, int max);
void hub_stream_release(hub_t *h, const char *user);
/* The newest failed jobs seen in the log (at most HUB_FAILURES, newest first), each an object
 * {"time", "user", ...the job event's data}, as a new JSON array (caller decrefs). */
#define HUB_FAILURES 20
json_t *hub_failures(hub_t *h);
/* Stops following and resumes every parked connection (call before MHD_stop_daemon), then
 * frees nothing yet: hub_free after the daemon stopped. */
void hub_stop(hub_t *h);
void hub_free(hub_t *h);

#endif
