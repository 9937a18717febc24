/* http1.c: HTTP/1.1 and HTTPS for httpc (contract in http1.h). Error texts are libcurl's for the
 * same conditions, so that logs read the same whichever transport carried a request. */
#include "lib/http1.h"

#include "lib/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define H1_CONNECT_TIMEOUT_MS 5000 /* as httpc's CURLOPT_CONNECTTIMEOUT_MS (TLS handshake too) */
#define H1_HEAD_MAX (64 * 1024)    /* cap on the request head we write and each line we read */
#define H1_BUF 8192
#define H1_ABORT_SLICE_MS 100 /* how often a wait looks at req->abort_flag */

typedef struct target {
    char host[256]; /* without IPv6 brackets */
    char port[8];
    char hostport[272]; /* the Host header's value, as written in the URL */
    const char *path;   /* from the first '/' or '?' of the URL; "" means "/" */
    size_t path_len;    /* up to a '#' */
    int tls;            /* https:// */
} target_t;

typedef struct io {
    int fd;
    SSL *ssl;         /* the TLS session on fd, or NULL (plain) */
    int eof;          /* the peer closed its side (read by TLS through the BIO) */
    int64_t deadline; /* clock_mono_ms() */
    atomic_int *abort;
    const char *err; /* set with the first error */
    char msg[240];   /* an error text made for this request (err may point here) */
    size_t got;      /* bytes received so far (decrypted, over TLS) */
    char buf[H1_BUF];
    size_t off, len;
} io_t;

typedef struct body {
    httpc_resp_t *r;
    size_t cap, alloc;
    int too_big;
} body_t;

/* Splits an http:// or https:// URL. 0, or -1 when this module does not take it (other scheme,
 * userinfo, a bad port, characters a request line cannot carry). */
static int split_url(const char *url, target_t *t)
{
    t->tls = strncasecmp(url, "https://", 8) == 0;
    if (!t->tls && strncasecmp(url, "http://", 7) != 0)
        return -1;
    const char *a = url + (t->tls ? 8 : 7), *end = a + strcspn(a, "/?#");
    size_t alen = (size_t)(end - a);
    if (alen == 0 || alen >= sizeof t->hostport || memchr(a, '@', alen))
        return -1;
    memcpy(t->hostport, a, alen);
    t->hostport[alen] = '\0';
    const char *h = t->hostport, *colon;
    size_t hlen;
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (!rb)
            return -1;
        hlen = (size_t)(rb - h - 1);
        h++;
        colon = rb[1] == ':' ? rb + 1 : (rb[1] ? NULL : rb + 1);
        if (!colon)
            return -1;
    } else {
        colon = strchr(h, ':');
        hlen = colon ? (size_t)(colon - h) : strlen(h);
    }
    if (hlen == 0 || hlen >= sizeof t->host)
        return -1;
    memcpy(t->host, h, hlen);
    t->host[hlen] = '\0';
    const char *p = colon && *colon == ':' ? colon + 1 : "";
    if (!*p)
        snprintf(t->port, sizeof t->port, "%s", t->tls ? "443" : "80");
    else {
        char *e;
        long port = strtol(p, &e, 10);
        if (*e || port < 1 || port > 65535 || strspn(p, "0123456789") != strlen(p))
            return -1;
        snprintf(t->port, sizeof t->port, "%ld", port);
    }
    t->path = end;
    t->path_len = strcspn(end, "#");
    for (size_t i = 0; i < t->path_len; i++)
        if ((unsigned char)end[i] <= ' ' || end[i] == 0x7f)
            return -1;
    return 0;
}

/* 1 when the comma-separated list names scheme (case-insensitively). */
static int list_has(const char *list, const char *scheme)
{
    size_t n = strlen(scheme);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncasecmp(p, scheme, n) == 0)
            return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

