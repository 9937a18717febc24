/* test_http1.c: the HTTP/1.1 transport of httpc (lib/http1.c) against a scripted loopback peer:
 * what it writes, the three ways a body ends (Content-Length, chunked, close), keep-alive and its
 * retry when the peer closed an idle connection, 1xx and 204 answers, the body cap, the abort
 * flag, and which requests it leaves to libcurl. Over https:// the same peer speaks TLS with
 * certificates made at test time (t_tls.h): verified against the request's CA file, SNI, the
 * host name and IP address checks, and the refusals of a wrong name and of an untrusted CA. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/http1.h"
#include "t.h"
#include "t_tls.h"

#define PEER_STEPS 6

typedef struct peer {
    int lfd, port;
    pthread_t thread;
    int nsteps;
    const char *answer[PEER_STEPS]; /* written after reading request i; NULL: write nothing */
    int close_after[PEER_STEPS];    /* close the connection after answering */
    char got[PEER_STEPS][4096];     /* request i as read (head and body) */
    int accepts;
    SSL_CTX *tls;    /* speak TLS with these settings, or NULL */
    char sni[256];   /* the server name the last TLS client sent ("" none) */
    int refused_tls; /* TLS handshakes that failed (the client refused the certificate) */
    int resumed;     /* TLS handshakes that resumed a session */
} peer_t;

typedef struct pconn {
    int fd;
    SSL *ssl;
} pconn_t;

static ssize_t pread_(pconn_t *c, char *buf, size_t n)
{
    return c->ssl ? SSL_read(c->ssl, buf, (int)n) : read(c->fd, buf, n);
}

static ssize_t pwrite_(pconn_t *c, const char *buf, size_t n)
{
    return c->ssl ? SSL_write(c->ssl, buf, (int)n) : write(c->fd, buf, n);
}

static void pclose_(pconn_t *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    *c = (pconn_t){.fd = -1};
}

/* Accepts a connection (and its TLS handshake). 0, or -1 when the handshake failed. */
static int paccept(peer_t *p, pconn_t *c)
{
    c->fd = accept(p->lfd, NULL, NULL);
    p->accepts++;
    if (!p->tls)
        return 0;
    c->ssl = SSL_new(p->tls);
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_accept(c->ssl) != 1) {
        p->refused_tls++;
        pclose_(c);
        return -1;
    }
    p->resumed += SSL_session_reused(c->ssl);
    const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(p->sni, sizeof p->sni, "%s", sni ? sni : "");
    return 0;
}

/* Reads one request (head, then Content-Length bytes of body) into buf. Its length, 0 at EOF. */
static size_t read_request(pconn_t *c, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = pread_(c, buf + n, cap - 1 - n);
        if (r <= 0)
            return 0;
        n += (size_t)r;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n"), *cl = strstr(buf, "Content-Length: ");
        size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
        if (end && n >= (size_t)(end - buf) + 4 + body)
            return n;
    }
}

/* Each step: a request read (on a new connection when there is none; a step whose handshake
 * fails ends there), then its answer. */
static void *peer_main(void *arg)
{
    peer_t *p = arg;
    pconn_t c = {.fd = -1};
    for (int i = 0; i < p->nsteps; i++) {
        if (c.fd < 0 && paccept(p, &c) != 0)
            continue;
        if (read_request(&c, p->got[i], sizeof p->got[i]) == 0) { /* closed before asking */
            pclose_(&c);
            continue;
        }
        if (p->answer[i] && pwrite_(&c, p->answer[i], strlen(p->answer[i])) <= 0)
            break;
        if (!p->answer[i] || p->close_after[i]) {
            if (!p->answer[i]) /* hold the request unanswered until the client gives up */
                while (pread_(&c, p->got[i] + strlen(p->got[i]), 1) > 0)
                    ;
            pclose_(&c);
        }
    }
    pclose_(&c);
    return NULL;
}

