/* store_pg.c: the PostgreSQL store (DATABASE_URL=postgresql://...), for several server replicas
 * on one database.
 *
 * Semantics are those of store_sqlite.c (same tables, columns, lease rules, charges, queue
 * order); what differs is how concurrency is made safe:
 *
 * - A fixed pool of connections (default 2 x online CPUs + 4, at least 8: the server's front
 *   threads, its create writer, claim dispatcher and reaper; "?pool=N" in the URL, stripped before
 * connecting, or PINGVAS_PG_POOL) behind a mutex and condition variable. Each operation takes one
 *   connection, runs one transaction (READ COMMITTED) and gives it back.
 * - Row locks instead of a database-wide write lock. Lock order is always job row(s), then the
 *   user row (also taken by the triggers that keep users.reserved), then job_totals, so two
 *   transactions never wait for each other in a cycle. A create's reservation is one
 *   conditional statement (UPDATE users ... WHERE balance - reserved >= reserve, which locks the
 *   row, feeding the INSERT of the job), so concurrent creates and charges of one user take
 *   turns and the balance never goes negative. Creates gathered by the server come as a batch
 *   (store_job_create_many) and share one transaction: one commit for all.
 * - Claims pick with FOR UPDATE SKIP LOCKED: two replicas never claim the same job and never
 *   wait on each other's candidate. The reaper takes one expired job per transaction, also
 *   with SKIP LOCKED, so it can run on every replica at once.
 * - Operations that make work available (create, release, retryable fail, reaper requeue,
 *   adopt) run SELECT pg_notify('pingvas_work', tier) in their transaction; store_listen keeps
 *   one extra connection in LISTEN pingvas_work on its own thread and calls back on each
 *   notification, reconnecting with backoff.
 * - Connection loss: an operation on a broken connection fails with STORE_ERR (the server
 *   answers 503) and the connection is dropped; the next operation reconnects. A connection
 *   that went bad while idle in the pool (database restarted) is noticed before use. Every
 *   connection has connect_timeout, TCP keepalives, tcp_user_timeout and a statement_timeout,
 *   so no operation waits forever.
 *
 * Values are always passed as parameters (PQexecParams), never formatted into SQL. */
#include "store/rules.h"
#include "store/store.h"

#ifdef PINGVAS_HAVE_PQ

#include "lib/clock.h"
#include "lib/config.h"
#include "lib/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <math.h>
#include <openssl/rand.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 14
#define ERR_MAX 512
#define POOL_MIN_DEFAULT 8
#define POOL_MAX 256
#define TIMEOUT_DEFAULT_MS 10000 /* one operation, pool wait included (PINGVAS_PG_TIMEOUT) */
#define MAX_PARAMS 20
#define REAP_MAX 1000             /* expired jobs handled per store_reap call */
#define MIGRATE_LOCK "7450124563" /* pg_advisory_xact_lock key of `pingvas migrate` */
#define CHANNEL "pingvas_work"

/* Version 1 of the schema: store_sqlite.c's (its version 2, with the Celery bridge's seed rows)
 * in PostgreSQL types. Times are BIGINT ms since the epoch like SQLite's INTEGER (started_at and
 * completed_at included, see docs/store.md). A row inserted by the seed's API (seed columns
 * only, status 'pending' or 'queued') has seq, queue_pos, created_at and tier NULL until
 * store_job_adopt fills them: listings need a seq, claims and statistics a tier, so no one sees
 * it before. Unlike SQLite, user_id has no foreign key (an unknown user is adopt's
 * STORE_NOT_FOUND rather than the seed's insert failing) and tier has no default. */
static const char schema_v1[] =
    "CREATE TABLE users ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  tier TEXT NOT NULL DEFAULT 'standard',"
    "  balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),"
    "  created_at BIGINT NOT NULL,"
    "  reserved BIGINT NOT NULL DEFAULT 0,"
    "  queued BIGINT NOT NULL DEFAULT 0);"
    "CREATE SEQUENCE generation_jobs_seq;"
    "CREATE TABLE generation_jobs ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN "
    "    ('pending','queued','in_progress','completed','failed','canceled')),"
    "  prompt TEXT NOT NULL,"
    "  negative_prompt TEXT DEFAULT '',"
    "  width INTEGER DEFAULT 512,"
    "  height INTEGER DEFAULT 512,"
    "  steps INTEGER DEFAULT 20,"
    "  cfg_scale DOUBLE PRECISION DEFAULT 7.0,"
    "  seed BIGINT,"
    "  started_at BIGINT,"
    "  completed_at BIGINT,"
    "  image_url TEXT,"
    "  error_message TEXT,"
    "  seq BIGINT UNIQUE,"
    "  model TEXT DEFAULT 'sd15',"
    "  tier TEXT,"
    "  created_at BIGINT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  releases INTEGER NOT NULL DEFAULT 0,"
    "  gpu_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,"
    "  credits_reserved BIGINT NOT NULL DEFAULT 0,"
    "  credits_charged BIGINT NOT NULL DEFAULT 0,"
    "  lease_id TEXT,"
    "  worker_id TEXT,"
    "  lease_expires_at BIGINT,"
    "  queue_pos BIGINT,"
    "  idem_key TEXT);"
    "ALTER SEQUENCE generation_jobs_seq OWNED BY generation_jobs.seq;"
    "CREATE UNIQUE INDEX generation_jobs_idem ON generation_jobs(user_id, idem_key)"
    "  WHERE idem_key IS NOT NULL;"
    "CREATE INDEX generation_jobs_claim ON generation_jobs(tier, status, queue_pos)"
    "  WHERE status IN ('queued','in_progress');"
    "CREATE INDEX generation_jobs_user ON generation_jobs(user_id, seq);"
    "CREATE INDEX generation_jobs_reap ON generation_jobs(lease_expires_at)"
    "  WHERE status = 'in_progress';"
    "CREATE INDEX generation_jobs_fair ON generation_jobs(tier, user_id, queue_pos)"
    "  WHERE status = 'queued';"
    "CREATE INDEX generation_jobs_running ON generation_jobs(tier, user_id)"
    "  WHERE status = 'in_progress';"
    "CREATE TABLE job_totals ("
    "  status TEXT PRIMARY KEY NOT NULL,"
    "  jobs BIGINT NOT NULL DEFAULT 0,"
    "  gpu_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,"
    "  credits_charged BIGINT NOT NULL DEFAULT 0);"
    "INSERT INTO job_totals(status) VALUES ('completed'), ('failed'), ('canceled');"
    /* users.reserved / users.queued and job_totals follow every write of generation_jobs, as
     * SQLite's triggers do. A user row is only touched when its sums change. */
    "CREATE FUNCTION generation_jobs_sums() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "DECLARE\n"
    "  o_res BIGINT := 0; o_q BIGINT := 0; n_res BIGINT := 0; n_q BIGINT := 0;\n"
    "BEGIN\n"
    "  IF TG_OP <> 'INSERT' THEN\n"
    "    IF OLD.status IN ('queued','in_progress') THEN o_res := OLD.credits_reserved; END IF;\n"
    "    IF OLD.status = 'queued' THEN o_q := 1; END IF;\n"
    "  END IF;\n"
    "  IF TG_OP <> 'DELETE' THEN\n"
    "    IF NEW.status IN ('queued','in_progress') THEN n_res := NEW.credits_reserved; END IF;\n"
    "    IF NEW.status = 'queued' THEN n_q := 1; END IF;\n"
    "  END IF;\n"
    "  IF TG_OP = 'UPDATE' AND OLD.user_id = NEW.user_id THEN\n"
    "    IF n_res <> o_res OR n_q <> o_q THEN\n"
    "      UPDATE users SET reserved = reserved + n_res - o_res, queued = queued + n_q - o_q\n"
    "        WHERE name = NEW.user_id;\n"
    "    END IF;\n"
    "  ELSE\n"
    "    IF TG_OP <> 'INSERT' AND (o_res <> 0 OR o_q <> 0) THEN\n"
    "      UPDATE users SET reserved = reserved - o_res, queued = queued - o_q\n"
    "        WHERE name = OLD.user_id;\n"
    "    END IF;\n"
    "    IF TG_OP <> 'DELETE' AND (n_res <> 0 OR n_q <> 0) THEN\n"
    "      UPDATE users SET reserved = reserved + n_res, queued = queued + n_q\n"
    "        WHERE name = NEW.user_id;\n"
    "    END IF;\n"
    "  END IF;\n"
    "  IF TG_OP = 'UPDATE' AND OLD.status = NEW.status AND OLD.gpu_seconds = NEW.gpu_seconds\n"
    "     AND OLD.credits_charged = NEW.credits_charged THEN\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  IF TG_OP <> 'INSERT' AND OLD.status IN ('completed','failed','canceled') THEN\n"
    "    UPDATE job_totals SET jobs = jobs - 1, gpu_seconds = gpu_seconds - OLD.gpu_seconds,\n"
    "      credits_charged = credits_charged - OLD.credits_charged WHERE status = OLD.status;\n"
    "  END IF;\n"
    "  IF TG_OP <> 'DELETE' AND NEW.status IN ('completed','failed','canceled') THEN\n"
    "    UPDATE job_totals SET jobs = jobs + 1, gpu_seconds = gpu_seconds + NEW.gpu_seconds,\n"
    "      credits_charged = credits_charged + NEW.credits_charged WHERE status = NEW.status;\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER generation_jobs_sums AFTER INSERT OR DELETE OR UPDATE OF status, user_id,"
    "  credits_reserved, gpu_seconds, credits_charged ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION generation_jobs_sums();"
    "CREATE TABLE credit_ledger ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  user_id TEXT NOT NULL REFERENCES users(name),"
    "  job_id TEXT REFERENCES generation_jobs(id),"
    "  kind TEXT NOT NULL CHECK (kind IN ('charge','grant')),"
    "  amount BIGINT NOT NULL,"
    "  balance_after BIGINT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  UNIQUE (job_id, kind));"
    "CREATE INDEX credit_ledger_user ON credit_ledger(user_id, id);"
    "CREATE TABLE workers ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  tier TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  last_seen BIGINT NOT NULL);"
    "CREATE INDEX workers_tier ON workers(tier, last_seen);";

/* Version 2: `pingvas user disable` (NULL: active), store_sqlite.c's version 3. */
static const char schema_v2[] = "ALTER TABLE users ADD COLUMN disabled_at BIGINT;";

/* Version 3: cost accounting, store_sqlite.c's version 4. */
static const char schema_v3[] =
    "CREATE TABLE worker_lifetimes ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  tier TEXT NOT NULL,"
    "  instance_type TEXT NOT NULL DEFAULT '',"
    "  capacity_type TEXT NOT NULL DEFAULT '',"
    "  zone TEXT NOT NULL DEFAULT '',"
    "  gpus INTEGER NOT NULL DEFAULT 1,"
    "  started_at BIGINT NOT NULL,"
    "  loaded_at BIGINT,"
    "  last_seen BIGINT NOT NULL,"
    "  ended_at BIGINT,"
    "  busy_ms BIGINT NOT NULL DEFAULT 0);"
    "CREATE INDEX worker_lifetimes_started ON worker_lifetimes(started_at);"
    "CREATE INDEX generation_jobs_completed ON generation_jobs(completed_at)"
    "  WHERE status = 'completed';";

/* Version 4: the running attempt's progress, store_sqlite.c's version 5. */
static const char schema_v4[] = "ALTER TABLE generation_jobs ADD COLUMN progress_step INTEGER;"
                                "ALTER TABLE generation_jobs ADD COLUMN progress_steps INTEGER;";

/* Version 5: the durable event log of GET /api/v1/events (store.h, store_event_t), written by
 * triggers in the transaction of the change (store_sqlite.c's version 6). A sequence value is
 * taken before the transaction commits, so a reader can see seq N+1 before seq N commits: the
 * server's event hub (api/hub.c) waits at such a gap before it passes it. */
#define PG_NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"
/* clang-format off */
static const char schema_v5[] =
    "CREATE TABLE events ("
    "  seq BIGSERIAL PRIMARY KEY,"
    "  created_at BIGINT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  user_id TEXT,"
    "  job_id TEXT,"
    "  data TEXT NOT NULL);"
    "CREATE INDEX events_user ON events(user_id, seq);"
    "CREATE INDEX events_created ON events(created_at);"
    "CREATE FUNCTION events_job() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  IF NEW.status = 'pending' THEN\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN\n"
    "    INSERT INTO events(created_at, kind, user_id, job_id, data) VALUES (" PG_NOW_MS ","
    "      'job', NEW.user_id, NEW.id, json_build_object('id', NEW.id, 'status', NEW.status,"
    "      'tier', NEW.tier, 'attempts', NEW.attempts,"
    "      'error_message', NEW.error_message)::text);\n"
    "  ELSIF NEW.status = 'in_progress' AND NEW.progress_step IS NOT NULL\n"
    "     AND NEW.progress_step IS DISTINCT FROM OLD.progress_step THEN\n"
    "    INSERT INTO events(created_at, kind, user_id, job_id, data) VALUES (" PG_NOW_MS ","
    "      'progress', NEW.user_id, NEW.id, json_build_object('id', NEW.id, 'status',"
    "      NEW.status, 'step', NEW.progress_step, 'steps', NEW.progress_steps)::text);\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER events_job AFTER INSERT OR UPDATE OF status, progress_step"
    "  ON generation_jobs FOR EACH ROW EXECUTE FUNCTION events_job();"
    "CREATE FUNCTION events_worker() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  IF TG_OP = 'DELETE' THEN\n"
    "    INSERT INTO events(created_at, kind, data) VALUES (" PG_NOW_MS ", 'worker',"
    "      json_build_object('id', OLD.id, 'tier', OLD.tier, 'state', 'gone')::text);\n"
    "  ELSIF TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM NEW.state THEN\n"
    "    INSERT INTO events(created_at, kind, data) VALUES (" PG_NOW_MS ", 'worker',"
    "      json_build_object('id', NEW.id, 'tier', NEW.tier, 'state', NEW.state)::text);\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER events_worker AFTER INSERT OR DELETE OR UPDATE OF state ON workers"
    "  FOR EACH ROW EXECUTE FUNCTION events_worker();";
/* clang-format on */

/* Version 6: retention and the per-user cap on stored jobs, store_sqlite.c's version 7. */
static const char schema_v6[] =
    "ALTER TABLE users ADD COLUMN stored BIGINT NOT NULL DEFAULT 0;"
    "UPDATE users SET stored = (SELECT COUNT(*) FROM generation_jobs j WHERE j.user_id = name);"
    "CREATE FUNCTION generation_jobs_stored() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    "  IF TG_OP = 'INSERT' THEN"
    "    UPDATE users SET stored = stored + 1 WHERE name = NEW.user_id;"
    "  ELSE"
    "    UPDATE users SET stored = stored - 1 WHERE name = OLD.user_id;"
    "  END IF;"
    "  RETURN NULL; END $$;"
    "CREATE TRIGGER generation_jobs_stored AFTER INSERT OR DELETE ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION generation_jobs_stored();"
    "CREATE INDEX generation_jobs_ended ON generation_jobs(completed_at)"
    "  WHERE status IN ('completed','failed','canceled');";

/* Version 7: the webhook outbox, store_sqlite.c's version 8. */
/* clang-format off */
static const char schema_v7[] =
    "CREATE TABLE webhooks ("
    "  job_id TEXT PRIMARY KEY NOT NULL,"
    "  url TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'waiting' CHECK (state IN"
    "    ('waiting','pending','delivered','failed')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at BIGINT,"
    "  ended_at BIGINT,"
    "  delivered_at BIGINT,"
    "  last_error TEXT);"
    "CREATE INDEX webhooks_due ON webhooks(next_at) WHERE state = 'pending';"
    "CREATE FUNCTION webhooks_job() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  IF TG_OP = 'DELETE' THEN\n"
    "    DELETE FROM webhooks WHERE job_id = OLD.id;\n"
    "  ELSIF NEW.status IN ('completed','failed','canceled')"
    "     AND OLD.status IS DISTINCT FROM NEW.status THEN\n"
    "    UPDATE webhooks SET state = 'pending', next_at = " PG_NOW_MS ", ended_at = " PG_NOW_MS
    "      WHERE job_id = NEW.id AND state = 'waiting';\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    "CREATE TRIGGER webhooks_job AFTER DELETE OR UPDATE OF status ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION webhooks_job();";
/* clang-format on */

/* Version 8: store_sqlite.c's version 9, a user's jobs of one status through an index. */
static const char schema_v8[] =
    "CREATE INDEX generation_jobs_user_status ON generation_jobs(user_id, status, seq);";

/* Version 9: a create accounts for its own job (CREATE_SQL: one update of the user's row adds
 * its reservation, queued and stored counts, and the statement writes its event), so the row
 * triggers of an INSERT no longer fire for it: three PL/pgSQL calls and a second new version of
 * the user's row per create were most of a create's cost. An inserted row that is queued with a
 * queue position is such a create's (store_job_create is the only writer of one: the seed's API
 * inserts rows without a queue position, `pending` or `queued`, and adopt fills it by an UPDATE,
 * which the triggers follow as before); every other INSERT keeps its triggers. */
#define CREATE_SELF_ACCOUNTED "NEW.status = 'queued' AND NEW.queue_pos IS NOT NULL"
#define ROW_INSERT_TRIGGER(name, fn)                                                               \
    "CREATE TRIGGER " name " AFTER INSERT ON generation_jobs FOR EACH ROW"                         \
    "  WHEN (NOT (" CREATE_SELF_ACCOUNTED ")) EXECUTE FUNCTION " fn "();"
/* clang-format off */
static const char schema_v9[] =
    "DROP TRIGGER IF EXISTS generation_jobs_sums_insert ON generation_jobs;"
    "DROP TRIGGER IF EXISTS generation_jobs_stored_insert ON generation_jobs;"
    "DROP TRIGGER IF EXISTS events_job_insert ON generation_jobs;"
    "DROP TRIGGER generation_jobs_sums ON generation_jobs;"
    "CREATE TRIGGER generation_jobs_sums AFTER DELETE OR UPDATE OF status, user_id,"
    "  credits_reserved, gpu_seconds, credits_charged ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION generation_jobs_sums();"
    ROW_INSERT_TRIGGER("generation_jobs_sums_insert", "generation_jobs_sums")
    "DROP TRIGGER generation_jobs_stored ON generation_jobs;"
    "CREATE TRIGGER generation_jobs_stored AFTER DELETE ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION generation_jobs_stored();"
    ROW_INSERT_TRIGGER("generation_jobs_stored_insert", "generation_jobs_stored")
    "DROP TRIGGER events_job ON generation_jobs;"
    "CREATE TRIGGER events_job AFTER UPDATE OF status, progress_step ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION events_job();"
    ROW_INSERT_TRIGGER("events_job_insert", "events_job");
/* clang-format on */

/* Version 10: the queue, a table of the queued jobs alone (job_id, tier, user_id, queue_pos) kept
 * in the transaction of each change (by triggers, and by a create itself: its queue_pos is its
 * seq), which the claim reads instead of the queued-jobs index of generation_jobs (dropped: nothing
 * else read it). Issue 12, flat as it grows: the claim's fair-share walk over that index cost 2 to
 * 3 times more with a million ended jobs in the table than with none, the same plan and buffers:
 * autovacuum visits generation_jobs after 10 % of its rows changed, so with a large history the
 * queued jobs' pages stay not all-visible and the dead index entries of jobs claimed since stay in
 * the index (an index-only scan then reads the heap for every entry), and the planner's statistics
 * are those of the last ANALYZE (none queued). The queue is as small as the backlog: autovacuum
 * keeps it visible and analyzed whatever the history, and its only index besides the key is the one
 * the claim searches, so no statistics can make the plan walk anything else. */
#define QUEUED_ROW(r)                                                                              \
    "(" r ".status = 'queued' AND " r ".tier IS NOT NULL AND " r ".queue_pos IS NOT NULL)"
