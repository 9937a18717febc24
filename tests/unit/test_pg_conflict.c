/* test_pg_conflict.c: the PostgreSQL store's operations get through a real deadlock (store_pg.c:
 * row locks in one order, and TX_RETRY, which runs again a transaction PostgreSQL rolled back as
 * a deadlock's victim, SQLSTATE 40P01). The test's own session (a second libpq connection, as an
 * older replica or a manual UPDATE would be) locks a user's row; the store's operation, on a
 * thread, locks other rows and then waits for the test's; once the test sees that wait
 * (pg_stat_activity and pg_blocking_pids: a condition, not a sleep), its session asks for a lock
 * the store's transaction holds (a user's row, or the jobs table: JOBS_LOCK). That is a cycle,
 * and the store's transaction is its victim: PostgreSQL's detector aborts the transaction of the
 * backend that runs it, and each backend runs it deadlock_timeout after it began waiting. The
 * store's began first, but only by milliseconds, and on a busy machine the test's backend
 * sometimes got the CPU first (one run in six), so the test's session runs its detector after
 * 10 s (SET deadlock_timeout, a superuser's: the test role is one) and the store's after the
 * default 1 s. The test's lock is then granted (how the test knows the store was the victim),
 * the store's operation runs again and waits for the test's session again, and the test commits.
 * Checked for a create batch (its creates then run alone, not through TX_RETRY), a complete batch
 * with a complete-and-claim, and a cancel: every answer STORE_OK, the rows and the users' counts
 * as if nothing had happened, one deadlock in pg_stat_database each, and one event=store_retry
 * log line where TX_RETRY ran the operation again. One more race must not deadlock at all: a
 * cancel waiting for a claim's queue row (test_cancel_waits_for_a_claim_without_deadlock). */
#include "t.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"

#ifdef PINGVAS_HAVE_PQ
#include "t_pg.h"

#define T0 INT64_C(1700000000000)
#define LEASE 15000
#define WAIT_MS 30000 /* the longest the test waits for a condition */
#define LOG_MAX 65536 /* the most of the store's log a race keeps */

/* The second lock of the races of TX_RETRY's operations. Not a row: a row's lock is only the
 * xmax of the transaction that holds it, so when that transaction is aborted, whoever comes
 * first takes the row; the store's operation, run again at once, sometimes took it before the
 * test's backend woke up, and the two deadlocked again (one run in twelve). A table lock goes to
 * the session waiting for it the moment the victim releases its locks, and what the store's
 * operation runs again then waits for the test's session: one deadlock, one retry. */
#define JOBS_LOCK "LOCK TABLE generation_jobs IN EXCLUSIVE MODE"

static const char *t_admin; /* PINGVAS_TEST_PG_URL */
static char t_db[64];       /* the current test's database */
static char t_url[1024];    /* its URL */

/* One race between the store's operation and the test's session. */
typedef struct race {
    void (*op)(store_t *, void *); /* the store's operation, run on a thread */
    void *arg;
    store_t *s;
    PGconn *mine;  /* the test's session: takes the locks */
    PGconn *watch; /* sees the waits (pg_stat_activity is read once per transaction) */
    long long pid; /* mine's backend */
    atomic_int done;
    /* out */
    int victim;       /* the test's second lock was granted: the store's transaction was aborted */
    int again;        /* after it, the store's operation waited for the test's session again */
    int retries;      /* event=store_retry lines the store logged meanwhile */
    char sqlstate[8]; /* the test's second lock's error, if it failed */
} race_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs sql on c; 1 when it succeeded, else 0 (said on stderr, its SQLSTATE to state when not
 * NULL). */
static int run(PGconn *c, const char *sql, char *state)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    if (!ok) {
        const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state)
            snprintf(state, 8, "%s", code ? code : "");
        fprintf(stderr, "%s: %s", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    }
    PQclear(r);
    return ok;
}

/* Waits until the store's operation is done or some backend waits for a lock the test's session
 * holds. 1 for the latter, 0 for the former (or after WAIT_MS). */
