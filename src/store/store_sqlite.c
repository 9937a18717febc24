/* store_sqlite.c: the SQLite store (the embedded default for `pingvas up`).
 *
 * One connection per store_t, guarded by a pthread mutex: every operation holds the mutex for
 * its whole duration, and every mutating operation is one BEGIN IMMEDIATE ... COMMIT
 * transaction, rolled back on any error. BEGIN IMMEDIATE takes the database write lock up
 * front, so several processes on the same file (two servers, `pingvas user add` next to a
 * running server) serialize through SQLite's busy handler (busy_timeout 5000 ms) instead of
 * failing half-way.
 *
 * Durability: the journal is WAL with synchronous=FULL by default: every commit fsyncs the WAL
 * before it returns, so a committed transaction (an acknowledged job, a recorded charge)
 * survives a power loss or kernel crash too. Creates share one commit (group commit below), so
 * under load the fsync is paid once per batch, not once per job. "?synchronous=normal" on the
 * path ("/data/pingvas.db?synchronous=normal") is the opt-in trade-off: the WAL is fsynced only
 * at checkpoints, so a commit survives a crash or kill -9 of the process but a power loss may
 * lose the last few commits (never corrupting the database).
 *
 * temp_store is MEMORY: each create of a group commit runs under a savepoint, whose statement
 * journal (the pages as they were before that create) would otherwise spill past 64 KiB to a
 * temporary file, about a dozen extra 4 KiB writes per create; it is never needed after a crash
 * (the WAL is what recovery reads), so memory loses nothing.
 *
 * Statements are prepared once (lazily, so a store can be opened before `pingvas migrate`
 * created the tables) and reset after every operation; values are always bound, never
 * formatted into SQL.
 *
 * Times are INTEGER ms since the epoch, NULL when unset (0 in job_t). The job's image KEY is
 * kept in the seed's `image_url` column; the public URL is derived from it by the server.
 * Completed and failed rows keep the lease_id that ended them, so a replayed complete from the
 * same lease holder is answered idempotently; job_t shows lease_id only while in_progress.
 *
 * Lease rules: heartbeat, complete, fail and release need only the current lease_id: a lease
 * that expired but was not yet taken back by the reaper is still the job's lease; a heartbeat
 * renews it and the result it reports is accepted (the work is done; the image is there). The
 * reaper alone takes leases back, and the server holds it off while the store itself was
 * unreachable or slow (a worker that could not heartbeat then keeps its job). Once the reaper
 * requeued the job the lease_id is gone and the late worker gets STORE_LEASE_LOST. */
#include "store/rules.h"
#include "store/store.h"
#include "lib/log.h"
#include "lib/sqlmem.h"

#include <fcntl.h>
#include <math.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCHEMA_VERSION 12

/* Version 1 of the schema. Column names of generation_jobs follow the seed's table. */
/* Triggers that keep users.reserved, users.queued and job_totals equal to sums over the jobs,
 * whoever writes the rows (schema v1 and its v2 rebuild create the same ones). */
#define JOB_TRIGGERS_SQL                                                                           \
    "CREATE TRIGGER generation_jobs_ai AFTER INSERT ON generation_jobs BEGIN"                      \
    "  UPDATE users SET"                                                                           \
    "    reserved = reserved + IIF(NEW.status IN ('queued','in_progress'),"                        \
    "      NEW.credits_reserved, 0),"                                                              \
    "    queued = queued + (NEW.status = 'queued') WHERE name = NEW.user_id;"                      \
    "  UPDATE job_totals SET jobs = jobs + 1, gpu_seconds = gpu_seconds + NEW.gpu_seconds,"        \
    "    credits_charged = credits_charged + NEW.credits_charged WHERE status = NEW.status;"       \
    "END;"                                                                                         \
    "CREATE TRIGGER generation_jobs_au AFTER UPDATE OF status, user_id, credits_reserved,"         \
    "  gpu_seconds, credits_charged ON generation_jobs BEGIN"                                      \
    "  UPDATE users SET"                                                                           \
    "    reserved = reserved - IIF(OLD.status IN ('queued','in_progress'),"                        \
    "      OLD.credits_reserved, 0),"                                                              \
    "    queued = queued - (OLD.status = 'queued') WHERE name = OLD.user_id;"                      \
    "  UPDATE users SET"                                                                           \
    "    reserved = reserved + IIF(NEW.status IN ('queued','in_progress'),"                        \
    "      NEW.credits_reserved, 0),"                                                              \
    "    queued = queued + (NEW.status = 'queued') WHERE name = NEW.user_id;"                      \
    "  UPDATE job_totals SET jobs = jobs - 1, gpu_seconds = gpu_seconds - OLD.gpu_seconds,"        \
    "    credits_charged = credits_charged - OLD.credits_charged WHERE status = OLD.status;"       \
    "  UPDATE job_totals SET jobs = jobs + 1, gpu_seconds = gpu_seconds + NEW.gpu_seconds,"        \
    "    credits_charged = credits_charged + NEW.credits_charged WHERE status = NEW.status;"       \
    "END;"                                                                                         \
    "CREATE TRIGGER generation_jobs_ad AFTER DELETE ON generation_jobs BEGIN"                      \
    "  UPDATE users SET"                                                                           \
    "    reserved = reserved - IIF(OLD.status IN ('queued','in_progress'),"                        \
    "      OLD.credits_reserved, 0),"                                                              \
    "    queued = queued - (OLD.status = 'queued') WHERE name = OLD.user_id;"                      \
    "  UPDATE job_totals SET jobs = jobs - 1, gpu_seconds = gpu_seconds - OLD.gpu_seconds,"        \
    "    credits_charged = credits_charged - OLD.credits_charged WHERE status = OLD.status;"       \
    "END;"

static const char schema_v1[] =
    "CREATE TABLE users ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  tier TEXT NOT NULL DEFAULT 'standard',"
    "  balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),"
    "  created_at INTEGER NOT NULL,"
    /* kept equal to the sums over the user's jobs by the triggers below */
    "  reserved INTEGER NOT NULL DEFAULT 0,"
    "  queued INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE generation_jobs ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users(name),"
    "  status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN "
    "    ('queued','in_progress','completed','failed','canceled')),"
    "  prompt TEXT NOT NULL,"
    "  negative_prompt TEXT NOT NULL DEFAULT '',"
    "  width INTEGER NOT NULL DEFAULT 512,"
    "  height INTEGER NOT NULL DEFAULT 512,"
    "  steps INTEGER NOT NULL DEFAULT 20,"
    "  cfg_scale REAL NOT NULL DEFAULT 7.0,"
    "  seed INTEGER,"
    "  started_at INTEGER,"
    "  completed_at INTEGER,"
    "  image_url TEXT," /* the blob store key */
    "  error_message TEXT,"
    "  seq INTEGER NOT NULL UNIQUE,"
    "  model TEXT NOT NULL DEFAULT 'sd15',"
    "  tier TEXT NOT NULL DEFAULT 'standard',"
    "  created_at INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  releases INTEGER NOT NULL DEFAULT 0,"
    "  gpu_seconds REAL NOT NULL DEFAULT 0,"
    "  credits_reserved INTEGER NOT NULL DEFAULT 0,"
    "  credits_charged INTEGER NOT NULL DEFAULT 0,"
    "  lease_id TEXT,"
    "  worker_id TEXT,"
    "  lease_expires_at INTEGER,"
    "  queue_pos INTEGER NOT NULL,"
    "  idem_key TEXT);"
    /* UNIQUE (user_id, idem_key), written only for jobs that have a key */
    "CREATE UNIQUE INDEX generation_jobs_idem ON generation_jobs(user_id, idem_key)"
    "  WHERE idem_key IS NOT NULL;"
    /* Indexes on live jobs only are partial, so finished history does not slow them down
     * and a create writes as few pages as possible. Claim order, the front of a tier's
     * queue, and the tier's queued and running counts: */
    "CREATE INDEX generation_jobs_claim ON generation_jobs(tier, status, queue_pos)"
    "  WHERE status IN ('queued','in_progress');"
    /* per-user listing, newest first */
    "CREATE INDEX generation_jobs_user ON generation_jobs(user_id, seq);"
    /* the reaper */
    "CREATE INDEX generation_jobs_reap ON generation_jobs(status, lease_expires_at)"
    "  WHERE status = 'in_progress';"
    /* fair share: the users with queued jobs in a tier and each one's head of queue */
    "CREATE INDEX generation_jobs_fair ON generation_jobs(tier, user_id, queue_pos)"
    "  WHERE status = 'queued';"
    /* fair share: each user's running jobs in a tier */
    "CREATE INDEX generation_jobs_running ON generation_jobs(tier, user_id)"
    "  WHERE status = 'in_progress';"
    /* Derived values kept by triggers, so that they hold whoever writes the rows: a user's
     * reserved credits (credits_reserved of queued and in_progress jobs) and queued count
     * are O(1) to read on every create, and job_totals answers job_counts. */
    "CREATE TABLE job_totals ("
    "  status TEXT PRIMARY KEY NOT NULL,"
    "  jobs INTEGER NOT NULL DEFAULT 0,"
    "  gpu_seconds REAL NOT NULL DEFAULT 0,"
    "  credits_charged INTEGER NOT NULL DEFAULT 0);"
    "INSERT INTO job_totals(status) VALUES ('completed'), ('failed'), "
    "('canceled');" JOB_TRIGGERS_SQL "CREATE TABLE credit_ledger ("
    "  id INTEGER PRIMARY KEY,"
    "  user_id TEXT NOT NULL REFERENCES users(name),"
    "  job_id TEXT REFERENCES generation_jobs(id),"
    "  kind TEXT NOT NULL CHECK (kind IN ('charge','grant')),"
    "  amount INTEGER NOT NULL,"
    "  balance_after INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE (job_id, kind));"
    "CREATE INDEX credit_ledger_user ON credit_ledger(user_id, id);"
    "CREATE TABLE workers ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  tier TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  last_seen INTEGER NOT NULL);"
    "CREATE INDEX workers_tier ON workers(tier, last_seen);";

/* Version 2: the Celery bridge (DESIGN section 8). The seed's API inserts generation_jobs rows
 * with its own columns only and status 'pending'; store_job_adopt turns such a row into a queued
 * job. So the pingvas columns without a default (seq, created_at, queue_pos) and the request
 * columns the seed may write as NULL become nullable, and 'pending' is a status. SQLite cannot
 * alter a column's constraints: the table is rebuilt (sqlite_migrate runs this with foreign keys
 * off and checks them before COMMIT), and its indexes and triggers are created again as in v1.
 * A 'pending' row has seq NULL: no listing, claim or statistic sees it. */
static const char schema_v2[] =
    "CREATE TABLE generation_jobs_v2 ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users(name),"
    "  status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN "
    "    ('pending','queued','in_progress','completed','failed','canceled')),"
    "  prompt TEXT NOT NULL,"
    "  negative_prompt TEXT DEFAULT '',"
    "  width INTEGER DEFAULT 512,"
    "  height INTEGER DEFAULT 512,"
    "  steps INTEGER DEFAULT 20,"
    "  cfg_scale REAL DEFAULT 7.0,"
    "  seed INTEGER,"
    "  started_at INTEGER,"
    "  completed_at INTEGER,"
    "  image_url TEXT,"
    "  error_message TEXT,"
    "  seq INTEGER UNIQUE,"
    "  model TEXT NOT NULL DEFAULT 'sd15',"
    "  tier TEXT NOT NULL DEFAULT 'standard',"
    "  created_at INTEGER,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  releases INTEGER NOT NULL DEFAULT 0,"
    "  gpu_seconds REAL NOT NULL DEFAULT 0,"
    "  credits_reserved INTEGER NOT NULL DEFAULT 0,"
    "  credits_charged INTEGER NOT NULL DEFAULT 0,"
    "  lease_id TEXT,"
    "  worker_id TEXT,"
    "  lease_expires_at INTEGER,"
    "  queue_pos INTEGER,"
    "  idem_key TEXT);"
    "INSERT INTO generation_jobs_v2 SELECT id, user_id, status, prompt, negative_prompt, width,"
    "  height, steps, cfg_scale, seed, started_at, completed_at, image_url, error_message, seq,"
    "  model, tier, created_at, attempts, releases, gpu_seconds, credits_reserved,"
    "  credits_charged, lease_id, worker_id, lease_expires_at, queue_pos, idem_key"
    "  FROM generation_jobs;"
    "DROP TABLE generation_jobs;"
    "ALTER TABLE generation_jobs_v2 RENAME TO generation_jobs;"
    "CREATE UNIQUE INDEX generation_jobs_idem ON generation_jobs(user_id, idem_key)"
    "  WHERE idem_key IS NOT NULL;"
    "CREATE INDEX generation_jobs_claim ON generation_jobs(tier, status, queue_pos)"
    "  WHERE status IN ('queued','in_progress');"
    "CREATE INDEX generation_jobs_user ON generation_jobs(user_id, seq);"
    "CREATE INDEX generation_jobs_reap ON generation_jobs(status, lease_expires_at)"
    "  WHERE status = 'in_progress';"
    "CREATE INDEX generation_jobs_fair ON generation_jobs(tier, user_id, queue_pos)"
    "  WHERE status = 'queued';"
    "CREATE INDEX generation_jobs_running ON generation_jobs(tier, user_id)"
    "  WHERE status = 'in_progress';" JOB_TRIGGERS_SQL;

/* Version 3: `pingvas user disable` (NULL: active). */
static const char schema_v3[] = "ALTER TABLE users ADD COLUMN disabled_at INTEGER;";

/* Version 4: cost accounting (DESIGN section 10): each worker's placement and lifetime, and an
 * index for the completed jobs of a time range. */
static const char schema_v4[] =
    "CREATE TABLE worker_lifetimes ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  tier TEXT NOT NULL,"
    "  instance_type TEXT NOT NULL DEFAULT '',"
    "  capacity_type TEXT NOT NULL DEFAULT '',"
    "  zone TEXT NOT NULL DEFAULT '',"
    "  gpus INTEGER NOT NULL DEFAULT 1,"
    "  started_at INTEGER NOT NULL,"
    "  loaded_at INTEGER,"
    "  last_seen INTEGER NOT NULL,"
    "  ended_at INTEGER,"
    "  busy_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX worker_lifetimes_started ON worker_lifetimes(started_at);"
    "CREATE INDEX generation_jobs_completed ON generation_jobs(completed_at)"
    "  WHERE status = 'completed';";

/* Version 5: the running attempt's progress (step of steps), from the worker's heartbeats. */
static const char schema_v5[] = "ALTER TABLE generation_jobs ADD COLUMN progress_step INTEGER;"
                                "ALTER TABLE generation_jobs ADD COLUMN progress_steps INTEGER;";

/* Version 6: the durable event log of GET /api/v1/events (store.h, store_event_t), written by
 * triggers in the transaction of the change. AUTOINCREMENT: a seq is never reused, even after
 * retention deleted the newest rows. */
