/* webhook.h: delivery of the webhook outbox (store.h, store_webhook_t).
 *
 * When a job with a webhook_url ends, the transaction that ends it also makes its outbox row due;
 * this module's thread takes due rows, POSTs
 *     {"type":"generation.<status>","timestamp":"<RFC 3339>","data":<the job's JSON>}
 * with the Standard Webhooks headers (webhook-id: "msg_<job id>", the same on every attempt;
 * webhook-timestamp: Unix seconds; webhook-signature: "v1,<base64 HMAC-SHA256 of
 * id.timestamp.body>"), and records each attempt on the row. Delivered means a 2xx answer.
 * Otherwise it retries with exponential backoff and full jitter (from retry_min_ms, doubling, at
 * most an hour apart) until 24 hours after the job ended, then gives up (state "failed"). A crash
 * at any point loses nothing: the row stays due, and the receiver may see a webhook-id twice
 * (at-least-once; receivers deduplicate on it).
 *
 * Each attempt resolves the URL's host again and checks every address (lib/netguard.h), then
 * connects to the checked address only; no redirects are followed. */
#ifndef PINGVAS_WEBHOOK_H
#define PINGVAS_WEBHOOK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define WEBHOOK_GIVE_UP_MS (24LL * 3600 * 1000)
#define WEBHOOK_MAX_DELAY_MS (3600LL * 1000)
#define WEBHOOK_TIMEOUT_MS 10000
#define WEBHOOK_KEY_MAX 256

typedef struct webhook_config {
    const char *secret;   /* "whsec_<base64>" (the decoded bytes are the key) or any text */
    int allow_private;    /* --allow-private-webhooks */
    int64_t retry_min_ms; /* the first retry's delay before jitter */
} webhook_config_t;

/* The job's JSON for the body, or NULL when the job is gone (caller decrefs). */
typedef json_t *(*webhook_job_fn)(void *arg, const char *job_id);

typedef struct webhook_sender webhook_sender_t;

/* Starts the delivery thread. NULL with a message in err (a bad secret). */
webhook_sender_t *webhook_start(store_t *st, const webhook_config_t *cfg, webhook_job_fn job_fn,
                                void *arg, char *err, size_t errlen);
/* A job with a webhook ended (job_t has_webhook): look at the outbox now rather than at the next
 * tick (the tick also runs the retries and finds jobs other replicas ended). */
void webhook_kick(webhook_sender_t *w);
void webhook_stop(webhook_sender_t *w);

/* The HMAC key of a secret: the base64 after "whsec_", decoded, else the secret's bytes. 0 with
 * *keylen set, or -1 (malformed or empty). key holds WEBHOOK_KEY_MAX bytes. */
int webhook_key(const char *secret, unsigned char *key, size_t *keylen);
/* "v1,<base64 HMAC-SHA256(key, id + "." + ts + "." + body)>" into out (at least 64 bytes). */
int webhook_sign(const unsigned char *key, size_t keylen, const char *id, int64_t ts,
                 const char *body, size_t len, char *out, size_t outlen);
/* The delay before retry number attempts (1 for the first retry): retry_min_ms * 2^(attempts-1)
 * capped at WEBHOOK_MAX_DELAY_MS, times r in [0.5, 1) (jitter). */
int64_t webhook_backoff_ms(int64_t retry_min_ms, int attempts, double r);

#endif
