/* front_probe.c: the HTTP fronts measured before choosing pingvas's (bench/RESULTS.md, "The HTTP
 * front"). Each answers every request with the same small JSON 201 once its body is read, so
 * wrk measures the front alone (no store, no JSON parsing):
 *
 *   apt-get install libevent-dev   (only for this probe; pingvas does not use libevent)
 *   cc -O2 -o /tmp/front_probe bench/front_probe.c -lmicrohttpd -levent
 *   /tmp/front_probe tpc|epoll|libevent PORT [POOL]
 *   wrk -t2 -c64 -d5s -s bench/create.lua http://127.0.0.1:PORT/   (PINGVAS_TOKEN=x)
 *
 * tpc: libmicrohttpd, a thread per connection (pingvas before issue 12); epoll: libmicrohttpd's
 * MHD_USE_EPOLL_INTERNAL_THREAD with a pool of POOL threads and suspend/resume allowed (what
 * pingvas runs now); libevent: libevent 2.1's evhttp on one event loop. Not built by CMake. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char BODY[] = "{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"queued\"}";

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *up,
                                  size_t *up_size, void **con_cls)
{
    static int seen;
    if (!*con_cls) {
        *con_cls = &seen;
        return MHD_YES;
    }
    if (*up_size) {
        *up_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(BODY), (void *)BODY, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, 201, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_evhttp(struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, BODY, strlen(BODY));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 201, "Created", b);
    evbuffer_free(b);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: front_probe tpc|epoll|libevent PORT [POOL]\n");
        return 2;
    }
    unsigned port = (unsigned)strtoul(argv[2], NULL, 10);
    unsigned pool = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 4;
    if (strcmp(argv[1], "libevent") == 0) {
        struct event_base *base = event_base_new();
        struct evhttp *h = evhttp_new(base);
        evhttp_set_gencb(h, on_evhttp, NULL);
        if (evhttp_bind_socket(h, "127.0.0.1", (unsigned short)port) != 0)
            return 1;
        return event_base_dispatch(base);
    }
    struct MHD_Daemon *d;
    if (strcmp(argv[1], "tpc") == 0)
        d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                 MHD_USE_POLL,
                             (uint16_t)port, NULL, NULL, on_request, NULL,
                             MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_END);
    else
        d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
                             (uint16_t)port, NULL, NULL, on_request, NULL,
                             MHD_OPTION_THREAD_POOL_SIZE, pool, MHD_OPTION_CONNECTION_LIMIT, 4096u,
                             MHD_OPTION_END);
    if (!d)
        return 1;
    for (;;)
        pause();
}