int http1_takes(const httpc_req_t *req)
{
    target_t t;
    if (!req->url || split_url(req->url, &t) != 0)
        return 0;
    if (req->protocols && !list_has(req->protocols, t.tls ? "https" : "http"))
        return 0;
    /* the variables libcurl reads for the URL's scheme: a proxy is libcurl's business */
    static const char *const plain[] = {"http_proxy", "ALL_PROXY", "all_proxy", NULL};
    static const char *const tls[] = {"https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", NULL};
    const char *const *vars = t.tls ? tls : plain;
    for (size_t i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return 0;
    }
    return 1;
}

/* Waits until fd is ready for events, the deadline passes or the abort flag rises. 0 or -1. */
static int io_wait(io_t *io, short events)
{
    for (;;) {
        if (io->abort && atomic_load(io->abort)) {
            io->err = "Callback aborted";
            return -1;
        }
        int64_t left = io->deadline - clock_mono_ms();
        if (left <= 0) {
            io->err = "Timeout was reached";
            return -1;
        }
        if (io->abort && left > H1_ABORT_SLICE_MS)
            left = H1_ABORT_SLICE_MS;
        struct pollfd pfd = {.fd = io->fd, .events = events};
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            io->err = "Failure when receiving data from the peer";
            return -1;
        }
    }
}

/* Connects to one address before the connect deadline. The socket, or -1. */
static int connect_one(io_t *io, const struct addrinfo *ai, int64_t connect_deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno == EINPROGRESS) {
        io_t w = *io;
        w.fd = fd;
        if (w.deadline > connect_deadline)
            w.deadline = connect_deadline;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (io_wait(&w, POLLOUT) == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
            soerr == 0)
            return fd;
        if (w.err && strcmp(w.err, "Timeout was reached") != 0)
            io->err = w.err; /* aborted: say so rather than "could not connect" */
    }
    close(fd);
    return -1;
}

/* Resolves t (or the address req->resolve pins for it) and connects before the connect deadline
 * cdl. 0 with io->fd set, or -1. */
static int connect_to(io_t *io, const target_t *t, const char *resolve, int64_t cdl)
{
    char pin[300] = "";
    if (resolve) {
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s:%s:", t->host, t->port);
        if (strncmp(resolve, prefix, strlen(prefix)) == 0) {
            const char *addr = resolve + strlen(prefix);
            size_t n = strlen(addr);
            if (n > 2 && addr[0] == '[' && addr[n - 1] == ']')
                snprintf(pin, sizeof pin, "%.*s", (int)(n - 2), addr + 1);
            else
                snprintf(pin, sizeof pin, "%s", addr);
        }
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (pin[0] ? AI_NUMERICHOST : 0)};
    struct addrinfo *res = NULL;
    if (getaddrinfo(pin[0] ? pin : t->host, t->port, &hints, &res) != 0 || !res) {
        io->err = "Couldn't resolve host name";
        return -1;
    }
    io->fd = -1;
    for (struct addrinfo *ai = res; ai && io->fd < 0 && !io->err; ai = ai->ai_next)
        io->fd = connect_one(io, ai, cdl);
    freeaddrinfo(res);
    if (io->fd < 0 && !io->err)
        io->err =
            clock_mono_ms() >= io->deadline ? "Timeout was reached" : "Couldn't connect to server";
    return io->fd < 0 ? -1 : 0;
}