#define EVENTS_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
#define EVENTS_INSERT "INSERT INTO events(created_at, kind, user_id, job_id, data) VALUES ("
/* clang-format off */
static const char schema_v6[] =
    "CREATE TABLE events ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  created_at INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  user_id TEXT,"
    "  job_id TEXT,"
    "  data TEXT NOT NULL);"
    "CREATE INDEX events_user ON events(user_id, seq);"
    "CREATE INDEX events_created ON events(created_at);"
    "CREATE TRIGGER events_job_ai AFTER INSERT ON generation_jobs"
    "  WHEN NEW.status <> 'pending' BEGIN " EVENTS_INSERT EVENTS_NOW_MS ", 'job', NEW.user_id,"
    "  NEW.id, json_object('id', NEW.id, 'status', NEW.status, 'tier', NEW.tier, 'attempts',"
    "  NEW.attempts, 'error_message', NEW.error_message)); END;"
    "CREATE TRIGGER events_job_au AFTER UPDATE OF status ON generation_jobs"
    "  WHEN OLD.status IS NOT NEW.status AND NEW.status <> 'pending' BEGIN " EVENTS_INSERT
    EVENTS_NOW_MS ", 'job', NEW.user_id, NEW.id, json_object('id', NEW.id, 'status', NEW.status,"
    "  'tier', NEW.tier, 'attempts', NEW.attempts, 'error_message', NEW.error_message)); END;"
    "CREATE TRIGGER events_progress AFTER UPDATE OF progress_step ON generation_jobs"
    "  WHEN NEW.status = 'in_progress' AND NEW.progress_step IS NOT NULL"
    "  AND NEW.progress_step IS NOT OLD.progress_step BEGIN " EVENTS_INSERT EVENTS_NOW_MS ","
    "  'progress', NEW.user_id, NEW.id, json_object('id', NEW.id, 'status', NEW.status, 'step',"
    "  NEW.progress_step, 'steps', NEW.progress_steps)); END;"
    "CREATE TRIGGER events_worker_ai AFTER INSERT ON workers BEGIN " EVENTS_INSERT EVENTS_NOW_MS
    ", 'worker', NULL, NULL, json_object('id', NEW.id, 'tier', NEW.tier, 'state', NEW.state));"
    "  END;"
    "CREATE TRIGGER events_worker_au AFTER UPDATE OF state ON workers"
    "  WHEN OLD.state IS NOT NEW.state BEGIN " EVENTS_INSERT EVENTS_NOW_MS ", 'worker', NULL,"
    "  NULL, json_object('id', NEW.id, 'tier', NEW.tier, 'state', NEW.state)); END;"
    "CREATE TRIGGER events_worker_ad AFTER DELETE ON workers BEGIN " EVENTS_INSERT EVENTS_NOW_MS
    ", 'worker', NULL, NULL, json_object('id', OLD.id, 'tier', OLD.tier, 'state', 'gone'));"
    "  END;";
/* clang-format on */

/* Version 7: retention and the per-user cap on stored jobs (issue 16, finding 4): users.stored
 * counts a user's jobs of any status, kept by triggers; an index finds ended jobs by age. */
static const char schema_v7[] =
    "ALTER TABLE users ADD COLUMN stored INTEGER NOT NULL DEFAULT 0;"
    "UPDATE users SET stored = (SELECT COUNT(*) FROM generation_jobs j WHERE j.user_id = name);"
    "CREATE TRIGGER generation_jobs_stored_ai AFTER INSERT ON generation_jobs BEGIN"
    "  UPDATE users SET stored = stored + 1 WHERE name = NEW.user_id; END;"
    "CREATE TRIGGER generation_jobs_stored_ad AFTER DELETE ON generation_jobs BEGIN"
    "  UPDATE users SET stored = stored - 1 WHERE name = OLD.user_id; END;"
    "CREATE INDEX generation_jobs_ended ON generation_jobs(completed_at)"
    "  WHERE status IN ('completed','failed','canceled');";

/* migrations[v - 1] upgrades version v - 1 to v. Append, never edit a released one. */
/* Version 8: the webhook outbox. A job's row is written with the job (create) and made due by a
 * trigger in the transaction that ends the job, so no crash loses a delivery. */
/* clang-format off */
static const char schema_v8[] =
    "CREATE TABLE webhooks ("
    "  job_id TEXT PRIMARY KEY NOT NULL,"
    "  url TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'waiting' CHECK (state IN"
    "    ('waiting','pending','delivered','failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at INTEGER,"
    "  ended_at INTEGER,"
    "  delivered_at INTEGER,"
    "  last_error TEXT);"
    "CREATE INDEX webhooks_due ON webhooks(next_at) WHERE state = 'pending';"
    "CREATE TRIGGER webhooks_job_end AFTER UPDATE OF status ON generation_jobs"
    "  WHEN NEW.status IN ('completed','failed','canceled') AND OLD.status IS NOT NEW.status"
    "  BEGIN UPDATE webhooks SET state = 'pending', next_at = " EVENTS_NOW_MS ", ended_at = "
    EVENTS_NOW_MS " WHERE job_id = NEW.id AND state = 'waiting'; END;"
    "CREATE TRIGGER webhooks_job_gone AFTER DELETE ON generation_jobs"
    "  BEGIN DELETE FROM webhooks WHERE job_id = OLD.id; END;";
/* clang-format on */

/* Version 9: a user's jobs of one status, newest first (GET /api/v1/generation?status=), found
 * through an index instead of by reading all of the user's jobs (issue 12: flat as it grows). */
static const char schema_v9[] =
    "CREATE INDEX generation_jobs_user_status ON generation_jobs(user_id, status, seq);";

/* Version 10: a create of the server counts itself (issue 12, (a)). The three triggers a job's
 * insert fires (users' reserved, queued and stored; job_totals, which a queued job leaves as it
 * is; the event row) cost 5 to 6 us of the 16 to 17 us of SQL a create took, most of it in
 * running a trigger at all. The server's create writer now writes the job's event row itself,
 * adds a whole batch's creates to each user in one UPDATE (create_batch), and marks the rows it
 * inserts counted = 1, for which the triggers do nothing. Every other insert (counted NULL: the
 * seed's, any other writer's) is counted by the triggers as before. */
/* clang-format off */
static const char schema_v10[] =
    "ALTER TABLE generation_jobs ADD COLUMN counted INTEGER;"
    "DROP TRIGGER IF EXISTS generation_jobs_ai;"
    "CREATE TRIGGER generation_jobs_ai AFTER INSERT ON generation_jobs WHEN NEW.counted IS NULL"
    " BEGIN"
    "  UPDATE users SET"
    "    reserved = reserved + IIF(NEW.status IN ('queued','in_progress'),"
    "      NEW.credits_reserved, 0),"
    "    queued = queued + (NEW.status = 'queued') WHERE name = NEW.user_id;"
    "  UPDATE job_totals SET jobs = jobs + 1, gpu_seconds = gpu_seconds + NEW.gpu_seconds,"
    "    credits_charged = credits_charged + NEW.credits_charged WHERE status = NEW.status;"
    "END;"
    "DROP TRIGGER IF EXISTS generation_jobs_stored_ai;"
    "CREATE TRIGGER generation_jobs_stored_ai AFTER INSERT ON generation_jobs"
    "  WHEN NEW.counted IS NULL BEGIN"
    "  UPDATE users SET stored = stored + 1 WHERE name = NEW.user_id; END;"
    "DROP TRIGGER IF EXISTS events_job_ai;"
    "CREATE TRIGGER events_job_ai AFTER INSERT ON generation_jobs"
    "  WHEN NEW.status <> 'pending' AND NEW.counted IS NULL BEGIN " EVENTS_INSERT EVENTS_NOW_MS
    ", 'job', NEW.user_id, NEW.id, json_object('id', NEW.id, 'status', NEW.status, 'tier',"
    "  NEW.tier, 'attempts', NEW.attempts, 'error_message', NEW.error_message)); END;";
/* clang-format on */

/* Version 11: no list of three or more constants in what a job's write evaluates (issue 12, (a)
 * and (b)). SQLite (3.40) codes `x IN ('a','b','c')` outside a WHERE clause it plans as a
 * membership test of a new in-memory B-tree filled with the list, built again each time it
 * runs: the status CHECK of generation_jobs, the predicate of generation_jobs_ended (on every
 * insert, and on every update of status), the WHEN of webhooks_job_end (on every update of
 * status) and the state CHECK of webhooks (on every change of a webhook's state). Two per create
 * were about a third of the instructions a create cost in the writer (callgrind). Written as ORs of
 * equalities they are plain comparisons. The index and the trigger are made again here; the CHECKs,
 * which no ALTER TABLE changes, are rewritten in the schema table (relax_checks), the procedure
 * SQLite documents for a change that leaves every stored row as it is. ENDED_STATUS is also the
 * purge's filter, word for word: SQLite uses a partial index only for a query whose WHERE implies
 * the index's, and an IN list does not imply an OR of equalities. */
#define ENDED_STATUS(c) "(" c " = 'completed' OR " c " = 'failed' OR " c " = 'canceled')"
#define STATUS_CHECK_V2                                                                            \
    "status IN     ('pending','queued','in_progress','completed','failed','canceled')"
#define STATUS_CHECK_V11                                                                           \
    "status = 'pending' OR status = 'queued' OR status = 'in_progress' OR status = 'completed'"    \
    " OR status = 'failed' OR status = 'canceled'"
#define STATE_CHECK_V8 "state IN    ('waiting','pending','delivered','failed')"
#define STATE_CHECK_V11                                                                            \
    "state = 'waiting' OR state = 'pending' OR state = 'delivered' OR state = 'failed'"
/* clang-format off */
static const char schema_v11[] =
    "DROP INDEX generation_jobs_ended;"
    "CREATE INDEX generation_jobs_ended ON generation_jobs(completed_at)"
    "  WHERE " ENDED_STATUS("status") ";"
    "DROP TRIGGER webhooks_job_end;"
    "CREATE TRIGGER webhooks_job_end AFTER UPDATE OF status ON generation_jobs"
    "  WHEN " ENDED_STATUS("NEW.status") " AND OLD.status IS NOT NEW.status"
    "  BEGIN UPDATE webhooks SET state = 'pending', next_at = " EVENTS_NOW_MS ", ended_at = "
    EVENTS_NOW_MS " WHERE job_id = NEW.id AND state = 'waiting'; END;";
/* clang-format on */

/* Version 12: generation_jobs_completed dropped, as PostgreSQL's version 13 dropped its own. The
 * usage query, the only read that searched it, searches generation_jobs_ended, whose predicate
 * `status = 'completed'` implies since version 11 (test_query_plans); a completed job writes one
 * index entry fewer. */
static const char schema_v12[] = "DROP INDEX IF EXISTS generation_jobs_completed;";

static const char *const migrations[SCHEMA_VERSION] = {
    schema_v1, schema_v2, schema_v3, schema_v4,  schema_v5,  schema_v6,
    schema_v7, schema_v8, schema_v9, schema_v10, schema_v11, schema_v12};

/* The webhooks columns read by webhook_cols, in this order, of table t ("" or "webhooks."). */
#define WEBHOOK_COLS_OF(t)                                                                         \
    t "job_id, " t "url, " t "state, " t "attempts, COALESCE(" t "next_at, 0), COALESCE(" t        \
      "ended_at, 0), COALESCE(" t "delivered_at, 0), COALESCE(" t "last_error, '')"
#define WEBHOOK_COLS WEBHOOK_COLS_OF("")
#define WEBHOOK_NCOLS 8 /* columns in WEBHOOK_COLS */

/* The users columns read by user_cols, in this order, of table t ("" or "u."). */
#define USER_COLS_OF(t)                                                                            \
    t "name, " t "tier, " t "balance, " t "created_at, " t "reserved, " t "queued, COALESCE(" t    \
      "disabled_at, 0), " t "stored"

/* The job columns read by row_to_job, in this order. */
#define JOB_COLS                                                                                   \
    "id, user_id, tier, status, prompt, negative_prompt, model, width, height, steps, "            \
    "cfg_scale, seed, seq, created_at, started_at, completed_at, attempts, releases, image_url, "  \
    "error_message, gpu_seconds, credits_reserved, credits_charged, lease_id, worker_id, "         \
    "lease_expires_at, progress_step, progress_steps"

#define JOB_NCOLS 28 /* columns in JOB_COLS */

/* The front of a job's tier queue, for an UPDATE of generation_jobs: one before the smallest
 * queued position, or the job's own position when nothing is queued. */