/* clang-format off */
static const char schema_v10[] =
    "CREATE TABLE job_queue ("
    "  job_id TEXT PRIMARY KEY NOT NULL,"
    "  tier TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  queue_pos BIGINT NOT NULL);"
    "CREATE INDEX job_queue_fair ON job_queue(tier, user_id, queue_pos);"
    "INSERT INTO job_queue SELECT id, tier, user_id, queue_pos FROM generation_jobs j"
    "  WHERE " QUEUED_ROW("j") ";"
    "DROP INDEX generation_jobs_fair;"
    "CREATE FUNCTION job_queue_sync() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  IF TG_OP <> 'INSERT' THEN\n"
    "    DELETE FROM job_queue WHERE job_id = OLD.id;\n"
    "  END IF;\n"
    "  IF TG_OP <> 'DELETE' AND " QUEUED_ROW("NEW") " THEN\n"
    "    INSERT INTO job_queue VALUES (NEW.id, NEW.tier, NEW.user_id, NEW.queue_pos);\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END $$;\n"
    /* WHEN: the function runs only for a row that leaves or moves in the queue, or enters it
     * by an UPDATE (adopt, requeue); the only INSERT of a queued row with a queue position is a
     * create's (schema_v9), whose statement adds its queue row itself (CREATE_SQL) */
    "CREATE TRIGGER job_queue_delete AFTER DELETE ON generation_jobs FOR EACH ROW"
    "  WHEN (OLD.status = 'queued') EXECUTE FUNCTION job_queue_sync();"
    "CREATE TRIGGER job_queue_update AFTER UPDATE OF status, tier, user_id, queue_pos"
    "  ON generation_jobs FOR EACH ROW WHEN (" QUEUED_ROW("OLD") " IS DISTINCT FROM "
    "  " QUEUED_ROW("NEW") " OR (" QUEUED_ROW("NEW") " AND (OLD.tier, OLD.user_id, OLD.queue_pos)"
    "  IS DISTINCT FROM (NEW.tier, NEW.user_id, NEW.queue_pos)))"
    "  EXECUTE FUNCTION job_queue_sync();";
/* clang-format on */

/* Version 11: the queue in queue order per tier, for the claim's fallback (CLAIM_SQL's b: the
 * tier's first job whose queue row no other claim holds). Its key is the tier as an expression,
 * QUEUE_TIER, that only b searches by: with the plain tier first, statistics that count few rows
 * of a tier made the planner read the fair-share walk's or a head lookup's range through this
 * index and sort it (the tier's whole queue) instead of searching job_queue_fair in order
 * (test_store's test_query_plans_stale_statistics). */
#define QUEUE_TIER "(tier || '')"
static const char schema_v11[] =
    "CREATE INDEX job_queue_order ON job_queue(" QUEUE_TIER ", queue_pos);";

/* Version 12: a claim and a complete keep the derived rows of their job's change themselves, in
 * their own statement (CLAIM_SQL: the queue row deleted, the user's queued count, the event;
 * COMPLETE_SQL: the user's reservation, with its balance in one new version of the user's row, the
 * job_totals row, the event, the webhook made due), so the row triggers of generation_jobs' UPDATEs
 * do not run for them: four PL/pgSQL calls a claim and three a complete, each with its own
 * statements, and a second new version of the user's row per complete, were a third of the
 * backends' CPU per job in bench (b). Such a statement bumps the job's `accounted` column; the
 * UPDATE triggers run only when it is unchanged (TRIGGERS_RUN), so every other writer of a job
 * (fail, release, reap, cancel, adopt, a replica of version 11 during a rolling upgrade, an
 * operator's UPDATE) is followed by the triggers as before. A trigger of DELETE and UPDATE is split
 * in two, as a DELETE trigger's WHEN cannot read NEW. */
#define TRIGGERS_RUN "(OLD.accounted = NEW.accounted)"
/* clang-format off */
static const char schema_v12[] =
    "ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS accounted INTEGER NOT NULL DEFAULT 0;"
    "DROP TRIGGER IF EXISTS generation_jobs_sums_delete ON generation_jobs;"
    "DROP TRIGGER generation_jobs_sums ON generation_jobs;"
    "CREATE TRIGGER generation_jobs_sums_delete AFTER DELETE ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION generation_jobs_sums();"
    "CREATE TRIGGER generation_jobs_sums AFTER UPDATE OF status, user_id, credits_reserved,"
    "  gpu_seconds, credits_charged ON generation_jobs FOR EACH ROW WHEN " TRIGGERS_RUN
    "  EXECUTE FUNCTION generation_jobs_sums();"
    "DROP TRIGGER events_job ON generation_jobs;"
    "CREATE TRIGGER events_job AFTER UPDATE OF status, progress_step ON generation_jobs"
    "  FOR EACH ROW WHEN " TRIGGERS_RUN " EXECUTE FUNCTION events_job();"
    "DROP TRIGGER IF EXISTS webhooks_job_delete ON generation_jobs;"
    "DROP TRIGGER webhooks_job ON generation_jobs;"
    "CREATE TRIGGER webhooks_job_delete AFTER DELETE ON generation_jobs"
    "  FOR EACH ROW EXECUTE FUNCTION webhooks_job();"
    "CREATE TRIGGER webhooks_job AFTER UPDATE OF status ON generation_jobs"
    "  FOR EACH ROW WHEN " TRIGGERS_RUN " EXECUTE FUNCTION webhooks_job();"
    "DROP TRIGGER job_queue_update ON generation_jobs;"
    "CREATE TRIGGER job_queue_update AFTER UPDATE OF status, tier, user_id, queue_pos"
    "  ON generation_jobs FOR EACH ROW WHEN (" TRIGGERS_RUN " AND (" QUEUED_ROW("OLD")
    "  IS DISTINCT FROM " QUEUED_ROW("NEW") " OR (" QUEUED_ROW("NEW") " AND (OLD.tier, OLD.user_id,"
    "  OLD.queue_pos) IS DISTINCT FROM (NEW.tier, NEW.user_id, NEW.queue_pos))))"
    "  EXECUTE FUNCTION job_queue_sync();";
/* clang-format on */

/* A job's event (as events_job writes it) for each row of the JOB_COLS rows of src. */
#define JOB_EVENT_INSERT(src)                                                                      \
    "INSERT INTO events(created_at, kind, user_id, job_id, data) SELECT " PG_NOW_MS ", 'job',"     \
    " user_id, id, json_build_object('id', id, 'status', status, 'tier', tier, 'attempts',"        \
    " attempts, 'error_message', error_message)::text FROM " src

/* Version 13: three of generation_jobs' eleven indexes dropped, which no read needed since the
 * queue table (schema_v10) but which every insert and every status change (the jobs' updates are
 * never HOT: status is indexed) wrote: generation_jobs_claim (tier, status, queue_pos) of the live
 * jobs (the queue statistics count job_queue and the running-jobs index, a requeue's front is
 * job_queue_order's), generation_jobs_completed (usage searches generation_jobs_ended, of every
 * ended job, by the same column) and the unique index of seq (its values come from a sequence;
 * no statement searches it). Six index entries fewer per job (create, claim, complete: two each),
 * and six fewer indexes opened and locked by each of those statements. */
static const char schema_v13[] = "DROP INDEX IF EXISTS generation_jobs_claim;"
                                 "DROP INDEX IF EXISTS generation_jobs_completed;"
                                 "ALTER TABLE generation_jobs DROP CONSTRAINT IF EXISTS"
                                 " generation_jobs_seq_key;";

/* Version 14: the worker event trigger of an UPDATE runs only when the state changes (WHEN): every
 * claim records its worker busy (CLAIM_SQL's upsert, which sets the state it has), and the
 * PL/pgSQL call found the state unchanged and wrote nothing nearly every time. INSERT and DELETE
 * keep their trigger (a DELETE trigger's WHEN cannot read NEW). */
static const char schema_v14[] =
    "DROP TRIGGER IF EXISTS events_worker_update ON workers;"
    "DROP TRIGGER events_worker ON workers;"
    "CREATE TRIGGER events_worker AFTER INSERT OR DELETE ON workers"
    "  FOR EACH ROW EXECUTE FUNCTION events_worker();"
    "CREATE TRIGGER events_worker_update AFTER UPDATE OF state ON workers"
    "  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION events_worker();";

static const char *const migrations[SCHEMA_VERSION] = {
    schema_v1, schema_v2, schema_v3,  schema_v4,  schema_v5,  schema_v6,  schema_v7,
    schema_v8, schema_v9, schema_v10, schema_v11, schema_v12, schema_v13, schema_v14};

/* The job columns read by row_to_job, in this order (as in store_sqlite.c). */
#define JOB_COLS                                                                                   \
    "id, user_id, tier, status, prompt, negative_prompt, model, width, height, steps, "            \
    "cfg_scale, seed, seq, created_at, started_at, completed_at, attempts, releases, image_url, "  \
    "error_message, gpu_seconds, credits_reserved, credits_charged, lease_id, worker_id, "         \
    "lease_expires_at, progress_step, progress_steps"
#define COL_LEASE 23
/* A column some statements return after JOB_COLS: the job has a webhook delivery (job.h
 * has_webhook), read by one_job. */
#define COL_HAS_WEBHOOK 28
#define HAS_WEBHOOK_COL "EXISTS (SELECT 1 FROM webhooks WHERE webhooks.job_id = $1)"

/* Statements of the hot paths and background ticks that store_pg_explain shows (tests check
 * their plans search an index). */
/* A user's jobs, newest first, and those of one status ($4): two statements, so that neither
 * plan depends on whether a status was given (a generic plan of one statement with "$4 IS NULL OR
 * status = $4" could not use generation_jobs_user_status). */
#define SQL_JOB_LIST                                                                               \
    "SELECT " JOB_COLS " FROM generation_jobs WHERE user_id = $1 AND seq < $2"                     \
    " ORDER BY seq DESC LIMIT $3"
#define SQL_JOB_LIST_STATUS                                                                        \
    "SELECT " JOB_COLS " FROM generation_jobs WHERE user_id = $1 AND seq < $2 AND status = $4"     \
    " ORDER BY seq DESC LIMIT $3"
#define SQL_PURGE_LIST                                                                             \
    "SELECT id FROM generation_jobs WHERE status IN ('completed','failed','canceled')"             \
    " AND completed_at < $1 ORDER BY completed_at LIMIT $2"
#define SQL_REAP_LIST                                                                              \
    "SELECT id, attempts FROM generation_jobs WHERE status = 'in_progress'"                        \
    " AND lease_expires_at < $1 ORDER BY queue_pos DESC LIMIT 1"
#define SQL_QUEUE_STATS                                                                            \
    "SELECT (SELECT COUNT(*) FROM job_queue WHERE tier = $1),"                                     \
    " (SELECT COUNT(*) FROM generation_jobs WHERE tier = $1 AND status = 'in_progress'),"          \
    " (SELECT COUNT(*) FROM workers WHERE tier = $1 AND last_seen >= $2),"                         \
    " (SELECT COUNT(*) FROM workers WHERE tier = $1 AND last_seen >= $2 AND state = 'idle')"
#define SQL_LEDGER_LIST                                                                            \
    "SELECT id, kind, job_id, amount, balance_after, created_at FROM credit_ledger"                \
    " WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
#define SQL_USAGE                                                                                  \
    "SELECT user_id, tier, completed_at / 86400000 AS day, COUNT(*), SUM(gpu_seconds)"             \
    " FROM generation_jobs WHERE status = 'completed' AND completed_at >= $1"                      \
    " AND completed_at < $2 GROUP BY user_id, tier, day ORDER BY day, user_id, tier"

/* An extra result column that wakes idle workers of the row's tier on every replica: the
 * notification is sent when the transaction commits (store_listen receives it). */
#define NOTIFY_COL ", pg_notify('" CHANNEL "', COALESCE(tier, 'standard'))"

/* One before the smallest queued position of the job's tier (the queue's, by job_queue_order),
 * or its own position. */
#define FRONT_POS                                                                                  \
    "COALESCE((SELECT queue_pos FROM job_queue q WHERE " QUEUE_TIER " = generation_jobs.tier"      \
    " ORDER BY queue_pos LIMIT 1) - 1, queue_pos)"
#define SQL_REQUEUE_POS "UPDATE generation_jobs SET queue_pos = " FRONT_POS " WHERE id = $1"

typedef struct pg_store {
    store_t base; /* first: a store_t * is a pg_store_t * */
    char **keys;  /* connection keywords and values, NULL-terminated (owned) */
    char **vals;
    char where[256]; /* host:port/db for messages, no password */
    int pool_size;
    int64_t timeout_ms; /* bound of one operation: pool wait, connect and statements */
    PGconn **conns;     /* pool_size slots; NULL = not connected */
    unsigned *prepared; /* per slot: the PREP_ statements its connection has prepared (bits) */
    bool no_prepare;    /* PINGVAS_PG_PREPARE=off: every statement unnamed (PgBouncer) */
    int *free_slots;
    int nfree;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* The database stalled: clock_mono_ms() of the last operation that got no answer within the
     * timeout, 0 once one got an answer. While set, one operation at a time (the probe) tries the
     * database and the others fail at once (op_open): a request that waited behind another on a
     * front thread (each may hold several connections) then gets its 503 within a timeout, not
     * after a timeout for every request queued before it. */
    _Atomic int64_t stalled_at;
    atomic_int probing; /* an operation is the probe */
    /* listener */
    pthread_t listener;
    bool listening;
    atomic_int stop;
    int wake_pipe[2];
    void (*cb)(void *arg);
    void *cb_arg;
} pg_store_t;

/* One operation's connection. */
typedef struct op {
    pg_store_t *s;
    int slot;
    PGconn *c;
    unsigned prepared; /* the connection's prepared statements (pg_store_t.prepared) */
    bool tx;
    bool begin_pending; /* op_begin: BEGIN goes out with the first statement (pipe_run) */
    int64_t deadline;   /* clock_mono_ms() by which the operation gives up (STORE_ERR) */
    bool probe;         /* the one operation trying a stalled database (pg_store_t.stalled_at) */
    bool answered;      /* the database answered this operation at least once */
} op_t;

/* Set when a statement of this thread's operation failed because the database chose its
 * transaction as a deadlock's victim (40P01) or could not serialize it (40001): the transaction
 * was rolled back whole, so the operation may run again (tx_again). Cleared by op_open. */
static _Thread_local bool tx_conflict;

/* Tries an operation gets when its transaction is rolled back by a conflict (tx_conflict). The
 * store takes row locks in one order (users by name, after the jobs, job_totals last), so a
 * conflict needs a writer outside that order (an older replica in a rolling upgrade, a manual
 * UPDATE); the retry keeps it from becoming a 503. */
#define TX_TRIES 4

/* Text parameters of one statement. */
typedef struct params {
    const char *v[MAX_PARAMS];
    char buf[MAX_PARAMS][32];
    int n;
} params_t;

static const struct store_ops pg_ops;

static pg_store_t *pgs(store_t *s)
{
    return (pg_store_t *)s;
}

static void p_text(params_t *p, const char *v)
{
    p->v[p->n++] = v;
}

static void p_i64(params_t *p, int64_t v)
{
    snprintf(p->buf[p->n], sizeof p->buf[p->n], "%lld", (long long)v);
    p->v[p->n] = p->buf[p->n];
    p->n++;
}

static void p_f64(params_t *p, double v)
{
    if (!isfinite(v))
        v = 0;
    snprintf(p->buf[p->n], sizeof p->buf[p->n], "%.17g", v);
    p->v[p->n] = p->buf[p->n];
    p->n++;
}

