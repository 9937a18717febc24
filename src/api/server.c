/* server.c: HTTP front of pingvas on libmicrohttpd, event-driven: a small pool of epoll threads
 * (MHD_USE_EPOLL_INTERNAL_THREAD; front_threads) serves every connection; no thread per
 * connection. Three kinds of request are parked (MHD_suspend_connection) instead of holding a
 * thread, and resumed with their answer:
 * - creates: parsed, authenticated and validated on the pool thread, then queued to the create
 *   writer (one thread on SQLite, four on PostgreSQL), which commits every create waiting at that
 *   moment in one transaction
 *   (store_job_create_many: the group commit) and resumes their connections;
 * - long-poll claims that found no work: the claim dispatcher, one thread, retries them when
 *   work arrives (server_notify_work), at least every 500 ms, and answers 204 at their deadline;
 * - completes: queued to the complete writer, a pipeline of two threads (an image stage, then
 *   a commit stage: see COMPLETE_BATCH_MAX), which resumes them once committed.
 * Every state change goes through the store. */
#include "api/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/apierr.h"
#include "blob/blob.h"
#include "bridge/celery.h"
#include "lib/clock.h"
#include "lib/jwt.h"
#include "lib/jwtcache.h"
#include "lib/log.h"
#include "api/connguard.h"
#include "api/dashboard.h"
#include "api/hub.h"
#include "api/images.h"
#include "api/metrics.h"
#include "api/ratelimit.h"
#include "api/cost.h"
#include "api/route.h"
#include "api/sse.h"
#include "api/webhook.h"
#include "core/validate.h"
#include "core/wire.h"
#include "lib/config.h"
#include "lib/netguard.h"

#define IMAGE_MAX (64 * 1024 * 1024) /* cap on an uploaded PNG */
#define INTERNAL_BODY_MAX (16 * 1024)
#define MAX_MODELS 32
#define LIST_LIMIT_DEFAULT 20
#define LIST_LIMIT_MAX 100
#define READY_FAULT_MS 10000 /* /readyz reports a store or image store fault this long */
#define WAIT_MAX_MS 60000    /* GET /api/v1/generation/{id}?wait= */
#define STREAMS_PER_USER 8   /* open GET /api/v1/events streams per user (429 beyond) */

/* Create writers: one on SQLite (one writer is the group commit; more would split its batches),
 * WRITERS_MAX on PostgreSQL (batches in flight side by side on their own connections, and a
 * stalled database does not hold the whole queue behind one batch). */
#define WRITERS_MAX 4

struct server {
    server_config_t cfg;
    struct MHD_Daemon *mhd;
    struct MHD_Daemon *wmhd; /* the worker protocol's own listener (--worker-port), or NULL */
    connguard_t *guard;      /* header and request deadlines of both listeners */
    char worker_url[256];    /* where workers reach wmhd; "" without it */
    store_t *store;
    blob_t *blob;
    int port;
    char url[256];
    char *models_buf;
    const char *models[MAX_MODELS + 1];
    validate_config_t vcfg;
    ratelimit_t *rl;
    image_secrets_t image_secrets; /* name image keys (images.h) */

    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv;
    uint64_t wake_gen;

    pthread_t reaper;
    /* clock_mono_ms() of the last sign that the store could not serve (an error, a heartbeat
     * that took over a quarter lease, the server starting): the reaper takes no lease back
     * until the store has served for one full lease since (see reaper_main). */
    _Atomic int64_t store_fault_ms;
    _Atomic(const char *) store_fault_why; /* its reason for the log: "store_fault" and so on */
    /* The last store error and the last "image store full", for /readyz (READY_FAULT_MS). */
    pthread_mutex_t fault_mu;
    int64_t store_err_at, blob_full_at; /* clock_mono_ms(); 0 = never */
    char store_err[256];
    atomic_int ready; /* set once every part is open: requests before that get 503 */
    atomic_int stopping;
    int reaper_started;

    pthread_mutex_t events_mu;
    struct scaling_event {
        int64_t at_ms;
        char tier[16];
        int from, to;
        char reason[200];
    } events[SERVER_EVENTS_MAX];
    int64_t nevents; /* total recorded; the ring holds the newest SERVER_EVENTS_MAX */
    server_submit_fn submit_fn;
    void *submit_arg;
    celery_bridge_t *celery;    /* NULL without REDIS_URL */
    price_catalog_t prices;     /* GET /api/v1/cost */
    hub_t *hub;                 /* follows the event log (hub.h) */
    webhook_sender_t *webhooks; /* delivers the webhook outbox (webhook.h) */
    jwtcache_t *jwt_cache;      /* tokens verified OK this second (lib/jwtcache.h) */

    /* Parked requests (see the top of this file). */
    pthread_mutex_t park_mu;
    pthread_cond_t create_cv;               /* signalled when a create is queued */
    struct req *creates, *creates_tail;     /* queued for the create writer */
    struct req *claims;                     /* long-poll claims waiting for work, oldest first */
    pthread_cond_t complete_cv;             /* signalled when a complete is queued */
    struct req *completes, *completes_tail; /* queued for the complete writer's image stage */
    pthread_cond_t commit_cv;               /* signalled when the image stage hands on a batch */
    struct req *imaged, *imaged_tail;       /* images stored: queued for the commit stage */
    pthread_t completer, committer;         /* the image stage and the commit stage */
    int completer_started, committer_started;
    int complete_stages; /* 1: the image stage also commits (SQLite); 2: a pipeline (PostgreSQL) */
    atomic_int imager_done;  /* set once the image stage has stopped: the commit stage drains */
    atomic_int suspended;    /* connections parked right now */
    atomic_int threads_stop; /* set once the daemons are stopped */
    pthread_t writers[WRITERS_MAX], dispatcher;
    int nwriters, dispatcher_started; /* nwriters: create writer threads started */
};

enum park_kind { PARK_NONE, PARK_CREATE, PARK_CLAIM, PARK_COMPLETE };

/* Per-request state: the body, accumulated up to a cap, and what a parked request needs. */
typedef struct req {
    char *body;
    size_t len;
    size_t cap;
    size_t limit;
    int too_big;
    int64_t start_us;
    int64_t wait_deadline; /* ?wait=: hub_now_ms() when it runs out; 0 before the first look */
    enum park_kind park;   /* PARK_NONE unless suspended or resumed with an answer */
    int answered;          /* set just before the resume */
    struct MHD_Connection *conn;
    struct req *next;
    /* a create: its arguments and, once answered, its outcome (create.rc, create.out) */
    char user[USER_NAME_MAX + 1];
    char *idem;
    job_params_t params;
    store_create_t create;
    /* a claim: rc of the last try (STORE_OK with job, STORE_EMPTY at the deadline, STORE_ERR),
     * or -1 when the client went away */
    wire_claim_t claim;
    int64_t deadline_mono, seen_mono;
    int claim_rc;
    job_t job;
    /* a complete-and-claim parked for its next job: 1 once complete_finish has the completed job
     * (in sc.done), answered with the claim's outcome as its "next" (claim_finish) */
    int done;
    /* a complete (op_complete): its report, the PNG it carries (in body, or NULL) and whether
     * to store it at key (put, img), then its outcome (sc) */
    wire_report_t report;
    const char *png;
    size_t png_len;
    int put, replay;
    char job_id[JOB_ID_SIZE];
    char key[IMAGE_KEY_MAX];
    blob_item_t img;
    store_complete_t sc;
} req_t;

/* ---------- helpers ---------- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *ctype,
                                 const char *text, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (status >= 100 && status < 600)
        atomic_fetch_add(&metrics.http_requests[status / 100], 1);
    return ret;
}

/* Sends the JSON text (malloc'd, taken over; NULL: out of memory, a 500) with one more header
 * when hdr is not NULL. */
static enum MHD_Result send_json_text(struct MHD_Connection *c, int status, char *text, size_t len,
                                      const char *hdr, const char *value)
{
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        return send_text(c, 500, "application/json", oom, sizeof oom - 1);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (hdr)
        MHD_add_response_header(r, hdr, value);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&metrics.http_requests[status / 100], 1);
    return ret;
}

/* Sends j (takes ownership), with one more header when hdr is not NULL. */
static enum MHD_Result send_json_hdr(struct MHD_Connection *c, int status, json_t *j,
                                     const char *hdr, const char *value)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return send_json_text(c, status, text, text ? strlen(text) : 0, hdr, value);
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j)
{
    return send_json_hdr(c, status, j, NULL, NULL);
}

/* The error body of e, with one more header when hdr is not NULL (Retry-After of a 429). */
static enum MHD_Result send_error_hdr(struct MHD_Connection *c, const api_error_t *e,
                                      const char *hdr, const char *value)
{
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(e->code));
    json_object_set_new(err, "message", json_string(e->message));
    if (e->field[0])
        json_object_set_new(err, "field", json_string(e->field));
    json_t *o = json_object();
    json_object_set_new(o, "error", err);
    return send_json_hdr(c, e->status, o, hdr, value);
}

static enum MHD_Result send_error(struct MHD_Connection *c, const api_error_t *e)
{
    return send_error_hdr(c, e, NULL, NULL);
}

static enum MHD_Result fail(struct MHD_Connection *c, int status, const char *code,
                            const char *field, const char *msg)
{
    api_error_t e;
    api_error_set(&e, status, code, field, "%s", msg);
    return send_error(c, &e);
}

/* Defers the reaper (see reaper_main) for why ("store_fault" or "server_start"). */
static void store_fault_for(server_t *s, const char *why)
{
    atomic_store(&s->store_fault_why, why);
    atomic_store(&s->store_fault_ms, clock_mono_ms());
}

static void store_fault(server_t *s)
{
    store_fault_for(s, "store_fault");
}

/* 503 for a store error whose message is err (recorded as the store's last fault). */
static enum MHD_Result unavailable(server_t *s, struct MHD_Connection *c, const char *err)
{
    store_fault(s);
    pthread_mutex_lock(&s->fault_mu);
    s->store_err_at = clock_mono_ms();
    snprintf(s->store_err, sizeof s->store_err, "%s", err);
    pthread_mutex_unlock(&s->fault_mu);
    log_error("event=store_error err=\"%s\"", err);
    return fail(c, 503, "unavailable", NULL,
                "the job store is unavailable; retry shortly (the request changed nothing)");
}

static enum MHD_Result store_unavailable(server_t *s, struct MHD_Connection *c)
{
    return unavailable(s, c, store_last_error(s->store));
}

static char *image_url_for(server_t *s, const job_t *j)
{
    if (!j->image_key || !*j->image_key)
        return NULL;
    return blob_public_url(s->blob, j->image_key);
}

/* The Celery bridge's view of the server: image URLs, new work, and jobs that ended. */
static char *celery_image_url(void *arg, const job_t *j)
{
    return image_url_for(arg, j);
}

static void celery_work(void *arg)
{
    server_notify_work(arg);
}

/* A job's state changed by a complete, fail or cancel: the hub, the webhook sender (only for a
 * job that ended with a webhook: the transaction that ended it made its delivery due; the sender
 * looks at the outbox on its own every tick too, for retries and other replicas' jobs) and the
 * Celery bridge learn of it. */
static void job_ended(server_t *s, const job_t *j)
{
    hub_kick(s->hub);
    if (j->has_webhook && job_status_is_final(j->status))
        webhook_kick(s->webhooks);
    if (s->celery && job_status_is_final(j->status))
        celery_bridge_job_ended(s->celery, j->id);
}

static int cancel_job(server_t *s, const char *user, const char *id, const char *by, job_t *j);

/* celery_revoke_fn: a Celery revoke cancels a job that has not started; with terminate, a
 * running one too (its worker learns it on its next heartbeat, as for an API cancel). */
static int celery_revoke(void *arg, const char *job_id, bool terminate)
{
    server_t *s = arg;
    job_t j = {0};
    char user[USER_NAME_MAX + 1];
    int rc = store_job_get(s->store, job_id, &j);
    bool cancel =
        rc == STORE_OK && (j.status == JOB_QUEUED || (terminate && j.status == JOB_IN_PROGRESS));
    snprintf(user, sizeof user, "%s", j.user);
    job_clear(&j);
    if (rc == STORE_ERR)
        return -1;
    if (!cancel)
        return 0;
    rc = cancel_job(s, user, job_id, "celery_revoke", &j);
    job_clear(&j);
    return rc == STORE_OK ? 1 : rc == STORE_ERR ? -1 : 0;
}

static json_t *job_json(server_t *s, const job_t *j)
{
    char *url = image_url_for(s, j);
    json_t *o = job_to_json(j, url);
    free(url);
    return o;
}

/* Sends the text jw holds (taken). */
static enum MHD_Result send_jsonw(struct MHD_Connection *c, int status, jsonw_t *jw)
{
    size_t len;
    char *text = jsonw_take(jw, &len);
    return send_json_text(c, status, text, len, NULL, NULL);
}

/* Sends a job's JSON (job_to_json's text, written without a tree: the answer of every create
 * and GET) with its webhook delivery w when not NULL: url, id (the webhook-id), state (waiting
 * until the job ends, then pending, delivered or failed), attempts, last_error, delivered_at. */
static enum MHD_Result send_job(server_t *s, struct MHD_Connection *c, int status, const job_t *j,
                                const store_webhook_t *w)
{
    jsonw_t jw = {0};
    char *url = image_url_for(s, j);
    jsonw_open(&jw);
    job_json_members(&jw, j, url);
    free(url);
    if (w) {
        char at[40], id[JOB_ID_SIZE + 8];
        clock_format_rfc3339(w->delivered_at, at, sizeof at);
        snprintf(id, sizeof id, "msg_%s", j->id);
        jsonw_open_key(&jw, "webhook");
        jsonw_str(&jw, "url", w->url);
        jsonw_str(&jw, "id", id);
        jsonw_str(&jw, "state", w->state);
        jsonw_int(&jw, "attempts", w->attempts);
        jsonw_str(&jw, "last_error", w->last_error[0] ? w->last_error : NULL);
        jsonw_str(&jw, "delivered_at", w->delivered_at ? at : NULL);
        jsonw_close(&jw);
    }
    jsonw_close(&jw);
    return send_jsonw(c, status, &jw);
}

/* Sends a job's JSON with its webhook delivery, read from the store, when it has one. */
static enum MHD_Result send_job_webhook(server_t *s, struct MHD_Connection *c, int status,
                                        const job_t *j)
{
    store_webhook_t w;
    int has = store_webhook_get(s->store, j->id, &w) == STORE_OK;
    return send_job(s, c, status, j, has ? &w : NULL);
}