#define FRONT_POS                                                                                  \
    "COALESCE((SELECT MIN(q.queue_pos) FROM generation_jobs q WHERE q.tier = "                     \
    "generation_jobs.tier AND q.status IN ('queued','in_progress') AND q.status = 'queued') - 1, " \
    "queue_pos)"

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_PING,
    S_USER_GET,
    S_USER_INSERT,
    S_USER_SET_BALANCE,
    S_USER_SET_DISABLED,
    S_LEDGER_INSERT,
    S_LEDGER_LIST,
    S_JOB_GET,
    S_JOB_BY_IDEM,
    S_JOB_NEXT_SEQ,
    S_JOB_INSERT,
    S_JOB_LIST,
    S_JOB_LIST_STATUS,
    S_JOB_CANCEL,
    S_JOB_PICK_USER,
    S_JOB_HEAD,
    S_JOB_CLAIM,
    S_JOB_EXTEND,
    S_JOB_STATUS,
    S_JOB_COMPLETE,
    S_JOB_REQUEUE,
    S_JOB_FAIL,
    S_REAP_LIST,
    S_WORKER_UPSERT,
    S_WORKER_TOUCH,
    S_WORKER_DELETE,
    S_WORKER_EXPIRE,
    S_STATS_JOBS,
    S_STATS_WORKERS,
    S_COUNTS,
    S_ADOPT_READ,
    S_ADOPT,
    S_LIFE_REPORT,
    S_LIFE_LIST,
    S_WORKER_LIST,
    S_WORKER_LEASES,
    S_USAGE,
    S_PURGE_LIST,
    S_PURGE_LEDGER,
    S_PURGE_JOB,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_WEBHOOK_INSERT,
    S_EVENT_CREATED,
    S_USER_ADD_CREATES,
    S_WEBHOOK_GET,
    S_WEBHOOK_HAS,
    S_USER_JOB_GET,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_PING] = "SELECT COUNT(*) FROM schema_version",
    [S_USER_GET] = "SELECT " USER_COLS_OF("") " FROM users WHERE name = ?1",
    [S_PURGE_LIST] = "SELECT id FROM generation_jobs WHERE " ENDED_STATUS(
        "status") " AND completed_at < ?1 ORDER BY completed_at LIMIT ?2",
    [S_PURGE_LEDGER] = "UPDATE credit_ledger SET job_id = NULL WHERE job_id = ?1",
    [S_PURGE_JOB] = "DELETE FROM generation_jobs WHERE id = ?1",
    /* one create of a group commit (create_one) */
    [S_SAVEPOINT] = "SAVEPOINT create_one",
    [S_RELEASE] = "RELEASE create_one",
    [S_ROLLBACK_TO] = "ROLLBACK TO create_one",
    [S_WEBHOOK_INSERT] = "INSERT INTO webhooks(job_id, url) VALUES (?1, ?2)",
    /* what events_job_ai writes for a job inserted queued (schema_v10: counted rows) */
    [S_EVENT_CREATED] = EVENTS_INSERT EVENTS_NOW_MS
    ", 'job', ?1, ?2, json_object('id', ?2,"
    " 'status', 'queued', 'tier', ?3, 'attempts', 0, 'error_message', NULL))",
    /* what generation_jobs_ai and generation_jobs_stored_ai add for ?3 queued jobs reserving ?2 */
    [S_USER_ADD_CREATES] = "UPDATE users SET reserved = reserved + ?2, queued = queued + ?3,"
                           " stored = stored + ?3 WHERE name = ?1",
    [S_WEBHOOK_GET] = "SELECT " WEBHOOK_COLS " FROM webhooks WHERE job_id = ?1",
    [S_WEBHOOK_HAS] = "SELECT 1 FROM webhooks WHERE job_id = ?1",
    /* the user ?1 and its job ?2 in one read: JOB_COLS, WEBHOOK_COLS (NULLs without the job or
     * its webhook), then USER_COLS; no row without the user */
    [S_USER_JOB_GET] = "SELECT j.*, " WEBHOOK_COLS_OF("w.") ", " USER_COLS_OF(
        "u.") " FROM users u LEFT JOIN (SELECT " JOB_COLS " FROM generation_jobs WHERE id = ?2) j"
              " ON j.user_id = u.name LEFT JOIN webhooks w ON w.job_id = j.id WHERE u.name = ?1",
    [S_USER_INSERT] = "INSERT INTO users(name, tier, balance, created_at) VALUES (?1, ?2, ?3, ?4)",
    [S_USER_SET_BALANCE] = "UPDATE users SET balance = ?2 WHERE name = ?1",
    [S_USER_SET_DISABLED] = "UPDATE users SET disabled_at = IIF(?2, COALESCE(disabled_at, ?3),"
                            " NULL) WHERE name = ?1",
    [S_LEDGER_INSERT] = "INSERT INTO credit_ledger(user_id, job_id, kind, amount, balance_after,"
                        " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_LEDGER_LIST] = "SELECT id, kind, job_id, amount, balance_after, created_at"
                      " FROM credit_ledger WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2",
    [S_JOB_GET] = "SELECT " JOB_COLS " FROM generation_jobs WHERE id = ?1",
    [S_JOB_BY_IDEM] = "SELECT " JOB_COLS " FROM generation_jobs WHERE user_id = ?1"
                      " AND idem_key = ?2 AND idem_key IS NOT NULL",
    [S_JOB_NEXT_SEQ] = "SELECT COALESCE(MAX(seq), 0) + 1 FROM generation_jobs",
    [S_JOB_INSERT] = "INSERT INTO generation_jobs(id, user_id, status, prompt, negative_prompt,"
                     " width, height, steps, cfg_scale, seed, seq, model, tier, created_at,"
                     " credits_reserved, queue_pos, idem_key, counted) VALUES (?1, ?2, 'queued',"
                     " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?10, ?15, 1)",
    [S_JOB_LIST] = "SELECT " JOB_COLS " FROM generation_jobs WHERE user_id = ?1 AND seq < ?2"
                   " ORDER BY seq DESC LIMIT ?4",
    [S_JOB_LIST_STATUS] = "SELECT " JOB_COLS " FROM generation_jobs WHERE user_id = ?1"
                          " AND status = ?3 AND seq < ?2 ORDER BY seq DESC LIMIT ?4",
    [S_JOB_CANCEL] = "UPDATE generation_jobs SET status = 'canceled', completed_at = ?2,"
                     " lease_id = NULL, lease_expires_at = NULL, credits_reserved = 0"
                     " WHERE id = ?1",
    /* Fair share: walk the distinct users with queued jobs in the tier through the index
     * (a loose index scan, one seek per user, not one step per job), and pick the one with
     * the fewest running jobs in the tier, ties to the user whose head job is first. */
    [S_JOB_PICK_USER] =
        "WITH RECURSIVE u(name) AS ("
        " SELECT (SELECT MIN(user_id) FROM generation_jobs WHERE tier = ?1 AND status = 'queued')"
        " UNION ALL"
        " SELECT (SELECT MIN(user_id) FROM generation_jobs WHERE tier = ?1 AND status = 'queued'"
        "   AND user_id > u.name) FROM u WHERE u.name IS NOT NULL)"
        " SELECT u.name,"
        "  (SELECT COUNT(*) FROM generation_jobs r WHERE r.tier = ?1 AND r.user_id = u.name"
        "    AND r.status = 'in_progress') AS running,"
        "  (SELECT MIN(h.queue_pos) FROM generation_jobs h WHERE h.tier = ?1"
        "    AND h.status = 'queued' AND h.user_id = u.name) AS head"
        " FROM u WHERE u.name IS NOT NULL ORDER BY running, head LIMIT 1",
    [S_JOB_HEAD] = "SELECT id FROM generation_jobs WHERE tier = ?1 AND status = 'queued'"
                   " AND user_id = ?2 ORDER BY queue_pos LIMIT 1",
    [S_JOB_CLAIM] = "UPDATE generation_jobs SET status = 'in_progress', lease_id = ?2,"
                    " worker_id = ?3, lease_expires_at = ?4, attempts = attempts + 1,"
                    " started_at = COALESCE(started_at, ?5), progress_step = NULL,"
                    " progress_steps = NULL WHERE id = ?1 AND status = 'queued'",
    [S_JOB_EXTEND] = "UPDATE generation_jobs SET lease_expires_at = ?3,"
                     " progress_step = CASE WHEN ?5 > 0 THEN ?4 ELSE progress_step END,"
                     " progress_steps = CASE WHEN ?5 > 0 THEN ?5 ELSE progress_steps END"
                     " WHERE id = ?1 AND status = 'in_progress' AND lease_id = ?2"
                     " RETURNING worker_id",
    [S_JOB_STATUS] = "SELECT status FROM generation_jobs WHERE id = ?1",
    [S_JOB_COMPLETE] =
        "UPDATE generation_jobs SET status = 'completed', image_url = ?2, error_message = NULL,"
        " gpu_seconds = ?3, completed_at = ?4, credits_charged = ?5,"
        " credits_reserved = 0, lease_expires_at = NULL WHERE id = ?1",
    /* ?2 attempts delta, ?3 releases delta, ?4 error message (NULL keeps the old one) */
    [S_JOB_REQUEUE] = "UPDATE generation_jobs SET status = 'queued', queue_pos = " FRONT_POS ","
                      " lease_id = NULL, worker_id = NULL, lease_expires_at = NULL,"
                      " attempts = MAX(attempts + ?2, 0), releases = releases + ?3,"
                      " error_message = COALESCE(?4, error_message) WHERE id = ?1",
    [S_JOB_FAIL] = "UPDATE generation_jobs SET status = 'failed', error_message = ?2,"
                   " completed_at = ?3, credits_reserved = 0, lease_expires_at = NULL"
                   " WHERE id = ?1",
    /* newest position first: each requeue goes to the front, so the oldest ends up first */
    [S_REAP_LIST] = "SELECT id, attempts FROM generation_jobs WHERE status = 'in_progress'"
                    " AND lease_expires_at < ?1 ORDER BY queue_pos DESC",
    [S_LIFE_REPORT] =
        "INSERT INTO worker_lifetimes(id, tier, instance_type, capacity_type, zone, gpus,"
        " started_at, loaded_at, last_seen, ended_at, busy_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
        " ?7, IIF(?8, ?7, NULL), ?7, IIF(?9, ?7, NULL), ?10) ON CONFLICT(id) DO UPDATE SET"
        " tier = excluded.tier, instance_type = excluded.instance_type,"
        " capacity_type = excluded.capacity_type, zone = excluded.zone, gpus = excluded.gpus,"
        " loaded_at = COALESCE(worker_lifetimes.loaded_at, excluded.loaded_at),"
        " last_seen = MAX(worker_lifetimes.last_seen, excluded.last_seen),"
        " ended_at = COALESCE(worker_lifetimes.ended_at, excluded.ended_at),"
        " busy_ms = MAX(worker_lifetimes.busy_ms, excluded.busy_ms)",
    [S_WORKER_LIST] = "SELECT id, tier, state, last_seen FROM workers ORDER BY id",
    /* the running jobs (through generation_jobs_reap, of the running jobs alone) of a worker */
    [S_WORKER_LEASES] = "SELECT id, lease_id FROM generation_jobs WHERE status = 'in_progress'"
                        " AND worker_id = ?1 ORDER BY id",
    [S_LIFE_LIST] = "SELECT id, tier, instance_type, capacity_type, zone, gpus, started_at,"
                    " COALESCE(loaded_at, 0), last_seen, COALESCE(ended_at, 0), busy_ms"
                    " FROM worker_lifetimes WHERE started_at < ?2"
                    " AND COALESCE(ended_at, last_seen + ?3) >= ?1 ORDER BY started_at, id"
                    " LIMIT ?4",
    [S_USAGE] = "SELECT user_id, tier, completed_at / 86400000 AS day, COUNT(*), SUM(gpu_seconds)"
                " FROM generation_jobs WHERE status = 'completed' AND completed_at >= ?1"
                " AND completed_at < ?2 GROUP BY user_id, tier, day ORDER BY day, user_id, tier",
    [S_WORKER_UPSERT] = "INSERT INTO workers(id, tier, state, last_seen) VALUES (?1, ?2, ?3, ?4)"
                        " ON CONFLICT(id) DO UPDATE SET tier = excluded.tier,"
                        " state = excluded.state, last_seen = excluded.last_seen",
    [S_WORKER_TOUCH] = "UPDATE workers SET last_seen = ?2 WHERE id = ?1",
    [S_WORKER_DELETE] = "DELETE FROM workers WHERE id = ?1",
    [S_WORKER_EXPIRE] = "DELETE FROM workers WHERE last_seen < ?1",
    [S_STATS_JOBS] = "SELECT COALESCE(SUM(status = 'queued'), 0),"
                     " COALESCE(SUM(status = 'in_progress'), 0) FROM generation_jobs"
                     " WHERE tier = ?1 AND status IN ('queued','in_progress')",
    [S_STATS_WORKERS] = "SELECT COUNT(*), COALESCE(SUM(state = 'idle'), 0) FROM workers"
                        " WHERE tier = ?1 AND last_seen >= ?2",
    [S_COUNTS] = "SELECT status, jobs, gpu_seconds, credits_charged FROM job_totals",
    /* a seed row: its request columns with the defaults of job.h; seq NULL until adopted */
    [S_ADOPT_READ] = "SELECT user_id, seq IS NOT NULL OR status NOT IN ('pending','queued'),"
                     " COALESCE(width, 512),"
                     " COALESCE(height, 512), COALESCE(steps, 20), COALESCE(cfg_scale, 7.0),"
                     " COALESCE(model, 'sd15') FROM generation_jobs WHERE id = ?1",
    [S_ADOPT] = "UPDATE generation_jobs SET status = 'queued',"
                " negative_prompt = COALESCE(negative_prompt, ''), width = COALESCE(width, 512),"
                " height = COALESCE(height, 512), steps = COALESCE(steps, 20),"
                " cfg_scale = COALESCE(cfg_scale, 7.0), seed = COALESCE(seed, ?2), seq = ?3,"
                " queue_pos = ?3, model = COALESCE(model, 'sd15'), tier = ?4, created_at = ?5,"
                " credits_reserved = ?6, attempts = 0, releases = 0, started_at = NULL,"
                " completed_at = NULL, lease_id = NULL, worker_id = NULL,"
                " lease_expires_at = NULL WHERE id = ?1 AND seq IS NULL",
};

/* One job creation waiting for the group commit (see sqlite_job_create): its arguments and
 * outcome (c), and how its thread waits. */
typedef struct create_req {
    store_create_t *c;
    bool done;
    bool lead;         /* this request's thread runs the next batch */
    pthread_cond_t cv; /* signalled when done or lead turns true */
    struct create_req *next;
} create_req_t;

typedef struct sqlite_store {
    store_t base; /* first: a store_t * is a sqlite_store_t * */
    sqlite3 *db;
    pthread_mutex_t mu;
    char *path;
    sqlite3_stmt *stmt[S_COUNT];
    bool in_tx;
    /* Group commit of creates: concurrent submissions share one transaction. */
    pthread_mutex_t gc_mu;
    create_req_t *gc_head, *gc_tail;
    bool gc_leader;
    /* Read connections (reader_take): job, user and webhook reads run on one of these, in
     * parallel with each other and with the writer (WAL readers see the last commit and never
     * wait for a write), instead of queueing for mu behind a group commit and its fsync. A
     * reader is a sqlite_store_t of its own (db, statements) whose owner is the store. */
    pthread_mutex_t rd_mu;
    pthread_cond_t rd_cv;
    struct sqlite_store *rd_free; /* idle readers, linked by rd_next */
    struct sqlite_store *rd_next;
    struct sqlite_store *owner; /* a reader's store; NULL for the store itself */
    int rd_open;                /* readers opened */
} sqlite_store_t;

/* At most this many read connections per store (each has its own page cache); a read finding
 * them all busy waits for one. */
#define READERS_MAX 8

static const struct store_ops sqlite_ops;

static sqlite_store_t *sq(store_t *s)
{
    return (sqlite_store_t *)s;
}

/* Records the message of a STORE_ERR for this thread and returns STORE_ERR. */

static int fail_db(sqlite_store_t *s, const char *what)
{
    return store_fail("sqlite %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

/* The prepared statement id, reset and with no bindings; NULL on error (message set). */
static sqlite3_stmt *st(sqlite_store_t *s, enum stmt_id id)
{
    sqlite3_stmt *stmt = s->stmt[id];
    if (stmt) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        return stmt;
    }
    if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) !=
        SQLITE_OK) {
        const char *msg = sqlite3_errmsg(s->db);
        store_fail("sqlite %s: %s%s", s->path, msg,
                   strstr(msg, "no such") ? " (run `pingvas migrate` to create the schema)" : "");
        return NULL;
    }
    s->stmt[id] = stmt;
    return stmt;
}

/* Resets every statement so no read snapshot outlives an operation. */
static void reset_all(sqlite_store_t *s)
{
    for (int i = 0; i < S_COUNT; i++)
        if (s->stmt[i])
            sqlite3_reset(s->stmt[i]);
}

static void bind_text(sqlite3_stmt *stmt, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(stmt, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, i);
}

/* Steps a statement that returns no rows (or ignores them) to the end. */
static int run(sqlite_store_t *s, sqlite3_stmt *stmt, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        return fail_db(s, what);
    sqlite3_reset(stmt);
    return STORE_OK;
}

/* One step of a query: 1 for a row, 0 for done, STORE_ERR on error. */
static int step_row(sqlite_store_t *s, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return fail_db(s, what);
}

static void lock(sqlite_store_t *s)
{
    pthread_mutex_lock(&s->mu);
}

static int begin(sqlite_store_t *s)
{
    sqlite3_stmt *stmt = st(s, S_BEGIN);
    if (!stmt)
        return STORE_ERR;
    if (run(s, stmt, "begin") != STORE_OK)
        return STORE_ERR;
    s->in_tx = true;
    return STORE_OK;
}

static int commit(sqlite_store_t *s)
{
    reset_all(s);
    sqlite3_stmt *stmt = st(s, S_COMMIT);
    if (!stmt)
        return STORE_ERR;
    if (run(s, stmt, "commit") != STORE_OK)
        return STORE_ERR;
    s->in_tx = false;
    return STORE_OK;
}

/* Ends an operation: an open transaction is committed when rc is STORE_OK and rolled back
 * otherwise (nothing is written on a refusal); statements are reset. finish() also releases the
 * lock. Returns rc, or STORE_ERR when the commit failed. */
static int end_tx(sqlite_store_t *s, int rc)
{
    if (s->in_tx && rc == STORE_OK && commit(s) != STORE_OK)
        rc = STORE_ERR;
    if (s->in_tx) {
        reset_all(s);
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL); /* keeps the first error */
        s->in_tx = false;
    }
    reset_all(s);
    return rc;
}