static const char *get_s(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static int64_t get_i64(const PGresult *r, int row, int col, int64_t dflt)
{
    if (PQgetisnull(r, row, col))
        return dflt;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A BOOLEAN column: true when it is true (PostgreSQL's text "t"), false when false or NULL. */
static bool get_bool(const PGresult *r, int row, int col)
{
    return strcmp(PQgetvalue(r, row, col), "t") == 0; /* "" for NULL */
}

static double get_f64(const PGresult *r, int row, int col, double dflt)
{
    if (PQgetisnull(r, row, col))
        return dflt;
    return strtod(PQgetvalue(r, row, col), NULL);
}

static void get_copy(const PGresult *r, int row, int col, char *dst, size_t size)
{
    const char *v = get_s(r, row, col);
    snprintf(dst, size, "%s", v ? v : "");
}

/* ---- pool ---- */

/* Server notices ("relation already exists, skipping") go to the debug log, not stderr. */
static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        n--;
    log_debug("event=store_notice msg=\"%.*s\"", (int)n, msg);
}

/* Sets the message of a connection that failed (libpq's, without its trailing newlines). */
static void connect_failed(pg_store_t *s, PGconn *c)
{
    char msg[ERR_MAX];
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    store_fail("postgresql %s: cannot connect: %s", s->where, msg);
}

/* The database gave no answer within the operation's timeout: says so (what: the operation, or
 * NULL for a connect) and marks it stalled. STORE_ERR. */
static int no_answer(pg_store_t *s, const char *what)
{
    atomic_store(&s->stalled_at, clock_mono_ms());
    return store_fail("postgresql %s: %s: no answer within %lld ms (the database is stalled or "
                      "unreachable; PINGVAS_PG_TIMEOUT)",
                      s->where, what ? what : "cannot connect", (long long)s->timeout_ms);
}

/* A new connection made by clock_mono_ms() deadline, or NULL with the message set. Caller owns
 * it (PQfinish). Non-blocking (PQconnectPoll): libpq's connect_timeout would let a connect that
 * started late in an operation (after a wait for a pool slot) run a whole timeout past the
 * operation's deadline, and a stalled database's kernel still accepts the TCP connection. */
static PGconn *connect_new(pg_store_t *s, int64_t deadline)
{
    PGconn *c = PQconnectStartParams((const char *const *)s->keys, (const char *const *)s->vals, 1);
    if (!c)
        return store_fail("postgresql %s: out of memory connecting", s->where), NULL;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(c) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = deadline - clock_mono_ms();
        struct pollfd pfd = {.fd = PQsocket(c),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = left > 0 ? poll(&pfd, 1, left > 60000 ? 60000 : (int)left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 && left > 60000)
            continue;
        if (n <= 0) {
            no_answer(s, NULL);
            PQfinish(c);
            return NULL;
        }
        st = PQconnectPoll(c);
    }
    if (PQstatus(c) != CONNECTION_OK) {
        connect_failed(s, c);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

/* True when an idle pooled connection still works: reads whatever the server sent while it
 * sat in the pool (a shutdown notice, EOF) without blocking. */
static bool conn_alive(PGconn *c)
{
    if (PQstatus(c) != CONNECTION_OK)
        return false;
    if (PQconsumeInput(c) == 0)
        return false;
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL)
        PQfreemem(n);
    return PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE;
}

/* Takes a connection from the pool, connecting it if needed. STORE_OK or STORE_ERR. */
static int op_open(pg_store_t *s, op_t *op)
{
    memset(op, 0, sizeof *op);
    op->s = s;
    op->slot = -1;
    tx_conflict = false;
    int64_t stalled = atomic_load(&s->stalled_at);
    if (stalled) {
        if (atomic_exchange(&s->probing, 1) != 0)
            return store_fail("postgresql %s: the database gave no answer within %lld ms %lld ms "
                              "ago (stalled or unreachable; PINGVAS_PG_TIMEOUT); an operation is "
                              "trying it again",
                              s->where, (long long)s->timeout_ms,
                              (long long)(clock_mono_ms() - stalled));
        op->probe = true;
    }
    op->deadline = clock_mono_ms() + s->timeout_ms;
    struct timespec ts = clock_deadline(s->timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (s->nfree == 0) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT && s->nfree == 0) {
            pthread_mutex_unlock(&s->mu);
            if (op->probe)
                atomic_store(&s->probing, 0);
            return store_fail("postgresql %s: all %d pool connections busy for %lld ms (the "
                              "database is slow or stalled; or raise ?pool=N in DATABASE_URL)",
                              s->where, s->pool_size, (long long)s->timeout_ms);
        }
    }
    op->slot = s->free_slots[--s->nfree];
    op->c = s->conns[op->slot];
    op->prepared = s->prepared[op->slot];
    s->conns[op->slot] = NULL;
    pthread_mutex_unlock(&s->mu);
    if (op->c && !conn_alive(op->c)) {
        PQfinish(op->c);
        op->c = NULL;
    }
    if (!op->c) {
        op->c = connect_new(s, op->deadline);
        op->prepared = 0;
    }
    if (!op->c && op->probe) { /* a failed connect: the next operation probes */
        atomic_store(&s->probing, 0);
        op->probe = false;
    }
    return op->c ? STORE_OK : STORE_ERR;
}

/* Gives the connection back; a broken one (or one left inside a transaction) is closed. */
static void op_close(op_t *op)
{
    pg_store_t *s = op->s;
    if (op->answered && op->c) /* it answered: not (or no longer) stalled */
        atomic_store(&s->stalled_at, 0);
    if (op->probe)
        atomic_store(&s->probing, 0);
    op->probe = op->answered = false;
    if (op->slot < 0)
        return;
    if (op->c && (PQstatus(op->c) != CONNECTION_OK || PQtransactionStatus(op->c) != PQTRANS_IDLE)) {
        PQfinish(op->c);
        op->c = NULL;
    }
    pthread_mutex_lock(&s->mu);
    s->conns[op->slot] = op->c;
    s->prepared[op->slot] = op->c ? op->prepared : 0;
    s->free_slots[s->nfree++] = op->slot;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    op->c = NULL;
    op->slot = -1;
}

/* Sets the message from a failed result (or the connection) and returns STORE_ERR. */
static int fail_res(op_t *op, const char *what, const PGresult *r)
{
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg)
        msg = PQerrorMessage(op->c);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char buf[ERR_MAX];
    snprintf(buf, sizeof buf, "%s", msg && *msg ? msg : "unknown error");
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (state && (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0))
        tx_conflict = true;
    if (state && strcmp(state, "42P01") == 0)
        return store_fail("postgresql %s: %s: %s (run `pingvas migrate` to create the schema)",
                          op->s->where, what, buf);
    return store_fail("postgresql %s: %s: %s%s%s%s", op->s->where, what, buf, state ? " [" : "",
                      state ? state : "", state ? "]" : "");
}

/* Drops the operation's connection, mid-statement: the database rolls its transaction back
 * when it notices (a stalled server, when it resumes). */
static void op_drop(op_t *op)
{
    PQfinish(op->c);
    op->c = NULL;
    op->prepared = 0;
}

/* Waits, until the operation's deadline, until the connection can hand over its next result,
 * and returns PQgetResult's answer (NULL between the statements of a pipeline and after the last
 * result). *ok is false (message set, connection dropped) when the database did not answer in
 * time or the connection broke. A stalled server (SIGSTOP, a hung host) still has its kernel
 * acknowledge our packets, so neither keepalives nor tcp_user_timeout notice it: this deadline
 * is what bounds the wait. */
static PGresult *next_result(op_t *op, const char *what, bool *ok)
{
    *ok = true;
    for (;;) {
        if (!PQisBusy(op->c)) {
            PGresult *r = PQgetResult(op->c);
            op->answered |= r != NULL;
            return r;
        }
        int64_t left = op->deadline - clock_mono_ms();
        struct pollfd pfd = {.fd = PQsocket(op->c), .events = POLLIN};
        int n = left > 0 ? poll(&pfd, 1, left > 60000 ? 60000 : (int)left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 && left > 60000)
            continue;
        if (n <= 0 || PQconsumeInput(op->c) == 0) {
            if (n <= 0)
                no_answer(op->s, what);
            else
                fail_res(op, what, NULL);
            op_drop(op);
            *ok = false;
            return NULL;
        }
    }
}

/* Waits for the answer to the statement just sent; returns its last result (NULL with the
 * message set and the connection dropped when next_result failed). */
static PGresult *await_result(op_t *op, const char *what)
{
    PGresult *last = NULL;
    bool ok;
    PGresult *r;
    while ((r = next_result(op, what, &ok)) != NULL) {
        PQclear(last);
        last = r;
    }
    if (!ok) {
        PQclear(last);
        return NULL;
    }
    return last;
}

/* ---- pipelines ---- */

/* One statement of a pipeline (pipe_run): its text and parameters in, its result out (the caller
 * PQclears it; NULL when the pipeline failed). prep: 0, or the PREP_ number under which the
 * connection prepares it once and then runs it without planning it again. */
typedef struct stmt {
    const char *sql;
    const params_t *p;
    int prep;
    PGresult *r;
} stmt_t;

/* The statements prepared once per connection (stmt_t.prep; at most 31). */
#define PREP_CREATE 1
#define PREP_CLAIM 2
#define PREP_HEARTBEAT 3
#define PREP_JOB_LOCK 4
#define PREP_COMPLETE 5
#define PREP_USER_GET 6
#define PREP_JOB_GET 7
#define PREP_WEBHOOK_GET 8
#define PREP_CREATE_LOCK 9
#define PREP_CREATE_KEY 10
#define PREP_CREATE_ACCOUNT 11
#define PREP_EVENTS_READ                                                                           \
    12 /* the event hub reads the log after every create batch, claim and complete */
#define PREP_WEBHOOKS_DUE 13  /* the webhook sender looks after every job that ended */
#define PREP_USERS_LOCK 14    /* a complete batch locks its users' rows in name order */
#define PREP_CLAIMED_COUNT 15 /* the queued counts of the users whose jobs were claimed */
#define PREP_CLAIM_ALONE 16   /* a claim in a transaction of its own (CLAIM_ALONE_SQL) */

/* The queries of one pipeline in order: Q_BEGIN, Q_PREPARE + statement number (a statement's
 * prepare before its first use on the connection), statement numbers. */
#define Q_BEGIN (-1)
#define Q_PREPARE (1 << 20)

typedef struct plan {
    int *q;
    int nq;
} plan_t;

/* Lays out the queries of st[0..n), BEGIN first when the operation's transaction is still to
 * open (plan->q malloc'd; STORE_ERR when out of memory). */
static int plan_make(const op_t *op, const stmt_t *st, int n, plan_t *plan)
{
    plan->nq = 0;
    plan->q = malloc((size_t)(2 * n + 1) * sizeof *plan->q);
    if (!plan->q)
        return STORE_ERR;
    unsigned have = op->prepared;
    bool named = !op->s->no_prepare;
    if (op->begin_pending)
        plan->q[plan->nq++] = Q_BEGIN;
    for (int i = 0; i < n; i++) {
        if (named && st[i].prep > 0 && !(have & (1u << st[i].prep))) {
            plan->q[plan->nq++] = Q_PREPARE + i;
            have |= 1u << st[i].prep;
        }
        plan->q[plan->nq++] = i;
    }
    return STORE_OK;
}

/* Sends one query of a plan (named: prepared statements are in use). */
static bool send_one(PGconn *c, const stmt_t *st, int q, bool named)
{
    char name[16];
    if (q == Q_BEGIN)
        return PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    const stmt_t *s = &st[q >= Q_PREPARE ? q - Q_PREPARE : q];
    const char *const *v = s->p ? s->p->v : NULL;
    int nv = s->p ? s->p->n : 0;
    snprintf(name, sizeof name, "pingvas_%d", s->prep);
    if (q >= Q_PREPARE)
        return PQsendPrepare(c, name, s->sql, 0, NULL);
    if (named && s->prep > 0)
        return PQsendQueryPrepared(c, name, nv, v, NULL, NULL, 0);
    return PQsendQueryParams(c, s->sql, nv, NULL, v, NULL, NULL, 0);
}

/* Queues the plan's queries and a sync, and writes them all; reads what arrives meanwhile so that
 * neither side blocks on a full socket. STORE_ERR with the connection dropped when sending failed
 * or the deadline passed. */
static int pipe_send(op_t *op, const char *what, const stmt_t *st, const plan_t *plan)
{
    PGconn *c = op->c;
    bool ok = PQenterPipelineMode(c) && PQsetnonblocking(c, 1) == 0;
    for (int i = 0; ok && i < plan->nq; i++)
        ok = send_one(c, st, plan->q[i], !op->s->no_prepare);
    ok = ok && PQpipelineSync(c);
    int f;
    while (ok && (f = PQflush(c)) != 0) {
        int64_t left = op->deadline - clock_mono_ms();
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN | POLLOUT};
        int pn = left > 0 ? poll(&pfd, 1, left > 60000 ? 60000 : (int)left) : 0;
        if (pn < 0 && errno == EINTR)
            continue;
        ok = f > 0 && (pn > 0 || left > 60000) && (!(pfd.revents & POLLIN) || PQconsumeInput(c));
        if (!ok && pn == 0 && left <= 60000)
            return no_answer(op->s, what), op_drop(op), STORE_ERR;
    }
    if (!ok)
        return fail_res(op, what, NULL), op_drop(op), STORE_ERR;
    return STORE_OK;
}

/* Reads the answers of a pipeline pipe_send sent: the last result of each query into res[] (nq
 * of them), then the sync; leaves pipeline mode. *got counts the queries answered. STORE_ERR with
 * the connection dropped (results cleared) when the database did not answer in time. */
static int pipe_read(op_t *op, const char *what, PGresult **res, int nq, int *got)
{
    bool ok = true;
    for (*got = 0; ok && *got < nq; (*got)++) {
        PGresult *r;
        while ((r = next_result(op, what, &ok)) != NULL) {
            PQclear(res[*got]);
            res[*got] = r;
        }
        if (!ok)
            break;
    }
    PGresult *sync = ok ? next_result(op, what, &ok) : NULL;
    ok = ok && sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (ok && (PQexitPipelineMode(op->c) == 0 || PQsetnonblocking(op->c, 0) != 0)) {
        fail_res(op, what, NULL);
        ok = false;
    }
    if (ok)
        return STORE_OK;
    if (op->c) { /* an answer out of step: the connection cannot be trusted any more */
        store_fail("postgresql %s: %s: the pipeline's answers were out of step", op->s->where,
                   what);
        op_drop(op);
    }
    for (int i = 0; i < nq; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
    return STORE_ERR;
}

/* The outcome of a pipeline's answers: STORE_OK when every query succeeded (the statements'
 * results moved to st[]), else STORE_ERR with the first failure's message (results cleared).
 * Records the statements prepared, and the operation's transaction open (PIPE_BEGIN). */
static int pipe_outcome(op_t *op, const char *what, stmt_t *st, const plan_t *plan, PGresult **res)
{
    int rc = STORE_OK;
    for (int i = 0; i < plan->nq; i++) {
        int q = plan->q[i];
        ExecStatusType t = res[i] ? PQresultStatus(res[i]) : PGRES_FATAL_ERROR;
        bool good = t == PGRES_TUPLES_OK || t == PGRES_COMMAND_OK;
        if (q == Q_BEGIN)
            op->tx = true;
        if (good && q >= Q_PREPARE)
            op->prepared |= 1u << st[q - Q_PREPARE].prep;
        if (rc == STORE_OK && !good)
            rc = fail_res(op, what, res[i]);
    }
    for (int i = 0; i < plan->nq; i++) {
        if (rc == STORE_OK && plan->q[i] >= 0 && plan->q[i] < Q_PREPARE)
            st[plan->q[i]].r = res[i];
        else
            PQclear(res[i]);
        res[i] = NULL;
    }
    return rc;
}

/* One try of pipe_run on the operation's connection; *got counts the queries answered. */
static int pipe_try(op_t *op, const char *what, stmt_t *st, int n, int *got)
{
    plan_t plan;
    PGresult **res = NULL;
    int rc = plan_make(op, st, n, &plan);
    if (rc == STORE_OK && !(res = calloc((size_t)plan.nq, sizeof *res)))
        rc = STORE_ERR;
    if (rc != STORE_OK)
        store_fail("postgresql %s: %s: out of memory", op->s->where, what);
    else if (!op->c)
        rc = store_fail("postgresql %s: %s: the connection was dropped", op->s->where, what);
    if (rc == STORE_OK)
        rc = pipe_send(op, what, st, &plan);
    if (rc == STORE_OK)
        rc = pipe_read(op, what, res, plan.nq, got);
    if (rc == STORE_OK)
        rc = pipe_outcome(op, what, st, &plan, res);
    free(plan.q);
    free(res);
    return rc;
}

/* Runs statements st[0..n) in one round trip (libpq pipeline mode), with the BEGIN of op_begin
 * before them when it is still to be sent. Never COMMIT in a pipeline: a COMMIT sent before the
 * answers arrived commits even when the operation gave up waiting (a stalled database resumes
 * and runs it), so a 503 would hide a write (test_faults_store); op_end commits. STORE_OK with
 * every st[i].r set, or STORE_ERR (message set; a failed statement aborts those after it and
 * leaves the transaction to op_end's ROLLBACK). A pooled connection found dead by the pipeline
 * that opens the transaction, before any answer, is replaced once (nothing it ran can stay). */
static int pipe_run(op_t *op, const char *what, stmt_t *st, int n)
{
    for (int i = 0; i < n; i++)
        st[i].r = NULL;
    int got = 0;
    bool first = op->begin_pending;
    int rc = pipe_try(op, what, st, n, &got);
    if (rc != STORE_OK && !op->c && !got && first && clock_mono_ms() < op->deadline &&
        (op->c = connect_new(op->s, op->deadline)) != NULL)
        rc = pipe_try(op, what, st, n, &got);
    op->begin_pending = false;
    return rc;
}

/* Runs one statement through pipe_run (prepared as prep when above 0): its result, or NULL with
 * the message set. */
static PGresult *q_pipe(op_t *op, const char *what, int prep, const char *sql, const params_t *p)
{
    stmt_t st = {.sql = sql, .p = p, .prep = prep};
    return pipe_run(op, what, &st, 1) == STORE_OK ? st.r : NULL;
}

/* Runs one statement. Returns the result (caller PQclear()s it) when it succeeded, else NULL
 * with the message set. */
static PGresult *q(op_t *op, const char *what, const char *sql, const params_t *p)
{
    if (op->begin_pending)
        return q_pipe(op, what, 0, sql, p);
    if (!op->c)
        return store_fail("postgresql %s: %s: the connection was dropped", op->s->where, what),
               NULL;
    if (!PQsendQueryParams(op->c, sql, p ? p->n : 0, NULL, p ? p->v : NULL, NULL, NULL, 0)) {
        fail_res(op, what, NULL);
        op_drop(op);
        return NULL;
    }
    PGresult *r = await_result(op, what);
    if (!op->c)
        return NULL;
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    fail_res(op, what, r);
    PQclear(r);
    return NULL;
}

/* Runs a statement whose rows are not needed. */
static int exec(op_t *op, const char *what, const char *sql, const params_t *p)
{
    PGresult *r = q(op, what, sql, p);
    if (!r)
        return STORE_ERR;
    PQclear(r);
    return STORE_OK;
}

/* Takes a connection for a transaction. Its BEGIN goes out with the first statement, in one
 * round trip (pipe_run); a connection that turns out to be broken then, before any answer
 * (nothing has been done yet), is replaced once. */
static int op_begin(pg_store_t *s, op_t *op)
{
    int rc = op_open(s, op);
    op->begin_pending = rc == STORE_OK;
    return rc;
}

/* Ends an operation: commits when rc is STORE_OK, else rolls back (a refusal writes nothing);
 * gives the connection back. Returns rc, or STORE_ERR when the commit failed. */
static int op_end(op_t *op, int rc)
{
    if (op->c && op->tx) {
        if (rc == STORE_OK) {
            PGresult *r = q(op, "commit", "COMMIT", NULL);
            if (!r || strcmp(PQcmdStatus(r), "COMMIT") != 0) {
                if (r)
                    store_fail("postgresql %s: commit was rolled back", op->s->where);
                rc = STORE_ERR;
            }
            PQclear(r);
        }
        if (op->c && PQstatus(op->c) == CONNECTION_OK &&
            PQtransactionStatus(op->c) != PQTRANS_IDLE) {
            char first[ERR_MAX];
            snprintf(first, sizeof first, "%s", store_fail_text());
            PQclear(q(op, "rollback", "ROLLBACK", NULL));
            store_fail("%s", first); /* keeps the first error */
        }
        op->tx = false;
    }
    op_close(op);
    return rc;
}

/* Whether an operation that ended with rc runs again: its transaction was a conflict's victim
 * (tx_conflict, rolled back whole) and it has tries left (*tries counts those made). */
static bool tx_again(pg_store_t *s, int rc, int *tries)
{
    if (rc != STORE_ERR || !tx_conflict || ++*tries >= TX_TRIES)
        return false;
    log_info("event=store_retry store=\"%s\" reason=conflict try=%d", s->where, *tries + 1);
    return true;
}

/* rc = call, run again while tx_again says so (call runs a whole transaction). */
#define TX_RETRY(s, rc, call)                                                                      \
    do {                                                                                           \
        int tries_ = 0;                                                                            \
        do                                                                                         \
            (rc) = (call);                                                                         \
        while (tx_again((s), (rc), &tries_));                                                      \
    } while (0)

/* ---- rows ---- */

/* Fills j (zeroed first) from row `row` of a JOB_COLS result. NULL parameters (a seed row
 * not adopted yet) read as the defaults. STORE_ERR on allocation failure (j cleared). */
static int row_to_job(const PGresult *r, int row, job_t *j)
{
    memset(j, 0, sizeof *j);
    get_copy(r, row, 0, j->id, sizeof j->id);
    get_copy(r, row, 1, j->user, sizeof j->user);
    get_copy(r, row, 2, j->tier, sizeof j->tier);
    j->status = job_status_stored(get_s(r, row, 3));
    const char *v = get_s(r, row, 4);
    j->params.prompt = strdup(v ? v : "");
    v = get_s(r, row, 5);
    j->params.negative_prompt = strdup(v ? v : "");
    v = get_s(r, row, 6);
    snprintf(j->params.model, sizeof j->params.model, "%s", v ? v : JOB_DEFAULT_MODEL);
    j->params.width = (int)get_i64(r, row, 7, JOB_DEFAULT_SIZE);
    j->params.height = (int)get_i64(r, row, 8, JOB_DEFAULT_SIZE);
    j->params.steps = (int)get_i64(r, row, 9, JOB_DEFAULT_STEPS);
    j->params.cfg_scale = get_f64(r, row, 10, JOB_DEFAULT_CFG);
    j->params.seed = get_i64(r, row, 11, 0);
    j->seq = get_i64(r, row, 12, 0);
    j->created_at = get_i64(r, row, 13, 0);
    j->started_at = get_i64(r, row, 14, 0);
    j->completed_at = get_i64(r, row, 15, 0);
    j->attempts = (int)get_i64(r, row, 16, 0);
    j->releases = (int)get_i64(r, row, 17, 0);
    v = get_s(r, row, 18);
    j->image_key = v ? strdup(v) : NULL;
    bool oom = v && !j->image_key;
    v = get_s(r, row, 19);
    j->error_message = v ? strdup(v) : NULL;
    oom = oom || (v && !j->error_message) || !j->params.prompt || !j->params.negative_prompt;
    j->gpu_seconds = get_f64(r, row, 20, 0);
    j->credits_reserved = get_i64(r, row, 21, 0);
    j->credits_charged = get_i64(r, row, 22, 0);
    if (j->status == JOB_IN_PROGRESS)
        get_copy(r, row, COL_LEASE, j->lease_id, sizeof j->lease_id);
    get_copy(r, row, 24, j->worker_id, sizeof j->worker_id);
    j->lease_expires_at = get_i64(r, row, 25, 0);
    j->progress_step = (int)get_i64(r, row, 26, 0);
    j->progress_steps = (int)get_i64(r, row, 27, 0);
    if (oom) {
        job_clear(j);
        return store_fail("postgresql: out of memory reading a job");
    }
    return STORE_OK;
}

#define SQL_JOB_GET "SELECT " JOB_COLS " FROM generation_jobs WHERE id = $1"

/* The JOB_COLS row of r into out (may be NULL), its raw lease_id to lease if not NULL
 * (JOB_ID_SIZE bytes); STORE_NOT_FOUND when r has no row. Does not clear r. */
static int job_from(const PGresult *r, job_t *out, char *lease)
{
    if (PQntuples(r) == 0)
        return STORE_NOT_FOUND;
    if (lease)
        get_copy(r, 0, COL_LEASE, lease, JOB_ID_SIZE);
    return out ? row_to_job(r, 0, out) : STORE_OK;
}

/* Loads job id into out (may be NULL), locking the row when lock_row. The raw lease_id goes
 * to lease if not NULL (JOB_ID_SIZE bytes). STORE_NOT_FOUND if absent. */
static int load_job(op_t *op, const char *id, bool lock_row, job_t *out, char *lease)
{
    params_t p = {0};
    p_text(&p, id);
    PGresult *r = lock_row ? q_pipe(op, "loading job", PREP_JOB_LOCK, SQL_JOB_GET " FOR UPDATE", &p)
                           : q_pipe(op, "loading job", PREP_JOB_GET, SQL_JOB_GET, &p);
    if (!r)
        return STORE_ERR;
    int rc = job_from(r, out, lease);
    PQclear(r);
    return rc;
}

/* ---- open, close, schema ---- */

static void free_kv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static void stop_listener(pg_store_t *s)
{
    if (!s->listening)
        return;
    atomic_store(&s->stop, 1);
    ssize_t w = write(s->wake_pipe[1], "x", 1);
    (void)w;
    pthread_join(s->listener, NULL);
    s->listening = false;
}

static void pg_close(store_t *base)
{
    pg_store_t *s = pgs(base);
    if (!s)
        return;
    stop_listener(s);
    if (s->wake_pipe[0] >= 0)
        close(s->wake_pipe[0]);
    if (s->wake_pipe[1] >= 0)
        close(s->wake_pipe[1]);
    for (int i = 0; s->conns && i < s->pool_size; i++)
        if (s->conns[i])
            PQfinish(s->conns[i]);
    free(s->conns);
    free(s->free_slots);
    free(s->prepared);
    free_kv(s->keys);
    free_kv(s->vals);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* Parses a pool size "1".."256"; -1 if invalid. */
static int parse_pool(const char *v, size_t len)
{
    char buf[16];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, v, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long n = strtol(buf, &end, 10);
    if (errno || *end || n < 1 || n > POOL_MAX)
        return -1;
    return (int)n;
}

/* Copies url without its "pool=N" query parameter into a new string (caller frees) and
 * stores N in *pool (unchanged when absent). NULL with err set when N is invalid. */
static char *strip_pool(const char *url, int *pool, char *err, size_t errlen)
{
    size_t len = strlen(url);
    char *out = malloc(len + 1);
    if (!out) {
        snprintf(err, errlen, "out of memory opening the PostgreSQL store");
        return NULL;
    }
    const char *qm = strchr(url, '?');
    size_t base = qm ? (size_t)(qm - url) : len;
    memcpy(out, url, base);
    size_t o = base;
    if (qm) {
        const char *p = qm + 1;
        char sep = '?';
        while (*p) {
            const char *amp = strchr(p, '&');
            size_t plen = amp ? (size_t)(amp - p) : strlen(p);
            if (plen >= 5 && strncmp(p, "pool=", 5) == 0) {
                int n = parse_pool(p + 5, plen - 5);
                if (n < 0) {
                    snprintf(err, errlen,
                             "DATABASE_URL: pool must be a number from 1 to %d (got '%.*s')",
                             POOL_MAX, (int)(plen - 5), p + 5);
                    free(out);
                    return NULL;
                }
                *pool = n;
            } else if (plen > 0) {
                out[o++] = sep;
                memcpy(out + o, p, plen);
                o += plen;
                sep = '&';
            }
            p = amp ? amp + 1 : p + plen;
        }
    }
    out[o] = '\0';
    return out;
}

/* Opens "postgresql://..." lazily: connections are made on first use, so the store opens while
 * the database is down and recovers by itself. The URL is checked here. Caller owns the result
 * (store_close); NULL with a message in err. */
/* PINGVAS_PG_TIMEOUT and PINGVAS_PG_POOL. 0, or -1 with err. */
static int pg_env(int64_t *timeout_ms, int *pool, bool *no_prepare, char *err, size_t errlen)
{
    const char *penv = getenv("PINGVAS_PG_PREPARE");
    *no_prepare = penv && (strcmp(penv, "off") == 0 || strcmp(penv, "0") == 0);
    if (penv && *penv && !*no_prepare && strcmp(penv, "on") != 0 && strcmp(penv, "1") != 0) {
        snprintf(err, errlen, "PINGVAS_PG_PREPARE: must be on or off (got '%s')", penv);
        return -1;
    }
    const char *tenv = getenv("PINGVAS_PG_TIMEOUT");
    if (tenv && *tenv &&
        (config_parse_duration(tenv, timeout_ms) != 0 || *timeout_ms < 100 ||
         *timeout_ms > 600000)) {
        snprintf(err, errlen, "PINGVAS_PG_TIMEOUT: must be a duration from 100ms to 10m (got '%s')",
                 tenv);
        return -1;
    }
    const char *env = getenv("PINGVAS_PG_POOL");
    if (env && *env && (*pool = parse_pool(env, strlen(env))) < 0) {
        snprintf(err, errlen, "PINGVAS_PG_POOL: must be a number from 1 to %d (got '%s')", POOL_MAX,
                 env);
        return -1;
    }
    return 0;
}

/* "host:port/db" for messages, from the parsed connection options. */
static void pg_where(pg_store_t *s, const PQconninfoOption *opts)
{
    const char *host = NULL, *port = NULL, *db = NULL;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0 || (strcmp(o->keyword, "hostaddr") == 0 && !host))
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
    }
    snprintf(s->where, sizeof s->where, "%s:%s/%s", host ? host : "localhost", port ? port : "5432",
             db ? db : "");
}

