/* main.c: the pingvas command line. Each command is an option table (config.h) and a function. */
#include <curl/curl.h>
#include <jansson.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blob/awscreds.h"
#include "scale/autoscaler.h"
#include "lib/clock.h"
#include "api/cost.h"
#include "cli/cmd.h"
#include "core/wire.h"
#include "scale/gpu.h"
#include "lib/httpc.h"
#include "lib/config.h"
#include "core/job.h"
#include "lib/jwt.h"
#include "lib/log.h"
#include "api/metrics.h"
#include "api/server.h"
#include "store/store.h"
#include "scale/supervisor.h"
#include "core/validate.h"
#include "worker/worker.h"

#define EXIT_USAGE 2

/* Every option of every command lives here; each command's table picks its rows. */
typedef struct app_config {
    int port;
    const char *bind;
    const char *data;
    const char *database_url;
    const char *storage_url;
    const char *public_image_base_url;
    const char *public_url;
    const char *jwt_secret;
    const char *jwt_secret_previous;
    const char *worker_token;
    const char *worker_token_previous;
    const char *models;
    int64_t lease_ms;
    int64_t heartbeat_ms;
    int64_t reaper_ms;
    int64_t worker_ttl_ms;
    int max_attempts;
    double credit_rate;
    int max_queued;
    int max_jobs_per_user;
    int64_t retention_ms;
    double rate_limit;
    int rate_burst;
    int max_connections;
    int metrics_public;
    int64_t sse_keepalive_ms;
    const char *webhook_secret;
    int allow_private_webhooks;
    int64_t webhook_retry_ms;
    int max_connections_per_ip;
    int64_t header_timeout_ms;
    int64_t request_timeout_ms;
    int worker_port;
    const char *redis_url;
    const char *celery_queue;
    int64_t celery_visibility_ms;
    int workers;
    int enterprise_workers;
    int min_workers;
    int max_workers;
    int max_enterprise_workers;
    double target_per_worker;
    int64_t cooldown_ms;
    const char *gpus;
    const char *autoscale_mode;
    int demo_credits;
    const char *log_level;
    /* worker */
    const char *server;
    const char *tier;
    const char *worker_id;
    const char *backend;
    const char *gpu_profile;
    double time_scale;
    const char *a1111_url;
    const char *comfyui_url;
    const char *comfyui_workflow;
    const char *comfyui_checkpoints;
    int64_t hang_grace_ms;
    const char *model_dir;
    int64_t drain_ms;
    int64_t claim_wait_ms;
    int max_jobs;
    const char *imds_url;
    int64_t imds_poll_ms;
    int64_t kube_poll_ms;
    const char *kube_api;
    const char *kube_sa_dir;
    const char *pod_name;
    const char *pod_namespace;
    const char *node_name;
    int64_t poll_ms;
    /* user / token */
    int credits;
    int64_t ttl_ms;
    const char *role;
    /* cost */
    const char *prices;
    const char *instance_type;
    const char *capacity_type;
    const char *zone;
    int instance_gpus;
    const char *since;
    const char *until;
    const char *by;
    int json;
} app_config_t;

#define O(field) offsetof(app_config_t, field)
#define DAY_MS 86400000.0

#define OPT_PORT                                                                                   \
    {                                                                                              \
        "port", "PINGVAS_PORT", OPT_INT, "8080", 0, 65535, O(port),                                \
            "TCP port to listen on (0: any free port)"                                             \
    }
#define OPT_BIND                                                                                   \
    {                                                                                              \
        "bind", "PINGVAS_BIND", OPT_STR, "127.0.0.1", 0, 0, O(bind), "IPv4 address to listen on"   \
    }
#define OPT_DATA                                                                                   \
    {                                                                                              \
        "data", "PINGVAS_DATA", OPT_STR, "./data", 0, 0, O(data),                                  \
            "data directory (SQLite database, images, generated secrets)"                          \
    }
#define OPT_DB                                                                                     \
    {                                                                                              \
        "database-url", "DATABASE_URL", OPT_STR, NULL, 0, 0, O(database_url),                      \
            "store: sqlite:///path[?synchronous=normal] or postgresql://...[?pool=N] (pool also "  \
            "from PINGVAS_PG_POOL, default 2 x CPUs + 4, at least 8; an operation gives up after " \
            "PINGVAS_PG_TIMEOUT, "                                                                 \
            "default 10s) [default: sqlite://DATA/pingvas.db]"                                     \
    }
#define OPT_STORAGE                                                                                \
    {                                                                                              \
        "storage-url", "STORAGE_URL", OPT_STR, NULL, 0, 0, O(storage_url),                         \
            "images: file:///dir or s3://bucket/prefix [default: file://DATA/images]"              \
    }
#define OPT_PUBLIC_IMG                                                                             \
    {                                                                                              \
        "public-image-base-url", "PUBLIC_IMAGE_BASE_URL", OPT_STR, NULL, 0, 0,                     \
            O(public_image_base_url), "CDN prefix for image_url"                                   \
    }
#define OPT_PUBLIC_URL                                                                             \
    {                                                                                              \
        "public-url", "PINGVAS_PUBLIC_URL", OPT_STR, NULL, 0, 0, O(public_url),                    \
            "external URL of this server (for image and upload URLs)"                              \
    }
#define OPT_JWT                                                                                    \
    {                                                                                              \
        "jwt-secret", "JWT_SECRET", OPT_STR, NULL, 0, 0, O(jwt_secret),                            \
            "HS256 secret [default: generated once into DATA/jwt_secret]"                          \
    }
#define OPT_WTOKEN                                                                                 \
    {                                                                                              \
        "worker-token", "PINGVAS_WORKER_TOKEN", OPT_STR, NULL, 0, 0, O(worker_token),              \
            "shared secret of the worker protocol [server default: generated into "                \
            "DATA/worker_token]"                                                                   \
    }
#define OPT_JWT_PREV                                                                               \
    {                                                                                              \
        "jwt-secret-previous", "JWT_SECRET_PREVIOUS", OPT_STR, NULL, 0, 0, O(jwt_secret_previous), \
            "rotation: tokens signed with this former secret are accepted too [default: none]"     \
    }
#define OPT_WTOKEN_PREV                                                                            \
    {                                                                                              \
        "worker-token-previous", "PINGVAS_WORKER_TOKEN_PREVIOUS", OPT_STR, NULL, 0, 0,             \
            O(worker_token_previous),                                                              \
            "rotation: the former worker token, accepted too [default: none]"                      \
    }
#define DEFAULT_MODELS "sd15,sdxl"
#define OPT_MODELS                                                                                 \
    {                                                                                              \
        "models", "PINGVAS_MODELS", OPT_STR, DEFAULT_MODELS, 0, 0, O(models),                      \
            "allowed models, comma-separated; the first is the default"                            \
    }
#define OPT_LEASE                                                                                  \
    {                                                                                              \
        "lease", "PINGVAS_LEASE", OPT_DURATION, "15s", 100, DAY_MS, O(lease_ms),                   \
            "how long a claim holds a job without a heartbeat"                                     \
    }
#define OPT_HEARTBEAT                                                                              \
    {                                                                                              \
        "heartbeat", "PINGVAS_HEARTBEAT", OPT_DURATION, "3s", 10, DAY_MS, O(heartbeat_ms),         \
            "how often workers heartbeat (sent to workers with each claim)"                        \
    }
#define OPT_REAPER                                                                                 \
    {                                                                                              \
        "reaper-interval", "PINGVAS_REAPER_INTERVAL", OPT_DURATION, "1s", 10, 3600000,             \
            O(reaper_ms), "how often expired leases are put back in the queue"                     \
    }
#define OPT_WORKER_TTL                                                                             \
    {                                                                                              \
        "worker-ttl", "PINGVAS_WORKER_TTL", OPT_DURATION, "30s", 1000, DAY_MS, O(worker_ttl_ms),   \
            "a worker not heard from for this long is no longer counted"                           \
    }
#define OPT_ATTEMPTS                                                                               \
    {                                                                                              \
        "max-attempts", "PINGVAS_MAX_ATTEMPTS", OPT_INT, "3", 1, 100, O(max_attempts),             \
            "attempts before a job is failed (releases do not count)"                              \
    }
#define OPT_RATE                                                                                   \
    {                                                                                              \
        "credit-rate", "PINGVAS_CREDIT_RATE", OPT_DOUBLE, "1", 0, 1e6, O(credit_rate),             \
            "credits charged per GPU-second (rounded up per job)"                                  \
    }
#define OPT_MAXQ                                                                                   \
    {                                                                                              \
        "max-queued-per-user", "PINGVAS_MAX_QUEUED_PER_USER", OPT_INT, "10000", 0, 100000000,      \
            O(max_queued), "cap on a user's queued jobs (0: none)"                                 \
    }
#define OPT_RL                                                                                     \
    {                                                                                              \
        "rate-limit", "PINGVAS_RATE_LIMIT", OPT_DOUBLE, "10", 0, 1e9, O(rate_limit),               \
            "job submissions and cancels per second per user, together (token bucket; 429 with "   \
            "Retry-After beyond it; 0: off)"                                                       \
    }
#define OPT_MAXJOBS                                                                                \
    {                                                                                              \
        "max-jobs-per-user", "PINGVAS_MAX_JOBS_PER_USER", OPT_INT, "100000", 0, 1000000000,        \
            O(max_jobs_per_user),                                                                  \
            "cap on a user's stored jobs of any status, ended ones until --retention "             \
            "deletes them (429 too_many_jobs beyond it; 0: none)"                                  \
    }
#define OPT_RETENTION                                                                              \
    {                                                                                              \
        "retention", "PINGVAS_RETENTION", OPT_DURATION, "30d", 0, 3650 * DAY_MS, O(retention_ms),  \
            "ended jobs (completed, failed, canceled) and their images are deleted this long "     \
            "after they end; charges stay in the ledger (0: keep forever)"                         \
    }
#define OPT_RB                                                                                     \
    {                                                                                              \
        "rate-burst", "PINGVAS_RATE_BURST", OPT_INT, "200", 1, 1000000, O(rate_burst),             \
            "burst size of the per-user rate limit"                                                \
    }
#define OPT_MAXCONN                                                                                \
    {                                                                                              \
        "max-connections", "PINGVAS_MAX_CONNECTIONS", OPT_INT, "4096", 16, 100000,                 \
            O(max_connections), "concurrent HTTP connections"                                      \
    }
