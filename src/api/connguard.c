/* connguard.c: absolute deadlines for slow clients (see connguard.h). */
#include "api/connguard.h"

#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received (glibc's lacks it) */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "lib/clock.h"
#include "lib/log.h"

enum phase { WAIT_HEADERS, READ_BODY, ANSWERING };

typedef struct conn {
    connguard_t *g;
    int fd;
    enum phase phase;
    int64_t since_ms; /* when the current request began (connection start, or previous answer) */
    int shut;         /* shut down already */
    /* bytes the connection had received (TCP_INFO) when it was last seen waiting for a request's
     * headers with nothing of it sent yet: the same count at the deadline means it sent nothing,
     * an idle keep-alive, not a slow client. 0 at the start, -1 until a sweep looks after an
     * answer. */
    long long idle_bytes;
    struct conn *prev, *next;
} conn_t;

struct connguard {
    int64_t header_ms, request_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    conn_t *head;
    int stopping;
    pthread_t thread;
    atomic_ullong closed;
};

/* The bytes the kernel has received on fd so far, or -1 (not TCP). */
static long long received(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
        return -1;
    return (long long)ti.tcpi_bytes_received;
}

/* One pass: shuts down (both directions) every connection past its deadline. libmicrohttpd then
 * sees the socket end and closes the connection itself, and reports it closed. A connection
 * that sent nothing of a next request (idle keep-alive, or never a byte) is closed at the header
 * deadline too, but it is not a slow client: logged at debug level as idle_connection_closed and
 * not counted. "Nothing" is counted from the first sweep after the answer, so bytes a client
 * sent within that sweep's 250 ms and then stalled on pass for idle: such a client is closed all
 * the same, under the other name. Caller holds mu. */
static void sweep(connguard_t *g, int64_t now)
{
    for (conn_t *k = g->head; k; k = k->next) {
        if (k->phase == WAIT_HEADERS && k->idle_bytes < 0 && !k->shut)
            k->idle_bytes = received(k->fd); /* the first look since the answer (below) */
        int64_t limit = k->phase == WAIT_HEADERS ? g->header_ms
                        : k->phase == READ_BODY  ? g->request_ms
                                                 : 0;
        if (!limit || k->shut || now - k->since_ms <= limit)
            continue;
        int idle =
            k->phase == WAIT_HEADERS && k->idle_bytes >= 0 && received(k->fd) == k->idle_bytes;
        if (!idle) /* counted before the shutdown, which the client may see at once */
            atomic_fetch_add(&g->closed, 1);
        k->shut = 1;
        shutdown(k->fd, SHUT_RDWR);
        if (idle) {
            log_debug("event=idle_connection_closed held_ms=%lld", (long long)(now - k->since_ms));
            continue;
        }
        log_info("event=slow_client_closed phase=%s held_ms=%lld",
                 k->phase == WAIT_HEADERS ? "headers" : "body", (long long)(now - k->since_ms));
    }
}

static void *sweeper_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-connguard"); /* top -H, perf */
    connguard_t *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        sweep(g, clock_mono_ms());
        struct timespec ts = clock_deadline(250);
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

connguard_t *connguard_start(int64_t header_ms, int64_t request_ms)
{
    connguard_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->header_ms = header_ms;
    g->request_ms = request_ms;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (pthread_create(&g->thread, NULL, sweeper_main, g) != 0) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void connguard_stop(connguard_t *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stopping = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    while (g->head) { /* connections the daemons never reported closed */
        conn_t *k = g->head;
        g->head = k->next;
        free(k);
    }
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void connguard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    connguard_t *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_t *k = calloc(1, sizeof *k);
        if (!k || !ci) {
            free(k);
            return; /* untracked: only the idle timeout applies */
        }
        k->g = g;
        k->fd = ci->connect_fd;
        k->since_ms = clock_mono_ms();
        pthread_mutex_lock(&g->mu);
        k->next = g->head;
        if (g->head)
            g->head->prev = k;
        g->head = k;
        pthread_mutex_unlock(&g->mu);
        *socket_context = k;
        return;
    }
    conn_t *k = *socket_context; /* MHD_CONNECTION_NOTIFY_CLOSED, before the socket is closed */
    if (!k)
        return;
    pthread_mutex_lock(&g->mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        g->head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&g->mu);
    free(k);
    *socket_context = NULL;
}

static void set_phase(struct MHD_Connection *c, enum phase phase, int restart)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_t *k = ci ? ci->socket_context : NULL;
    if (!k)
        return;
    pthread_mutex_lock(&k->g->mu);
    k->phase = phase;
    if (restart) {
        k->since_ms = clock_mono_ms();
        k->idle_bytes = -1; /* the next sweep counts what came before the next request */
    }
    pthread_mutex_unlock(&k->g->mu);
}

void connguard_headers_done(struct MHD_Connection *c)
{
    set_phase(c, READ_BODY, 0);
}

void connguard_request_done(struct MHD_Connection *c)
{
    set_phase(c, ANSWERING, 0);
}

void connguard_response_done(struct MHD_Connection *c)
{
    set_phase(c, WAIT_HEADERS, 1);
}

uint64_t connguard_closed_total(const connguard_t *g)
{
    return g ? atomic_load(&((connguard_t *)g)->closed) : 0;
}
