/* test_pg_stall.c: the PostgreSQL store against a stalled database (store_pg.c, stalled_at and
 * the probe). The store reaches the test's PostgreSQL (PINGVAS_TEST_PG_URL) through a loopback
 * gate: open, it forwards both ways; shut, it accepts connections and holds every byte, as a
 * SIGSTOPped server does (its kernel still accepts and acknowledges). Checked: an operation
 * during the stall gives up with "no answer within"; after that, of several operations started
 * together, one tries the database (and gives up in turn) and the others fail at once saying an
 * operation is trying it again; once the gate opens, the next operation gets through and the
 * store is back to normal. */
#include "t.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "store/store.h"

#ifdef PINGVAS_HAVE_PQ
#include "t_pg.h"
#endif

#ifdef PINGVAS_HAVE_PQ

#define MAX_PAIRS 64

typedef struct gate {
    int lfd, port;
    struct sockaddr_storage up; /* the real PostgreSQL */
    socklen_t up_len;
    atomic_int open, stop;
    pthread_t thread;
} gate_t;

/* Moves what is readable on from to to (only while the gate is open). -1 when from closed. */
static int pump(gate_t *g, int from, int to)
{
    char buf[16384];
    if (!atomic_load(&g->open))
        return 0;
    ssize_t n = recv(from, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0)
        return -1;
    for (ssize_t off = 0; n > 0 && off < n;) {
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        off += w;
    }
    return 0;
}