#define OPT_MAXCONN_IP                                                                             \
    {                                                                                              \
        "max-connections-per-ip", "PINGVAS_MAX_CONNECTIONS_PER_IP", OPT_INT, "256", 0, 100000,     \
            O(max_connections_per_ip),                                                             \
            "concurrent connections from one client address on the public port (0: no limit; "     \
            "behind a reverse proxy every client has the proxy's address)"                         \
    }
#define OPT_HEADER_TIMEOUT                                                                         \
    {                                                                                              \
        "header-timeout", "PINGVAS_HEADER_TIMEOUT", OPT_DURATION, "10s", 100, 3600000,             \
            O(header_timeout_ms),                                                                  \
            "a connection must send a request's whole header block within this (from its start "   \
            "or its previous answer; idle keep-alive included), else it is closed"                 \
    }
#define OPT_REQUEST_TIMEOUT                                                                        \
    {                                                                                              \
        "request-timeout", "PINGVAS_REQUEST_TIMEOUT", OPT_DURATION, "120s", 100, DAY_MS,           \
            O(request_timeout_ms),                                                                 \
            "a request's headers and body (a 64 MiB image upload included) must arrive within "    \
            "this, else the connection is closed; answering time (long polls) is not counted"      \
    }
#define OPT_WORKER_PORT(def)                                                                       \
    {                                                                                              \
        "worker-port", "PINGVAS_WORKER_PORT", OPT_INT, def, -1, 65535, O(worker_port),             \
            "a second port serving only the worker protocol, so users cannot take the "            \
            "connections workers need (-1: none, workers use --port; 0: any free port)"            \
    }
#define OPT_METRICS_PUBLIC                                                                         \
    {                                                                                              \
        "metrics-public", "PINGVAS_METRICS_PUBLIC", OPT_BOOL, "0", 0, 1, O(metrics_public),        \
            "serve /metrics without a token (otherwise it needs the worker token or an operator "  \
            "token); only where /metrics is reachable from a private network alone"                \
    }
#define OPT_SSE_KEEPALIVE                                                                          \
    {                                                                                              \
        "sse-keepalive", "PINGVAS_SSE_KEEPALIVE", OPT_DURATION, "15s", 10, 3600000,                \
            O(sse_keepalive_ms),                                                                   \
            "GET /api/v1/events sends a keep-alive comment after this much silence"                \
    }
#define OPT_WEBHOOKS                                                                               \
    {"webhook-secret",                                                                             \
     "PINGVAS_WEBHOOK_SECRET",                                                                     \
     OPT_STR,                                                                                      \
     NULL,                                                                                         \
     0,                                                                                            \
     0,                                                                                            \
     O(webhook_secret),                                                                            \
     "signs webhook deliveries (webhook-signature, Standard Webhooks): 'whsec_<base64>' or any "   \
     "text [default: generated into DATA/webhook_secret]"},                                        \
        {"allow-private-webhooks",                                                                 \
         "PINGVAS_ALLOW_PRIVATE_WEBHOOKS",                                                         \
         OPT_BOOL,                                                                                 \
         "0",                                                                                      \
         0,                                                                                        \
         1,                                                                                        \
         O(allow_private_webhooks),                                                                \
         "let webhook_url be http:// and reach loopback, private and link-local addresses "        \
         "(tests, "                                                                                \
         "private networks); otherwise only https:// to public addresses"},                        \
    {                                                                                              \
        "webhook-retry", "PINGVAS_WEBHOOK_RETRY", OPT_DURATION, "5s", 10, 3600000,                 \
            O(webhook_retry_ms),                                                                   \
            "first retry delay of a failed webhook delivery; it doubles (with jitter) up to 1 h, " \
            "for 24 h after the job ended"                                                         \
    }
#define OPT_REDIS                                                                                  \
    {                                                                                              \
        "redis-url", "REDIS_URL", OPT_STR, NULL, 0, 0, O(redis_url),                               \
            "Celery bridge: consume the seed's tasks.generate_image messages from this Redis "     \
            "(redis://[[user]:password@]host[:port][/db], port 6379 and db 0 by default) and "     \
            "write their results [default: off]"                                                   \
    }
#define OPT_CQUEUE                                                                                 \
    {                                                                                              \
        "celery-queue", "CELERY_QUEUE", OPT_STR, "celery", 0, 0, O(celery_queue),                  \
            "Celery bridge: the kombu queue (its list and priority lists) to consume"              \
    }
#define OPT_CVIS                                                                                   \
    {                                                                                              \
        "celery-visibility-timeout", "CELERY_VISIBILITY_TIMEOUT", OPT_DURATION, "3600s", 100,      \
            7 * DAY_MS, O(celery_visibility_ms),                                                   \
            "Celery bridge: unacked messages older than this go back to their queue (kombu's "     \
            "visibility_timeout)"                                                                  \
    }
#define OPT_LOG                                                                                    \
    {                                                                                              \
        "log-level", "PINGVAS_LOG_LEVEL", OPT_STR, "info", 0, 0, O(log_level),                     \
            "debug, info, warn, error or off"                                                      \
    }
#define OPT_BACKEND                                                                                \
    {                                                                                              \
        "backend", "PINGVAS_BACKEND", OPT_STR, "synthetic", 0, 0, O(backend),                      \
            "generation backend: synthetic (test/load workload, not Stable Diffusion), comfyui "   \
            "(a ComfyUI server), a1111 (a server with /sdapi/v1/txt2img: AUTOMATIC1111, Forge, "   \
            "SD.Next, sd-server)"                                                                  \
    }
#define OPT_PROFILE                                                                                \
    {                                                                                              \
        "gpu-profile", "PINGVAS_GPU_PROFILE", OPT_STR, "t4", 0, 0, O(gpu_profile),                 \
            "synthetic backend: GPU to imitate (t4, a10g, l4, a100, h100)"                         \
    }
#define OPT_TSCALE                                                                                 \
    {                                                                                              \
        "time-scale", "PINGVAS_TIME_SCALE", OPT_DOUBLE, "1", 0, 1000, O(time_scale),               \
            "synthetic backend: multiplies simulated GPU time (0: instant)"                        \
    }
#define OPT_A1111                                                                                  \
    {                                                                                              \
        "a1111-url", "PINGVAS_A1111_URL", OPT_STR, NULL, 0, 0, O(a1111_url),                       \
            "a1111 backend: base URL of a server with /sdapi/v1/txt2img"                           \
    }
#define OPT_COMFYUI                                                                                \
    {                                                                                              \
        "comfyui-url", "PINGVAS_COMFYUI_URL", OPT_STR, "http://127.0.0.1:8188", 0, 0,              \
            O(comfyui_url), "comfyui backend: base URL of the ComfyUI server (HTTP and /ws)"       \
    }
#define OPT_COMFYUI_WF                                                                             \
    {                                                                                              \
        "comfyui-workflow", "PINGVAS_COMFYUI_WORKFLOW", OPT_STR, NULL, 0, 0, O(comfyui_workflow),  \
            "comfyui backend: API-format workflow file with {{prompt}}, {{negative_prompt}}, "     \
            "{{width}}, {{height}}, {{steps}}, {{cfg}}, {{seed}}, {{checkpoint}} placeholders "    \
            "[default: the shipped SD 1.5 txt2img workflow]"                                       \
    }
#define OPT_COMFYUI_CKPT                                                                           \
    {                                                                                              \
        "comfyui-checkpoints", "PINGVAS_COMFYUI_CHECKPOINTS", OPT_STR,                             \
            "sd15=v1-5-pruned-emaonly.safetensors", 0, 0, O(comfyui_checkpoints),                  \
            "comfyui backend: model=checkpoint-file pairs, comma-separated; each file must be in " \
            "ComfyUI's models/checkpoints when the worker starts"                                  \
    }
#define OPT_HANG_GRACE                                                                             \
    {                                                                                              \
        "hang-grace", "PINGVAS_HANG_GRACE", OPT_DURATION, "120s", 0, DAY_MS, O(hang_grace_ms),     \
            "comfyui and a1111 backends: an engine that has not finished a job within 4 x its "    \
            "estimate + this is hung: the job is stopped and fails"                                \
    }
#define OPT_MODELDIR                                                                               \
    {                                                                                              \
        "model-dir", "MODEL_DIR", OPT_STR, NULL, 0, 0, O(model_dir),                               \
            "model weights directory, handed to workers; no backend of this build reads it "       \
            "(synthetic loads no model; comfyui and a1111 servers load their own)"                 \
    }
#define OPT_DRAIN                                                                                  \
    {                                                                                              \
        "drain-timeout", "PINGVAS_DRAIN_TIMEOUT", OPT_DURATION, "90s", 0, DAY_MS, O(drain_ms),     \
            "on SIGTERM: finish the running job only if it ends within this window, else release " \
            "it"                                                                                   \
    }

#define OPT_MINW                                                                                   \
    {                                                                                              \
        "min-workers", "PINGVAS_MIN_WORKERS", OPT_INT, "0", 0, SUP_MAX_SLOTS, O(min_workers),      \
            "autoscaling: workers kept per tier even when idle"                                    \
    }
#define OPT_MAXW                                                                                   \
    {                                                                                              \
        "max-workers", "PINGVAS_MAX_WORKERS", OPT_INT, "4", 0, SUP_MAX_SLOTS, O(max_workers),      \
            "autoscaling: most standard-tier workers; when GPUs are found or given (--gpus) "      \
            "every "                                                                               \
            "worker, synthetic too, is pinned to one, at most one per GPU across both tiers"       \
    }
#define OPT_MAXEW                                                                                  \
    {                                                                                              \
        "max-enterprise-workers", "PINGVAS_MAX_ENTERPRISE_WORKERS", OPT_INT, "1", 0,               \
            SUP_MAX_SLOTS, O(max_enterprise_workers), "autoscaling: most enterprise-tier workers"  \
    }
#define OPT_TARGET                                                                                 \
    {                                                                                              \
        "target-per-worker", "PINGVAS_TARGET_PER_WORKER", OPT_DOUBLE, "1", 0.01, 1e6,              \
            O(target_per_worker),                                                                  \
            "autoscaling: backlog (queued + running jobs) per worker; KEDA's listLength is 5"      \
    }
#define OPT_COOLDOWN                                                                               \
    {                                                                                              \
        "cooldown", "PINGVAS_COOLDOWN", OPT_DURATION, "30s", 0, DAY_MS, O(cooldown_ms),            \
            "autoscaling: how long idle workers stay before they are stopped"                      \
    }
