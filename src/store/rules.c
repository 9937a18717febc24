/* rules.c: the job, lease and credit rules of rules.h. */
#include "store/rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char tl_err[512];

int store_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err, sizeof tl_err, fmt, ap);
    va_end(ap);
    return STORE_ERR;
}

const char *store_fail_text(void)
{
    return tl_err;
}

int store_rule_reserve(const user_t *u, int64_t reserve)
{
    return reserve > 0 && u->balance - u->reserved < reserve ? STORE_NO_CREDITS : STORE_OK;
}

int store_rule_admit(const user_t *u, int64_t queued, int64_t reserve, int max_queued,
                     int max_stored)
{
    if (max_queued > 0 && queued >= max_queued)
        return STORE_LIMIT;
    if (max_stored > 0 && u->stored >= max_stored)
        return STORE_FULL;
    return store_rule_reserve(u, reserve);
}

int64_t store_rule_reservation(int64_t reserve)
{
    return reserve > 0 ? reserve : 0;
}

int64_t store_rule_seed(int64_t requested)
{
    if (requested >= 0)
        return requested;
    unsigned char b[4];
    random_bytes(b, sizeof b);
    return (int64_t)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
}

int store_rule_lease(const job_t *j, const char *held, const char *lease_id, job_status_t done,
                     bool *replay)
{
    bool same = lease_id && held && held[0] && strcmp(held, lease_id) == 0;
    *replay = false;
    if (j->status == JOB_CANCELED)
        return STORE_CANCELED;
    if (same && j->status == JOB_IN_PROGRESS)
        return STORE_OK;
    if (same && j->status == done) {
        *replay = true;
        return STORE_OK;
    }
    return STORE_LEASE_LOST;
}

double store_rule_gpu_seconds(double gpu_seconds)
{
    return gpu_seconds >= 0 ? gpu_seconds : 0;
}

int64_t store_rule_charge(double gpu_seconds, double rate, const user_t *u, const job_t *j)
{
    return job_charge(store_rule_gpu_seconds(gpu_seconds), rate, u->balance, u->reserved,
                      j->credits_reserved);
}

int store_rule_grant(const user_t *u, int64_t delta, int64_t *balance)
{
    if (__builtin_add_overflow(u->balance, delta, balance) || *balance < 0)
        return STORE_CONFLICT;
    return STORE_OK;
}

bool store_rule_fail_requeues(const job_t *j, bool retryable, int max_attempts)
{
    return retryable && j->attempts < max_attempts;
}