/* The connection keywords: defaults first, then the URL (expanded as dbname; owned from here
 * on), so the URL can override them. The connect and statement timeouts follow the operation's
 * bound (libpq's minimum is 2 s). 0, or -1 out of memory. */
static int pg_conn_params(pg_store_t *s, char *url, int64_t timeout_ms)
{
    char connect_s[16], options[128];
    int64_t tsec = (timeout_ms + 999) / 1000;
    snprintf(connect_s, sizeof connect_s, "%lld", (long long)(tsec < 2 ? 2 : tsec > 5 ? 5 : tsec));
    snprintf(options, sizeof options,
             "-c statement_timeout=%lld -c idle_in_transaction_session_timeout=60000",
             (long long)timeout_ms);
    const char *const defaults[][2] = {
        {"connect_timeout", connect_s},  {"keepalives", "1"},       {"keepalives_idle", "10"},
        {"keepalives_interval", "5"},    {"keepalives_count", "3"}, {"tcp_user_timeout", "15000"},
        {"application_name", "pingvas"}, {"options", options},
    };
    size_t nd = sizeof defaults / sizeof defaults[0];
    s->keys = calloc(nd + 2, sizeof *s->keys);
    s->vals = calloc(nd + 2, sizeof *s->vals);
    bool oom = !s->keys || !s->vals;
    for (size_t i = 0; !oom && i < nd; i++) {
        s->keys[i] = strdup(defaults[i][0]);
        s->vals[i] = strdup(defaults[i][1]);
        oom = !s->keys[i] || !s->vals[i];
    }
    if (oom) {
        free(url);
        return -1;
    }
    s->keys[nd] = strdup("dbname");
    s->vals[nd] = url;
    return s->keys[nd] ? 0 : -1;
}

store_t *store_pg_open(const char *url, char *err, size_t errlen)
{
    pg_store_t *s = NULL;
    store_t *result = NULL;
    char *clean = NULL, *perr = NULL;
    PQconninfoOption *opts = NULL;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN); /* the pool is sized from the CPU count */
    int pool = ncpu > 0 && ncpu < 64 ? (int)ncpu * 2 + 4 : POOL_MIN_DEFAULT;
    if (pool < POOL_MIN_DEFAULT)
        pool = POOL_MIN_DEFAULT;
    int64_t timeout_ms = TIMEOUT_DEFAULT_MS;
    bool no_prepare = false;
    if (pg_env(&timeout_ms, &pool, &no_prepare, err, errlen) != 0 ||
        !(clean = strip_pool(url, &pool, err, errlen)))
        goto out;
    opts = PQconninfoParse(clean, &perr);
    if (!opts) {
        snprintf(err, errlen, "DATABASE_URL: not a valid PostgreSQL URL: %s",
                 perr ? perr : "out of memory");
        PQfreemem(perr);
        goto out;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory opening the PostgreSQL store");
        goto out;
    }
    s->base.ops = &pg_ops;
    s->wake_pipe[0] = s->wake_pipe[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pg_where(s, opts);
    int oom = pg_conn_params(s, clean, timeout_ms) != 0;
    clean = NULL; /* pg_conn_params owns it */
    s->pool_size = pool;
    s->timeout_ms = timeout_ms;
    s->no_prepare = no_prepare;
    s->conns = calloc((size_t)pool, sizeof *s->conns);
    s->free_slots = calloc((size_t)pool, sizeof *s->free_slots);
    s->prepared = calloc((size_t)pool, sizeof *s->prepared);
    if (oom || !s->conns || !s->free_slots || !s->prepared) {
        snprintf(err, errlen, "out of memory opening the PostgreSQL store");
        goto out;
    }
    for (int i = 0; i < pool; i++)
        s->free_slots[s->nfree++] = pool - 1 - i;
    result = &s->base;
    s = NULL;
out:
    if (s)
        pg_close(&s->base);
    PQconninfoFree(opts);
    free(clean);
    return result;
}

/* Creates the schema or upgrades it to SCHEMA_VERSION in one transaction, under an advisory
 * lock, so replicas starting together migrate once and the others wait and find it done. */
static int pg_migrate(store_t *base)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_begin(s, &op);
    int version = 0;
    PGresult *r = NULL;
    if (rc != STORE_OK)
        goto out;
    rc = exec(&op, "locking for migration", "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ")", NULL);
    if (rc == STORE_OK)
        rc = exec(&op, "creating schema_version",
                  "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", NULL);
    if (rc != STORE_OK)
        goto out;
    r = q(&op, "reading schema_version", "SELECT COALESCE(MAX(version), 0) FROM schema_version",
          NULL);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    version = (int)get_i64(r, 0, 0, 0);
    if (version > SCHEMA_VERSION) {
        rc = store_fail("postgresql %s: schema version %d is newer than this pingvas (%d); "
                        "upgrade pingvas",
                        s->where, version, SCHEMA_VERSION);
        goto out;
    }
    for (int v = version + 1; v <= SCHEMA_VERSION && rc == STORE_OK; v++) {
        /* several statements: the simple query protocol, no parameters */
        PGresult *m = PQexec(op.c, migrations[v - 1]);
        if (PQresultStatus(m) != PGRES_COMMAND_OK && PQresultStatus(m) != PGRES_TUPLES_OK)
            rc = fail_res(&op, "migrating", m);
        PQclear(m);
    }
    if (rc == STORE_OK && version < SCHEMA_VERSION) {
        params_t p = {0};
        p_i64(&p, SCHEMA_VERSION);
        rc = exec(&op, "recording schema_version", "DELETE FROM schema_version", NULL);
        if (rc == STORE_OK)
            rc = exec(&op, "recording schema_version",
                      "INSERT INTO schema_version(version) VALUES ($1)", &p);
    }
out:
    PQclear(r);
    return op_end(&op, rc);
}

static int pg_ping(store_t *base)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc == STORE_OK)
        rc = exec(&op, "ping", "SELECT 1 FROM schema_version LIMIT 1", NULL);
    return op_end(&op, rc);
}

/* ---- users and credits ---- */

#define USER_COLS                                                                                  \
    "name, tier, balance, created_at, reserved, queued, COALESCE(disabled_at, 0), stored"

/* Fills u (zeroed first) from the USER_COLS row of r (and *queued, if not NULL); STORE_NOT_FOUND
 * when r has no row. Does not clear r. */
static int user_from(const PGresult *r, user_t *u, int64_t *queued)
{
    memset(u, 0, sizeof *u);
    if (PQntuples(r) == 0)
        return STORE_NOT_FOUND;
    get_copy(r, 0, 0, u->name, sizeof u->name);
    get_copy(r, 0, 1, u->tier, sizeof u->tier);
    u->balance = get_i64(r, 0, 2, 0);
    u->created_at = get_i64(r, 0, 3, 0);
    u->reserved = get_i64(r, 0, 4, 0);
    if (queued)
        *queued = get_i64(r, 0, 5, 0);
    u->disabled_at = get_i64(r, 0, 6, 0);
    u->stored = get_i64(r, 0, 7, 0);
    return STORE_OK;
}

#define SQL_USER_GET "SELECT " USER_COLS " FROM users WHERE name = $1"

/* Reads a user's row (locked FOR UPDATE when lock_row). STORE_NOT_FOUND if absent. */
static int read_user(op_t *op, const char *name, bool lock_row, user_t *u, int64_t *queued)
{
    params_t p = {0};
    memset(u, 0, sizeof *u);
    p_text(&p, name);
    PGresult *r = q(op, "reading user", lock_row ? SQL_USER_GET " FOR UPDATE" : SQL_USER_GET, &p);
    if (!r)
        return STORE_ERR;
    int rc = user_from(r, u, queued);
    PQclear(r);
    return rc;
}

#define BALANCE_SQL "UPDATE users SET balance = $2 WHERE name = $1"
#define LEDGER_SQL                                                                                 \
    "INSERT INTO credit_ledger(user_id, job_id, kind, amount, balance_after, created_at)"          \
    " VALUES ($1, $2, $3, $4, $5, $6)"

static void balance_params(params_t *p, const char *name, int64_t balance)
{
    memset(p, 0, sizeof *p);
    p_text(p, name);
    p_i64(p, balance);
}

static int set_balance(op_t *op, const char *name, int64_t balance)
{
    params_t p;
    balance_params(&p, name, balance);
    return exec(op, "updating balance", BALANCE_SQL, &p);
}

static void ledger_params(params_t *p, const char *user, const char *job_id, const char *kind,
                          int64_t amount, int64_t balance_after, int64_t now)
{
    memset(p, 0, sizeof *p);
    p_text(p, user);
    p_text(p, job_id);
    p_text(p, kind);
    p_i64(p, amount);
    p_i64(p, balance_after);
    p_i64(p, now);
}

static int add_ledger(op_t *op, const char *user, const char *job_id, const char *kind,
                      int64_t amount, int64_t balance_after, int64_t now)
{
    params_t p;
    ledger_params(&p, user, job_id, kind, amount, balance_after, now);
    return exec(op, "writing the ledger", LEDGER_SQL, &p);
}

static int pg_user_add(store_t *base, const char *name, const char *tier, int64_t credits,
                       int64_t now)
{
    pg_store_t *s = pgs(base);
    op_t op = {.slot = -1};
    PGresult *r = NULL;
    int rc;
    if (credits < 0)
        return STORE_CONFLICT;
    rc = op_begin(s, &op);
    if (rc != STORE_OK)
        goto out;
    params_t p = {0};
    p_text(&p, name);
    p_text(&p, tier && *tier ? tier : tier_names[0]);
    p_i64(&p, credits);
    p_i64(&p, now);
    r = q(&op, "adding user",
          "INSERT INTO users(name, tier, balance, created_at) VALUES ($1, $2, $3, $4)"
          " ON CONFLICT (name) DO NOTHING",
          &p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    if (strcmp(PQcmdTuples(r), "1") != 0) {
        rc = STORE_EXISTS;
        goto out;
    }
    if (credits > 0)
        rc = add_ledger(&op, name, NULL, "grant", credits, credits, now);
out:
    PQclear(r);
    return op_end(&op, rc);
}

static int pg_user_get(store_t *base, const char *name, user_t *out)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc == STORE_OK)
        rc = read_user(&op, name, false, out, NULL);
    return op_end(&op, rc);
}

static int pg_user_set_disabled(store_t *base, const char *name, bool disabled, int64_t now)
{
    pg_store_t *s = pgs(base);
    op_t op;
    PGresult *r = NULL;
    int rc = op_open(s, &op);
    if (rc != STORE_OK)
        goto out;
    params_t p = {0};
    p_text(&p, name);
    p_i64(&p, disabled ? now : 0);
    r = q(&op, "disabling user",
          "UPDATE users SET disabled_at = CASE WHEN $2::bigint = 0 THEN NULL"
          " ELSE COALESCE(disabled_at, $2::bigint) END WHERE name = $1",
          &p);
    if (!r)
        rc = STORE_ERR;
    else if (strcmp(PQcmdTuples(r), "1") != 0)
        rc = STORE_NOT_FOUND;
out:
    PQclear(r);
    return op_end(&op, rc);
}

static int user_credit_once(store_t *base, const char *name, int64_t delta, int64_t now,
                            int64_t *balance_out)
{
    pg_store_t *s = pgs(base);
    op_t op;
    user_t u;
    int64_t balance;
    int rc = op_begin(s, &op);
    if (rc != STORE_OK)
        goto out;
    rc = read_user(&op, name, true, &u, NULL);
    if (rc != STORE_OK)
        goto out;
    rc = store_rule_grant(&u, delta, &balance);
    if (rc != STORE_OK)
        goto out;
    rc = set_balance(&op, name, balance);
    if (rc == STORE_OK)
        rc = add_ledger(&op, name, NULL, "grant", delta, balance, now);
    if (rc == STORE_OK && balance_out)
        *balance_out = balance;
out:
    return op_end(&op, rc);
}

/* user_credit_once, run again when its transaction was a conflict's victim (TX_RETRY). */
static int pg_user_credit(store_t *base, const char *name, int64_t delta, int64_t now,
                          int64_t *balance_out)
{
    int rc;
    TX_RETRY(pgs(base), rc, user_credit_once(base, name, delta, now, balance_out));
    return rc;
}

