/* webhook.c: the webhook outbox's delivery thread (webhook.h). */
#include "api/webhook.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/b64.h"
#include "lib/clock.h"
#include "lib/hmac.h"
#include "lib/httpc.h"
#include "lib/log.h"
#include "lib/netguard.h"

#define WEBHOOK_BATCH 16 /* rows taken per look at the outbox */
/* A taken row is this sender's for this long: past any attempt (also when the server crashed
 * during one, after which the row waits this long). */
#define WEBHOOK_HOLD_MS (WEBHOOK_TIMEOUT_MS + 5000)
#define WEBHOOK_TICK_MS 1000      /* the outbox is looked at least this often */
#define WEBHOOK_RESPONSE_MAX 4096 /* the receiver's answer is not needed: read little of it */

struct webhook_sender {
    store_t *store;
    webhook_config_t cfg;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t keylen;
    webhook_job_fn job_fn;
    void *arg;
    httpc_t *http; /* the deliveries' client */
    pthread_t thread;
    int started;
    atomic_int stopping;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int kicked;
};

int webhook_key(const char *secret, unsigned char *key, size_t *keylen)
{
    if (!secret || !*secret)
        return -1;
    if (strncmp(secret, "whsec_", 6) == 0) {
        size_t n = 0;
        unsigned char *k = b64_decode(secret + 6, strlen(secret + 6), 0, WEBHOOK_KEY_MAX, &n);
        if (!k || n == 0) {
            free(k);
            return -1;
        }
        memcpy(key, k, n);
        free(k);
        *keylen = n;
        return 0;
    }
    size_t n = strlen(secret);
    if (n > WEBHOOK_KEY_MAX)
        return -1;
    memcpy(key, secret, n);
    *keylen = n;
    return 0;
}

int webhook_sign(const unsigned char *key, size_t keylen, const char *id, int64_t ts,
                 const char *body, size_t len, char *out, size_t outlen)
{
    char head[256];
    int hl = snprintf(head, sizeof head, "%s.%lld.", id, (long long)ts);
    if (hl < 0 || (size_t)hl >= sizeof head || outlen < 64)
        return -1;
    unsigned char mac[HMAC_SHA256_LEN];
    char *msg = malloc((size_t)hl + len + 1);
    if (!msg)
        return -1;
    memcpy(msg, head, (size_t)hl);
    memcpy(msg + hl, body, len);
    int ok = hmac_sha256(key, keylen, msg, (size_t)hl + len, mac) == 0;
    free(msg);
    if (!ok)
        return -1;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)sizeof mac);
    return 0;
}

int64_t webhook_backoff_ms(int64_t retry_min_ms, int attempts, double r)
{
    int64_t d = retry_min_ms > 0 ? retry_min_ms : 1000;
    for (int i = 1; i < attempts && d < WEBHOOK_MAX_DELAY_MS; i++)
        d *= 2;
    if (d > WEBHOOK_MAX_DELAY_MS)
        d = WEBHOOK_MAX_DELAY_MS;
    if (r < 0.5 || r >= 1.0)
        r = 0.5;
    return (int64_t)((double)d * r);
}

static double jitter(void)
{
    uint32_t x = 0;
    if (RAND_bytes((unsigned char *)&x, sizeof x) != 1)
        x = (uint32_t)clock_mono_ms();
    return 0.5 + 0.5 * ((double)x / 4294967296.0);
}

/* The body of a delivery: the job's JSON in the Standard Webhooks envelope. NULL when the job is
 * gone. */
