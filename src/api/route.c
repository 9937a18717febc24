/* route.c: the URL routing table of the server, without side effects. */
#include "api/route.h"

#include "core/wire.h" /* the worker protocol's paths */

#include <string.h>

/* If url starts with prefix, copies the next path segment into id (refusing an empty or
 * overlong one) and returns the rest of the path after it ("" or "/..."); else NULL. */
static const char *take_segment(const char *url, const char *prefix, char *id, size_t idsize)
{
    size_t pl = strlen(prefix);
    if (strncmp(url, prefix, pl) != 0)
        return NULL;
    const char *seg = url + pl;
    const char *end = strchr(seg, '/');
    size_t n = end ? (size_t)(end - seg) : strlen(seg);
    if (n == 0 || n >= idsize)
        return NULL;
    memcpy(id, seg, n);
    id[n] = '\0';
    return end ? end : "";
}

int route_is_worker(route_id_t id)
{
    return id >= ROUTE_WORKER_CLAIM && id <= ROUTE_WORKER_NOT_FOUND;
}

void route_parse(const char *method, const char *url, route_t *out)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    const char *rest;
    memset(out, 0, sizeof *out);
    out->id = ROUTE_NOT_FOUND;
    out->arg = "";

    if (strcmp(url, "/healthz") == 0 && get) {
        out->id = ROUTE_HEALTHZ;
    } else if (strcmp(url, "/readyz") == 0 && get) {
        out->id = ROUTE_READYZ;
    } else if (strcmp(url, "/metrics") == 0 && get) {
        out->id = ROUTE_METRICS;
    } else if (strcmp(url, "/") == 0 && get) {
        out->id = ROUTE_DASHBOARD;
    } else if (strncmp(url, "/dashboard/", 11) == 0 && get) {
        out->id = ROUTE_DASHBOARD;
        out->arg = url + 11;
    } else if (strncmp(url, "/images/", 8) == 0 && get) {
        out->id = ROUTE_IMAGE;
        out->arg = url + 8;
    } else if (strncmp(url, "/api/", 5) == 0) {
        out->id = ROUTE_API_NOT_FOUND;
        if (strcmp(url, "/api/v1/generation/create") == 0)
            out->id = post ? ROUTE_CREATE : ROUTE_CREATE_METHOD;
        else if (strcmp(url, "/api/v1/generation") == 0 && get)
            out->id = ROUTE_LIST;
        else if (strcmp(url, "/api/v1/credits") == 0 && get)
            out->id = ROUTE_CREDITS;
        else if (strcmp(url, "/api/v1/queue") == 0 && get)
            out->id = ROUTE_QUEUE;
        else if (strcmp(url, "/api/v1/events") == 0 && get)
            out->id = ROUTE_EVENTS;
        else if (strcmp(url, "/api/v1/fleet") == 0 && get)
            out->id = ROUTE_FLEET;
        else if (strcmp(url, "/api/v1/scaling/events") == 0 && get)
            out->id = ROUTE_SCALING_EVENTS;
        else if (strcmp(url, "/api/v1/cost") == 0 && get)
            out->id = ROUTE_COST;
        else if ((rest = take_segment(url, "/api/v1/generation/", out->job_id, JOB_ID_SIZE))) {
            if (*rest == '\0' && get)
                out->id = ROUTE_JOB_GET;
            else if (strcmp(rest, "/cancel") == 0 && post)
                out->id = ROUTE_JOB_CANCEL;
        }
    } else if (strncmp(url, "/internal/", 10) == 0) {
        out->id = ROUTE_WORKER_NOT_FOUND;
        if (strcmp(url, WIRE_PATH_CLAIM) == 0 && post) {
            out->id = ROUTE_WORKER_CLAIM;
        } else if (strcmp(url, WIRE_PATH_BYE) == 0 && post) {
            out->id = ROUTE_WORKER_BYE;
        } else if (strcmp(url, WIRE_PATH_SCALING_EVENTS) == 0 && post) {
            out->id = ROUTE_WORKER_SCALING_EVENT;
        } else if (strcmp(url, WIRE_PATH_WORKER_REPORT) == 0 && post) {
            out->id = ROUTE_WORKER_LIFE;
        } else if ((rest = take_segment(url, WIRE_PATH_JOBS, out->job_id, JOB_ID_SIZE))) {
            if (strcmp(rest, "/image") == 0 && strcmp(method, "PUT") == 0) {
                out->id = ROUTE_WORKER_IMAGE;
            } else if (post && rest[0] == '/') {
                out->id = ROUTE_WORKER_OP;
                out->arg = rest + 1;
            }
        }
    }
    if (out->id != ROUTE_JOB_GET && out->id != ROUTE_JOB_CANCEL && out->id != ROUTE_WORKER_IMAGE &&
        out->id != ROUTE_WORKER_OP)
        out->job_id[0] = '\0';
}