static int pg_ledger(store_t *base, const char *name, int limit, ledger_entry_t **out, size_t *n)
{
    pg_store_t *s = pgs(base);
    op_t op = {.slot = -1};
    PGresult *r = NULL;
    ledger_entry_t *v = NULL;
    int rc = STORE_OK;
    *out = NULL;
    *n = 0;
    if (limit <= 0)
        goto out;
    rc = op_open(s, &op);
    if (rc != STORE_OK)
        goto out;
    params_t p = {0};
    p_text(&p, name);
    p_i64(&p, limit);
    r = q(&op, "reading the ledger", SQL_LEDGER_LIST, &p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    int rows = PQntuples(r);
    if (rows > 0) {
        v = calloc((size_t)rows, sizeof *v);
        if (!v) {
            rc = store_fail("postgresql: out of memory reading the ledger");
            goto out;
        }
    }
    for (int i = 0; i < rows; i++) {
        ledger_entry_t *e = &v[i];
        e->id = get_i64(r, i, 0, 0);
        get_copy(r, i, 1, e->kind, sizeof e->kind);
        get_copy(r, i, 2, e->job_id, sizeof e->job_id);
        e->amount = get_i64(r, i, 3, 0);
        e->balance_after = get_i64(r, i, 4, 0);
        e->created_at = get_i64(r, i, 5, 0);
    }
    *out = v;
    *n = (size_t)rows;
    v = NULL;
out:
    free(v);
    PQclear(r);
    return op_end(&op, rc);
}

/* ---- jobs ---- */

/* Reads the single job row of r into out; STORE_ERR when there is none. */
static int one_job(op_t *op, PGresult *r, const char *what, job_t *out)
{
    if (!r)
        return STORE_ERR;
    int rc = PQntuples(r) == 1 ? row_to_job(r, 0, out)
                               : store_fail("postgresql %s: %s: no row", op->s->where, what);
    if (rc == STORE_OK && PQnfields(r) > COL_HAS_WEBHOOK)
        out->has_webhook = get_bool(r, 0, COL_HAS_WEBHOOK);
    PQclear(r);
    return rc;
}

/* A batch of creates (create_run) is one transaction of three round trips whatever its size.
 * First, with the BEGIN: each user's row locked (CREATE_LOCK_SQL, in user order, so batches lock
 * users in one order, and a create's competitor for its Idempotency-Key, which holds the row
 * until it commits, is seen by what follows), then each key's job looked up (CREATE_KEY_SQL).
 * The admission rule then runs here on the locked rows, create after create (rules.c: active,
 * key unused, queued and stored caps, balance - reserved >= reserve), each admitted create
 * counted into its user's row as the next one sees it. Second: one CREATE_SQL for all the
 * admitted creates (their jobs, events, webhooks and queue rows from arrays of their values: the
 * INSERT triggers do not fire for it, schema_v9) and one CREATE_ACCOUNT_SQL per user (its
 * reservations, queued and stored counts: one new version of the user's row per batch). Third:
 * COMMIT (op_end). */
#define CREATE_LOCK_SQL SQL_USER_GET " FOR UPDATE"
#define CREATE_KEY_SQL                                                                             \
    "SELECT " JOB_COLS " FROM generation_jobs WHERE user_id = $1 AND idem_key = $2"
#define CREATE_ACCOUNT_SQL                                                                         \
    "UPDATE users SET reserved = reserved + $2::BIGINT, queued = queued + $3::BIGINT,"             \
    " stored = stored + $3::BIGINT WHERE name = $1"
/* The batch's admitted creates as one statement: each column of theirs one text array (in
 * create_params' order, CREATE_COLS of them), its rows in batch order; the webhooks straight from
 * the arrays (a job's url is not in its row). */
#define CREATE_COLS 15
/* clang-format off */
#define CREATE_SQL                                                                                 \
    "WITH d AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],"  \
    "  $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[],"    \
    "  $13::TEXT[], $14::TEXT[], $15::TEXT[]) AS d(id, user_id, prompt, negative_prompt, width,"   \
    "  height, steps, cfg_scale, seed, model, created_at, reserved, idem_key, tier, url)),"       \
    " ins AS (INSERT INTO generation_jobs(id, user_id, status, prompt, negative_prompt, width,"   \
    "  height, steps, cfg_scale, seed, seq, model, tier, created_at, credits_reserved, queue_pos," \
    "  idem_key) SELECT id, user_id, 'queued', prompt, negative_prompt, width::INTEGER,"           \
    "  height::INTEGER, steps::INTEGER, cfg_scale::DOUBLE PRECISION, seed::BIGINT, v, model,"      \
    "  tier, created_at::BIGINT, reserved::BIGINT, v, idem_key"                                    \
    "  FROM (SELECT d.*, nextval('generation_jobs_seq') AS v FROM d) n RETURNING " JOB_COLS "),"   \
    " ev AS (" JOB_EVENT_INSERT("ins") "),"                                                       \
    " w AS (INSERT INTO webhooks(job_id, url) SELECT id, url FROM d WHERE url IS NOT NULL),"       \
    " qu AS (INSERT INTO job_queue SELECT id, tier, user_id, seq FROM ins)"                        \
    " SELECT ins.*, pg_notify('" CHANNEL "', COALESCE(ins.tier, 'standard')) FROM ins"
/* clang-format on */

/* The values of create c in CREATE_SQL (its arrays' elements), the new job's id first. */
static void create_params(params_t *p, const store_create_t *c, const char *id, const char *tier)
{
    const job_params_t *prm = c->p;
    memset(p, 0, sizeof *p);
    p_text(p, id);
    p_text(p, c->user);
    p_text(p, prm->prompt ? prm->prompt : "");
    p_text(p, prm->negative_prompt ? prm->negative_prompt : "");
    p_i64(p, prm->width);
    p_i64(p, prm->height);
    p_i64(p, prm->steps);
    p_f64(p, prm->cfg_scale);
    p_i64(p, store_rule_seed(prm->seed));
    p_text(p, prm->model[0] ? prm->model : JOB_DEFAULT_MODEL);
    p_i64(p, c->now);
    p_i64(p, store_rule_reservation(c->reserve));
    p_text(p, c->idem_key);
    p_text(p, tier);
    p_text(p, prm->webhook_url);
}

/* One user of a create batch: its row as locked, then as the batch's creates change it. */
typedef struct batch_user {
    params_t p; /* CREATE_LOCK_SQL, then CREATE_ACCOUNT_SQL */
    user_t u;
    int64_t queued;
    int found;      /* user_from's code */
    int64_t added;  /* creates admitted */
    int64_t amount; /* their reservations */
} batch_user_t;

/* One create of a batch. */
typedef struct batch_create {
    store_create_t *c;
    batch_user_t *u;
    params_t p;                /* CREATE_KEY_SQL, then its values in CREATE_SQL */
    int key;                   /* its CREATE_KEY_SQL's index in the first round trip, or -1 */
    struct batch_create *same; /* an earlier create of the batch with its key (a replay of it) */
    char id[JOB_ID_SIZE];
} batch_create_t;

/* Whether e was admitted (create_admit): a row of the batch's CREATE_SQL. */
static bool admitted(const batch_create_t *e)
{
    return e->c->rc == STORE_OK;
}

/* The first round trip: the batch's users locked (their rows in bu, *nu of them) and its keys
 * looked up; st holds the key lookups' results from index *nu (caller clears them). */
static int create_lock(op_t *op, batch_create_t *bc, size_t n, batch_user_t *bu, int *nu,
                       stmt_t *st)
{
    int m = 0;
    *nu = 0;
    for (size_t k = 0; k < n; k++) {
        if (k == 0 || strcmp(bc[k].c->user, bc[k - 1].c->user) != 0) {
            batch_user_t *u = &bu[(*nu)++];
            memset(u, 0, sizeof *u);
            p_text(&u->p, bc[k].c->user);
            st[m++] = (stmt_t){.sql = CREATE_LOCK_SQL, .p = &u->p, .prep = PREP_CREATE_LOCK};
        }
        bc[k].u = &bu[*nu - 1];
    }
    for (size_t k = 0; k < n; k++) {
        if (!bc[k].c->idem_key)
            continue;
        memset(&bc[k].p, 0, sizeof bc[k].p);
        p_text(&bc[k].p, bc[k].c->user);
        p_text(&bc[k].p, bc[k].c->idem_key);
        bc[k].key = m;
        st[m++] = (stmt_t){.sql = CREATE_KEY_SQL, .p = &bc[k].p, .prep = PREP_CREATE_KEY};
    }
    int rc = pipe_run(op, "locking users", st, m);
    for (int i = 0; i < *nu; i++) {
        bu[i].found = rc == STORE_OK ? user_from(st[i].r, &bu[i].u, &bu[i].queued) : STORE_ERR;
        PQclear(st[i].r);
        st[i].r = NULL;
    }
    return rc;
}

/* The admission of create e on its user's locked row as the batch's earlier creates left it:
 * its code (STORE_OK: admitted and counted into the row), e->c->out filled for a replay. */
static int create_admit(batch_create_t *bc, batch_create_t *e, const stmt_t *st)
{
    store_create_t *c = e->c;
    batch_user_t *u = e->u;
    e->same = NULL;
    if (u->found != STORE_OK)
        return u->found;
    if (u->u.disabled_at)
        return STORE_DISABLED;
    if (e->key >= 0 && PQntuples(st[e->key].r) > 0)
        return row_to_job(st[e->key].r, 0, &c->out) == STORE_OK ? STORE_EXISTS : STORE_ERR;
    for (batch_create_t *o = bc; c->idem_key && o < e && !e->same; o++)
        if (o->u == u && admitted(o) && o->c->idem_key && strcmp(o->c->idem_key, c->idem_key) == 0)
            e->same = o;
    if (e->same)
        return STORE_EXISTS;
    int rc = store_rule_admit(&u->u, u->queued, c->reserve, c->max_queued, c->max_stored);
    if (rc == STORE_OK) {
        int64_t amount = store_rule_reservation(c->reserve);
        u->u.reserved += amount;
        u->amount += amount;
        u->queued++;
        u->u.stored++;
        u->added++;
    }
    return rc;
}

/* A PostgreSQL array literal of text (arr_add): s NULL until its first element. */
typedef struct pg_arr {
    char *s;
    size_t len, cap; /* len: up to its closing brace */
} pg_arr_t;

/* Appends v (NULL: an SQL NULL) to a, quoted; false when out of memory. */
static bool arr_add(pg_arr_t *a, const char *v)
{
    size_t need = a->len + (v ? 2 * strlen(v) : 4) + 5; /* , "" } NUL */
    if (need > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        while (cap < need)
            cap *= 2;
        char *s = realloc(a->s, cap);
        if (!s)
            return false;
        a->s = s;
        a->cap = cap;
    }
    a->s[a->len] = a->len ? ',' : '{';
    a->len++;
    if (!v) {
        memcpy(a->s + a->len, "NULL", 4);
        a->len += 4;
    } else {
        a->s[a->len++] = '"';
        for (; *v; v++) {
            if (*v == '"' || *v == '\\')
                a->s[a->len++] = '\\';
            a->s[a->len++] = *v;
        }
        a->s[a->len++] = '"';
    }
    memcpy(a->s + a->len, "}", 2);
    return true;
}

/* The row of job id in CREATE_SQL's result r (its rows in batch order: *next the one expected),
 * or -1. */
static int create_row(const PGresult *r, const char *id, int *next)
{
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        int row = (*next + i) % rows;
        if (strcmp(PQgetvalue(r, row, 0), id) == 0) {
            *next = row + 1;
            return row;
        }
    }
    return -1;
}

/* The admitted creates' values as CREATE_SQL's arrays a, their ids new; false when out of
 * memory. */
static bool create_arrays(batch_create_t *bc, size_t n, pg_arr_t *a)
{
    for (size_t k = 0; k < n; k++) {
        if (!admitted(&bc[k]))
            continue;
        job_new_id(bc[k].id, bc[k].c->now);
        create_params(&bc[k].p, bc[k].c, bc[k].id, bc[k].u->u.tier);
        for (int i = 0; i < CREATE_COLS; i++)
            if (!arr_add(&a[i], bc[k].p.v[i]))
                return false;
    }
    return true;
}

/* The second round trip: the admitted creates' CREATE_SQL (one statement) and each user's
 * CREATE_ACCOUNT_SQL; each admitted create's and replay's job into its out. */
static int create_write(op_t *op, batch_create_t *bc, size_t n, batch_user_t *bu, int nu,
                        stmt_t *st)
{
    pg_arr_t a[CREATE_COLS] = {0};
    params_t p = {0};
    int m = 0;
    int rc = create_arrays(bc, n, a)
                 ? STORE_OK
                 : store_fail("postgresql %s: out of memory creating jobs", op->s->where);
    for (int i = 0; i < CREATE_COLS; i++)
        p_text(&p, a[i].s);
    if (a[0].s)
        st[m++] = (stmt_t){.sql = CREATE_SQL, .p = &p, .prep = PREP_CREATE};
    for (int i = 0; i < nu; i++) {
        if (!bu[i].added)
            continue;
        p_i64(&bu[i].p, bu[i].amount);
        p_i64(&bu[i].p, bu[i].added);
        st[m++] = (stmt_t){.sql = CREATE_ACCOUNT_SQL, .p = &bu[i].p, .prep = PREP_CREATE_ACCOUNT};
    }
    if (rc == STORE_OK && m)
        rc = pipe_run(op, "inserting jobs", st, m);
    int next = 0;
    for (size_t k = 0; k < n && rc == STORE_OK; k++) {
        batch_create_t *e = bc[k].same ? bc[k].same : &bc[k];
        int row = admitted(e) ? create_row(st[0].r, e->id, &next) : -1;
        if (admitted(e) && (row < 0 || row_to_job(st[0].r, row, &bc[k].c->out) != STORE_OK))
            rc = row < 0 ? store_fail("postgresql %s: job %s: no row", op->s->where, e->id)
                         : STORE_ERR;
    }
    for (int i = 0; i < m; i++)
        PQclear(st[i].r);
    for (int i = 0; i < CREATE_COLS; i++)
        free(a[i].s);
    return rc;
}

/* Runs the creates items[order[k]] (k < n; order NULL: in turn, one user) as one transaction
 * (see CREATE_LOCK_SQL): STORE_OK with each rc set, or STORE_ERR (nothing committed, or the
 * commit's outcome unknown) with *live false when the connection failed or timed out, true when
 * a statement failed (a constraint: the batch is gone, each create may run again alone). */
static int create_run(pg_store_t *s, store_create_t *items, const size_t *order, size_t n,
                      bool *live)
{
    batch_create_t *bc = calloc(n, sizeof *bc);
    batch_user_t *bu = malloc(n * sizeof *bu);
    stmt_t *st = malloc(2 * n * sizeof *st);
    op_t op;
    int nu = 0;
    *live = true;
    int rc = bc && bu && st ? op_begin(s, &op)
                            : store_fail("postgresql %s: out of memory creating jobs", s->where);
    if (bc && bu && st) {
        for (size_t k = 0; k < n; k++) {
            bc[k].c = &items[order ? order[k] : k];
            bc[k].key = -1;
        }
        if (rc == STORE_OK)
            rc = create_lock(&op, bc, n, bu, &nu, st);
        for (size_t k = 0; k < n; k++) {
            bc[k].c->rc = rc == STORE_OK ? create_admit(bc, &bc[k], st) : STORE_ERR;
            if (bc[k].key >= 0)
                PQclear(st[bc[k].key].r);
            if (bc[k].c->rc == STORE_ERR)
                rc = STORE_ERR;
        }
        if (rc == STORE_OK)
            rc = create_write(&op, bc, n, bu, nu, st);
        *live = op.c != NULL;
        int ran = rc;
        rc = op_end(&op, rc);
        *live = *live && (ran != STORE_OK || rc == STORE_OK); /* a failed commit: outcome unknown */
    }
    free(bc);
    free(bu);
    free(st);
    return rc;
}

/* Runs create c alone (a batch of one). */
static void create_alone(pg_store_t *s, store_create_t *c)
{
    bool live;
    int rc;
    TX_RETRY(s, rc, create_run(s, c, NULL, 1, &live));
    if (rc != STORE_OK) {
        job_clear(&c->out);
        c->rc = STORE_ERR;
        snprintf(c->err, sizeof c->err, "%s", store_fail_text());
    }
}

/* The order in which a batch's creates run: by user name, then by arrival (a stable insertion
 * sort; batches hold at most a few hundred creates). Every batch then takes its user row locks
 * in one global order, so two batches in flight side by side never wait for each other in a
 * cycle (they did: "deadlock detected", a 503 for the creates of both). NULL when out of memory.
 * Caller frees. */
static size_t *create_order(const store_create_t *items, size_t n)
{
    size_t *o = malloc(n * sizeof *o);
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t v = i, j = i;
        while (j > 0 && strcmp(items[o[j - 1]].user, items[v].user) > 0) {
            o[j] = o[j - 1];
            j--;
        }
        o[j] = v;
    }
    return o;
}

/* Creates the batch in one pipelined transaction (create_run: group commit, two round trips), in
 * create_order. If a statement of one create fails on a live connection (a constraint), the
 * transaction and with it the whole batch is gone, so each create is retried alone (as it is when
 * the order cannot be allocated: one user row per transaction cannot deadlock), a batch of one
 * too (its Idempotency-Key committed by another create meanwhile: the second run finds that job).
 * If the connection failed or timed out, or the commit failed (its outcome unknown), every create
 * of the batch is STORE_ERR (the client retries, with its Idempotency-Key). */
static int pg_job_create_many(store_t *base, store_create_t *items, size_t n)
{
    pg_store_t *s = pgs(base);
    for (size_t i = 0; i < n; i++) {
        memset(&items[i].out, 0, sizeof items[i].out);
        items[i].rc = STORE_ERR;
    }
    size_t *order = n > 1 ? create_order(items, n) : NULL;
    bool live = true;
    int rc = n > 1 && !order ? STORE_ERR : create_run(s, items, order, n, &live);
    bool alone = n > 1 ? !order || live : live;
    free(order);
    for (size_t i = 0; i < n; i++) {
        store_create_t *c = &items[i];
        if (rc != STORE_OK && alone) {
            create_alone(s, c);
        } else if (rc != STORE_OK) {
            job_clear(&c->out);
            c->rc = STORE_ERR;
            snprintf(c->err, sizeof c->err, "%s", store_fail_text());
        }
    }
    return STORE_OK;
}

static int pg_job_get(store_t *base, const char *id, job_t *out)
{
    pg_store_t *s = pgs(base);
    op_t op;
    memset(out, 0, sizeof *out);
    int rc = op_open(s, &op);
    if (rc == STORE_OK)
        rc = load_job(&op, id, false, out, NULL);
    return op_end(&op, rc);
}