static int finish(sqlite_store_t *s, int rc)
{
    rc = end_tx(s, rc);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static char *col_strdup(sqlite3_stmt *stmt, int i)
{
    const unsigned char *v = sqlite3_column_text(stmt, i);
    return v ? strdup((const char *)v) : NULL;
}

/* Copies a text column into dst (size bytes, truncated; "" for NULL), as snprintf "%s" would. */
static void col_copy(sqlite3_stmt *stmt, int i, char *dst, size_t size)
{
    const unsigned char *v = sqlite3_column_text(stmt, i);
    size_t n = v ? strnlen((const char *)v, size - 1) : 0;
    memcpy(dst, v ? (const char *)v : "", n);
    dst[n] = '\0';
}

/* Fills j (zeroed first) from a row of JOB_COLS. STORE_ERR on allocation failure (j cleared). */
static int row_to_job(sqlite3_stmt *stmt, job_t *j)
{
    memset(j, 0, sizeof *j);
    col_copy(stmt, 0, j->id, sizeof j->id);
    col_copy(stmt, 1, j->user, sizeof j->user);
    col_copy(stmt, 2, j->tier, sizeof j->tier);
    j->status = job_status_stored((const char *)sqlite3_column_text(stmt, 3));
    j->params.prompt = col_strdup(stmt, 4);
    j->params.negative_prompt = col_strdup(stmt, 5);
    if (!j->params.negative_prompt)
        j->params.negative_prompt = strdup("");
    col_copy(stmt, 6, j->params.model, sizeof j->params.model);
    j->params.width = sqlite3_column_int(stmt, 7);
    j->params.height = sqlite3_column_int(stmt, 8);
    j->params.steps = sqlite3_column_int(stmt, 9);
    j->params.cfg_scale = sqlite3_column_double(stmt, 10);
    j->params.seed = sqlite3_column_int64(stmt, 11);
    j->seq = sqlite3_column_int64(stmt, 12);
    j->created_at = sqlite3_column_int64(stmt, 13);
    j->started_at = sqlite3_column_int64(stmt, 14);
    j->completed_at = sqlite3_column_int64(stmt, 15);
    j->attempts = sqlite3_column_int(stmt, 16);
    j->releases = sqlite3_column_int(stmt, 17);
    j->image_key = col_strdup(stmt, 18);
    j->error_message = col_strdup(stmt, 19);
    j->gpu_seconds = sqlite3_column_double(stmt, 20);
    j->credits_reserved = sqlite3_column_int64(stmt, 21);
    j->credits_charged = sqlite3_column_int64(stmt, 22);
    if (j->status == JOB_IN_PROGRESS)
        col_copy(stmt, 23, j->lease_id, sizeof j->lease_id);
    col_copy(stmt, 24, j->worker_id, sizeof j->worker_id);
    j->lease_expires_at = sqlite3_column_int64(stmt, 25);
    j->progress_step = sqlite3_column_int(stmt, 26);
    j->progress_steps = sqlite3_column_int(stmt, 27);
    bool oom = (sqlite3_column_type(stmt, 4) != SQLITE_NULL && !j->params.prompt) ||
               !j->params.negative_prompt ||
               (sqlite3_column_type(stmt, 18) != SQLITE_NULL && !j->image_key) ||
               (sqlite3_column_type(stmt, 19) != SQLITE_NULL && !j->error_message);
    if (!j->params.prompt && !oom) {
        j->params.prompt = strdup("");
        oom = !j->params.prompt;
    }
    if (oom) {
        job_clear(j);
        return store_fail("sqlite: out of memory reading a job");
    }
    return STORE_OK;
}

/* Loads job id into out (may be NULL: only checks it exists). STORE_NOT_FOUND if absent. The
 * raw lease_id column (also for final jobs) goes to lease if not NULL (JOB_ID_SIZE bytes). */
static int load_job(sqlite_store_t *s, const char *id, job_t *out, char *lease)
{
    int rc;
    sqlite3_stmt *stmt = st(s, S_JOB_GET);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    rc = step_row(s, stmt, "load job");
    if (rc <= 0) {
        rc = rc == 0 ? STORE_NOT_FOUND : rc;
        goto out;
    }
    if (lease)
        col_copy(stmt, 23, lease, JOB_ID_SIZE);
    rc = out ? row_to_job(stmt, out) : STORE_OK;
out:
    sqlite3_reset(stmt);
    return rc;
}

/* out (cleared first) reloaded after the job id ended in the open transaction, with
 * has_webhook set when the job has a webhook delivery (job.h). */
static int reload_ended(sqlite_store_t *s, const char *id, job_t *out)
{
    job_clear(out);
    int rc = load_job(s, id, out, NULL);
    sqlite3_stmt *stmt = rc == STORE_OK ? st(s, S_WEBHOOK_HAS) : NULL;
    if (!stmt)
        return rc == STORE_OK ? STORE_ERR : rc;
    bind_text(stmt, 1, id);
    int has = step_row(s, stmt, "looking up a webhook");
    sqlite3_reset(stmt);
    if (has < 0)
        return has;
    out->has_webhook = has == 1;
    return STORE_OK;
}

/* ---- open, close, schema ---- */

static int exec_sql(sqlite_store_t *s, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = STORE_OK;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        rc = store_fail("sqlite %s: %s: %s", s->path, what, msg ? msg : sqlite3_errmsg(s->db));
    }
    sqlite3_free(msg);
    return rc;
}

static void sqlite_close(store_t *base)
{
    sqlite_store_t *s = sq(base);
    if (!s)
        return;
    for (sqlite_store_t *r = s->rd_free, *next; r; r = next) {
        next = r->rd_next;
        sqlite_close(&r->base);
    }
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    sqlite3_close(s->db);
    if (!s->owner) {
        pthread_mutex_destroy(&s->mu);
        pthread_mutex_destroy(&s->gc_mu);
        pthread_mutex_destroy(&s->rd_mu);
        pthread_cond_destroy(&s->rd_cv);
        free(s->path);
    }
    free(s);
}

/* A new read connection of s, or NULL (the read then runs on the store's own connection). */
static sqlite_store_t *reader_open(sqlite_store_t *s)
{
    sqlite_store_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->base.ops = s->base.ops;
    r->owner = s;
    r->path = s->path;
    if (sqlite3_open_v2(s->path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(r->db, 5000) != SQLITE_OK ||
        sqlite3_exec(r->db, "PRAGMA query_only = ON", NULL, NULL, NULL) != SQLITE_OK) {
        log_warn("event=sqlite_reader_open_failed path=%s err=\"%s\"", s->path,
                 r->db ? sqlite3_errmsg(r->db) : "out of memory");
        sqlite_close(&r->base);
        return NULL;
    }
    return r;
}

/* An idle read connection of s for the calling thread (give it back with reader_put), or NULL
 * when s cannot have one (":memory:", or opening one failed). */
static sqlite_store_t *reader_take(sqlite_store_t *s)
{
    if (strcmp(s->path, ":memory:") == 0)
        return NULL;
    pthread_mutex_lock(&s->rd_mu);
    while (!s->rd_free && s->rd_open >= READERS_MAX)
        pthread_cond_wait(&s->rd_cv, &s->rd_mu);
    sqlite_store_t *r = s->rd_free;
    if (r) {
        s->rd_free = r->rd_next;
        pthread_mutex_unlock(&s->rd_mu);
        return r;
    }
    s->rd_open++;
    pthread_mutex_unlock(&s->rd_mu);
    r = reader_open(s);
    if (!r) {
        pthread_mutex_lock(&s->rd_mu);
        s->rd_open--;
        pthread_cond_signal(&s->rd_cv);
        pthread_mutex_unlock(&s->rd_mu);
    }
    return r;
}

static void reader_put(sqlite_store_t *s, sqlite_store_t *r)
{
    pthread_mutex_lock(&s->rd_mu);
    r->rd_next = s->rd_free;
    s->rd_free = r;
    pthread_cond_signal(&s->rd_cv);
    pthread_mutex_unlock(&s->rd_mu);
}

/* Runs the read fn(connection, arg) on a read connection of s, or on s's own under its lock when
 * there is none. Returns what fn returned. */
static int read_op(sqlite_store_t *s, int (*fn)(sqlite_store_t *db, void *arg), void *arg)
{
    sqlite_store_t *r = reader_take(s);
    if (!r) {
        lock(s);
        return finish(s, fn(s, arg));
    }
    int rc = fn(r, arg);
    reset_all(r);
    reader_put(s, r);
    return rc;
}

/* Creates path with mode 0600, or takes group and other permissions off an existing one (also its
 * -wal and -shm files, which SQLite creates with the database file's mode): the database holds
 * prompts, balances and users, for the server's user alone (issue 16, finding 8). Failures are
 * left for sqlite3_open_v2 to report. */
static void make_private(const char *path)
{
    static const char *suffix[] = {"", "-wal", "-shm"};
    char p[4096];
    if (strcmp(path, ":memory:") == 0)
        return;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        int n = snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        if (n < 0 || (size_t)n >= sizeof p)
            return;
        int fd = open(p, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (i == 0 ? O_CREAT : 0), 0600);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) &&
            fchmod(fd, st.st_mode & 0700) == 0)
            log_warn("event=sqlite_file_made_private path=%s was=%03o", p,
                     (unsigned)(st.st_mode & 0777));
        close(fd);
    }
}

/* Opens the database file at path ("file.db" or "file.db?synchronous=full|normal"). The parent
 * directory must exist. NULL on error with a message naming the path in err. Caller owns the
 * result (store_close). */
store_t *store_sqlite_open(const char *path, char *err, size_t errlen)
{
    sqlite_store_t *s = NULL;
    const char *sync = "FULL"; /* durable by default; see the top of this file */
    const char *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    store_t *result = NULL;

    if (plen == 0) {
        snprintf(err, errlen, "DATABASE_URL: empty SQLite path (use sqlite:///path/to/file.db)");
        goto out;
    }
    if (q) {
        if (strcasecmp(q + 1, "synchronous=full") == 0) {
            sync = "FULL";
        } else if (strcasecmp(q + 1, "synchronous=normal") == 0) {
            sync = "NORMAL";
        } else {
            snprintf(err, errlen,
                     "DATABASE_URL: unknown SQLite option '%s' (supported: synchronous=full, "
                     "synchronous=normal)",
                     q + 1);
            goto out;
        }
    }
    s = calloc(1, sizeof *s);
    if (!s || !(s->path = strndup(path, plen))) {
        snprintf(err, errlen, "out of memory opening the SQLite store");
        goto out;
    }
    sqlmem_setup();
    s->base.ops = &sqlite_ops;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->gc_mu, NULL);
    pthread_mutex_init(&s->rd_mu, NULL);
    pthread_cond_init(&s->rd_cv, NULL);
    make_private(s->path);
    int orc = sqlite3_open_v2(
        s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (orc != SQLITE_OK) {
        snprintf(err, errlen,
                 "cannot open SQLite database '%s': %s (does the directory exist and is it "
                 "writable?)",
                 s->path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(orc));
        goto out;
    }
    sqlite3_busy_timeout(s->db, 5000);
    char pragmas[160];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s; PRAGMA foreign_keys = ON;"
             " PRAGMA temp_store = MEMORY;",
             sync);
    if (exec_sql(s, pragmas, "setting up") != STORE_OK) {
        snprintf(err, errlen, "cannot open SQLite database '%s': %s", s->path, store_fail_text());
        goto out;
    }
    result = &s->base;
    s = NULL;
out:
    if (s)
        sqlite_close(&s->base);
    return result;
}

/* Version 11's CHECKs (see schema_v11), inside the migration's transaction: the tables' text
 * in sqlite_schema rewritten and the schema version counted up, as SQLite's documentation of
 * ALTER TABLE describes for changes that touch no stored row ("Making Other Kinds Of Table
 * Schema Changes"); every row already satisfies the new CHECKs, which accept the same values.
 * This connection reloads the schema after the commit (sqlite_migrate); others see the new
 * version. A table whose text is not the one pingvas wrote keeps its CHECK as it was. */
static int relax_checks(sqlite_store_t *s)
{
    static const char *const edits[][3] = {{"generation_jobs", STATUS_CHECK_V2, STATUS_CHECK_V11},
                                           {"webhooks", STATE_CHECK_V8, STATE_CHECK_V11}};
    sqlite3_stmt *stmt = NULL;
    int rc = STORE_OK, version = 0;
    if (sqlite3_prepare_v2(s->db, "PRAGMA schema_version", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW)
        rc = fail_db(s, "reading the schema version");
    else
        version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (rc == STORE_OK)
        rc = exec_sql(s, "PRAGMA writable_schema = ON", "rewriting a check");
    if (rc == STORE_OK && sqlite3_prepare_v2(s->db,
                                             "UPDATE sqlite_schema SET sql = replace(sql, ?2, ?3)"
                                             " WHERE type = 'table' AND name = ?1",
                                             -1, &stmt, NULL) != SQLITE_OK)
        rc = fail_db(s, "rewriting a check");
    for (size_t i = 0; rc == STORE_OK && i < sizeof edits / sizeof edits[0]; i++) {
        for (int k = 0; k < 3; k++)
            sqlite3_bind_text(stmt, k + 1, edits[i][k], -1, SQLITE_STATIC);
        rc = run(s, stmt, "rewriting a check");
        sqlite3_reset(stmt);
    }
    sqlite3_finalize(stmt);
    if (rc == STORE_OK) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA schema_version = %d", version + 1);
        rc = exec_sql(s, sql, "counting the schema version");
    }
    if (exec_sql(s, "PRAGMA writable_schema = OFF", "rewriting a check") != STORE_OK)
        rc = STORE_ERR;
    return rc;
}

/* Creates the schema or upgrades it to SCHEMA_VERSION, in one transaction. Idempotent.
 * Foreign keys are off during the migration (a table rebuild must not check or cascade half-way;
 * the pragma is a no-op inside a transaction, so it is set before BEGIN), checked with
 * foreign_key_check before COMMIT, and on again after it. */
static int sqlite_migrate(store_t *base)
{
    sqlite_store_t *s = sq(base);
    sqlite3_stmt *stmt = NULL;
    int rc, version = 0;
    lock(s);
    rc = exec_sql(s, "PRAGMA foreign_keys = OFF", "migrating");
    if (rc != STORE_OK)
        goto out;
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    rc = exec_sql(s, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                  "creating schema_version");
    if (rc != STORE_OK)
        goto out;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &stmt,
                           NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        rc = fail_db(s, "reading schema_version");
        goto out;
    }
    version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (version > SCHEMA_VERSION) {
        rc = store_fail("sqlite %s: schema version %d is newer than this pingvas (%d); upgrade "
                        "pingvas",
                        s->path, version, SCHEMA_VERSION);
        goto out;
    }
    for (int v = version + 1; v <= SCHEMA_VERSION; v++) {
        rc = v == 11 ? relax_checks(s) : STORE_OK;
        if (rc == STORE_OK)
            rc = exec_sql(s, migrations[v - 1], "migrating");
        if (rc != STORE_OK)
            goto out;
    }
    if (version < SCHEMA_VERSION) {
        if (sqlite3_prepare_v2(s->db, "INSERT INTO schema_version(version) VALUES (?1)", -1, &stmt,
                               NULL) != SQLITE_OK) {
            rc = fail_db(s, "recording schema_version");
            goto out;
        }
        sqlite3_bind_int(stmt, 1, SCHEMA_VERSION);
        rc = exec_sql(s, "DELETE FROM schema_version", "recording schema_version");
        if (rc == STORE_OK)
            rc = run(s, stmt, "recording schema_version");
        sqlite3_finalize(stmt);
        stmt = NULL;
        if (rc != STORE_OK)
            goto out;
        if (sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &stmt, NULL) != SQLITE_OK) {
            rc = fail_db(s, "checking foreign keys");
            goto out;
        }
        rc = step_row(s, stmt, "checking foreign keys");
        if (rc == 1)
            rc = store_fail("sqlite %s: migration left a foreign key violation in %s", s->path,
                            (const char *)sqlite3_column_text(stmt, 0));
    }
out:
    sqlite3_finalize(stmt);
    rc = end_tx(s, rc);
    /* this connection reads the schema again: relax_checks's CHECKs (a no-op otherwise) */
    if (version < SCHEMA_VERSION && exec_sql(s, "PRAGMA writable_schema = RESET", "migrating"))
        rc = STORE_ERR;
    if (exec_sql(s, "PRAGMA foreign_keys = ON", "migrating") != STORE_OK)
        rc = STORE_ERR;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int sqlite_ping(store_t *base)
{
    sqlite_store_t *s = sq(base);
    int rc;
    lock(s);
    sqlite3_stmt *stmt = st(s, S_PING);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    rc = step_row(s, stmt, "ping");
    rc = rc == 1 ? STORE_OK : rc == 0 ? fail_db(s, "ping") : rc;
out:
    return finish(s, rc);
}

/* ---- users and credits ---- */

/* The USER_COLS_OF columns of stmt's row from column i into u (and queued, when not NULL). */
static void user_cols(sqlite3_stmt *stmt, int i, user_t *u, int64_t *queued)
{
    col_copy(stmt, i, u->name, sizeof u->name);
    col_copy(stmt, i + 1, u->tier, sizeof u->tier);
    u->balance = sqlite3_column_int64(stmt, i + 2);
    u->created_at = sqlite3_column_int64(stmt, i + 3);
    u->reserved = sqlite3_column_int64(stmt, i + 4);
    if (queued)
        *queued = sqlite3_column_int64(stmt, i + 5);
    u->disabled_at = sqlite3_column_int64(stmt, i + 6);
    u->stored = sqlite3_column_int64(stmt, i + 7);
}

/* Reads a user's row; reserved and the queued count (queued may be NULL) are the sums over
 * the user's live jobs, kept by triggers. STORE_NOT_FOUND if absent. */