/* Writes n bytes through TLS. 0 or -1. */
static int tls_send(io_t *io, const char *p, size_t n)
{
    while (n > 0) {
        int chunk = n > 1024 * 1024 ? 1024 * 1024 : (int)n;
        ERR_clear_error();
        int w = SSL_write(io->ssl, p, chunk);
        if (w <= 0) {
            if (!io->err)
                io->err = "Failed sending data to the peer";
            ERR_clear_error();
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* After a send that failed: 1 to try again (interrupted, or the socket is writable again before
 * the deadline), 0 when the send failed for good (io->err set). */
static int send_again(io_t *io)
{
    if (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) && io_wait(io, POLLOUT) == 0))
        return 1;
    if (!io->err)
        io->err = "Failed sending data to the peer";
    return 0;
}

/* Writes the iovecs whole. 0 or -1. */
static int send_all(io_t *io, struct iovec *iov, int n)
{
    for (int i = 0; io->ssl && i < n; i++)
        if (tls_send(io, iov[i].iov_base, iov[i].iov_len) != 0)
            return -1;
    while (!io->ssl && n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(io->fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (send_again(io))
                continue;
            return -1;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* Receives up to n bytes from the socket (waiting until the deadline). Bytes received, 0 at the
 * end of the stream (io->eof set), -1. */
static ssize_t sock_recv(io_t *io, char *p, size_t n)
{
    for (;;) {
        ssize_t r = recv(io->fd, p, n, 0);
        if (r >= 0) {
            io->eof = r == 0;
            return r;
        }
        if (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) && !io_wait(io, POLLIN)))
            continue;
        if (!io->err)
            io->err = "Failure when receiving data from the peer";
        return -1;
    }
}

/* Reads more into io->buf through TLS. Bytes read, 0 at the end of the stream, -1. */
static ssize_t tls_fill(io_t *io)
{
    ERR_clear_error();
    int n = SSL_read(io->ssl, io->buf, sizeof io->buf);
    if (n > 0)
        return n;
    int why = SSL_get_error(io->ssl, n);
    ERR_clear_error();
    if (why == SSL_ERROR_ZERO_RETURN)
        return 0; /* close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) the socket closed */
    if (!io->err)
        io->err = "Failure when receiving data from the peer";
    return -1;
}

/* Reads more into io->buf (which must be empty). Bytes read, 0 at the end of the stream, -1. */
static ssize_t io_fill(io_t *io)
{
    io->off = io->len = 0;
    ssize_t n = io->ssl ? tls_fill(io) : sock_recv(io, io->buf, sizeof io->buf);
    if (n > 0) {
        io->len = (size_t)n;
        io->got += (size_t)n;
    }
    return n;
}

/* Reads one line (CRLF or LF, removed) into line. Its length, or -1. */
static ssize_t read_line(io_t *io, char *line, size_t cap)
{
    size_t n = 0;
    for (;;) {
        if (io->off == io->len) {
            ssize_t r = io_fill(io);
            if (r <= 0) {
                if (r == 0 && !io->err)
                    io->err = io->got ? "Transferred a partial file" : "Empty reply from server";
                return -1;
            }
        }
        char ch = io->buf[io->off++];
        if (ch == '\n')
            break;
        if (n + 1 >= cap) {
            io->err = "Weird server reply";
            return -1;
        }
        line[n++] = ch;
    }
    if (n > 0 && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    return (ssize_t)n;
}

/* Appends n bytes to the body under its cap. 0 or -1. */
static int body_add(body_t *b, const char *p, size_t n)
{
    httpc_resp_t *r = b->r;
    if (n > b->cap || r->len > b->cap - n) {
        b->too_big = 1;
        return -1;
    }
    if (r->len + n + 1 > b->alloc) {
        size_t want = b->alloc ? b->alloc : 1024;
        while (want < r->len + n + 1)
            want *= 2;
        char *nb = realloc(r->body, want);
        if (!nb)
            return -1;
        r->body = nb;
        b->alloc = want;
    }
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

/* Moves up to n bytes (all when n is SIZE_MAX: until the end of the stream) into b. 0 or -1. */
static int read_body(io_t *io, body_t *b, size_t n)
{
    while (n > 0) {
        if (io->off == io->len) {
            ssize_t r = io_fill(io);
            if (r < 0)
                return -1;
            if (r == 0) {
                if (n == SIZE_MAX)
                    return 0;
                io->err = "Transferred a partial file";
                return -1;
            }
        }
        size_t take = io->len - io->off < n ? io->len - io->off : n;
        if (body_add(b, io->buf + io->off, take) != 0)
            return -1;
        io->off += take;
        if (n != SIZE_MAX)
            n -= take;
    }
    return 0;
}

/* Reads a chunked body and its trailer. 0 or -1. */
static int read_chunked(io_t *io, body_t *b)
{
    char line[256];
    for (;;) {
        if (read_line(io, line, sizeof line) < 0)
            return -1;
        char *e;
        errno = 0;
        unsigned long long size = strtoull(line, &e, 16);
        if (e == line || errno || (*e && *e != ';' && *e != ' ' && *e != '\t') ||
            size > SIZE_MAX / 2) {
            io->err = "Weird server reply";
            return -1;
        }
        if (size == 0)
            break;
        if (read_body(io, b, (size_t)size) != 0 || read_line(io, line, sizeof line) != 0) {
            if (!io->err && !b->too_big)
                io->err = "Weird server reply";
            return -1;
        }
    }
    for (;;) { /* trailer fields, up to the empty line */
        ssize_t n = read_line(io, line, sizeof line);
        if (n <= 0)
            return (int)n;
    }
}

typedef struct head {
    long status;
    int http11, close, chunked;
    long long length; /* -1 when not given */
} head_t;

/* Reads the status line and the header fields of one response. 0 or -1. */
static int read_head(io_t *io, head_t *h)
{
    char line[1024];
    if (read_line(io, line, sizeof line) < 0)
        return -1;
    char *e;
    if (strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
        (h->status = strtol(line + 9, &e, 10)) < 100 || h->status > 999 || e != line + 12) {
        io->err = "Weird server reply";
        return -1;
    }
    h->http11 = line[7] == '1';
    h->close = !h->http11;
    h->chunked = 0;
    h->length = -1;
    for (size_t total = 0;;) {
        ssize_t n = read_line(io, line, sizeof line);
        if (n < 0 || (total += (size_t)n) > H1_HEAD_MAX) {
            io->err = io->err ? io->err : "Weird server reply";
            return -1;
        }
        if (n == 0)
            return 0;
        char *v = strchr(line, ':');
        if (!v)
            continue;
        *v++ = '\0';
        v += strspn(v, " \t");
        if (strcasecmp(line, "content-length") == 0) {
            errno = 0;
            h->length = strtoll(v, &e, 10);
            if (errno || e == v || h->length < 0) {
                io->err = "Weird server reply";
                return -1;
            }
        } else if (strcasecmp(line, "transfer-encoding") == 0)
            h->chunked = strcasestr(v, "chunked") != NULL;
        else if (strcasecmp(line, "connection") == 0)
            h->close = strcasestr(v, "close") ? 1 : strcasestr(v, "keep-alive") ? 0 : h->close;
    }
}

/* Appends a formatted header line to the head under H1_HEAD_MAX. 0 or -1. */
static int head_add(char *buf, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, H1_HEAD_MAX - *len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= H1_HEAD_MAX - *len)
        return -1;
    *len += (size_t)n;
    return 0;
}

/* 1 when h is a "Name: value" (or "Name:") header line for name. */
static int header_is(const char *h, const char *name)
{
    size_t n = strlen(name);
    return h && strncasecmp(h, name, n) == 0 && h[n] == ':';
}

/* 1 when the caller gives a header called name: as with libcurl, it replaces the default one,
 * and "Name:" with no value leaves the header out. */
static int caller_has(const httpc_req_t *req, const char *name)
{
    if (header_is(req->extra_header, name))
        return 1;
    for (const char *const *x = req->headers; x && *x; x++)
        if (header_is(*x, name))
            return 1;
    return 0;
}

/* Appends the caller's header h unless it is empty ("Name:") or would break the head. 0 or -1. */
static int caller_add(char *head, size_t *len, const char *h)
{
    const char *v = strchr(h, ':');
    if (!v || !v[1 + strspn(v + 1, " \t")] || strpbrk(h, "\r\n"))
        return 0;
    return head_add(head, len, "%s\r\n", h);
}

/* The request head of req into head (H1_HEAD_MAX bytes). Its length, or 0 when it is too long. */
static size_t build_head(char *head, const httpc_req_t *req, const target_t *t)
{
    size_t len = 0;
    int bad = head_add(head, &len, "%s %s%.*s HTTP/1.1\r\n", req->method,
                       t->path[0] == '/' ? "" : "/", (int)t->path_len, t->path) != 0;
    if (!bad && !caller_has(req, "Host"))
        bad = head_add(head, &len, "Host: %s\r\n", t->hostport) != 0;
    if (!bad && !caller_has(req, "Accept"))
        bad = head_add(head, &len, "Accept: */*\r\n") != 0;
    if (!bad && req->bearer)
        bad = head_add(head, &len, "Authorization: Bearer %s\r\n", req->bearer) != 0;
    if (!bad && req->extra_header)
        bad = caller_add(head, &len, req->extra_header) != 0;
    for (const char *const *x = req->headers; !bad && x && *x; x++)
        bad = caller_add(head, &len, *x) != 0;
    if (!bad && req->body && !caller_has(req, "Content-Type"))
        bad = head_add(head, &len, "Content-Type: %s\r\n",
                       req->content_type ? req->content_type : "application/json") != 0;
    int sized = req->body || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0;
    if (!bad && sized)
        bad = head_add(head, &len, "Content-Length: %zu\r\n", req->body ? req->body_len : 0) != 0;
    if (!bad)
        bad = head_add(head, &len, "\r\n") != 0;
    return bad ? 0 : len;
}

/* Writes req's head and body. 0 or -1. */
static int send_request(io_t *io, const httpc_req_t *req, const target_t *t)
{
    char *head = malloc(H1_HEAD_MAX);
    size_t len = head ? build_head(head, req, t) : 0;
    if (len == 0) {
        io->err = head ? "request headers too large" : "out of memory";
        free(head);
        return -1;
    }
    struct iovec iov[2] = {{head, len}, {(void *)req->body, req->body ? req->body_len : 0}};
    int rc = send_all(io, iov, req->body && req->body_len ? 2 : 1);
    free(head);
    return rc;
}

/* Reads one final response (1xx answers skipped) into b. 0 or -1; *keep says whether the
 * connection may carry the next request. */
static int read_response(io_t *io, const httpc_req_t *req, body_t *b, int *keep)
{
    head_t h;
    do {
        if (read_head(io, &h) != 0)
            return -1;
    } while (h.status < 200);
    b->r->status = h.status;
    int rc = 0;
    int none = strcmp(req->method, "HEAD") == 0 || h.status == 204 || h.status == 304;
    if (none)
        ;
    else if (h.chunked)
        rc = read_chunked(io, b);
    else if (h.length >= 0)
        rc = read_body(io, b, (size_t)h.length);
    else {
        rc = read_body(io, b, SIZE_MAX);
        h.close = 1;
    }
    *keep = rc == 0 && !h.close && io->off == io->len && !(io->ssl && SSL_pending(io->ssl));
    return rc;
}

/* Forgets the TLS session kept for resumption. */
static void forget_session(http1_conn_t *c)
{
    if (c->session)
        SSL_SESSION_free(c->session);
    c->session = NULL;
}

/* Keeps a copy of the session of c's TLS connection (its newest ticket), for the next connection
 * with the same key to resume without a full handshake, as libcurl's session cache does. A copy:
 * libssl marks the connection's own one not resumable when it is freed without a close_notify. */
static void keep_session(http1_conn_t *c)
{
    SSL_SESSION *s = SSL_get0_session(c->ssl);
    if (!s || !SSL_SESSION_is_resumable(s))
        return;
    forget_session(c);
    c->session = SSL_SESSION_dup(s);
    snprintf(c->session_key, sizeof c->session_key, "%s", c->key);
}

/* Closes c's connection (its TLS session too, kept for resumption when it served a response);
 * its TLS settings stay for the next. */
static void drop(http1_conn_t *c)
{
    if (c->ssl && c->served)
        keep_session(c);
    if (c->ssl)
        SSL_free(c->ssl); /* no close_notify: the BIO's request is over */
    c->ssl = NULL;
    c->served = 0;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->key[0] = '\0';
}

void http1_close(http1_conn_t *c)
{
    drop(c);
    forget_session(c);
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    c->ctx = NULL;
}

/* The socket BIO under TLS: send and recv on io->fd, waiting (io_wait) until the deadline, so
 * that OpenSSL sees a blocking socket that honours the request's deadline and abort flag, and
 * writes never raise SIGPIPE (MSG_NOSIGNAL). The BIO's data is the io_t of the current request. */
static int bio_write(BIO *b, const char *p, int n)
{
    io_t *io = BIO_get_data(b);
    while (io) {
        ssize_t w = send(io->fd, p, (size_t)n, MSG_NOSIGNAL);
        if (w >= 0)
            return (int)w;
        if (!send_again(io))
            break;
    }
    return -1;
}

static int bio_read(BIO *b, char *p, int n)
{
    io_t *io = BIO_get_data(b);
    return io ? (int)sock_recv(io, p, (size_t)n) : -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    io_t *io = BIO_get_data(b);
    if (cmd == BIO_CTRL_FLUSH)
        return 1;
    return cmd == BIO_CTRL_EOF && io ? io->eof : 0;
}

static BIO_METHOD *bio_method_made;

static void bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pingvas-http1");
    if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) &&
        BIO_meth_set_ctrl(m, bio_ctrl))
        bio_method_made = m; /* one for the life of the process */
    else
        BIO_meth_free(m);
}