static char *webhook_body(webhook_sender_t *w, const char *job_id)
{
    json_t *job = w->job_fn(w->arg, job_id);
    if (!job)
        return NULL;
    char ts[40], type[48];
    clock_format_rfc3339(clock_now_ms(), ts, sizeof ts);
    const char *status = json_string_value(json_object_get(job, "status"));
    snprintf(type, sizeof type, "generation.%s", status ? status : "ended");
    json_t *o = json_pack("{s:s, s:s, s:o}", "type", type, "timestamp", ts, "data", job);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* One attempt to deliver row r: 0 when the receiver answered 2xx, else -1 with err set. */
static int attempt(webhook_sender_t *w, const store_webhook_t *r, const char *body, char *err,
                   size_t errlen)
{
    net_url_t u;
    char addr[64], why[256];
    if (netguard_parse_url(r->url, &u, why, sizeof why) != 0 ||
        netguard_check(&u, w->cfg.allow_private, addr, sizeof addr, why, sizeof why) != 0) {
        snprintf(err, errlen, "refused: the URL %s", why);
        return -1;
    }
    char id[JOB_ID_SIZE + 8], tsh[64], idh[96], sigh[128], sig[96], resolve[400];
    int64_t ts = clock_now_ms() / 1000;
    snprintf(id, sizeof id, "msg_%s", r->job_id);
    if (webhook_sign(w->key, w->keylen, id, ts, body, strlen(body), sig, sizeof sig) != 0) {
        snprintf(err, errlen, "could not sign the body");
        return -1;
    }
    snprintf(idh, sizeof idh, "webhook-id: %s", id);
    snprintf(tsh, sizeof tsh, "webhook-timestamp: %lld", (long long)ts);
    snprintf(sigh, sizeof sigh, "webhook-signature: %s", sig);
    int v6 = strchr(addr, ':') != NULL;
    snprintf(resolve, sizeof resolve, "%s:%d:%s%s%s", u.host, u.port, v6 ? "[" : "", addr,
             v6 ? "]" : "");
    const char *headers[] = {idh, tsh, sigh, "User-Agent: pingvas-webhooks/1", NULL};
    httpc_req_t req = {.method = "POST",
                       .url = r->url,
                       .body = body,
                       .body_len = strlen(body),
                       .timeout_ms = WEBHOOK_TIMEOUT_MS,
                       .max_response = WEBHOOK_RESPONSE_MAX,
                       .headers = headers,
                       .resolve = resolve,
                       .protocols = w->cfg.allow_private ? "http,https" : "https"};
    httpc_resp_t resp;
    int rc = httpc_do(w->http, &req, &resp);
    if (rc != 0 && resp.status == 0 && strstr(resp.error, "larger than"))
        rc = 0; /* a long answer is still an answer; its status came first */
    if (rc == 0 && resp.status >= 200 && resp.status < 300) {
        httpc_resp_free(&resp);
        return 0;
    }
    if (resp.status)
        snprintf(err, errlen, "the receiver answered HTTP %ld", resp.status);
    else
        snprintf(err, errlen, "%s", resp.error[0] ? resp.error : "no answer");
    httpc_resp_free(&resp);
    return -1;
}

/* Delivers one due row and records the attempt. */
static void deliver(webhook_sender_t *w, const store_webhook_t *r)
{
    char err[256] = "";
    int64_t now = clock_now_ms();
    char *body = webhook_body(w, r->job_id);
    int ok = body ? attempt(w, r, body, err, sizeof err) == 0 : 0;
    if (!body)
        snprintf(err, sizeof err, "the job no longer exists");
    free(body);
    now = clock_now_ms();
    int give_up = !ok && (!body || now - r->ended_at >= WEBHOOK_GIVE_UP_MS);
    int64_t next = now + webhook_backoff_ms(w->cfg.retry_min_ms, r->attempts + 1, jitter());
    if (ok)
        log_info("event=webhook_delivered job=%s attempts=%d", r->job_id, r->attempts + 1);
    else
        log_warn("event=webhook_failed job=%s attempt=%d err=\"%s\"%s", r->job_id, r->attempts + 1,
                 err, give_up ? " gave_up=1" : "");
    if (store_webhook_attempt(w->store, r->job_id, ok, err, next, give_up, now) != STORE_OK)
        log_warn("event=webhook_record_failed job=%s err=\"%s\"", r->job_id,
                 store_last_error(w->store));
}

/* Takes and delivers one batch; the number of rows it took, or -1 on a store error. */
static int deliver_batch(webhook_sender_t *w)
{
    store_webhook_t *v = NULL;
    size_t n = 0;
    if (store_webhooks_due(w->store, clock_now_ms(), WEBHOOK_HOLD_MS, WEBHOOK_BATCH, &v, &n) !=
        STORE_OK) {
        log_warn("event=webhook_outbox_failed err=\"%s\"", store_last_error(w->store));
        return -1;
    }
    for (size_t i = 0; i < n && !atomic_load(&w->stopping); i++)
        deliver(w, &v[i]);
    free(v);
    return (int)n;
}

static void *webhook_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-webhooks"); /* top -H, perf */
    webhook_sender_t *w = arg;
    while (!atomic_load(&w->stopping)) {
        if (deliver_batch(w) == WEBHOOK_BATCH)
            continue; /* more may be due */
        pthread_mutex_lock(&w->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += WEBHOOK_TICK_MS / 1000;
        while (!w->kicked && !atomic_load(&w->stopping))
            if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) != 0)
                break;
        w->kicked = 0;
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

webhook_sender_t *webhook_start(store_t *st, const webhook_config_t *cfg, webhook_job_fn job_fn,
                                void *arg, char *err, size_t errlen)
{
    webhook_sender_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->store = st;
    w->cfg = *cfg;
    w->job_fn = job_fn;
    w->arg = arg;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (webhook_key(cfg->secret, w->key, &w->keylen) != 0) {
        snprintf(err, errlen,
                 "--webhook-secret: a 'whsec_' secret must be base64 after the prefix; any "
                 "other must be 1 to %d characters",
                 WEBHOOK_KEY_MAX);
        webhook_stop(w);
        return NULL;
    }
    if (!(w->http = httpc_new()) || pthread_create(&w->thread, NULL, webhook_main, w) != 0) {
        snprintf(err, errlen, "cannot start the webhook sender");
        webhook_stop(w);
        return NULL;
    }
    w->started = 1;
    return w;
}

void webhook_kick(webhook_sender_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->kicked = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void webhook_stop(webhook_sender_t *w)
{
    if (!w)
        return;
    atomic_store(&w->stopping, 1);
    webhook_kick(w);
    if (w->started)
        pthread_join(w->thread, NULL);
    if (w->http)
        httpc_free(w->http);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    OPENSSL_cleanse(w->key, sizeof w->key);
    free(w);
}