static int store_waits(race_t *r)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
             " AND %lld = ANY(pg_blocking_pids(pid))",
             r->pid);
    const struct timespec tick = {0, 2 * 1000 * 1000};
    for (int64_t end = now_ms() + WAIT_MS; now_ms() < end && !atomic_load(&r->done);) {
        PGresult *res = PQexec(r->watch, sql);
        int waits = PQresultStatus(res) == PGRES_TUPLES_OK && atoll(PQgetvalue(res, 0, 0)) > 0;
        PQclear(res);
        if (waits)
            return 1;
        nanosleep(&tick, NULL);
    }
    return 0;
}

static void *race_main(void *arg)
{
    race_t *r = arg;
    r->op(r->s, r->arg);
    atomic_store(&r->done, 1);
    return NULL;
}

/* Sends what was written to stderr since the file of fd `to` took its place back to stderr, and
 * returns how many lines of it say event=store_retry. */
static int log_restore(FILE *to, int saved)
{
    static char buf[LOG_MAX];
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(to);
    size_t n = fread(buf, 1, sizeof buf - 1, to);
    buf[n] = '\0';
    fclose(to);
    fputs(buf, stderr);
    int k = 0;
    for (const char *p = buf; (p = strstr(p, "event=store_retry")) != NULL; p++)
        k++;
    return k;
}

/* The race (see the top of the file): the test's session takes `first` in a transaction; the
 * store's operation starts; once it waits for the test's session, the session takes `second`
 * (granted when the store's transaction was the deadlock's victim); once the store's operation
 * waits again (or has ended), the session commits and the operation ends. r's out fields say
 * how it went; the store's log is captured meanwhile. */
static void race(race_t *r, const char *first, const char *second)
{
    pthread_t t;
    FILE *log = tmpfile();
    int saved = log ? dup(2) : -1;
    if (saved < 0) {
        if (log)
            fclose(log);
        CHECK(!"a file to capture the store's log in");
        return;
    }
    fflush(stderr);
    dup2(fileno(log), 2);
    atomic_store(&r->done, 0);
    int held = run(r->mine, "BEGIN", NULL) && run(r->mine, first, NULL);
    int started = held && pthread_create(&t, NULL, race_main, r) == 0;
    int waited = started && store_waits(r);
    r->victim = waited && run(r->mine, second, r->sqlstate);
    r->again = r->victim && store_waits(r);
    run(r->mine, "COMMIT", NULL);
    if (started)
        pthread_join(t, NULL);
    r->retries = log_restore(log, saved);
    CHECK(held);
    CHECK(waited);
    if (waited && !r->victim)
        fprintf(stderr, "the test's session, not the store's, was the victim (SQLSTATE %s)\n",
                r->sqlstate);
}

/* Whether there is a PostgreSQL server to test on (PINGVAS_TEST_PG_URL); without one the tests
 * say so and pass, except where the production stack is tested (PINGVAS_TEST_STORE_REQUIRE_PG=1,
 * CMakeLists.txt). */
static int have_pg(void)
{
    const char *req = getenv("PINGVAS_TEST_STORE_REQUIRE_PG");
    t_admin = getenv("PINGVAS_TEST_PG_URL");
    if (t_admin && *t_admin)
        return 1;
    printf("NOT RUN: PINGVAS_TEST_PG_URL is not set (eval \"$(scripts/services/postgres.sh)\")\n");
    CHECK(!req || strcmp(req, "1") != 0);
    return 0;
}

/* A fresh, migrated store on a database of the test's own, with users a and b of 100 credits;
 * r's sessions connected to it. NULL on failure. */
static store_t *open_fresh(race_t *r)
{
    static int n;
    char err[256] = "";
    memset(r, 0, sizeof *r);
    snprintf(t_db, sizeof t_db, "pv_conflict_%d_%d", (int)getpid(), n++);
    if (t_pg_create(t_admin, t_db, t_url, sizeof t_url) != 0)
        return NULL;
    store_t *s = store_open(t_url, err, sizeof err);
    if (!s)
        fprintf(stderr, "store_open: %s\n", err);
    if (s && (store_migrate(s) != STORE_OK || store_user_add(s, "a", "standard", 100, T0) ||
              store_user_add(s, "b", "standard", 100, T0))) {
        fprintf(stderr, "setup: %s\n", store_last_error(s));
        store_close(s);
        s = NULL;
    }
    r->s = s;
    r->mine = PQconnectdb(t_url);
    r->watch = PQconnectdb(t_url);
    /* the store's deadlock detector runs first (see the top of the file) */
    int slow =
        PQstatus(r->mine) == CONNECTION_OK && run(r->mine, "SET deadlock_timeout = '10s'", NULL);
    if (!slow)
        fprintf(stderr, "the test's session needs to set deadlock_timeout (a superuser, or GRANT"
                        " SET ON PARAMETER deadlock_timeout)\n");
    PGresult *res = PQexec(r->mine, "SELECT pg_backend_pid()");
    r->pid = PQresultStatus(res) == PGRES_TUPLES_OK ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return slow && r->pid > 0 && s && PQstatus(r->mine) == CONNECTION_OK &&
                   PQstatus(r->watch) == CONNECTION_OK
               ? s
               : NULL;
}

