/* wsc.h: a small WebSocket client (RFC 6455) for one connection, on libwebsockets: open, read
 * text messages one at a time with a wait, close. The framing, masking, handshake checks and
 * control frames are libwebsockets'; this module only queues whole text messages. Not thread
 * safe: one thread uses a connection. */
#ifndef PINGVAS_WSC_H
#define PINGVAS_WSC_H

#include <stddef.h>

#define WSC_MESSAGE_MAX (8u * 1024u * 1024u) /* a longer text message closes the connection */

typedef struct wsc wsc_t;

/* Opens a connection to base_url's host and port ("http://h:p[/prefix]" or "https://...";
 * ws or wss follows) at path (which may carry a query), waiting up to timeout_ms for the
 * handshake. Returns the connection (wsc_close frees it), or NULL with err set. */
wsc_t *wsc_open(const char *base_url, const char *path, long timeout_ms, char *err, size_t errlen);

/* Waits up to wait_ms for the next whole text message (binary messages are skipped).
 * Returns 1 with *msg (malloc'd, NUL-terminated; the caller frees) and *len; 0 when wait_ms
 * passed without one; -1 when the connection is closed or failed (err says why; later calls
 * return -1 too). */
int wsc_next(wsc_t *w, long wait_ms, char **msg, size_t *len, char *err, size_t errlen);

/* Closes the connection (if open) and frees w. NULL is fine. */
void wsc_close(wsc_t *w);

#endif
