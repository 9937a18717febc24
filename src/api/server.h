/* server.h: the HTTP server: public API (DESIGN section 3), worker protocol (section 5),
 * images, health and metrics, and the lease reaper. */
#ifndef PINGVAS_SERVER_H
#define PINGVAS_SERVER_H

#include <stdint.h>

#include "store/store.h"

typedef struct server_config {
    const char *bind;                  /* address to listen on */
    int port;                          /* 0 = ephemeral */
    const char *database_url;          /* store URL */
    const char *storage_url;           /* blob store URL */
    const char *public_image_base_url; /* CDN prefix for image_url, or NULL */
    const char *public_url;            /* this server's external URL, or NULL (derived) */
    const char *jwt_secret;
    const char *jwt_secret_previous; /* also accepted during a rotation, or NULL */
    const char *worker_token;
    const char *worker_token_previous; /* also accepted during a rotation, or NULL */
    const char *models;                /* comma-separated allowed models; first is the default */
    int64_t lease_ms;
    int64_t heartbeat_ms;
    int64_t reaper_ms;
    int64_t worker_ttl_ms;
    int max_attempts;
    double credit_rate;      /* credits per GPU-second */
    int max_queued_per_user; /* 0 = no cap */
    int max_jobs_per_user;   /* cap on a user's stored jobs, any status; 0 = no cap */
    int64_t retention_ms;    /* ended jobs and their images are deleted after this; 0 = never */
    double rate_limit;       /* creates per second per user; 0 = off */
    int rate_burst;
    int max_connections;
    int max_connections_per_ip; /* 0 = no per-IP limit */
    int64_t header_timeout_ms;  /* a request's headers must be in within this (0: 10 s) */
    int64_t request_timeout_ms; /* its headers and body within this (0: 120 s) */
    int worker_port;            /* the worker protocol's own listener; -1 = none, 0 = any port */
    int metrics_public; /* 1: /metrics without a token (else the worker or an operator token) */
    int64_t sse_keepalive_ms;     /* GET /api/v1/events keep-alive comments; 0: 15 s */
    const char *webhook_secret;   /* signs webhook deliveries (api/webhook.h) */
    int allow_private_webhooks;   /* 1: webhook URLs may be http and reach private addresses */
    int64_t webhook_retry_ms;     /* first retry delay of a webhook delivery; 0: 5 s */
    const char *redis_url;        /* Celery bridge (celery.h) when set, else NULL */
    const char *celery_queue;     /* NULL: "celery" */
    int64_t celery_visibility_ms; /* 0: kombu's 3600 s */
    const char *prices_path;      /* price catalog for GET /api/v1/cost; NULL: the shipped one */
} server_config_t;

typedef struct server server_t;

/* Opens the store and blob store, migrates, starts listening and the reaper.
 * NULL with a message on error. */
server_t *server_start(const server_config_t *cfg, char *err, size_t errlen);
/* The port actually bound. */
int server_port(const server_t *s);
/* The base URL clients and workers use ("http://127.0.0.1:PORT"). */
const char *server_url(const server_t *s);
/* The URL workers use: the --worker-port listener's, else server_url(). */
const char *server_worker_url(const server_t *s);
store_t *server_store(server_t *s);
/* Wakes every long-polling claim (new work may be there). */
void server_notify_work(server_t *s);
/* Keeps a scaling decision for GET /api/v1/scaling/events (the newest SERVER_EVENTS_MAX). An
 * autoscaler in another process posts them to /internal/v1/scaling/events instead. */
#define SERVER_EVENTS_MAX 1024
void server_record_scaling_event(server_t *s, int64_t at_ms, const char *tier, int from, int to,
                                 const char *reason);
/* Called after every create (e.g. to let an event-driven autoscaler react). */
typedef void (*server_submit_fn)(void *arg, const char *tier);
void server_set_submit_hook(server_t *s, server_submit_fn fn, void *arg);
void server_stop(server_t *s);

/* The credit reservation for a job: ceil(estimated GPU-seconds on the reference GPU (t4) x rate).
 */
int64_t server_estimate_credits(const job_params_t *p, double rate);

#endif
