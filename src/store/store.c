/* store.c: dispatch from the store contract to the implementation chosen by the URL. */
#include "store/store.h"

#include "store/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

store_t *store_open(const char *url, char *err, size_t errlen)
{
    if (strncmp(url, "sqlite://", 9) == 0)
        return store_sqlite_open(url + 9, err, errlen);
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)
        return store_pg_open(url, err, errlen);
    if (strstr(url, "://") == NULL)
        return store_sqlite_open(url, err, errlen);
    snprintf(err, errlen,
             "DATABASE_URL: unsupported scheme in '%s' (use sqlite:///path or postgresql://...)",
             url);
    return NULL;
}

void store_close(store_t *s)
{
    if (s)
        s->ops->close(s);
}

const char *store_kind(const store_t *s)
{
    return s->ops->name;
}

const char *store_last_error(store_t *s)
{
    (void)s; /* one message per thread, whichever store failed (store/rules.h) */
    return store_fail_text();
}

int store_migrate(store_t *s)
{
    return s->ops->migrate(s);
}

int store_ping(store_t *s)
{
    return s->ops->ping(s);
}

int store_user_add(store_t *s, const char *name, const char *tier, int64_t credits, int64_t now)
{
    return s->ops->user_add(s, name, tier, credits, now);
}

int store_user_get(store_t *s, const char *name, user_t *out)
{
    return s->ops->user_get(s, name, out);
}

int store_user_set_disabled(store_t *s, const char *name, bool disabled, int64_t now)
{
    return s->ops->user_set_disabled(s, name, disabled, now);
}

int store_user_credit(store_t *s, const char *name, int64_t delta, int64_t now, int64_t *bal)
{
    return s->ops->user_credit(s, name, delta, now, bal);
}

int store_ledger(store_t *s, const char *name, int limit, ledger_entry_t **out, size_t *n)
{
    return s->ops->ledger(s, name, limit, out, n);
}

int store_job_create(store_t *s, const char *user, const job_params_t *p, const char *idem_key,
                     int64_t reserve, int max_queued, int max_stored, int64_t now, job_t *out)
{
    if (s->ops->job_create)
        return s->ops->job_create(s, user, p, idem_key, reserve, max_queued, max_stored, now, out);
    store_create_t c = {.user = user,
                        .p = p,
                        .idem_key = idem_key,
                        .reserve = reserve,
                        .max_queued = max_queued,
                        .max_stored = max_stored,
                        .now = now};
    s->ops->job_create_many(s, &c, 1); /* the error message stays the store's last error */
    if (out)
        *out = c.out;
    else
        job_clear(&c.out);
    return c.rc;
}

int store_job_create_many(store_t *s, store_create_t *items, size_t n)
{
    if (s->ops->job_create_many)
        return s->ops->job_create_many(s, items, n);
    for (size_t i = 0; i < n; i++) {
        store_create_t *c = &items[i];
        c->rc = s->ops->job_create(s, c->user, c->p, c->idem_key, c->reserve, c->max_queued,
                                   c->max_stored, c->now, &c->out);
        if (c->rc == STORE_ERR)
            snprintf(c->err, sizeof c->err, "%s", store_fail_text());
    }
    return STORE_OK;
}

int store_jobs_purge(store_t *s, int64_t ended_before, int limit, char (*ids)[JOB_ID_SIZE], int *n)
{
    return s->ops->jobs_purge(s, ended_before, limit, ids, n);
}

int store_job_get(store_t *s, const char *id, job_t *out)
{
    return s->ops->job_get(s, id, out);
}

int store_job_list(store_t *s, const char *user, int status, int limit, int64_t cursor_seq,
                   job_t **out, size_t *n)
{
    return s->ops->job_list(s, user, status, limit, cursor_seq, out, n);
}

int store_job_cancel(store_t *s, const char *user, const char *id, int64_t now, job_t *out)
{
    return s->ops->job_cancel(s, user, id, now, out);
}

int store_job_claim(store_t *s, const char *tier, const char *worker_id, int64_t lease_ms,
                    int64_t now, job_t *out)
{
    return s->ops->job_claim(s, tier, worker_id, lease_ms, now, out);
}

int store_job_heartbeat(store_t *s, const char *id, const char *lease_id, int64_t lease_ms,
                        int64_t now)
{
    return s->ops->job_heartbeat(s, id, lease_id, lease_ms, now, 0, 0);
}

int store_job_heartbeat_progress(store_t *s, const char *id, const char *lease_id, int64_t lease_ms,
                                 int64_t now, int step, int steps)
{
    if (steps <= 0 || step < 0 || step > steps)
        step = steps = 0;
    return s->ops->job_heartbeat(s, id, lease_id, lease_ms, now, step, steps);
}

int store_job_complete(store_t *s, const char *id, const char *lease_id, double gpu_seconds,
                       const char *image_key, double credit_rate, int64_t now, job_t *out)
{
    store_complete_t c = {.id = id,
                          .lease_id = lease_id,
                          .image_key = image_key,
                          .gpu_seconds = gpu_seconds,
                          .credit_rate = credit_rate,
                          .now = now}; /* no tier: claims nothing */
    int rc = store_job_complete_claim(s, &c);
    if (out)
        *out = c.done;
    else
        job_clear(&c.done);
    return rc;
}

static void complete_start(store_complete_t *c)
{
    memset(&c->done, 0, sizeof c->done);
    memset(&c->next, 0, sizeof c->next);
    c->next_rc = STORE_EMPTY;
    c->rc = STORE_ERR;
}