#define OPT_GPUS                                                                                   \
    {                                                                                              \
        "gpus", "PINGVAS_GPUS", OPT_STR, NULL, 0, 0, O(gpus),                                      \
            "GPU indexes to use, e.g. 0,1 (one worker each) [default: discovered with NVML]"       \
    }
#define OPT_AMODE                                                                                  \
    {                                                                                              \
        "autoscale-mode", "PINGVAS_AUTOSCALE_MODE", OPT_STR, "local", 0, 0, O(autoscale_mode),     \
            "local (event-driven, fast) or keda (reproduces KEDA + HPA timing)"                    \
    }

#define OPT_PRICES                                                                                 \
    {                                                                                              \
        "prices", "PINGVAS_PRICES", OPT_STR, NULL, 0, 0, O(prices),                                \
            "price catalog for cost reports (docs/cost.md) [default: the shipped us-east-1 one]"   \
    }

/* The options of every command that runs the server (server, up), in --help order; each
 * command adds its worker listener default and its own options. */
#define SERVING_OPTS                                                                               \
    OPT_PORT, OPT_BIND, OPT_DATA, OPT_DB, OPT_STORAGE, OPT_PUBLIC_IMG, OPT_PUBLIC_URL, OPT_JWT,    \
        OPT_JWT_PREV, OPT_WTOKEN, OPT_WTOKEN_PREV, OPT_MODELS, OPT_LEASE, OPT_HEARTBEAT,           \
        OPT_REAPER, OPT_WORKER_TTL, OPT_ATTEMPTS, OPT_RATE, OPT_MAXQ, OPT_RL, OPT_RB, OPT_MAXCONN, \
        OPT_METRICS_PUBLIC, OPT_MAXCONN_IP, OPT_HEADER_TIMEOUT, OPT_REQUEST_TIMEOUT
#define SERVING_TAIL_OPTS                                                                          \
    OPT_MAXJOBS, OPT_RETENTION, OPT_WEBHOOKS, OPT_SSE_KEEPALIVE, OPT_LOG, OPT_REDIS, OPT_CQUEUE,   \
        OPT_CVIS, OPT_PRICES

static const opt_t server_opts[] = {
    SERVING_OPTS,
    OPT_WORKER_PORT("-1"),
    SERVING_TAIL_OPTS,
};

static const opt_t up_opts[] = {
    SERVING_OPTS,
    OPT_WORKER_PORT("0"),
    SERVING_TAIL_OPTS,
    OPT_BACKEND,
    OPT_PROFILE,
    OPT_TSCALE,
    OPT_COMFYUI,
    OPT_COMFYUI_WF,
    OPT_COMFYUI_CKPT,
    OPT_A1111,
    OPT_HANG_GRACE,
    OPT_MODELDIR,
    OPT_DRAIN,
    {"workers", "PINGVAS_WORKERS", OPT_INT, "-1", -1, SUP_MAX_SLOTS, O(workers),
     "a fixed number of standard-tier workers instead of autoscaling (-1: autoscale)"},
    {"enterprise-workers", "PINGVAS_ENTERPRISE_WORKERS", OPT_INT, "-1", -1, SUP_MAX_SLOTS,
     O(enterprise_workers), "a fixed number of enterprise-tier workers (-1: autoscale)"},
    OPT_MINW,
    OPT_MAXW,
    OPT_MAXEW,
    OPT_TARGET,
    OPT_COOLDOWN,
    OPT_GPUS,
    OPT_AMODE,
    {"demo-credits", NULL, OPT_INT, "10000", 0, 2000000000, O(demo_credits),
     "credits of the demo user created on first start"},
};

static const opt_t worker_opts[] = {
    {"server", "PINGVAS_SERVER_URL", OPT_STR, "http://127.0.0.1:8080", 0, 0, O(server),
     "URL of the pingvas server"},
    {"tier", "PINGVAS_TIER", OPT_STR, "standard", 0, 0, O(tier),
     "queue to serve: standard or enterprise"},
    {"worker-id", "PINGVAS_WORKER_ID", OPT_STR, NULL, 0, 0, O(worker_id),
     "name of this worker [default: hostname-pid-random]"},
    {"worker-token", "PINGVAS_WORKER_TOKEN", OPT_STR, NULL, 0, 0, O(worker_token),
     "shared secret of the worker protocol (required)"},
    OPT_BACKEND,
    OPT_PROFILE,
    OPT_TSCALE,
    OPT_COMFYUI,
    OPT_COMFYUI_WF,
    OPT_COMFYUI_CKPT,
    OPT_A1111,
    OPT_HANG_GRACE,
    OPT_MODELDIR,
    OPT_DRAIN,
    {"claim-wait", "PINGVAS_CLAIM_WAIT", OPT_DURATION, "20s", 0, 60000, O(claim_wait_ms),
     "long-poll length of a claim"},
    {"max-jobs", NULL, OPT_INT, "0", 0, 1000000000, O(max_jobs),
     "exit after this many jobs (0: never)"},
    {"imds-url", "PINGVAS_IMDS_URL", OPT_STR, "auto", 0, 0, O(imds_url),
     "EC2 instance metadata URL for spot notices; auto: http://169.254.169.254 when on EC2; "
     "off: none"},
    {"imds-poll", NULL, OPT_DURATION, "5s", 100, 3600000, O(imds_poll_ms),
     "how often to poll for spot notices"},
    {"instance-type", "PINGVAS_INSTANCE_TYPE", OPT_STR, NULL, 0, 0, O(instance_type),
     "cost accounting: the instance type (node.kubernetes.io/instance-type) [default: IMDSv2]"},
    {"capacity-type", "PINGVAS_CAPACITY_TYPE", OPT_STR, NULL, 0, 0, O(capacity_type),
     "cost accounting: spot or on-demand (karpenter.sh/capacity-type) [default: IMDSv2]"},
    {"zone", "PINGVAS_ZONE", OPT_STR, NULL, 0, 0, O(zone),
     "cost accounting: the availability zone [default: IMDSv2]"},
    {"instance-gpus", "PINGVAS_INSTANCE_GPUS", OPT_INT, "1", 1, 64, O(instance_gpus),
     "cost accounting: GPUs on the instance (each worker pays for one)"},
    {"kube-api", "PINGVAS_KUBE_API", OPT_STR, "auto", 0, 0, O(kube_api),
     "Kubernetes API for the busy/idle pod marks (pod-deletion-cost, karpenter.sh/do-not-disrupt) "
     "and the node watch; auto: in-cluster when PINGVAS_POD_NAME is set; off: none"},
    {"kube-sa-dir", "PINGVAS_KUBE_SA_DIR", OPT_STR, "/var/run/secrets/kubernetes.io/serviceaccount",
     0, 0, O(kube_sa_dir), "service-account token, ca.crt and namespace for the Kubernetes API"},
    {"kube-poll", "PINGVAS_KUBE_POLL", OPT_DURATION, "5s", 100, 3600000, O(kube_poll_ms),
     "how often the pod guard reads its node (Karpenter's disruption taint)"},
    {"pod-name", "PINGVAS_POD_NAME", OPT_STR, NULL, 0, 0, O(pod_name),
     "this worker's pod (downward API metadata.name)"},
    {"pod-namespace", "PINGVAS_POD_NAMESPACE", OPT_STR, NULL, 0, 0, O(pod_namespace),
     "the pod's namespace [default: from the service-account directory]"},
    {"node-name", "PINGVAS_NODE_NAME", OPT_STR, NULL, 0, 0, O(node_name),
     "the pod's node (downward API spec.nodeName)"},
    OPT_LOG,
};

static const opt_t admin_opts[] = {OPT_DATA, OPT_DB, OPT_LOG};

static const opt_t user_add_opts[] = {
    OPT_DATA,
    OPT_DB,
    OPT_LOG,
    {"credits", NULL, OPT_INT, "0", 0, 2000000000, O(credits), "starting balance"},
    {"tier", NULL, OPT_STR, "standard", 0, 0, O(tier), "standard or enterprise"},
};

static const opt_t cost_opts[] = {
    OPT_DATA,
    OPT_DB,
    OPT_LOG,
    OPT_PRICES,
    {"since", NULL, OPT_STR, NULL, 0, 0, O(since),
     "start: RFC 3339 UTC, a date or Unix seconds [default: 24 h before --until]"},
    {"until", NULL, OPT_STR, NULL, 0, 0, O(until), "end (excluded) [default: now]"},
    {"by", NULL, OPT_STR, NULL, 0, 0, O(by), "also break down by user, tier, day or instance_type"},
    {"json", NULL, OPT_BOOL, NULL, 0, 0, O(json), "print the report as JSON (GET /api/v1/cost's)"},
};

static const opt_t token_opts[] = {
    OPT_DATA,
    OPT_DB,
    OPT_JWT,
    OPT_LOG,
    {"ttl", NULL, OPT_DURATION, "24h", 1000, 3650 * DAY_MS, O(ttl_ms), "token lifetime"},
    {"role", NULL, OPT_STR, NULL, 0, 0, O(role),
     "admin: an operator token (cost report and other operator endpoints)"},
};

#define NOPTS(t) (sizeof(t) / sizeof((t)[0]))

/* ---------- shared helpers ---------- */

static int parse_or_usage(const char *cmd, const char *synopsis, const char *about,
                          const opt_t *opts, size_t n, app_config_t *cfg, int argc, char **argv,
                          char **pos, int max_pos, int *npos)
{
    char err[512];
    memset(cfg, 0, sizeof *cfg); /* fields outside this command's table stay NULL or 0 */
    int rc = config_parse(opts, n, cfg, argc, argv, 2, pos, max_pos, npos, err, sizeof err);
    if (rc == 1) {
        printf("usage: pingvas %s %s\n\n%s\n\n", cmd, synopsis, about);
        config_usage(stdout, opts, n);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "pingvas %s: %s\n", cmd, err);
        return -1;
    }
    int lvl = log_level_parse(cfg->log_level ? cfg->log_level : "info");
    if (lvl < 0) {
        fprintf(stderr,
                "pingvas %s: --log-level: '%s' is not one of debug, info, warn, error, off\n", cmd,
                cfg->log_level);
        return -1;
    }
    log_threshold = lvl;
    return 0;
}

static int mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Reads DATA/name, or when create is set generates a random secret there (mode 0600). Returns a
 * malloc'd string, or NULL with a message in err. */