/* Accepts clients, connects each to the real PostgreSQL, forwards while open. */
static void *gate_main(void *arg)
{
    gate_t *g = arg;
    int fds[MAX_PAIRS][2], n = 0;
    while (!atomic_load(&g->stop)) {
        struct pollfd p[1 + 2 * MAX_PAIRS];
        p[0] = (struct pollfd){.fd = g->lfd, .events = POLLIN};
        for (int i = 0; i < n; i++) {
            short ev = atomic_load(&g->open) ? POLLIN : 0;
            p[1 + 2 * i] = (struct pollfd){.fd = fds[i][0], .events = ev};
            p[2 + 2 * i] = (struct pollfd){.fd = fds[i][1], .events = ev};
        }
        if (poll(p, (nfds_t)(1 + 2 * n), 20) < 0)
            continue;
        if ((p[0].revents & POLLIN) && n < MAX_PAIRS) {
            int c = accept(g->lfd, NULL, NULL), u = socket(g->up.ss_family, SOCK_STREAM, 0);
            if (c >= 0 && u >= 0 && connect(u, (struct sockaddr *)&g->up, g->up_len) == 0) {
                fds[n][0] = c, fds[n][1] = u, n++;
            } else {
                if (c >= 0)
                    close(c);
                if (u >= 0)
                    close(u);
            }
        }
        for (int i = 0; i < n; i++) {
            int bad = ((p[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                       pump(g, fds[i][0], fds[i][1]) != 0) ||
                      ((p[2 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                       pump(g, fds[i][1], fds[i][0]) != 0);
            if (bad) {
                close(fds[i][0]);
                close(fds[i][1]);
                fds[i][0] = fds[--n][0], fds[i][1] = fds[n][1];
                i--;
            }
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i][0]), close(fds[i][1]);
    return NULL;
}

/* A gate in front of host:port, listening on 127.0.0.1 (g->port). 0 or -1. */
static int gate_start(gate_t *g, const char *host, const char *port)
{
    memset(g, 0, sizeof *g);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
        return -1;
    memcpy(&g->up, ai->ai_addr, ai->ai_addrlen);
    g->up_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    g->lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (g->lfd < 0 || bind(g->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(g->lfd, 64) ||
        getsockname(g->lfd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    g->port = ntohs(a.sin_port);
    atomic_store(&g->open, 1);
    return pthread_create(&g->thread, NULL, gate_main, g) == 0 ? 0 : -1;
}

static void gate_stop(gate_t *g)
{
    atomic_store(&g->stop, 1);
    pthread_join(g->thread, NULL);
    close(g->lfd);
}

/* The admin URL's host and port (into host, pgport), and the URL of database db with them
 * replaced by 127.0.0.1:port (into out; port 0: left as they are). 0 or -1. */
static int gated_url(const char *admin, int port, const char *db, char *host, char *pgport,
                     char *out, size_t n)
{
    CURLU *u = curl_url();
    char *h = NULL, *p = NULL, *s = NULL, num[16], path[80];
    snprintf(num, sizeof num, "%d", port);
    snprintf(path, sizeof path, "/%s", db);
    int ok = u && curl_url_set(u, CURLUPART_URL, admin, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT) == CURLUE_OK &&
             (port == 0 || (curl_url_set(u, CURLUPART_HOST, "127.0.0.1", 0) == CURLUE_OK &&
                            curl_url_set(u, CURLUPART_PORT, num, 0) == CURLUE_OK)) &&
             curl_url_set(u, CURLUPART_PATH, path, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK;
    if (ok) {
        snprintf(host, 256, "%s", h);
        snprintf(pgport, 16, "%s", p ? p : "5432");
        snprintf(out, n, "%s", s);
    }
    curl_free(h), curl_free(p), curl_free(s);
    curl_url_cleanup(u);
    return ok ? 0 : -1;
}

typedef struct probe_arg {
    store_t *s;
    int rc;
    char msg[512];
} probe_arg_t;

static void *one_ping(void *arg)
{
    probe_arg_t *a = arg;
    a->rc = store_ping(a->s);
    snprintf(a->msg, sizeof a->msg, "%s", a->rc == STORE_OK ? "" : store_last_error(a->s));
    return NULL;
}

static void test_stall_probe_and_recovery(void)
{
    const char *admin = getenv("PINGVAS_TEST_PG_URL"),
               *req = getenv("PINGVAS_TEST_STORE_REQUIRE_PG");
    if (!admin || !*admin) {
        printf(
            "NOT RUN: PINGVAS_TEST_PG_URL is not set (eval \"$(scripts/services/postgres.sh)\")\n");
        CHECK(!req || strcmp(req, "1") != 0); /* required where the production stack is tested */
        return;
    }
    char host[256], port[16], url[1024], err[256] = "", db[64];
    gate_t g;
    snprintf(db, sizeof db, "pv_stall_%d", (int)getpid());
    CHECK(gated_url(admin, 0, "postgres", host, port, url, sizeof url) == 0);
    CHECK(t_pg_create(admin, db, url, sizeof url) == 0);
    CHECK(gate_start(&g, host, port) == 0);
    CHECK(gated_url(admin, g.port, db, host, port, url, sizeof url) == 0);
    setenv("PINGVAS_PG_TIMEOUT", "1s", 1);
    store_t *s = store_open(url, err, sizeof err);
    CHECK(s != NULL);
    if (!s)
        fprintf(stderr, "store_open: %s\n", err);
    CHECK(s && store_migrate(s) == STORE_OK);
    if (!s) {
        gate_stop(&g);
        return;
    }
    int rc = store_ping(s);
    if (rc != STORE_OK)
        fprintf(stderr, "ping: %s\n", store_last_error(s));
    CHECK_INT(rc, STORE_OK);

    atomic_store(&g.open, 0); /* the database stalls */
    CHECK(store_ping(s) != STORE_OK);
    CHECK(strstr(store_last_error(s), "no answer within 1000 ms") != NULL);

    /* Four operations together: one probe (which gives up in turn), three failed at once. */
    probe_arg_t a[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (probe_arg_t){.s = s};
        pthread_create(&t[i], NULL, one_ping, &a[i]);
    }
    int waited = 0, fast = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(a[i].rc != STORE_OK);
        if (strstr(a[i].msg, "an operation is trying it again"))
            fast++;
        else if (strstr(a[i].msg, "no answer within 1000 ms"))
            waited++;
    }
    CHECK_INT(waited, 1);
    CHECK_INT(fast, 3);

    atomic_store(&g.open, 1); /* it resumes: the next operation gets through, then all do */
    CHECK_INT(store_ping(s), STORE_OK);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, one_ping, &a[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(a[i].rc, STORE_OK);
    }
    store_close(s);
    gate_stop(&g);
    unsetenv("PINGVAS_PG_TIMEOUT");
    CHECK(t_pg_drop(admin, db) == 0);
}

#define TESTS(X) X(test_stall_probe_and_recovery)
#include "t_main.h"

#else
int main(void)
{
    printf("NOT RUN: this build has no libpq\n");
    return 0;
}
#endif