/* The CA file's inode, size and mtime (a rotated file is read again), zeros when it has none. */
static void ca_identity(const char *ca_file, long long id[3])
{
    struct stat st;
    memset(id, 0, 3 * sizeof id[0]);
    if (ca_file && stat(ca_file, &st) == 0) {
        id[0] = (long long)st.st_ino;
        id[1] = (long long)st.st_size;
        id[2] = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    }
}

static pthread_mutex_t system_mu = PTHREAD_MUTEX_INITIALIZER;
static X509_STORE *system_store; /* one for the process: every connection shares it */
static char system_key[1200];    /* the variables it was read with */

/* The system store: the bundle SSL_CERT_FILE and the hashed directories SSL_CERT_DIR name when
 * set (OpenSSL's variables), else OpenSSL's hashed directory (/etc/ssl/certs on Debian), whose
 * certificates are read one at a time as chains need them, or the ca-certificates bundle when
 * there is no such directory (read whole, its 140 CAs cost a worker 0.9 MB). Read once for the
 * process, again when the variables change. A reference the caller owns, or NULL when nothing
 * could be read. */
static X509_STORE *system_trust(void)
{
    const char *file = getenv(X509_get_default_cert_file_env());
    const char *dir = getenv(X509_get_default_cert_dir_env());
    struct stat st;
    if ((!file || !*file) && (!dir || !*dir)) {
        dir = X509_get_default_cert_dir();
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            dir = NULL;
            file = X509_get_default_cert_file();
        }
    }
    char key[sizeof system_key];
    snprintf(key, sizeof key, "%s\n%s", file ? file : "", dir ? dir : "");
    pthread_mutex_lock(&system_mu);
    if (!system_store || strcmp(key, system_key) != 0) {
        X509_STORE *made = X509_STORE_new();
        int ok = made != NULL;
        if (ok && file && *file)
            ok = X509_STORE_load_file(made, file);
        if (ok && dir && *dir)
            ok = X509_STORE_load_path(made, dir);
        if (ok) {
            X509_STORE_free(system_store);
            system_store = made;
            snprintf(system_key, sizeof system_key, "%s", key);
        } else
            X509_STORE_free(made);
    }
    X509_STORE *out = system_store && strcmp(key, system_key) == 0 ? system_store : NULL;
    if (out)
        X509_STORE_up_ref(out);
    pthread_mutex_unlock(&system_mu);
    return out;
}