/* Sends the JSON of a job just created with parameters p: its webhook is the one of p, waiting
 * (the store wrote it so in the job's transaction), so the answer needs no second read. */
static enum MHD_Result send_job_created(server_t *s, struct MHD_Connection *c, const job_t *j,
                                        const job_params_t *p)
{
    if (!p->webhook_url)
        return send_job(s, c, 201, j, NULL);
    store_webhook_t w = {.attempts = 0};
    snprintf(w.job_id, sizeof w.job_id, "%s", j->id);
    snprintf(w.url, sizeof w.url, "%s", p->webhook_url);
    snprintf(w.state, sizeof w.state, "waiting");
    return send_job(s, c, 201, j, &w);
}

/* The webhook sender's view of a job: its JSON, or NULL when it is gone. */
static json_t *webhook_job(void *arg, const char *job_id)
{
    server_t *s = arg;
    job_t j = {0};
    if (store_job_get(s->store, job_id, &j) != STORE_OK) {
        job_clear(&j);
        return NULL;
    }
    json_t *o = job_json(s, &j);
    job_clear(&j);
    return o;
}

/* Wakes the claim dispatcher (a new parked claim, new work, shutting down). */
static void wake_dispatcher(server_t *s)
{
    pthread_mutex_lock(&s->wake_mu);
    s->wake_gen++;
    pthread_cond_broadcast(&s->wake_cv);
    pthread_mutex_unlock(&s->wake_mu);
}

void server_notify_work(server_t *s)
{
    if (s->hub)
        hub_kick(s->hub); /* a job was created or went back to the queue: an event */
    wake_dispatcher(s);
}

/* The store's cross-process wakeup (PostgreSQL LISTEN/NOTIFY), called from a store thread. */
static void store_work_cb(void *arg)
{
    server_notify_work(arg);
}

int64_t server_estimate_credits(const job_params_t *p, double rate)
{
    return job_estimate_credits(p, rate);
}

/* ---------- authentication ---------- */

static const char *bearer(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

/* Constant-time comparison of a bearer token with a secret (NULL or empty: no match). */
static int token_equals(const char *tok, const char *secret)
{
    if (!secret || !*secret)
        return 0;
    size_t a = strlen(tok), b = strlen(secret);
    return a == b && CRYPTO_memcmp(tok, secret, a) == 0;
}

/* The worker token, or during a rotation the previous one. */
static int is_worker_token(server_t *s, const char *tok)
{
    return token_equals(tok, s->cfg.worker_token) ||
           token_equals(tok, s->cfg.worker_token_previous);
}

/* Verifies the bearer JWT only; copies its subject into sub (USER_NAME_MAX + 1 bytes) and its
 * role claim into role (JWT_ROLE_MAX bytes, "" without one; role may be NULL) and returns 0, or
 * sends 401 and returns -1. A token signed with the previous secret (rotation window,
 * JWT_SECRET_PREVIOUS) is accepted too. The caller checks that the user exists. */
static int auth_token(server_t *s, struct MHD_Connection *c, char *sub, char *role,
                      enum MHD_Result *ret)
{
    const char *tok = bearer(c);
    if (!tok) {
        *ret = fail(c, 401, "unauthenticated", NULL,
                    "missing bearer token: send 'Authorization: Bearer <JWT>' (mint one with "
                    "'pingvas token NAME')");
        return -1;
    }
    char role_buf[JWT_ROLE_MAX], *claim = role ? role : role_buf;
    int64_t now_s = clock_now_ms() / 1000;
    size_t len = strlen(tok);
    /* the same token verified OK this same second: the same outcome (lib/jwtcache.h) */
    if (jwtcache_get(s->jwt_cache, tok, len, now_s, sub, USER_NAME_MAX + 1, claim))
        return 0;
    const char *prev = s->cfg.jwt_secret_previous;
    int rc = jwt_verify_hs256_role(tok, len, s->cfg.jwt_secret, strlen(s->cfg.jwt_secret), now_s,
                                   sub, USER_NAME_MAX + 1, claim);
    if (rc == JWT_BAD_SIG && prev && *prev)
        rc = jwt_verify_hs256_role(tok, len, prev, strlen(prev), now_s, sub, USER_NAME_MAX + 1,
                                   claim);
    if (rc == JWT_OK)
        jwtcache_put(s->jwt_cache, tok, len, now_s, sub, claim);
    if (rc != JWT_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "invalid token: %s", jwt_strerror(rc));
        *ret = fail(c, 401, "unauthenticated", NULL, msg);
        return -1;
    }
    return 0;
}

/* Answers 403 for a user disabled with `pingvas user disable`. */
static enum MHD_Result user_disabled(struct MHD_Connection *c, const char *name)
{
    api_error_t e;
    api_error_set(&e, 403, "user_disabled", NULL,
                  "user '%s' is disabled; an operator re-enables it with 'pingvas user enable %s'",
                  name, name);
    return send_error(c, &e);
}

/* The outcome rc of reading the token's user u: 0 for an active user, or sends 503 (store
 * error), 401 (no such user) or 403 (disabled) and returns -1. */
static int user_active(server_t *s, struct MHD_Connection *c, int rc, const user_t *u,
                       enum MHD_Result *ret)
{
    if (rc == STORE_ERR) {
        *ret = store_unavailable(s, c);
        return -1;
    }
    if (rc != STORE_OK) {
        *ret = fail(c, 401, "unauthenticated", NULL, "the token's user does not exist");
        return -1;
    }
    if (u->disabled_at) {
        *ret = user_disabled(c, u->name);
        return -1;
    }
    return 0;
}

/* Authenticates an active user; fills user and returns 0, or sends 401 (bad token, no such
 * user) or 403 (disabled) and returns -1. */
static int auth_user(server_t *s, struct MHD_Connection *c, user_t *u, enum MHD_Result *ret)
{
    char sub[USER_NAME_MAX + 1];
    if (auth_token(s, c, sub, NULL, ret) != 0)
        return -1;
    return user_active(s, c, store_user_get(s->store, sub, u), u, ret);
}

/* Operator endpoints: a valid token with "role":"admin" (minted by 'pingvas token NAME --role
 * admin'; the operator need not be a user in the store). Copies the subject into sub
 * (USER_NAME_MAX + 1 bytes) and returns 0, or sends 401 (no valid token) or 403 (another role)
 * and returns -1. */
static int auth_admin(server_t *s, struct MHD_Connection *c, char *sub, enum MHD_Result *ret)
{
    char role[JWT_ROLE_MAX];
    if (auth_token(s, c, sub, role, ret) != 0)
        return -1;
    if (strcmp(role, JWT_ROLE_ADMIN) != 0) {
        *ret = fail(c, 403, "forbidden", NULL,
                    "this endpoint is for operators: use a token minted with 'pingvas token "
                    "NAME --role admin'");
        return -1;
    }
    return 0;
}

/* Fleet-wide views (/metrics, scaling events): the worker token (Prometheus, the autoscaler) or
 * an operator's token; users see only their own jobs and the per-tier backlog (docs/security.md).
 */
static int auth_operator(server_t *s, struct MHD_Connection *c, enum MHD_Result *ret)
{
    const char *tok = bearer(c);
    char sub[USER_NAME_MAX + 1];
    if (tok && is_worker_token(s, tok))
        return 0;
    return auth_admin(s, c, sub, ret);
}

/* Accepts the worker token (KEDA's metrics-api, the autoscaler), an operator's token or a user's
 * JWT. */
static int auth_user_or_worker(server_t *s, struct MHD_Connection *c, enum MHD_Result *ret)
{
    const char *tok = bearer(c);
    char sub[USER_NAME_MAX + 1], role[JWT_ROLE_MAX];
    if (tok && is_worker_token(s, tok))
        return 0;
    if (auth_token(s, c, sub, role, ret) != 0)
        return -1;
    if (strcmp(role, JWT_ROLE_ADMIN) == 0)
        return 0;
    user_t u;
    return auth_user(s, c, &u, ret);
}

static int auth_worker(server_t *s, struct MHD_Connection *c, enum MHD_Result *ret)
{
    const char *tok = bearer(c);
    if (!tok || !is_worker_token(s, tok)) {
        *ret = fail(c, 401, "unauthenticated", NULL,
                    "worker protocol calls need 'Authorization: Bearer $PINGVAS_WORKER_TOKEN'");
        return -1;
    }
    return 0;
}

/* ---------- parked requests ---------- */

/* Appends the list list (its last ->next NULL) to the queue head..tail; under park_mu. */
static void queue_append(req_t **head, req_t **tail, req_t *list)
{
    if (*tail)
        (*tail)->next = list;
    else
        *head = list;
    while (list->next)
        list = list->next;
    *tail = list;
}

/* Suspends c and hands r to the create writer (PARK_CREATE), the claim dispatcher
 * (PARK_CLAIM) or the complete writer (PARK_COMPLETE). The connection is suspended before anyone
 * else can see r, so the resume can never come first. */
static void park(server_t *s, struct MHD_Connection *c, req_t *r, enum park_kind kind)
{
    r->park = kind;
    r->answered = 0;
    r->conn = c;
    r->next = NULL;
    atomic_fetch_add(&s->suspended, 1);
    MHD_suspend_connection(c);
    pthread_mutex_lock(&s->park_mu);
    if (kind == PARK_COMPLETE) {
        queue_append(&s->completes, &s->completes_tail, r);
        pthread_cond_signal(&s->complete_cv);
    } else if (kind == PARK_CREATE) {
        queue_append(&s->creates, &s->creates_tail, r);
        pthread_cond_signal(&s->create_cv);
    } else {
        req_t **pp = &s->claims;
        while (*pp)
            pp = &(*pp)->next;
        *pp = r;
    }
    pthread_mutex_unlock(&s->park_mu);
    if (kind == PARK_CLAIM)
        wake_dispatcher(s); /* the dispatcher takes it at once */
}

/* Resumes the connections of the list (their answers are in). r may be freed by a pool thread
 * as soon as it is resumed, so next is read first. */
static void resume_all(req_t *r)
{
    while (r) {
        req_t *next = r->next;
        r->answered = 1;
        MHD_resume_connection(r->conn);
        r = next;
    }
}

/* Waits for the queue head..tail to hold a request (cv signals it) and takes up to max of them,
 * their count in *n; NULL once *stop is set with nothing queued. */
static req_t *take_batch(server_t *s, req_t **head, req_t **tail, pthread_cond_t *cv, size_t max,
                         atomic_int *stop, size_t *n)
{
    pthread_mutex_lock(&s->park_mu);
    while (!*head && !atomic_load(stop))
        pthread_cond_wait(cv, &s->park_mu);
    req_t *batch = *head, *last = batch;
    *n = batch ? 1 : 0;
    while (last && last->next && *n < max) {
        last = last->next;
        (*n)++;
    }
    if (batch) {
        *head = last->next;
        last->next = NULL;
        if (!*head)
            *tail = NULL;
    }
    pthread_mutex_unlock(&s->park_mu);
    return batch;
}

#define CREATE_BATCH_MAX 256

/* Answers every create queued right now with the store error err, untried: they came while the
 * store was failing (a stalled database costs each batch a whole PINGVAS_PG_TIMEOUT, and one
 * writer must not make the queue behind it wait that long again and again). */
static void fail_queued(server_t *s, const char *err)
{
    pthread_mutex_lock(&s->park_mu);
    req_t *list = s->creates;
    s->creates = s->creates_tail = NULL;
    pthread_mutex_unlock(&s->park_mu);
    for (req_t *r = list; r; r = r->next) {
        r->create.rc = STORE_ERR;
        snprintf(r->create.err, sizeof r->create.err, "%s", err);
    }
    resume_all(list);
}

/* The create writer: takes every queued create (up to CREATE_BATCH_MAX), commits them in one
 * transaction, resumes their connections. Runs until threads_stop with nothing queued. */
static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-create"); /* top -H, perf */
    server_t *s = arg;
    store_create_t *items = calloc(CREATE_BATCH_MAX, sizeof *items);
    for (;;) {
        size_t n;
        req_t *batch = take_batch(s, &s->creates, &s->creates_tail, &s->create_cv,
                                  items ? CREATE_BATCH_MAX : 1, &s->threads_stop, &n);
        if (!batch)
            break;
        size_t i = 0;
        for (req_t *r = batch; r && items; r = r->next)
            items[i++] = r->create;
        if (items)
            store_job_create_many(s->store, items, n);
        i = 0;
        int created = 0;
        for (req_t *r = batch; r; r = r->next, i++) {
            if (items) {
                r->create = items[i];
                created += r->create.rc == STORE_OK;
            } else {
                r->create.rc = STORE_ERR;
                snprintf(r->create.err, sizeof r->create.err, "out of memory");
            }
        }
        if (created)
            server_notify_work(s);
        if (items && !created && batch->create.rc == STORE_ERR)
            fail_queued(s, batch->create.err);
        resume_all(batch);
    }
    free(items);
    return NULL;
}

/* One try of a parked claim: 1 when it has its answer (a job, the deadline, an error, or the
 * client gone), 0 to keep waiting. *tier_empty is set when the store had nothing for its tier. */
static int claim_try(server_t *s, req_t *r, int *tier_empty)
{
    int64_t mono = clock_mono_ms();
    /* A worker that gave up waiting (stopped, killed) must not be handed a job it will never
     * see: that job would sit leased until its lease expired, and lose an attempt. */
    if (hub_client_gone(r->conn)) {
        log_debug("event=claim_abandoned worker=%s", r->claim.worker_id);
        r->claim_rc = -1;
        return 1;
    }
    if (mono - r->seen_mono >= 5000) {
        store_worker_seen(s->store, r->claim.worker_id, r->claim.tier, "idle", clock_steady_ms());
        r->seen_mono = mono;
    }
    if (!*tier_empty) {
        r->claim_rc = store_job_claim(s->store, r->claim.tier, r->claim.worker_id, s->cfg.lease_ms,
                                      clock_steady_ms(), &r->job);
        if (r->claim_rc == STORE_ERR)
            snprintf(r->create.err, sizeof r->create.err, "%s", store_last_error(s->store));
        if (r->claim_rc != STORE_EMPTY)
            return 1;
        *tier_empty = 1;
    }
    r->claim_rc = STORE_EMPTY;
    return mono >= r->deadline_mono || atomic_load(&s->stopping);
}