static int read_user(sqlite_store_t *s, const char *name, user_t *u, int64_t *queued)
{
    int rc;
    memset(u, 0, sizeof *u);
    sqlite3_stmt *stmt = st(s, S_USER_GET);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, name);
    rc = step_row(s, stmt, "reading user");
    if (rc == 1) {
        user_cols(stmt, 0, u, queued);
        rc = STORE_OK;
    } else if (rc == 0) {
        rc = STORE_NOT_FOUND;
    }
    sqlite3_reset(stmt);
    return rc;
}

static int set_balance(sqlite_store_t *s, const char *name, int64_t balance)
{
    sqlite3_stmt *stmt = st(s, S_USER_SET_BALANCE);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, name);
    sqlite3_bind_int64(stmt, 2, balance);
    return run(s, stmt, "updating balance");
}

static int add_ledger(sqlite_store_t *s, const char *user, const char *job_id, const char *kind,
                      int64_t amount, int64_t balance_after, int64_t now)
{
    sqlite3_stmt *stmt = st(s, S_LEDGER_INSERT);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, user);
    bind_text(stmt, 2, job_id);
    bind_text(stmt, 3, kind);
    sqlite3_bind_int64(stmt, 4, amount);
    sqlite3_bind_int64(stmt, 5, balance_after);
    sqlite3_bind_int64(stmt, 6, now);
    return run(s, stmt, "writing the ledger");
}

static int sqlite_user_add(store_t *base, const char *name, const char *tier, int64_t credits,
                           int64_t now)
{
    sqlite_store_t *s = sq(base);
    user_t u;
    int rc;
    lock(s);
    if (credits < 0) {
        rc = STORE_CONFLICT;
        goto out;
    }
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    rc = read_user(s, name, &u, NULL);
    if (rc == STORE_OK) {
        rc = STORE_EXISTS;
        goto out;
    }
    if (rc != STORE_NOT_FOUND)
        goto out;
    sqlite3_stmt *stmt = st(s, S_USER_INSERT);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, name);
    bind_text(stmt, 2, tier && *tier ? tier : tier_names[0]);
    sqlite3_bind_int64(stmt, 3, credits);
    sqlite3_bind_int64(stmt, 4, now);
    rc = run(s, stmt, "adding user");
    if (rc == STORE_OK && credits > 0)
        rc = add_ledger(s, name, NULL, "grant", credits, credits, now);
out:
    return finish(s, rc);
}

/* The arguments of a read run by read_op: a key and where its row goes. */
struct read_arg {
    const char *key;
    void *out;
};

static int user_read(sqlite_store_t *db, void *arg)
{
    struct read_arg *a = arg;
    return read_user(db, a->key, a->out, NULL);
}

static int sqlite_user_get(store_t *base, const char *name, user_t *out)
{
    struct read_arg a = {name, out};
    return read_op(sq(base), user_read, &a);
}

static int sqlite_user_set_disabled(store_t *base, const char *name, bool disabled, int64_t now)
{
    sqlite_store_t *s = sq(base);
    int rc;
    lock(s);
    sqlite3_stmt *stmt = st(s, S_USER_SET_DISABLED);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, name);
    sqlite3_bind_int(stmt, 2, disabled);
    sqlite3_bind_int64(stmt, 3, now);
    rc = run(s, stmt, "disabling user");
    if (rc == STORE_OK && sqlite3_changes(s->db) == 0)
        rc = STORE_NOT_FOUND;
out:
    return finish(s, rc);
}

static int sqlite_user_credit(store_t *base, const char *name, int64_t delta, int64_t now,
                              int64_t *balance_out)
{
    sqlite_store_t *s = sq(base);
    user_t u;
    int64_t balance;
    int rc;
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    rc = read_user(s, name, &u, NULL);
    if (rc != STORE_OK)
        goto out;
    rc = store_rule_grant(&u, delta, &balance);
    if (rc != STORE_OK)
        goto out;
    rc = set_balance(s, name, balance);
    if (rc == STORE_OK)
        rc = add_ledger(s, name, NULL, "grant", delta, balance, now);
    if (rc == STORE_OK && balance_out)
        *balance_out = balance;
out:
    return finish(s, rc);
}

static int sqlite_ledger(store_t *base, const char *name, int limit, ledger_entry_t **out,
                         size_t *n)
{
    sqlite_store_t *s = sq(base);
    ledger_entry_t *v = NULL;
    size_t count = 0;
    int rc = STORE_OK;
    *out = NULL;
    *n = 0;
    lock(s);
    if (limit <= 0)
        goto out;
    sqlite3_stmt *stmt = st(s, S_LEDGER_LIST);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, name);
    sqlite3_bind_int(stmt, 2, limit);
    size_t cap = 0;
    while ((rc = step_row(s, stmt, "reading the ledger")) == 1) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            ledger_entry_t *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = store_fail("sqlite: out of memory reading the ledger");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        ledger_entry_t *e = &v[count++];
        memset(e, 0, sizeof *e);
        e->id = sqlite3_column_int64(stmt, 0);
        col_copy(stmt, 1, e->kind, sizeof e->kind);
        col_copy(stmt, 2, e->job_id, sizeof e->job_id);
        e->amount = sqlite3_column_int64(stmt, 3);
        e->balance_after = sqlite3_column_int64(stmt, 4);
        e->created_at = sqlite3_column_int64(stmt, 5);
    }
    if (rc == 0) {
        rc = STORE_OK;
        *out = v;
        *n = count;
        v = NULL;
    }
out:
    free(v);
    return finish(s, rc);
}

/* ---- jobs ---- */

/* The next job sequence number (insertion order and first queue position), inside the open
 * write transaction. STORE_OK or STORE_ERR. */
static int next_seq(sqlite_store_t *s, int64_t *seq)
{
    sqlite3_stmt *stmt = st(s, S_JOB_NEXT_SEQ);
    if (!stmt)
        return STORE_ERR;
    int rc = step_row(s, stmt, "next seq");
    if (rc != 1)
        return rc == 0 ? fail_db(s, "next seq") : rc;
    *seq = sqlite3_column_int64(stmt, 0);
    sqlite3_reset(stmt);
    return STORE_OK;
}

/* Creates one job inside the open transaction, under a savepoint so that a refusal or an error
 * undoes only this job's writes. Returns a STORE_* code; out is filled on OK and EXISTS. */
static sqlite3_stmt *prepare_once(sqlite_store_t *s, const char *sql, const char *what);

/* The job's webhook outbox row (state waiting), in the job's transaction. */
static int insert_webhook(sqlite_store_t *s, const char *id, const char *url)
{
    sqlite3_stmt *stmt = st(s, S_WEBHOOK_INSERT);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    bind_text(stmt, 2, url);
    return run(s, stmt, "recording a webhook");
}

/* Runs one of the savepoint statements of create_one. Only opening one records its error: a
 * rollback or release after a failure keeps the first error as this thread's message. */
static int savepoint(sqlite_store_t *s, enum stmt_id id)
{
    sqlite3_stmt *stmt = st(s, id);
    if (!stmt)
        return STORE_ERR;
    if (id == S_SAVEPOINT)
        return run(s, stmt, "savepoint");
    sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return STORE_OK;
}

/* The idempotency lookup of a create: 0 when the key is new, STORE_EXISTS with out filled when
 * the user already has a job with it, or STORE_ERR. */
static int find_idem(sqlite_store_t *s, const store_create_t *q, job_t *out)
{
    sqlite3_stmt *stmt = st(s, S_JOB_BY_IDEM);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, q->user);
    bind_text(stmt, 2, q->idem_key);
    int rc = step_row(s, stmt, "idempotency lookup");
    if (rc == 1)
        rc = row_to_job(stmt, out) == STORE_OK ? STORE_EXISTS : STORE_ERR;
    sqlite3_reset(stmt);
    return rc;
}

/* The row create_one just inserted, as row_to_job would read it back (no second read). */
static int inserted_job(const store_create_t *q, const char *id, const char *tier, int64_t seed,
                        int64_t seq, job_t *out)
{
    const job_params_t *p = q->p;
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", id);
    snprintf(out->user, sizeof out->user, "%s", q->user);
    snprintf(out->tier, sizeof out->tier, "%s", tier);
    out->status = JOB_QUEUED;
    out->params = *p;
    out->params.webhook_url = NULL;
    snprintf(out->params.model, sizeof out->params.model, "%s", p->model[0] ? p->model : "sd15");
    out->params.seed = seed;
    out->params.prompt = strdup(p->prompt ? p->prompt : "");
    out->params.negative_prompt = strdup(p->negative_prompt ? p->negative_prompt : "");
    out->seq = seq;
    out->created_at = q->now;
    out->credits_reserved = store_rule_reservation(q->reserve);
    if (!out->params.prompt || !out->params.negative_prompt) {
        job_clear(out);
        return store_fail("sqlite: out of memory creating a job");
    }
    return STORE_OK;
}

/* The event row of a job inserted queued (the row is counted: schema_v10). */
static int created_event(sqlite_store_t *s, const char *user, const char *id, const char *tier)
{
    sqlite3_stmt *stmt = st(s, S_EVENT_CREATED);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, user);
    bind_text(stmt, 2, id);
    bind_text(stmt, 3, tier);
    return run(s, stmt, "recording a job's event");
}

/* What a batch's creates added to one user so far: written once per batch (batch_counts), and
 * added to the user's stored values when its next create of the batch is admitted. The user's
 * row is read once per batch (loaded): nothing else writes it inside the batch's transaction. */
typedef struct batch_user {
    const char *name;
    int64_t reserved, jobs;
    bool loaded;
    user_t row;
    int64_t queued;
} batch_user_t;

/* The batch's entry of user, added when absent (users has room for every create of the batch);
 * NULL only without room. */
static batch_user_t *batch_user(batch_user_t *users, size_t *n, size_t cap, const char *user)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(users[i].name, user) == 0)
            return &users[i];
    if (*n >= cap)
        return NULL;
    users[*n] = (batch_user_t){.name = user};
    return &users[(*n)++];
}

/* users as the insert triggers would have left them after the batch's creates: one UPDATE per
 * user, in the batch's transaction (job_totals counts ended jobs only: a queued insert leaves it
 * as it is). */
static int batch_counts(sqlite_store_t *s, const batch_user_t *users, size_t n)
{
    int rc = STORE_OK;
    for (size_t i = 0; i < n && rc == STORE_OK; i++) {
        if (!users[i].jobs)
            continue;
        sqlite3_stmt *stmt = st(s, S_USER_ADD_CREATES);
        if (!stmt)
            return STORE_ERR;
        bind_text(stmt, 1, users[i].name);
        sqlite3_bind_int64(stmt, 2, users[i].reserved);
        sqlite3_bind_int64(stmt, 3, users[i].jobs);
        rc = run(s, stmt, "counting a user's jobs");
    }
    return rc;
}

/* Inserts the job row (counted: its event row here, its user's counts at the end of the batch,
 * batch_counts) and its webhook row of an admitted create; out is the new job. */
static int insert_job(sqlite_store_t *s, const store_create_t *q, const user_t *u, int64_t *next,
                      job_t *out)
{
    const job_params_t *p = q->p;
    int64_t seed = store_rule_seed(p->seed);
    char id[JOB_ID_SIZE];
    int rc = *next ? STORE_OK : next_seq(s, next);
    if (rc != STORE_OK)
        return rc;
    int64_t seq = (*next)++; /* a create rolled back leaves a gap: seq orders, it does not count */
    job_new_id(id, q->now);
    sqlite3_stmt *stmt = st(s, S_JOB_INSERT);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    bind_text(stmt, 2, q->user);
    bind_text(stmt, 3, p->prompt ? p->prompt : "");
    bind_text(stmt, 4, p->negative_prompt ? p->negative_prompt : "");
    sqlite3_bind_int(stmt, 5, p->width);
    sqlite3_bind_int(stmt, 6, p->height);
    sqlite3_bind_int(stmt, 7, p->steps);
    sqlite3_bind_double(stmt, 8, p->cfg_scale);
    sqlite3_bind_int64(stmt, 9, seed);
    sqlite3_bind_int64(stmt, 10, seq);
    bind_text(stmt, 11, p->model[0] ? p->model : "sd15");
    bind_text(stmt, 12, u->tier);
    sqlite3_bind_int64(stmt, 13, q->now);
    sqlite3_bind_int64(stmt, 14, store_rule_reservation(q->reserve));
    bind_text(stmt, 15, q->idem_key);
    rc = run(s, stmt, "inserting job");
    if (rc == STORE_OK)
        rc = created_event(s, q->user, id, u->tier);
    if (rc == STORE_OK && p->webhook_url)
        rc = insert_webhook(s, id, p->webhook_url);
    if (rc == STORE_OK)
        rc = inserted_job(q, id, u->tier, seed, seq, out);
    return rc;
}

/* Creates one job inside the open transaction. Returns a STORE_* code; out is filled on OK and
 * EXISTS. A refusal (user unknown or disabled, idempotent replay, admission) is decided before
 * any write. Under a savepoint (safe) a failed write undoes this job's writes alone; without
 * one, a failed write leaves the transaction for the caller to roll back (create_batch). */
static int create_one(sqlite_store_t *s, store_create_t *q, batch_user_t *b, int64_t *next,
                      bool safe)
{
    job_t *out = &q->out;
    int rc = safe ? savepoint(s, S_SAVEPOINT) : STORE_OK;
    if (rc != STORE_OK)
        return rc;
    if (!b->loaded) {
        rc = read_user(s, q->user, &b->row, &b->queued);
        b->loaded = rc == STORE_OK;
    }
    user_t u = b->row;
    int64_t queued = b->queued;
    if (rc == STORE_OK && u.disabled_at)
        rc = STORE_DISABLED;
    if (rc == STORE_OK && q->idem_key)
        rc = find_idem(s, q, out); /* 0 (STORE_OK): the key is new */
    if (rc == STORE_OK) {          /* the batch's earlier creates, not yet in the user's row */
        u.reserved += b->reserved;
        u.stored += b->jobs;
        queued += b->jobs;
        rc = store_rule_admit(&u, queued, q->reserve, q->max_queued, q->max_stored);
    }
    if (rc == STORE_OK)
        rc = insert_job(s, q, &u, next, out);
    if (rc == STORE_OK) {
        b->reserved += store_rule_reservation(q->reserve);
        b->jobs++;
    }
    if (safe && rc != STORE_OK) {
        reset_all(s);
        savepoint(s, S_ROLLBACK_TO);
    }
    if (safe)
        savepoint(s, S_RELEASE);
    if (rc != STORE_OK && rc != STORE_EXISTS)
        job_clear(out);
    return rc;
}

/* One pass of create_batch over the batch in a new transaction, each create's outcome in its
 * item; users has room for every create. Returns STORE_OK when the transaction is still open for
 * batch_counts and the commit; otherwise it was rolled back (nothing written) and the return is
 * STORE_ERR, or STORE_CONFLICT when a write failed in a pass without savepoints (!safe), which
 * the caller runs again with them. */
static int batch_pass(sqlite_store_t *s, create_req_t *batch, batch_user_t *users, size_t cap,
                      size_t *nusers, bool safe)
{
    int64_t next_seq = 0; /* the next job's seq: read once, then counted on (create_one) */
    memset(users, 0, cap * sizeof *users);
    *nusers = 0;
    int rc = begin(s);
    for (create_req_t *r = batch; r; r = r->next) {
        store_create_t *q = r->c;
        batch_user_t *b = rc == STORE_OK ? batch_user(users, nusers, cap, q->user) : NULL;
        q->rc = b ? create_one(s, q, b, &next_seq, safe) : STORE_ERR;
        if (q->rc == STORE_ERR && !safe && rc == STORE_OK) {
            rc = STORE_CONFLICT;
        } else if (q->rc == STORE_ERR) {
            snprintf(q->err, sizeof q->err, "%s", store_fail_text());
        }
        if (rc == STORE_OK && sqlite3_get_autocommit(s->db)) {
            /* SQLite rolled the whole transaction back (I/O error, disk full): nothing of the
             * batch was written. */
            rc = store_fail("sqlite %s: the transaction was rolled back", s->path);
            s->in_tx = false;
        }
        if (rc == STORE_CONFLICT)
            break;
    }
    if (rc != STORE_OK) {
        int why = rc;
        end_tx(s, STORE_ERR); /* rolls back what is still open */
        for (create_req_t *r = batch; r; r = r->next)
            if (r->c->rc == STORE_OK || r->c->rc == STORE_EXISTS)
                job_clear(&r->c->out);
        return why;
    }
    return STORE_OK;
}