static void peer_start(peer_t *p)
{
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK(bind(p->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(p->lfd, 4) == 0);
    CHECK(getsockname(p->lfd, (struct sockaddr *)&a, &al) == 0);
    p->port = ntohs(a.sin_port);
    pthread_create(&p->thread, NULL, peer_main, p);
}

static void peer_stop(peer_t *p)
{
    pthread_join(p->thread, NULL);
    close(p->lfd);
}

static httpc_req_t get_req(const peer_t *p, char *url, size_t size, const char *path)
{
    snprintf(url, size, "http://127.0.0.1:%d%s", p->port, path);
    return (httpc_req_t){.method = "GET", .url = url, .timeout_ms = 10000};
}

/* Starts p; a GET of / on it (url: 128 bytes) with c not connected yet. */
static httpc_req_t start(peer_t *p, http1_conn_t *c, char *url)
{
    peer_start(p);
    *c = (http1_conn_t){.fd = -1};
    return get_req(p, url, 128, "/");
}

/* The certificates of the https:// tests: a CA and the peer's certificate it signs (localhost and
 * 127.0.0.1), and another CA that signed nothing here; the CAs' PEM files. */
static struct {
    t_cert_t ca, server, other;
    char ca_file[64], other_file[64];
} pki;

static void pki_remove(void)
{
    unlink(pki.ca_file);
    unlink(pki.other_file);
    t_cert_free(&pki.ca);
    t_cert_free(&pki.server);
    t_cert_free(&pki.other);
}

/* Starts p as a TLS peer with pki's server certificate; c not connected yet. */
static void tls_start(peer_t *p, http1_conn_t *c)
{
    if (!pki.ca.cert) {
        pki.ca = t_cert_make("pingvas test CA", NULL, NULL);
        pki.server = t_cert_make("peer", &pki.ca, "DNS:localhost,IP:127.0.0.1");
        pki.other = t_cert_make("another CA", NULL, NULL);
        snprintf(pki.ca_file, sizeof pki.ca_file, "/tmp/pv-http1-ca-%d.pem", (int)getpid());
        snprintf(pki.other_file, sizeof pki.other_file, "/tmp/pv-http1-other-%d.pem",
                 (int)getpid());
        t_cert_write(&pki.ca, pki.ca_file);
        t_cert_write(&pki.other, pki.other_file);
        atexit(pki_remove);
    }
    p->tls = SSL_CTX_new(TLS_server_method());
    CHECK(SSL_CTX_use_certificate(p->tls, pki.server.cert) == 1);
    CHECK(SSL_CTX_use_PrivateKey(p->tls, pki.server.key) == 1);
    peer_start(p);
    *c = (http1_conn_t){.fd = -1};
}

static void tls_stop(peer_t *p, http1_conn_t *c)
{
    http1_close(c);
    peer_stop(p);
    SSL_CTX_free(p->tls);
}

/* A request for https://host:port/path that reaches p whatever host says (req->resolve). */
static httpc_req_t tls_req(const peer_t *p, char *url, char *pin, const char *host,
                           const char *path)
{
    int v6 = strchr(host, ':') != NULL;
    snprintf(url, 128, "https://%s%s%s:%d%s", v6 ? "[" : "", host, v6 ? "]" : "", p->port, path);
    snprintf(pin, 128, "%s:%d:127.0.0.1", host, p->port);
    return (httpc_req_t){
        .method = "GET", .url = url, .timeout_ms = 10000, .resolve = pin, .ca_file = pki.ca_file};
}

static void test_writes_the_request_and_keeps_the_connection(void)
{
    peer_t p = {.nsteps = 2,
                .answer = {"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello",
                           "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}};
    peer_start(&p);
    http1_conn_t c = {.fd = -1};
    char url[128];
    httpc_req_t req = get_req(&p, url, sizeof url, "/a/b?x=1#frag");
    req.method = "POST";
    req.bearer = "tok";
    req.extra_header = "X-One: 1";
    const char *more[] = {"X-Two: 2", "Accept:", NULL};
    req.headers = more;
    req.body = "{\"k\":1}";
    req.body_len = 7;
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_INT(r.status, 201);
    CHECK_STR(r.body, "hello");
    CHECK_INT(r.len, 5);
    httpc_resp_free(&r);
    req = get_req(&p, url, sizeof url, "");
    req.extra_header = "accept: application/json"; /* replaces the default */
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "ok");
    httpc_resp_free(&r);
    http1_close(&c);
    peer_stop(&p);
    char want[512];
    snprintf(want, sizeof want,
             "POST /a/b?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" /* "Accept:" dropped it */
             "Authorization: Bearer tok\r\nX-One: 1\r\nX-Two: 2\r\n"
             "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"k\":1}",
             p.port);
    CHECK_STR(p.got[0], want);
    CHECK(strncmp(p.got[1], "GET / HTTP/1.1\r\n", 16) == 0);
    CHECK(strstr(p.got[1], "Content-Length") == NULL);
    CHECK(strstr(p.got[1], "\r\naccept: application/json\r\n") != NULL);
    CHECK(strstr(p.got[1], "*/*") == NULL);
    CHECK_INT(p.accepts, 1); /* one connection carried both */
}

static void test_chunked_close_and_interim_answers(void)
{
    peer_t p = {.nsteps = 3,
                .answer = {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: "
                           "chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-T: 1\r\n\r\n",
                           "HTTP/1.1 204 No Content\r\n\r\n",
                           "HTTP/1.0 200 OK\r\n\r\nuntil the end"},
                .close_after = {0, 0, 1}};
    http1_conn_t c;
    char url[128];
    httpc_req_t req = start(&p, &c, url);
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_STR(r.body, "abcdefg");
    httpc_resp_free(&r);
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_INT(r.status, 204);
    CHECK(r.body == NULL && r.len == 0);
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "until the end");
    CHECK_INT(c.fd, -1); /* HTTP/1.0 without a length: not kept */
    httpc_resp_free(&r);
    peer_stop(&p);
    CHECK_INT(p.accepts, 1);
}

/* The peer closed after answering, without saying so (over TLS: without a close_notify): the
 * next request finds the connection dead before any answer byte and goes again on a new one. */
static void retry_after_idle_close(int tls)
{
    peer_t p = {.nsteps = 2,
                .answer = {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                           "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"},
                .close_after = {1, 0}};
    http1_conn_t c;
    char url[128], pin[128];
    httpc_req_t req;
    if (tls) {
        tls_start(&p, &c);
        req = tls_req(&p, url, pin, "localhost", "/");
    } else
        req = start(&p, &c, url);
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), 0);
    httpc_resp_free(&r);
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "b");
    httpc_resp_free(&r);
    if (tls)
        tls_stop(&p, &c);
    else {
        http1_close(&c);
        peer_stop(&p);
    }
    CHECK_INT(p.accepts, 2);
    CHECK_INT(p.resumed, tls); /* the new TLS connection resumed the first one's session */
}