/* One round of the dispatcher over the parked claims, oldest first; answers and resumes those
 * that are done, keeps the others in order. Returns the earliest deadline left (or -1). */
static int64_t dispatch_round(server_t *s)
{
    pthread_mutex_lock(&s->park_mu);
    req_t *list = s->claims;
    s->claims = NULL;
    pthread_mutex_unlock(&s->park_mu);
    req_t *keep = NULL, **keep_tail = &keep, *done = NULL, **done_tail = &done;
    int empty[TIER_COUNT] = {0}; /* a tier found empty is not asked again this round */
    int64_t next_deadline = -1;
    while (list) {
        req_t *r = list;
        list = r->next;
        r->next = NULL;
        int t = tier_index(r->claim.tier);
        if (claim_try(s, r, &empty[t > 0 ? t : 0])) {
            *done_tail = r;
            done_tail = &r->next;
        } else {
            *keep_tail = r;
            keep_tail = &r->next;
            if (next_deadline < 0 || r->deadline_mono < next_deadline)
                next_deadline = r->deadline_mono;
        }
    }
    pthread_mutex_lock(&s->park_mu);
    *keep_tail = s->claims; /* claims parked during this round go after the older ones */
    s->claims = keep;
    pthread_mutex_unlock(&s->park_mu);
    resume_all(done);
    return next_deadline;
}

/* The claim dispatcher: a round whenever work may have arrived (server_notify_work), at the
 * nearest deadline, and at least every 500 ms (work requeued by another replica's reaper). */
static void *dispatcher_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-claims"); /* top -H, perf */
    server_t *s = arg;
    uint64_t gen = 0;
    while (!atomic_load(&s->threads_stop)) {
        int64_t next = dispatch_round(s);
        int64_t wait = 500;
        if (next >= 0 && next - clock_mono_ms() < wait)
            wait = next - clock_mono_ms() > 0 ? next - clock_mono_ms() : 0;
        struct timespec ts = clock_deadline(wait);
        pthread_mutex_lock(&s->wake_mu);
        while (s->wake_gen == gen && !atomic_load(&s->threads_stop) && !atomic_load(&s->stopping)) {
            if (pthread_cond_timedwait(&s->wake_cv, &s->wake_mu, &ts) == ETIMEDOUT)
                break;
        }
        gen = s->wake_gen;
        pthread_mutex_unlock(&s->wake_mu);
        if (atomic_load(&s->stopping) && !atomic_load(&s->threads_stop))
            clock_sleep_ms(5); /* shutting down: answer whatever parks, without spinning */
    }
    dispatch_round(s); /* nothing may stay suspended */
    return NULL;
}

/* ---------- public API ---------- */

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0' || errno != 0 || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* The 402 of a create: the job's reservation against the user's balance as it is now. */
static enum MHD_Result no_credits(server_t *s, struct MHD_Connection *c, const char *name,
                                  int64_t reserve)
{
    user_t now; /* read into its own struct: store_user_get clears its output first */
    if (store_user_get(s->store, name, &now) != STORE_OK)
        memset(&now, 0, sizeof now);
    api_error_t e;
    api_error_set(&e, 402, "insufficient_credits", NULL,
                  "this job needs %lld credits but only %lld are available (balance %lld, "
                  "reserved %lld); add credits with 'pingvas user credits %s +N'",
                  (long long)reserve, (long long)(now.balance - now.reserved),
                  (long long)now.balance, (long long)now.reserved, name);
    return send_error(c, &e);
}

/* The per-user token bucket (--rate-limit, --rate-burst), taken by every create and every
 * cancel: a create-cancel loop costs two tokens a round (issue 16, finding 4). 1 with a 429 and
 * Retry-After sent when the user is over it, else 0. */
static int rate_limited(server_t *s, struct MHD_Connection *c, const char *user,
                        enum MHD_Result *ret)
{
    double retry_after = 0;
    if (!s->rl || ratelimit_take(s->rl, user, clock_mono_ms(), &retry_after))
        return 0;
    char ra[32];
    api_error_t e;
    api_error_set(&e, 429, "rate_limited", NULL,
                  "too many submissions and cancels for user '%s'; retry in %.1f s (--rate-limit)",
                  user, retry_after);
    snprintf(ra, sizeof ra, "%d", (int)ceil(retry_after));
    *ret = send_error_hdr(c, &e, "Retry-After", ra);
    return 1;
}

/* The webhook_url's host, resolved, must be public (lib/netguard.h) unless
 * --allow-private-webhooks: else 400, p cleared, 1 with *ret set. */
static int webhook_refused(server_t *s, struct MHD_Connection *c, job_params_t *p,
                           enum MHD_Result *ret)
{
    net_url_t u;
    char addr[64], why[300];
    if (netguard_parse_url(p->webhook_url, &u, why, sizeof why) == 0 &&
        netguard_check(&u, s->cfg.allow_private_webhooks, addr, sizeof addr, why, sizeof why) == 0)
        return 0;
    job_params_clear(p);
    api_error_t e;
    api_error_set(&e, 400, "invalid_argument", "webhook_url", "webhook_url %s", why);
    *ret = send_error(c, &e);
    return 1;
}

static enum MHD_Result api_create(server_t *s, struct MHD_Connection *c, req_t *r)
{
    enum MHD_Result ret;
    /* The token is checked here; the user's existence by the create itself (one store round
     * trip per submission). */
    user_t u;
    memset(&u, 0, sizeof u);
    if (auth_token(s, c, u.name, NULL, &ret) != 0)
        return ret;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (ct && strncmp(ct, "application/json", 16) != 0)
        return fail(c, 415, "unsupported_media_type", NULL,
                    "send the body as JSON with 'Content-Type: application/json'");
    if (r->too_big)
        return fail(c, 413, "payload_too_large", NULL, "the request body is over 64 KiB");
    if (rate_limited(s, c, u.name, &ret))
        return ret;
    job_params_t p = {0};
    api_error_t e;
    if (validate_create_body(r->body ? r->body : "", r->len, &s->vcfg, &p, &e) != 0)
        return send_error(c, &e);
    if (p.webhook_url && webhook_refused(s, c, &p, &ret))
        return ret;
    const char *idem = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    if (idem && (strlen(idem) == 0 || strlen(idem) > 255)) {
        job_params_clear(&p);
        return fail(c, 400, "invalid_argument", "Idempotency-Key",
                    "Idempotency-Key must be 1 to 255 characters");
    }
    r->params = p; /* the request owns the parameters from here (freed in on_completed) */
    snprintf(r->user, sizeof r->user, "%s", u.name);
    r->idem = idem ? strdup(idem) : NULL;
    if (idem && !r->idem)
        return fail(c, 503, "unavailable", NULL, "out of memory; retry");
    r->create = (store_create_t){.user = r->user,
                                 .p = &r->params,
                                 .idem_key = r->idem,
                                 .reserve = server_estimate_credits(&p, s->cfg.credit_rate),
                                 .max_queued = s->cfg.max_queued_per_user,
                                 .max_stored = s->cfg.max_jobs_per_user,
                                 .now = clock_steady_ms()};
    park(s, c, r, PARK_CREATE);
    return MHD_YES;
}

/* The answer to a create once the writer committed it (r->create.rc and .out). */
static enum MHD_Result create_answer(server_t *s, struct MHD_Connection *c, req_t *r)
{
    store_create_t *q = &r->create;
    job_t *j = &q->out;
    api_error_t e;
    switch (q->rc) {
    case STORE_OK:
        atomic_fetch_add(&metrics.jobs_created, 1);
        log_info("event=job_created job=%s user=%s tier=%s reserve=%lld", j->id, r->user, j->tier,
                 (long long)q->reserve);
        if (s->submit_fn)
            s->submit_fn(s->submit_arg, j->tier);
        return send_job_created(s, c, j, &r->params);
    case STORE_EXISTS:
        return send_job_webhook(s, c, 200, j);
    case STORE_NO_CREDITS:
        atomic_fetch_add(&metrics.jobs_rejected_credits, 1);
        return no_credits(s, c, r->user, q->reserve);
    case STORE_DISABLED:
        return user_disabled(c, r->user);
    case STORE_LIMIT:
        api_error_set(&e, 429, "too_many_queued", NULL,
                      "user '%s' already has %d queued jobs; wait for some to finish", r->user,
                      s->cfg.max_queued_per_user);
        return send_error(c, &e);
    case STORE_FULL:
        api_error_set(&e, 429, "too_many_jobs", NULL,
                      "user '%s' has %d stored jobs, the most allowed (--max-jobs-per-user); "
                      "ended jobs are deleted %lld days after they end (--retention)",
                      r->user, s->cfg.max_jobs_per_user,
                      (long long)(s->cfg.retention_ms / 86400000));
        return send_error(c, &e);
    case STORE_NOT_FOUND:
        return fail(c, 401, "unauthenticated", NULL, "the token's user does not exist");
    default:
        return unavailable(s, c, q->err);
    }
}

/* The ?wait= of GET /api/v1/generation/{id}: 0 without one, else ms (at most WAIT_MAX_MS);
 * -1 when malformed. */
/* The query argument name, or NULL when absent; a value holding a NUL byte (%00) is not taken
   for a shorter one: NULL with *bad set to name. */
static const char *query_arg(struct MHD_Connection *c, const char *name, const char **bad)
{
    const char *v = NULL;
    size_t len = 0;
    if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v, &len) !=
            MHD_YES ||
        !v)
        return NULL;
    if (strlen(v) != len) {
        *bad = name;
        return NULL;
    }
    return v;
}

static int64_t wait_param(struct MHD_Connection *c)
{
    const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
    int64_t ms = 0;
    if (!w)
        return 0;
    if (config_parse_duration(w, &ms) != 0 || ms < 0)
        return -1;
    return ms > WAIT_MAX_MS ? WAIT_MAX_MS : ms;
}

/* GET /api/v1/generation/{id}, with ?wait=DURATION answering when the job ends or the wait runs
 * out (the job as it is then, 200 either way). The wait holds no thread when the daemon can
 * suspend connections (hub.h): the handler runs again when an event comes or time is up. */
static enum MHD_Result api_get(server_t *s, struct MHD_Connection *c, req_t *r, const char *id)
{
    enum MHD_Result ret;
    char sub[USER_NAME_MAX + 1];
    if (auth_token(s, c, sub, NULL, &ret) != 0)
        return ret;
    /* the user's row (still read on every request) and the job in one read */
    store_user_job_t g;
    for (bool first = true;; first = false) {
        uint64_t gen = hub_gen(s->hub);
        int rc = store_user_job_get(s->store, sub, id, &g);
        if (user_active(s, c, rc, &g.user, &ret) != 0) {
            job_clear(&g.job);
            return ret;
        }
        if (first) {
            int64_t wait_ms = wait_param(c);
            if (wait_ms < 0) {
                job_clear(&g.job);
                return fail(c, 400, "invalid_argument", "wait",
                            "wait must be a duration such as 30s or 500ms (at most 60s)");
            }
            if (!r->wait_deadline)
                r->wait_deadline = hub_now_ms() + wait_ms;
        }
        if (g.job_rc != STORE_OK)
            return fail(c, 404, "not_found", NULL, "no such job for this user");
        if (job_status_is_final(g.job.status) || hub_now_ms() >= r->wait_deadline ||
            hub_stopping(s->hub))
            break;
        job_clear(&g.job);
        if (hub_wait(s->hub, c, gen, r->wait_deadline) == HUB_PARKED)
            return MHD_YES;
    }
    ret = send_job(s, c, 200, &g.job, g.has_webhook ? &g.webhook : NULL);
    job_clear(&g.job);
    return ret;
}

/* GET /api/v1/events: the caller's job events as Server-Sent Events; an operator token
 * ("role":"admin") sees every event, workers and scaling included. */
static enum MHD_Result api_events(server_t *s, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    char sub[USER_NAME_MAX + 1], role[JWT_ROLE_MAX];
    if (auth_token(s, c, sub, role, &ret) != 0)
        return ret;
    int admin = strcmp(role, JWT_ROLE_ADMIN) == 0;
    if (!admin) {
        user_t u;
        if (auth_user(s, c, &u, &ret) != 0)
            return ret;
    }
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (!h)
        h = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "last_event_id");
    int64_t last = -1;
    if (h && *h && parse_i64(h, 0, INT64_MAX, &last) != 0)
        return fail(c, 400, "invalid_argument", "Last-Event-ID",
                    "Last-Event-ID must be the id of an event this server sent");
    char key[USER_NAME_MAX + 8];
    snprintf(key, sizeof key, "%s%s", admin ? "admin:" : "", sub);
    if (hub_stream_acquire(s->hub, key, STREAMS_PER_USER) != 0) {
        api_error_t e;
        api_error_set(&e, 429, "too_many_streams", NULL,
                      "'%s' already has %d event streams open; close one first", sub,
                      STREAMS_PER_USER);
        return send_error(c, &e);
    }
    struct MHD_Response *resp =
        sse_response(s->hub, s->store, c, admin ? NULL : sub, key, last, s->cfg.sse_keepalive_ms);
    if (!resp)
        return MHD_NO;
    ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    atomic_fetch_add(&metrics.http_requests[2], 1);
    return ret;
}

/* Cancels user's job id (store_job_cancel) and tells whoever waits on its end. */
static int cancel_job(server_t *s, const char *user, const char *id, const char *by, job_t *j)
{
    int rc = store_job_cancel(s->store, user, id, clock_steady_ms(), j);
    if (rc == STORE_OK) {
        log_info("event=job_canceled job=%s user=%s by=%s", id, user, by);
        image_discard(s->blob, &s->image_secrets, id);
        job_ended(s, j);
    }
    return rc;
}

static enum MHD_Result api_cancel(server_t *s, struct MHD_Connection *c, const char *id)
{
    enum MHD_Result ret;
    user_t u;
    if (auth_user(s, c, &u, &ret) != 0 || rate_limited(s, c, u.name, &ret))
        return ret;
    job_t j = {0};
    int rc = cancel_job(s, u.name, id, "api", &j);
    if (rc == STORE_OK) {
        ret = send_json(c, 200, job_json(s, &j));
    } else if (rc == STORE_CONFLICT) {
        api_error_t e;
        api_error_set(&e, 409, "conflict", NULL, "job is already %s and cannot be canceled",
                      job_status_name(j.status));
        ret = send_error(c, &e);
    } else if (rc == STORE_NOT_FOUND) {
        ret = fail(c, 404, "not_found", NULL, "no such job for this user");
    } else {
        ret = store_unavailable(s, c);
    }
    job_clear(&j);
    return ret;
}