/* c->ctx for ca_file (NULL: the system store), made or kept. 0, or -1 with io->err set. */
static int tls_settings(http1_conn_t *c, const char *ca_file, io_t *io)
{
    long long id[3];
    ca_identity(ca_file, id);
    const char *ca = ca_file ? ca_file : "";
    if (c->ctx && strcmp(c->ctx_ca, ca) == 0 && memcmp(c->ctx_ca_id, id, sizeof id) == 0)
        return 0;
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    c->ctx = NULL;
    forget_session(c); /* verified with the settings that go */
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int made = ctx && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION), ok = made;
    if (made) {
        SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        X509_STORE *sys = ca_file ? NULL : system_trust();
        if (sys)
            SSL_CTX_set_cert_store(ctx, sys); /* ctx takes the reference */
        ok = ca_file ? SSL_CTX_load_verify_file(ctx, ca_file) : sys != NULL;
    }
    if (ok) {
        c->ctx = ctx;
        snprintf(c->ctx_ca, sizeof c->ctx_ca, "%s", ca);
        memcpy(c->ctx_ca_id, id, sizeof id);
        return 0;
    }
    snprintf(io->msg, sizeof io->msg,
             made ? "Problem with the SSL CA cert (path? access rights?): %s has no certificate "
                    "that can be read"
                  : "SSL: cannot set up OpenSSL (%s)",
             ca_file ? ca_file : "the system store");
    io->err = io->msg;
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return -1;
}