/* PostgreSQL's count of deadlocks in the test's database. */
static long long deadlocks(void)
{
    return t_pg_exec(t_url, "SELECT deadlocks FROM pg_stat_database"
                            " WHERE datname = current_database()");
}

/* Closes the store and the sessions, checks that PostgreSQL counted `want` deadlocks in the
 * database (its backends report theirs when they end: waited for, up to WAIT_MS), drops it. */
static void close_fresh(race_t *r, long long want)
{
    if (r->s)
        store_close(r->s);
    PQfinish(r->mine);
    PQfinish(r->watch);
    const struct timespec tick = {0, 5 * 1000 * 1000};
    long long got = deadlocks();
    for (int64_t end = now_ms() + WAIT_MS; got >= 0 && got < want && now_ms() < end;) {
        nanosleep(&tick, NULL);
        got = deadlocks();
    }
    CHECK_INT(got, want);
    CHECK(t_pg_drop(t_admin, t_db) == 0);
}

/* An integer read from the test's database (-1 on failure). */
static long long db_int(const char *sql)
{
    return t_pg_exec(t_url, sql);
}

static job_params_t params(void)
{
    static char prompt[] = "a lighthouse at dusk", none[] = "";
    return (job_params_t){.prompt = prompt,
                          .negative_prompt = none,
                          .model = "sd15",
                          .width = 512,
                          .height = 512,
                          .steps = 20,
                          .cfg_scale = 7.0,
                          .seed = 1};
}

/* Creates a job of user with reserve; its id to id. */
static void create(store_t *s, const char *user, int64_t reserve, char *id)
{
    job_params_t p = params();
    job_t j;
    CHECK_INT(store_job_create(s, user, &p, NULL, reserve, 0, 0, T0, &j), STORE_OK);
    snprintf(id, JOB_ID_SIZE, "%s", j.id);
    job_clear(&j);
}

/* The status of job id (-1 when it cannot be read). */
static int status_of(store_t *s, const char *id)
{
    job_t j;
    int st = store_job_get(s, id, &j) == STORE_OK ? (int)j.status : -1;
    job_clear(&j);
    return st;
}

static void create_op(store_t *s, void *arg)
{
    store_job_create_many(s, arg, 2);
}

/* A create batch for a and b locks a's row, then waits for b's (the test's); the test then asks
 * for a's. The batch is the victim, and each of its creates runs again alone (pg_job_create_many:
 * a batch that failed on a live connection), b's at least waiting for the test's rows until it
 * commits. A create alone locks one user's row, so it is not a victim again: this race passes
 * through create_alone's first try, not TX_RETRY, and logs no retry. */
static void test_create_batch_deadlock(void)
{
    race_t r;
    if (!have_pg())
        return;
    store_t *s = open_fresh(&r);
    CHECK(s != NULL);
    job_params_t p = params();
    store_create_t c[2] = {{.user = "a", .p = &p, .reserve = 3, .now = T0},
                           {.user = "b", .p = &p, .reserve = 5, .now = T0}};
    if (s) {
        r.op = create_op;
        r.arg = c;
        race(&r, "SELECT name FROM users WHERE name = 'b' FOR UPDATE",
             "SELECT name FROM users WHERE name = 'a' FOR UPDATE");
        CHECK(r.victim);
        CHECK(r.again);
        for (int i = 0; i < 2; i++) {
            CHECK_INT(c[i].rc, STORE_OK);
            CHECK_STR(c[i].out.user, c[i].user);
            CHECK_INT(c[i].rc == STORE_OK ? status_of(s, c[i].out.id) : -1, JOB_QUEUED);
            job_clear(&c[i].out);
        }
        CHECK_INT(db_int("SELECT reserved FROM users WHERE name = 'a'"), 3);
        CHECK_INT(db_int("SELECT reserved FROM users WHERE name = 'b'"), 5);
        CHECK_INT(db_int("SELECT SUM(queued) FROM users"), 2);
        CHECK_INT(db_int("SELECT COUNT(*) FROM generation_jobs"), 2);
        CHECK_INT(db_int("SELECT COUNT(*) FROM job_queue"), 2);
    }
    close_fresh(&r, 1);
}