/* Runs a batch of creates in one transaction: one commit (one WAL append) for all of them.
 * Called by the leader with no lock held. The first pass takes no savepoints: a refusal writes
 * nothing, and a failed write (disk full, I/O error) is rare enough to pay for a second pass
 * that gives each create a savepoint of its own, so that it fails alone. */
static void create_batch(sqlite_store_t *s, create_req_t *batch)
{
    size_t cap = 0, nusers = 0;
    for (create_req_t *r = batch; r; r = r->next)
        cap++;
    batch_user_t *users = calloc(cap, sizeof *users);
    lock(s);
    int rc = users ? batch_pass(s, batch, users, cap, &nusers, false)
                   : store_fail("sqlite: out of memory creating jobs");
    if (rc == STORE_CONFLICT)
        rc = batch_pass(s, batch, users, cap, &nusers, true);
    if (rc == STORE_OK)
        rc = batch_counts(s, users, nusers);
    free(users);
    if (rc != STORE_OK || commit(s) != STORE_OK) {
        const char *msg = store_fail_text();
        for (create_req_t *r = batch; r; r = r->next) {
            store_create_t *q = r->c;
            if (q->rc == STORE_OK || q->rc == STORE_EXISTS)
                job_clear(&q->out);
            q->rc = STORE_ERR;
            snprintf(q->err, sizeof q->err, "%s", msg);
        }
    }
    finish(s, STORE_ERR); /* rolls back whatever is still open after a failure; unlocks */
}

/* Group commit: the first caller becomes the leader and runs every create queued meanwhile in
 * one transaction, then hands over to whoever queued during that; the others wait for their
 * result. Each create keeps its own outcome (a savepoint each). Under load this turns N commits
 * and N hand-offs of the store lock into one. */
static void group_commit(sqlite_store_t *s, store_create_t *c)
{
    create_req_t q = {.c = c};
    pthread_cond_init(&q.cv, NULL);
    pthread_mutex_lock(&s->gc_mu);
    if (s->gc_tail)
        s->gc_tail->next = &q;
    else
        s->gc_head = &q;
    s->gc_tail = &q;
    if (!s->gc_leader) {
        s->gc_leader = true;
        q.lead = true;
    }
    /* Each waiter sleeps on its own condition: it is woken once, when its result is in or
     * when it becomes the leader, never by other waiters' results. */
    while (!q.done && !q.lead)
        pthread_cond_wait(&q.cv, &s->gc_mu);
    if (!q.done) {
        /* Lead: take everything queued (this request included), run it, publish the results,
         * then hand the lead to the first request queued meanwhile. */
        create_req_t *batch = s->gc_head;
        s->gc_head = s->gc_tail = NULL;
        pthread_mutex_unlock(&s->gc_mu);
        create_batch(s, batch);
        pthread_mutex_lock(&s->gc_mu);
        for (create_req_t *r = batch; r;) {
            create_req_t *next = r->next;
            r->done = true;
            if (r != &q)
                pthread_cond_signal(&r->cv);
            r = next; /* r may be gone once signalled: read next first */
        }
        if (s->gc_head) {
            s->gc_head->lead = true;
            pthread_cond_signal(&s->gc_head->cv);
        } else {
            s->gc_leader = false;
        }
    }
    pthread_mutex_unlock(&s->gc_mu);
    pthread_cond_destroy(&q.cv);
    if (c->rc == STORE_ERR)
        store_fail("%s", c->err); /* the caller's store_last_error */
}

/* The group commit of a batch the caller gathered (the server's create queue): one
 * transaction, one savepoint per create, so each keeps its own outcome. */
static int sqlite_job_create_many(store_t *base, store_create_t *items, size_t n)
{
    sqlite_store_t *s = sq(base);
    if (n == 1) { /* one create from a thread of its own: joins the others (group_commit) */
        memset(&items[0].out, 0, sizeof items[0].out);
        group_commit(s, &items[0]);
        return STORE_OK;
    }
    create_req_t *reqs = calloc(n ? n : 1, sizeof *reqs);
    for (size_t i = 0; i < n; i++) {
        memset(&items[i].out, 0, sizeof items[i].out);
        if (!reqs) {
            items[i].rc = STORE_ERR;
            snprintf(items[i].err, sizeof items[i].err, "out of memory");
            continue;
        }
        reqs[i].c = &items[i];
        reqs[i].next = i + 1 < n ? &reqs[i + 1] : NULL;
    }
    if (reqs && n)
        create_batch(s, reqs);
    free(reqs);
    return STORE_OK;
}

static int job_read(sqlite_store_t *db, void *arg)
{
    struct read_arg *a = arg;
    return load_job(db, a->key, a->out, NULL);
}

static int sqlite_job_get(store_t *base, const char *id, job_t *out)
{
    struct read_arg a = {id, out};
    memset(out, 0, sizeof *out);
    return read_op(sq(base), job_read, &a);
}

static int sqlite_job_list(store_t *base, const char *user, int status, int limit,
                           int64_t cursor_seq, job_t **out, size_t *n)
{
    sqlite_store_t *s = sq(base);
    job_t *v = NULL;
    size_t count = 0, cap = 0;
    int rc = STORE_OK;
    *out = NULL;
    *n = 0;
    lock(s);
    if (limit <= 0)
        goto out;
    sqlite3_stmt *stmt = st(s, status >= 0 ? S_JOB_LIST_STATUS : S_JOB_LIST);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, user);
    sqlite3_bind_int64(stmt, 2, cursor_seq > 0 ? cursor_seq : INT64_MAX);
    if (status >= 0)
        bind_text(stmt, 3, job_status_name((job_status_t)status));
    sqlite3_bind_int(stmt, 4, limit);
    while ((rc = step_row(s, stmt, "listing jobs")) == 1) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            job_t *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = store_fail("sqlite: out of memory listing jobs");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        rc = row_to_job(stmt, &v[count]);
        if (rc != STORE_OK)
            goto out;
        count++;
    }
    if (rc == 0) {
        rc = STORE_OK;
        *out = v;
        *n = count;
        v = NULL;
        count = 0;
    }
out:
    for (size_t i = 0; i < count; i++)
        job_clear(&v[i]);
    free(v);
    return finish(s, rc);
}

static int sqlite_job_cancel(store_t *base, const char *user, const char *id, int64_t now,
                             job_t *out)
{
    sqlite_store_t *s = sq(base);
    job_t tmp;
    int rc;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    rc = load_job(s, id, out, NULL);
    if (rc != STORE_OK)
        goto out;
    if (strcmp(out->user, user) != 0) {
        rc = STORE_NOT_FOUND;
        goto out;
    }
    if (job_status_is_final(out->status)) {
        rc = STORE_CONFLICT;
        goto out;
    }
    sqlite3_stmt *stmt = st(s, S_JOB_CANCEL);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, id);
    sqlite3_bind_int64(stmt, 2, now);
    rc = run(s, stmt, "canceling job");
    if (rc == STORE_OK)
        rc = reload_ended(s, id, out);
out:
    rc = finish(s, rc);
    if ((rc != STORE_OK && rc != STORE_CONFLICT) || out == &tmp)
        job_clear(out);
    return rc;
}

/* A seed row (seq NULL, status 'pending' or 'queued') becomes a queued job: see store.h. Any
 * other row is already a job (or was run by a seed worker): STORE_EXISTS with out filled. */
static int sqlite_job_adopt(store_t *base, const char *id, double credit_rate, int64_t now,
                            job_t *out)
{
    sqlite_store_t *s = sq(base);
    job_t tmp;
    user_t u;
    job_params_t p;
    char user[USER_NAME_MAX + 1];
    int64_t seq = 0, reserve = 0;
    int rc;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    memset(&p, 0, sizeof p);
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    sqlite3_stmt *stmt = st(s, S_ADOPT_READ);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, id);
    rc = step_row(s, stmt, "reading a seed job");
    if (rc != 1) {
        rc = rc == 0 ? STORE_NOT_FOUND : rc;
        goto out;
    }
    if (sqlite3_column_int(stmt, 1)) {
        sqlite3_reset(stmt);
        rc = load_job(s, id, out, NULL);
        rc = rc == STORE_OK ? STORE_EXISTS : rc;
        goto out;
    }
    col_copy(stmt, 0, user, sizeof user);
    p.width = sqlite3_column_int(stmt, 2);
    p.height = sqlite3_column_int(stmt, 3);
    p.steps = sqlite3_column_int(stmt, 4);
    p.cfg_scale = sqlite3_column_double(stmt, 5);
    col_copy(stmt, 6, p.model, sizeof p.model);
    sqlite3_reset(stmt);
    rc = read_user(s, user, &u, NULL);
    if (rc != STORE_OK)
        goto out;
    reserve = job_estimate_credits(&p, credit_rate);
    rc = store_rule_reserve(&u, reserve);
    if (rc != STORE_OK)
        goto out;
    rc = next_seq(s, &seq);
    if (rc != STORE_OK)
        goto out;
    stmt = st(s, S_ADOPT);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, id);
    sqlite3_bind_int64(stmt, 2, store_rule_seed(-1));
    sqlite3_bind_int64(stmt, 3, seq);
    bind_text(stmt, 4, u.tier);
    sqlite3_bind_int64(stmt, 5, now);
    sqlite3_bind_int64(stmt, 6, store_rule_reservation(reserve));
    rc = run(s, stmt, "adopting a seed job");
    if (rc == STORE_OK)
        rc = load_job(s, id, out, NULL);
out:
    rc = finish(s, rc);
    if ((rc != STORE_OK && rc != STORE_EXISTS) || out == &tmp)
        job_clear(out);
    return rc;
}

static int worker_upsert(sqlite_store_t *s, const char *worker_id, const char *tier,
                         const char *state, int64_t now)
{
    sqlite3_stmt *stmt = st(s, S_WORKER_UPSERT);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, worker_id);
    bind_text(stmt, 2, tier);
    bind_text(stmt, 3, state);
    sqlite3_bind_int64(stmt, 4, now);
    return run(s, stmt, "recording worker");
}

/* The claim (store_job_claim) inside the open transaction; out filled on STORE_OK. */
static int claim_tx(sqlite_store_t *s, const char *tier, const char *worker_id, int64_t lease_ms,
                    int64_t now, job_t *out)
{
    char user[USER_NAME_MAX + 1];
    char id[JOB_ID_SIZE];
    char lease[JOB_ID_SIZE];
    sqlite3_stmt *stmt = st(s, S_JOB_PICK_USER);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, tier);
    int rc = step_row(s, stmt, "picking a user");
    if (rc != 1)
        return rc == 0 ? STORE_EMPTY : rc;
    col_copy(stmt, 0, user, sizeof user);
    sqlite3_reset(stmt);
    stmt = st(s, S_JOB_HEAD);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, tier);
    bind_text(stmt, 2, user);
    rc = step_row(s, stmt, "picking a job");
    if (rc != 1)
        return rc == 0 ? store_fail("sqlite %s: queue head vanished", s->path) : rc;
    col_copy(stmt, 0, id, sizeof id);
    sqlite3_reset(stmt);
    random_hex(lease, 16);
    stmt = st(s, S_JOB_CLAIM);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    bind_text(stmt, 2, lease);
    bind_text(stmt, 3, worker_id);
    sqlite3_bind_int64(stmt, 4, now + lease_ms);
    sqlite3_bind_int64(stmt, 5, now);
    rc = run(s, stmt, "claiming job");
    if (rc == STORE_OK && worker_id && *worker_id)
        rc = worker_upsert(s, worker_id, tier, "busy", now);
    if (rc == STORE_OK)
        rc = load_job(s, id, out, NULL);
    return rc;
}

static int sqlite_job_claim(store_t *base, const char *tier, const char *worker_id,
                            int64_t lease_ms, int64_t now, job_t *out)
{
    sqlite_store_t *s = sq(base);
    job_t tmp;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    lock(s);
    int rc = begin(s);
    if (rc == STORE_OK)
        rc = claim_tx(s, tier, worker_id, lease_ms, now, out);
    rc = finish(s, rc);
    if (rc != STORE_OK || out == &tmp)
        job_clear(out);
    return rc;
}

/* Maps a job that failed a lease check to STORE_CANCELED, STORE_NOT_FOUND or LEASE_LOST. */
static int lease_refusal(sqlite_store_t *s, const char *id)
{
    int rc;
    sqlite3_stmt *stmt = st(s, S_JOB_STATUS);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    rc = step_row(s, stmt, "reading job status");
    if (rc == 1) {
        const unsigned char *status = sqlite3_column_text(stmt, 0);
        rc = status && strcmp((const char *)status, "canceled") == 0 ? STORE_CANCELED
                                                                     : STORE_LEASE_LOST;
    } else if (rc == 0) {
        rc = STORE_NOT_FOUND;
    }
    sqlite3_reset(stmt);
    return rc;
}

/* A successful heartbeat also refreshes the lease holder's last_seen in workers. */
static int sqlite_job_heartbeat(store_t *base, const char *id, const char *lease_id,
                                int64_t lease_ms, int64_t now, int step, int steps)
{
    sqlite_store_t *s = sq(base);
    char worker[128] = "";
    int rc;
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    sqlite3_stmt *stmt = st(s, S_JOB_EXTEND);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, id);
    bind_text(stmt, 2, lease_id ? lease_id : "");
    sqlite3_bind_int64(stmt, 3, now + lease_ms);
    sqlite3_bind_int(stmt, 4, step);
    sqlite3_bind_int(stmt, 5, steps);
    rc = step_row(s, stmt, "extending lease");
    if (rc == 1)
        col_copy(stmt, 0, worker, sizeof worker);
    if (rc == 1)
        rc = run(s, stmt, "extending lease");
    else if (rc == 0)
        rc = lease_refusal(s, id);
    if (rc == STORE_OK && worker[0]) {
        stmt = st(s, S_WORKER_TOUCH);
        if (!stmt) {
            rc = STORE_ERR;
            goto out;
        }
        bind_text(stmt, 1, worker);
        sqlite3_bind_int64(stmt, 2, now);
        rc = run(s, stmt, "touching worker");
    }
out:
    return finish(s, rc);
}

/* Loads the job for a lease holder's report. STORE_OK when it is in_progress under lease_id
 * (out filled); *replay set when it already reached final status `done` under that lease;
 * else the refusal code. */
static int leased_job(sqlite_store_t *s, const char *id, const char *lease_id, job_status_t done,
                      job_t *out, bool *replay)
{
    char lease[JOB_ID_SIZE] = "";
    int rc = load_job(s, id, out, lease);
    *replay = false;
    return rc == STORE_OK ? store_rule_lease(out, lease, lease_id, done, replay) : rc;
}

/* ceil(gpu_seconds * rate) with floating noise forgiven, 0 for nonsense input. */
/* The complete (store_job_complete) inside the open transaction; out filled on STORE_OK (and
 * maybe on a refusal: the caller clears it). */
static int complete_tx(sqlite_store_t *s, const char *id, const char *lease_id, double gpu_seconds,
                       const char *image_key, double credit_rate, int64_t now, job_t *out)
{
    user_t u;
    bool replay = false;
    int rc = leased_job(s, id, lease_id, JOB_COMPLETED, out, &replay);
    if (rc != STORE_OK || replay)
        return rc;
    rc = read_user(s, out->user, &u, NULL);
    if (rc != STORE_OK)
        return rc == STORE_NOT_FOUND ? store_fail("sqlite %s: job %s has no user", s->path, id)
                                     : rc;
    gpu_seconds = store_rule_gpu_seconds(gpu_seconds);
    int64_t charge = store_rule_charge(gpu_seconds, credit_rate, &u, out);
    sqlite3_stmt *stmt = st(s, S_JOB_COMPLETE);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    bind_text(stmt, 2, image_key);
    sqlite3_bind_double(stmt, 3, gpu_seconds);
    sqlite3_bind_int64(stmt, 4, now);
    sqlite3_bind_int64(stmt, 5, charge);
    rc = run(s, stmt, "completing job");
    if (rc == STORE_OK)
        rc = set_balance(s, out->user, u.balance - charge);
    if (rc == STORE_OK)
        rc = add_ledger(s, out->user, id, "charge", -charge, u.balance - charge, now);
    if (rc == STORE_OK)
        rc = reload_ended(s, id, out);
    return rc;
}

