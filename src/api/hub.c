/* hub.c: follows the store's event log and wakes the requests waiting for it (hub.h). */
#include "api/hub.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/log.h"

#define HUB_TICK_MS 200         /* the log is read at least this often (other replicas) */
#define HUB_TRIM_EVERY_MS 60000 /* retention runs this often */
#define HUB_READ_BATCH 1000     /* events looked at per read of the log */
#define HUB_STREAM_USERS 1024   /* distinct users with open streams (cap of the table) */

typedef struct parked {
    struct MHD_Connection *c;
    uint64_t gen;
    int64_t deadline_ms;
} parked_t;

typedef struct stream_count {
    char user[USER_NAME_MAX + 1];
    int n;
} stream_count_t;

struct hub {
    store_t *store;
    int suspend; /* the daemon allows suspend/resume */
    pthread_t thread;
    int started;
    atomic_int stopping;

    pthread_mutex_t mu;
    pthread_cond_t cv;    /* CLOCK_MONOTONIC; broadcast when gen moves or the hub stops */
    _Atomic uint64_t gen; /* moved under mu; hub_gen reads it without (every GET reads it) */
    int64_t watermark;
    int kicked;
    int deferred;   /* kicked while nobody waited: read at the tick or when one waits (hub_kick) */
    int nstreams;   /* open event streams */
    uint64_t reads; /* reads of the log done (under mu) */
    parked_t *parked; /* suspended connections, resumed by the hub thread */
    size_t nparked, capparked;
    stream_count_t streams[HUB_STREAM_USERS];
    json_t *failures[HUB_FAILURES]; /* ring of the newest failed-job events */
    size_t nfailures;               /* total kept so far */

    /* hub thread only */
    hub_gap_t gap;
    int64_t last_trim_ms;
    int read_failing; /* the last read of the log failed (logged once) */
};

int hub_client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
        return 1;
    if (p.revents & POLLIN) {
        char b;
        return recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
    }
    return 0;
}

int64_t hub_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec mono_at(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    return ts;
}

int64_t hub_advance(const store_event_t *v, size_t n, int64_t wm, int64_t now, hub_gap_t *gap)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i].seq != wm + 1) {
            if (gap->at != wm) {
                gap->at = wm;
                gap->since_ms = now;
            }
            if (now - gap->since_ms < HUB_GAP_WAIT_MS)
                break;
            log_warn("event=event_gap after=%lld next=%lld", (long long)wm, (long long)v[i].seq);
        }
        wm = v[i].seq;
    }
    return wm;
}

/* Keeps the failed-job events among v[0..n) (seq <= upto) in the ring. Called with mu held. */
static void keep_failures(hub_t *h, const store_event_t *v, size_t n, int64_t upto)
{
    for (size_t i = 0; i < n && v[i].seq <= upto; i++) {
        if (strcmp(v[i].kind, "job") != 0 || !strstr(v[i].data, "\"status\":\"failed\""))
            continue;
        json_t *o = json_loads(v[i].data, 0, NULL);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        char ts[40];
        clock_format_rfc3339(v[i].created_at, ts, sizeof ts);
        json_object_set_new(o, "time", json_string(ts));
        json_object_set_new(o, "user", json_string(v[i].user));
        json_t **slot = &h->failures[h->nfailures++ % HUB_FAILURES];
        json_decref(*slot);
        *slot = o;
    }
}

json_t *hub_failures(hub_t *h)
{
    json_t *a = json_array();
    pthread_mutex_lock(&h->mu);
    size_t kept = h->nfailures < HUB_FAILURES ? h->nfailures : HUB_FAILURES;
    for (size_t i = 0; i < kept; i++)
        json_array_append(a, h->failures[(h->nfailures - 1 - i) % HUB_FAILURES]);
    pthread_mutex_unlock(&h->mu);
    return a;
}

/* Resumes the parked connections whose generation moved or whose deadline passed (all of them
 * when stopping). Called with mu held. */
static void resume_due(hub_t *h, int64_t now, int all)
{
    size_t k = 0;
    for (size_t i = 0; i < h->nparked; i++) {
        parked_t *p = &h->parked[i];
        if (all || p->gen != h->gen || p->deadline_ms <= now)
            MHD_resume_connection(p->c);
        else
            h->parked[k++] = *p;
    }
    h->nparked = k;
}