/* Says why the handshake on ssl failed, in io->msg (io->err already set stays), and empties the
 * thread's OpenSSL error queue. */
static void tls_failed(io_t *io, SSL *ssl, const target_t *t)
{
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (!io->err && v != X509_V_OK) {
        snprintf(io->msg, sizeof io->msg, "SSL certificate problem: %s (host %s)",
                 X509_verify_cert_error_string(v), t->host);
        io->err = io->msg;
    } else if (!io->err) {
        snprintf(io->msg, sizeof io->msg, "SSL connect error: %s (host %s)",
                 reason ? reason
                 : e    ? "unknown"
                        : "the peer closed the connection",
                 t->host);
        io->err = io->msg;
    }
    ERR_clear_error();
}

/* The name the certificate must carry: t's host without a trailing dot. 1 when it is an IP. */
static int peer_name(const target_t *t, char *name, size_t size)
{
    snprintf(name, size, "%s", t->host);
    size_t n = strlen(name);
    if (n > 1 && name[n - 1] == '.')
        name[n - 1] = '\0';
    unsigned char addr[16];
    return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* TLS on c's new connection to t (key: its connection key), its peer verified or the session
 * kept for key resumed (connect deadline cdl). 0 or -1. */
static int tls_start(http1_conn_t *c, const httpc_req_t *req, const target_t *t, const char *key,
                     io_t *io, int64_t cdl)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, bio_method_make);
    if (tls_settings(c, req->ca_file, io) != 0)
        return -1;
    BIO *bio = bio_method_made ? BIO_new(bio_method_made) : NULL;
    c->ssl = bio ? SSL_new(c->ctx) : NULL;
    if (!c->ssl) {
        BIO_free(bio);
        io->err = "out of memory";
        return -1;
    }
    BIO_set_data(bio, io);
    BIO_set_init(bio, 1);
    SSL_set_bio(c->ssl, bio, bio);
    if (c->session && strcmp(c->session_key, key) == 0 && !SSL_set_session(c->ssl, c->session))
        forget_session(c);
    char name[256];
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    int ip = peer_name(t, name, sizeof name), ok;
    if (ip) /* no SNI for an address (RFC 6066) */
        ok = X509_VERIFY_PARAM_set1_ip_asc(vp, name);
    else {
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = X509_VERIFY_PARAM_set1_host(vp, name, 0) && SSL_set_tlsext_host_name(c->ssl, name);
    }
    int64_t deadline = io->deadline;
    if (io->deadline > cdl)
        io->deadline = cdl;
    ERR_clear_error();
    ok = ok && SSL_connect(c->ssl) == 1;
    if (!ok && !io->err && io->deadline < deadline && clock_mono_ms() >= io->deadline)
        io->err = "Timeout was reached";
    io->deadline = deadline;
    if (!ok)
        tls_failed(io, c->ssl, t);
    return ok ? 0 : -1;
}