/* A batch of complete-and-claims in one transaction: one commit (one WAL fsync) for all. A
 * refusal is found before its item writes anything, so it leaves the others alone; an error
 * rolls the whole batch back. */
static void sqlite_job_complete_many(store_t *base, store_complete_t *items, size_t n)
{
    sqlite_store_t *s = sq(base);
    lock(s);
    int rc = begin(s);
    for (size_t i = 0; i < n && rc == STORE_OK; i++) {
        store_complete_t *c = &items[i];
        c->rc = complete_tx(s, c->id, c->lease_id, c->gpu_seconds, c->image_key, c->credit_rate,
                            c->now, &c->done);
        if (c->rc == STORE_OK && c->tier) {
            c->next_rc = claim_tx(s, c->tier, c->worker_id, c->lease_ms, c->now, &c->next);
            if (c->next_rc == STORE_ERR)
                c->rc = STORE_ERR;
        }
        if (c->rc == STORE_ERR)
            rc = STORE_ERR;
        reset_all(s);
    }
    rc = finish(s, rc);
    for (size_t i = 0; i < n && rc != STORE_OK; i++)
        items[i].rc = STORE_ERR;
}

/* Complete-and-claim (store.h): a batch of one (one commit for both). */
static int sqlite_job_complete_claim(store_t *base, store_complete_t *c)
{
    sqlite_job_complete_many(base, c, 1);
    return c->rc;
}

/* Puts a job back at the front of its tier's queue, lease cleared. */
static int requeue(sqlite_store_t *s, const char *id, int attempts_delta, int releases_delta,
                   const char *message)
{
    sqlite3_stmt *stmt = st(s, S_JOB_REQUEUE);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    sqlite3_bind_int(stmt, 2, attempts_delta);
    sqlite3_bind_int(stmt, 3, releases_delta);
    bind_text(stmt, 4, message);
    return run(s, stmt, "requeueing job");
}

static int mark_failed(sqlite_store_t *s, const char *id, const char *message, int64_t now)
{
    sqlite3_stmt *stmt = st(s, S_JOB_FAIL);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    bind_text(stmt, 2, message ? message : "failed");
    sqlite3_bind_int64(stmt, 3, now);
    return run(s, stmt, "failing job");
}

/* A replay of fail by the same lease holder on a job it already failed returns STORE_OK. */
static int sqlite_job_fail(store_t *base, const char *id, const char *lease_id, const char *message,
                           bool retryable, int max_attempts, int64_t now, job_t *out)
{
    sqlite_store_t *s = sq(base);
    job_t tmp;
    bool replay = false;
    int rc;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    rc = leased_job(s, id, lease_id, JOB_FAILED, out, &replay);
    if (rc != STORE_OK || replay)
        goto out;
    if (store_rule_fail_requeues(out, retryable, max_attempts))
        rc = requeue(s, id, 0, 0, message ? message : "failed");
    else
        rc = mark_failed(s, id, message, now);
    if (rc == STORE_OK)
        rc = reload_ended(s, id, out);
out:
    rc = finish(s, rc);
    if (rc != STORE_OK || out == &tmp)
        job_clear(out);
    return rc;
}

static int sqlite_job_release(store_t *base, const char *id, const char *lease_id, int64_t now,
                              job_t *out)
{
    sqlite_store_t *s = sq(base);
    job_t tmp;
    bool replay = false;
    int rc;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    /* JOB_QUEUED never matches: a released job has no lease left to replay with */
    rc = leased_job(s, id, lease_id, JOB_QUEUED, out, &replay);
    if (rc != STORE_OK)
        goto out;
    rc = requeue(s, id, STORE_RELEASE_ATTEMPTS, STORE_RELEASE_RELEASES, NULL);
    if (rc == STORE_OK) {
        job_clear(out);
        rc = load_job(s, id, out, NULL);
    }
out:
    rc = finish(s, rc);
    if (rc != STORE_OK || out == &tmp)
        job_clear(out);
    return rc;
}

typedef struct reap_item {
    char id[JOB_ID_SIZE];
    int attempts;
} reap_item_t;

/* Runs stmt (one text parameter, id) to its end. */
static int run_id(sqlite_store_t *s, enum stmt_id sid, const char *id, const char *what)
{
    sqlite3_stmt *stmt = st(s, sid);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, id);
    return run(s, stmt, what);
}

static int sqlite_jobs_purge(store_t *base, int64_t ended_before, int limit,
                             char (*ids)[JOB_ID_SIZE], int *n)
{
    sqlite_store_t *s = sq(base);
    int rc, count = 0;
    *n = 0;
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    sqlite3_stmt *stmt = st(s, S_PURGE_LIST);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    sqlite3_bind_int64(stmt, 1, ended_before);
    sqlite3_bind_int(stmt, 2, limit);
    while (count < limit && (rc = step_row(s, stmt, "finding ended jobs")) == 1)
        col_copy(stmt, 0, ids[count++], JOB_ID_SIZE);
    sqlite3_reset(stmt);
    if (rc < 0)
        goto out;
    rc = STORE_OK;
    for (int i = 0; i < count && rc == STORE_OK; i++) {
        rc = run_id(s, S_PURGE_LEDGER, ids[i], "unlinking ledger rows");
        if (rc == STORE_OK)
            rc = run_id(s, S_PURGE_JOB, ids[i], "deleting an ended job");
    }
out:
    rc = finish(s, rc);
    if (rc == STORE_OK)
        *n = count;
    return rc;
}

static int sqlite_reap(store_t *base, int max_attempts, int64_t worker_ttl_ms, int64_t now,
                       int *requeued, int *failed)
{
    sqlite_store_t *s = sq(base);
    reap_item_t *items = NULL;
    size_t count = 0, cap = 0;
    int nreq = 0, nfail = 0;
    int rc;
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    sqlite3_stmt *stmt = st(s, S_REAP_LIST);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    sqlite3_bind_int64(stmt, 1, now);
    while ((rc = step_row(s, stmt, "finding expired leases")) == 1) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            reap_item_t *nv = realloc(items, ncap * sizeof *nv);
            if (!nv) {
                rc = store_fail("sqlite: out of memory reaping");
                goto out;
            }
            items = nv;
            cap = ncap;
        }
        col_copy(stmt, 0, items[count].id, sizeof items[count].id);
        items[count].attempts = sqlite3_column_int(stmt, 1);
        count++;
    }
    if (rc != 0)
        goto out;
    sqlite3_reset(stmt);
    for (size_t i = 0; i < count && rc == STORE_OK; i++) {
        if (items[i].attempts >= max_attempts) {
            char msg[96];
            snprintf(msg, sizeof msg, "lease expired %d times (worker lost)", items[i].attempts);
            rc = mark_failed(s, items[i].id, msg, now);
            nfail++;
        } else {
            rc = requeue(s, items[i].id, 0, 0, NULL);
            nreq++;
        }
    }
    if (rc == STORE_OK && worker_ttl_ms > 0) {
        stmt = st(s, S_WORKER_EXPIRE);
        if (!stmt) {
            rc = STORE_ERR;
            goto out;
        }
        sqlite3_bind_int64(stmt, 1, now - worker_ttl_ms);
        rc = run(s, stmt, "forgetting lost workers");
    }
out:
    free(items);
    rc = finish(s, rc);
    if (requeued)
        *requeued = rc == STORE_OK ? nreq : 0;
    if (failed)
        *failed = rc == STORE_OK ? nfail : 0;
    return rc;
}

/* ---- workers and statistics ---- */

static int sqlite_worker_seen(store_t *base, const char *worker_id, const char *tier,
                              const char *state, int64_t now)
{
    sqlite_store_t *s = sq(base);
    int rc;
    lock(s);
    rc = begin(s);
    if (rc == STORE_OK)
        rc = worker_upsert(s, worker_id, tier, state, now);
    return finish(s, rc);
}

static int sqlite_worker_gone(store_t *base, const char *worker_id)
{
    sqlite_store_t *s = sq(base);
    int rc;
    lock(s);
    rc = begin(s);
    if (rc != STORE_OK)
        goto out;
    sqlite3_stmt *stmt = st(s, S_WORKER_DELETE);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, worker_id);
    rc = run(s, stmt, "forgetting worker");
out:
    return finish(s, rc);
}

static int sqlite_queue_stats(store_t *base, const char *tier, int64_t worker_ttl_ms, int64_t now,
                              queue_stats_t *out)
{
    sqlite_store_t *s = sq(base);
    int rc;
    memset(out, 0, sizeof *out);
    lock(s);
    sqlite3_stmt *stmt = st(s, S_STATS_JOBS);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, tier);
    rc = step_row(s, stmt, "queue stats");
    if (rc != 1) {
        rc = rc == 0 ? fail_db(s, "queue stats") : rc;
        goto out;
    }
    out->queued = sqlite3_column_int64(stmt, 0);
    out->running = sqlite3_column_int64(stmt, 1);
    stmt = st(s, S_STATS_WORKERS);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    bind_text(stmt, 1, tier);
    sqlite3_bind_int64(stmt, 2, worker_ttl_ms > 0 ? now - worker_ttl_ms : INT64_MIN);
    rc = step_row(s, stmt, "worker stats");
    if (rc != 1) {
        rc = rc == 0 ? fail_db(s, "worker stats") : rc;
        goto out;
    }
    out->workers = sqlite3_column_int64(stmt, 0);
    out->idle_workers = sqlite3_column_int64(stmt, 1);
    rc = STORE_OK;
out:
    return finish(s, rc);
}

static int sqlite_job_counts(store_t *base, store_job_counts_t *out)
{
    sqlite_store_t *s = sq(base);
    int rc;
    memset(out, 0, sizeof *out);
    lock(s);
    sqlite3_stmt *stmt = st(s, S_COUNTS);
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    while ((rc = step_row(s, stmt, "job counts")) == 1) {
        const unsigned char *status = sqlite3_column_text(stmt, 0);
        int64_t n = sqlite3_column_int64(stmt, 1);
        if (!status)
            continue;
        if (strcmp((const char *)status, "completed") == 0)
            out->completed = n;
        else if (strcmp((const char *)status, "failed") == 0)
            out->failed = n;
        else if (strcmp((const char *)status, "canceled") == 0)
            out->canceled = n;
        out->gpu_seconds += sqlite3_column_double(stmt, 2);
        out->credits_charged += sqlite3_column_int64(stmt, 3);
    }
out:
    return finish(s, rc == 0 ? STORE_OK : rc);
}

/* ---- cost accounting ---- */

static int sqlite_worker_report(store_t *base, const worker_life_t *r, int event, int64_t now)
{
    sqlite_store_t *s = sq(base);
    lock(s);
    int rc = begin(s);
    sqlite3_stmt *stmt = rc == STORE_OK ? st(s, S_LIFE_REPORT) : NULL;
    if (!stmt) {
        rc = STORE_ERR;
        goto out;
    }
    const char *text[5] = {r->worker_id, r->tier, r->instance_type, r->capacity_type, r->zone};
    for (int i = 0; i < 5; i++)
        bind_text(stmt, i + 1, text[i]);
    sqlite3_bind_int(stmt, 6, r->gpus);
    sqlite3_bind_int64(stmt, 7, now);
    sqlite3_bind_int(stmt, 8, event == WORKER_LOADED);
    sqlite3_bind_int(stmt, 9, event == WORKER_ENDED);
    sqlite3_bind_int64(stmt, 10, r->busy_ms);
    rc = run(s, stmt, "recording a worker's lifetime");
out:
    return finish(s, rc);
}

/* Runs statement id with the int64 parameters b[0..nb) (then text, when not NULL, as parameter
 * nb + 1) and hands each row to fill(row, stmt) into a new array of elem-sized elements (*out,
 * *n; caller frees). */
static int sqlite_rows(sqlite_store_t *s, enum stmt_id id, const int64_t *b, int nb,
                       const char *text, const char *what, size_t elem,
                       void (*fill)(void *row, sqlite3_stmt *st), void **out, size_t *n)
{
    char *v = NULL;
    size_t count = 0, cap = 0;
    int rc = STORE_ERR;
    *out = NULL;
    *n = 0;
    lock(s);
    sqlite3_stmt *stmt = st(s, id);
    if (!stmt)
        goto out;
    for (int i = 0; i < nb; i++)
        sqlite3_bind_int64(stmt, i + 1, b[i]);
    if (text)
        bind_text(stmt, nb + 1, text);
    while ((rc = step_row(s, stmt, what)) == 1) {
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char *nv = realloc(v, ncap * elem);
            if (!nv) {
                rc = store_fail("sqlite: out of memory %s", what);
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        memset(v + count * elem, 0, elem);
        fill(v + count++ * elem, stmt);
    }
out:
    if (rc == 0) {
        rc = STORE_OK;
        *out = v;
        *n = count;
        v = NULL;
    }
    free(v);
    return finish(s, rc);
}

static void fill_life(void *row, sqlite3_stmt *stmt)
{
    worker_life_t *w = row;
    col_copy(stmt, 0, w->worker_id, sizeof w->worker_id);
    col_copy(stmt, 1, w->tier, sizeof w->tier);
    col_copy(stmt, 2, w->instance_type, sizeof w->instance_type);
    col_copy(stmt, 3, w->capacity_type, sizeof w->capacity_type);
    col_copy(stmt, 4, w->zone, sizeof w->zone);
    w->gpus = sqlite3_column_int(stmt, 5);
    int64_t *t[5] = {&w->started_at, &w->loaded_at, &w->last_seen, &w->ended_at, &w->busy_ms};
    for (int i = 0; i < 5; i++)
        *t[i] = sqlite3_column_int64(stmt, 6 + i);
}

static int sqlite_worker_lives(store_t *base, int64_t since, int64_t until, worker_life_t **out,
                               size_t *n)
{
    int64_t b[4] = {since, until, STORE_LIFE_GRACE_MS, STORE_LIVES_MAX};
    return sqlite_rows(sq(base), S_LIFE_LIST, b, 4, NULL, "reading worker lifetimes", sizeof **out,
                       fill_life, (void **)out, n);
}

static void fill_worker(void *row, sqlite3_stmt *stmt)
{
    store_worker_t *w = row;
    col_copy(stmt, 0, w->id, sizeof w->id);
    col_copy(stmt, 1, w->tier, sizeof w->tier);
    col_copy(stmt, 2, w->state, sizeof w->state);
    w->last_seen = sqlite3_column_int64(stmt, 3);
}

static int sqlite_workers_list(store_t *base, store_worker_t **out, size_t *n)
{
    return sqlite_rows(sq(base), S_WORKER_LIST, NULL, 0, NULL, "listing workers", sizeof **out,
                       fill_worker, (void **)out, n);
}

static void fill_lease(void *row, sqlite3_stmt *stmt)
{
    store_lease_t *l = row;
    col_copy(stmt, 0, l->job_id, sizeof l->job_id);
    col_copy(stmt, 1, l->lease_id, sizeof l->lease_id);
}

static int sqlite_worker_leases(store_t *base, const char *worker_id, store_lease_t **out,
                                size_t *n)
{
    return sqlite_rows(sq(base), S_WORKER_LEASES, NULL, 0, worker_id, "reading a worker's leases",
                       sizeof **out, fill_lease, (void **)out, n);
}

static void fill_usage(void *row, sqlite3_stmt *stmt)
{
    usage_row_t *u = row;
    col_copy(stmt, 0, u->user, sizeof u->user);
    col_copy(stmt, 1, u->tier, sizeof u->tier);
    u->day = sqlite3_column_int64(stmt, 2);
    u->images = sqlite3_column_int64(stmt, 3);
    u->gpu_seconds = sqlite3_column_double(stmt, 4);
}

static int sqlite_usage(store_t *base, int64_t since, int64_t until, usage_row_t **out, size_t *n)
{
    int64_t b[2] = {since, until};
    return sqlite_rows(sq(base), S_USAGE, b, 2, NULL, "reading usage", sizeof **out, fill_usage,
                       (void **)out, n);
}

/* ---- events (GET /api/v1/events) ---- */

/* Prepares sql for one call; NULL with the message set. */
static sqlite3_stmt *prepare_once(sqlite_store_t *s, const char *sql, const char *what)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        fail_db(s, what);
        sqlite3_finalize(stmt);
        return NULL;
    }
    return stmt;
}