static int pg_job_list(store_t *base, const char *user, int status, int limit, int64_t cursor_seq,
                       job_t **out, size_t *n)
{
    pg_store_t *s = pgs(base);
    op_t op = {.slot = -1};
    PGresult *r = NULL;
    job_t *v = NULL;
    int count = 0;
    int rc = STORE_OK;
    *out = NULL;
    *n = 0;
    if (limit <= 0)
        goto out;
    rc = op_open(s, &op);
    if (rc != STORE_OK)
        goto out;
    params_t p = {0};
    p_text(&p, user);
    p_i64(&p, cursor_seq > 0 ? cursor_seq : INT64_MAX);
    p_i64(&p, limit);
    if (status >= 0)
        p_text(&p, job_status_name((job_status_t)status));
    r = q(&op, "listing jobs", status >= 0 ? SQL_JOB_LIST_STATUS : SQL_JOB_LIST, &p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    int rows = PQntuples(r);
    if (rows > 0 && !(v = calloc((size_t)rows, sizeof *v))) {
        rc = store_fail("postgresql: out of memory listing jobs");
        goto out;
    }
    for (; count < rows; count++) {
        rc = row_to_job(r, count, &v[count]);
        if (rc != STORE_OK)
            goto out;
    }
    *out = v;
    *n = (size_t)count;
    v = NULL;
    count = 0;
out:
    for (int i = 0; i < count; i++)
        job_clear(&v[i]);
    free(v);
    PQclear(r);
    return op_end(&op, rc);
}

static int job_cancel_once(store_t *base, const char *user, const char *id, int64_t now, job_t *out)
{
    pg_store_t *s = pgs(base);
    job_t tmp;
    op_t op;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    int rc = op_begin(s, &op);
    if (rc != STORE_OK)
        goto out;
    rc = load_job(&op, id, true, out, NULL);
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
    int queued = out->status == JOB_QUEUED;
    job_clear(out);
    params_t p = {0};
    p_text(&p, id);
    /* A queued job's queue row before the UPDATE, whose triggers lock the user's row first
     * (generation_jobs_sums) and delete the queue row after (job_queue_update). A claim on
     * another connection may hold that queue row (CLAIM_SQL: it skips the job's row, ours) and,
     * in a complete batch, go on to lock this user's row: waiting for the queue row while
     * holding the user's was a deadlock (test_pg_conflict). */
    if (queued &&
        (rc = exec(&op, "locking the job's queue row",
                   "SELECT job_id FROM job_queue WHERE job_id = $1 FOR UPDATE", &p)) != STORE_OK)
        goto out;
    p_i64(&p, now);
    rc = one_job(&op,
                 q(&op, "canceling job",
                   "UPDATE generation_jobs SET status = 'canceled', completed_at = $2,"
                   " lease_id = NULL, lease_expires_at = NULL, credits_reserved = 0"
                   " WHERE id = $1 RETURNING " JOB_COLS ", " HAS_WEBHOOK_COL,
                   &p),
                 "canceling job", out);
out:
    rc = op_end(&op, rc);
    if ((rc != STORE_OK && rc != STORE_CONFLICT) || out == &tmp)
        job_clear(out);
    return rc;
}

/* job_cancel_once, run again when its transaction was a conflict's victim (TX_RETRY). */
static int pg_job_cancel(store_t *base, const char *user, const char *id, int64_t now, job_t *out)
{
    int rc;
    TX_RETRY(pgs(base), rc, job_cancel_once(base, user, id, now, out));
    return rc;
}

#define WORKER_UPSERT "INSERT INTO workers(id, tier, state, last_seen) "
#define WORKER_UPSERT_CONFLICT                                                                     \
    " ON CONFLICT (id) DO UPDATE SET tier = excluded.tier, state = excluded.state,"                \
    " last_seen = excluded.last_seen"

static int worker_upsert(op_t *op, const char *worker_id, const char *tier, const char *state,
                         int64_t now)
{
    params_t p = {0};
    p_text(&p, worker_id);
    p_text(&p, tier);
    p_text(&p, state);
    p_i64(&p, now);
    return exec(op, "recording worker",
                WORKER_UPSERT "VALUES ($1, $2, $3, $4)" WORKER_UPSERT_CONFLICT, &p);
}

/* Fair share: among users with queued jobs in tier $1 (walked through the queue's index, one seek
 * a user: FAIR_USERS), the one with the fewest running jobs there, ties to the earliest head job
 * (FAIR_PICK). The queue (job_queue, schema_v10) holds the queued jobs alone. Each seek is an
 * ORDER BY ... LIMIT 1, not a MIN(): with statistics that count few rows (an ANALYZE when one user
 * had a few jobs queued) the planner computes a MIN() by aggregating the whole range it searches
 * (the tier's queue, or the user's), while only an index scan in that order can start a LIMIT 1
 * without reading everything first. */
#define FAIR_USERS                                                                                 \
    "WITH RECURSIVE u(name) AS ("                                                                  \
    " SELECT (SELECT user_id FROM job_queue WHERE tier = $1 ORDER BY user_id LIMIT 1)"             \
    " UNION ALL"                                                                                   \
    " SELECT (SELECT user_id FROM job_queue WHERE tier = $1 AND user_id > u.name"                  \
    "   ORDER BY user_id LIMIT 1) FROM u WHERE u.name IS NOT NULL)"
#define FAIR_PICK_EXCEPT(except)                                                                   \
    "SELECT u.name,"                                                                               \
    "  (SELECT COUNT(*) FROM generation_jobs r WHERE r.tier = $1 AND r.user_id = u.name"           \
    "    AND r.status = 'in_progress' " except ") AS running,"                                     \
    "  (SELECT h.queue_pos FROM job_queue h WHERE h.tier = $1 AND h.user_id = u.name"              \
    "    ORDER BY h.queue_pos LIMIT 1) AS head"                                                    \
    " FROM u WHERE u.name IS NOT NULL ORDER BY running, head LIMIT 1"
#define FAIR_PICK FAIR_PICK_EXCEPT("")
#define PICK_USER_SQL FAIR_USERS " " FAIR_PICK

/* The first queued job in tier $1 of the user named by the SQL expression `user`. */
#define JOB_HEAD_OF(user)                                                                          \
    "SELECT job_id FROM job_queue WHERE tier = $1 AND user_id = " user " ORDER BY queue_pos "      \
    "LIMIT 1"
#define SQL_JOB_HEAD JOB_HEAD_OF("$2")

/* A claim as one statement (prepared once per connection), in one round trip with its BEGIN:
 * the fair-share user (f), its first queued job's queue row locked (a), or, when another replica
 * is claiming all of that user's jobs right now, the tier's first unlocked one (b: SKIP LOCKED, so
 * claims never wait on each other's candidates; through job_queue_order, schema_v11); the job's
 * row locked (j, SKIP LOCKED too: the
 * claim holds a queue row there, and anything else that takes a job out of the queue locks the
 * job's row first, then its queue row through the trigger; so a claim never waits for a job row,
 * and the two orders cannot deadlock), the job leased (c), in place of its UPDATE triggers
 * (schema_v12) its queue row deleted (dq) and its event (ev), and the worker, if named, recorded
 * busy (w). Its user's queued count is not touched here: the claim adds the user's name to the
 * transaction's CLAIMED_SETTING, and CLAIMED_COUNT_SQL, after the transaction's claims, takes the
 * claims off their users' counts (a complete batch first locks every user row it writes in name
 * order, USERS_LOCK_SQL: a claim that locked its user's row itself would lock it out of that
 * order, after another's, and two such transactions and a create batch deadlocked; CI, issue 12).
 * A claim in a transaction of its own locks no other user row, and counts its claim itself
 * (CLAIM_ALONE_SQL).
 * $6, an array of job ids, are jobs completing in the claim's transaction: the fair share does
 * not count them as running. No row: nothing claimable. A queue row locked
 * here is one the job's row still matches: a change that takes the job out of the queue deletes the
 * row (which SKIP LOCKED then passes) in the same transaction. j and c find the job by its id alone
 * (with "AND status = 'queued'" too, statistics taken when little was queued made the planner
 * prefer a scan of a queued-jobs partial index to the primary key; issue 12, flat as it grows). */
/* The users whose jobs the transaction claimed (CLAIM_SQL), a name for each claim, as a text
 * array kept in a setting local to the transaction (gone at its end). */
#define CLAIMED_SETTING "pingvas.claimed"
#define CLAIMED_USERS                                                                              \
    "COALESCE(NULLIF(current_setting('" CLAIMED_SETTING "', true), '')::TEXT[], '{}'::TEXT[])"
/* The queued counts of the users of the transaction's claims (CLAIMED_USERS), after them. */
#define CLAIMED_COUNT_SQL                                                                          \
    "UPDATE users SET queued = users.queued - d.n FROM (SELECT name, COUNT(*) AS n FROM "          \
    "unnest(" CLAIMED_USERS ") AS c(name) GROUP BY name) d WHERE users.name = d.name"
/* clang-format off */
#define CLAIM_CTES                                                                                 \
    FAIR_USERS ", f AS (" FAIR_PICK_EXCEPT("AND r.id <> ALL($6::TEXT[])") "),"                    \
    " a AS (" JOB_HEAD_OF("(SELECT name FROM f)") " FOR UPDATE SKIP LOCKED),"                      \
    " b AS (SELECT job_id FROM job_queue WHERE " QUEUE_TIER " = $1 AND NOT EXISTS (SELECT 1 FROM a)" \
    "  ORDER BY queue_pos LIMIT 1 FOR UPDATE SKIP LOCKED),"                                        \
    " j AS (SELECT id FROM generation_jobs WHERE id ="                                             \
    "  (SELECT job_id FROM a UNION ALL SELECT job_id FROM b LIMIT 1) FOR UPDATE SKIP LOCKED),"     \
    " c AS (UPDATE generation_jobs SET status = 'in_progress', lease_id = $2, worker_id = $3,"     \
    "  lease_expires_at = $4::BIGINT, attempts = attempts + 1,"                                    \
    "  started_at = COALESCE(started_at, $5::BIGINT), progress_step = NULL, progress_steps = NULL," \
    "  accounted = accounted + 1 WHERE id = (SELECT id FROM j)"                                    \
    "  RETURNING " JOB_COLS "),"                                                                   \
    " dq AS (DELETE FROM job_queue WHERE job_id = (SELECT id FROM c)),"                            \
    " ev AS (" JOB_EVENT_INSERT("c") "),"                                                          \
    " w AS (" WORKER_UPSERT "SELECT $3, $1, 'busy', $5::BIGINT FROM c WHERE $3 <> ''"             \
    WORKER_UPSERT_CONFLICT ")"
#define CLAIM_SQL                                                                                  \
    CLAIM_CTES " SELECT c.*, set_config('" CLAIMED_SETTING "',"                                    \
    "  array_append(" CLAIMED_USERS ", c.user_id)::TEXT, true) AS claimed FROM c"
/* A claim in a transaction of its own (store_job_claim), where its user's row is the only one
 * locked: the user's queued count in the statement (uq), one statement in all. */
#define CLAIM_ALONE_SQL                                                                            \
    CLAIM_CTES ", uq AS (UPDATE users SET queued = queued - 1 WHERE name = (SELECT user_id FROM c))" \
    " SELECT * FROM c"
/* clang-format on */

/* A claim's statement (CLAIM_SQL) with its parameters: the lease is made here. */
typedef struct claim_stmt {
    params_t p;
    char lease[JOB_ID_SIZE];
    stmt_t st;
} claim_stmt_t;

/* The claim's statement: CLAIM_SQL with completing as its $6 (an array literal, kept by the
 * caller), or CLAIM_ALONE_SQL when completing is NULL. */
static void claim_stmt(claim_stmt_t *c, const char *tier, const char *worker_id, int64_t lease_ms,
                       int64_t now, const char *completing)
{
    memset(c, 0, sizeof *c);
    random_hex(c->lease, 16);
    p_text(&c->p, tier);
    p_text(&c->p, c->lease);
    p_text(&c->p, worker_id);
    p_i64(&c->p, now + lease_ms);
    p_i64(&c->p, now);
    p_text(&c->p, completing ? completing : "{}");
    c->st = completing ? (stmt_t){.sql = CLAIM_SQL, .p = &c->p, .prep = PREP_CLAIM}
                       : (stmt_t){.sql = CLAIM_ALONE_SQL, .p = &c->p, .prep = PREP_CLAIM_ALONE};
}

/* The claimed job from a claim's result (cleared): STORE_OK with out filled, or STORE_EMPTY. */
static int claim_answer(stmt_t *st, job_t *out)
{
    int rc = PQntuples(st->r) > 0 ? row_to_job(st->r, 0, out) : STORE_EMPTY;
    PQclear(st->r);
    st->r = NULL;
    return rc;
}

/* The claim (store_job_claim) inside op's transaction; out filled on STORE_OK. */
static int claim_in(op_t *op, const char *tier, const char *worker_id, int64_t lease_ms,
                    int64_t now, job_t *out)
{
    claim_stmt_t c;
    claim_stmt(&c, tier, worker_id, lease_ms, now, NULL);
    if (pipe_run(op, "claiming job", &c.st, 1) != STORE_OK)
        return STORE_ERR;
    return claim_answer(&c.st, out);
}

static int job_claim_once(store_t *base, const char *tier, const char *worker_id, int64_t lease_ms,
                          int64_t now, job_t *out)
{
    pg_store_t *s = pgs(base);
    job_t tmp;
    op_t op;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    int rc = op_begin(s, &op);
    if (rc == STORE_OK)
        rc = claim_in(&op, tier, worker_id, lease_ms, now, out);
    rc = op_end(&op, rc);
    if (rc != STORE_OK || out == &tmp)
        job_clear(out);
    return rc;
}

/* job_claim_once, run again when its transaction was a conflict's victim (TX_RETRY). */
static int pg_job_claim(store_t *base, const char *tier, const char *worker_id, int64_t lease_ms,
                        int64_t now, job_t *out)
{
    int rc;
    TX_RETRY(pgs(base), rc, job_claim_once(base, tier, worker_id, lease_ms, now, out));
    return rc;
}

/* Maps a job that failed a lease check to STORE_CANCELED, STORE_NOT_FOUND or LEASE_LOST. */
static int lease_refusal(op_t *op, const char *id)
{
    params_t p = {0};
    p_text(&p, id);
    PGresult *r =
        q(op, "reading job status", "SELECT status FROM generation_jobs WHERE id = $1", &p);
    if (!r)
        return STORE_ERR;
    int rc = STORE_NOT_FOUND;
    if (PQntuples(r) > 0)
        rc = strcmp(PQgetvalue(r, 0, 0), "canceled") == 0 ? STORE_CANCELED : STORE_LEASE_LOST;
    PQclear(r);
    return rc;
}

/* One statement (and its BEGIN) in one round trip: the lease, then the worker's last_seen. The
 * status is compared with a sub-select, not a literal, so that the planner cannot match the
 * running-jobs partial indexes and scan all of them instead of the primary key (it did, with
 * statistics taken when few jobs ran: every heartbeat then read every running job). */
#define HEARTBEAT_SQL                                                                              \
    "WITH j AS (UPDATE generation_jobs SET lease_expires_at = $3::BIGINT,"                         \
    " progress_step = CASE WHEN $5::integer > 0 THEN $4::integer ELSE progress_step END,"          \
    " progress_steps = CASE WHEN $5::integer > 0 THEN $5::integer ELSE progress_steps END"         \
    " WHERE id = $1 AND status = (SELECT 'in_progress'::TEXT) AND lease_id = $2"                   \
    " RETURNING worker_id),"                                                                       \
    " w AS (UPDATE workers SET last_seen = $6::BIGINT FROM j WHERE workers.id = j.worker_id)"      \
    " SELECT worker_id FROM j"

static int pg_job_heartbeat(store_t *base, const char *id, const char *lease_id, int64_t lease_ms,
                            int64_t now, int step, int steps)
{
    op_t op;
    int rc = op_begin(pgs(base), &op);
    if (rc != STORE_OK)
        return op_end(&op, rc);
    params_t p = {0};
    p_text(&p, id);
    p_text(&p, lease_id ? lease_id : "");
    p_i64(&p, now + lease_ms);
    p_i64(&p, step);
    p_i64(&p, steps);
    p_i64(&p, now);
    /* one statement (and its BEGIN) in one round trip: the lease, then the worker's last_seen */
    PGresult *r = q_pipe(&op, "extending lease", PREP_HEARTBEAT, HEARTBEAT_SQL, &p);
    if (!r)
        return op_end(&op, STORE_ERR);
    bool extended = PQntuples(r) > 0;
    PQclear(r);
    if (!extended)
        rc = lease_refusal(&op, id);
    return op_end(&op, rc);
}

/* Loads and locks the job for a lease holder's report. STORE_OK when it is in_progress under
 * lease_id (out filled); *replay set when it already reached final status `done` under that
 * lease; else the refusal code. */
static int leased_job(op_t *op, const char *id, const char *lease_id, job_status_t done, job_t *out,
                      bool *replay)
{
    char lease[JOB_ID_SIZE] = "";
    int rc = load_job(op, id, true, out, lease);
    *replay = false;
    return rc == STORE_OK ? store_rule_lease(out, lease, lease_id, done, replay) : rc;
}

/* Retention (store.h): the oldest ended jobs, locked (SKIP LOCKED: replicas purge side by side),
 * their ledger rows unlinked, then deleted, in one transaction. */
static int pg_jobs_purge(store_t *base, int64_t ended_before, int limit, char (*ids)[JOB_ID_SIZE],
                         int *n)
{
    pg_store_t *s = pgs(base);
    op_t op;
    params_t p = {0};
    char *list = NULL;
    int count = 0;
    *n = 0;
    int rc = op_begin(s, &op);
    if (rc != STORE_OK)
        goto out;
    p_i64(&p, ended_before);
    p_i64(&p, limit);
    PGresult *r = q(&op, "finding ended jobs", SQL_PURGE_LIST " FOR UPDATE SKIP LOCKED", &p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    list = malloc((size_t)PQntuples(r) * (JOB_ID_SIZE + 1) + 3);
    size_t len = 0;
    if (list)
        list[len++] = '{';
    for (int i = 0; list && i < PQntuples(r) && count < limit; i++) {
        get_copy(r, i, 0, ids[count], JOB_ID_SIZE);
        len += (size_t)snprintf(list + len, JOB_ID_SIZE + 2, "%s%s", count ? "," : "", ids[count]);
        count++;
    }
    PQclear(r);
    if (!list) {
        rc = store_fail("postgresql %s: out of memory purging jobs", s->where);
        goto out;
    }
    snprintf(list + len, 2, "}");
    if (count == 0)
        goto out;
    params_t a = {0};
    p_text(&a, list);
    rc = exec(&op, "unlinking ledger rows",
              "UPDATE credit_ledger SET job_id = NULL WHERE job_id = ANY($1::text[])", &a);
    if (rc == STORE_OK)
        rc = exec(&op, "deleting ended jobs",
                  "DELETE FROM generation_jobs WHERE id = ANY($1::text[])", &a);
out:
    free(list);
    rc = op_end(&op, rc);
    if (rc == STORE_OK)
        *n = count;
    return rc;
}

/* A complete's writes as one statement (prepared once per connection), after the job was loaded,
 * locked and its lease checked: the user's row locked (o), the charge on it (ch: job_charge's
 * cap, what the user can pay without touching the other jobs' reservations, balance - (reserved -
 * this job's reservation $7), between 0 and the balance, over the cost $5), the balance and the
 * job's reservation freed (b: one new version of the user's row), the job (j) and the ledger row
 * (l), then what the job's UPDATE triggers would have done (schema_v12): the totals of completed
 * jobs (t: the one totals row, locked after every user row of the transaction: the batch's
 * USERS_LOCK_SQL runs before its completes), its event (ev) and its webhook made due (wh). The
 * user's row is thus locked only from this statement (or the batch's USERS_LOCK_SQL) to the
 * COMMIT, not across the round trips before it. */
/* clang-format off */
#define COMPLETE_SQL                                                                               \
    "WITH o AS (SELECT balance, reserved FROM users WHERE name = $6 FOR UPDATE),"                  \
    " ch AS (SELECT balance, LEAST($5::BIGINT, GREATEST(0, LEAST(balance,"                         \
    "  balance - (reserved - $7::BIGINT)))) AS charge FROM o),"                                    \
    " b AS (UPDATE users SET balance = ch.balance - ch.charge, reserved = users.reserved - $7::BIGINT" \
    "  FROM ch WHERE name = $6 RETURNING users.balance),"                                          \
    " j AS (UPDATE generation_jobs SET status = 'completed', image_url = $2, error_message = NULL," \
    "  gpu_seconds = $3::DOUBLE PRECISION, completed_at = $4::BIGINT,"                             \
    "  credits_charged = (SELECT charge FROM ch), credits_reserved = 0, lease_expires_at = NULL,"   \
    "  accounted = accounted + 1 WHERE id = $1 RETURNING " JOB_COLS "),"                           \
    " l AS (INSERT INTO credit_ledger(user_id, job_id, kind, amount, balance_after, created_at)"   \
    "  SELECT $6, $1, 'charge', -ch.charge, b.balance, $4::BIGINT FROM ch, b),"                    \
    " t AS (UPDATE job_totals SET jobs = jobs + 1, gpu_seconds = job_totals.gpu_seconds +"         \
    "  j.gpu_seconds, credits_charged = job_totals.credits_charged + j.credits_charged FROM j"     \
    "  WHERE job_totals.status = 'completed'),"                                                    \
    " ev AS (" JOB_EVENT_INSERT("j") "),"                                                          \
    " wh AS (UPDATE webhooks SET state = 'pending', next_at = " PG_NOW_MS ", ended_at = " PG_NOW_MS \
    "  WHERE job_id = $1 AND state = 'waiting')"                                                   \
    " SELECT j.*, " HAS_WEBHOOK_COL " FROM j"
/* clang-format on */

/* A complete batch's users' rows locked in name order before any of them is written: those of
 * its completes ($1) and of its claims' jobs (CLAIMED_USERS). Creates lock theirs in name order
 * too (create_order), so no two transactions wait for each other's user rows in a cycle. */
#define USERS_LOCK_SQL                                                                             \
    "SELECT name FROM users WHERE name = ANY($1::TEXT[] || " CLAIMED_USERS ") ORDER BY name"       \
    " FOR UPDATE"

/* COMPLETE_SQL's parameters for job id (loaded as job): its image key, its GPU time (clamped by
 * store_rule_gpu_seconds) and the cost of it at credit_rate, completed at now. */
static void complete_params(params_t *p, const char *id, const char *image_key, double gpu_seconds,
                            double credit_rate, int64_t now, const job_t *job)
{
    gpu_seconds = store_rule_gpu_seconds(gpu_seconds);
    p_text(p, id);
    p_text(p, image_key);
    p_f64(p, gpu_seconds);
    p_i64(p, now);
    p_i64(p, job_cost(gpu_seconds, credit_rate));
    p_text(p, job->user);
    p_i64(p, job->credits_reserved);
}

/* One complete of a batch (pg_job_complete_many) and the statements it runs. */
typedef struct batch_complete {
    store_complete_t *c;
    params_t load;      /* its job loaded and locked (first round trip) */
    params_t write;     /* COMPLETE_SQL (second round trip) */
    claim_stmt_t claim; /* the claim of complete-and-claim (second round trip) */
    char lease[JOB_ID_SIZE];
    int step; /* BC_ */
    int w;    /* the index of its COMPLETE_SQL in the second round trip, or -1 */
    int cl;   /* the index of its claim there, or -1 */
} batch_complete_t;
#define BC_DONE 0   /* answered: refused, or a replay without a claim */
#define BC_WRITE 1  /* to complete (COMPLETE_SQL, and its claim) */
#define BC_REPLAY 2 /* completed already under this lease: only its claim runs */
#define BC_AGAIN 3  /* a second complete of a job earlier in the batch: runs after the batch */

/* Whether items[i] completes a job an earlier item of the batch completes (BC_AGAIN). */
static bool complete_repeats(const store_complete_t *items, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(items[j].id, items[i].id) == 0)
            return true;
    return false;
}

/* Orders a batch's completes by job id (the order their job rows are locked in). */
static int bc_id_order(const void *a, const void *b)
{
    const batch_complete_t *x = *(batch_complete_t *const *)a, *y = *(batch_complete_t *const *)b;
    return strcmp(x->c->id, y->c->id);
}

/* The first round trip of a batch: every job of the batch loaded and locked, in job id order,
 * each then checked by the lease rule (b->step; c->rc of those answered). A job a batch
 * completes twice is loaded once: its second complete is BC_AGAIN. */
static int batch_load(op_t *op, batch_complete_t *b, batch_complete_t **ord, stmt_t *st, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        b[i].step = complete_repeats(b[0].c, i) ? BC_AGAIN : BC_WRITE;
        if (b[i].step == BC_WRITE)
            ord[m++] = &b[i];
    }
    qsort(ord, (size_t)m, sizeof *ord, bc_id_order);
    for (int k = 0; k < m; k++) {
        p_text(&ord[k]->load, ord[k]->c->id);
        st[k] =
            (stmt_t){.sql = SQL_JOB_GET " FOR UPDATE", .p = &ord[k]->load, .prep = PREP_JOB_LOCK};
    }
    int rc = pipe_run(op, "loading jobs", st, m);
    for (int k = 0; k < m; k++) {
        batch_complete_t *e = ord[k];
        bool replay = false;
        int r = rc == STORE_OK ? job_from(st[k].r, &e->c->done, e->lease) : STORE_ERR;
        PQclear(st[k].r);
        if (r == STORE_OK)
            r = store_rule_lease(&e->c->done, e->lease, e->c->lease_id, JOB_COMPLETED, &replay);
        e->c->rc = r;
        e->step = r != STORE_OK ? BC_DONE : replay ? (e->c->tier ? BC_REPLAY : BC_DONE) : BC_WRITE;
    }
    return rc;
}

/* The second round trip's statements, in the order that keeps row locks in one order across
 * transactions: the claims (CLAIM_SQL, which lock no user row), the rows of every user the batch
 * writes locked in name order (USERS_LOCK_SQL, when there are two or more), the completes
 * (COMPLETE_SQL, each then locking the totals row), the claims' users' queued counts
 * (CLAIMED_COUNT_SQL). a[0] gets the completed jobs' ids, a[1] their users (lock the parameters
 * of USERS_LOCK_SQL). *m counts the statements; false when out of memory. */
static bool batch_stmts(batch_complete_t *b, size_t n, pg_arr_t *a, params_t *lock, stmt_t *st,
                        int *m)
{
    int writes = 0, claims = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i].step != BC_WRITE)
            continue;
        if (!arr_add(&a[0], b[i].c->id) || !arr_add(&a[1], b[i].c->done.user))
            return false;
        writes++;
    }
    for (size_t i = 0; i < n; i++) {
        store_complete_t *c = b[i].c;
        b[i].w = b[i].cl = -1;
        if ((b[i].step == BC_WRITE || b[i].step == BC_REPLAY) && c->tier) {
            claim_stmt(&b[i].claim, c->tier, c->worker_id, c->lease_ms, c->now,
                       a[0].s ? a[0].s : "{}");
            b[i].cl = (*m)++;
            st[b[i].cl] = b[i].claim.st;
            claims++;
        }
    }
    if (writes + claims > 1) {
        p_text(lock, a[1].s ? a[1].s : "{}");
        st[(*m)++] = (stmt_t){.sql = USERS_LOCK_SQL, .p = lock, .prep = PREP_USERS_LOCK};
    }
    for (size_t i = 0; i < n; i++) {
        store_complete_t *c = b[i].c;
        if (b[i].step != BC_WRITE)
            continue;
        complete_params(&b[i].write, c->id, c->image_key, c->gpu_seconds, c->credit_rate, c->now,
                        &c->done);
        b[i].w = (*m)++;
        st[b[i].w] = (stmt_t){.sql = COMPLETE_SQL, .p = &b[i].write, .prep = PREP_COMPLETE};
    }
    if (claims)
        st[(*m)++] = (stmt_t){.sql = CLAIMED_COUNT_SQL, .prep = PREP_CLAIMED_COUNT};
    return true;
}

