/* test_http1.c: the plain HTTP/1.1 transport of httpc (lib/http1.c) against a scripted loopback
 * peer: what it writes, the three ways a body ends (Content-Length, chunked, close), keep-alive
 * and its retry when the peer closed an idle connection, 1xx and 204 answers, the body cap, the
 * abort flag, and which requests it leaves to libcurl. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/http1.h"
#include "t.h"

#define PEER_STEPS 4

typedef struct peer {
    int lfd, port;
    pthread_t thread;
    int nsteps;
    const char *answer[PEER_STEPS]; /* written after reading request i; NULL: write nothing */
    int close_after[PEER_STEPS];    /* close the connection after answering */
    char got[PEER_STEPS][4096];     /* request i as read (head and body) */
    int accepts;
} peer_t;

/* Reads one request (head, then Content-Length bytes of body) into buf. Its length, 0 at EOF. */
static size_t read_request(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
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

static void *peer_main(void *arg)
{
    peer_t *p = arg;
    int fd = -1;
    for (int i = 0; i < p->nsteps; i++) {
        if (fd < 0) {
            fd = accept(p->lfd, NULL, NULL);
            p->accepts++;
        }
        if (read_request(fd, p->got[i], sizeof p->got[i]) == 0) { /* closed before asking */
            close(fd);
            fd = -1;
            continue;
        }
        if (p->answer[i] && write(fd, p->answer[i], strlen(p->answer[i])) < 0)
            break;
        if (!p->answer[i] || p->close_after[i]) {
            if (!p->answer[i]) /* hold the request unanswered until the client gives up */
                while (read(fd, p->got[i] + strlen(p->got[i]), 1) > 0)
                    ;
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
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

static void test_retries_once_when_an_idle_connection_was_closed(void)
{
    peer_t p = {.nsteps = 2,
                .answer = {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                           "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"},
                .close_after = {1, 0}};
    http1_conn_t c;
    char url[128];
    httpc_req_t req = start(&p, &c, url);
    httpc_resp_t r;
    CHECK_INT(http1_do(&c, &req, &r), 0);
    httpc_resp_free(&r);
    /* the peer closed after answering, without saying so: the next request finds the socket
     * dead before any answer byte and goes again on a new connection */
    CHECK_INT(http1_do(&c, &req, &r), 0);
    CHECK_STR(r.body, "b");
    httpc_resp_free(&r);
    http1_close(&c);
    peer_stop(&p);
    CHECK_INT(p.accepts, 2);
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

static void test_takes_plain_http_only(void)
{
    httpc_req_t req = {.method = "GET", .url = "http://[::1]:8080/x"};
    CHECK_INT(http1_takes(&req), 1);
    req.url = "HTTP://example.com";
    CHECK_INT(http1_takes(&req), 1);
    const char *no[] = {"https://example.com/",
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
}

#define TESTS(X)                                                                                   \
    X(test_writes_the_request_and_keeps_the_connection)                                            \
    X(test_chunked_close_and_interim_answers)                                                      \
    X(test_retries_once_when_an_idle_connection_was_closed)                                        \
    X(test_gone_peer_ends_after_one_retry)                                                         \
    X(test_cap_abort_and_refused)                                                                  \
    X(test_takes_plain_http_only)
#include "t_main.h"
