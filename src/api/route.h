/* route.h: maps (method, path) to an endpoint, as a pure function so that it can be fuzzed.
 * The server does the authentication and the work; this only decides which endpoint a request
 * names and extracts the job id, the worker operation or the image key from the path. */
#ifndef PINGVAS_ROUTE_H
#define PINGVAS_ROUTE_H

#include "core/job.h"

typedef enum route_id {
    ROUTE_NOT_FOUND = 0, /* 404, no authentication */
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_IMAGE,         /* GET /images/KEY: arg = KEY (may be empty or hostile) */
    ROUTE_DASHBOARD,     /* GET / and /dashboard/FILE: arg = FILE ("" for /) */
    ROUTE_CREATE,        /* POST /api/v1/generation/create */
    ROUTE_CREATE_METHOD, /* /api/v1/generation/create with another method: 405 */
    ROUTE_LIST,
    ROUTE_CREDITS,
    ROUTE_QUEUE,
    ROUTE_SCALING_EVENTS,
    ROUTE_COST,          /* GET /api/v1/cost (operators) */
    ROUTE_JOB_GET,       /* id */
    ROUTE_JOB_CANCEL,    /* id */
    ROUTE_EVENTS,        /* GET /api/v1/events (Server-Sent Events) */
    ROUTE_FLEET,         /* GET /api/v1/fleet (operators: the dashboard's fleet view) */
    ROUTE_API_NOT_FOUND, /* under /api/: authenticate, then 404 */
    ROUTE_WORKER_CLAIM,  /* everything ROUTE_WORKER_* needs the worker token first */
    ROUTE_WORKER_BYE,
    ROUTE_WORKER_SCALING_EVENT, /* POST /internal/v1/scaling/events */
    ROUTE_WORKER_LIFE,          /* POST /internal/v1/workers/report */
    ROUTE_WORKER_IMAGE,         /* PUT: id */
    ROUTE_WORKER_OP,            /* POST: id, arg = operation ("complete", ...; may be unknown) */
    ROUTE_WORKER_NOT_FOUND,
} route_id_t;

typedef struct route {
    route_id_t id;
    char job_id[JOB_ID_SIZE]; /* non-empty, no '/', for the routes that carry one */
    const char *arg;          /* points into url (image key, worker operation), or "" */
} route_t;

/* Fills out for method and url (both NUL-terminated). Never fails: unknown is a not-found
 * route. HEAD is treated as GET. */
void route_parse(const char *method, const char *url, route_t *out);

/* 1 for the ROUTE_WORKER_* routes (worker token required before anything else). */
int route_is_worker(route_id_t id);

#endif