/* The second round trip of a batch (batch_stmts), then the completes' and claims' answers. */
static int batch_write(op_t *op, batch_complete_t *b, size_t n, stmt_t *st)
{
    pg_arr_t a[2];
    params_t lock = {0};
    memset(a, 0, sizeof a);
    int m = 0;
    int rc = batch_stmts(b, n, a, &lock, st, &m) ? STORE_OK : STORE_ERR;
    if (rc != STORE_OK)
        store_fail("postgresql %s: out of memory completing jobs", op->s->where);
    else if (m)
        rc = pipe_run(op, "completing jobs", st, m);
    for (size_t i = 0; i < n; i++) {
        store_complete_t *c = b[i].c;
        if (b[i].step != BC_WRITE && b[i].step != BC_REPLAY)
            continue;
        if (b[i].w >= 0) {
            job_clear(&c->done);
            c->rc =
                rc == STORE_OK ? one_job(op, st[b[i].w].r, "completing job", &c->done) : STORE_ERR;
            st[b[i].w].r = NULL;
        }
        if (b[i].cl >= 0)
            c->next_rc = rc == STORE_OK ? claim_answer(&st[b[i].cl], &c->next) : STORE_ERR;
        if (c->rc == STORE_ERR || c->next_rc == STORE_ERR)
            rc = STORE_ERR;
    }
    for (int k = 0; k < m; k++)
        PQclear(st[k].r); /* the lock's and the counts' */
    free(a[0].s);
    free(a[1].s);
    return rc;
}

/* One try of pg_job_complete_many, its repeated completes (BC_AGAIN) left out: one transaction of
 * three round trips whatever the batch's size (batch_load, batch_write, COMMIT), so one user's
 * completes hold its row across one commit per batch instead of one each. */
static int complete_batch(pg_store_t *s, store_complete_t *items, size_t n)
{
    batch_complete_t *b = calloc(n, sizeof *b);
    batch_complete_t **ord = malloc(n * sizeof *ord);
    stmt_t *st = malloc((2 * n + 2) * sizeof *st);
    op_t op;
    int rc = b && ord && st ? op_begin(s, &op)
                            : store_fail("postgresql %s: out of memory completing jobs", s->where);
    if (b && ord && st) {
        for (size_t i = 0; i < n; i++)
            b[i].c = &items[i];
        if (rc == STORE_OK)
            rc = batch_load(&op, b, ord, st, n);
        if (rc == STORE_OK)
            rc = batch_write(&op, b, n, st);
        rc = op_end(&op, rc);
    }
    free(b);
    free(ord);
    free(st);
    return rc;
}

/* store_job_complete_many: complete_batch, run again when its transaction was a conflict's victim
 * (tx_again); then each job the batch completed twice is completed again, alone, as a replay or
 * a refusal. */
static void pg_job_complete_many(store_t *base, store_complete_t *items, size_t n)
{
    int rc, tries = 0;
    do {
        for (size_t i = 0; i < n; i++) {
            job_clear(&items[i].done);
            job_clear(&items[i].next);
            items[i].next_rc = STORE_EMPTY;
            items[i].rc = STORE_ERR;
        }
        rc = complete_batch(pgs(base), items, n);
    } while (tx_again(pgs(base), rc, &tries));
    for (size_t i = 0; i < n; i++) {
        if (rc != STORE_OK)
            items[i].rc = STORE_ERR;
        else if (complete_repeats(items, i))
            pg_job_complete_many(base, &items[i], 1);
    }
}

/* Complete-and-claim (store.h): a batch of one. */
static int pg_job_complete_claim(store_t *base, store_complete_t *c)
{
    pg_job_complete_many(base, c, 1);
    return c->rc;
}

/* Puts a job back at the front of its tier's queue, lease cleared, and wakes idle workers. */
static int requeue(op_t *op, const char *id, int attempts_delta, int releases_delta,
                   const char *message)
{
    params_t p = {0};
    p_text(&p, id);
    p_i64(&p, attempts_delta);
    p_i64(&p, releases_delta);
    p_text(&p, message);
    int rc = exec(op, "requeueing job",
                  "UPDATE generation_jobs SET status = 'queued', queue_pos = " FRONT_POS ","
                  " lease_id = NULL, worker_id = NULL, lease_expires_at = NULL,"
                  " attempts = GREATEST(attempts + $2::INTEGER, 0),"
                  " releases = releases + $3::INTEGER,"
                  " error_message = COALESCE($4, error_message) WHERE id = $1"
                  " RETURNING 1" NOTIFY_COL,
                  &p);
    return rc;
}

/* Fails job id; *has_webhook (when not NULL) set when it has a webhook delivery. */
static int mark_failed(op_t *op, const char *id, const char *message, int64_t now, int *has_webhook)
{
    params_t p = {0};
    p_text(&p, id);
    p_text(&p, message ? message : "failed");
    p_i64(&p, now);
    PGresult *r = q(op, "failing job",
                    "UPDATE generation_jobs SET status = 'failed', error_message = $2,"
                    " completed_at = $3, credits_reserved = 0, lease_expires_at = NULL"
                    " WHERE id = $1 RETURNING " HAS_WEBHOOK_COL,
                    &p);
    if (!r)
        return STORE_ERR;
    if (has_webhook)
        *has_webhook = PQntuples(r) == 1 && get_bool(r, 0, 0);
    PQclear(r);
    return STORE_OK;
}

static int job_fail_once(store_t *base, const char *id, const char *lease_id, const char *message,
                         bool retryable, int max_attempts, int64_t now, job_t *out)
{
    pg_store_t *s = pgs(base);
    job_t tmp;
    bool replay = false;
    op_t op;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    int rc = op_begin(s, &op);
    if (rc != STORE_OK)
        goto out;
    rc = leased_job(&op, id, lease_id, JOB_FAILED, out, &replay);
    if (rc != STORE_OK || replay)
        goto out;
    int has_webhook = 0;
    if (store_rule_fail_requeues(out, retryable, max_attempts))
        rc = requeue(&op, id, 0, 0, message ? message : "failed");
    else
        rc = mark_failed(&op, id, message, now, &has_webhook);
    if (rc == STORE_OK) {
        job_clear(out);
        rc = load_job(&op, id, false, out, NULL);
        out->has_webhook = has_webhook;
    }
out:
    rc = op_end(&op, rc);
    if (rc != STORE_OK || out == &tmp)
        job_clear(out);
    return rc;
}

/* job_fail_once, run again when its transaction was a conflict's victim (TX_RETRY). */
static int pg_job_fail(store_t *base, const char *id, const char *lease_id, const char *message,
                       bool retryable, int max_attempts, int64_t now, job_t *out)
{
    int rc;
    TX_RETRY(pgs(base), rc,
             job_fail_once(base, id, lease_id, message, retryable, max_attempts, now, out));
    return rc;
}

static int job_release_once(store_t *base, const char *id, const char *lease_id, int64_t now,
                            job_t *out)
{
    pg_store_t *s = pgs(base);
    job_t tmp;
    bool replay = false;
    op_t op;
    (void)now;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    int rc = op_begin(s, &op);
    if (rc != STORE_OK)
        goto out;
    /* JOB_QUEUED never matches: a released job has no lease left to replay with */
    rc = leased_job(&op, id, lease_id, JOB_QUEUED, out, &replay);
    if (rc != STORE_OK)
        goto out;
    rc = requeue(&op, id, STORE_RELEASE_ATTEMPTS, STORE_RELEASE_RELEASES, NULL);
    if (rc == STORE_OK) {
        job_clear(out);
        rc = load_job(&op, id, false, out, NULL);
    }
out:
    rc = op_end(&op, rc);
    if (rc != STORE_OK || out == &tmp)
        job_clear(out);
    return rc;
}

/* job_release_once, run again when its transaction was a conflict's victim (TX_RETRY). */
static int pg_job_release(store_t *base, const char *id, const char *lease_id, int64_t now,
                          job_t *out)
{
    int rc;
    TX_RETRY(pgs(base), rc, job_release_once(base, id, lease_id, now, out));
    return rc;
}

/* One expired lease per transaction, taken with SKIP LOCKED: replicas reaping at the same time
 * share the work, and no transaction ever holds two jobs' user rows. Newest queue position
 * first: each requeue goes to the front, so the oldest ends up first (as in SQLite). */
static int pg_reap(store_t *base, int max_attempts, int64_t worker_ttl_ms, int64_t now,
                   int *requeued, int *failed)
{
    pg_store_t *s = pgs(base);
    int nreq = 0, nfail = 0;
    int rc = STORE_OK;
    op_t op;
    for (int i = 0; i < REAP_MAX && rc == STORE_OK; i++) {
        rc = op_begin(s, &op);
        if (rc != STORE_OK) {
            op_end(&op, rc);
            break;
        }
        params_t p = {0};
        p_i64(&p, now);
        PGresult *r = q(&op, "finding expired leases", SQL_REAP_LIST " FOR UPDATE SKIP LOCKED", &p);
        if (!r) {
            rc = op_end(&op, STORE_ERR);
            break;
        }
        if (PQntuples(r) == 0) {
            PQclear(r);
            op_end(&op, STORE_OK);
            break;
        }
        char id[JOB_ID_SIZE];
        get_copy(r, 0, 0, id, sizeof id);
        int attempts = (int)get_i64(r, 0, 1, 0);
        PQclear(r);
        bool fail_it = attempts >= max_attempts;
        if (fail_it) {
            char msg[96];
            snprintf(msg, sizeof msg, "lease expired %d times (worker lost)", attempts);
            rc = mark_failed(&op, id, msg, now, NULL);
        } else {
            rc = requeue(&op, id, 0, 0, NULL);
        }
        rc = op_end(&op, rc);
        if (rc == STORE_OK) {
            if (fail_it)
                nfail++;
            else
                nreq++;
        }
    }
    if (rc == STORE_OK && worker_ttl_ms > 0) {
        rc = op_open(s, &op);
        if (rc == STORE_OK) {
            params_t p = {0};
            p_i64(&p, now - worker_ttl_ms);
            rc = exec(&op, "forgetting lost workers", "DELETE FROM workers WHERE last_seen < $1",
                      &p);
        }
        rc = op_end(&op, rc);
    }
    if (requeued)
        *requeued = nreq;
    if (failed)
        *failed = nfail;
    return rc;
}

/* ---- Celery bridge ---- */

/* A seed row (seq NULL, status 'pending' or 'queued') becomes a queued job: see store.h. Any
 * other row is already a job (or was run by a seed worker): STORE_EXISTS with out filled. Lock
 * order as everywhere: the job row, then the user row. */
static int pg_job_adopt(store_t *base, const char *id, double credit_rate, int64_t now, job_t *out)
{
    pg_store_t *s = pgs(base);
    job_t tmp;
    user_t u;
    job_params_t prm;
    char user[USER_NAME_MAX + 1];
    PGresult *r = NULL;
    op_t op;
    if (!out)
        out = &tmp;
    memset(out, 0, sizeof *out);
    memset(&prm, 0, sizeof prm);
    int rc = op_begin(s, &op);
    if (rc != STORE_OK)
        goto out;
    params_t p = {0};
    p_text(&p, id);
    r = q(&op, "reading a seed job",
          "SELECT user_id, seq IS NOT NULL OR status NOT IN ('pending','queued'),"
          " COALESCE(width, 512), COALESCE(height, 512), COALESCE(steps, 20),"
          " COALESCE(cfg_scale, 7.0), COALESCE(model, 'sd15')"
          " FROM generation_jobs WHERE id = $1 FOR UPDATE",
          &p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    if (PQntuples(r) == 0) {
        rc = STORE_NOT_FOUND;
        goto out;
    }
    if (get_bool(r, 0, 1)) {
        rc = load_job(&op, id, false, out, NULL);
        rc = rc == STORE_OK ? STORE_EXISTS : rc;
        goto out;
    }
    get_copy(r, 0, 0, user, sizeof user);
    prm.width = (int)get_i64(r, 0, 2, JOB_DEFAULT_SIZE);
    prm.height = (int)get_i64(r, 0, 3, JOB_DEFAULT_SIZE);
    prm.steps = (int)get_i64(r, 0, 4, JOB_DEFAULT_STEPS);
    prm.cfg_scale = get_f64(r, 0, 5, JOB_DEFAULT_CFG);
    get_copy(r, 0, 6, prm.model, sizeof prm.model);
    rc = read_user(&op, user, true, &u, NULL);
    if (rc != STORE_OK)
        goto out;
    int64_t reserve = job_estimate_credits(&prm, credit_rate);
    rc = store_rule_reserve(&u, reserve);
    if (rc != STORE_OK)
        goto out;
    p_i64(&p, store_rule_seed(-1));
    p_text(&p, u.tier);
    p_i64(&p, now);
    p_i64(&p, store_rule_reservation(reserve));
    rc = one_job(&op,
                 q(&op, "adopting job",
                   "UPDATE generation_jobs SET status = 'queued',"
                   " negative_prompt = COALESCE(negative_prompt, ''), width = COALESCE(width, 512),"
                   " height = COALESCE(height, 512), steps = COALESCE(steps, 20),"
                   " cfg_scale = COALESCE(cfg_scale, 7.0), seed = COALESCE(seed, $2::BIGINT),"
                   " seq = n.v, queue_pos = n.v, model = COALESCE(model, 'sd15'), tier = $3,"
                   " created_at = $4::BIGINT, credits_reserved = $5::BIGINT, attempts = 0,"
                   " releases = 0, started_at = NULL, completed_at = NULL, lease_id = NULL,"
                   " worker_id = NULL, lease_expires_at = NULL"
                   " FROM (SELECT nextval('generation_jobs_seq') AS v) n"
                   " WHERE id = $1 AND seq IS NULL RETURNING " JOB_COLS NOTIFY_COL,
                   &p),
                 "adopting job", out);
out:
    PQclear(r);
    rc = op_end(&op, rc);
    if ((rc != STORE_OK && rc != STORE_EXISTS) || out == &tmp)
        job_clear(out);
    return rc;
}

/* ---- LISTEN/NOTIFY ---- */

/* Waits up to ms for the stop pipe; true when stopping. */
static bool listener_sleep(pg_store_t *s, int ms)
{
    struct pollfd pfd = {.fd = s->wake_pipe[0], .events = POLLIN};
    poll(&pfd, 1, ms);
    return atomic_load(&s->stop) != 0;
}

/* Runs one statement on the listener's connection within the operation timeout; false when it
 * failed or timed out (*c is then NULL: the connection was dropped). */
static bool listen_exec(pg_store_t *s, PGconn **c, const char *sql)
{
    op_t op = {.s = s, .slot = -1, .c = *c, .deadline = clock_mono_ms() + s->timeout_ms};
    PGresult *r = q(&op, "listener", sql, NULL);
    bool ok = r != NULL;
    *c = op.c;
    PQclear(r);
    return ok;
}

/* The listener thread: one connection in LISTEN pingvas_work; s->cb on every batch of
 * notifications, and once after every (re)connect since notifications sent while it was
 * disconnected are lost. Reconnects with backoff (100 ms doubling to 5 s). */
static void *listen_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-pg-listen"); /* top -H, perf */
    pg_store_t *s = arg;
    int backoff = 100;
    bool warned = false;
    while (!atomic_load(&s->stop)) {
        PGconn *c = connect_new(s, clock_mono_ms() + s->timeout_ms);
        if (c && !listen_exec(s, &c, "LISTEN " CHANNEL)) {
            PQfinish(c);
            c = NULL;
        }
        if (!c) {
            if (!warned)
                log_warn("event=store_listen_down err=\"%s\"", store_fail_text());
            warned = true;
            if (listener_sleep(s, backoff))
                break;
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        if (warned)
            log_info("event=store_listen_up");
        warned = false;
        backoff = 100;
        s->cb(s->cb_arg);
        while (!atomic_load(&s->stop)) {
            struct pollfd pfd[2] = {{.fd = PQsocket(c), .events = POLLIN},
                                    {.fd = s->wake_pipe[0], .events = POLLIN}};
            int n = poll(pfd, 2, 30000);
            if (n < 0 && errno != EINTR)
                break;
            if (pfd[1].revents)
                break;
            if (n > 0 && pfd[0].revents) {
                if (PQconsumeInput(c) == 0)
                    break;
            } else if (n == 0) {
                /* idle: make sure the connection is still there (and answers) */
                if (!listen_exec(s, &c, "SELECT 1"))
                    break;
            }
            bool got = false;
            PGnotify *note;
            while ((note = PQnotifies(c)) != NULL) {
                got = true;
                PQfreemem(note);
            }
            if (got) {
                log_debug("event=store_notified");
                s->cb(s->cb_arg);
            }
            if (PQstatus(c) != CONNECTION_OK)
                break;
        }
        PQfinish(c);
    }
    return NULL;
}

static int pg_listen(store_t *base, void (*cb)(void *arg), void *arg)
{
    pg_store_t *s = pgs(base);
    if (s->listening)
        return store_fail("postgresql %s: already listening", s->where);
    if (s->wake_pipe[0] < 0 && pipe2(s->wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return store_fail("postgresql: cannot create a pipe: %s", strerror(errno));
    s->cb = cb;
    s->cb_arg = arg;
    atomic_store(&s->stop, 0);
    if (pthread_create(&s->listener, NULL, listen_main, s) != 0)
        return store_fail("postgresql: cannot start the listener thread");
    s->listening = true;
    return STORE_OK;
}

/* ---- workers and statistics ---- */

static int pg_worker_seen(store_t *base, const char *worker_id, const char *tier, const char *state,
                          int64_t now)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc == STORE_OK)
        rc = worker_upsert(&op, worker_id, tier, state, now);
    return op_end(&op, rc);
}

static int pg_worker_gone(store_t *base, const char *worker_id)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc == STORE_OK) {
        params_t p = {0};
        p_text(&p, worker_id);
        rc = exec(&op, "forgetting worker", "DELETE FROM workers WHERE id = $1", &p);
    }
    return op_end(&op, rc);
}

static int pg_queue_stats(store_t *base, const char *tier, int64_t worker_ttl_ms, int64_t now,
                          queue_stats_t *out)
{
    pg_store_t *s = pgs(base);
    op_t op;
    memset(out, 0, sizeof *out);
    int rc = op_open(s, &op);
    if (rc != STORE_OK)
        goto out;
    params_t p = {0};
    p_text(&p, tier);
    p_i64(&p, worker_ttl_ms > 0 ? now - worker_ttl_ms : INT64_MIN);
    PGresult *r = q(&op, "queue stats", SQL_QUEUE_STATS, &p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    out->queued = get_i64(r, 0, 0, 0);
    out->running = get_i64(r, 0, 1, 0);
    out->workers = get_i64(r, 0, 2, 0);
    out->idle_workers = get_i64(r, 0, 3, 0);
    PQclear(r);
out:
    return op_end(&op, rc);
}

static int pg_job_counts(store_t *base, store_job_counts_t *out)
{
    pg_store_t *s = pgs(base);
    op_t op;
    memset(out, 0, sizeof *out);
    int rc = op_open(s, &op);
    if (rc != STORE_OK)
        goto out;
    PGresult *r = q(&op, "job counts",
                    "SELECT status, jobs, gpu_seconds, credits_charged FROM job_totals", NULL);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *st = PQgetvalue(r, i, 0);
        int64_t n = get_i64(r, i, 1, 0);
        if (strcmp(st, "completed") == 0)
            out->completed = n;
        else if (strcmp(st, "failed") == 0)
            out->failed = n;
        else if (strcmp(st, "canceled") == 0)
            out->canceled = n;
        out->gpu_seconds += get_f64(r, i, 2, 0);
        out->credits_charged += get_i64(r, i, 3, 0);
    }
    PQclear(r);
out:
    return op_end(&op, rc);
}

/* ---- cost accounting ---- */