/* Reads the log after the watermark and moves it; bumps the generation when it moved. */
static void hub_step(hub_t *h)
{
    store_event_t *v = NULL;
    size_t n = 0;
    int64_t wm = h->watermark; /* written by this thread only */
    if (store_events_read(h->store, wm, INT64_MAX, NULL, HUB_READ_BATCH, &v, &n) != STORE_OK) {
        if (!h->read_failing) /* once per outage, not every tick */
            log_warn("event=events_read_failed err=\"%s\"", store_last_error(h->store));
        h->read_failing = 1;
        return;
    }
    if (h->read_failing)
        log_info("event=events_read_recovered");
    h->read_failing = 0;
    int64_t now = hub_now_ms();
    int64_t nwm = hub_advance(v, n, wm, now, &h->gap);
    pthread_mutex_lock(&h->mu);
    keep_failures(h, v, n, nwm);
    h->reads++;
    if (nwm != wm) {
        h->watermark = nwm;
        h->gen++;
    }
    pthread_cond_broadcast(&h->cv);
    resume_due(h, now, 0);
    pthread_mutex_unlock(&h->mu);
    store_events_free(v, n);
    if (now - h->last_trim_ms >= HUB_TRIM_EVERY_MS) {
        h->last_trim_ms = now;
        if (store_events_trim(h->store, HUB_KEEP_MS, HUB_KEEP_PROGRESS_MS) != STORE_OK)
            log_warn("event=events_trim_failed err=\"%s\"", store_last_error(h->store));
    }
}

/* The next time the hub thread must look: a tick, or an earlier parked deadline. */
static int64_t next_wake(hub_t *h, int64_t now)
{
    int64_t t = now + HUB_TICK_MS;
    for (size_t i = 0; i < h->nparked; i++)
        if (h->parked[i].deadline_ms < t)
            t = h->parked[i].deadline_ms;
    return t;
}

static void *hub_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-events"); /* top -H, perf */
    hub_t *h = arg;
    while (!atomic_load(&h->stopping)) {
        hub_step(h);
        pthread_mutex_lock(&h->mu);
        struct timespec ts = mono_at(next_wake(h, hub_now_ms()));
        while (!h->kicked && !atomic_load(&h->stopping))
            if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) != 0)
                break;
        h->kicked = 0;
        h->deferred = 0; /* the read that follows sees what was deferred */
        pthread_mutex_unlock(&h->mu);
    }
    return NULL;
}

/* Fills the failure ring from the newest HUB_PRIME events of the log (best effort). */
#define HUB_PRIME 20000
static void prime_failures(hub_t *h)
{
    store_event_t *v = NULL;
    size_t n = 0;
    int64_t from = h->watermark > HUB_PRIME ? h->watermark - HUB_PRIME : 0;
    if (store_events_read(h->store, from, h->watermark, NULL, HUB_PRIME, &v, &n) != STORE_OK)
        return;
    pthread_mutex_lock(&h->mu);
    keep_failures(h, v, n, h->watermark);
    pthread_mutex_unlock(&h->mu);
    store_events_free(v, n);
}

hub_t *hub_start(store_t *store, char *err, size_t errlen)
{
    hub_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->store = store;
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    h->gap.at = -1;
    h->last_trim_ms = hub_now_ms() - HUB_TRIM_EVERY_MS; /* trim once at start */
    if (store_events_last(store, &h->watermark) != STORE_OK) {
        snprintf(err, errlen, "reading the event log: %s", store_last_error(store));
        hub_free(h);
        return NULL;
    }
    prime_failures(h);
    if (pthread_create(&h->thread, NULL, hub_main, h) != 0) {
        snprintf(err, errlen, "cannot start the event hub thread");
        hub_free(h);
        return NULL;
    }
    h->started = 1;
    return h;
}

void hub_set_daemon(hub_t *h, struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_FLAGS);
    h->suspend = i && (i->flags & MHD_ALLOW_SUSPEND_RESUME) == MHD_ALLOW_SUSPEND_RESUME &&
                 !(i->flags & MHD_USE_THREAD_PER_CONNECTION);
}

/* Wakes the hub thread to read the log now, under mu. */
static void wake(hub_t *h)
{
    h->deferred = 0;
    h->kicked = 1;
    pthread_cond_broadcast(&h->cv);
}

/* With nobody waiting on the log (no request parked, no stream open) the read is left to the
 * tick or to the next request that waits (hub_wait) or opens a stream: every create batch and
 * every complete kicks, and on PostgreSQL each read is a round trip nobody would look at. */