static char *secret_from_file(const char *data, const char *name, int create, char *err,
                              size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", data, name);
    char buf[256];
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
            buf[--n] = '\0';
        if (n >= 16)
            return strdup(buf);
        snprintf(err, errlen, "%s is shorter than 16 characters; delete it to regenerate", path);
        return NULL;
    }
    if (!create) {
        snprintf(err, errlen,
                 "%s does not exist: --data must be the server's data directory (the server "
                 "writes its secret there on first start), or set the secret in the environment",
                 path);
        return NULL;
    }
    if (mkdir_p(data) != 0) {
        snprintf(err, errlen, "cannot create data directory %s: %s", data, strerror(errno));
        return NULL;
    }
    random_hex(buf, 32);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return secret_from_file(data, name, 0, err, errlen); /* lost a race: read theirs */
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t len = strlen(buf);
    int ok = write(fd, buf, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    if (!ok) {
        snprintf(err, errlen, "cannot write %s", path);
        return NULL;
    }
    return strdup(buf);
}

/* Fills in the defaults that depend on the data directory. Strings returned in *owned must be
 * freed by the caller. */
typedef struct derived {
    char db[PATH_MAX + 16];
    char storage[PATH_MAX + 16];
    char *jwt;
    char *wtoken;
    char *whsecret;
} derived_t;

/* The default image store, file://DATA/images, with DATA made absolute (a file URL needs an
 * absolute path; the default DATA is ./data). 0, or -1 after printing why. */
static int default_storage(app_config_t *cfg, derived_t *d, const char *cmd)
{
    char cwd[PATH_MAX] = "";
    const char *data = cfg->data;
    if (data[0] != '/') {
        if (!getcwd(cwd, sizeof cwd)) {
            fprintf(stderr, "pingvas %s: cannot resolve --data %s: %s\n", cmd, data,
                    strerror(errno));
            return -1;
        }
        while (data[0] == '.' && data[1] == '/')
            data += 2;
    }
    int n = snprintf(d->storage, sizeof d->storage, "file://%s%s%s/images", cwd, cwd[0] ? "/" : "",
                     data);
    if (n < 0 || (size_t)n >= sizeof d->storage) {
        fprintf(stderr, "pingvas %s: --data %s: path too long\n", cmd, cfg->data);
        return -1;
    }
    cfg->storage_url = d->storage;
    return 0;
}

/* need_secrets: 1 the JWT secret, 2 the worker token, | 4 read them only (never generate), | 8 the
 * webhook secret (generated into DATA/webhook_secret when not given). */
static int derive(app_config_t *cfg, derived_t *d, int need_secrets, const char *cmd)
{
    memset(d, 0, sizeof *d);
    char err[512];
    if (!cfg->database_url || !*cfg->database_url) {
        if (mkdir_p(cfg->data) != 0) {
            fprintf(stderr, "pingvas %s: cannot create data directory %s: %s\n", cmd, cfg->data,
                    strerror(errno));
            return -1;
        }
        snprintf(d->db, sizeof d->db, "sqlite://%s/pingvas.db", cfg->data);
        cfg->database_url = d->db;
    }
    if ((!cfg->storage_url || !*cfg->storage_url) && default_storage(cfg, d, cmd) != 0)
        return -1;
    if (need_secrets & 1) {
        if (!cfg->jwt_secret || !*cfg->jwt_secret) {
            d->jwt =
                secret_from_file(cfg->data, "jwt_secret", !(need_secrets & 4), err, sizeof err);
            if (!d->jwt) {
                fprintf(stderr, "pingvas %s: JWT secret: %s\n", cmd, err);
                return -1;
            }
            cfg->jwt_secret = d->jwt;
        } else if (strlen(cfg->jwt_secret) < 16) {
            fprintf(stderr, "pingvas %s: JWT_SECRET must be at least 16 characters\n", cmd);
            return -1;
        }
    }
    const char *prev = (need_secrets & 1) ? cfg->jwt_secret_previous : NULL;
    if (prev && *prev && strlen(prev) < 16) {
        fprintf(stderr, "pingvas %s: JWT_SECRET_PREVIOUS must be at least 16 characters\n", cmd);
        return -1;
    }
    prev = (need_secrets & 2) ? cfg->worker_token_previous : NULL;
    if (prev && *prev && strlen(prev) < 16) {
        fprintf(stderr,
                "pingvas %s: PINGVAS_WORKER_TOKEN_PREVIOUS must be at least 16 characters\n", cmd);
        return -1;
    }
    if ((need_secrets & 8) && (!cfg->webhook_secret || !*cfg->webhook_secret)) {
        d->whsecret = secret_from_file(cfg->data, "webhook_secret", 1, err, sizeof err);
        if (!d->whsecret) {
            fprintf(stderr, "pingvas %s: webhook secret: %s\n", cmd, err);
            return -1;
        }
        cfg->webhook_secret = d->whsecret;
    }
    if (need_secrets & 2) {
        if (!cfg->worker_token || !*cfg->worker_token) {
            d->wtoken =
                secret_from_file(cfg->data, "worker_token", !(need_secrets & 4), err, sizeof err);
            if (!d->wtoken) {
                fprintf(stderr, "pingvas %s: worker token: %s\n", cmd, err);
                return -1;
            }
            cfg->worker_token = d->wtoken;
        } else if (strlen(cfg->worker_token) < 16) {
            fprintf(stderr, "pingvas %s: PINGVAS_WORKER_TOKEN must be at least 16 characters\n",
                    cmd);
            return -1;
        }
    }
    return 0;
}

static void derived_free(derived_t *d)
{
    free(d->jwt);
    free(d->wtoken);
    free(d->whsecret);
}

static void server_config_from(const app_config_t *cfg, server_config_t *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->bind = cfg->bind;
    sc->port = cfg->port;
    sc->database_url = cfg->database_url;
    sc->storage_url = cfg->storage_url;
    sc->public_image_base_url = cfg->public_image_base_url;
    sc->public_url = cfg->public_url;
    sc->jwt_secret = cfg->jwt_secret;
    sc->jwt_secret_previous = cfg->jwt_secret_previous;
    sc->worker_token = cfg->worker_token;
    sc->worker_token_previous = cfg->worker_token_previous;
    sc->models = cfg->models;
    sc->lease_ms = cfg->lease_ms;
    sc->heartbeat_ms = cfg->heartbeat_ms;
    sc->reaper_ms = cfg->reaper_ms;
    sc->worker_ttl_ms = cfg->worker_ttl_ms;
    sc->max_attempts = cfg->max_attempts;
    sc->credit_rate = cfg->credit_rate;
    sc->max_queued_per_user = cfg->max_queued;
    sc->max_jobs_per_user = cfg->max_jobs_per_user;
    sc->retention_ms = cfg->retention_ms;
    sc->rate_limit = cfg->rate_limit;
    sc->rate_burst = cfg->rate_burst;
    sc->max_connections = cfg->max_connections;
    sc->metrics_public = cfg->metrics_public;
    sc->sse_keepalive_ms = cfg->sse_keepalive_ms;
    sc->webhook_secret = cfg->webhook_secret;
    sc->allow_private_webhooks = cfg->allow_private_webhooks;
    sc->webhook_retry_ms = cfg->webhook_retry_ms;
    sc->max_connections_per_ip = cfg->max_connections_per_ip;
    sc->header_timeout_ms = cfg->header_timeout_ms;
    sc->request_timeout_ms = cfg->request_timeout_ms;
    sc->worker_port = cfg->worker_port;
    sc->redis_url = cfg->redis_url;
    sc->celery_queue = cfg->celery_queue;
    sc->celery_visibility_ms = cfg->celery_visibility_ms;
    sc->prices_path = cfg->prices;
}

static volatile sig_atomic_t got_stop;
/* The stop signal also writes a byte here: it may be delivered to any of the server's threads,
 * so a pause() in the main thread could sleep through it (a SIGTERM right after start hung
 * `pingvas server`). */
static int stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    (void)sig;
    got_stop = 1;
    if (stop_pipe[1] >= 0) {
        int saved = errno;
        ssize_t w = write(stop_pipe[1], "", 1);
        (void)w;
        errno = saved;
    }
}

/* Returns once SIGTERM or SIGINT has arrived, on whichever thread. */
static void wait_for_stop(void)
{
    while (!got_stop) {
        char b;
        if (stop_pipe[0] < 0 || (read(stop_pipe[0], &b, 1) < 0 && errno != EINTR))
            clock_sleep_ms(100); /* no pipe: poll the flag */
    }
}

static void install_stop_handlers(void)
{
    if (stop_pipe[0] < 0 && pipe2(stop_pipe, O_CLOEXEC) == 0)
        fcntl(stop_pipe[1], F_SETFL, O_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int write_url_file(const char *data, const char *url)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/pingvas.url", data);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", url);
    fclose(f);
    return rename(tmp, path);
}

/* ---------- commands ---------- */

static int cmd_server(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1];
    int npos;
    int rc = parse_or_usage("server", "[options]",
                            "Runs the public API and the worker-protocol server alone (no local "
                            "workers); scale workers separately (pingvas worker, KEDA).",
                            server_opts, NOPTS(server_opts), &cfg, argc, argv, pos, 0, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    log_set_component("server");
    derived_t d;
    if (derive(&cfg, &d, 3 | 8, "server") != 0)
        return EXIT_USAGE;
    server_config_t sc;
    server_config_from(&cfg, &sc);
    char err[512];
    install_stop_handlers();
    server_t *s = server_start(&sc, err, sizeof err);
    if (!s) {
        fprintf(stderr, "pingvas server: %s\n", err);
        derived_free(&d);
        return 1;
    }
    printf("pingvas server listening on %s\n", server_url(s));
    if (strcmp(server_worker_url(s), server_url(s)) != 0)
        printf("pingvas server: the worker protocol also on %s (--worker-port)\n",
               server_worker_url(s));
    fflush(stdout);
    write_url_file(cfg.data, server_url(s));
    char redacted[1024];
    log_info("event=server_started url=%s store=%s", server_url(s),
             log_redact_url(cfg.database_url, redacted, sizeof redacted));
    wait_for_stop();
    log_info("event=server_stopping");
    server_stop(s);
    derived_free(&d);
    return 0;
}