static enum MHD_Result api_list(server_t *s, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    user_t u;
    if (auth_user(s, c, &u, &ret) != 0)
        return ret;
    const char *st, *lim, *cur, *bad = NULL;
    if (!(st = query_arg(c, "status", &bad)) && bad)
        return fail(c, 400, "invalid_argument", bad, "status must not contain a NUL byte");
    if (!(lim = query_arg(c, "limit", &bad)) && bad)
        return fail(c, 400, "invalid_argument", bad, "limit must be an integer from 1 to 100");
    if (!(cur = query_arg(c, "cursor", &bad)) && bad)
        return fail(c, 400, "invalid_argument", bad,
                    "cursor must be the next_cursor value of a previous page");
    int status = -1;
    if (st && *st) {
        status = job_status_parse(st);
        if (status < 0)
            return fail(c, 400, "invalid_argument", "status",
                        "status must be one of queued, in_progress, completed, failed, canceled");
    }
    int64_t limit = LIST_LIMIT_DEFAULT;
    if (lim && parse_i64(lim, 1, LIST_LIMIT_MAX, &limit) != 0)
        return fail(c, 400, "invalid_argument", "limit", "limit must be an integer from 1 to 100");
    int64_t cursor = 0;
    if (cur && *cur && parse_i64(cur, 1, INT64_MAX, &cursor) != 0)
        return fail(c, 400, "invalid_argument", "cursor",
                    "cursor must be the next_cursor value of a previous page");
    job_t *jobs = NULL;
    size_t n = 0;
    int rc = store_job_list(s->store, u.name, status, (int)limit + 1, cursor, &jobs, &n);
    if (rc != STORE_OK)
        return store_unavailable(s, c);
    json_t *arr = json_array();
    size_t shown = n > (size_t)limit ? (size_t)limit : n;
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(arr, job_json(s, &jobs[i]));
    json_t *o = json_object();
    json_object_set_new(o, "jobs", arr);
    if (n > (size_t)limit) {
        char nc[32];
        snprintf(nc, sizeof nc, "%lld", (long long)jobs[shown - 1].seq);
        json_object_set_new(o, "next_cursor", json_string(nc));
    } else {
        json_object_set_new(o, "next_cursor", json_null());
    }
    for (size_t i = 0; i < n; i++)
        job_clear(&jobs[i]);
    free(jobs);
    return send_json(c, 200, o);
}

static enum MHD_Result api_credits(server_t *s, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    user_t u;
    if (auth_user(s, c, &u, &ret) != 0)
        return ret;
    ledger_entry_t *le = NULL;
    size_t n = 0;
    if (store_ledger(s->store, u.name, 20, &le, &n) != STORE_OK)
        return store_unavailable(s, c);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char ts[40];
        clock_format_rfc3339(le[i].created_at, ts, sizeof ts);
        json_t *e = json_pack("{s:s, s:I, s:I, s:s}", "kind", le[i].kind, "amount",
                              (json_int_t)le[i].amount, "balance_after",
                              (json_int_t)le[i].balance_after, "created_at", ts);
        json_object_set_new(e, "job_id", le[i].job_id[0] ? json_string(le[i].job_id) : json_null());
        json_array_append_new(arr, e);
    }
    free(le);
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:o}", "user", u.name, "tier", u.tier,
                          "balance", (json_int_t)u.balance, "reserved", (json_int_t)u.reserved,
                          "available", (json_int_t)(u.balance - u.reserved), "rate_per_gpu_second",
                          s->cfg.credit_rate, "ledger", arr);
    return send_json(c, 200, o);
}

static json_t *queue_json(server_t *s, int *err)
{
    json_t *t = json_object();
    *err = 0;
    for (int i = 0; i < TIER_COUNT; i++) {
        queue_stats_t q;
        if (store_queue_stats(s->store, tier_names[i], s->cfg.worker_ttl_ms, clock_steady_ms(),
                              &q) != STORE_OK) {
            *err = 1;
            break;
        }
        json_object_set_new(t, tier_names[i],
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "queued", (json_int_t)q.queued,
                                      "running", (json_int_t)q.running, "backlog",
                                      (json_int_t)(q.queued + q.running), "workers",
                                      (json_int_t)q.workers, "idle_workers",
                                      (json_int_t)q.idle_workers));
    }
    json_t *o = json_object();
    json_object_set_new(o, "tiers", t);
    return o;
}

static enum MHD_Result api_queue(server_t *s, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    if (auth_user_or_worker(s, c, &ret) != 0)
        return ret;
    int err;
    json_t *o = queue_json(s, &err);
    if (err) {
        json_decref(o);
        return store_unavailable(s, c);
    }
    return send_json(c, 200, o);
}

void server_record_scaling_event(server_t *s, int64_t at_ms, const char *tier, int from, int to,
                                 const char *reason)
{
    pthread_mutex_lock(&s->events_mu);
    struct scaling_event *e = &s->events[s->nevents % SERVER_EVENTS_MAX];
    e->at_ms = at_ms;
    snprintf(e->tier, sizeof e->tier, "%s", tier);
    e->from = from;
    e->to = to;
    snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
    s->nevents++;
    pthread_mutex_unlock(&s->events_mu);
    char ts[40];
    clock_format_rfc3339(at_ms, ts, sizeof ts);
    json_t *ev = json_pack("{s:s, s:s, s:i, s:i, s:s}", "at", ts, "tier", tier, "from", from, "to",
                           to, "reason", reason ? reason : "");
    char *data = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!data || store_event_add(s->store, "scaling", NULL, data) != STORE_OK)
        log_warn("event=scaling_event_not_logged err=\"%s\"",
                 data ? store_last_error(s->store) : "out of memory");
    free(data);
    hub_kick(s->hub);
    log_info("event=scaling tier=%s from=%d to=%d reason=\"%s\"", tier, from, to,
             reason ? reason : "");
}

/* The kept scaling decisions, oldest first, as a new JSON array. */
static json_t *scaling_events_json(server_t *s)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&s->events_mu);
    int64_t first = s->nevents > SERVER_EVENTS_MAX ? s->nevents - SERVER_EVENTS_MAX : 0;
    for (int64_t i = first; i < s->nevents; i++) {
        const struct scaling_event *e = &s->events[i % SERVER_EVENTS_MAX];
        char ts[40];
        clock_format_rfc3339(e->at_ms, ts, sizeof ts);
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:i, s:i, s:s}", "time", ts, "tier", e->tier,
                                        "from", e->from, "to", e->to, "reason", e->reason));
    }
    pthread_mutex_unlock(&s->events_mu);
    return arr;
}

static enum MHD_Result api_scaling_events(server_t *s, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    if (auth_operator(s, c, &ret) != 0)
        return ret;
    json_t *o = json_object();
    json_object_set_new(o, "events", scaling_events_json(s));
    return send_json(c, 200, o);
}

static enum MHD_Result api_metrics(server_t *s, struct MHD_Connection *c)
{
    queue_stats_t q[2] = {{0}};
    store_job_counts_t jc = {0};
    for (int i = 0; i < 2; i++)
        if (store_queue_stats(s->store, tier_names[i], s->cfg.worker_ttl_ms, clock_steady_ms(),
                              &q[i]) != STORE_OK)
            return store_unavailable(s, c); /* no made-up zeros for a store that did not answer */
    if (store_job_counts(s->store, &jc) != STORE_OK)
        return store_unavailable(s, c);
    size_t size = 16384, len = 0;
    char *buf = malloc(size);
    if (!buf)
        return MHD_NO;
    int n;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        n = snprintf(buf + len, size - len, __VA_ARGS__);                                          \
        if (n > 0)                                                                                 \
            len = len + (size_t)n < size ? len + (size_t)n : size - 1;                             \
    } while (0)
    APPEND("# HELP pingvas_jobs_queued Jobs waiting for a worker\n# TYPE pingvas_jobs_queued "
           "gauge\n");
    for (int i = 0; i < 2; i++)
        APPEND("pingvas_jobs_queued{tier=\"%s\"} %lld\n", tier_names[i], (long long)q[i].queued);
    APPEND("# HELP pingvas_jobs_running Jobs leased to a worker\n# TYPE pingvas_jobs_running "
           "gauge\n");
    for (int i = 0; i < 2; i++)
        APPEND("pingvas_jobs_running{tier=\"%s\"} %lld\n", tier_names[i], (long long)q[i].running);
    APPEND("# HELP pingvas_workers Workers seen recently\n# TYPE pingvas_workers gauge\n");
    for (int i = 0; i < 2; i++) {
        APPEND("pingvas_workers{tier=\"%s\",state=\"busy\"} %lld\n", tier_names[i],
               (long long)(q[i].workers - q[i].idle_workers));
        APPEND("pingvas_workers{tier=\"%s\",state=\"idle\"} %lld\n", tier_names[i],
               (long long)q[i].idle_workers);
    }
    APPEND("# HELP pingvas_jobs_total Jobs by final status\n# TYPE pingvas_jobs_total counter\n");
    APPEND("pingvas_jobs_total{status=\"completed\"} %lld\n", (long long)jc.completed);
    APPEND("pingvas_jobs_total{status=\"failed\"} %lld\n", (long long)jc.failed);
    APPEND("pingvas_jobs_total{status=\"canceled\"} %lld\n", (long long)jc.canceled);
    APPEND("# HELP pingvas_gpu_seconds_total GPU-seconds of completed jobs\n# TYPE "
           "pingvas_gpu_seconds_total counter\npingvas_gpu_seconds_total %.3f\n",
           jc.gpu_seconds);
    APPEND("# HELP pingvas_credits_charged_total Credits charged\n# TYPE "
           "pingvas_credits_charged_total counter\npingvas_credits_charged_total %lld\n",
           (long long)jc.credits_charged);
    APPEND("# HELP pingvas_jobs_created_total Jobs accepted since start\n# TYPE "
           "pingvas_jobs_created_total counter\npingvas_jobs_created_total %llu\n",
           (unsigned long long)atomic_load(&metrics.jobs_created));
    APPEND("# HELP pingvas_leases_expired_total Leases taken back by the reaper\n# TYPE "
           "pingvas_leases_expired_total counter\npingvas_leases_expired_total %llu\n",
           (unsigned long long)atomic_load(&metrics.leases_expired));
    APPEND("# HELP pingvas_jobs_released_total Jobs given back to the queue by their worker "
           "(a graceful stop) or for it (a worker that said bye with a lease it never read)\n"
           "# TYPE pingvas_jobs_released_total counter\npingvas_jobs_released_total %llu\n",
           (unsigned long long)atomic_load(&metrics.releases));
    APPEND("# HELP pingvas_slow_clients_closed_total Connections shut down for sending their "
           "request too slowly (--header-timeout, --request-timeout)\n# TYPE "
           "pingvas_slow_clients_closed_total counter\npingvas_slow_clients_closed_total %llu\n",
           (unsigned long long)connguard_closed_total(s->guard));
    APPEND("# HELP pingvas_http_responses_total HTTP responses by status class\n# TYPE "
           "pingvas_http_responses_total counter\n");
    for (int i = 1; i <= 5; i++)
        APPEND("pingvas_http_responses_total{class=\"%dxx\"} %llu\n", i,
               (unsigned long long)atomic_load(&metrics.http_requests[i]));
#undef APPEND
    len = histogram_render(&metrics.http_latency, buf, len, size);
    len = histogram_render(&metrics.queue_wait, buf, len, size);
    len = histogram_render(&metrics.run_time, buf, len, size);
    len = histogram_render(&metrics.cold_start, buf, len, size);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&metrics.http_requests[2], 1);
    return ret;
}

/* 1 when key is the stored image key of a completed job: only those are served, never another
 * file under the storage root (secrets, the database) nor a running job's image. */
static int image_servable(server_t *s, const char *key)
{
    char id[JOB_ID_SIZE];
    job_t j = {0};
    if (image_key_job(key, id, sizeof id) != 0 || store_job_get(s->store, id, &j) != STORE_OK)
        return 0;
    int ok = j.status == JOB_COMPLETED && j.image_key && strcmp(j.image_key, key) == 0;
    job_clear(&j);
    return ok;
}

/* GET /images/<key>: the image, read from the filesystem store into memory (its database). */
static enum MHD_Result serve_image(server_t *s, struct MHD_Connection *c, const char *key)
{
    void *png = NULL;
    size_t len = 0;
    if (!image_servable(s, key))
        return fail(c, 404, "not_found", NULL, "no such image");
    if (blob_read(s->blob, key, &png, &len) != 0)
        return errno == ENOENT || errno == ENOTSUP || errno == EINVAL
                   ? fail(c, 404, "not_found", NULL, "no such image")
                   : fail(c, 503, "unavailable", NULL, "could not read the image; retry");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, png, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(png);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "image/png");
    MHD_add_response_header(r, "Cache-Control", "public, max-age=31536000, immutable");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&metrics.http_requests[2], 1);
    return ret;
}

/* GET / and /dashboard/FILE: the dashboard (compiled in, dashboard.h). Its script talks to the
 * API with the token the person pastes; the page itself needs none. */
static enum MHD_Result serve_dashboard(struct MHD_Connection *c, const char *name)
{
    const dashboard_file_t *f = dashboard_find(name);
    if (!f)
        return fail(c, 404, "not_found", NULL, "no such dashboard file");
    struct MHD_Response *r =
        MHD_create_response_from_buffer(f->len, (void *)f->data, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", dashboard_content_type(f->name));
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data: https: http:; "
                            "style-src 'self'; script-src 'self'; frame-ancestors 'none'");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&metrics.http_requests[2], 1);
    return ret;
}

/* ---------- worker protocol ---------- */

/* Checks the size cap of a worker-protocol body; sends 413 and returns -1 when over it. */
static int internal_size_ok(struct MHD_Connection *c, req_t *r, enum MHD_Result *ret)
{
    if (r->too_big) {
        *ret = fail(c, 413, "payload_too_large", NULL, "worker request body too large");
        return -1;
    }
    return 0;
}

