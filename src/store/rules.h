/* rules.h: the job, lease and credit rules of the store contract (store.h), written once. Both
 * stores (store_sqlite.c, store_pg.c) call these inside their own transaction and keep only their
 * SQL: what a create must pass, what a job reserves and is charged, which report a lease holder
 * may make, how attempts and releases count, and the thread's last error message. */
#ifndef PINGVAS_STORE_RULES_H
#define PINGVAS_STORE_RULES_H

#include <stdbool.h>
#include <stdint.h>

#include "core/job.h"
#include "store/store.h"

/* Records the message of a STORE_ERR for this thread (store_last_error shows it); returns
 * STORE_ERR. */
int store_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The message of this thread's last STORE_ERR ("" when none). */
const char *store_fail_text(void);

/* Whether user u, with `queued` jobs queued, may have one more job reserving `reserve` credits:
 * STORE_OK, or STORE_LIMIT (max_queued reached), STORE_FULL (max_stored reached),
 * STORE_NO_CREDITS (the unreserved balance is short). A limit <= 0 is no limit. */
int store_rule_admit(const user_t *u, int64_t queued, int64_t reserve, int max_queued,
                     int max_stored);
/* Only the credit part of store_rule_admit (the Celery adoption path). */
int store_rule_reserve(const user_t *u, int64_t reserve);
/* The reservation a job records: reserve, never below 0. */
int64_t store_rule_reservation(int64_t reserve);
/* The seed a job gets: the requested one, or a random 32-bit one when it is below 0. */
int64_t store_rule_seed(int64_t requested);

/* A lease holder's report on job j (loaded, locked), which holds lease `held` ("" when none):
 * STORE_OK when j is in_progress under lease_id; STORE_OK with *replay when it already reached
 * status `done` under that lease (the same report again); STORE_CANCELED; else
 * STORE_LEASE_LOST. */
int store_rule_lease(const job_t *j, const char *held, const char *lease_id, job_status_t done,
                     bool *replay);

/* The GPU-seconds a completion records: nonsense (negative, NaN) counts as 0. */
double store_rule_gpu_seconds(double gpu_seconds);
/* What completing job j of user u charges (job_charge over the user's balance and reservations). */
int64_t store_rule_charge(double gpu_seconds, double rate, const user_t *u, const job_t *j);
/* A grant of delta credits to u: STORE_OK with the new balance, or STORE_CONFLICT when it would
 * overflow or go below 0. */
int store_rule_grant(const user_t *u, int64_t delta, int64_t *balance);

/* A failed attempt goes back to the queue (true) when the worker said retryable and the job has
 * attempts left; else the job fails for good. */
bool store_rule_fail_requeues(const job_t *j, bool retryable, int max_attempts);
/* How a requeue changes the counters: a graceful release is not a failed attempt (the claim
 * counted one: undo it) and counts a release; a retryable failure or a lost lease keeps the
 * attempt the claim counted. */
#define STORE_RELEASE_ATTEMPTS (-1)
#define STORE_RELEASE_RELEASES 1

#endif