/* The autoscaling policies of both tiers from the options. 0, or -1 with a message. */
static int build_policies(const app_config_t *cfg, autoscale_policy_t pol[2], const char *cmd)
{
    autoscale_mode_t mode;
    if (strcmp(cfg->autoscale_mode, "local") == 0) {
        mode = AUTOSCALE_LOCAL;
    } else if (strcmp(cfg->autoscale_mode, "keda") == 0) {
        mode = AUTOSCALE_KEDA;
    } else {
        fprintf(stderr, "pingvas %s: --autoscale-mode: '%s' is not local or keda\n", cmd,
                cfg->autoscale_mode);
        return -1;
    }
    int maxes[2] = {cfg->max_workers, cfg->max_enterprise_workers};
    for (int t = 0; t < 2; t++) {
        pol[t] = autoscale_policy_defaults(mode);
        pol[t].target = cfg->target_per_worker;
        pol[t].min_replicas = cfg->min_workers < maxes[t] ? cfg->min_workers : maxes[t];
        pol[t].max_replicas = maxes[t];
        pol[t].cooldown_ms = cfg->cooldown_ms;
        char err[256];
        if (maxes[t] > 0 && autoscale_policy_validate(&pol[t], err, sizeof err) != 0) {
            fprintf(stderr, "pingvas %s: autoscaling policy: %s\n", cmd, err);
            return -1;
        }
    }
    return 0;
}

/* GPUs to pin workers to: --gpus, else NVML discovery. -1 on a malformed --gpus. */
static int resolve_gpus(const app_config_t *cfg, int *gpus, const char *cmd)
{
    if (cfg->gpus && *cfg->gpus) {
        int n = gpu_parse_list(cfg->gpus, gpus, SUP_MAX_SLOTS);
        if (n <= 0) {
            fprintf(stderr,
                    "pingvas %s: --gpus: '%s' is not a list of distinct GPU indexes like 0,1\n",
                    cmd, cfg->gpus);
            return -1;
        }
        return n;
    }
    int n = gpu_discover(gpus, SUP_MAX_SLOTS);
    if (n == 0 && strcmp(cfg->backend, "synthetic") != 0)
        log_warn("event=no_gpus msg=\"no GPU found with NVML; workers of the %s backend run "
                 "without CUDA_VISIBLE_DEVICES\"",
                 cfg->backend);
    return n;
}

static int up_stats(void *arg, const char *tier, int64_t *queued, int64_t *running)
{
    server_t *s = arg;
    queue_stats_t q;
    if (store_queue_stats(server_store(s), tier, 30000, clock_steady_ms(), &q) != STORE_OK)
        return -1;
    *queued = q.queued;
    *running = q.running;
    return 0;
}

static void up_event(void *arg, const char *tier, int from, int to, const char *reason)
{
    server_record_scaling_event(arg, clock_steady_ms(), tier, from, to, reason);
}

static void on_cold_start(void *arg, const char *tier, const char *worker_id,
                          int64_t spawn_to_ready_ms, int64_t spawn_to_claim_ms)
{
    histogram_observe(&metrics.cold_start, (double)spawn_to_claim_ms / 1000.0);
}

static void up_poke(void *arg, const char *tier)
{
    (void)tier;
    autoscaler_poke(arg);
}

/* The backend settings from the options. */
static backend_config_t backend_config_from(const app_config_t *cfg)
{
    backend_config_t bc = {.name = cfg->backend,
                           .gpu_profile = cfg->gpu_profile,
                           .time_scale = cfg->time_scale,
                           .url = cfg->a1111_url,
                           .model_dir = cfg->model_dir,
                           .comfyui_url = cfg->comfyui_url,
                           .comfyui_workflow = cfg->comfyui_workflow,
                           .comfyui_checkpoints = cfg->comfyui_checkpoints,
                           .hang_grace_ms = cfg->hang_grace_ms};
    return bc;
}

/* The checks of check_backend; with served, also the models of cfg->models the backend can run
 * (served) and those it cannot (unserved). */
static int check_backend_models(const app_config_t *cfg, const char *cmd, int reach, char *served,
                                size_t slen, char *unserved, size_t ulen);

/* Checks the backend settings before anything starts. With reach, an engine backend (not
 * synthetic) is also loaded once: the engine must answer and have its models, as every worker
 * will check, so that `pingvas up` fails at once instead of restarting workers that cannot
 * start. 0, or -1 with a message. */
static int check_backend(const app_config_t *cfg, const char *cmd, int reach)
{
    return check_backend_models(cfg, cmd, reach, NULL, 0, NULL, 0);
}

/* Splits the comma-separated models into those backend b serves (served) and the others
 * (unserved). */
static void split_models(backend_t *b, const char *models, char *served, size_t slen,
                         char *unserved, size_t ulen)
{
    served[0] = unserved[0] = '\0';
    for (const char *p = models; p && *p;) {
        size_t n = strcspn(p, ",");
        char m[64];
        snprintf(m, sizeof m, "%.*s", (int)(n < sizeof m ? n : sizeof m - 1), p);
        int ok = !b->ops->serves || b->ops->serves(b, m);
        char *dst = ok ? served : unserved;
        size_t used = strlen(dst), cap = ok ? slen : ulen;
        if (m[0])
            snprintf(dst + used, cap - used, "%s%s", used ? "," : "", m);
        p += n + (p[n] == ',');
    }
}

static int check_backend_models(const app_config_t *cfg, const char *cmd, int reach, char *served,
                                size_t slen, char *unserved, size_t ulen)
{
    backend_config_t bc = backend_config_from(cfg);
    char err[512];
    backend_t *probe = backend_create(&bc, err, sizeof err);
    if (!probe) {
        fprintf(stderr, "pingvas %s: %s\n", cmd, err);
        return -1;
    }
    int rc = 0;
    if (reach && strcmp(probe->ops->name, "synthetic") != 0 &&
        probe->ops->load(probe, err, sizeof err) != BACKEND_OK) {
        fprintf(stderr, "pingvas %s: %s\n", cmd, err);
        rc = -1;
    }
    if (served)
        split_models(probe, cfg->models, served, slen, unserved, ulen);
    probe->ops->destroy(probe);
    return rc;
}

/* Checks the worker token and --server of a worker-side command and copies the server URL
 * without trailing slashes into server. 0, or -1 with a message. */
static int check_worker_side(const app_config_t *cfg, const char *cmd, char *server, size_t size)
{
    if (!cfg->worker_token || strlen(cfg->worker_token) < 16) {
        fprintf(stderr,
                "pingvas %s: PINGVAS_WORKER_TOKEN (or --worker-token) is required: the "
                "server's worker token, at least 16 characters\n",
                cmd);
        return -1;
    }
    if (strncmp(cfg->server, "http://", 7) != 0 && strncmp(cfg->server, "https://", 8) != 0) {
        fprintf(stderr, "pingvas %s: --server: '%s' is not an http(s) URL\n", cmd, cfg->server);
        return -1;
    }
    snprintf(server, size, "%s", cfg->server);
    size_t sl = strlen(server);
    while (sl && server[sl - 1] == '/')
        server[--sl] = '\0';
    return 0;
}

/* The arguments every supervised worker gets (backend settings, short claim polls). */
typedef struct worker_args {
    char ts[32], drain[32], grace[32];
    const char *argv[40];
} worker_args_t;

static void worker_args_build(const app_config_t *cfg, worker_args_t *wa)
{
    snprintf(wa->ts, sizeof wa->ts, "%g", cfg->time_scale);
    snprintf(wa->drain, sizeof wa->drain, "%lldms", (long long)cfg->drain_ms);
    int na = 0;
    wa->argv[na++] = "--backend";
    wa->argv[na++] = cfg->backend;
    wa->argv[na++] = "--gpu-profile";
    wa->argv[na++] = cfg->gpu_profile;
    wa->argv[na++] = "--time-scale";
    wa->argv[na++] = wa->ts;
    wa->argv[na++] = "--drain-timeout";
    wa->argv[na++] = wa->drain;
    wa->argv[na++] = "--claim-wait"; /* short polls: a retired worker leaves within 2 s */
    wa->argv[na++] = "2s";
    wa->argv[na++] = "--log-level";
    wa->argv[na++] = cfg->log_level;
    snprintf(wa->grace, sizeof wa->grace, "%lldms", (long long)cfg->hang_grace_ms);
    wa->argv[na++] = "--hang-grace";
    wa->argv[na++] = wa->grace;
    const char *const pass[][2] = {{"--a1111-url", cfg->a1111_url},
                                   {"--comfyui-url", cfg->comfyui_url},
                                   {"--comfyui-workflow", cfg->comfyui_workflow},
                                   {"--comfyui-checkpoints", cfg->comfyui_checkpoints}};
    for (size_t i = 0; i < sizeof pass / sizeof pass[0]; i++)
        if (pass[i][1]) {
            wa->argv[na++] = pass[i][0];
            wa->argv[na++] = pass[i][1];
        }
    if (cfg->model_dir) {
        wa->argv[na++] = "--model-dir";
        wa->argv[na++] = cfg->model_dir;
    }
    wa->argv[na] = NULL;
}

static int ensure_demo_user(store_t *st, int64_t credits)
{
    int rc = store_user_add(st, "demo", tier_names[0], credits, clock_now_ms());
    return rc == STORE_OK ? 1 : rc == STORE_EXISTS ? 0 : -1;
}

/* The default --models follows the engine; a list the operator wrote must fit it. 0, or -1
 * with the message printed. served holds the list cfg->models then points to. */
static int up_models(app_config_t *cfg, char *served, size_t size)
{
    char unserved[512];
    if (check_backend_models(cfg, "up", 1, served, size, unserved, sizeof unserved) != 0)
        return -1;
    if (!unserved[0])
        return 0;
    if (strcmp(cfg->models, DEFAULT_MODELS) != 0 || !served[0]) {
        fprintf(stderr,
                "pingvas up: the %s backend cannot run model(s) %s of --models %s (give each a "
                "checkpoint with --comfyui-checkpoints MODEL=FILE, or leave it out of --models)\n",
                cfg->backend, unserved, cfg->models);
        return -1;
    }
    log_info("event=models_from_backend models=%s msg=\"the %s backend has no checkpoint for %s\"",
             served, cfg->backend, unserved);
    cfg->models = served;
    return 0;
}

/* What `pingvas up` runs besides the server. */
typedef struct up_fleet {
    char exe[PATH_MAX];
    int ngpus;
    autoscale_policy_t pol[2];
    supervisor_t *sup;
    autoscaler_t *as;
} up_fleet_t;