static int sqlite_event_add(store_t *base, const char *kind, const char *user, const char *data)
{
    sqlite_store_t *s = sq(base);
    lock(s);
    int rc = begin(s);
    sqlite3_stmt *stmt = NULL;
    if (rc == STORE_OK &&
        !(stmt = prepare_once(
              s,
              "INSERT INTO events(created_at, kind, user_id, data) VALUES (" EVENTS_NOW_MS
              ", ?1, ?2, ?3)",
              "recording an event")))
        rc = STORE_ERR;
    if (rc == STORE_OK) {
        bind_text(stmt, 1, kind);
        bind_text(stmt, 2, user);
        bind_text(stmt, 3, data);
        rc = run(s, stmt, "recording an event");
    }
    sqlite3_finalize(stmt);
    return finish(s, rc);
}

/* Steps stmt to the end or limit rows, filling element i of v (elem bytes each) with fill;
 * *count rows were filled. STORE_OK or STORE_ERR. */
static int step_rows(sqlite_store_t *s, sqlite3_stmt *stmt, const char *what, size_t limit,
                     size_t elem, int (*fill)(sqlite3_stmt *stmt, void *row), void *v,
                     size_t *count)
{
    while (*count < limit) {
        int r = step_row(s, stmt, what);
        if (r <= 0)
            return r < 0 ? STORE_ERR : STORE_OK;
        if (fill(stmt, (char *)v + *count * elem) != STORE_OK)
            return STORE_ERR;
        (*count)++;
    }
    return STORE_OK;
}

/* Appends the current row of an events query (seq, created_at, kind, user_id, data) to *v. */
static int event_row(sqlite3_stmt *stmt, void *row)
{
    store_event_t *e = row;
    e->seq = sqlite3_column_int64(stmt, 0);
    e->created_at = sqlite3_column_int64(stmt, 1);
    col_copy(stmt, 2, e->kind, sizeof e->kind);
    col_copy(stmt, 3, e->user, sizeof e->user);
    e->data = col_strdup(stmt, 4);
    return e->data ? STORE_OK : store_fail("sqlite: out of memory reading events");
}

static int sqlite_events_read(store_t *base, int64_t after, int64_t upto, const char *user,
                              int limit, store_event_t **out, size_t *n)
{
    sqlite_store_t *s = sq(base);
    store_event_t *v = NULL;
    size_t count = 0;
    int rc = STORE_OK;
    *out = NULL;
    *n = 0;
    if (limit <= 0)
        return STORE_OK;
    if (!(v = calloc((size_t)limit, sizeof *v)))
        return store_fail("sqlite: out of memory reading events");
    lock(s);
    sqlite3_stmt *stmt = prepare_once(
        s,
        "SELECT seq, created_at, kind, user_id, data FROM events WHERE seq > ?1 AND seq <= ?2"
        " AND (?3 IS NULL OR user_id = ?3) ORDER BY seq LIMIT ?4",
        "reading events");
    if (!stmt)
        rc = STORE_ERR;
    if (stmt) {
        sqlite3_bind_int64(stmt, 1, after);
        sqlite3_bind_int64(stmt, 2, upto);
        bind_text(stmt, 3, user);
        sqlite3_bind_int(stmt, 4, limit);
    }
    if (rc == STORE_OK)
        rc = step_rows(s, stmt, "reading events", (size_t)limit, sizeof *v, event_row, v, &count);
    sqlite3_finalize(stmt);
    rc = finish(s, rc);
    if (rc != STORE_OK) {
        store_events_free(v, count);
        return rc;
    }
    *out = v;
    *n = count;
    return STORE_OK;
}

static int sqlite_events_last(store_t *base, int64_t *seq)
{
    sqlite_store_t *s = sq(base);
    *seq = 0;
    lock(s);
    /* sqlite_sequence keeps the highest seq ever given, even when retention deleted it */
    sqlite3_stmt *stmt = prepare_once(
        s, "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)",
        "reading the event sequence");
    int rc = stmt ? step_row(s, stmt, "reading the event sequence") : STORE_ERR;
    if (rc == 1)
        *seq = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return finish(s, rc < 0 ? STORE_ERR : STORE_OK);
}

static int sqlite_events_trim(store_t *base, int64_t keep_ms, int64_t keep_progress_ms)
{
    sqlite_store_t *s = sq(base);
    lock(s);
    int rc = begin(s);
    sqlite3_stmt *stmt = NULL;
    if (rc == STORE_OK &&
        !(stmt = prepare_once(s,
                              "DELETE FROM events WHERE created_at < " EVENTS_NOW_MS " - ?1"
                              " OR (kind = 'progress' AND created_at < " EVENTS_NOW_MS " - ?2)",
                              "trimming events")))
        rc = STORE_ERR;
    if (rc == STORE_OK) {
        sqlite3_bind_int64(stmt, 1, keep_ms);
        sqlite3_bind_int64(stmt, 2, keep_progress_ms);
        rc = run(s, stmt, "trimming events");
    }
    sqlite3_finalize(stmt);
    return finish(s, rc);
}

/* ---- webhooks (the outbox) ---- */

/* Fills w from the WEBHOOK_COLS starting at column i of the current row. */
static void webhook_cols(sqlite3_stmt *stmt, int i, store_webhook_t *w)
{
    col_copy(stmt, i, w->job_id, sizeof w->job_id);
    col_copy(stmt, i + 1, w->url, sizeof w->url);
    col_copy(stmt, i + 2, w->state, sizeof w->state);
    w->attempts = sqlite3_column_int(stmt, i + 3);
    w->next_at = sqlite3_column_int64(stmt, i + 4);
    w->ended_at = sqlite3_column_int64(stmt, i + 5);
    w->delivered_at = sqlite3_column_int64(stmt, i + 6);
    col_copy(stmt, i + 7, w->last_error, sizeof w->last_error);
}

static int webhook_row(sqlite3_stmt *stmt, void *row)
{
    webhook_cols(stmt, 0, row);
    return STORE_OK;
}

static int webhook_read(sqlite_store_t *db, void *arg)
{
    struct read_arg *a = arg;
    sqlite3_stmt *stmt = st(db, S_WEBHOOK_GET);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, a->key);
    int rc = step_row(db, stmt, "reading a webhook");
    if (rc == 1)
        webhook_row(stmt, a->out);
    sqlite3_reset(stmt);
    return rc == 1 ? STORE_OK : rc == 0 ? STORE_NOT_FOUND : STORE_ERR;
}

static int sqlite_webhook_get(store_t *base, const char *job_id, store_webhook_t *out)
{
    struct read_arg a = {job_id, out};
    return read_op(sq(base), webhook_read, &a);
}

/* A row of JOB_COLS then WEBHOOK_COLS (NULLs without a webhook) into j, and into w with
 * *has_webhook set when the job has one. STORE_OK or STORE_ERR (out of memory, j cleared). */
static int job_webhook_row(sqlite3_stmt *stmt, job_t *j, store_webhook_t *w, bool *has_webhook)
{
    int rc = row_to_job(stmt, j);
    *has_webhook = rc == STORE_OK && sqlite3_column_type(stmt, JOB_NCOLS) != SQLITE_NULL;
    if (*has_webhook)
        webhook_cols(stmt, JOB_NCOLS, w);
    return rc;
}

/* The arguments of sqlite_user_job_get's read. */
struct user_job_arg {
    const char *user, *id;
    store_user_job_t *out;
};

/* sqlite_user_job_get's read: the user's row and the job, one statement, one read transaction. */
static int user_job_read(sqlite_store_t *db, void *arg)
{
    struct user_job_arg *a = arg;
    store_user_job_t *o = a->out;
    sqlite3_stmt *stmt = st(db, S_USER_JOB_GET);
    if (!stmt)
        return STORE_ERR;
    bind_text(stmt, 1, a->user);
    bind_text(stmt, 2, a->id);
    int rc = step_row(db, stmt, "reading a user and a job");
    if (rc == 1) {
        user_cols(stmt, JOB_NCOLS + WEBHOOK_NCOLS, &o->user, NULL);
        rc = STORE_OK;
        o->job_rc = STORE_NOT_FOUND;
        if (sqlite3_column_type(stmt, 0) != SQLITE_NULL)
            rc = o->job_rc = job_webhook_row(stmt, &o->job, &o->webhook, &o->has_webhook);
    } else if (rc == 0) {
        rc = STORE_NOT_FOUND;
    }
    sqlite3_reset(stmt);
    return rc;
}

static int sqlite_user_job_get(store_t *base, const char *user, const char *id,
                               store_user_job_t *out)
{
    struct user_job_arg a = {user, id, out};
    return read_op(sq(base), user_job_read, &a);
}

static int sqlite_webhooks_due(store_t *base, int64_t now, int64_t hold_ms, int limit,
                               store_webhook_t **out, size_t *n)
{
    sqlite_store_t *s = sq(base);
    store_webhook_t *v = calloc(limit > 0 ? (size_t)limit : 1, sizeof *v);
    size_t count = 0;
    *out = NULL;
    *n = 0;
    if (!v)
        return store_fail("sqlite: out of memory reading webhooks");
    lock(s);
    int rc = begin(s);
    sqlite3_stmt *stmt =
        rc == STORE_OK
            ? prepare_once(s,
                           "UPDATE webhooks SET next_at = ?2 WHERE job_id IN (SELECT job_id FROM"
                           " webhooks WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at"
                           " LIMIT ?3) RETURNING " WEBHOOK_COLS,
                           "taking due webhooks")
            : NULL;
    if (!stmt)
        rc = STORE_ERR;
    if (stmt) {
        sqlite3_bind_int64(stmt, 1, now);
        sqlite3_bind_int64(stmt, 2, now + hold_ms);
        sqlite3_bind_int(stmt, 3, limit);
    }
    if (rc == STORE_OK)
        rc = step_rows(s, stmt, "taking due webhooks", (size_t)limit, sizeof *v, webhook_row, v,
                       &count);
    sqlite3_finalize(stmt);
    rc = finish(s, rc);
    if (rc != STORE_OK) {
        free(v);
        return rc;
    }
    *out = v;
    *n = count;
    return STORE_OK;
}

static int sqlite_webhook_attempt(store_t *base, const char *job_id, bool delivered,
                                  const char *error, int64_t next_at, bool give_up, int64_t now)
{
    sqlite_store_t *s = sq(base);
    lock(s);
    int rc = begin(s);
    sqlite3_stmt *stmt =
        rc == STORE_OK ? prepare_once(s,
                                      "UPDATE webhooks SET attempts = attempts + 1,"
                                      " state = CASE WHEN ?2 THEN 'delivered' WHEN ?5 THEN 'failed'"
                                      " ELSE 'pending' END,"
                                      " delivered_at = CASE WHEN ?2 THEN ?6 ELSE delivered_at END,"
                                      " last_error = CASE WHEN ?2 THEN last_error ELSE ?3 END,"
                                      " next_at = ?4 WHERE job_id = ?1 AND state = 'pending'",
                                      "recording a webhook attempt")
                       : NULL;
    if (!stmt)
        rc = STORE_ERR;
    if (stmt) {
        bind_text(stmt, 1, job_id);
        sqlite3_bind_int(stmt, 2, delivered);
        bind_text(stmt, 3, error ? error : "");
        sqlite3_bind_int64(stmt, 4, next_at);
        sqlite3_bind_int(stmt, 5, give_up);
        sqlite3_bind_int64(stmt, 6, now);
        rc = run(s, stmt, "recording a webhook attempt");
    }
    sqlite3_finalize(stmt);
    return finish(s, rc);
}

/* store_explain: EXPLAIN QUERY PLAN of the named statement, its steps' details one a line. */
static int sqlite_explain(store_t *base, const char *name, char *out, size_t len)
{
    static const struct {
        const char *name;
        enum stmt_id id;
    } named[] = {
        {"job_get", S_JOB_GET},
        {"user_job_get", S_USER_JOB_GET},
        {"job_by_idem", S_JOB_BY_IDEM},
        {"job_next_seq", S_JOB_NEXT_SEQ},
        {"job_list", S_JOB_LIST},
        {"job_list_status", S_JOB_LIST_STATUS},
        {"job_pick_user", S_JOB_PICK_USER},
        {"job_head", S_JOB_HEAD},
        {"job_requeue", S_JOB_REQUEUE},
        {"reap_list", S_REAP_LIST},
        {"worker_expire", S_WORKER_EXPIRE},
        {"stats_jobs", S_STATS_JOBS},
        {"stats_workers", S_STATS_WORKERS},
        {"purge_list", S_PURGE_LIST},
        {"purge_ledger", S_PURGE_LEDGER},
        {"ledger_list", S_LEDGER_LIST},
        {"usage", S_USAGE},
    };
    sqlite_store_t *s = sq(base);
    const char *sql = NULL;
    for (size_t i = 0; i < sizeof named / sizeof named[0] && !sql; i++)
        if (strcmp(named[i].name, name) == 0)
            sql = stmt_sql[named[i].id];
    if (!sql)
        return STORE_NOT_FOUND;
    char *q = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", sql);
    if (!q)
        return store_fail("sqlite: out of memory explaining %s", name);
    lock(s);
    sqlite3_stmt *stmt = prepare_once(s, q, "explaining a query");
    sqlite3_free(q);
    int rc = stmt ? STORE_OK : STORE_ERR;
    size_t used = 0;
    if (len)
        out[0] = '\0';
    while (stmt && (rc = step_row(s, stmt, "explaining a query")) == 1) {
        const unsigned char *d = sqlite3_column_text(stmt, 3);
        int n = snprintf(out + used, len - used, "%s\n", d ? (const char *)d : "");
        used += n > 0 && (size_t)n < len - used ? (size_t)n : 0;
    }
    sqlite3_finalize(stmt);
    return finish(s, rc < 0 ? STORE_ERR : STORE_OK);
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .migrate = sqlite_migrate,
    .ping = sqlite_ping,
    .user_add = sqlite_user_add,
    .user_get = sqlite_user_get,
    .user_set_disabled = sqlite_user_set_disabled,
    .user_credit = sqlite_user_credit,
    .ledger = sqlite_ledger,
    .job_create = NULL, /* store.c runs a batch of one: group_commit */
    .job_create_many = sqlite_job_create_many,
    .jobs_purge = sqlite_jobs_purge,
    .job_get = sqlite_job_get,
    .job_list = sqlite_job_list,
    .job_cancel = sqlite_job_cancel,
    .job_claim = sqlite_job_claim,
    .job_heartbeat = sqlite_job_heartbeat,
    .job_complete_claim = sqlite_job_complete_claim,
    .job_complete_many = sqlite_job_complete_many,
    .job_fail = sqlite_job_fail,
    .job_release = sqlite_job_release,
    .reap = sqlite_reap,
    .worker_seen = sqlite_worker_seen,
    .worker_gone = sqlite_worker_gone,
    .worker_leases = sqlite_worker_leases,
    .worker_report = sqlite_worker_report,
    .worker_lives = sqlite_worker_lives,
    .usage = sqlite_usage,
    .queue_stats = sqlite_queue_stats,
    .job_counts = sqlite_job_counts,
    .explain = sqlite_explain,
    .job_adopt = sqlite_job_adopt,
    .event_add = sqlite_event_add,
    .events_read = sqlite_events_read,
    .events_last = sqlite_events_last,
    .events_trim = sqlite_events_trim,
    .webhook_get = sqlite_webhook_get,
    .user_job_get = sqlite_user_job_get,
    .workers_list = sqlite_workers_list,
    .webhooks_due = sqlite_webhooks_due,
    .webhook_attempt = sqlite_webhook_attempt,
};