static enum MHD_Result lease_error(struct MHD_Connection *c, int rc, server_t *s)
{
    if (rc == STORE_CANCELED)
        return fail(c, 409, "canceled", NULL, "the job was canceled; stop working on it");
    if (rc == STORE_LEASE_LOST) {
        atomic_fetch_add(&metrics.late_completes_refused, 1);
        return fail(c, 409, "lease_lost", NULL,
                    "this lease is no longer valid (expired or taken over); stop working on it");
    }
    if (rc == STORE_NOT_FOUND)
        return fail(c, 404, "not_found", NULL, "no such job");
    return store_unavailable(s, c);
}

/* Where the worker of job id uploads its image: the job's image key (images.h), through the
 * workers' own listener when the server hosts the upload and has one. 0 or -1. */
static int upload_for(server_t *s, const char *id, upload_target_t *up)
{
    char key[IMAGE_KEY_MAX];
    if (image_key(s->cfg.jwt_secret, id, key, sizeof key) != 0 ||
        blob_upload_target(s->blob, key, id, s->cfg.lease_ms / 1000 + 3600, up) != 0)
        return -1;
    if (up->needs_lease && s->worker_url[0])
        return wire_job_url(up->url, sizeof up->url, s->worker_url, id, "image");
    return 0;
}

/* Writes the claim answer (wire.h) for r->job, leased to r->claim.worker_id, into w as member
 * key (NULL: the whole document): its lease and where to upload the image. 0, or -1 with nothing
 * written when the upload target could not be prepared (the job was given back untouched rather
 * than stranded). */
static int claim_answer_write(server_t *s, req_t *r, jsonw_t *w, const char *key)
{
    job_t *j = &r->job;
    upload_target_t up;
    if (upload_for(s, j->id, &up) != 0) {
        log_error("event=upload_target_failed job=%s", j->id);
        job_t tmp = {0};
        store_job_release(s->store, j->id, j->lease_id, clock_steady_ms(), &tmp);
        job_clear(&tmp);
        return -1; /* not a claim: the dispatcher's next round (500 ms at most) offers it again */
    }
    atomic_fetch_add(&metrics.claims, 1);
    if (j->attempts == 1 && j->releases == 0 && j->started_at >= j->created_at)
        histogram_observe(&metrics.queue_wait, (double)(j->started_at - j->created_at) / 1000.0);
    log_info("event=job_claimed job=%s worker=%s attempt=%d", j->id, r->claim.worker_id,
             j->attempts);
    hub_kick(s->hub);
    wire_claim_answer_write(w, key, j, s->cfg.lease_ms, s->cfg.heartbeat_ms, up.method, up.url,
                            up.needs_lease);
    return 0;
}

/* The answer to a claim that got r->job. */
static enum MHD_Result claim_answer(server_t *s, struct MHD_Connection *c, req_t *r)
{
    jsonw_t jw = {0};
    if (claim_answer_write(s, r, &jw, NULL) != 0)
        return fail(c, 503, "unavailable", NULL, "could not prepare the image upload");
    return send_jsonw(c, 200, &jw);
}

/* The answer to a worker's operation on job j: the job's JSON, without its image URL. */
static enum MHD_Result send_worker_job(struct MHD_Connection *c, const job_t *j)
{
    jsonw_t jw = {0};
    jsonw_open(&jw);
    job_json_members(&jw, j, NULL);
    jsonw_close(&jw);
    return send_jsonw(c, 200, &jw);
}

/* The answer to a complete-and-claim (r->done: the completed job in r->sc.done): the completed
 * job with "next", the claim answer of r->job when the claim got one (claim_rc STORE_OK), else
 * null. The completion is committed whatever the claim's outcome, so a claim that failed is
 * answered with no next job, never with an error. */
static enum MHD_Result done_answer(server_t *s, struct MHD_Connection *c, req_t *r)
{
    jsonw_t jw = {0};
    r->done = 0;
    jsonw_open(&jw);
    job_json_members(&jw, &r->sc.done, NULL);
    job_clear(&r->sc.done);
    if (r->claim_rc != STORE_OK || claim_answer_write(s, r, &jw, "next") != 0)
        jsonw_null(&jw, "next");
    jsonw_close(&jw);
    return send_jsonw(c, 200, &jw);
}

/* The answer to an image the store could not take (err: its errno): 507 storage_full when the
 * store is full (the worker releases the job: not a failed attempt), else 503. */
static enum MHD_Result image_refused(server_t *s, struct MHD_Connection *c, const char *id, int err)
{
    if (err != ENOSPC && err != EDQUOT)
        return fail(c, 503, "unavailable", NULL, "could not store the image; retry");
    log_error("event=image_store_full job=%s", id);
    pthread_mutex_lock(&s->fault_mu);
    s->blob_full_at = clock_mono_ms();
    pthread_mutex_unlock(&s->fault_mu);
    return fail(c, 507, "storage_full", NULL,
                "the image store is full: release the job (not a failed attempt) and claim "
                "again later");
}

/* Names the image of job id (its key, images.h) after checking that png is one. 0, or -1 with
 * the refusal sent (*ret): 422 not a PNG, 503. */
static int image_name(server_t *s, struct MHD_Connection *c, const char *id, const char *png,
                      size_t len, char *key, enum MHD_Result *ret)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(png, sig, 8) != 0) {
        *ret = fail(c, 422, "invalid_argument", NULL, "the upload is not a PNG");
        return -1;
    }
    if (image_key(s->cfg.jwt_secret, id, key, IMAGE_KEY_MAX) != 0) {
        *ret = fail(c, 503, "unavailable", NULL, "could not store the image; retry");
        return -1;
    }
    return 0;
}

/* Stores the uploaded PNG of job id at its image key into key (IMAGE_KEY_MAX bytes). 0, or -1
 * with the refusal sent (*ret). */
static int store_image(server_t *s, struct MHD_Connection *c, const char *id, const char *png,
                       size_t len, char *key, enum MHD_Result *ret)
{
    if (image_name(s, c, id, png, len, key, ret) != 0)
        return -1;
    if (blob_put(s->blob, key, png, len) == 0)
        return 0;
    *ret = image_refused(s, c, id, errno);
    return -1;
}

/* The image of r's complete: the PNG it carries (r->png: to be stored at r->key, r->put set,
 * under the lease it names; nothing is stored for a job that lease no longer holds, whose
 * complete the store then refuses), or the one uploaded before. r->key is "" for a replay. 0, or
 * -1 with the refusal sent. */
static int complete_image(server_t *s, struct MHD_Connection *c, req_t *r, enum MHD_Result *ret)
{
    job_t cur = {0};
    int rc = store_job_get(s->store, r->job_id, &cur);
    r->replay = rc == STORE_OK && cur.status == JOB_COMPLETED;
    int holder = rc == STORE_OK && cur.status == JOB_IN_PROGRESS &&
                 strcmp(cur.lease_id, r->report.lease_id) == 0;
    job_clear(&cur);
    r->key[0] = '\0';
    if (rc != STORE_OK) {
        *ret = lease_error(c, rc, s);
        return -1;
    }
    if (r->replay || (r->png && !holder))
        return 0;
    if (r->png) {
        r->put = 1;
        return image_name(s, c, r->job_id, r->png, r->png_len, r->key, ret);
    }
    if (image_uploaded(s->blob, &s->image_secrets, r->job_id, r->key) != 1) {
        *ret = fail(c, 409, "image_missing", NULL, "upload the image before completing the job");
        return -1;
    }
    return 0;
}

/* The answer to r's complete once it is committed (or refused): r->sc.rc, r->sc.done, and with
 * a "next" the claim's outcome (r->sc.next_rc, r->sc.next). */
static enum MHD_Result complete_finish(server_t *s, struct MHD_Connection *c, req_t *r)
{
    const wire_report_t *w = &r->report;
    const char *id = r->job_id;
    if (r->put && r->img.rc != 0)
        return image_refused(s, c, id, r->img.err);
    int rc = r->sc.rc;
    if (rc == STORE_ERR) /* the complete writer's message: store_last_error is per thread */
        return unavailable(s, c, r->sc.err);
    if (rc != STORE_OK) {
        if (rc == STORE_LEASE_LOST)
            log_warn("event=late_complete_refused job=%s", id);
        if (rc == STORE_CANCELED)
            image_discard(s->blob, &s->image_secrets, id);
        return lease_error(c, rc, s);
    }
    if (!r->replay) {
        histogram_observe(&metrics.run_time, w->gpu_seconds);
        log_info("event=job_completed job=%s gpu_seconds=%.3f charged=%lld", id, w->gpu_seconds,
                 (long long)r->sc.done.credits_charged);
    }
    job_ended(s, &r->sc.done);
    if (!w->has_next) {
        enum MHD_Result ret = send_worker_job(c, &r->sc.done);
        job_clear(&r->sc.done);
        return ret;
    }
    r->done = 1;
    r->claim = w->next;
    r->claim_rc = r->sc.next_rc == STORE_OK ? STORE_OK : STORE_EMPTY;
    job_clear(&r->job);
    r->job = r->sc.next; /* owned by r from here (on_completed) */
    memset(&r->sc.next, 0, sizeof r->sc.next);
    if (r->claim_rc == STORE_EMPTY && w->next.wait_ms > 0 && !atomic_load(&s->stopping)) {
        r->deadline_mono = clock_mono_ms() + w->next.wait_ms;
        r->seen_mono = 0; /* the first try records the worker idle */
        park(s, c, r, PARK_CLAIM);
        return MHD_YES;
    }
    return done_answer(s, c, r);
}

/* Stores a complete's image (when it came with the complete), then, if it is stored, commits the
 * complete (and its next claim) on its own: r->img.rc and r->sc hold the outcomes. */
static void complete_one(server_t *s, req_t *r)
{
    if (r->put)
        blob_put_many(s->blob, &r->img, 1);
    if (!r->put || r->img.rc == 0)
        store_job_complete_claim(s->store, &r->sc);
}

/* A worker's complete (r->report, r->png): its image must be in the store (or come with it);
 * the key it was stored at becomes the job's image in the transaction that completes and charges
 * the job, and so the image becomes reachable in that transaction (images.h; issue 16, finding
 * 1). With a "next" the same transaction claims the worker's next job (store.h
 * store_job_complete_claim): the answer is the completed job with "next"; a refused complete
 * claims nothing. Where the store commits completes in batches (both do) the complete is parked
 * for the complete writer (image_main, then commit_main), which stores the images of a whole
 * batch made durable together, then commits its batches in one transaction. */
static enum MHD_Result op_complete(server_t *s, struct MHD_Connection *c, req_t *r, const char *id)
{
    enum MHD_Result ret;
    const wire_report_t *w = &r->report;
    snprintf(r->job_id, sizeof r->job_id, "%s", id);
    if (complete_image(s, c, r, &ret) != 0)
        return ret;
    r->sc = (store_complete_t){.id = r->job_id,
                               .lease_id = w->lease_id,
                               .image_key = r->key,
                               .gpu_seconds = w->gpu_seconds,
                               .credit_rate = s->cfg.credit_rate,
                               .now = clock_steady_ms(),
                               .tier = w->has_next ? w->next.tier : NULL,
                               .worker_id = w->next.worker_id,
                               .lease_ms = s->cfg.lease_ms};
    r->img = (blob_item_t){.key = r->key, .data = r->png, .len = r->png_len};
    if (store_batches_completes(s->store)) {
        park(s, c, r, PARK_COMPLETE);
        return MHD_YES;
    }
    complete_one(s, r);
    return complete_finish(s, c, r);
}

#define COMPLETE_BATCH_MAX 64
#define COMMIT_BATCH_MAX (4 * COMPLETE_BATCH_MAX)

/* The complete writer. On PostgreSQL it is a pipeline of two threads, so that the images of
 * batch k+1 are stored while batch k commits (a commit there mostly waits on the database):
 * - the image stage (image_main) takes every queued complete (up to COMPLETE_BATCH_MAX), stores
 *   the images they carry, all made durable together (blob_put_many), and hands the batch on;
 * - the commit stage (commit_main) takes every batch handed on (up to COMMIT_BATCH_MAX
 *   completes), commits those whose image is stored in one store transaction
 *   (store_job_complete_many) and resumes every connection of them, refused ones included.
 * On SQLite, where a commit is this process's own CPU and one fsync, the image stage commits its
 * batch itself (complete_stages 1): with two stages each took batches of about one complete in
 * bench/run.sh's (b), and one thread takes larger ones for less CPU a job (bench/RESULTS.md).
 * No complete is committed before its image is durable, none whose image failed is committed
 * (complete_finish answers the image error), and none is answered before its commit. */

/* Stores the images batch carries (r->put), r->img.rc their outcomes; imgs holds
 * COMPLETE_BATCH_MAX, or is NULL (out of memory: one at a time). */
static void complete_images(server_t *s, req_t *batch, blob_item_t *imgs)
{
    size_t ni = 0;
    for (req_t *r = batch; r; r = r->next) {
        if (r->put && imgs)
            imgs[ni++] = r->img;
        else if (r->put)
            blob_put_many(s->blob, &r->img, 1);
    }
    if (!ni)
        return;
    blob_put_many(s->blob, imgs, ni);
    ni = 0;
    for (req_t *r = batch; r; r = r->next)
        if (r->put)
            r->img = imgs[ni++];
}

/* Commits the completes of batch whose image is stored (or came before), with their next
 * claims: r->sc holds each outcome. items holds COMMIT_BATCH_MAX, or is NULL (out of memory:
 * one at a time). */
static void complete_commit(server_t *s, req_t *batch, store_complete_t *items)
{
    size_t n = 0;
    for (req_t *r = batch; r; r = r->next) {
        if (r->put && r->img.rc != 0)
            continue;
        if (items)
            items[n++] = r->sc;
        else
            store_job_complete_claim(s->store, &r->sc);
    }
    if (!n)
        return;
    store_job_complete_many(s->store, items, n);
    n = 0;
    for (req_t *r = batch; r; r = r->next)
        if (!r->put || r->img.rc == 0)
            r->sc = items[n++];
}

/* The image stage of the complete writer, which with complete_stages 1 also commits. Runs until
 * threads_stop with nothing queued. */