static void test_retries_once_when_an_idle_connection_was_closed(void)
{
    retry_after_idle_close(0);
    retry_after_idle_close(1);
}

/* The peer went away altogether (a restarted server): the kept connection is dead, and the one
 * retry on a new connection is refused, which ends the request (it went on connecting again and
 * again, a core busy until the request's deadline). */
static void test_gone_peer_ends_after_one_retry(void)
{
    peer_t p = {.nsteps = 1, .answer = {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"}};
    http1_conn_t c;
    char url[128];
    httpc_req_t req = start(&p, &c, url);
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), 0);
    httpc_resp_free(&r);
    peer_stop(&p); /* its connection and its listener closed */
    req.timeout_ms = 600000;
    CHECK_INT(http1_do(&c, &req, &r), -1);
    CHECK_STR(r.error, "Couldn't connect to server");
    http1_close(&c);
}

static void test_cap_abort_and_refused(void)
{
    peer_t p = {.nsteps = 2,
                .answer = {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", NULL}};
    http1_conn_t c;
    char url[128];
    httpc_req_t req = start(&p, &c, url);
    req.max_response = 4;
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), -1);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.error, "response larger than 4 bytes");
    CHECK(r.body == NULL);
    atomic_int flag = 1; /* raised: the unanswered request ends at once */
    req.max_response = 0;
    req.abort_flag = &flag;
    CHECK_INT(http1_do(&c, &req, &r), -1);
    CHECK_STR(r.error, "Callback aborted");
    http1_close(&c);
    peer_stop(&p);
    req.abort_flag = NULL;
    CHECK_INT(http1_do(&c, &req, &r), -1); /* the peer's listener is gone */
    CHECK_STR(r.error, "Couldn't connect to server");
}