/* Keeps only what the outcome rc says is there. Returns rc. */
static int complete_end(store_complete_t *c, int rc)
{
    c->rc = rc;
    c->err[0] = '\0';
    if (rc == STORE_ERR)
        snprintf(c->err, sizeof c->err, "%s", store_fail_text());
    if (rc != STORE_OK) {
        job_clear(&c->done);
        c->next_rc = STORE_EMPTY;
    }
    if (c->next_rc != STORE_OK)
        job_clear(&c->next);
    return rc;
}

int store_job_complete_claim(store_t *s, store_complete_t *c)
{
    complete_start(c);
    return complete_end(c, s->ops->job_complete_claim(s, c));
}

void store_job_complete_many(store_t *s, store_complete_t *items, size_t n)
{
    if (!s->ops->job_complete_many) {
        for (size_t i = 0; i < n; i++)
            store_job_complete_claim(s, &items[i]);
        return;
    }
    for (size_t i = 0; i < n; i++)
        complete_start(&items[i]);
    s->ops->job_complete_many(s, items, n);
    for (size_t i = 0; i < n; i++)
        complete_end(&items[i], items[i].rc);
}

int store_batches_completes(const store_t *s)
{
    return s->ops->job_complete_many != NULL;
}

int store_job_fail(store_t *s, const char *id, const char *lease_id, const char *message,
                   bool retryable, int max_attempts, int64_t now, job_t *out)
{
    return s->ops->job_fail(s, id, lease_id, message, retryable, max_attempts, now, out);
}

int store_job_release(store_t *s, const char *id, const char *lease_id, int64_t now, job_t *out)
{
    return s->ops->job_release(s, id, lease_id, now, out);
}

int store_reap(store_t *s, int max_attempts, int64_t worker_ttl_ms, int64_t now, int *requeued,
               int *failed)
{
    return s->ops->reap(s, max_attempts, worker_ttl_ms, now, requeued, failed);
}

int store_worker_seen(store_t *s, const char *worker_id, const char *tier, const char *state,
                      int64_t now)
{
    return s->ops->worker_seen(s, worker_id, tier, state, now);
}

int store_worker_gone(store_t *s, const char *worker_id)
{
    return s->ops->worker_gone(s, worker_id);
}

int store_queue_stats(store_t *s, const char *tier, int64_t worker_ttl_ms, int64_t now,
                      queue_stats_t *out)
{
    return s->ops->queue_stats(s, tier, worker_ttl_ms, now, out);
}

int store_job_counts(store_t *s, store_job_counts_t *out)
{
    return s->ops->job_counts(s, out);
}

int store_explain(store_t *s, const char *name, char *out, size_t len)
{
    return s->ops->explain(s, name, out, len);
}

int store_worker_report(store_t *s, const worker_life_t *r, int event, int64_t now)
{
    return s->ops->worker_report(s, r, event, now);
}

int store_worker_lives(store_t *s, int64_t since, int64_t until, worker_life_t **out, size_t *n)
{
    return s->ops->worker_lives(s, since, until, out, n);
}

int store_usage(store_t *s, int64_t since, int64_t until, usage_row_t **out, size_t *n)
{
    return s->ops->usage(s, since, until, out, n);
}

int store_job_adopt(store_t *s, const char *id, double credit_rate, int64_t now, job_t *out)
{
    if (!s->ops->job_adopt)
        return STORE_NOT_FOUND;
    return s->ops->job_adopt(s, id, credit_rate, now, out);
}

int store_listen(store_t *s, void (*cb)(void *arg), void *arg)
{
    if (!s->ops->listen)
        return STORE_NOT_FOUND;
    return s->ops->listen(s, cb, arg);
}

void store_events_free(store_event_t *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i].data);
    free(v);
}

int store_event_add(store_t *s, const char *kind, const char *user, const char *data)
{
    return s->ops->event_add(s, kind, user, data);
}

int store_events_read(store_t *s, int64_t after, int64_t upto, const char *user, int limit,
                      store_event_t **out, size_t *n)
{
    return s->ops->events_read(s, after, upto, user, limit, out, n);
}

int store_events_last(store_t *s, int64_t *seq)
{
    return s->ops->events_last(s, seq);
}

int store_events_trim(store_t *s, int64_t keep_ms, int64_t keep_progress_ms)
{
    return s->ops->events_trim(s, keep_ms, keep_progress_ms);
}

int store_webhook_get(store_t *s, const char *job_id, store_webhook_t *out)
{
    return s->ops->webhook_get(s, job_id, out);
}

int store_job_get_webhook(store_t *s, const char *id, job_t *out, store_webhook_t *w,
                          bool *has_webhook)
{
    *has_webhook = false;
    int rc = s->ops->job_get(s, id, out);
    if (rc != STORE_OK)
        return rc;
    int wrc = s->ops->webhook_get(s, id, w);
    if (wrc == STORE_ERR) {
        job_clear(out);
        return STORE_ERR;
    }
    *has_webhook = wrc == STORE_OK;
    return STORE_OK;
}

int store_user_job_get(store_t *s, const char *user, const char *id, store_user_job_t *out)
{
    memset(out, 0, sizeof *out);
    return s->ops->user_job_get(s, user, id, out);
}

int store_webhooks_due(store_t *s, int64_t now, int64_t hold_ms, int limit, store_webhook_t **out,
                       size_t *n)
{
    return s->ops->webhooks_due(s, now, hold_ms, limit, out, n);
}

int store_webhook_attempt(store_t *s, const char *job_id, bool delivered, const char *error,
                          int64_t next_at, bool give_up, int64_t now)
{
    return s->ops->webhook_attempt(s, job_id, delivered, error, next_at, give_up, now);
}

int store_worker_leases(store_t *s, const char *worker_id, store_lease_t **out, size_t *n)
{
    return s->ops->worker_leases(s, worker_id, out, n);
}

int store_workers_list(store_t *s, store_worker_t **out, size_t *n)
{
    return s->ops->workers_list(s, out, n);
}
