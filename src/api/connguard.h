/* connguard.h: absolute deadlines for slow clients (issue 16, finding 3). libmicrohttpd's own
 * connection timeout fires only when a connection is idle, so a client that sends one byte every
 * few seconds keeps its slot forever. The guard tracks every connection of a daemon (through
 * MHD_OPTION_NOTIFY_CONNECTION) and, from a thread of its own, shuts down a connection that has
 * not sent its whole header block within header_ms, or its whole request (headers and body)
 * within request_ms, counted from the connection's start or from the end of its previous
 * request. Once a request is received, the time its answer takes (a long-poll claim, a wait) is
 * not limited here. A connection closed at the header deadline that sent nothing of a request
 * (idle keep-alive) is logged as idle_connection_closed (debug), not as a slow client. */
#ifndef PINGVAS_CONNGUARD_H
#define PINGVAS_CONNGUARD_H

#include <microhttpd.h>
#include <stdint.h>

typedef struct connguard connguard_t;

/* Starts a guard and its sweeper thread (every 250 ms). header_ms, request_ms > 0. NULL on
 * failure. */
connguard_t *connguard_start(int64_t header_ms, int64_t request_ms);
/* Stops the thread and frees the guard; call after the daemons using it have stopped. */
void connguard_stop(connguard_t *g);

/* MHD_OPTION_NOTIFY_CONNECTION callback; cls is the guard. */
void connguard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);

/* The request's headers are in: its body is now under the request deadline. */
void connguard_headers_done(struct MHD_Connection *c);
/* The whole request is in: no deadline while it is answered. */
void connguard_request_done(struct MHD_Connection *c);
/* The answer is sent: the next request (or idleness) is under the header deadline again. */
void connguard_response_done(struct MHD_Connection *c);

/* Connections shut down for being too slow since start. */
uint64_t connguard_closed_total(const connguard_t *g);

#endif