/* The worker supervisor and the autoscaler over server s. 0, or the exit status with the
 * message printed (f->sup, f->as NULL or to be freed). */
static int up_fleet_start(const app_config_t *cfg, server_t *s, up_fleet_t *f)
{
    char err[512];
    int gpus[SUP_MAX_SLOTS];
    worker_args_t wa;
    ssize_t n = readlink("/proc/self/exe", f->exe, sizeof f->exe - 1);
    if (n <= 0) {
        fprintf(stderr, "pingvas up: cannot find my own executable\n");
        return 1;
    }
    f->exe[n] = '\0';
    worker_args_build(cfg, &wa);
    f->ngpus = resolve_gpus(cfg, gpus, "up");
    if (f->ngpus < 0 || build_policies(cfg, f->pol, "up") != 0)
        return EXIT_USAGE;
    f->sup = supervisor_new(f->exe, server_worker_url(s), cfg->worker_token, wa.argv, gpus,
                            f->ngpus > 0 ? f->ngpus : 0);
    if (!f->sup) {
        fprintf(stderr, "pingvas up: out of memory\n");
        return EXIT_FAILURE;
    }
    /* A fixed count for a tier turns its autoscaling off. */
    int fixed[2] = {cfg->workers, cfg->enterprise_workers};
    for (int t = 0; t < 2; t++)
        if (fixed[t] >= 0) {
            supervisor_set_target(f->sup, tier_names[t], fixed[t]);
            f->pol[t].max_replicas = 0;
        }
    autoscaler_io_t io = {.stats = up_stats, .event = up_event, .arg = s};
    f->as = autoscaler_new(f->sup, f->pol, io, err, sizeof err);
    if (!f->as) {
        fprintf(stderr, "pingvas up: %s\n", err);
        return EXIT_USAGE;
    }
    server_set_submit_hook(s, up_poke, f->as);
    supervisor_set_cold_start_hook(f->sup, on_cold_start, NULL);
    supervisor_tick(f->sup);
    return 0;
}

/* How to use what just started: the URL, the store, the workers, a demo token and requests. */
static void up_banner(const app_config_t *cfg, server_t *s, const up_fleet_t *f)
{
    char wdesc[160], redacted[1024];
    const autoscale_policy_t *pol = f->pol;
    if (cfg->workers >= 0 && cfg->enterprise_workers >= 0)
        snprintf(wdesc, sizeof wdesc, "%d standard + %d enterprise", cfg->workers,
                 cfg->enterprise_workers);
    else
        snprintf(wdesc, sizeof wdesc,
                 "autoscaled (%s): standard %d..%d, enterprise %d..%d, target backlog %g per "
                 "worker%s",
                 cfg->autoscale_mode, pol[0].min_replicas,
                 cfg->workers >= 0 ? cfg->workers : pol[0].max_replicas, pol[1].min_replicas,
                 cfg->enterprise_workers >= 0 ? cfg->enterprise_workers : pol[1].max_replicas,
                 cfg->target_per_worker, f->ngpus > 0 ? ", one per GPU" : "");
    char *token = jwt_sign_hs256(cfg->jwt_secret, strlen(cfg->jwt_secret), "demo",
                                 clock_now_ms() / 1000, 86400);
    const char *tok = token ? token : "TOKEN", *url = server_url(s);
    printf("pingvas is up: listening on %s\n", url);
    printf("  data: %s   store: %s\n  workers: %s, %s backend%s\n", cfg->data,
           log_redact_url(cfg->database_url, redacted, sizeof redacted), wdesc, cfg->backend,
           strcmp(cfg->backend, "synthetic") == 0 ? ": test workload, not Stable Diffusion" : "");
    printf("\nSubmit a job as user 'demo' (token valid 24 h; new ones: %s token demo --data "
           "%s):\n",
           f->exe, cfg->data);
    printf("  curl -s -X POST %s/api/v1/generation/create \\\n"
           "    -H 'Authorization: Bearer %s' \\\n"
           "    -H 'Content-Type: application/json' -d '{\"prompt\":\"a lighthouse at dawn\"}'\n",
           url, tok);
    printf("Then fetch it with the id from the answer:\n");
    printf("  curl -s %s/api/v1/generation/JOB_ID -H 'Authorization: Bearer %s'\n\n", url, tok);
    printf("Or open the dashboard at %s/ and sign in with that token (the fleet view: %s token "
           "ops --role admin --data %s).\n\n",
           url, f->exe, cfg->data);
    fflush(stdout);
    free(token);
}

static int cmd_up(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1], err[512], served[512];
    int npos;
    int rc = parse_or_usage(
        "up", "[options]",
        "Runs everything on this host: the server, and local worker processes (synthetic backend "
        "by default: a test and load workload, not Stable Diffusion). SQLite and the filesystem "
        "under --data. Creates a user 'demo' on first start and prints how to submit a job.",
        up_opts, NOPTS(up_opts), &cfg, argc, argv, pos, 0, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    log_set_component("up");
    derived_t d;
    if (derive(&cfg, &d, 3 | 8, "up") != 0)
        return EXIT_USAGE;
    up_fleet_t f = {0};
    server_t *s = NULL;
    int status = up_models(&cfg, served, sizeof served) != 0 ? EXIT_USAGE : 0;
    if (status == 0) {
        server_config_t sc;
        server_config_from(&cfg, &sc);
        install_stop_handlers();
        s = server_start(&sc, err, sizeof err);
        if (!s)
            fprintf(stderr, "pingvas up: %s\n", err);
        status = s ? 0 : 1;
    }
    if (s && ensure_demo_user(server_store(s), cfg.demo_credits) < 0)
        log_error("event=demo_user_failed err=\"%s\"", store_last_error(server_store(s)));
    if (status == 0 && (status = up_fleet_start(&cfg, s, &f)) == 0) {
        write_url_file(cfg.data, server_url(s));
        up_banner(&cfg, s, &f);
        while (!got_stop) {
            supervisor_tick(f.sup);
            autoscaler_step(f.as, clock_steady_ms());
            autoscaler_wait(f.as, 100);
        }
        log_info("event=up_stopping msg=\"stopping workers (they finish or release their jobs)\"");
        server_set_submit_hook(s, NULL, NULL);
        supervisor_stop_all(f.sup, cfg.drain_ms + 10000);
    }
    if (s)
        server_stop(s);
    autoscaler_free(f.as);
    supervisor_free(f.sup);
    derived_free(&d);
    return status;
}

static const opt_t autoscale_opts[] = {
    {"server", "PINGVAS_SERVER_URL", OPT_STR, "http://127.0.0.1:8080", 0, 0, O(server),
     "URL of the pingvas server"},
    {"worker-token", "PINGVAS_WORKER_TOKEN", OPT_STR, NULL, 0, 0, O(worker_token),
     "shared secret of the worker protocol (required)"},
    OPT_MINW,
    OPT_MAXW,
    OPT_MAXEW,
    OPT_TARGET,
    OPT_COOLDOWN,
    OPT_GPUS,
    OPT_AMODE,
    OPT_BACKEND,
    OPT_PROFILE,
    OPT_TSCALE,
    OPT_COMFYUI,
    OPT_COMFYUI_WF,
    OPT_COMFYUI_CKPT,
    OPT_A1111,
    OPT_HANG_GRACE,
    OPT_MODELDIR,
    OPT_DRAIN,
    OPT_LOG,
    {"poll", "PINGVAS_AUTOSCALE_POLL", OPT_DURATION, "250ms", 10, 60000, O(poll_ms),
     "how often to read the server's backlog"},
};

typedef struct remote {
    httpc_t *h;
    char queue_url[1100];
    char events_url[1100];
    const char *token;
} remote_t;

static int remote_stats(void *arg, const char *tier, int64_t *queued, int64_t *running)
{
    remote_t *r = arg;
    httpc_req_t req = {
        .method = "GET", .url = r->queue_url, .bearer = r->token, .timeout_ms = 5000};
    httpc_resp_t resp;
    httpc_do(r->h, &req, &resp);
    int rc = -1;
    if (resp.status == 200) {
        json_error_t je;
        json_t *o = json_loadb(resp.body, resp.len, 0, &je);
        json_t *t = json_object_get(json_object_get(o, "tiers"), tier);
        if (json_is_integer(json_object_get(t, "queued")) &&
            json_is_integer(json_object_get(t, "running"))) {
            *queued = json_integer_value(json_object_get(t, "queued"));
            *running = json_integer_value(json_object_get(t, "running"));
            rc = 0;
        }
        json_decref(o);
    } else {
        log_warn("event=backlog_unreadable status=%ld err=\"%s\"", resp.status, resp.error);
    }
    httpc_resp_free(&resp);
    return rc;
}

static void remote_event(void *arg, const char *tier, int from, int to, const char *reason)
{
    remote_t *r = arg;
    log_info("event=scaling tier=%s from=%d to=%d reason=\"%s\"", tier, from, to, reason);
    char *body = wire_scaling_body(tier, from, to, reason);
    if (!body)
        return;
    httpc_req_t req = {.method = "POST",
                       .url = r->events_url,
                       .bearer = r->token,
                       .body = body,
                       .body_len = strlen(body),
                       .timeout_ms = 5000};
    httpc_resp_t resp;
    httpc_do(r->h, &req, &resp);
    httpc_resp_free(&resp);
    free(body);
}