/* One attempt on c: 0, or -1 with *retry set when a reused connection died before answering. */
static int attempt(http1_conn_t *c, const httpc_req_t *req, const target_t *t, io_t *io, body_t *b,
                   int *retry)
{
    char key[sizeof c->key];
    snprintf(key, sizeof key, "%s %s %s %s", t->tls ? "https" : "http", t->host, t->port,
             t->tls && req->ca_file ? req->ca_file : "");
    int reused = c->fd >= 0 && strcmp(c->key, key) == 0;
    *retry = 0; /* a new connection that cannot be made is not retried either */
    if (!reused) {
        drop(c);
        int64_t cdl = clock_mono_ms() + H1_CONNECT_TIMEOUT_MS;
        if (connect_to(io, t, req->resolve, cdl) != 0)
            return -1;
        c->fd = io->fd;
        if (t->tls && tls_start(c, req, t, key, io, cdl) != 0) {
            drop(c);
            return -1;
        }
        snprintf(c->key, sizeof c->key, "%s", key);
    }
    io->fd = c->fd;
    io->ssl = c->ssl;
    if (c->ssl)
        BIO_set_data(SSL_get_rbio(c->ssl), io);
    int keep = 0;
    int rc = send_request(io, req, t);
    if (rc == 0)
        rc = read_response(io, req, b, &keep);
    if (c->ssl) {
        BIO_set_data(SSL_get_rbio(c->ssl), NULL); /* io ends with this attempt */
        c->served |= rc == 0;
    }
    if (!keep)
        drop(c);
    *retry = rc != 0 && reused && io->got == 0 && !b->too_big && !(io->abort && *io->abort) &&
             clock_mono_ms() < io->deadline;
    return rc;
}

