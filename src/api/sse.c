/* sse.c: the Server-Sent Events stream of GET /api/v1/events (sse.h). */
#include "api/sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"

typedef struct sse {
    hub_t *hub;
    store_t *store;
    struct MHD_Connection *c;
    char user[USER_NAME_MAX + 1]; /* "" for an operator: every event */
    int all;
    char key[USER_NAME_MAX + 8]; /* the hub_stream_acquire key */
    int64_t cursor;              /* the last event sent */
    uint64_t gen;                /* hub generation at the last look */
    int64_t keepalive_at;        /* hub_now_ms() of the next comment */
    int64_t keepalive_ms;
    char *buf;
    size_t len, off, cap;
} sse_t;

/* Appends text to the unsent buffer (capped at SSE_BUF_MAX). 0 or -1. */
static int put(sse_t *s, const char *text, size_t n)
{
    if (s->len + n > s->cap) {
        size_t ncap = s->cap ? s->cap : 4096;
        while (ncap < s->len + n)
            ncap *= 2;
        if (ncap > SSE_BUF_MAX)
            return -1;
        char *nb = realloc(s->buf, ncap);
        if (!nb)
            return -1;
        s->buf = nb;
        s->cap = ncap;
    }
    memcpy(s->buf + s->len, text, n);
    s->len += n;
    return 0;
}

/* Appends one event in SSE framing; the data (a JSON object) gets its time first. */
static int put_event(sse_t *s, const store_event_t *e)
{
    char head[160], ts[40];
    clock_format_rfc3339(e->created_at, ts, sizeof ts);
    const char *rest = e->data[0] == '{' ? e->data + 1 : "}";
    int n = snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: {\"time\":\"%s\"%s",
                     (long long)e->seq, e->kind, ts, rest[0] == '}' ? "" : ",");
    if (n < 0 || (size_t)n >= sizeof head)
        return -1;
    /* the data is compact JSON from the store: no newline can break the framing */
    if (strchr(rest, '\n'))
        return -1;
    return put(s, head, (size_t)n) || put(s, rest, strlen(rest)) || put(s, "\n\n", 2) ? -1 : 0;
}

/* Reads the events after the cursor up to the hub's watermark into the buffer. 1 when it added
 * something, 0 when there was nothing, -1 on a store error. */
static int look(sse_t *s)
{
    s->gen = hub_gen(s->hub);
    int64_t wm = hub_watermark(s->hub);
    if (s->cursor >= wm)
        return 0;
    store_event_t *v = NULL;
    size_t n = 0;
    if (store_events_read(s->store, s->cursor, wm, s->all ? NULL : s->user, SSE_BATCH, &v, &n) !=
        STORE_OK) {
        log_warn("event=sse_read_failed err=\"%s\"", store_last_error(s->store));
        return -1;
    }
    int added = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        if (put_event(s, &v[i]) != 0) {
            if (added)
                break; /* the rest after this part is sent */
            log_warn("event=sse_event_skipped seq=%lld", (long long)v[i].seq);
        } else {
            added = 1;
        }
        s->cursor = v[i].seq;
    }
    if (i == n && n < SSE_BATCH && s->cursor < wm)
        s->cursor = wm; /* nothing else of ours up to the watermark */
    store_events_free(v, n);
    return added;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    sse_t *s = cls;
    (void)pos;
    for (;;) {
        if (s->off < s->len) {
            size_t n = s->len - s->off < max ? s->len - s->off : max;
            memcpy(out, s->buf + s->off, n);
            s->off += n;
            if (s->off == s->len)
                s->off = s->len = 0;
            return (ssize_t)n;
        }
        if (hub_stopping(s->hub))
            return MHD_CONTENT_READER_END_OF_STREAM;
        uint64_t gen = s->gen;
        int r = look(s);
        if (r < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR; /* the client reconnects and resumes */
        if (r > 0)
            continue;
        int64_t now = hub_now_ms();
        if (now >= s->keepalive_at) {
            s->keepalive_at = now + s->keepalive_ms;
            if (put(s, ": keep-alive\n\n", 14) != 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        if (s->gen != gen)
            continue; /* moved while we looked */
        if (hub_client_gone(s->c))
            return MHD_CONTENT_READER_END_WITH_ERROR; /* frees its stream slot at once */
        int64_t until =
            now + SSE_GONE_CHECK_MS < s->keepalive_at ? now + SSE_GONE_CHECK_MS : s->keepalive_at;
        if (hub_wait(s->hub, s->c, s->gen, until) == HUB_PARKED)
            return 0;
    }
}

static void sse_free(void *cls)
{
    sse_t *s = cls;
    hub_stream_release(s->hub, s->key);
    free(s->buf);
    free(s);
}

struct MHD_Response *sse_response(hub_t *h, store_t *st, struct MHD_Connection *c, const char *user,
                                  const char *user_key, int64_t last_id, int64_t keepalive_ms)
{
    sse_t *s = calloc(1, sizeof *s);
    if (!s) {
        hub_stream_release(h, user_key);
        return NULL;
    }
    s->hub = h;
    s->store = st;
    s->c = c;
    s->all = user == NULL;
    snprintf(s->user, sizeof s->user, "%s", user ? user : "");
    snprintf(s->key, sizeof s->key, "%s", user_key);
    s->gen = hub_gen(h);
    s->cursor = last_id >= 0 ? last_id : hub_watermark(h);
    s->keepalive_ms = keepalive_ms > 0 ? keepalive_ms : SSE_KEEPALIVE_MS;
    s->keepalive_at = hub_now_ms() + s->keepalive_ms;
    /* the first bytes go out at once: the client sees the stream open */
    if (put(s, "retry: 2000\n: connected\n\n", 25) != 0) {
        sse_free(s);
        return NULL;
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, s, sse_free);
    if (!r) {
        sse_free(s);
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return r;
}