int cmd_autoscale(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1];
    int npos;
    int rc = parse_or_usage(
        "autoscale", "[options]",
        "Runs local worker processes for a pingvas server, as many as its backlog needs (one per "
        "GPU; --max-workers slots with the synthetic backend), reading GET /api/v1/queue every "
        "--poll. Stops only idle workers; restarts crashed ones with backoff.",
        autoscale_opts, NOPTS(autoscale_opts), &cfg, argc, argv, pos, 0, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    log_set_component("autoscale");
    char server[1024], err[512];
    if (check_worker_side(&cfg, "autoscale", server, sizeof server) != 0 ||
        check_backend(&cfg, "autoscale", 1) != 0)
        return EXIT_USAGE;
    int gpus[SUP_MAX_SLOTS];
    int ngpus = resolve_gpus(&cfg, gpus, "autoscale");
    autoscale_policy_t pol[2];
    if (ngpus < 0 || build_policies(&cfg, pol, "autoscale") != 0)
        return EXIT_USAGE;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        fprintf(stderr, "pingvas autoscale: cannot find my own executable\n");
        return 1;
    }
    exe[n] = '\0';
    remote_t r = {.h = httpc_new(), .token = cfg.worker_token};
    snprintf(r.queue_url, sizeof r.queue_url, "%s/api/v1/queue", server);
    snprintf(r.events_url, sizeof r.events_url, "%s" WIRE_PATH_SCALING_EVENTS, server);
    worker_args_t wa;
    worker_args_build(&cfg, &wa);
    supervisor_t *sup =
        supervisor_new(exe, server, cfg.worker_token, wa.argv, gpus, ngpus > 0 ? ngpus : 0);
    if (!sup) {
        fprintf(stderr, "pingvas autoscale: out of memory\n");
        httpc_free(r.h);
        return EXIT_FAILURE;
    }
    autoscaler_io_t io = {.stats = remote_stats, .event = remote_event, .arg = &r};
    autoscaler_t *as = autoscaler_new(sup, pol, io, err, sizeof err);
    if (!as) {
        fprintf(stderr, "pingvas autoscale: %s\n", err);
        supervisor_free(sup);
        httpc_free(r.h);
        return EXIT_USAGE;
    }
    install_stop_handlers();
    printf("pingvas autoscale: workers for %s, standard %d..%d, enterprise %d..%d (%s)\n", server,
           pol[0].min_replicas, pol[0].max_replicas, pol[1].min_replicas, pol[1].max_replicas,
           cfg.autoscale_mode);
    fflush(stdout);
    while (!got_stop) {
        supervisor_tick(sup);
        autoscaler_step(as, clock_steady_ms());
        autoscaler_wait(as, cfg.poll_ms);
    }
    supervisor_stop_all(sup, cfg.drain_ms + 10000);
    autoscaler_free(as);
    supervisor_free(sup);
    httpc_free(r.h);
    return 0;
}

/* The Kubernetes pod guard of a worker (podguard.h): off, in-cluster, or at --kube-api. Sets
 * *out (NULL when off). 0, or -1 with a message (a pod that asked for it but is misconfigured). */
static int start_pod_guard(const app_config_t *cfg, pod_guard_t **out)
{
    *out = NULL;
    const char *api = cfg->kube_api ? cfg->kube_api : "auto";
    if (strcmp(api, "off") == 0 || (strcmp(api, "auto") == 0 && !cfg->pod_name))
        return 0;
    pod_guard_config_t pc = {.api_url = strcmp(api, "auto") == 0 ? NULL : api,
                             .sa_dir = cfg->kube_sa_dir,
                             .pod_name = cfg->pod_name,
                             .namespace = cfg->pod_namespace,
                             .node_name = cfg->node_name,
                             .poll_ms = cfg->kube_poll_ms};
    char err[512];
    *out = pod_guard_start(&pc, err, sizeof err);
    if (!*out) {
        fprintf(stderr, "pingvas worker: Kubernetes pod guard (--kube-api %s): %s\n", api, err);
        return -1;
    }
    return 0;
}

/* The cost-accounting placement of a worker, as the server accepts it (core/wire.h). */
static int check_placement(const app_config_t *cfg)
{
    const char *names[] = {"--instance-type", "--zone"}, *v[] = {cfg->instance_type, cfg->zone};
    for (int i = 0; i < 2; i++) {
        size_t n = v[i] ? strlen(v[i]) : 0;
        if (v[i] &&
            (n > WIRE_PLACE_MAX || strspn(v[i], "abcdefghijklmnopqrstuvwxyz0123456789.-") != n)) {
            fprintf(stderr, "pingvas worker: %s: '%s' is not up to %d of a-z 0-9 . -\n", names[i],
                    v[i], WIRE_PLACE_MAX);
            return -1;
        }
    }
    if (cfg->capacity_type && *cfg->capacity_type && strcmp(cfg->capacity_type, "spot") != 0 &&
        strcmp(cfg->capacity_type, "on-demand") != 0) {
        fprintf(stderr, "pingvas worker: --capacity-type: '%s' is not spot or on-demand\n",
                cfg->capacity_type);
        return -1;
    }
    return 0;
}

static int cmd_worker(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1];
    int npos;
    int rc = parse_or_usage(
        "worker", "[options]",
        "Runs one worker (concurrency 1, one GPU) against a pingvas server. On SIGTERM or a spot "
        "interruption notice it stops claiming, finishes the running job if it ends inside the "
        "drain window, and otherwise releases it at once so another worker runs it.",
        worker_opts, NOPTS(worker_opts), &cfg, argc, argv, pos, 0, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    log_set_component("worker");
    if (tier_index(cfg.tier) < 0) {
        fprintf(stderr, "pingvas worker: --tier: '%s' is not standard or enterprise\n", cfg.tier);
        return EXIT_USAGE;
    }
    char server[1024];
    if (check_worker_side(&cfg, "worker", server, sizeof server) != 0 ||
        check_backend(&cfg, "worker", 0) != 0 || check_placement(&cfg) != 0)
        return EXIT_USAGE;
    const char *imds = cfg.imds_url;
    if (!imds || strcmp(imds, "off") == 0 || !*imds)
        imds = NULL;
    else if (strcmp(imds, "auto") == 0)
        imds = aws_on_ec2() ? "http://169.254.169.254" : NULL;
    pod_guard_t *guard = NULL;
    if (start_pod_guard(&cfg, &guard) != 0)
        return EXIT_USAGE;
    worker_config_t wc = {.server_url = server,
                          .token = cfg.worker_token,
                          .tier = cfg.tier,
                          .worker_id = cfg.worker_id,
                          .backend = backend_config_from(&cfg),
                          .drain_ms = cfg.drain_ms,
                          .claim_wait_ms = cfg.claim_wait_ms,
                          .max_jobs = cfg.max_jobs,
                          .imds_url = imds,
                          .imds_poll_ms = cfg.imds_poll_ms,
                          .guard = guard,
                          .instance_type = cfg.instance_type,
                          .capacity_type = cfg.capacity_type,
                          .zone = cfg.zone,
                          .instance_gpus = cfg.instance_gpus};
    int status = worker_run(&wc);
    pod_guard_stop(guard);
    return status;
}

static store_t *open_admin_store(app_config_t *cfg, derived_t *d, const char *cmd)
{
    if (derive(cfg, d, 0, cmd) != 0)
        return NULL;
    char err[512];
    store_t *st = store_open(cfg->database_url, err, sizeof err);
    if (!st) {
        fprintf(stderr, "pingvas %s: %s\n", cmd, err);
        return NULL;
    }
    if (store_migrate(st) != STORE_OK) {
        char redacted[1024];
        fprintf(stderr, "pingvas %s: migrating %s: %s\n", cmd,
                log_redact_url(cfg->database_url, redacted, sizeof redacted), store_last_error(st));
        store_close(st);
        return NULL;
    }
    return st;
}

static int cmd_migrate(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1];
    int npos;
    int rc = parse_or_usage("migrate", "[options]",
                            "Creates the schema, or upgrades it to this version. Safe to run "
                            "again and from several replicas.",
                            admin_opts, NOPTS(admin_opts), &cfg, argc, argv, pos, 0, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    derived_t d;
    store_t *st = open_admin_store(&cfg, &d, "migrate");
    if (!st)
        return 1;
    char redacted[1024];
    printf("schema up to date in %s\n",
           log_redact_url(cfg.database_url, redacted, sizeof redacted));
    store_close(st);
    derived_free(&d);
    return 0;
}

static int user_add(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1];
    int npos;
    int rc = parse_or_usage("user add", "NAME [--credits N] [--tier standard|enterprise]",
                            "Creates a user with a starting balance.", user_add_opts,
                            NOPTS(user_add_opts), &cfg, argc - 1, argv + 1, pos, 1, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (npos != 1 || !validate_user_name(pos[0])) {
        fprintf(stderr, "pingvas user add: NAME is required: 1 to 64 of A-Z a-z 0-9 _ . -\n");
        return EXIT_USAGE;
    }
    if (tier_index(cfg.tier) < 0) {
        fprintf(stderr, "pingvas user add: --tier: '%s' is not standard or enterprise\n", cfg.tier);
        return EXIT_USAGE;
    }
    derived_t d;
    store_t *st = open_admin_store(&cfg, &d, "user add");
    if (!st)
        return 1;
    rc = store_user_add(st, pos[0], cfg.tier, cfg.credits, clock_now_ms());
    int status = 0;
    if (rc == STORE_OK) {
        printf("user %s added (tier %s, %d credits)\n", pos[0], cfg.tier, cfg.credits);
    } else if (rc == STORE_EXISTS) {
        fprintf(stderr, "pingvas user add: user '%s' already exists\n", pos[0]);
        status = 1;
    } else {
        fprintf(stderr, "pingvas user add: %s\n", store_last_error(st));
        status = 1;
    }
    store_close(st);
    derived_free(&d);
    return status;
}