static void complete_op(store_t *s, void *arg)
{
    store_job_complete_many(s, arg, 2);
}

/* A complete batch of a's job ja (with a complete-and-claim, which claims a's queued job jc)
 * and b's job jb locks ja and jb, claims jc, locks a's row and waits for b's (the test's,
 * USERS_LOCK_SQL); the test then asks for the jobs table (JOBS_LOCK). The batch is the victim and
 * runs again whole (TX_RETRY), waiting for the table until the test commits: each job completed
 * and charged once, jc claimed once. */
static void test_complete_batch_deadlock(void)
{
    race_t r;
    if (!have_pg())
        return;
    char ja[JOB_ID_SIZE], jb[JOB_ID_SIZE], jc[JOB_ID_SIZE], lease[2][JOB_ID_SIZE];
    char owner[2][16];
    store_t *s = open_fresh(&r);
    CHECK(s != NULL);
    if (s) {
        create(s, "a", 2, ja);
        create(s, "b", 2, jb);
        for (int i = 0; i < 2; i++) {
            job_t j;
            CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 1, &j), STORE_OK);
            snprintf(owner[i], sizeof owner[i], "%s", j.user);
            snprintf(lease[i], sizeof lease[i], "%s", j.lease_id);
            job_clear(&j);
        }
        create(s, "a", 2, jc);
        int ia = strcmp(owner[0], "a") == 0 ? 0 : 1; /* the claim that got ja */
        store_complete_t c[2] = {{.id = ja, .lease_id = lease[ia], .tier = "standard"},
                                 {.id = jb, .lease_id = lease[1 - ia]}};
        for (int i = 0; i < 2; i++) {
            c[i].image_key = "i.png", c[i].gpu_seconds = 1.0, c[i].credit_rate = 1.0;
            c[i].now = T0 + 2, c[i].worker_id = "w", c[i].lease_ms = LEASE;
        }
        r.op = complete_op;
        r.arg = c;
        race(&r, "SELECT name FROM users WHERE name = 'b' FOR UPDATE", JOBS_LOCK);
        CHECK(r.victim);
        CHECK(r.again);
        CHECK_INT(r.retries, 1);
        CHECK_INT(c[0].rc, STORE_OK);
        CHECK_INT(c[1].rc, STORE_OK);
        CHECK_INT(c[0].next_rc, STORE_OK);
        CHECK_STR(c[0].next.id, jc);
        for (int i = 0; i < 2; i++) {
            job_clear(&c[i].done);
            job_clear(&c[i].next);
        }
        CHECK_INT(status_of(s, ja), JOB_COMPLETED);
        CHECK_INT(status_of(s, jb), JOB_COMPLETED);
        CHECK_INT(status_of(s, jc), JOB_IN_PROGRESS);
        CHECK_INT(db_int("SELECT reserved FROM users WHERE name = 'a'"), 2);
        CHECK_INT(db_int("SELECT reserved FROM users WHERE name = 'b'"), 0);
        CHECK_INT(db_int("SELECT SUM(queued) FROM users"), 0);
        CHECK_INT(db_int("SELECT COUNT(*) FROM credit_ledger WHERE kind = 'charge'"), 2);
        CHECK_INT(db_int("SELECT jobs FROM job_totals WHERE status = 'completed'"), 2);
        CHECK_INT(db_int("SELECT COUNT(*) FROM job_queue"), 0);
    }
    close_fresh(&r, 1);
}