void hub_kick(hub_t *h)
{
    pthread_mutex_lock(&h->mu);
    if (h->nparked > 0 || h->nstreams > 0)
        wake(h);
    else
        h->deferred = 1;
    pthread_mutex_unlock(&h->mu);
}

uint64_t hub_gen(hub_t *h)
{
    return atomic_load(&h->gen);
}

int64_t hub_watermark(hub_t *h)
{
    pthread_mutex_lock(&h->mu);
    int64_t w = h->watermark;
    pthread_mutex_unlock(&h->mu);
    return w;
}

int hub_stopping(hub_t *h)
{
    return atomic_load(&h->stopping);
}

/* Parks c (suspended) until the hub thread resumes it. Called with mu held. 0 or -1 (no memory:
 * the caller waits by polling instead). */
static int park(hub_t *h, struct MHD_Connection *c, uint64_t gen, int64_t deadline_ms)
{
    if (h->nparked == h->capparked) {
        size_t ncap = h->capparked ? h->capparked * 2 : 64;
        parked_t *np = realloc(h->parked, ncap * sizeof *np);
        if (!np)
            return -1;
        h->parked = np;
        h->capparked = ncap;
    }
    MHD_suspend_connection(c);
    h->parked[h->nparked++] = (parked_t){.c = c, .gen = gen, .deadline_ms = deadline_ms};
    if (deadline_ms < hub_now_ms() + HUB_TICK_MS)
        wake(h); /* the hub thread sleeps until its tick: look at this deadline sooner */
    return 0;
}

int hub_wait(hub_t *h, struct MHD_Connection *c, uint64_t gen, int64_t deadline_ms)
{
    int rc = HUB_WOKE;
    pthread_mutex_lock(&h->mu);
    if (h->deferred)
        wake(h); /* an event nobody waited for yet: read it now, this request waits */
    if (h->gen != gen || atomic_load(&h->stopping) || hub_now_ms() >= deadline_ms)
        goto out;
    if (h->suspend && park(h, c, gen, deadline_ms) == 0) {
        rc = HUB_PARKED;
        goto out;
    }
    struct timespec ts = mono_at(h->suspend ? hub_now_ms() + 50 : deadline_ms);
    while (h->gen == gen && !atomic_load(&h->stopping))
        if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) != 0)
            break;
out:
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int hub_stream_acquire(hub_t *h, const char *user, int max)
{
    int rc = -1;
    stream_count_t *free_slot = NULL;
    pthread_mutex_lock(&h->mu);
    for (int i = 0; i < HUB_STREAM_USERS; i++) {
        stream_count_t *sc = &h->streams[i];
        if (sc->n > 0 && strcmp(sc->user, user) == 0) {
            if (sc->n < max) {
                sc->n++;
                rc = 0;
            }
            goto out;
        }
        if (sc->n == 0 && !free_slot)
            free_slot = sc;
    }
    if (free_slot && max > 0) {
        snprintf(free_slot->user, sizeof free_slot->user, "%s", user);
        free_slot->n = 1;
        rc = 0;
    }
out:
    if (rc == 0)
        h->nstreams++;
    if (rc == 0 && h->deferred) {
        /* the stream starts at the watermark: first read what was left for the tick */
        uint64_t r0 = h->reads;
        wake(h);
        struct timespec ts = mono_at(hub_now_ms() + HUB_TICK_MS);
        while (h->reads == r0 && !atomic_load(&h->stopping))
            if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) != 0)
                break;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void hub_stream_release(hub_t *h, const char *user)
{
    pthread_mutex_lock(&h->mu);
    for (int i = 0; i < HUB_STREAM_USERS; i++) {
        if (h->streams[i].n > 0 && strcmp(h->streams[i].user, user) == 0) {
            h->streams[i].n--;
            h->nstreams--;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

void hub_stop(hub_t *h)
{
    if (!h)
        return;
    atomic_store(&h->stopping, 1);
    pthread_mutex_lock(&h->mu);
    pthread_cond_broadcast(&h->cv);
    resume_due(h, hub_now_ms(), 1);
    pthread_mutex_unlock(&h->mu);
    if (h->started)
        pthread_join(h->thread, NULL);
    h->started = 0;
}

void hub_free(hub_t *h)
{
    if (!h)
        return;
    hub_stop(h);
    free(h->parked);
    for (size_t i = 0; i < HUB_FAILURES; i++)
        json_decref(h->failures[i]);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