static int user_credits(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[2];
    int npos;
    int rc = parse_or_usage("user credits", "NAME +N|-N",
                            "Adds (or with -N removes) credits; the balance never goes below "
                            "zero.",
                            admin_opts, NOPTS(admin_opts), &cfg, argc - 1, argv + 1, pos, 2, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    char *end;
    long long delta = 0;
    if (npos == 2) {
        errno = 0;
        delta = strtoll(pos[1], &end, 10);
    }
    if (npos != 2 || errno || *end || (pos[1][0] != '+' && pos[1][0] != '-') ||
        delta > 1000000000000LL || delta < -1000000000000LL) {
        fprintf(stderr, "pingvas user credits: usage: pingvas user credits NAME +N (or -N)\n");
        return EXIT_USAGE;
    }
    derived_t d;
    store_t *st = open_admin_store(&cfg, &d, "user credits");
    if (!st)
        return 1;
    int64_t bal = 0;
    rc = store_user_credit(st, pos[0], delta, clock_now_ms(), &bal);
    int status = 0;
    if (rc == STORE_OK) {
        printf("user %s: balance %lld\n", pos[0], (long long)bal);
    } else if (rc == STORE_NOT_FOUND) {
        fprintf(stderr, "pingvas user credits: no user '%s'\n", pos[0]);
        status = 1;
    } else if (rc == STORE_CONFLICT) {
        fprintf(stderr, "pingvas user credits: the balance cannot go below zero\n");
        status = 1;
    } else {
        fprintf(stderr, "pingvas user credits: %s\n", store_last_error(st));
        status = 1;
    }
    store_close(st);
    derived_free(&d);
    return status;
}

/* pingvas user disable|enable NAME */
static int user_set_disabled(int argc, char **argv, bool disable)
{
    app_config_t cfg;
    char *pos[1];
    int npos;
    const char *cmd = disable ? "user disable" : "user enable";
    int rc = parse_or_usage(cmd, "NAME",
                            disable ? "Disables a user: the server refuses its tokens (403 "
                                      "user_disabled) until 'pingvas user enable'. Jobs already "
                                      "queued still run; its balance and history are kept."
                                    : "Enables a disabled user again.",
                            admin_opts, NOPTS(admin_opts), &cfg, argc - 1, argv + 1, pos, 1, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (npos != 1 || !validate_user_name(pos[0])) {
        fprintf(stderr, "pingvas %s: NAME is required: 1 to 64 of A-Z a-z 0-9 _ . -\n", cmd);
        return EXIT_USAGE;
    }
    derived_t d;
    store_t *st = open_admin_store(&cfg, &d, cmd);
    if (!st)
        return 1;
    rc = store_user_set_disabled(st, pos[0], disable, clock_now_ms());
    if (rc == STORE_OK)
        printf("user %s %s\n", pos[0], disable ? "disabled" : "enabled");
    else if (rc == STORE_NOT_FOUND)
        fprintf(stderr, "pingvas %s: no user '%s'\n", cmd, pos[0]);
    else
        fprintf(stderr, "pingvas %s: %s\n", cmd, store_last_error(st));
    store_close(st);
    derived_free(&d);
    return rc == STORE_OK ? 0 : 1;
}

static int cmd_user(int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";
    if (strcmp(sub, "add") == 0)
        return user_add(argc, argv);
    if (strcmp(sub, "credits") == 0)
        return user_credits(argc, argv);
    if (strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0)
        return user_set_disabled(argc, argv, sub[0] == 'd');
    fprintf(stderr, "usage: pingvas user add NAME [--credits N] [--tier standard|enterprise]\n"
                    "       pingvas user credits NAME +N\n"
                    "       pingvas user disable NAME | pingvas user enable NAME\n");
    return strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 ? 0 : EXIT_USAGE;
}

/* A token is minted only for an existing, active user of the server's store: an unknown name
 * or a data directory that is not the server's is an error, not a token the server refuses.
 * Sets cfg->database_url (db holds it). 0, or 1 with a message. */
static int token_check_user(app_config_t *cfg, const char *name, char *db, size_t dbsize)
{
    if (!cfg->database_url || !*cfg->database_url) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/pingvas.db", cfg->data);
        if (access(path, F_OK) != 0) {
            fprintf(stderr,
                    "pingvas token: no database at %s: --data must be the server's data "
                    "directory, or set DATABASE_URL to the server's store\n",
                    path);
            return 1;
        }
        snprintf(db, dbsize, "sqlite://%s", path);
        cfg->database_url = db;
    }
    char err[512], redacted[1024];
    store_t *st = store_open(cfg->database_url, err, sizeof err);
    if (!st) {
        fprintf(stderr, "pingvas token: %s\n", err);
        return 1;
    }
    user_t u;
    int rc = store_user_get(st, name, &u);
    if (rc == STORE_NOT_FOUND)
        fprintf(stderr, "pingvas token: no user '%s' in %s; add it with 'pingvas user add %s'\n",
                name, log_redact_url(cfg->database_url, redacted, sizeof redacted), name);
    else if (rc == STORE_OK && u.disabled_at)
        fprintf(stderr, "pingvas token: user '%s' is disabled ('pingvas user enable %s')\n", name,
                name);
    else if (rc != STORE_OK)
        fprintf(stderr, "pingvas token: %s\n", store_last_error(st));
    store_close(st);
    return rc == STORE_OK && !u.disabled_at ? 0 : 1;
}

static int cmd_token(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1];
    int npos;
    int rc = parse_or_usage("token", "NAME [--ttl 24h] [--role admin]",
                            "Prints an HS256 JWT for user NAME, signed with JWT_SECRET (or the "
                            "secret the server generated in the data directory). NAME must be an "
                            "active user of the server's store (--data or DATABASE_URL). With "
                            "--role admin the token carries \"role\":\"admin\" and opens the "
                            "operator endpoints.",
                            token_opts, NOPTS(token_opts), &cfg, argc, argv, pos, 1, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (npos != 1 || !validate_user_name(pos[0])) {
        fprintf(stderr, "pingvas token: NAME is required: 1 to 64 of A-Z a-z 0-9 _ . -\n");
        return EXIT_USAGE;
    }
    if (cfg.role && strcmp(cfg.role, JWT_ROLE_ADMIN) != 0) {
        fprintf(stderr, "pingvas token: --role: unknown role '%s' (the only role is admin)\n",
                cfg.role);
        return EXIT_USAGE;
    }
    char db[PATH_MAX + 16];
    /* an operator (--role admin) need not be a user in the store */
    if (!cfg.role && token_check_user(&cfg, pos[0], db, sizeof db) != 0)
        return 1;
    derived_t d;
    if (cfg.role)
        cfg.database_url = "unused";
    cfg.storage_url = "unused";
    if (derive(&cfg, &d, 1 | 4, "token") != 0)
        return 1;
    char *tok = jwt_sign_hs256_role(cfg.jwt_secret, strlen(cfg.jwt_secret), pos[0], cfg.role,
                                    clock_now_ms() / 1000, cfg.ttl_ms / 1000);
    derived_free(&d);
    if (!tok) {
        fprintf(stderr, "pingvas token: could not sign\n");
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

static int cmd_cost(int argc, char **argv)
{
    app_config_t cfg;
    char *pos[1], err[512];
    int npos;
    int rc = parse_or_usage("cost", "[--since T] [--until T] [--by user|tier|day|instance_type]",
                            "What the fleet cost from the workers' lifetimes and the completed "
                            "jobs in the store, at the catalog's prices: dollars in total, per "
                            "image and per group, GPU utilization, idle and loading cost, spot "
                            "vs on-demand, and the lower bound (docs/cost.md).",
                            cost_opts, NOPTS(cost_opts), &cfg, argc, argv, pos, 0, &npos);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    int64_t now = clock_now_ms(), until = now, since;
    cost_by_t by;
    price_catalog_t prices;
    const char *bad = cfg.until && cost_parse_time(cfg.until, &until) != 0 ? "--until" : NULL;
    since = until - 86400000;
    if (!bad && cfg.since && cost_parse_time(cfg.since, &since) != 0)
        bad = "--since";
    if (bad || since >= until || cost_parse_by(cfg.by, &by) != 0) {
        fprintf(stderr, "pingvas cost: %s\n",
                bad              ? (strcmp(bad, "--since") == 0
                                        ? "--since: expected RFC 3339 UTC, a date (2026-11-29) or Unix seconds"
                                        : "--until: expected RFC 3339 UTC, a date (2026-11-29) or Unix seconds")
                : since >= until ? "--since must be before --until"
                                 : "--by: expected user, tier, day or instance_type");
        return EXIT_USAGE;
    }
    if (!cfg.prices)
        prices_default(&prices);
    else if (prices_load(cfg.prices, &prices, err, sizeof err) != 0) {
        fprintf(stderr, "pingvas cost: --prices: %s\n", err);
        return EXIT_USAGE;
    }
    derived_t d;
    store_t *st = open_admin_store(&cfg, &d, "cost");
    if (!st)
        return 1;
    json_t *report = NULL;
    int status = 0;
    if (cost_from_store(st, &prices, since, until, now, by, &report) != STORE_OK) {
        fprintf(stderr, "pingvas cost: %s\n", store_last_error(st));
        status = 1;
    } else if (cfg.json) {
        char *text = json_dumps(report, JSON_COMPACT);
        printf("%s\n", text ? text : "{}");
        free(text);
    } else {
        cost_print(stdout, report);
    }
    json_decref(report);
    store_close(st);
    derived_free(&d);
    return status;
}

static const struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"up", cmd_up, "server + local workers on embedded defaults (SQLite, filesystem)"},
    {"server", cmd_server, "the API and worker-protocol server alone"},
    {"worker", cmd_worker, "one worker (one GPU) for a server"},
    {"autoscale", cmd_autoscale, "run local workers scaled by the backlog of a server"},
    {"loadtest", cmd_loadtest, "submit N jobs at concurrency C, wait, report latencies"},
    {"user", cmd_user,
     "user add NAME [--credits N] [--tier T] | user credits NAME +N | user disable|enable NAME"},
    {"token", cmd_token, "mint an HS256 JWT for a user (--role admin: an operator)"},
    {"migrate", cmd_migrate, "create or upgrade the schema"},
    {"cost", cmd_cost, "what the fleet cost: dollars per image, user, tier, day; idle cost"},
    {"simulate", cmd_simulate, "what a fleet would cost and how long jobs would wait"},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pingvas COMMAND [options]   (pingvas help COMMAND, pingvas COMMAND --help)\n\n"
            "pingvas runs text-to-image jobs on GPU workers that scale with the backlog.\n\n"
            "Commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "this text, or help for one command");
}

int main(int argc, char **argv)
{
    /* A worker leaves libcurl to its first request through a proxy, if any: curl_easy_init
     * initialises it then (thread safe: curl_version_info's CURL_VERSION_THREADSAFE). Its HTTP and
     * HTTPS go through lib/http1.c. */
    if (argc < 2 || strcmp(argv[1], "worker") != 0)
        curl_global_init(CURL_GLOBAL_DEFAULT);
    int status;
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        if (argc > 2 && strcmp(argv[1], "help") == 0 && strcmp(argv[2], "help") != 0) {
            for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                if (strcmp(commands[i].name, argv[2]) == 0) {
                    char *hargv[] = {argv[0], argv[2], "--help", NULL};
                    if (strcmp(argv[2], "user") == 0) {
                        char *uargv[] = {argv[0], "user", "add", "--help", NULL};
                        commands[i].fn(4, uargv);
                        char *cargv[] = {argv[0], "user", "credits", "--help", NULL};
                        commands[i].fn(4, cargv);
                        char *dargv[] = {argv[0], "user", "disable", "--help", NULL};
                        return commands[i].fn(4, dargv);
                    }
                    return commands[i].fn(3, hargv);
                }
            fprintf(stderr, "pingvas help: no command '%s'\n", argv[2]);
            return EXIT_USAGE;
        }
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, argv[1]) == 0) {
            status = commands[i].fn(argc, argv);
            curl_global_cleanup();
            return status;
        }
    fprintf(stderr, "pingvas: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