static void test_takes_http_and_https(void)
{
    httpc_req_t req = {.method = "GET", .url = "http://[::1]:8080/x"};
    CHECK_INT(http1_takes(&req), 1);
    req.url = "HTTP://example.com";
    CHECK_INT(http1_takes(&req), 1);
    req.url = "https://example.com/";
    CHECK_INT(http1_takes(&req), 1);
    const char *no[] = {"https://user:pw@example.com/",
                        "http://user:pw@example.com/",
                        "http://h:0/",
                        "http://h:99999/",
                        "http://h/a b",
                        "http:///x",
                        "ftp://h/",
                        "http://[::1/"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        req.url = no[i];
        CHECK_INT(http1_takes(&req), 0);
    }
    req.url = "http://h/";
    req.protocols = "https";
    CHECK_INT(http1_takes(&req), 0);
    req.protocols = "http,https";
    CHECK_INT(http1_takes(&req), 1);
    setenv("http_proxy", "http://proxy:3128", 1); /* a proxy is libcurl's business */
    CHECK_INT(http1_takes(&req), 0);
    unsetenv("http_proxy");
    req.url = "https://h/";
    CHECK_INT(http1_takes(&req), 1);
    req.protocols = "http";
    CHECK_INT(http1_takes(&req), 0);
    req.protocols = "https";
    CHECK_INT(http1_takes(&req), 1);
    setenv("HTTPS_PROXY", "http://proxy:3128", 1);
    CHECK_INT(http1_takes(&req), 0);
    unsetenv("HTTPS_PROXY");
}

static void test_https_verifies_the_peer_and_keeps_the_connection(void)
{
    /* steps 2 and 4: the client left the connection for one to another host (read as a close) */
    peer_t p = {.nsteps = 6,
                .answer = {"HTTP/1.1 202 Accepted\r\nContent-Length: 6\r\n\r\nsecret",
                           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "2\r\nok\r\n0\r\n\r\n",
                           NULL, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nip", NULL,
                           "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ndot"}};
    http1_conn_t c;
    tls_start(&p, &c);
    char url[128], pin[128];
    httpc_req_t req = tls_req(&p, url, pin, "localhost", "/a?b=1");
    req.method = "PUT";
    req.bearer = "tls-tok";
    req.body = "{\"tls\":1}";
    req.body_len = 9;
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_INT(r.status, 202);
    CHECK_STR(r.body, "secret");
    httpc_resp_free(&r);
    CHECK_STR(p.sni, "localhost");
    req = tls_req(&p, url, pin, "localhost", "/");
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "ok");
    httpc_resp_free(&r);
    req = tls_req(&p, url, pin, "127.0.0.1", "/"); /* an address: its IP SAN, no SNI */
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "ip");
    httpc_resp_free(&r);
    CHECK_STR(p.sni, "");
    req = tls_req(&p, url, pin, "localhost.", "/"); /* fully qualified: checked without the dot */
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "dot");
    httpc_resp_free(&r);
    CHECK_STR(p.sni, "localhost");
    tls_stop(&p, &c);
    char want[512];
    snprintf(want, sizeof want,
             "PUT /a?b=1 HTTP/1.1\r\nHost: localhost:%d\r\nAccept: */*\r\n"
             "Authorization: Bearer tls-tok\r\nContent-Type: application/json\r\n"
             "Content-Length: 9\r\n\r\n{\"tls\":1}",
             p.port);
    CHECK_STR(p.got[0], want);
    CHECK(strncmp(p.got[1], "GET / HTTP/1.1\r\nHost: localhost:", 32) == 0);
    CHECK(strncmp(p.got[5], "GET / HTTP/1.1\r\nHost: localhost.:", 33) == 0);
    CHECK_INT(p.accepts, 3); /* the first connection carried two requests */
    CHECK_INT(p.refused_tls, 0);
}