typedef struct cancel_arg {
    const char *id;
    int rc;
} cancel_arg_t;

static void cancel_op(store_t *s, void *arg)
{
    cancel_arg_t *a = arg;
    a->rc = store_job_cancel(s, "a", a->id, T0 + 2, NULL);
}

/* A cancel locks its job, then (its UPDATE's trigger) a's row, the test's; the test then asks
 * for the jobs table (JOBS_LOCK). The cancel is the victim and runs again (TX_RETRY), waiting for
 * the table until the test commits. */
static void test_cancel_deadlock(void)
{
    race_t r;
    if (!have_pg())
        return;
    char id[JOB_ID_SIZE];
    store_t *s = open_fresh(&r);
    CHECK(s != NULL);
    if (s) {
        create(s, "a", 4, id);
        cancel_arg_t a = {.id = id, .rc = -1};
        r.op = cancel_op;
        r.arg = &a;
        race(&r, "SELECT name FROM users WHERE name = 'a' FOR UPDATE", JOBS_LOCK);
        CHECK(r.victim);
        CHECK(r.again);
        CHECK_INT(r.retries, 1);
        CHECK_INT(a.rc, STORE_OK);
        CHECK_INT(status_of(s, id), JOB_CANCELED);
        CHECK_INT(db_int("SELECT reserved + queued FROM users WHERE name = 'a'"), 0);
        CHECK_INT(db_int("SELECT jobs FROM job_totals WHERE status = 'canceled'"), 1);
    }
    close_fresh(&r, 1);
}

/* A cancel racing a claim on another replica, without a deadlock. The claim's transaction (the
 * test's session here) has locked the queue row of a's queued job j2 (a claim's pick locks the
 * user's first queued row, then skips the job's row when someone holds it: CLAIM_SQL); it is a
 * complete batch's, so it goes on to take a's row (CLAIMED_COUNT_SQL, for a job of a it claimed
 * before). The cancel of j2 locks j2, then needs j2's queue row and waits for the claim's
 * transaction. It must hold nothing the claim's transaction will ask for while it waits: when
 * its UPDATE's triggers took a's row before they deleted the queue row, the claim's transaction
 * waited for that row, a cycle, and PostgreSQL aborted the cancel after deadlock_timeout (1 s)
 * and TX_RETRY ran it again. Now the cancel locks the queue row before it writes: the test's
 * session gets a's row at once, commits, and the cancel goes through on its first try. */
static void test_cancel_waits_for_a_claim_without_deadlock(void)
{
    race_t r;
    if (!have_pg())
        return;
    char j1[JOB_ID_SIZE], j2[JOB_ID_SIZE], first[256];
    store_t *s = open_fresh(&r);
    CHECK(s != NULL);
    if (s) {
        create(s, "a", 4, j1);
        create(s, "a", 4, j2);
        cancel_arg_t a = {.id = j2, .rc = -1};
        r.op = cancel_op;
        r.arg = &a;
        snprintf(first, sizeof first, "SELECT job_id FROM job_queue WHERE job_id = '%s' FOR UPDATE",
                 j2);
        race(&r, first, "UPDATE users SET queued = queued WHERE name = 'a'");
        CHECK(r.victim); /* here: a's row was granted */
        CHECK(r.again);  /* and the cancel still waited for the queue row */
        CHECK_INT(r.retries, 0);
        CHECK_INT(a.rc, STORE_OK);
        CHECK_INT(status_of(s, j2), JOB_CANCELED);
        CHECK_INT(status_of(s, j1), JOB_QUEUED);
        CHECK_INT(db_int("SELECT reserved FROM users WHERE name = 'a'"), 4);
        CHECK_INT(db_int("SELECT queued FROM users WHERE name = 'a'"), 1);
        CHECK_INT(db_int("SELECT COUNT(*) FROM job_queue"), 1);
    }
    close_fresh(&r, 0);
}

#define TESTS(X)                                                                                   \
    X(test_create_batch_deadlock)                                                                  \
    X(test_complete_batch_deadlock)                                                                \
    X(test_cancel_deadlock) X(test_cancel_waits_for_a_claim_without_deadlock)
#include "t_main.h"

#else
int main(void)
{
    printf("NOT RUN: this build has no libpq\n");
    return 0;
}
#endif
