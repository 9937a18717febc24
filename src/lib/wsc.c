/* wsc.c: one WebSocket client connection on libwebsockets (framing, masking, handshake and
 * control frames are the library's). Each connection has its own lws context, serviced only by
 * the thread that calls wsc_open/wsc_next; a timer wakes the service loop every WSC_TICK_MS so
 * that waits end on time. Whole text messages are queued in arrival order. */
#include "lib/wsc.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"

#define WSC_TICK_MS 20
#define WSC_HOST_MAX 256
#define WSC_PATH_MAX 2048

enum wsc_state { WSC_CONNECTING = 0, WSC_OPEN = 1, WSC_CLOSED = 2 };

typedef struct wsc_msg {
    struct wsc_msg *next;
    char *data; /* NUL-terminated */
    size_t len;
} wsc_msg_t;

struct wsc {
    struct lws_context *ctx;
    struct lws *wsi;
    lws_sorted_usec_list_t sul;
    int state;
    char why[256];
    char *rx; /* the message being received */
    size_t rx_len;
    wsc_msg_t *head, *tail;
    char host[WSC_HOST_MAX];
    char path[WSC_PATH_MAX];
};

static void lws_to_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_warn("event=websocket_library level=%d msg=\"%.*s\"", level, (int)(n > 300 ? 300 : n),
             line);
}

static void log_once(void)
{
    lws_set_log_level(LLL_ERR, lws_to_log);
}

static void set_closed(wsc_t *w, const char *why)
{
    if (w->state != WSC_CLOSED && why)
        snprintf(w->why, sizeof w->why, "%s", why);
    w->state = WSC_CLOSED;
    w->wsi = NULL;
}

/* Appends a received chunk; queues the message when it is complete. -1 when over the cap. */
static int on_rx(wsc_t *w, struct lws *wsi, const void *in, size_t len)
{
    if (w->rx_len + len > WSC_MESSAGE_MAX) {
        snprintf(w->why, sizeof w->why, "a message was longer than %u bytes", WSC_MESSAGE_MAX);
        return -1;
    }
    char *grown = realloc(w->rx, w->rx_len + len + 1);
    if (!grown) {
        snprintf(w->why, sizeof w->why, "out of memory");
        return -1;
    }
    w->rx = grown;
    memcpy(w->rx + w->rx_len, in, len);
    w->rx_len += len;
    w->rx[w->rx_len] = '\0';
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
        return 0;
    wsc_msg_t *m = lws_frame_is_binary(wsi) ? NULL : calloc(1, sizeof *m);
    if (m) {
        m->data = w->rx;
        m->len = w->rx_len;
        w->rx = NULL;
        if (w->tail)
            w->tail->next = m;
        else
            w->head = m;
        w->tail = m;
    }
    free(w->rx);
    w->rx = NULL;
    w->rx_len = 0;
    return 0;
}

static int wsc_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    wsc_t *w = lws_context_user(lws_get_context(wsi));
    if (!w)
        return 0;
    char why[200];
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        w->state = WSC_OPEN;
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        snprintf(why, sizeof why, "connection failed: %s", in ? (const char *)in : "unknown");
        set_closed(w, why);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (on_rx(w, wsi, in, len) != 0)
            return -1;
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        snprintf(why, sizeof why, "closed by the server (close code %d)",
                 len >= 2 ? ((const unsigned char *)in)[0] << 8 | ((const unsigned char *)in)[1]
                          : 1005);
        set_closed(w, why);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_CLOSED:
        set_closed(w, "the connection was closed");
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols wsc_protocols[] = {
    {"pingvas-wsc", wsc_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void wsc_wake(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* only ends the current lws_service wait */
}

/* One pass of the service loop, at most WSC_TICK_MS long. */
static void service_once(wsc_t *w)
{
    lws_sul_schedule(w->ctx, 0, &w->sul, wsc_wake, WSC_TICK_MS * LWS_US_PER_MS);
    lws_service(w->ctx, 0);
}

/* Splits "http[s]://host[:port][/prefix]" into w->host, *port, *ssl and the prefix (copied
 * before path into w->path). 0, or -1 with err set. */
static int parse_base(wsc_t *w, const char *base, const char *path, int *port, int *ssl, char *err,
                      size_t errlen)
{
    const char *p;
    if (strncmp(base, "http://", 7) == 0) {
        p = base + 7;
        *ssl = 0;
    } else if (strncmp(base, "https://", 8) == 0) {
        p = base + 8;
        *ssl = 1;
    } else {
        snprintf(err, errlen, "WebSocket: URL \"%.200s\" is not http:// or https://", base);
        return -1;
    }
    size_t hl = p[0] == '[' ? strcspn(p, "]") + 1 : strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof w->host || (p[0] == '[' && p[hl - 1] != ']')) {
        snprintf(err, errlen, "WebSocket: no usable host in \"%.200s\"", base);
        return -1;
    }
    memcpy(w->host, p, hl);
    w->host[hl] = '\0';
    p += hl;
    *port = *ssl ? 443 : 80;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535 || (*end && *end != '/')) {
            snprintf(err, errlen, "WebSocket: bad port in \"%.200s\"", base);
            return -1;
        }
        *port = (int)v;
        p = end;
    }
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/')
        pl--;
    int n = snprintf(w->path, sizeof w->path, "%.*s%s", (int)pl, p, path);
    if (n < 0 || (size_t)n >= sizeof w->path) {
        snprintf(err, errlen, "WebSocket: path longer than %d bytes", WSC_PATH_MAX - 1);
        return -1;
    }
    return 0;
}

