/* sse.h: the Server-Sent Events stream of GET /api/v1/events.
 *
 * Each event of the store's log (store.h, store_event_t) the caller may see goes out as
 *     id: <seq>\nevent: <kind>\ndata: {"time":"<RFC 3339>",...the event's data}\n\n
 * in seq order, starting after Last-Event-ID (the header, or ?last_event_id= for a first
 * connection), else after the newest event. A comment line is sent every keepalive_ms (the
 * server's --sse-keepalive, SSE_KEEPALIVE_MS by default) of silence so
 * proxies and clients see the connection alive. The stream waits through the event hub (hub.h):
 * no thread of its own, and none held while it waits when the daemon can suspend connections. */
#ifndef PINGVAS_SSE_H
#define PINGVAS_SSE_H

#include <microhttpd.h>
#include <stdint.h>

#include "api/hub.h"
#include "store/store.h"

#define SSE_KEEPALIVE_MS 15000
#define SSE_GONE_CHECK_MS 1000   /* a closed client is noticed this soon while nothing happens */
#define SSE_BATCH 100            /* events read from the store per look */
#define SSE_BUF_MAX (512 * 1024) /* cap of the buffered, not yet sent, text */

/* The streaming response for user (NULL: an operator, who sees every event) on connection c,
 * after event last_id (-1: after the newest). The stream holds one hub_stream_acquire() count of
 * user_key, released when the response is freed (also on failure). NULL when out of memory. */
struct MHD_Response *sse_response(hub_t *h, store_t *st, struct MHD_Connection *c, const char *user,
                                  const char *user_key, int64_t last_id, int64_t keepalive_ms);

#endif