static void *image_main(void *arg)
{
    server_t *s = arg;
    pthread_setname_np(pthread_self(), s->complete_stages == 1 ? "pv-complete" : "pv-images");
    blob_item_t *imgs = calloc(COMPLETE_BATCH_MAX, sizeof *imgs);
    store_complete_t *items =
        s->complete_stages == 1 ? calloc(COMPLETE_BATCH_MAX, sizeof *items) : NULL;
    for (;;) {
        size_t n;
        req_t *batch = take_batch(s, &s->completes, &s->completes_tail, &s->complete_cv,
                                  COMPLETE_BATCH_MAX, &s->threads_stop, &n);
        if (!batch)
            break;
        complete_images(s, batch, imgs);
        if (s->complete_stages == 1) {
            complete_commit(s, batch, items);
            resume_all(batch);
            continue;
        }
        pthread_mutex_lock(&s->park_mu);
        queue_append(&s->imaged, &s->imaged_tail, batch);
        pthread_cond_signal(&s->commit_cv);
        pthread_mutex_unlock(&s->park_mu);
    }
    free(imgs);
    free(items);
    return NULL;
}

/* The commit stage of the complete writer. Runs until imager_done (set once the image stage
 * has stopped) with nothing queued. */
static void *commit_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-complete"); /* top -H, perf */
    server_t *s = arg;
    store_complete_t *items = calloc(COMMIT_BATCH_MAX, sizeof *items);
    for (;;) {
        size_t n;
        req_t *batch = take_batch(s, &s->imaged, &s->imaged_tail, &s->commit_cv,
                                  items ? COMMIT_BATCH_MAX : 1, &s->imager_done, &n);
        if (!batch)
            break;
        complete_commit(s, batch, items);
        resume_all(batch);
    }
    free(items);
    return NULL;
}

/* The answer to a claim whose last try (claim_try) ended it. */
static enum MHD_Result claim_finish(server_t *s, struct MHD_Connection *c, req_t *r)
{
    switch (r->claim_rc) {
    case -1:
        return MHD_NO; /* the worker went away: close without handing out a job */
    case STORE_OK:
        return r->done ? done_answer(s, c, r) : claim_answer(s, c, r);
    case STORE_EMPTY:
        if (r->done)
            return done_answer(s, c, r);
        return send_text(c, 204, "application/json", "", 0);
    default:
        if (r->done) { /* the completion stands: answered without a next job */
            r->claim_rc = STORE_EMPTY;
            return done_answer(s, c, r);
        }
        return unavailable(s, c, r->create.err);
    }
}

/* A claim: tried at once on this thread; with no work and wait_ms > 0 it is parked for the
 * dispatcher (no thread waits for it). */
static enum MHD_Result internal_claim(server_t *s, struct MHD_Connection *c, req_t *r)
{
    enum MHD_Result ret;
    if (internal_size_ok(c, r, &ret) != 0)
        return ret;
    api_error_t e;
    if (wire_parse_claim(r->body, r->len, &r->claim, &e) != 0)
        return send_error(c, &e);
    r->deadline_mono = clock_mono_ms() + r->claim.wait_ms;
    r->conn = c;
    int tier_empty = 0;
    if (claim_try(s, r, &tier_empty))
        return claim_finish(s, c, r);
    park(s, c, r, PARK_CLAIM);
    return MHD_YES;
}

/* 1 when a request carries a PNG body (Content-Type: image/png): a complete that brings its
 * image, its JSON report in the WIRE_HEADER_REPORT header. */
static int carries_image(struct MHD_Connection *c)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    return ct && strncasecmp(ct, "image/png", 9) == 0;
}

static enum MHD_Result internal_job_op(server_t *s, struct MHD_Connection *c, req_t *r,
                                       const char *id, const char *op)
{
    enum MHD_Result ret;
    if (internal_size_ok(c, r, &ret) != 0)
        return ret;
    wire_report_t w;
    api_error_t e;
    const char *body = r->body, *png = NULL;
    size_t len = r->len;
    if (strcmp(op, "complete") == 0 && carries_image(c)) {
        body = MHD_lookup_connection_value(c, MHD_HEADER_KIND, WIRE_HEADER_REPORT);
        if (!body)
            return fail(c, 400, "invalid_argument", WIRE_HEADER_REPORT,
                        "a complete that carries the image needs the " WIRE_HEADER_REPORT
                        " header (the complete's JSON body)");
        len = strlen(body);
        png = r->body ? r->body : "";
    }
    if (wire_parse_report(op, body, len, &w, &e) != 0)
        return send_error(c, &e);
    if (strcmp(op, "complete") == 0) {
        r->report = w;
        r->png = png;
        r->png_len = png ? r->len : 0;
        return op_complete(s, c, r, id);
    }
    const char *lease = w.lease_id;
    int64_t now = clock_steady_ms();
    job_t j = {0};
    int rc;
    if (strcmp(op, "heartbeat") == 0) {
        int64_t t0 = clock_mono_ms();
        rc = store_job_heartbeat_progress(s->store, id, lease, s->cfg.lease_ms, now, w.step,
                                          w.steps);
        if (clock_mono_ms() - t0 > s->cfg.lease_ms / 4)
            store_fault(s); /* heartbeats this slow may not have renewed other leases in time */
        if (rc != STORE_OK)
            return lease_error(c, rc, s);
        if (w.steps > 0)
            hub_kick(s->hub); /* a progress event */
        return send_json(c, 200, json_pack("{s:I}", "lease_ms", (json_int_t)s->cfg.lease_ms));
    }
    if (strcmp(op, "fail") == 0) {
        const char *mbuf = w.error;
        rc = store_job_fail(s->store, id, lease, mbuf, w.retryable, s->cfg.max_attempts, now, &j);
        if (rc != STORE_OK)
            return lease_error(c, rc, s);
        log_warn("event=job_attempt_failed job=%s status=%s err=\"%s\"", id,
                 job_status_name(j.status), mbuf);
        if (j.status == JOB_FAILED)
            image_discard(s->blob, &s->image_secrets, id);
        job_ended(s, &j);
        if (j.status == JOB_QUEUED)
            server_notify_work(s);
    } else if (strcmp(op, "release") == 0) {
        rc = store_job_release(s->store, id, lease, now, &j);
        if (rc != STORE_OK)
            return lease_error(c, rc, s);
        atomic_fetch_add(&metrics.releases, 1);
        log_info("event=job_released job=%s", id);
        server_notify_work(s);
    } else {
        return fail(c, 404, "not_found", NULL, "unknown worker operation");
    }
    ret = send_worker_job(c, &j);
    job_clear(&j);
    return ret;
}

static enum MHD_Result internal_image(server_t *s, struct MHD_Connection *c, req_t *r,
                                      const char *id)
{
    const char *lease = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Pingvas-Lease");
    if (!lease)
        return fail(c, 400, "invalid_argument", "X-Pingvas-Lease",
                    "image upload needs the X-Pingvas-Lease header");
    if (r->too_big)
        return fail(c, 413, "payload_too_large", NULL, "image larger than 64 MiB");
    job_t j = {0};
    int rc = store_job_get(s->store, id, &j);
    if (rc == STORE_ERR)
        return store_unavailable(s, c);
    if (rc != STORE_OK) {
        job_clear(&j);
        return fail(c, 404, "not_found", NULL, "no such job");
    }
    int ok = j.status == JOB_IN_PROGRESS && strcmp(j.lease_id, lease) == 0;
    int canceled = j.status == JOB_CANCELED;
    int done_same = j.status == JOB_COMPLETED;
    job_clear(&j);
    if (done_same)
        return send_text(c, 200, "application/json", "{}", 2);
    if (!ok)
        return lease_error(c, canceled ? STORE_CANCELED : STORE_LEASE_LOST, s);
    char key[IMAGE_KEY_MAX];
    enum MHD_Result ret;
    if (store_image(s, c, id, r->body ? r->body : "", r->len, key, &ret) != 0)
        return ret;
    return send_text(c, 200, "application/json", "{}", 2);
}

/* A worker that says bye holds no job: it finished, failed or released each job it knew of.
 * A job still leased to it is one whose claim answer it never read: the server claimed the job
 * as a SIGTERM (a spot notice, a drain) made the worker give up that claim request. Such jobs go
 * back to the front of the queue as releases now, instead of waiting for their lease to expire
 * and losing an attempt. */
static void release_leases(server_t *s, const char *worker_id)
{
    store_lease_t *l = NULL;
    size_t n = 0;
    if (store_worker_leases(s->store, worker_id, &l, &n) != STORE_OK) {
        log_warn("event=bye_leases_unread worker=%s err=\"%s\"", worker_id,
                 store_last_error(s->store));
        return;
    }
    int released = 0;
    for (size_t i = 0; i < n; i++) {
        job_t j = {0};
        if (store_job_release(s->store, l[i].job_id, l[i].lease_id, clock_steady_ms(), &j) ==
            STORE_OK) {
            atomic_fetch_add(&metrics.releases, 1);
            log_info("event=job_released job=%s worker=%s reason=worker_bye", l[i].job_id,
                     worker_id);
            released++;
        }
        job_clear(&j);
    }
    free(l);
    if (released)
        server_notify_work(s);
}

static enum MHD_Result internal_bye(server_t *s, struct MHD_Connection *c, req_t *r)
{
    enum MHD_Result ret;
    if (internal_size_ok(c, r, &ret) != 0)
        return ret;
    wire_bye_t b;
    api_error_t e;
    if (wire_parse_bye(r->body, r->len, &b, &e) != 0)
        return send_error(c, &e);
    if (b.worker_id[0]) {
        release_leases(s, b.worker_id);
        store_worker_gone(s->store, b.worker_id);
    }
    return send_text(c, 200, "application/json", "{}", 2);
}

/* A worker's lifecycle report: where it runs, model loaded, busy time, end (DESIGN section 10). */
static enum MHD_Result internal_life(server_t *s, struct MHD_Connection *c, req_t *r)
{
    enum MHD_Result ret;
    if (internal_size_ok(c, r, &ret) != 0)
        return ret;
    wire_life_t l;
    api_error_t e;
    if (wire_parse_life(r->body, r->len, &l, &e) != 0)
        return send_error(c, &e);
    worker_life_t w = {.gpus = l.gpus, .busy_ms = l.busy_ms};
    snprintf(w.worker_id, sizeof w.worker_id, "%s", l.worker_id);
    snprintf(w.tier, sizeof w.tier, "%s", l.tier);
    snprintf(w.instance_type, sizeof w.instance_type, "%s", l.instance_type);
    snprintf(w.capacity_type, sizeof w.capacity_type, "%s", l.capacity_type);
    snprintf(w.zone, sizeof w.zone, "%s", l.zone);
    int ev = strcmp(l.event, "started") == 0  ? WORKER_STARTED
             : strcmp(l.event, "loaded") == 0 ? WORKER_LOADED
             : strcmp(l.event, "ended") == 0  ? WORKER_ENDED
                                              : WORKER_ALIVE;
    if (store_worker_report(s->store, &w, ev, clock_now_ms()) != STORE_OK)
        return store_unavailable(s, c);
    return send_text(c, 200, "application/json", "{}", 2);
}

/* GET /api/v1/cost?since=&until=&by= (operators): what the fleet cost (api/cost.h). */
/* One worker of GET /api/v1/fleet: where it runs, its state (the presence table's idle or busy;
 * "loading" before its model is loaded), since when, its cold start (start to model loaded) and
 * busy time, as of now. */
static json_t *fleet_worker_json(const worker_life_t *w, const char *state, int64_t now)
{
    char started[40];
    clock_format_rfc3339(w->started_at, started, sizeof started);
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:f, s:f}", "id", w->worker_id, "tier", w->tier, "instance_type",
        w->instance_type, "capacity_type", w->capacity_type, "started_at", started, "uptime_s",
        (double)(now - w->started_at) / 1000.0, "busy_s", (double)w->busy_ms / 1000.0);
    json_object_set_new(o, "cold_start_s",
                        w->loaded_at ? json_real((double)(w->loaded_at - w->started_at) / 1000.0)
                                     : json_null());
    json_object_set_new(o, "state", json_string(!w->loaded_at ? "loading" : state ? state : "up"));
    return o;
}

/* The live workers: lifetimes not ended and heard of lately, with the presence table's state. */
static int fleet_workers(server_t *s, int64_t now, json_t *arr)
{
    worker_life_t *lives = NULL;
    store_worker_t *seen = NULL;
    size_t nl = 0, ns = 0;
    if (store_worker_lives(s->store, now - 86400000, now + 1, &lives, &nl) != STORE_OK ||
        store_workers_list(s->store, &seen, &ns) != STORE_OK) {
        free(lives);
        return -1;
    }
    for (size_t i = 0; i < nl; i++) {
        if (lives[i].ended_at || lives[i].last_seen < now - STORE_LIFE_GRACE_MS)
            continue;
        const char *state = NULL;
        for (size_t k = 0; k < ns && !state; k++)
            if (strcmp(seen[k].id, lives[i].worker_id) == 0)
                state = seen[k].state;
        json_array_append_new(arr, fleet_worker_json(&lives[i], state, now));
    }
    free(lives);
    free(seen);
    return 0;
}

/* GET /api/v1/fleet (operators): the dashboard's fleet view in one answer: per-tier backlog and
 * workers, the live workers (their lifetimes, api/cost), the recent failures (api/hub.c) and the
 * scaling events. Changes after it arrive on GET /api/v1/events. */
static enum MHD_Result api_fleet(server_t *s, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    char sub[USER_NAME_MAX + 1];
    if (auth_admin(s, c, sub, &ret) != 0)
        return ret;
    int err;
    json_t *o = queue_json(s, &err);
    json_t *workers = json_array();
    if (err || fleet_workers(s, clock_now_ms(), workers) != 0) {
        json_decref(workers);
        json_decref(o);
        return store_unavailable(s, c);
    }
    json_object_set_new(o, "workers", workers);
    json_object_set_new(o, "failures", hub_failures(s->hub));
    json_object_set_new(o, "scaling_events", scaling_events_json(s));
    return send_json(c, 200, o);
}

