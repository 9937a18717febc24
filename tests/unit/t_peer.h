/* t_peer.h: a loopback HTTP stand-in for unit tests (libmicrohttpd on 127.0.0.1, port 0). The
 * test gives a handler that sees each whole request (method, path, headers, body), checks every
 * field it cares about with PEER_EXPECT (a miss is recorded and fails the test through
 * t_peer_problems), and fills in the answer. One request at a time (internal thread, no
 * concurrency), so handlers need no locking. */
#ifndef PINGVAS_T_PEER_H
#define PINGVAS_T_PEER_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_PEER_BODY_MAX (256 * 1024)

typedef struct t_peer_req {
    const char *method;
    const char *path;
    struct MHD_Connection *conn;
    const char *body;
    size_t body_len;
} t_peer_req_t;

typedef struct t_peer_resp {
    int status;
    const char *content_type;
    char body[16384];
} t_peer_resp_t;

typedef struct t_peer t_peer_t;
typedef void (*t_peer_fn)(t_peer_t *p, const t_peer_req_t *req, t_peer_resp_t *resp);

struct t_peer {
    struct MHD_Daemon *d;
    int port;
    char url[64];
    t_peer_fn fn;
    void *arg;
    int requests;
    char problems[4096];
};

/* Records a problem (a field that was not as expected). */
static inline void t_peer_problem(t_peer_t *p, const char *fmt, ...)
{
    size_t n = strlen(p->problems);
    va_list ap;
    va_start(ap, fmt);
    if (n + 2 < sizeof p->problems) {
        vsnprintf(p->problems + n, sizeof p->problems - n - 1, fmt, ap);
        strncat(p->problems, "; ", sizeof p->problems - strlen(p->problems) - 1);
    }
    va_end(ap);
}

#define PEER_EXPECT(p, cond)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            t_peer_problem((p), "%s:%d: %s", __FILE__, __LINE__, #cond);                           \
    } while (0)

/* The request header name (case-insensitive), or NULL. */
static inline const char *t_peer_header(const t_peer_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

typedef struct t_peer_buf {
    char *data;
    size_t len;
    int too_big;
} t_peer_buf_t;

static enum MHD_Result t_peer_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                         const char *method, const char *version,
                                         const char *upload, size_t *upload_size, void **con_cls)
{
    t_peer_t *p = cls;
    t_peer_buf_t *b = *con_cls;
    if (!b) {
        b = calloc(1, sizeof *b);
        *con_cls = b;
        return b ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        if (b->len + *upload_size > T_PEER_BODY_MAX) {
            b->too_big = 1;
        } else {
            char *nd = realloc(b->data, b->len + *upload_size + 1);
            if (nd) {
                b->data = nd;
                memcpy(b->data + b->len, upload, *upload_size);
                b->len += *upload_size;
                b->data[b->len] = '\0';
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    t_peer_req_t req = {method, url, conn, b->data ? b->data : "", b->len};
    t_peer_resp_t *resp = calloc(1, sizeof *resp);
    resp->status = 500;
    p->requests++;
    if (b->too_big)
        t_peer_problem(p, "request body over %d bytes", T_PEER_BODY_MAX);
    else
        p->fn(p, &req, resp);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(resp->body), resp->body, MHD_RESPMEM_MUST_COPY);
    if (resp->content_type)
        MHD_add_response_header(r, "Content-Type", resp->content_type);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    free(resp);
    return ret;
}

static void t_peer_on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    t_peer_buf_t *b = *con_cls;
    if (b) {
        free(b->data);
        free(b);
    }
    *con_cls = NULL;
}

/* Starts a stand-in on 127.0.0.1:0 that answers with fn. 0 or -1. */
static inline int t_peer_start(t_peer_t *p, t_peer_fn fn, void *arg)
{
    memset(p, 0, sizeof *p);
    p->fn = fn;
    p->arg = arg;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(0x7f000001);
    p->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
                            t_peer_on_request, p, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, t_peer_on_done, p, MHD_OPTION_END);
    if (!p->d)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(p->d, MHD_DAEMON_INFO_BIND_PORT);
    p->port = info ? info->port : 0;
    snprintf(p->url, sizeof p->url, "http://127.0.0.1:%d", p->port);
    return p->port ? 0 : -1;
}

static inline void t_peer_stop(t_peer_t *p)
{
    if (p->d)
        MHD_stop_daemon(p->d);
    p->d = NULL;
}

/* Decodes application/x-www-form-urlencoded value text [s, s+n) into out. */
static inline void t_peer_form_decode(const char *s, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
}

/* The decoded value of form field name in body, or 0 when absent. Counts fields in *nfields. */
static inline int t_peer_form_get(const char *body, const char *name, char *out, size_t size,
                                  int *nfields)
{
    int found = 0, n = 0;
    size_t nl = strlen(name);
    for (const char *f = body; *f;) {
        size_t len = strcspn(f, "&");
        n++;
        if (len > nl && strncmp(f, name, nl) == 0 && f[nl] == '=') {
            t_peer_form_decode(f + nl + 1, len - nl - 1, out, size);
            found = 1;
        }
        f += len;
        if (*f == '&')
            f++;
    }
    if (nfields)
        *nfields = n;
    return found;
}

#endif