int http1_do(http1_conn_t *c, const httpc_req_t *req, httpc_resp_t *out)
{
    memset(out, 0, sizeof *out);
    target_t t;
    if (split_url(req->url, &t) != 0) {
        snprintf(out->error, sizeof out->error, "URL using bad/illegal format or missing URL");
        return -1;
    }
    body_t b = {.r = out, .cap = req->max_response ? req->max_response : HTTPC_RESPONSE_MAX};
    int retry = 0, rc;
    int64_t deadline = clock_mono_ms() + (req->timeout_ms > 0 ? req->timeout_ms : 30000);
    do {
        io_t *io = malloc(sizeof *io);
        if (!io) {
            snprintf(out->error, sizeof out->error, "out of memory");
            return -1;
        }
        *io = (io_t){.fd = -1, .deadline = deadline, .abort = req->abort_flag};
        rc = attempt(c, req, &t, io, &b, &retry);
        if (rc != 0 && !retry) {
            if (b.too_big)
                snprintf(out->error, sizeof out->error, "response larger than %zu bytes", b.cap);
            else
                snprintf(out->error, sizeof out->error, "%s", io->err ? io->err : "out of memory");
        }
        free(io);
        if (rc != 0) { /* a failed attempt keeps nothing of its answer */
            free(out->body);
            out->body = NULL;
            out->len = 0;
            b.alloc = 0;
            out->status = 0;
        }
    } while (rc != 0 && retry); /* a retry runs on a new connection, which never retries */
    return rc;
}