static enum MHD_Result api_cost(server_t *s, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    char sub[USER_NAME_MAX + 1];
    if (auth_admin(s, c, sub, &ret) != 0)
        return ret;
    const char *since = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    const char *until = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "until");
    const char *by = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "by");
    int64_t now = clock_now_ms(), from, to = now;
    cost_by_t b;
    if (until && cost_parse_time(until, &to) != 0)
        return fail(c, 400, "invalid_argument", "until",
                    "until must be RFC 3339 UTC (2026-11-29T10:00:00Z), a date or Unix seconds");
    from = to - 86400000;
    if (since && cost_parse_time(since, &from) != 0)
        return fail(c, 400, "invalid_argument", "since",
                    "since must be RFC 3339 UTC (2026-11-29T10:00:00Z), a date or Unix seconds");
    if (from >= to)
        return fail(c, 400, "invalid_argument", "since", "since must be before until");
    if (cost_parse_by(by, &b) != 0)
        return fail(c, 400, "invalid_argument", "by",
                    "by must be user, tier, day or instance_type");
    json_t *o;
    if (cost_from_store(s->store, &s->prices, from, to, now, b, &o) != STORE_OK)
        return store_unavailable(s, c);
    return send_json(c, 200, o);
}

static enum MHD_Result internal_scaling_event(server_t *s, struct MHD_Connection *c, req_t *r)
{
    enum MHD_Result ret;
    wire_scaling_t ev;
    api_error_t e;
    if (internal_size_ok(c, r, &ret) != 0)
        return ret;
    if (wire_parse_scaling(r->body, r->len, &ev, &e) != 0)
        return send_error(c, &e);
    server_record_scaling_event(s, clock_steady_ms(), ev.tier, ev.from, ev.to, ev.reason);
    return send_text(c, 200, "application/json", "{}", 2);
}

/* /readyz: 200 {"status":"ready"}, or 503 with the reasons: the store does not answer, a store
 * operation failed in the last READY_FAULT_MS (the message says why: disk full, timeout), or the
 * image store was full then. It turns ready again by itself once the fault stops. */
static enum MHD_Result readyz(server_t *s, struct MHD_Connection *c)
{
    json_t *reasons = json_array();
    if (store_ping(s->store) != STORE_OK)
        json_array_append_new(reasons, json_pack("{s:s, s:s}", "component", "store", "error",
                                                 store_last_error(s->store)));
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&s->fault_mu);
    if (json_array_size(reasons) == 0 && s->store_err_at && now - s->store_err_at < READY_FAULT_MS)
        json_array_append_new(reasons, json_pack("{s:s, s:s, s:I}", "component", "store", "error",
                                                 s->store_err, "ms_ago",
                                                 (json_int_t)(now - s->store_err_at)));
    if (s->blob_full_at && now - s->blob_full_at < READY_FAULT_MS)
        json_array_append_new(reasons, json_pack("{s:s, s:s, s:I}", "component", "image_store",
                                                 "error", "the image store is full", "ms_ago",
                                                 (json_int_t)(now - s->blob_full_at)));
    pthread_mutex_unlock(&s->fault_mu);
    if (json_array_size(reasons) == 0) {
        json_decref(reasons);
        return send_text(c, 200, "application/json", "{\"status\":\"ready\"}", 18);
    }
    json_t *first = json_array_get(reasons, 0);
    char msg[400];
    snprintf(msg, sizeof msg, "%s: %s", json_string_value(json_object_get(first, "component")),
             json_string_value(json_object_get(first, "error")));
    return send_json(c, 503,
                     json_pack("{s:s, s:o, s:{s:s, s:s}}", "status", "unready", "reasons", reasons,
                               "error", "code", "unavailable", "message", msg));
}

/* ---------- routing ---------- */

static enum MHD_Result route(server_t *s, struct MHD_Connection *c, const char *url,
                             const char *method, req_t *r)
{
    route_t rt;
    enum MHD_Result ret;
    user_t u;
    route_parse(method, url, &rt);
    if (route_is_worker(rt.id) && auth_worker(s, c, &ret) != 0)
        return ret;
    switch (rt.id) {
    case ROUTE_HEALTHZ:
        return send_text(c, 200, "application/json", "{\"status\":\"ok\"}", 15);
    case ROUTE_READYZ:
        return readyz(s, c);
    case ROUTE_METRICS:
        if (!s->cfg.metrics_public && auth_operator(s, c, &ret) != 0)
            return ret;
        return api_metrics(s, c);
    case ROUTE_IMAGE:
        return serve_image(s, c, rt.arg);
    case ROUTE_CREATE_METHOD:
        return fail(c, 405, "method_not_allowed", NULL, "use POST");
    case ROUTE_CREATE:
        return api_create(s, c, r);
    case ROUTE_LIST:
        return api_list(s, c);
    case ROUTE_CREDITS:
        return api_credits(s, c);
    case ROUTE_QUEUE:
        return api_queue(s, c);
    case ROUTE_SCALING_EVENTS:
        return api_scaling_events(s, c);
    case ROUTE_COST:
        return api_cost(s, c);
    case ROUTE_JOB_GET:
        return api_get(s, c, r, rt.job_id);
    case ROUTE_EVENTS:
        return api_events(s, c);
    case ROUTE_FLEET:
        return api_fleet(s, c);
    case ROUTE_DASHBOARD:
        return serve_dashboard(c, rt.arg);
    case ROUTE_JOB_CANCEL:
        return api_cancel(s, c, rt.job_id);
    case ROUTE_API_NOT_FOUND:
        if (auth_user(s, c, &u, &ret) != 0)
            return ret;
        return fail(c, 404, "not_found", NULL, "no such API endpoint");
    case ROUTE_WORKER_CLAIM:
        return internal_claim(s, c, r);
    case ROUTE_WORKER_BYE:
        return internal_bye(s, c, r);
    case ROUTE_WORKER_SCALING_EVENT:
        return internal_scaling_event(s, c, r);
    case ROUTE_WORKER_LIFE:
        return internal_life(s, c, r);
    case ROUTE_WORKER_IMAGE:
        return internal_image(s, c, r, rt.job_id);
    case ROUTE_WORKER_OP:
        return internal_job_op(s, c, r, rt.job_id, rt.arg);
    case ROUTE_WORKER_NOT_FOUND:
        return fail(c, 404, "not_found", NULL, "no such worker protocol endpoint");
    case ROUTE_NOT_FOUND:
        break;
    }
    return fail(c, 404, "not_found", NULL, "no such endpoint");
}

/* Answers on the headers alone, before a byte of the body is read (issue 16, finding 2): 503
 * while starting; 401 to a worker route without the worker token, or to a user API call that can
 * carry a body without a valid JWT; 413 when Content-Length is over the route's cap. Queued this
 * early, the response goes out at once (no "100 Continue"), and libmicrohttpd closes the
 * connection instead of reading the body. 1 with *ret set when it answered, else 0. */
static int answer_on_headers(server_t *s, struct MHD_Connection *c, const char *url,
                             const char *method, size_t limit, enum MHD_Result *ret)
{
    route_t rt;
    char sub[USER_NAME_MAX + 1];
    if (!atomic_load(&s->ready)) {
        *ret = fail(c, 503, "unavailable", NULL, "the server is starting; retry shortly");
        return 1;
    }
    route_parse(method, url, &rt);
    int bodyless = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (route_is_worker(rt.id) && auth_worker(s, c, ret) != 0)
        return 1;
    if (!route_is_worker(rt.id) && rt.id != ROUTE_NOT_FOUND && !bodyless &&
        strncmp(url, "/api/", 5) == 0 && auth_token(s, c, sub, NULL, ret) != 0)
        return 1;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    int64_t clen;
    if (cl && parse_i64(cl, 0, INT64_MAX, &clen) == 0 && (uint64_t)clen > limit) {
        char msg[96];
        snprintf(msg, sizeof msg, "the request body is over this endpoint's limit of %zu bytes",
                 limit);
        *ret = fail(c, 413, "payload_too_large", NULL, msg);
        return 1;
    }
    return 0;
}

/* The cap on a request's body: an image (an upload, or a complete that carries it) IMAGE_MAX,
 * another worker-protocol body INTERNAL_BODY_MAX, the rest CREATE_BODY_MAX. */
static size_t body_limit(struct MHD_Connection *c, const char *url, const char *method)
{
    if (strncmp(url, "/internal/", 10) != 0)
        return CREATE_BODY_MAX;
    size_t n = strlen(url);
    int jobs = strncmp(url, "/internal/v1/jobs/", 18) == 0;
    if (jobs && (strcmp(method, "PUT") == 0 ||
                 (n > 9 && strcmp(url + n - 9, "/complete") == 0 && carries_image(c))))
        return IMAGE_MAX;
    return INTERNAL_BODY_MAX;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    server_t *s = cls;
    req_t *r = *con_cls;
    if (!r) {
        size_t limit = body_limit(c, url, method);
        enum MHD_Result ret;
        if (answer_on_headers(s, c, url, method, limit, &ret)) {
            connguard_request_done(c);
            return ret;
        }
        connguard_headers_done(c);
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->start_us = now_us();
        r->limit = limit;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_big || r->len + n > r->limit) {
            r->too_big = 1; /* keep reading and dropping, answer 413 at the end */
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t ncap = r->cap ? r->cap : 4096;
            while (ncap < r->len + n + 1)
                ncap *= 2;
            char *nb = realloc(r->body, ncap);
            if (!nb)
                return MHD_NO;
            r->body = nb;
            r->cap = ncap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    connguard_request_done(c);
    if (r->park != PARK_NONE) {
        if (!r->answered)
            return MHD_YES; /* still parked */
        enum park_kind k = r->park;
        r->park = PARK_NONE;
        atomic_fetch_sub(&s->suspended, 1);
        if (k == PARK_COMPLETE)
            return complete_finish(s, c, r);
        return k == PARK_CREATE ? create_answer(s, c, r) : claim_finish(s, c, r);
    }
    if (!atomic_load(&s->ready))
        return fail(c, 503, "unavailable", NULL, "the server is starting; retry shortly");
    if (r->too_big && strncmp(url, "/api/v1/generation/create", 25) != 0 &&
        strncmp(url, "/internal/", 10) != 0)
        return fail(c, 413, "payload_too_large", NULL, "request body too large");
    return route(s, c, url, method, r);
}

/* The --worker-port listener: the worker protocol and health checks only, so that users, however
 * many or slow, never take the connections workers need (issue 16, finding 3). */
static enum MHD_Result on_worker_request(void *cls, struct MHD_Connection *c, const char *url,
                                         const char *method, const char *version,
                                         const char *upload_data, size_t *upload_data_size,
                                         void **con_cls)
{
    if (!*con_cls && strncmp(url, "/internal/", 10) != 0 && strcmp(url, "/healthz") != 0 &&
        strcmp(url, "/readyz") != 0) {
        connguard_request_done(c);
        return fail(c, 404, "not_found", NULL,
                    "this port (--worker-port) serves only the worker protocol");
    }
    return on_request(cls, c, url, method, version, upload_data, upload_data_size, con_cls);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    connguard_response_done(c);
    req_t *r = *con_cls;
    if (!r)
        return;
    histogram_observe(&metrics.http_latency, (double)(now_us() - r->start_us) / 1e6);
    free(r->body);
    free(r->idem);
    job_params_clear(&r->params);
    job_clear(&r->create.out);
    job_clear(&r->job);
    job_clear(&r->sc.done);
    job_clear(&r->sc.next);
    free(r);
    *con_cls = NULL;
}

/* The reaper takes back leases that expired while the store was serving: a worker whose
 * heartbeats could not reach the store (store down, stalled, or slow; the server itself down or
 * starting) is not blamed for it. After such a fault it waits until the store has served for one
 * full lease, in which every live worker heartbeats (a heartbeat renews an expired lease the
 * reaper has not taken back), and then takes back only leases that expired before that round
 * started. A round that fails or is slow counts as a fault itself. */
#define PURGE_BATCH 100

/* Retention (--retention): deletes jobs that ended longer ago than that, with their images, a
 * few batches a tick so that a backlog never holds the store for long. */
static void purge_ended(server_t *s)
{
    char ids[PURGE_BATCH][JOB_ID_SIZE];
    if (s->cfg.retention_ms <= 0)
        return;
    for (int batch = 0; batch < 4; batch++) {
        int n = 0;
        if (store_jobs_purge(s->store, clock_steady_ms() - s->cfg.retention_ms, PURGE_BATCH, ids,
                             &n) != STORE_OK) {
            log_warn("event=purge_failed err=\"%s\"", store_last_error(s->store));
            return;
        }
        for (int i = 0; i < n; i++)
            image_discard(s->blob, &s->image_secrets, ids[i]);
        if (n > 0)
            log_info("event=jobs_purged count=%d retention_s=%lld", n,
                     (long long)(s->cfg.retention_ms / 1000));
        if (n < PURGE_BATCH)
            return;
    }
}

static void *reaper_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-reaper"); /* top -H, perf */
    server_t *s = arg;
    const char *deferred = NULL; /* the reason logged for the deferral under way */
    while (!atomic_load(&s->stopping)) {
        int requeued = 0, failed = 0;
        int64_t t0 = clock_mono_ms();
        if (t0 - atomic_load(&s->store_fault_ms) < s->cfg.lease_ms) {
            const char *why = atomic_load(&s->store_fault_why);
            if (!deferred || strcmp(deferred, why) != 0)
                log_info("event=reap_deferred reason=%s wait_ms=%lld", why,
                         (long long)s->cfg.lease_ms);
            deferred = why;
        } else {
            deferred = NULL;
            int rc = store_reap(s->store, s->cfg.max_attempts, s->cfg.worker_ttl_ms,
                                clock_steady_ms(), &requeued, &failed);
            if (rc != STORE_OK || clock_mono_ms() - t0 > s->cfg.lease_ms / 4)
                store_fault(s);
            if (rc != STORE_OK) {
                log_warn("event=reap_failed err=\"%s\"", store_last_error(s->store));
            } else if (requeued || failed) {
                atomic_fetch_add(&metrics.leases_expired, (uint64_t)(requeued + failed));
                log_warn("event=leases_expired requeued=%d failed=%d", requeued, failed);
                server_notify_work(s);
            }
            purge_ended(s);
        }
        for (int64_t slept = 0; slept < s->cfg.reaper_ms && !atomic_load(&s->stopping); slept += 50)
            clock_sleep_ms(s->cfg.reaper_ms - slept < 50 ? s->cfg.reaper_ms - slept : 50);
    }
    return NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    log_debug("event=http_daemon msg=\"%s\"", buf);
}

/* The --bind address (IPv4 or IPv6, default 127.0.0.1) as a socket address; 0 or -1. */
static int bind_addr(const char *bind, int port, struct sockaddr_storage *ss, int *v6)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    *v6 = 0;
    if (inet_pton(AF_INET, bind, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, bind, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *v6 = 1;
        return 0;
    }
    return -1;
}