static int start_connect(wsc_t *w, int port, int ssl, char *err, size_t errlen)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = wsc_protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = w;
    info.fd_limit_per_thread = 16;
    if (ssl)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    w->ctx = lws_create_context(&info);
    if (!w->ctx) {
        snprintf(err, errlen, "WebSocket: cannot create a libwebsockets context");
        return -1;
    }
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = w->ctx;
    ci.address = w->host;
    char bare[WSC_HOST_MAX];
    if (w->host[0] == '[') { /* IPv6 literal: the address goes without brackets */
        snprintf(bare, sizeof bare, "%.*s", (int)strlen(w->host) - 2, w->host + 1);
        ci.address = bare;
    }
    ci.port = port;
    ci.path = w->path;
    /* Host: as a browser would send it (the port when it is not the scheme's); no Origin: this
     * is no browser, and ComfyUI refuses an Origin that does not match Host. */
    char host[WSC_HOST_MAX + 8];
    if (port == (ssl ? 443 : 80))
        snprintf(host, sizeof host, "%s", w->host);
    else
        snprintf(host, sizeof host, "%s:%d", w->host, port);
    ci.host = host;
    ci.origin = NULL;
    ci.ssl_connection = ssl ? LCCSCF_USE_SSL : 0;
    ci.local_protocol_name = wsc_protocols[0].name;
    ci.pwsi = &w->wsi;
    if (!lws_client_connect_via_info(&ci) && w->state != WSC_CLOSED) {
        snprintf(err, errlen, "WebSocket: cannot start a connection to %s:%d", w->host, port);
        return -1;
    }
    return 0;
}

wsc_t *wsc_open(const char *base_url, const char *path, long timeout_ms, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, log_once);
    wsc_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "WebSocket: out of memory");
        return NULL;
    }
    int port = 0, ssl = 0;
    if (parse_base(w, base_url, path, &port, &ssl, err, errlen) != 0 ||
        start_connect(w, port, ssl, err, errlen) != 0) {
        wsc_close(w);
        return NULL;
    }
    int64_t end = clock_mono_ms() + timeout_ms;
    while (w->state == WSC_CONNECTING && clock_mono_ms() < end)
        service_once(w);
    if (w->state != WSC_OPEN) {
        snprintf(err, errlen, "WebSocket ws%s://%s:%d%s: %s", ssl ? "s" : "", w->host, port,
                 w->path, w->state == WSC_CONNECTING ? "no handshake in time" : w->why);
        wsc_close(w);
        return NULL;
    }
    return w;
}

static int pop(wsc_t *w, char **msg, size_t *len)
{
    wsc_msg_t *m = w->head;
    if (!m)
        return 0;
    w->head = m->next;
    if (!w->head)
        w->tail = NULL;
    *msg = m->data;
    *len = m->len;
    free(m);
    return 1;
}

int wsc_next(wsc_t *w, long wait_ms, char **msg, size_t *len, char *err, size_t errlen)
{
    *msg = NULL;
    *len = 0;
    int64_t end = clock_mono_ms() + wait_ms;
    for (;;) {
        if (pop(w, msg, len))
            return 1;
        if (w->state == WSC_CLOSED) {
            snprintf(err, errlen, "%s", w->why[0] ? w->why : "the connection was closed");
            return -1;
        }
        if (clock_mono_ms() >= end)
            return 0;
        service_once(w);
    }
}

void wsc_close(wsc_t *w)
{
    if (!w)
        return;
    if (w->ctx) {
        lws_sul_cancel(&w->sul);
        lws_context_destroy(w->ctx);
    }
    char *m;
    size_t n;
    while (pop(w, &m, &n))
        free(m);
    free(w->rx);
    free(w);
}