static int pg_worker_report(store_t *base, const worker_life_t *r, int event, int64_t now)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc != STORE_OK)
        return op_end(&op, rc);
    params_t p = {0};
    const char *text[5] = {r->worker_id, r->tier, r->instance_type, r->capacity_type, r->zone};
    for (int i = 0; i < 5; i++)
        p_text(&p, text[i]);
    p_i64(&p, r->gpus);
    p_i64(&p, now);
    p_i64(&p, event == WORKER_LOADED);
    p_i64(&p, event == WORKER_ENDED);
    p_i64(&p, r->busy_ms);
    rc = exec(&op, "recording a worker's lifetime",
              "INSERT INTO worker_lifetimes(id, tier, instance_type, capacity_type, zone, gpus,"
              " started_at, loaded_at, last_seen, ended_at, busy_ms) VALUES ($1, $2, $3, $4, $5,"
              " $6::int, $7::bigint, CASE WHEN $8::int = 1 THEN $7::bigint END, $7::bigint,"
              " CASE WHEN $9::int = 1 THEN $7::bigint END, $10::bigint) ON CONFLICT (id) DO"
              " UPDATE SET tier = excluded.tier, instance_type = excluded.instance_type,"
              " capacity_type = excluded.capacity_type, zone = excluded.zone,"
              " gpus = excluded.gpus,"
              " loaded_at = COALESCE(worker_lifetimes.loaded_at, excluded.loaded_at),"
              " last_seen = GREATEST(worker_lifetimes.last_seen, excluded.last_seen),"
              " ended_at = COALESCE(worker_lifetimes.ended_at, excluded.ended_at),"
              " busy_ms = GREATEST(worker_lifetimes.busy_ms, excluded.busy_ms)",
              &p);
    return op_end(&op, rc);
}

/* Runs one statement with params (on its own, no transaction around it; prepared on the
 * connection as prep when above 0) and hands its rows to fill(row, r, i) into a new array of
 * elem-sized elements (*out, *n; caller frees). */
static int pg_rows_prep(pg_store_t *s, const char *what, int prep, const char *sql,
                        const params_t *p, size_t elem,
                        void (*fill)(void *row, const PGresult *r, int i), void **out, size_t *n)
{
    op_t op;
    PGresult *r = NULL;
    char *v = NULL;
    *out = NULL;
    *n = 0;
    int rc = op_open(s, &op);
    if (rc != STORE_OK)
        goto out;
    r = prep ? q_pipe(&op, what, prep, sql, p) : q(&op, what, sql, p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    int rows = PQntuples(r);
    if (rows > 0 && !(v = calloc((size_t)rows, elem))) {
        rc = store_fail("postgresql: out of memory %s", what);
        goto out;
    }
    for (int i = 0; i < rows; i++)
        fill(v + (size_t)i * elem, r, i);
    *out = v;
    *n = (size_t)rows;
    v = NULL;
out:
    free(v);
    PQclear(r);
    return op_end(&op, rc);
}

static int pg_rows(pg_store_t *s, const char *what, const char *sql, const params_t *p, size_t elem,
                   void (*fill)(void *row, const PGresult *r, int i), void **out, size_t *n)
{
    return pg_rows_prep(s, what, 0, sql, p, elem, fill, out, n);
}

static void fill_life(void *row, const PGresult *r, int i)
{
    worker_life_t *w = row;
    get_copy(r, i, 0, w->worker_id, sizeof w->worker_id);
    get_copy(r, i, 1, w->tier, sizeof w->tier);
    get_copy(r, i, 2, w->instance_type, sizeof w->instance_type);
    get_copy(r, i, 3, w->capacity_type, sizeof w->capacity_type);
    get_copy(r, i, 4, w->zone, sizeof w->zone);
    w->gpus = (int)get_i64(r, i, 5, 1);
    int64_t *t[5] = {&w->started_at, &w->loaded_at, &w->last_seen, &w->ended_at, &w->busy_ms};
    for (int k = 0; k < 5; k++)
        *t[k] = get_i64(r, i, 6 + k, 0);
}

static int pg_worker_lives(store_t *base, int64_t since, int64_t until, worker_life_t **out,
                           size_t *n)
{
    params_t p = {0};
    p_i64(&p, since);
    p_i64(&p, until);
    p_i64(&p, STORE_LIFE_GRACE_MS);
    p_i64(&p, STORE_LIVES_MAX);
    return pg_rows(pgs(base), "reading worker lifetimes",
                   "SELECT id, tier, instance_type, capacity_type, zone, gpus, started_at,"
                   " loaded_at, last_seen, ended_at, busy_ms FROM worker_lifetimes"
                   " WHERE started_at < $2 AND COALESCE(ended_at, last_seen + $3) >= $1"
                   " ORDER BY started_at, id LIMIT $4",
                   &p, sizeof **out, fill_life, (void **)out, n);
}

static void fill_usage(void *row, const PGresult *r, int i)
{
    usage_row_t *u = row;
    get_copy(r, i, 0, u->user, sizeof u->user);
    get_copy(r, i, 1, u->tier, sizeof u->tier);
    u->day = get_i64(r, i, 2, 0);
    u->images = get_i64(r, i, 3, 0);
    u->gpu_seconds = get_f64(r, i, 4, 0);
}

static int pg_usage(store_t *base, int64_t since, int64_t until, usage_row_t **out, size_t *n)
{
    params_t p = {0};
    p_i64(&p, since);
    p_i64(&p, until);
    return pg_rows(pgs(base), "reading usage", SQL_USAGE, &p, sizeof **out, fill_usage,
                   (void **)out, n);
}

/* ---- events (GET /api/v1/events) ---- */

static int pg_event_add(store_t *base, const char *kind, const char *user, const char *data)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc == STORE_OK) {
        params_t p = {0};
        p_text(&p, kind);
        p_text(&p, user);
        p_text(&p, data);
        rc = exec(&op, "recording an event",
                  "INSERT INTO events(created_at, kind, user_id, data) VALUES (" PG_NOW_MS
                  ", $1, $2, $3)",
                  &p);
    }
    return op_end(&op, rc);
}

static int pg_events_read(store_t *base, int64_t after, int64_t upto, const char *user, int limit,
                          store_event_t **out, size_t *n)
{
    pg_store_t *s = pgs(base);
    op_t op = {.slot = -1};
    PGresult *r = NULL;
    store_event_t *v = NULL;
    int rows = 0, rc;
    *out = NULL;
    *n = 0;
    rc = op_open(s, &op);
    if (rc != STORE_OK)
        goto out;
    params_t p = {0};
    p_i64(&p, after);
    p_i64(&p, upto);
    p_text(&p, user);
    p_i64(&p, limit);
    r = q_pipe(
        &op, "reading events", PREP_EVENTS_READ,
        "SELECT seq, created_at, kind, user_id, data FROM events WHERE seq > $1 AND seq <= $2"
        " AND ($3::text IS NULL OR user_id = $3) ORDER BY seq LIMIT $4",
        &p);
    if (!r) {
        rc = STORE_ERR;
        goto out;
    }
    rows = PQntuples(r);
    if (rows > 0 && !(v = calloc((size_t)rows, sizeof *v))) {
        rc = store_fail("postgresql: out of memory reading events");
        goto out;
    }
    for (int i = 0; i < rows; i++) {
        store_event_t *e = &v[i];
        e->seq = get_i64(r, i, 0, 0);
        e->created_at = get_i64(r, i, 1, 0);
        get_copy(r, i, 2, e->kind, sizeof e->kind);
        get_copy(r, i, 3, e->user, sizeof e->user);
        if (!(e->data = strdup(get_s(r, i, 4) ? get_s(r, i, 4) : "{}"))) {
            rc = store_fail("postgresql: out of memory reading events");
            goto out;
        }
    }
    *out = v;
    *n = (size_t)rows;
    v = NULL;
out:
    store_events_free(v, (size_t)rows);
    PQclear(r);
    return op_end(&op, rc);
}

static int pg_events_last(store_t *base, int64_t *seq)
{
    pg_store_t *s = pgs(base);
    op_t op;
    *seq = 0;
    int rc = op_open(s, &op);
    if (rc == STORE_OK) {
        PGresult *r =
            q(&op, "reading the event sequence", "SELECT COALESCE(MAX(seq), 0) FROM events", NULL);
        if (r)
            *seq = get_i64(r, 0, 0, 0);
        else
            rc = STORE_ERR;
        PQclear(r);
    }
    return op_end(&op, rc);
}

static int pg_events_trim(store_t *base, int64_t keep_ms, int64_t keep_progress_ms)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc == STORE_OK) {
        params_t p = {0};
        p_i64(&p, keep_ms);
        p_i64(&p, keep_progress_ms);
        rc = exec(&op, "trimming events",
                  "DELETE FROM events WHERE created_at < " PG_NOW_MS " - $1::bigint"
                  " OR (kind = 'progress' AND created_at < " PG_NOW_MS " - $2::bigint)",
                  &p);
    }
    return op_end(&op, rc);
}

/* ---- webhooks (the outbox) ---- */

#define WEBHOOK_COLS                                                                               \
    "job_id, url, state, attempts, COALESCE(next_at, 0), COALESCE(ended_at, 0),"                   \
    " COALESCE(delivered_at, 0), COALESCE(last_error, '')"

static void fill_webhook(void *row, const PGresult *r, int i)
{
    store_webhook_t *w = row;
    memset(w, 0, sizeof *w);
    get_copy(r, i, 0, w->job_id, sizeof w->job_id);
    get_copy(r, i, 1, w->url, sizeof w->url);
    get_copy(r, i, 2, w->state, sizeof w->state);
    w->attempts = (int)get_i64(r, i, 3, 0);
    w->next_at = get_i64(r, i, 4, 0);
    w->ended_at = get_i64(r, i, 5, 0);
    w->delivered_at = get_i64(r, i, 6, 0);
    get_copy(r, i, 7, w->last_error, sizeof w->last_error);
}

static void fill_worker(void *row, const PGresult *r, int i)
{
    store_worker_t *w = row;
    memset(w, 0, sizeof *w);
    get_copy(r, i, 0, w->id, sizeof w->id);
    get_copy(r, i, 1, w->tier, sizeof w->tier);
    get_copy(r, i, 2, w->state, sizeof w->state);
    w->last_seen = get_i64(r, i, 3, 0);
}

static int pg_workers_list(store_t *base, store_worker_t **out, size_t *n)
{
    return pg_rows(pgs(base), "listing workers",
                   "SELECT id, tier, state, last_seen FROM workers ORDER BY id", NULL, sizeof **out,
                   fill_worker, (void **)out, n);
}

static void fill_lease(void *row, const PGresult *r, int i)
{
    store_lease_t *l = row;
    get_copy(r, i, 0, l->job_id, sizeof l->job_id);
    get_copy(r, i, 1, l->lease_id, sizeof l->lease_id);
}

/* Through one of the partial indexes of the running jobs alone (the planner picks
 * generation_jobs_running or generation_jobs_reap), whatever the history holds. */
static int pg_worker_leases(store_t *base, const char *worker_id, store_lease_t **out, size_t *n)
{
    params_t p = {0};
    p_text(&p, worker_id);
    return pg_rows(pgs(base), "reading a worker's leases",
                   "SELECT id, lease_id FROM generation_jobs WHERE status = 'in_progress'"
                   " AND worker_id = $1 ORDER BY id",
                   &p, sizeof **out, fill_lease, (void **)out, n);
}

static int pg_webhook_get(store_t *base, const char *job_id, store_webhook_t *out)
{
    params_t p = {0};
    p_text(&p, job_id);
    store_webhook_t *v = NULL;
    size_t n = 0;
    memset(out, 0, sizeof *out);
    int rc = pg_rows(pgs(base), "reading a webhook",
                     "SELECT " WEBHOOK_COLS " FROM webhooks WHERE job_id = $1", &p, sizeof *v,
                     fill_webhook, (void **)&v, &n);
    if (rc == STORE_OK && n == 0)
        rc = STORE_NOT_FOUND;
    if (rc == STORE_OK)
        *out = v[0];
    free(v);
    return rc;
}

/* GET /api/v1/generation/{id} (store_user_job_get): the user's row, the job and its webhook by
 * three prepared statements in one round trip on one pooled connection, instead of three
 * operations of one statement each that PostgreSQL parsed and planned every time (no
 * transaction: each reads the latest committed state). */
static int pg_user_job_get(store_t *base, const char *user, const char *id, store_user_job_t *out)
{
    params_t pu = {0}, pj = {0};
    p_text(&pu, user);
    p_text(&pj, id);
    stmt_t st[3] = {{.sql = SQL_USER_GET, .p = &pu, .prep = PREP_USER_GET},
                    {.sql = SQL_JOB_GET, .p = &pj, .prep = PREP_JOB_GET},
                    {.sql = "SELECT " WEBHOOK_COLS " FROM webhooks WHERE job_id = $1",
                     .p = &pj,
                     .prep = PREP_WEBHOOK_GET}};
    op_t op;
    int rc = op_open(pgs(base), &op);
    if (rc == STORE_OK)
        rc = pipe_run(&op, "reading a job", st, 3);
    if (rc == STORE_OK)
        rc = user_from(st[0].r, &out->user, NULL);
    if (rc == STORE_OK) {
        out->job_rc = job_from(st[1].r, &out->job, NULL);
        if (out->job_rc == STORE_OK && strcmp(out->job.user, user) != 0) {
            job_clear(&out->job);
            out->job_rc = STORE_NOT_FOUND;
        }
        out->has_webhook = out->job_rc == STORE_OK && PQntuples(st[2].r) > 0;
        if (out->has_webhook)
            fill_webhook(&out->webhook, st[2].r, 0);
        if (out->job_rc == STORE_ERR)
            rc = STORE_ERR;
    }
    for (int i = 0; i < 3; i++)
        PQclear(st[i].r);
    return op_end(&op, rc);
}

static int pg_webhooks_due(store_t *base, int64_t now, int64_t hold_ms, int limit,
                           store_webhook_t **out, size_t *n)
{
    params_t p = {0};
    p_i64(&p, now);
    p_i64(&p, now + hold_ms);
    p_i64(&p, limit);
    return pg_rows_prep(
        pgs(base), "taking due webhooks", PREP_WEBHOOKS_DUE,
        "UPDATE webhooks SET next_at = $2::bigint WHERE job_id IN (SELECT job_id FROM"
        " webhooks WHERE state = 'pending' AND next_at <= $1::bigint ORDER BY next_at"
        " LIMIT $3::int FOR UPDATE SKIP LOCKED) RETURNING " WEBHOOK_COLS,
        &p, sizeof **out, fill_webhook, (void **)out, n);
}

static int pg_webhook_attempt(store_t *base, const char *job_id, bool delivered, const char *error,
                              int64_t next_at, bool give_up, int64_t now)
{
    pg_store_t *s = pgs(base);
    op_t op;
    int rc = op_open(s, &op);
    if (rc == STORE_OK) {
        params_t p = {0};
        p_text(&p, job_id);
        p_text(&p, delivered ? "t" : "f");
        p_text(&p, error ? error : "");
        p_i64(&p, next_at);
        p_text(&p, give_up ? "t" : "f");
        p_i64(&p, now);
        rc = exec(&op, "recording a webhook attempt",
                  "UPDATE webhooks SET attempts = attempts + 1,"
                  " state = CASE WHEN $2::boolean THEN 'delivered' WHEN $5::boolean THEN 'failed'"
                  " ELSE 'pending' END,"
                  " delivered_at = CASE WHEN $2::boolean THEN $6::bigint ELSE delivered_at END,"
                  " last_error = CASE WHEN $2::boolean THEN last_error ELSE $3 END,"
                  " next_at = $4::bigint WHERE job_id = $1 AND state = 'pending'",
                  &p);
    }
    return op_end(&op, rc);
}

/* store_explain: EXPLAIN of the named statement with sample values, sequential scans disabled
 * for it (so that a table still read from end to end has no index that could serve it, however
 * small the table is now), the plan's lines into out. */
static int pg_explain(store_t *base, const char *name, char *out, size_t len)
{
    static const struct {
        const char *name, *sql;
        int n;
        const char *v[CREATE_COLS];
    } named[] = {
        {"job_get", SQL_JOB_GET, 1, {"x"}},
        {"job_list", SQL_JOB_LIST, 3, {"u", "9223372036854775807", "21"}},
        {"job_list_status", SQL_JOB_LIST_STATUS, 4, {"u", "9223372036854775807", "21", "failed"}},
        {"job_pick_user", PICK_USER_SQL, 1, {"standard"}},
        {"job_head", SQL_JOB_HEAD, 2, {"standard", "u"}},
        {"reap_list", SQL_REAP_LIST, 1, {"0"}},
        {"stats_jobs", SQL_QUEUE_STATS, 2, {"standard", "0"}},
        {"job_requeue", SQL_REQUEUE_POS, 1, {"x"}},
        {"purge_list", SQL_PURGE_LIST, 2, {"0", "100"}},
        {"ledger_list", SQL_LEDGER_LIST, 2, {"u", "10"}},
        {"usage", SQL_USAGE, 2, {"0", "1"}},
        {"job_claim", CLAIM_SQL, 6, {"standard", "lease", "w1", "1", "1", "{x}"}},
        {"job_claim_alone", CLAIM_ALONE_SQL, 6, {"standard", "lease", "w1", "1", "1", "{}"}},
        {"claimed_count", CLAIMED_COUNT_SQL, 0, {NULL}},
        {"users_lock", USERS_LOCK_SQL, 1, {"{u,v}"}},
        {"job_heartbeat", HEARTBEAT_SQL, 6, {"x", "lease", "1", "0", "0", "1"}},
        {"job_create",
         CREATE_SQL,
         CREATE_COLS,
         {"{x}", "{u}", "{p}", "{n}", "{64}", "{64}", "{1}", "{7}", "{1}", "{m}", "{0}", "{1}",
          "{k}", "{standard}", "{NULL}"}},
    };
    size_t k = 0;
    while (k < sizeof named / sizeof named[0] && strcmp(named[k].name, name) != 0)
        k++;
    if (k == sizeof named / sizeof named[0])
        return STORE_NOT_FOUND;
    char sql[4096];
    snprintf(sql, sizeof sql, "EXPLAIN %s", named[k].sql);
    params_t p = {0};
    for (int i = 0; i < named[k].n; i++)
        p_text(&p, named[k].v[i]);
    op_t op;
    int rc = op_begin(pgs(base), &op);
    if (rc == STORE_OK)
        rc = exec(&op, "explaining", "SET LOCAL enable_seqscan = off", NULL);
    PGresult *r = rc == STORE_OK ? q(&op, "explaining", sql, &p) : NULL;
    size_t used = 0;
    if (len)
        out[0] = '\0';
    for (int row = 0; r && row < PQntuples(r); row++) {
        int w = snprintf(out + used, len - used, "%s\n", PQgetvalue(r, row, 0));
        used += w > 0 && (size_t)w < len - used ? (size_t)w : 0;
    }
    if (rc == STORE_OK && !r)
        rc = STORE_ERR;
    PQclear(r);
    return op_end(&op, rc);
}

static const struct store_ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .migrate = pg_migrate,
    .ping = pg_ping,
    .user_add = pg_user_add,
    .user_get = pg_user_get,
    .user_set_disabled = pg_user_set_disabled,
    .user_credit = pg_user_credit,
    .ledger = pg_ledger,
    .job_create = NULL, /* store.c runs a batch of one */
    .job_create_many = pg_job_create_many,
    .jobs_purge = pg_jobs_purge,
    .job_get = pg_job_get,
    .job_list = pg_job_list,
    .job_cancel = pg_job_cancel,
    .job_claim = pg_job_claim,
    .job_heartbeat = pg_job_heartbeat,
    .job_complete_claim = pg_job_complete_claim,
    .job_complete_many = pg_job_complete_many,
    .user_job_get = pg_user_job_get,
    .job_fail = pg_job_fail,
    .job_release = pg_job_release,
    .reap = pg_reap,
    .worker_seen = pg_worker_seen,
    .worker_gone = pg_worker_gone,
    .worker_report = pg_worker_report,
    .worker_lives = pg_worker_lives,
    .usage = pg_usage,
    .queue_stats = pg_queue_stats,
    .job_counts = pg_job_counts,
    .explain = pg_explain,
    .job_adopt = pg_job_adopt,
    .listen = pg_listen,
    .event_add = pg_event_add,
    .events_read = pg_events_read,
    .events_last = pg_events_last,
    .events_trim = pg_events_trim,
    .webhook_get = pg_webhook_get,
    .workers_list = pg_workers_list,
    .worker_leases = pg_worker_leases,
    .webhooks_due = pg_webhooks_due,
    .webhook_attempt = pg_webhook_attempt,
};

#else /* !PINGVAS_HAVE_PQ */

#include <stdio.h>

store_t *store_pg_open(const char *url, char *err, size_t errlen)
{
    (void)url;
    snprintf(err, errlen,
             "DATABASE_URL: this pingvas was built without libpq (install libpq-dev and "
             "rebuild), so PostgreSQL is not available; use sqlite:///path");
    return NULL;
}

#endif