/* Each refusal: the request fails with its reason, the peer saw a handshake fail. */
static void refused(http1_conn_t *c, const httpc_req_t *req, const char *why)
{
    httpc_resp_t r;
    CHECK_INT(http1_do(c, req, &r), -1);
    CHECK_INT(r.status, 0);
    if (!strstr(r.error, why)) {
        fprintf(stderr, "refused: error \"%s\" does not say \"%s\"\n", r.error, why);
        t_failed_checks++;
    }
    httpc_resp_free(&r);
}

static void test_https_refuses_a_wrong_name_and_an_untrusted_ca(void)
{
    peer_t p = {.nsteps = 6, .answer = {[5] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nenv"}};
    http1_conn_t c;
    tls_start(&p, &c);
    char url[128], pin[128];
    httpc_req_t req = tls_req(&p, url, pin, "wrong.test", "/");
    refused(&c, &req, "SSL certificate problem: hostname mismatch (host wrong.test)");
    req = tls_req(&p, url, pin, "::1", "/");
    refused(&c, &req, "SSL certificate problem: IP address mismatch (host ::1)");
    req = tls_req(&p, url, pin, "localhost", "/");
    req.ca_file = pki.other_file;
    refused(&c, &req, "SSL certificate problem: unable to get local issuer certificate");
    unsetenv("SSL_CERT_FILE");
    unsetenv("SSL_CERT_DIR");
    req.ca_file = NULL; /* the system store does not know the test CA */
    refused(&c, &req, "SSL certificate problem: unable to get local issuer certificate");
    req.ca_file = "/nonexistent/ca.crt"; /* the handshake never starts: the peer sees a close */
    refused(&c, &req, "Problem with the SSL CA cert (path? access rights?): /nonexistent/ca.crt");
    setenv("SSL_CERT_FILE", pki.ca_file, 1); /* OpenSSL's variable names the system store */
    req.ca_file = NULL;
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "env");
    httpc_resp_free(&r);
    unsetenv("SSL_CERT_FILE");
    tls_stop(&p, &c);
    CHECK_INT(p.refused_tls, 5);
}

/* A plain peer that never answers the handshake: the request's deadline ends it. A raised abort
 * flag ends a request in its handshake too. */
static void test_https_timeout_and_abort(void)
{
    peer_t q = {.nsteps = 1};
    peer_start(&q);
    http1_conn_t c = {.fd = -1};
    char url[128], pin[128];
    httpc_req_t req = tls_req(&q, url, pin, "localhost", "/");
    req.timeout_ms = 200;
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), -1);
    CHECK_STR(r.error, "Timeout was reached");
    http1_close(&c);
    peer_stop(&q);
    peer_t p = {.nsteps = 1};
    tls_start(&p, &c);
    req = tls_req(&p, url, pin, "localhost", "/");
    atomic_int flag = 1;
    req.abort_flag = &flag;
    CHECK_INT(http1_do(&c, &req, &r), -1);
    CHECK_STR(r.error, "Callback aborted");
    tls_stop(&p, &c);
    CHECK_INT(p.refused_tls, 1); /* the peer saw the handshake end */
}

#define TESTS(X)                                                                                   \
    X(test_writes_the_request_and_keeps_the_connection)                                            \
    X(test_chunked_close_and_interim_answers)                                                      \
    X(test_retries_once_when_an_idle_connection_was_closed)                                        \
    X(test_gone_peer_ends_after_one_retry)                                                         \
    X(test_cap_abort_and_refused)                                                                  \
    X(test_takes_http_and_https)                                                                   \
    X(test_https_verifies_the_peer_and_keeps_the_connection)                                       \
    X(test_https_refuses_a_wrong_name_and_an_untrusted_ca)                                         \
    X(test_https_timeout_and_abort)
#include "t_main.h"