/* The pool of epoll threads. Creates and waiting claims are parked, but a request that reads or
 * writes the store in place (a get, a heartbeat) holds its thread for as long as the store
 * takes, and the connections its thread accepted wait behind it.
 * - A remote store or image store (PostgreSQL, S3): 64, or 16 x online CPUs with 5 to 63. With a
 *   stalled one (PINGVAS_PG_TIMEOUT) a thread holding several clients would answer the last of
 *   them only after several timeouts; many threads keep that rare, and cost their stacks (256 KiB
 *   reserved each, little of it touched) and nothing while idle.
 * - The embedded stack (SQLite and the filesystem image store): nothing a request waits on is
 *   remote, so 2 x online CPUs, at least 4. Every request of 64 connections then no longer wakes
 *   a thread of its own: on 2 cores, 4 threads against 64 answered GET job at 94,000 to 101,000/s
 *   against 77,000 to 84,000/s, and creates at 33,000 to 36,000/s against 26,000 to 30,000/s
 *   (bench/ab.sh, interleaved; bench/RESULTS.md, seventh session). */
static unsigned front_threads(const server_t *s)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (strcmp(store_kind(s->store), "sqlite") == 0 && !blob_url_is_s3(s->cfg.storage_url))
        return n < 32 ? (unsigned)(n < 2 ? 4 : n * 2) : 64;
    return n > 4 && n < 64 ? (unsigned)n * 16 : 64;
}

/* Each connection's memory in libmicrohttpd: its read buffer (half of it at the start of each
 * request; a request's whole header block must fit, with libmicrohttpd's own header records) and
 * the answer's status line and headers. libmicrohttpd's default is 32 KiB, and it zeroes the
 * whole block at the end of every request of a keep-alive connection: about 5 % of the server's
 * CPU in a GET or create run (bench/RESULTS.md, ninth session). 16 KiB still takes a 12 KiB
 * header block (test_badinput's test_header_block_limit); a larger one is a 431. A long answer of
 * unknown length (an event stream) goes out in smaller chunks. */
#define CONNECTION_MEMORY (16 * 1024)

/* Starts one libmicrohttpd daemon on bind:port answering with handler: the connection limit,
 * the per-IP limit (0: none), the idle timeout, and the guard's deadlines. A port another process
 * holds, a second pingvas included, is an error: no SO_REUSEPORT. Sets *bound to the port bound
 * and *v6; NULL with a message in err. */
static struct MHD_Daemon *start_daemon(server_t *s, const char *bind, int port,
                                       MHD_AccessHandlerCallback handler, unsigned per_ip,
                                       int *bound, int *v6, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (bind_addr(bind, port, &ss, v6) != 0) {
        snprintf(err, errlen, "--bind: '%s' is not an IPv4 or IPv6 address", bind);
        return NULL;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     (*v6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handler, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        connguard_notify, s->guard, MHD_OPTION_THREAD_POOL_SIZE, front_threads(s),
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(s->cfg.max_connections > 0 ? s->cfg.max_connections : 4096),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024), MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONNECTION_MEMORY, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!d) {
        snprintf(err, errlen, "cannot listen on %s%s%s:%d: %s (is another server using the port?)",
                 *v6 ? "[" : "", bind, *v6 ? "]" : "", port, strerror(errno));
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound = info ? info->port : port;
    return d;
}

/* http://HOST:PORT for bind (an IPv6 host in brackets; 0.0.0.0 and :: as loopback). */
static void local_url(char *buf, size_t size, const char *bind, int v6, int port)
{
    if (v6)
        snprintf(buf, size, "http://[%s]:%d", strcmp(bind, "::") != 0 ? bind : "::1", port);
    else
        snprintf(buf, size, "http://%s:%d", strcmp(bind, "0.0.0.0") != 0 ? bind : "127.0.0.1",
                 port);
}

/* Starts the public listener on --bind:--port (s->port, s->url: --public-url, else
 * http://HOST:PORT) and, with --worker-port, the workers' own (s->worker_url), both under the
 * connection guard. 0 or -1 with a message in err. */
static int server_listen(server_t *s, const server_config_t *cfg, char *err, size_t errlen)
{
    const char *bind = cfg->bind && *cfg->bind ? cfg->bind : "127.0.0.1";
    int v6;
    s->guard = connguard_start(cfg->header_timeout_ms > 0 ? cfg->header_timeout_ms : 10000,
                               cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 120000);
    if (!s->guard) {
        snprintf(err, errlen, "cannot start the connection guard thread");
        return -1;
    }
    s->mhd =
        start_daemon(s, bind, cfg->port, on_request,
                     (unsigned)(cfg->max_connections_per_ip > 0 ? cfg->max_connections_per_ip : 0),
                     &s->port, &v6, err, errlen);
    if (!s->mhd)
        return -1;
    if (cfg->public_url && *cfg->public_url)
        snprintf(s->url, sizeof s->url, "%s", cfg->public_url);
    else
        local_url(s->url, sizeof s->url, bind, v6, s->port);
    size_t ul = strlen(s->url);
    while (ul > 0 && s->url[ul - 1] == '/')
        s->url[--ul] = '\0';
    if (cfg->worker_port < 0)
        return 0;
    int wport;
    s->wmhd =
        start_daemon(s, bind, cfg->worker_port, on_worker_request, 0, &wport, &v6, err, errlen);
    if (!s->wmhd)
        return -1;
    local_url(s->worker_url, sizeof s->worker_url, bind, v6, wport);
    return 0;
}

/* The allowed models from --models (comma-separated; "sd15" when none). 0, or -1 out of memory. */
static int server_models(server_t *s, const server_config_t *cfg)
{
    s->models_buf = strdup(cfg->models && *cfg->models ? cfg->models : "sd15");
    if (!s->models_buf)
        return -1;
    int nm = 0;
    for (char *tok = s->models_buf; tok && nm < MAX_MODELS;) {
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = '\0';
        if (*tok)
            s->models[nm++] = tok;
        tok = comma ? comma + 1 : NULL;
    }
    if (nm == 0)
        s->models[nm++] = "sd15";
    s->models[nm] = NULL;
    s->vcfg.models = s->models;
    s->vcfg.default_model = s->models[0];

    return 0;
}

/* The store, migrated, with the events hub over it and its cross-process wakeups. 0 or -1. */
static int server_open_store(server_t *s, const server_config_t *cfg, char *err, size_t errlen)
{
    s->store = store_open(cfg->database_url, err, errlen);
    if (!s->store)
        return -1;
    if (store_migrate(s->store) != STORE_OK) {
        char redacted[1024];
        snprintf(err, errlen, "migrating %s: %s",
                 log_redact_url(cfg->database_url, redacted, sizeof redacted),
                 store_last_error(s->store));
        return -1;
    }
    s->hub = hub_start(s->store, err, errlen);
    if (!s->hub)
        return -1;
    /* STORE_NOT_FOUND: no cross-process channel (SQLite); the server's own wakeups suffice */
    store_listen(s->store, store_work_cb, s);

    return 0;
}

/* The image store, the webhooks, the reaper and the Celery bridge. 0 or -1 with err. */
static int server_start_services(server_t *s, const server_config_t *cfg, char *err, size_t errlen)
{
    s->blob = blob_open(cfg->storage_url, cfg->public_image_base_url, s->url, err, errlen);
    if (!s->blob)
        return -1;
    webhook_config_t wc = {.secret = cfg->webhook_secret,
                           .allow_private = cfg->allow_private_webhooks,
                           .retry_min_ms =
                               cfg->webhook_retry_ms > 0 ? cfg->webhook_retry_ms : 5000};
    if (cfg->webhook_secret && *cfg->webhook_secret) {
        s->webhooks = webhook_start(s->store, &wc, webhook_job, s, err, errlen);
        if (!s->webhooks)
            return -1;
    }

    store_fault_for(s, "server_start"); /* workers could not heartbeat while it was not up */
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        snprintf(err, errlen, "cannot start the reaper thread");
        return -1;
    }
    s->reaper_started = 1;
    if (cfg->redis_url && *cfg->redis_url) {
        celery_config_t cc = {.redis_url = cfg->redis_url,
                              .queue = cfg->celery_queue,
                              .visibility_timeout_ms = cfg->celery_visibility_ms,
                              .credit_rate = cfg->credit_rate};
        s->celery = celery_bridge_start(&cc, s->store, celery_image_url, celery_work, celery_revoke,
                                        s, err, errlen);
        if (!s->celery)
            return -1;
    }
    return 0;
}

server_t *server_start(const server_config_t *cfg, char *err, size_t errlen)
{
    server_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->image_secrets.current = cfg->jwt_secret;
    s->image_secrets.previous = cfg->jwt_secret_previous;
    pthread_mutex_init(&s->wake_mu, NULL);
    pthread_cond_init(&s->wake_cv, NULL);
    pthread_mutex_init(&s->events_mu, NULL);
    pthread_mutex_init(&s->fault_mu, NULL);
    pthread_mutex_init(&s->park_mu, NULL);
    pthread_cond_init(&s->create_cv, NULL);
    pthread_cond_init(&s->complete_cv, NULL);
    pthread_cond_init(&s->commit_cv, NULL);

    if (server_models(s, cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (!cfg->prices_path)
        prices_default(&s->prices);
    else if (prices_load(cfg->prices_path, &s->prices, err, errlen) != 0)
        goto fail;

    s->jwt_cache = jwtcache_new(); /* NULL: every token verified every time */
    if (cfg->rate_limit > 0)
        s->rl = ratelimit_new(cfg->rate_limit, cfg->rate_burst > 0 ? cfg->rate_burst : 1);

    if (server_open_store(s, cfg, err, errlen) != 0)
        goto fail;
    int sqlite = strcmp(store_kind(s->store), "sqlite") == 0;
    int want = sqlite ? 1 : WRITERS_MAX;
    while (s->nwriters < want &&
           pthread_create(&s->writers[s->nwriters], NULL, writer_main, s) == 0)
        s->nwriters++;
    s->dispatcher_started = pthread_create(&s->dispatcher, NULL, dispatcher_main, s) == 0;
    s->complete_stages = sqlite ? 1 : 2;
    if (store_batches_completes(s->store)) {
        s->completer_started = pthread_create(&s->completer, NULL, image_main, s) == 0;
        if (s->complete_stages == 2)
            s->committer_started = pthread_create(&s->committer, NULL, commit_main, s) == 0;
    }
    if (s->nwriters < want || !s->dispatcher_started ||
        (store_batches_completes(s->store) &&
         !(s->completer_started && (s->committer_started || s->complete_stages == 1)))) {
        snprintf(err, errlen, "cannot start the create writer and claim dispatcher threads");
        goto fail;
    }
    if (server_listen(s, cfg, err, errlen) != 0)
        goto fail;
    hub_set_daemon(s->hub, s->mhd);

    if (server_start_services(s, cfg, err, errlen) != 0)
        goto fail;
    atomic_store(&s->ready, 1);
    return s;
fail:
    server_stop(s);
    return NULL;
}

int server_port(const server_t *s)
{
    return s->port;
}

const char *server_worker_url(const server_t *s)
{
    return s->worker_url[0] ? s->worker_url : s->url;
}

const char *server_url(const server_t *s)
{
    return s->url;
}

store_t *server_store(server_t *s)
{
    return s->store;
}

void server_set_submit_hook(server_t *s, server_submit_fn fn, void *arg)
{
    s->submit_fn = fn;
    s->submit_arg = arg;
}

/* Stops both listeners: no new connections; parked claims are answered (204) and queued
 * creates committed and answered before the daemons stop, so no connection stays suspended. */
static void stop_front(server_t *s)
{
    MHD_socket lfd = s->mhd ? MHD_quiesce_daemon(s->mhd) : MHD_INVALID_SOCKET;
    MHD_socket wfd = s->wmhd ? MHD_quiesce_daemon(s->wmhd) : MHD_INVALID_SOCKET;
    for (int i = 0; i < 2000 && atomic_load(&s->suspended) > 0; i++) {
        wake_dispatcher(s);
        clock_sleep_ms(5);
    }
    if (s->mhd)
        MHD_stop_daemon(s->mhd);
    if (s->wmhd)
        MHD_stop_daemon(s->wmhd);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd); /* quiesced: ours to close, after the stop */
    if (wfd != MHD_INVALID_SOCKET)
        close(wfd);
    atomic_store(&s->threads_stop, 1);
    wake_dispatcher(s);
    pthread_mutex_lock(&s->park_mu);
    pthread_cond_broadcast(&s->create_cv);
    pthread_cond_broadcast(&s->complete_cv);
    pthread_mutex_unlock(&s->park_mu);
    for (int i = 0; i < s->nwriters; i++)
        pthread_join(s->writers[i], NULL);
    if (s->completer_started)
        pthread_join(s->completer, NULL);
    atomic_store(&s->imager_done, 1); /* the commit stage drains what the image stage handed on */
    pthread_mutex_lock(&s->park_mu);
    pthread_cond_broadcast(&s->commit_cv);
    pthread_mutex_unlock(&s->park_mu);
    if (s->committer_started)
        pthread_join(s->committer, NULL);
    if (s->dispatcher_started)
        pthread_join(s->dispatcher, NULL);
}

void server_stop(server_t *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, 1);
    server_notify_work(s);
    hub_stop(s->hub); /* resumes every parked connection: MHD_stop_daemon needs them resumed */
    stop_front(s);
    connguard_stop(s->guard);
    webhook_stop(s->webhooks);
    if (s->reaper_started)
        pthread_join(s->reaper, NULL);
    celery_bridge_stop(s->celery);
    blob_close(s->blob);
    store_close(s->store);
    /* Last: the reaper, the Celery bridge and the store's listen thread kick the hub until they
     * have stopped (a start that failed after the listener began freed it under them). */
    hub_free(s->hub);
    ratelimit_free(s->rl);
    jwtcache_free(s->jwt_cache);
    free(s->models_buf);
    pthread_cond_destroy(&s->wake_cv);
    pthread_mutex_destroy(&s->wake_mu);
    pthread_mutex_destroy(&s->events_mu);
    pthread_mutex_destroy(&s->fault_mu);
    pthread_cond_destroy(&s->create_cv);
    pthread_cond_destroy(&s->complete_cv);
    pthread_cond_destroy(&s->commit_cv);
    pthread_mutex_destroy(&s->park_mu);
    free(s);
}
