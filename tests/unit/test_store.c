/* test_store.c: the store contract (store.h), one suite run against both stores: SQLite on a
 * temporary file, then PostgreSQL on a fresh database per test on the server named by
 * PINGVAS_TEST_PG_URL (printed by scripts/services/postgres.sh, exported by scripts/test.sh).
 * Without that variable the PostgreSQL half says that it did not run (and fails when
 * PINGVAS_TEST_STORE_REQUIRE_PG=1, as CTest sets it for the production configuration). The lease
 * state machine is driven by explicit `now` values: nothing sleeps. */
#include "t.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef PINGVAS_HAVE_PQ
#include "t_pg.h"
#endif

#include "store/store.h"

#define T0 INT64_C(1700000000000)
#define LEASE 15000

static int t_pg;            /* this pass runs against PostgreSQL */
static const char *t_admin; /* PINGVAS_TEST_PG_URL */
static char t_dir[64];
static char t_path[128];
static char t_url[1024]; /* the URL of the store the current test opened */
static char t_db[64];    /* its PostgreSQL database */

/* A new, empty place for a store: a temporary directory, or a fresh PostgreSQL database. */
static int make_place(void)
{
    if (!t_pg) {
        snprintf(t_dir, sizeof t_dir, "/tmp/pingvas-store-XXXXXX");
        if (!mkdtemp(t_dir)) {
            perror("mkdtemp");
            return -1;
        }
        snprintf(t_path, sizeof t_path, "%s/pingvas.db", t_dir);
        snprintf(t_url, sizeof t_url, "%s", t_path);
        return 0;
    }
#ifdef PINGVAS_HAVE_PQ
    static int n;
    snprintf(t_db, sizeof t_db, "pv_unit_%d_%d", (int)getpid(), n++);
    return t_pg_create(t_admin, t_db, t_url, sizeof t_url);
#else
    return -1;
#endif
}

/* A fresh, migrated store. */
static store_t *open_fresh(void)
{
    char err[256] = "";
    if (make_place() != 0)
        return NULL;
    store_t *s = store_open(t_url, err, sizeof err);
    if (!s) {
        fprintf(stderr, "store_open: %s\n", err);
        return NULL;
    }
    if (store_migrate(s) != STORE_OK) {
        fprintf(stderr, "migrate: %s\n", store_last_error(s));
        store_close(s);
        return NULL;
    }
    return s;
}

static void remove_db(void)
{
    if (t_pg) {
#ifdef PINGVAS_HAVE_PQ
        CHECK(t_pg_drop(t_admin, t_db) == 0);
#endif
        return;
    }
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    char p[160];
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", t_path, suffixes[i]);
        unlink(p);
    }
    rmdir(t_dir);
}

/* The values the triggers and creates keep (users.reserved, queued and stored, job_totals, and
 * PostgreSQL's queue table) must equal the sums over the jobs: checked through a second
 * connection. */
static void check_derived(void)
{
    static const char sql[] =
        "SELECT (SELECT COUNT(*) FROM users u WHERE u.reserved != (SELECT"
        "   COALESCE(SUM(credits_reserved), 0) FROM generation_jobs j WHERE j.user_id = u.name"
        "   AND j.status IN ('queued','in_progress')) OR u.queued != (SELECT COUNT(*) FROM"
        "   generation_jobs j WHERE j.user_id = u.name AND j.status = 'queued') OR u.stored !="
        "   (SELECT COUNT(*) FROM generation_jobs j WHERE j.user_id = u.name))"
        " + (SELECT COUNT(*) FROM job_totals t WHERE t.jobs != (SELECT COUNT(*) FROM"
        "   generation_jobs j WHERE j.status = t.status) OR t.credits_charged != (SELECT"
        "   COALESCE(SUM(credits_charged), 0) FROM generation_jobs j WHERE j.status = t.status)"
        "   OR abs(t.gpu_seconds - (SELECT COALESCE(SUM(gpu_seconds), 0) FROM generation_jobs j"
        "   WHERE j.status = t.status)) > 1e-6)";
    /* PostgreSQL: the queue table (store_pg.c, schema_v10) holds exactly the queued jobs */
    static const char queue_sql[] =
        "SELECT COUNT(*) FROM (SELECT id, tier, user_id, queue_pos FROM generation_jobs"
        "  WHERE status = 'queued' AND tier IS NOT NULL AND queue_pos IS NOT NULL) g"
        " FULL JOIN job_queue q ON q.job_id = g.id AND q.tier = g.tier AND q.user_id = g.user_id"
        "  AND q.queue_pos = g.queue_pos WHERE g.id IS NULL OR q.job_id IS NULL";
    long long bad = -1;
    if (t_pg) {
        long long bad_queue = -1;
#ifdef PINGVAS_HAVE_PQ
        bad = t_pg_exec(t_url, sql);
        bad_queue = t_pg_exec(t_url, queue_sql);
#endif
        CHECK_INT(bad, 0);
        CHECK_INT(bad_queue, 0);
        return;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_open_v2(t_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        bad = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    CHECK_INT(bad, 0);
}

static void close_fresh(store_t *s)
{
    check_derived();
    store_close(s);
    remove_db();
}

static job_params_t params(int64_t seed)
{
    static char prompt[] = "a lighthouse at dusk";
    static char negative[] = "blurry";
    job_params_t p;
    memset(&p, 0, sizeof p);
    p.prompt = prompt;
    p.negative_prompt = negative;
    snprintf(p.model, sizeof p.model, "sd15");
    p.width = 512;
    p.height = 768;
    p.steps = 20;
    p.cfg_scale = 7.5;
    p.seed = seed;
    return p;
}

/* Creates a job for user at time now with reserve; returns the rc and copies the id. */
static int create(store_t *s, const char *user, int64_t reserve, int64_t now, char *id)
{
    job_params_t p = params(42);
    job_t j;
    int rc = store_job_create(s, user, &p, NULL, reserve, 0, 0, now, &j);
    if (id)
        snprintf(id, JOB_ID_SIZE, "%s", rc == STORE_OK ? j.id : "");
    job_clear(&j);
    return rc;
}

static size_t count_jobs(store_t *s, const char *user, int status)
{
    job_t *v = NULL;
    size_t n = 0;
    if (store_job_list(s, user, status, 100000, 0, &v, &n) != STORE_OK)
        return (size_t)-1;
    for (size_t i = 0; i < n; i++)
        job_clear(&v[i]);
    free(v);
    return n;
}

static size_t ledger_rows(store_t *s, const char *user, const char *kind)
{
    ledger_entry_t *e = NULL;
    size_t n = 0, k = 0;
    if (store_ledger(s, user, 1000, &e, &n) != STORE_OK)
        return (size_t)-1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i].kind, kind) == 0)
            k++;
    free(e);
    return k;
}

static int64_t balance(store_t *s, const char *user)
{
    user_t u;
    if (store_user_get(s, user, &u) != STORE_OK)
        return -1;
    return u.balance;
}

static int64_t reserved(store_t *s, const char *user)
{
    user_t u;
    if (store_user_get(s, user, &u) != STORE_OK)
        return -1;
    return u.reserved;
}

static void test_open_and_migrate(void)
{
    char err[256] = "";
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_migrate(s), STORE_OK); /* idempotent */
    CHECK_INT(store_ping(s), STORE_OK);
    store_close(s);
    if (t_pg) { /* the URL options of PostgreSQL: tests/integration (test_pg_outage, test_ops) */
        remove_db();
        return;
    }

    /* reopen with the durable option and with the URL form */
    char url[200];
    snprintf(url, sizeof url, "sqlite://%s?synchronous=full", t_path);
    s = store_open(url, err, sizeof err);
    CHECK(s != NULL);
    if (s) {
        CHECK_INT(store_migrate(s), STORE_OK);
        CHECK_INT(store_ping(s), STORE_OK);
        store_close(s);
    }
    snprintf(url, sizeof url, "%s?journal=off", t_path);
    CHECK(store_open(url, err, sizeof err) == NULL);
    CHECK(strstr(err, "journal=off") != NULL);
    remove_db();

    s = store_open("/nonexistent-pingvas-dir/x/pingvas.db", err, sizeof err);
    CHECK(s == NULL);
    CHECK(strstr(err, "/nonexistent-pingvas-dir/x/pingvas.db") != NULL);
}

static void test_users_and_ledger(void)
{
    store_t *s = open_fresh();
    int64_t bal = 0;
    user_t u;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "alice", "standard", 100, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "alice", "standard", 5, T0), STORE_EXISTS);
    CHECK_INT(store_user_add(s, "bob", "enterprise", 0, T0), STORE_OK);
    CHECK_INT(store_user_get(s, "alice", &u), STORE_OK);
    CHECK_STR(u.name, "alice");
    CHECK_STR(u.tier, "standard");
    CHECK_INT(u.balance, 100);
    CHECK_INT(u.reserved, 0);
    CHECK_INT(u.created_at, T0);
    CHECK_INT(store_user_get(s, "nobody", &u), STORE_NOT_FOUND);

    CHECK_INT(store_user_credit(s, "alice", 50, T0 + 1, &bal), STORE_OK);
    CHECK_INT(bal, 150);
    CHECK_INT(store_user_credit(s, "alice", -150, T0 + 2, &bal), STORE_OK);
    CHECK_INT(bal, 0);
    CHECK_INT(store_user_credit(s, "alice", -1, T0 + 3, &bal), STORE_CONFLICT);
    CHECK_INT(balance(s, "alice"), 0);
    CHECK_INT(store_user_credit(s, "nobody", 1, T0, &bal), STORE_NOT_FOUND);

    ledger_entry_t *e = NULL;
    size_t n = 0;
    CHECK_INT(store_ledger(s, "alice", 10, &e, &n), STORE_OK);
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK_STR(e[0].kind, "grant"); /* newest first */
        CHECK_INT(e[0].amount, -150);
        CHECK_INT(e[0].balance_after, 0);
        CHECK_INT(e[1].amount, 50);
        CHECK_INT(e[2].amount, 100);
        CHECK_INT(e[2].balance_after, 100);
        CHECK_STR(e[2].job_id, "");
    }
    free(e);
    CHECK_INT(store_ledger(s, "alice", 2, &e, &n), STORE_OK);
    CHECK_INT(n, 2);
    free(e);
    CHECK_INT(ledger_rows(s, "bob", "grant"), 0); /* no grant row for zero credits */
    close_fresh(s);
}

static void test_create_fields_and_seed(void)
{
    store_t *s = open_fresh();
    job_t j, g;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ent", "enterprise", 0, T0), STORE_OK);
    job_params_t p = params(-1);
    CHECK_INT(store_job_create(s, "nobody", &p, NULL, 0, 0, 0, T0, &j), STORE_NOT_FOUND);
    CHECK_INT(store_job_create(s, "ent", &p, NULL, 0, 0, 0, T0, &j), STORE_OK);
    CHECK_INT(strlen(j.id), 36);
    CHECK_STR(j.user, "ent");
    CHECK_STR(j.tier, "enterprise");
    CHECK_INT(j.status, JOB_QUEUED);
    CHECK_STR(j.params.prompt, "a lighthouse at dusk");
    CHECK_STR(j.params.negative_prompt, "blurry");
    CHECK_STR(j.params.model, "sd15");
    CHECK_INT(j.params.width, 512);
    CHECK_INT(j.params.height, 768);
    CHECK_INT(j.params.steps, 20);
    CHECK_NEAR(j.params.cfg_scale, 7.5, 1e-12);
    CHECK(j.params.seed >= 0 && j.params.seed <= INT64_C(4294967295));
    CHECK_INT(j.created_at, T0);
    CHECK_INT(j.started_at, 0);
    CHECK_INT(j.completed_at, 0);
    CHECK_INT(j.attempts, 0);
    CHECK(j.image_key == NULL);
    CHECK(j.error_message == NULL);
    CHECK_STR(j.lease_id, "");
    CHECK(j.seq > 0);
    CHECK_INT(store_job_get(s, j.id, &g), STORE_OK);
    CHECK_INT(g.params.seed, j.params.seed); /* the picked seed is stored */
    CHECK_INT(g.seq, j.seq);
    job_clear(&g);
    CHECK_INT(store_job_get(s, "no-such-id", &g), STORE_NOT_FOUND);

    p = params(INT64_C(4294967295));
    job_t k;
    CHECK_INT(store_job_create(s, "ent", &p, NULL, 0, 0, 0, T0 + 1, &k), STORE_OK);
    CHECK_INT(k.params.seed, INT64_C(4294967295));
    CHECK(k.seq > j.seq);
    job_clear(&k);
    job_clear(&j);
    close_fresh(s);
}

/* Every field of two jobs is equal (the create's answer against a read, or two reads). */
static void check_same_job(const job_t *a, const job_t *b)
{
    CHECK_STR(a->id, b->id);
    CHECK_STR(a->user, b->user);
    CHECK_STR(a->tier, b->tier);
    CHECK_INT(a->status, b->status);
    CHECK_STR(a->params.prompt, b->params.prompt);
    CHECK_STR(a->params.negative_prompt, b->params.negative_prompt);
    CHECK_STR(a->params.model, b->params.model);
    CHECK_INT(a->params.width, b->params.width);
    CHECK_INT(a->params.height, b->params.height);
    CHECK_INT(a->params.steps, b->params.steps);
    CHECK_NEAR(a->params.cfg_scale, b->params.cfg_scale, 0);
    CHECK_INT(a->params.seed, b->params.seed);
    CHECK(a->params.webhook_url == NULL && b->params.webhook_url == NULL);
    CHECK_INT(a->seq, b->seq);
    CHECK_INT(a->created_at, b->created_at);
    CHECK_INT(a->started_at, b->started_at);
    CHECK_INT(a->completed_at, b->completed_at);
    CHECK_INT(a->attempts, b->attempts);
    CHECK_INT(a->releases, b->releases);
    CHECK((a->image_key == NULL) == (b->image_key == NULL));
    CHECK((a->error_message == NULL) == (b->error_message == NULL));
    CHECK_NEAR(a->gpu_seconds, b->gpu_seconds, 0);
    CHECK_INT(a->credits_reserved, b->credits_reserved);
    CHECK_INT(a->credits_charged, b->credits_charged);
    CHECK_STR(a->lease_id, b->lease_id);
    CHECK_STR(a->worker_id, b->worker_id);
    CHECK_INT(a->lease_expires_at, b->lease_expires_at);
    CHECK_INT(a->progress_step, b->progress_step);
    CHECK_INT(a->progress_steps, b->progress_steps);
}

/* Job ids are UUIDv7 (RFC 9562): the create's time in the first 48 bits, version 7, the RFC's
 * variant, random bits after; so ids sort in creation order and recent jobs share index pages. */
static void test_job_ids_are_time_ordered_uuids(void)
{
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ida", "standard", 0, T0), STORE_OK);
    job_params_t p = params(-1);
    char ids[4][JOB_ID_SIZE];
    const int64_t at[4] = {T0, T0, T0 + 1, T0 + 86400000};
    for (int i = 0; i < 4; i++) {
        job_t j;
        CHECK_INT(store_job_create(s, "ida", &p, NULL, 0, 0, 0, at[i], &j), STORE_OK);
        snprintf(ids[i], sizeof ids[i], "%s", j.id);
        job_clear(&j);
        char ms[13];
        snprintf(ms, sizeof ms, "%012" PRIx64, (uint64_t)at[i]);
        CHECK_INT(strlen(ids[i]), 36);
        CHECK(strncmp(ids[i], ms, 8) == 0 && strncmp(ids[i] + 9, ms + 8, 4) == 0);
        CHECK(ids[i][8] == '-' && ids[i][13] == '-' && ids[i][18] == '-' && ids[i][23] == '-');
        CHECK(ids[i][14] == '7');
        CHECK(strchr("89ab", ids[i][19]) != NULL);
    }
    CHECK(strcmp(ids[0], ids[1]) != 0);           /* the same millisecond: still unique */
    CHECK(strcmp(ids[0] + 14, ids[1] + 14) != 0); /* (the random part differs) */
    CHECK(strcmp(ids[1], ids[2]) < 0 && strcmp(ids[2], ids[3]) < 0);
    store_close(s);
}

/* The job a create answers is the job a read finds, field for field; store_job_get_webhook gives
 * the job and its webhook (or none) as store_job_get and store_webhook_get do. */
static void test_create_answer_and_get_webhook(void)
{
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 1000, T0), STORE_OK);
    job_params_t p = params(-1), q = params(7);
    q.webhook_url = "https://hooks.example.com/done?x=1";
    q.model[0] = '\0'; /* the default model */
    job_t a, b, g;
    store_webhook_t w, w2;
    bool has = true;
    CHECK_INT(store_job_create(s, "u", &p, NULL, 3, 0, 0, T0, &a), STORE_OK);
    CHECK_INT(store_job_create(s, "u", &q, "key-1", 4, 0, 0, T0 + 1, &b), STORE_OK);
    CHECK_INT(store_job_get(s, a.id, &g), STORE_OK);
    check_same_job(&a, &g);
    job_clear(&g);
    CHECK_INT(store_job_get_webhook(s, a.id, &g, &w, &has), STORE_OK);
    CHECK(!has);
    check_same_job(&a, &g);
    job_clear(&g);
    CHECK_INT(store_job_get(s, b.id, &g), STORE_OK);
    check_same_job(&b, &g);
    job_clear(&g);
    CHECK_INT(store_job_get_webhook(s, b.id, &g, &w, &has), STORE_OK);
    CHECK(has);
    check_same_job(&b, &g);
    CHECK_INT(store_webhook_get(s, b.id, &w2), STORE_OK);
    CHECK_STR(w.job_id, b.id);
    CHECK_STR(w.url, w2.url);
    CHECK_STR(w.url, "https://hooks.example.com/done?x=1");
    CHECK_STR(w.state, "waiting");
    CHECK_STR(w.state, w2.state);
    CHECK_INT(w.attempts, w2.attempts);
    CHECK_INT(w.delivered_at, 0);
    CHECK_STR(w.last_error, "");
    job_clear(&g);
    /* the idempotent replay answers the stored job */
    CHECK_INT(store_job_create(s, "u", &q, "key-1", 4, 0, 0, T0 + 2, &g), STORE_EXISTS);
    check_same_job(&b, &g);
    job_clear(&g);
    CHECK_INT(store_job_get_webhook(s, "no-such-id", &g, &w, &has), STORE_NOT_FOUND);
    CHECK(!has);
    job_clear(&a);
    job_clear(&b);
    close_fresh(s);
}

/* store_user_job_get reads what store_user_get and store_job_get_webhook read, and finds only the
 * user's own jobs; a disabled user shows as disabled on the next read. */
static void test_user_job_get(void)
{
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 1000, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "v", "standard", 1000, T0), STORE_OK);
    job_params_t p = params(-1), q = params(7);
    q.webhook_url = "https://hooks.example.com/done";
    job_t a, b, other;
    user_t u;
    store_user_job_t g;
    CHECK_INT(store_job_create(s, "u", &p, NULL, 3, 0, 0, T0, &a), STORE_OK);
    CHECK_INT(store_job_create(s, "u", &q, NULL, 4, 0, 0, T0 + 1, &b), STORE_OK);
    CHECK_INT(store_job_create(s, "v", &p, NULL, 5, 0, 0, T0 + 2, &other), STORE_OK);
    CHECK_INT(store_user_get(s, "u", &u), STORE_OK);
    CHECK_INT(store_user_job_get(s, "u", a.id, &g), STORE_OK);
    CHECK_STR(g.user.name, "u");
    CHECK_STR(g.user.tier, u.tier);
    CHECK_INT(g.user.balance, u.balance);
    CHECK_INT(g.user.reserved, u.reserved);
    CHECK_INT(g.user.reserved, 7);
    CHECK_INT(g.user.stored, u.stored);
    CHECK_INT(g.user.created_at, u.created_at);
    CHECK_INT(g.user.disabled_at, 0);
    CHECK_INT(g.job_rc, STORE_OK);
    CHECK(!g.has_webhook);
    check_same_job(&a, &g.job);
    job_clear(&g.job);
    CHECK_INT(store_user_job_get(s, "u", b.id, &g), STORE_OK);
    CHECK_INT(g.job_rc, STORE_OK);
    check_same_job(&b, &g.job);
    CHECK(g.has_webhook);
    CHECK_STR(g.webhook.job_id, b.id);
    CHECK_STR(g.webhook.url, "https://hooks.example.com/done");
    CHECK_STR(g.webhook.state, "waiting");
    job_clear(&g.job);
    /* another user's job, and no such job: the user is read, the job is not found */
    CHECK_INT(store_user_job_get(s, "u", other.id, &g), STORE_OK);
    CHECK_STR(g.user.name, "u");
    CHECK_INT(g.job_rc, STORE_NOT_FOUND);
    CHECK(!g.has_webhook);
    CHECK_INT(store_user_job_get(s, "u", "no-such-id", &g), STORE_OK);
    CHECK_INT(g.job_rc, STORE_NOT_FOUND);
    CHECK_INT(store_user_job_get(s, "nobody", a.id, &g), STORE_NOT_FOUND);
    /* disabling takes effect on the next read */
    CHECK_INT(store_user_set_disabled(s, "u", true, T0 + 5), STORE_OK);
    CHECK_INT(store_user_job_get(s, "u", a.id, &g), STORE_OK);
    CHECK(g.user.disabled_at != 0);
    job_clear(&g.job);
    job_clear(&a);
    job_clear(&b);
    job_clear(&other);
    close_fresh(s);
}

static void test_reservations(void)
{
    store_t *s = open_fresh();
    char a[JOB_ID_SIZE], b[JOB_ID_SIZE], c[JOB_ID_SIZE];
    job_t j;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 10, T0), STORE_OK);
    CHECK_INT(create(s, "u", 4, T0, a), STORE_OK);
    CHECK_INT(create(s, "u", 4, T0, b), STORE_OK);
    CHECK_INT(reserved(s, "u"), 8);
    CHECK_INT(create(s, "u", 4, T0, c), STORE_NO_CREDITS);
    CHECK_INT(count_jobs(s, "u", -1), 2); /* no row for the refused one */
    CHECK_INT(balance(s, "u"), 10);       /* reserving does not debit */

    /* a running job keeps its reservation; a canceled one frees it */
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0, &j), STORE_OK);
    job_clear(&j);
    CHECK_INT(reserved(s, "u"), 8);
    CHECK_INT(store_job_cancel(s, "u", b, T0, &j), STORE_OK);
    job_clear(&j);
    CHECK_INT(reserved(s, "u"), 4);
    CHECK_INT(create(s, "u", 4, T0, c), STORE_OK);
    CHECK_INT(create(s, "u", 3, T0, NULL), STORE_NO_CREDITS);
    CHECK_INT(create(s, "u", 2, T0, NULL), STORE_OK);
    CHECK_INT(reserved(s, "u"), 10);
    close_fresh(s);
}

static void test_idempotency_key(void)
{
    store_t *s = open_fresh();
    job_t j1, j2, j3;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 10, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "v", "standard", 10, T0), STORE_OK);
    job_params_t p = params(7);
    CHECK_INT(store_job_create(s, "u", &p, "key-1", 4, 0, 0, T0, &j1), STORE_OK);
    p.seed = 8; /* a replay returns the original, whatever the body */
    CHECK_INT(store_job_create(s, "u", &p, "key-1", 4, 0, 0, T0 + 5, &j2), STORE_EXISTS);
    CHECK_STR(j2.id, j1.id);
    CHECK_INT(j2.params.seed, 7);
    CHECK_INT(reserved(s, "u"), 4);
    CHECK_INT(count_jobs(s, "u", -1), 1);
    CHECK_INT(store_job_create(s, "v", &p, "key-1", 4, 0, 0, T0, &j3), STORE_OK);
    CHECK(strcmp(j3.id, j1.id) != 0);
    job_clear(&j1);
    job_clear(&j2);
    job_clear(&j3);
    /* a replay is answered even when a new job would be refused */
    CHECK_INT(store_job_create(s, "u", &p, "key-1", 100, 1, 0, T0, &j2), STORE_EXISTS);
    job_clear(&j2);
    close_fresh(s);
}

/* pingvas user disable: disabled_at is kept (a second disable does not move it), a create is
 * STORE_DISABLED and creates nothing, enable clears it; an unknown user is STORE_NOT_FOUND. */
static void test_user_disable(void)
{
    store_t *s = open_fresh();
    job_params_t p = params(1);
    job_t j;
    user_t u;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "mallory", "standard", 100, T0), STORE_OK);
    CHECK_INT(store_user_get(s, "mallory", &u), STORE_OK);
    CHECK_INT(u.disabled_at, 0);
    CHECK_INT(store_user_set_disabled(s, "mallory", true, T0 + 5), STORE_OK);
    CHECK_INT(store_user_set_disabled(s, "mallory", true, T0 + 9), STORE_OK);
    CHECK_INT(store_user_get(s, "mallory", &u), STORE_OK);
    CHECK_INT(u.disabled_at, T0 + 5);
    CHECK_INT(store_job_create(s, "mallory", &p, NULL, 4, 0, 0, T0, &j), STORE_DISABLED);
    CHECK_INT(count_jobs(s, "mallory", -1), 0);
    CHECK_INT(store_user_get(s, "mallory", &u), STORE_OK);
    CHECK_INT(u.reserved, 0);
    CHECK_INT(store_user_set_disabled(s, "mallory", false, T0 + 10), STORE_OK);
    CHECK_INT(store_user_get(s, "mallory", &u), STORE_OK);
    CHECK_INT(u.disabled_at, 0);
    CHECK_INT(store_job_create(s, "mallory", &p, NULL, 4, 0, 0, T0, &j), STORE_OK);
    job_clear(&j);
    CHECK_INT(store_user_set_disabled(s, "nobody", true, T0), STORE_NOT_FOUND);
    close_fresh(s);
}

static void test_max_queued(void)
{
    store_t *s = open_fresh();
    job_params_t p = params(1);
    job_t j;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 0, T0), STORE_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(store_job_create(s, "u", &p, NULL, 0, 3, 0, T0, &j), STORE_OK);
        job_clear(&j);
    }
    CHECK_INT(store_job_create(s, "u", &p, NULL, 0, 3, 0, T0, &j), STORE_LIMIT);
    CHECK_INT(count_jobs(s, "u", -1), 3);
    /* a claimed job no longer counts as queued */
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0, &j), STORE_OK);
    job_clear(&j);
    CHECK_INT(store_job_create(s, "u", &p, NULL, 0, 3, 0, T0, &j), STORE_OK);
    job_clear(&j);
    CHECK_INT(store_job_create(s, "u", &p, NULL, 0, 0, 0, T0, &j), STORE_OK); /* 0: no cap */
    job_clear(&j);
    close_fresh(s);
}

/* The cap on stored jobs counts every status; retention deletes ended jobs (issue 16). */
static void test_max_stored_and_purge(void)
{
    store_t *s = open_fresh();
    job_params_t p = params(1);
    job_t j;
    user_t u;
    char ids[4][JOB_ID_SIZE], first[JOB_ID_SIZE], second[JOB_ID_SIZE];
    int n = -1;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 100, T0), STORE_OK);
    CHECK_INT(store_job_create(s, "u", &p, NULL, 1, 0, 2, T0, &j), STORE_OK);
    snprintf(first, sizeof first, "%s", j.id);
    job_clear(&j);
    CHECK_INT(store_job_create(s, "u", &p, NULL, 1, 0, 2, T0, &j), STORE_OK);
    snprintf(second, sizeof second, "%s", j.id);
    job_clear(&j);
    CHECK_INT(store_job_create(s, "u", &p, NULL, 1, 0, 2, T0, &j), STORE_FULL);
    CHECK_INT(store_job_cancel(s, "u", first, T0 + 10, &j), STORE_OK);
    job_clear(&j);
    CHECK_INT(store_job_create(s, "u", &p, NULL, 1, 0, 2, T0, &j), STORE_FULL); /* still stored */
    CHECK_INT(store_jobs_purge(s, T0 + 10, 4, ids, &n), STORE_OK);
    CHECK_INT(n, 0); /* ended at T0 + 10, not before */
    CHECK_INT(store_jobs_purge(s, T0 + 11, 4, ids, &n), STORE_OK);
    CHECK_INT(n, 1);
    CHECK_STR(ids[0], first);
    CHECK_INT(store_job_get(s, first, &j), STORE_NOT_FOUND);
    CHECK_INT(store_job_get(s, second, &j), STORE_OK); /* queued: never purged */
    job_clear(&j);
    CHECK_INT(store_user_get(s, "u", &u), STORE_OK);
    CHECK_INT(u.stored, 1);
    CHECK_INT(store_job_create(s, "u", &p, NULL, 1, 0, 2, T0, &j), STORE_OK);
    job_clear(&j);
    /* a completed job goes too; its charge stays in the ledger, unlinked */
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 12, &j), STORE_OK);
    CHECK_STR(j.id, second);
    CHECK_INT(store_job_complete(s, j.id, j.lease_id, 1.0, "jobs/x.png", 1.0, T0 + 13, NULL),
              STORE_OK);
    job_clear(&j);
    CHECK_INT(store_jobs_purge(s, T0 + 14, 4, ids, &n), STORE_OK);
    CHECK_INT(n, 1);
    CHECK_STR(ids[0], second);
    ledger_entry_t *le = NULL;
    size_t nl = 0;
    CHECK_INT(store_ledger(s, "u", 10, &le, &nl), STORE_OK);
    CHECK(nl >= 1 && strcmp(le[0].kind, "charge") == 0 && le[0].job_id[0] == '\0');
    free(le);
    close_fresh(s);
}

/* test_lease_state_machine: the old lease holder's heartbeat and late reports change nothing
 * while j (the job's second attempt) runs; clears j. */
static void check_stale_lease_refused(store_t *s, const char *first, const char *lease1,
                                      int64_t now, job_t *jp)
{
    job_t j = *jp, k;
    CHECK_INT(store_job_heartbeat(s, first, lease1, LEASE, now), STORE_LEASE_LOST);
    CHECK_INT(store_job_complete(s, first, lease1, 3.0, "img/old.png", 1.0, now, &k),
              STORE_LEASE_LOST);
    CHECK_INT(store_job_fail(s, first, lease1, "boom", false, 3, now, &k), STORE_LEASE_LOST);
    CHECK_INT(store_job_release(s, first, lease1, now, &k), STORE_LEASE_LOST);
    CHECK_INT(balance(s, "u"), 100);
    CHECK_INT(ledger_rows(s, "u", "charge"), 0);
    CHECK_INT(store_job_get(s, first, &k), STORE_OK);
    CHECK_INT(k.status, JOB_IN_PROGRESS);
    CHECK_STR(k.lease_id, j.lease_id);
    CHECK(k.image_key == NULL);
    job_clear(&k);
    job_clear(&j);
}

/* test_lease_state_machine: attempts 2 and 3 expire; the third expiry fails the job. */
static void check_third_expiry_fails(store_t *s, const char *first, int64_t now)
{
    job_t j;
    int req = -1, fl = -1;
    now += LEASE + 1;
    CHECK_INT(store_reap(s, 3, 0, now, &req, &fl), STORE_OK);
    CHECK_INT(req, 1);
    CHECK_INT(store_job_claim(s, "standard", "w3", LEASE, now, &j), STORE_OK);
    CHECK_STR(j.id, first);
    CHECK_INT(j.attempts, 3);
    job_clear(&j);
    now += LEASE + 1;
    CHECK_INT(store_reap(s, 3, 0, now, &req, &fl), STORE_OK);
    CHECK_INT(req, 0);
    CHECK_INT(fl, 1);
    CHECK_INT(store_job_get(s, first, &j), STORE_OK);
    CHECK_INT(j.status, JOB_FAILED);
    CHECK_STR(j.error_message, "lease expired 3 times (worker lost)");
    CHECK_INT(j.completed_at, now);
    CHECK_INT(j.credits_charged, 0);
    CHECK_INT(j.credits_reserved, 0);
    job_clear(&j);
    CHECK_INT(balance(s, "u"), 100);
    CHECK_INT(reserved(s, "u"), 2); /* the two queued ones */
}

static void test_lease_state_machine(void)
{
    store_t *s = open_fresh();
    char first[JOB_ID_SIZE], older[JOB_ID_SIZE];
    job_t j;
    int req = -1, fl = -1;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 100, T0), STORE_OK);
    CHECK_INT(create(s, "u", 1, T0, first), STORE_OK);
    CHECK_INT(create(s, "u", 1, T0 + 1, older), STORE_OK);
    CHECK_INT(store_job_claim(s, "enterprise", "w1", LEASE, T0, &j), STORE_EMPTY);

    int64_t now = T0 + 100;
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, now, &j), STORE_OK);
    CHECK_STR(j.id, first);
    CHECK_INT(j.status, JOB_IN_PROGRESS);
    CHECK_INT(j.attempts, 1);
    CHECK_INT(j.started_at, now);
    CHECK_INT(j.lease_expires_at, now + LEASE);
    CHECK_STR(j.worker_id, "w1");
    CHECK_INT(strlen(j.lease_id), 32);
    char lease1[JOB_ID_SIZE];
    snprintf(lease1, sizeof lease1, "%s", j.lease_id);
    job_clear(&j);

    /* heartbeats extend the lease past its first expiry */
    CHECK_INT(store_job_heartbeat(s, first, lease1, LEASE, now + 10000), STORE_OK);
    CHECK_INT(store_job_heartbeat(s, first, lease1, LEASE, now + 20000), STORE_OK);
    CHECK_INT(store_job_heartbeat(s, first, "not-the-lease", LEASE, now + 20000), STORE_LEASE_LOST);
    CHECK_INT(store_job_heartbeat(s, "no-such-job", lease1, LEASE, now), STORE_NOT_FOUND);
    CHECK_INT(store_job_get(s, first, &j), STORE_OK);
    CHECK_INT(j.lease_expires_at, now + 20000 + LEASE);
    job_clear(&j);
    /* the reaper leaves a live lease alone */
    CHECK_INT(store_reap(s, 3, 60000, now + 20000 + LEASE, &req, &fl), STORE_OK);
    CHECK_INT(req, 0);
    CHECK_INT(fl, 0);

    /* expired but not yet taken back by the reaper: a heartbeat still renews it */
    now = now + 20000 + LEASE + 1;
    CHECK_INT(store_job_heartbeat(s, first, lease1, LEASE, now), STORE_OK);
    CHECK_INT(store_job_get(s, first, &j), STORE_OK);
    CHECK_INT(j.lease_expires_at, now + LEASE);
    job_clear(&j);
    /* expired and reaped: gone */
    now = now + LEASE + 1;
    CHECK_INT(store_reap(s, 3, 60000, now, &req, &fl), STORE_OK);
    CHECK_INT(req, 1);
    CHECK_INT(fl, 0);
    CHECK_INT(store_job_get(s, first, &j), STORE_OK);
    CHECK_INT(j.status, JOB_QUEUED);
    CHECK_STR(j.lease_id, "");
    CHECK_INT(j.attempts, 1);
    CHECK_INT(j.started_at, T0 + 100); /* first claim kept */
    job_clear(&j);
    /* a later job arrives; the requeued one is still at the front, ahead of older ones */
    CHECK_INT(create(s, "u", 1, now, NULL), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w2", LEASE, now, &j), STORE_OK);
    CHECK_STR(j.id, first);
    CHECK_INT(j.attempts, 2);
    CHECK(strcmp(j.lease_id, lease1) != 0);
    CHECK_STR(j.worker_id, "w2");

    check_stale_lease_refused(s, first, lease1, now, &j);
    check_third_expiry_fails(s, first, now);
    close_fresh(s);
}

static void test_requeue_order_several(void)
{
    store_t *s = open_fresh();
    char id[4][JOB_ID_SIZE];
    job_t j;
    int req = 0, fl = 0;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 0, T0), STORE_OK);
    for (int i = 0; i < 4; i++)
        CHECK_INT(create(s, "u", 0, T0 + i, id[i]), STORE_OK);
    for (int i = 0; i < 2; i++) {
        CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0, &j), STORE_OK);
        job_clear(&j);
    }
    /* both leases expire together: they come back first, in their original order */
    CHECK_INT(store_reap(s, 3, 0, T0 + LEASE + 1, &req, &fl), STORE_OK);
    CHECK_INT(req, 2);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + LEASE + 2, &j), STORE_OK);
        CHECK_STR(j.id, id[i]);
        job_clear(&j);
    }
    close_fresh(s);
}

static void test_complete_and_idempotent(void)
{
    store_t *s = open_fresh();
    char id[JOB_ID_SIZE], lease[JOB_ID_SIZE];
    job_t j, k;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 100, T0), STORE_OK);
    CHECK_INT(create(s, "u", 5, T0, id), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 10, &j), STORE_OK);
    snprintf(lease, sizeof lease, "%s", j.lease_id);
    job_clear(&j);
    CHECK_INT(store_job_complete(s, id, "other", 2.5, "k.png", 1.0, T0 + 20, &k), STORE_LEASE_LOST);
    CHECK_INT(store_job_complete(s, id, lease, 2.5, "images/x.png", 2.0, T0 + 20, &j), STORE_OK);
    CHECK_INT(j.status, JOB_COMPLETED);
    CHECK_STR(j.image_key, "images/x.png");
    CHECK_NEAR(j.gpu_seconds, 2.5, 1e-12);
    CHECK_INT(j.credits_charged, 5);
    CHECK_INT(j.credits_reserved, 0);
    CHECK_INT(j.completed_at, T0 + 20);
    CHECK_STR(j.lease_id, "");
    job_clear(&j);
    CHECK_INT(balance(s, "u"), 95);
    CHECK_INT(reserved(s, "u"), 0);

    /* the worker retries: same answer, nothing charged twice */
    CHECK_INT(store_job_complete(s, id, lease, 9.0, "images/y.png", 2.0, T0 + 30, &j), STORE_OK);
    CHECK_INT(j.status, JOB_COMPLETED);
    CHECK_STR(j.image_key, "images/x.png");
    CHECK_INT(j.credits_charged, 5);
    job_clear(&j);
    CHECK_INT(balance(s, "u"), 95);
    CHECK_INT(ledger_rows(s, "u", "charge"), 1);
    ledger_entry_t *e = NULL;
    size_t n = 0;
    CHECK_INT(store_ledger(s, "u", 1, &e, &n), STORE_OK);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(e[0].kind, "charge");
        CHECK_STR(e[0].job_id, id);
        CHECK_INT(e[0].amount, -5);
        CHECK_INT(e[0].balance_after, 95);
    }
    free(e);
    /* other reports on a completed job are refused */
    CHECK_INT(store_job_complete(s, id, "other", 1.0, "z", 1.0, T0 + 40, &j), STORE_LEASE_LOST);
    CHECK_INT(store_job_fail(s, id, lease, "late", false, 3, T0 + 40, &j), STORE_LEASE_LOST);
    CHECK_INT(store_job_release(s, id, lease, T0 + 40, &j), STORE_LEASE_LOST);
    CHECK_INT(store_job_heartbeat(s, id, lease, LEASE, T0 + 40), STORE_LEASE_LOST);
    CHECK_INT(store_job_cancel(s, "u", id, T0 + 40, &j), STORE_CONFLICT);
    CHECK_INT(j.status, JOB_COMPLETED);
    job_clear(&j);

    store_job_counts_t c;
    CHECK_INT(store_job_counts(s, &c), STORE_OK);
    CHECK_INT(c.completed, 1);
    CHECK_INT(c.failed, 0);
    CHECK_NEAR(c.gpu_seconds, 2.5, 1e-9);
    CHECK_INT(c.credits_charged, 5);
    close_fresh(s);
}

/* Completes one fresh job of user u with gpu seconds at rate; returns the charge. */
static int64_t charge_of(store_t *s, double gpu, double rate, int64_t now)
{
    char id[JOB_ID_SIZE];
    job_t j;
    int64_t charged = -1;
    if (create(s, "u", 0, now, id) != STORE_OK)
        return -1;
    if (store_job_claim(s, "standard", "w", LEASE, now, &j) != STORE_OK)
        return -1;
    job_t c;
    if (store_job_complete(s, j.id, j.lease_id, gpu, "i.png", rate, now, &c) == STORE_OK)
        charged = c.credits_charged;
    job_clear(&c);
    job_clear(&j);
    return charged;
}

/* store_job_create_many (the server's create writer): one batch of several users' creates, each
 * answered as if run alone one after the other: a key replayed within the batch and from before
 * it, an unknown and a disabled user, credits running out mid-batch (a cheaper create after a
 * refused one still admitted), the queued and stored caps. */
static void test_create_many(void)
{
    store_t *s = open_fresh();
    char old[JOB_ID_SIZE];
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 10, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "bob", "standard", 100, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "cy", "standard", 100, T0), STORE_OK);
    CHECK_INT(store_user_set_disabled(s, "cy", true, T0), STORE_OK);
    job_params_t p = params(7);
    job_t j;
    CHECK_INT(store_job_create(s, "bob", &p, "k-old", 1, 0, 0, T0, &j), STORE_OK);
    snprintf(old, sizeof old, "%s", j.id);
    job_clear(&j);
    store_create_t c[10] = {
        {.user = "bob", .idem_key = "k1", .reserve = 5},
        {.user = "ann", .reserve = 6},
        {.user = "ann", .reserve = 6},                   /* 4 left: refused */
        {.user = "bob", .idem_key = "k1", .reserve = 5}, /* the first's job */
        {.user = "nobody", .reserve = 1},
        {.user = "ann", .reserve = 4},                      /* fits what is left */
        {.user = "bob", .idem_key = "k-old", .reserve = 5}, /* the job from before */
        {.user = "cy", .reserve = 1},
        {.user = "bob", .reserve = 1, .max_queued = 3},  /* bob has 2 queued: fits */
        {.user = "bob", .reserve = 1, .max_stored = 3}}; /* bob has 3 stored now: full */
    for (int i = 0; i < 10; i++) {
        c[i].p = &p;
        c[i].now = T0 + 1;
    }
    CHECK_INT(store_job_create_many(s, c, 10), STORE_OK);
    int want[10] = {STORE_OK, STORE_OK,     STORE_NO_CREDITS, STORE_EXISTS, STORE_NOT_FOUND,
                    STORE_OK, STORE_EXISTS, STORE_DISABLED,   STORE_OK,     STORE_FULL};
    for (int i = 0; i < 10; i++)
        CHECK_INT(c[i].rc, want[i]);
    CHECK_STR(c[3].out.id, c[0].out.id);
    CHECK_STR(c[6].out.id, old);
    CHECK_INT(c[5].out.credits_reserved, 4);
    CHECK_INT(c[5].out.status, JOB_QUEUED);
    for (int i = 0; i < 10; i++)
        job_clear(&c[i].out);
    CHECK_INT(reserved(s, "ann"), 10);
    CHECK_INT(reserved(s, "bob"), 1 + 5 + 1);
    CHECK_INT(count_jobs(s, "ann", -1), 2);
    CHECK_INT(count_jobs(s, "bob", -1), 3);
    CHECK_INT(count_jobs(s, "cy", -1), 0);
    close_fresh(s);
}

/* A batch's values reach each of its jobs as written (PostgreSQL: through array literals of one
 * statement): quotes, backslashes, braces, commas, the word NULL, empty text, a webhook on one. */
static void test_create_many_values(void)
{
    static char p0[] = "a \"quoted\" \\back\\slash {x,y}", p1[] = "NULL", p2[] = "";
    static char n0[] = ",", url[] = "http://127.0.0.1:9/h?a=\"1\"";
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 100, T0), STORE_OK);
    job_params_t p[3] = {params(1), params(2), params(3)};
    p[0].prompt = p0;
    p[0].negative_prompt = n0;
    p[0].webhook_url = url;
    p[1].prompt = p1;
    p[2].prompt = p2;
    p[2].width = 64;
    store_create_t c[3] = {{.user = "ann", .reserve = 1, .idem_key = "k\"{,}\\"},
                           {.user = "ann", .reserve = 1},
                           {.user = "ann", .reserve = 1}};
    for (int i = 0; i < 3; i++) {
        c[i].p = &p[i];
        c[i].now = T0 + 1;
    }
    CHECK_INT(store_job_create_many(s, c, 3), STORE_OK);
    char first[JOB_ID_SIZE];
    snprintf(first, sizeof first, "%s", c[0].out.id);
    store_webhook_t w;
    for (int i = 0; i < 3; i++) {
        job_t j;
        CHECK_INT(c[i].rc, STORE_OK);
        CHECK_INT(store_job_get(s, c[i].out.id, &j), STORE_OK);
        CHECK_STR(c[i].out.params.prompt, p[i].prompt);
        CHECK_STR(j.params.prompt, p[i].prompt);
        CHECK_STR(j.params.negative_prompt, p[i].negative_prompt);
        CHECK_INT(j.params.width, p[i].width);
        CHECK_INT(j.params.seed, p[i].seed);
        CHECK_INT(store_webhook_get(s, c[i].out.id, &w), i == 0 ? STORE_OK : STORE_NOT_FOUND);
        job_clear(&j);
        job_clear(&c[i].out);
    }
    CHECK_INT(store_webhook_get(s, first, &w), STORE_OK);
    CHECK_STR(w.url, url);
    job_t j;
    CHECK_INT(store_job_create(s, "ann", &p[1], "k\"{,}\\", 1, 0, 0, T0 + 2, &j), STORE_EXISTS);
    CHECK_STR(j.id, first);
    job_clear(&j);
    close_fresh(s);
}

/* Claims the next job of tier standard for worker w; its id and lease to id and lease. */
static void claim_one(store_t *s, const char *w, char *id, char *lease)
{
    job_t j;
    CHECK_INT(store_job_claim(s, "standard", w, LEASE, T0 + 10, &j), STORE_OK);
    snprintf(id, JOB_ID_SIZE, "%s", j.id);
    snprintf(lease, JOB_ID_SIZE, "%s", j.lease_id);
    job_clear(&j);
}

/* Creates a job of u (with a webhook when hook) and, when lease is not NULL, claims it. */
static void hook_job(store_t *s, int hook, char *id, char *lease)
{
    job_params_t p = params(9);
    p.webhook_url = hook ? "https://hooks.example.com/x" : NULL;
    job_t j;
    CHECK_INT(store_job_create(s, "u", &p, NULL, 1, 0, 0, T0, &j), STORE_OK);
    snprintf(id, JOB_ID_SIZE, "%s", j.id);
    CHECK_INT(j.has_webhook, 0); /* set only on the job an end returns */
    job_clear(&j);
    if (lease)
        claim_one(s, "w1", id, lease);
}

/* has_webhook on the job a complete (batched and alone), a fail and a cancel return: set when
 * the job has a webhook delivery (what the server kicks the webhook sender for), else 0. */
static void test_ended_has_webhook(void)
{
    store_t *s = open_fresh();
    char id[8][JOB_ID_SIZE], lease[8][JOB_ID_SIZE];
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 100, T0), STORE_OK);
    for (int i = 0; i < 6; i++)
        hook_job(s, i % 2, id[i], lease[i]);
    for (int i = 6; i < 8; i++)
        hook_job(s, i % 2, id[i], NULL);
    store_complete_t c[2];
    for (int i = 0; i < 2; i++)
        c[i] = (store_complete_t){.id = id[i],
                                  .lease_id = lease[i],
                                  .image_key = "i.png",
                                  .gpu_seconds = 1.0,
                                  .credit_rate = 1.0,
                                  .now = T0 + 20};
    store_job_complete_many(s, c, 2);
    for (int i = 0; i < 2; i++) {
        CHECK_INT(c[i].rc, STORE_OK);
        CHECK_INT(c[i].done.has_webhook, i % 2);
        job_clear(&c[i].done);
    }
    job_t j;
    for (int i = 2; i < 4; i++) {
        CHECK_INT(store_job_complete(s, id[i], lease[i], 1.0, "i.png", 1.0, T0 + 20, &j), STORE_OK);
        CHECK_INT(j.has_webhook, i % 2);
        job_clear(&j);
    }
    for (int i = 4; i < 6; i++) {
        CHECK_INT(store_job_fail(s, id[i], lease[i], "boom", false, 3, T0 + 20, &j), STORE_OK);
        CHECK_INT(j.status, JOB_FAILED);
        CHECK_INT(j.has_webhook, i % 2);
        job_clear(&j);
    }
    for (int i = 6; i < 8; i++) {
        CHECK_INT(store_job_cancel(s, "u", id[i], T0 + 20, &j), STORE_OK);
        CHECK_INT(j.has_webhook, i % 2);
        job_clear(&j);
    }
    /* a replayed complete ends nothing: its webhook was made due by the first */
    CHECK_INT(store_job_complete(s, id[1], lease[1], 1.0, "i.png", 1.0, T0 + 30, &j), STORE_OK);
    CHECK_INT(j.has_webhook, 0);
    job_clear(&j);
    close_fresh(s);
}

/* store_job_complete_many (the server's complete writer): in one batch, two users' completes,
 * a complete-and-claim, a stale lease, an unknown job, a job completed twice and one completed
 * before: each answer exactly as store_job_complete_claim's, each job charged once. */
static void test_complete_many(void)
{
    store_t *s = open_fresh();
    char id[4][JOB_ID_SIZE], lease[4][JOB_ID_SIZE], next[JOB_ID_SIZE];
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 100, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "bob", "standard", 100, T0), STORE_OK);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(create(s, i % 2 ? "bob" : "ann", 5, T0, NULL), STORE_OK);
        claim_one(s, "w1", id[i], lease[i]);
    }
    CHECK_INT(create(s, "bob", 5, T0 + 1, next), STORE_OK);
    CHECK_INT(store_job_complete(s, id[3], lease[3], 1.0, "images/3.png", 2.0, T0 + 15, NULL),
              STORE_OK);
    store_complete_t c[7] = {
        {.id = id[1], .lease_id = lease[1], .image_key = "images/1.png", .gpu_seconds = 2.0},
        {.id = id[0],
         .lease_id = lease[0],
         .image_key = "images/0.png",
         .gpu_seconds = 1.0,
         .tier = "standard",
         .worker_id = "w2",
         .lease_ms = LEASE},
        {.id = id[2], .lease_id = "stale", .image_key = "images/x.png", .gpu_seconds = 1.0},
        {.id = "no-such-job", .lease_id = lease[2], .image_key = "images/y.png"},
        {.id = id[1], .lease_id = lease[1], .image_key = "images/z.png", .gpu_seconds = 9.0},
        {.id = id[3],
         .lease_id = lease[3],
         .image_key = "images/w.png",
         .gpu_seconds = 9.0,
         .tier = "standard",
         .worker_id = "w3",
         .lease_ms = LEASE},
        {.id = id[2], .lease_id = lease[2], .image_key = "images/2.png", .gpu_seconds = 3.0}};
    for (int i = 0; i < 7; i++) {
        c[i].credit_rate = 2.0;
        c[i].now = T0 + 20;
    }
    store_job_complete_many(s, c, 7);
    int want[7] = {STORE_OK, STORE_OK, STORE_LEASE_LOST, STORE_NOT_FOUND,
                   STORE_OK, STORE_OK, STORE_OK};
    const char *img[7] = {"images/1.png", "images/0.png", NULL,          NULL,
                          "images/1.png", "images/3.png", "images/2.png"};
    int64_t charged[7] = {4, 2, 0, 0, 4, 2, 6}; /* ceil(gpu_seconds * 2) of the first complete */
    for (int i = 0; i < 7; i++) {
        CHECK_INT(c[i].rc, want[i]);
        if (img[i] && c[i].rc == STORE_OK) {
            CHECK_INT(c[i].done.status, JOB_COMPLETED);
            CHECK_STR(c[i].done.image_key, img[i]);
            CHECK_INT(c[i].done.credits_charged, charged[i]);
        }
        job_clear(&c[i].done);
    }
    CHECK_INT(c[1].next_rc, STORE_OK);
    CHECK_STR(c[1].next.id, next);
    CHECK_STR(c[1].next.worker_id, "w2");
    CHECK_INT(c[5].next_rc, STORE_EMPTY); /* the replay claims too: nothing left */
    job_clear(&c[1].next);
    job_clear(&c[5].next);
    CHECK_INT(balance(s, "ann"), 100 - 2 - 6);
    CHECK_INT(balance(s, "bob"), 100 - 4 - 2);
    CHECK_INT(reserved(s, "ann"), 0);
    CHECK_INT(reserved(s, "bob"), 5); /* the job claimed by the batch */
    CHECK_INT(ledger_rows(s, "ann", "charge"), 2);
    CHECK_INT(ledger_rows(s, "bob", "charge"), 2);
    close_fresh(s);
}

static void test_charge_rounding_and_cap(void)
{
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 10, T0), STORE_OK);
    CHECK_INT(charge_of(s, 2.0, 1.0, T0), 2);
    CHECK_INT(charge_of(s, 2.01, 1.0, T0), 3);
    CHECK_INT(charge_of(s, 0.0, 1.0, T0), 0);
    CHECK_INT(charge_of(s, 0.1 * 3, 10.0, T0), 3); /* 0.30000000000000004 * 10 */
    CHECK_INT(balance(s, "u"), 2);
    CHECK_INT(charge_of(s, 100.0, 1.0, T0), 2); /* capped at the balance */
    CHECK_INT(balance(s, "u"), 0);
    CHECK_INT(charge_of(s, 5.0, 1.0, T0), 0);
    CHECK_INT(balance(s, "u"), 0);
    CHECK_INT(ledger_rows(s, "u", "charge"), 6);
    close_fresh(s);
}

static void test_release(void)
{
    store_t *s = open_fresh();
    char a[JOB_ID_SIZE], b[JOB_ID_SIZE];
    job_t j, r;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 10, T0), STORE_OK);
    CHECK_INT(create(s, "u", 2, T0, a), STORE_OK);
    CHECK_INT(create(s, "u", 2, T0, b), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0, &j), STORE_OK);
    CHECK_STR(j.id, a);
    CHECK_INT(store_job_release(s, a, j.lease_id, T0 + 5, &r), STORE_OK);
    CHECK_INT(r.status, JOB_QUEUED);
    CHECK_INT(r.attempts, 0);
    CHECK_INT(r.releases, 1);
    CHECK_STR(r.lease_id, "");
    CHECK_INT(r.credits_reserved, 2);
    job_clear(&r);
    CHECK_INT(store_job_release(s, a, j.lease_id, T0 + 5, &r), STORE_LEASE_LOST);
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 6, &j), STORE_OK);
    CHECK_STR(j.id, a); /* front of the queue */
    CHECK_INT(j.attempts, 1);
    CHECK_INT(j.releases, 1);
    job_clear(&j);
    CHECK_INT(balance(s, "u"), 10);
    close_fresh(s);
}

/* A heartbeat records the attempt's progress; a new claim starts without any. */
static void test_progress(void)
{
    store_t *s = open_fresh();
    char a[JOB_ID_SIZE];
    job_t j, g;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 10, T0), STORE_OK);
    CHECK_INT(create(s, "u", 2, T0, a), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0, &j), STORE_OK);
    CHECK_INT(j.progress_steps, 0);
    CHECK_INT(store_job_heartbeat_progress(s, a, j.lease_id, LEASE, T0 + 1, 7, 20), STORE_OK);
    CHECK_INT(store_job_get(s, a, &g), STORE_OK);
    CHECK_INT(g.progress_step, 7);
    CHECK_INT(g.progress_steps, 20);
    job_clear(&g);
    /* a heartbeat without progress, or with nonsense, keeps the last one */
    CHECK_INT(store_job_heartbeat(s, a, j.lease_id, LEASE, T0 + 2), STORE_OK);
    CHECK_INT(store_job_heartbeat_progress(s, a, j.lease_id, LEASE, T0 + 3, 9, 5), STORE_OK);
    CHECK_INT(store_job_get(s, a, &g), STORE_OK);
    CHECK_INT(g.progress_step, 7);
    job_clear(&g);
    CHECK_INT(store_job_release(s, a, j.lease_id, T0 + 4, &g), STORE_OK);
    job_clear(&g);
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 5, &j), STORE_OK);
    CHECK_STR(j.id, a);
    CHECK_INT(j.progress_step, 0);
    CHECK_INT(j.progress_steps, 0);
    job_clear(&j);
    close_fresh(s);
}

static void test_fail(void)
{
    store_t *s = open_fresh();
    char a[JOB_ID_SIZE], b[JOB_ID_SIZE];
    job_t j, r;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 10, T0), STORE_OK);
    CHECK_INT(create(s, "u", 3, T0, a), STORE_OK);
    CHECK_INT(create(s, "u", 3, T0, b), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0, &j), STORE_OK);
    CHECK_INT(store_job_fail(s, a, j.lease_id, "CUDA out of memory", true, 2, T0 + 1, &r),
              STORE_OK);
    CHECK_INT(r.status, JOB_QUEUED);
    CHECK_STR(r.error_message, "CUDA out of memory");
    CHECK_INT(r.attempts, 1);
    job_clear(&r);
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 2, &j), STORE_OK);
    CHECK_STR(j.id, a);
    CHECK_INT(j.attempts, 2);
    /* retryable, but attempts are used up */
    CHECK_INT(store_job_fail(s, a, j.lease_id, "CUDA out of memory", true, 2, T0 + 3, &r),
              STORE_OK);
    CHECK_INT(r.status, JOB_FAILED);
    CHECK_INT(r.completed_at, T0 + 3);
    CHECK_INT(r.credits_reserved, 0);
    CHECK_INT(r.credits_charged, 0);
    job_clear(&r);
    /* a replay of the same report is answered the same way */
    CHECK_INT(store_job_fail(s, a, j.lease_id, "again", true, 2, T0 + 4, &r), STORE_OK);
    CHECK_INT(r.status, JOB_FAILED);
    CHECK_STR(r.error_message, "CUDA out of memory");
    job_clear(&r);
    CHECK_INT(store_job_complete(s, a, j.lease_id, 1.0, "x", 1.0, T0 + 4, &r), STORE_LEASE_LOST);
    job_clear(&j);
    /* not retryable: failed at once */
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 5, &j), STORE_OK);
    CHECK_STR(j.id, b);
    CHECK_INT(store_job_fail(s, b, j.lease_id, "bad model", false, 3, T0 + 6, &r), STORE_OK);
    CHECK_INT(r.status, JOB_FAILED);
    CHECK_INT(r.attempts, 1);
    job_clear(&r);
    job_clear(&j);
    CHECK_INT(balance(s, "u"), 10);
    CHECK_INT(reserved(s, "u"), 0);
    CHECK_INT(ledger_rows(s, "u", "charge"), 0);
    store_job_counts_t c;
    CHECK_INT(store_job_counts(s, &c), STORE_OK);
    CHECK_INT(c.failed, 2);
    close_fresh(s);
}

static void test_cancel(void)
{
    store_t *s = open_fresh();
    char a[JOB_ID_SIZE], b[JOB_ID_SIZE];
    job_t j, r;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 10, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "v", "standard", 10, T0), STORE_OK);
    CHECK_INT(create(s, "u", 3, T0, a), STORE_OK);
    CHECK_INT(create(s, "u", 3, T0, b), STORE_OK);

    /* queued */
    CHECK_INT(store_job_cancel(s, "v", a, T0 + 1, &r), STORE_NOT_FOUND);
    CHECK_INT(store_job_cancel(s, "u", "no-such", T0 + 1, &r), STORE_NOT_FOUND);
    CHECK_INT(store_job_cancel(s, "u", a, T0 + 1, &r), STORE_OK);
    CHECK_INT(r.status, JOB_CANCELED);
    CHECK_INT(r.completed_at, T0 + 1);
    job_clear(&r);
    CHECK_INT(store_job_cancel(s, "u", a, T0 + 2, &r), STORE_CONFLICT);
    CHECK_INT(r.status, JOB_CANCELED);
    CHECK_STR(r.id, a);
    job_clear(&r);
    CHECK_INT(reserved(s, "u"), 3);

    /* in progress: the worker learns it at its next heartbeat; nothing is charged */
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 3, &j), STORE_OK);
    CHECK_STR(j.id, b);
    CHECK_INT(store_job_cancel(s, "u", b, T0 + 4, &r), STORE_OK);
    CHECK_INT(r.status, JOB_CANCELED);
    CHECK_STR(r.lease_id, "");
    job_clear(&r);
    CHECK_INT(store_job_heartbeat(s, b, j.lease_id, LEASE, T0 + 5), STORE_CANCELED);
    CHECK_INT(store_job_complete(s, b, j.lease_id, 4.0, "x.png", 1.0, T0 + 6, &r), STORE_CANCELED);
    CHECK_INT(store_job_fail(s, b, j.lease_id, "x", true, 3, T0 + 6, &r), STORE_CANCELED);
    CHECK_INT(store_job_release(s, b, j.lease_id, T0 + 6, &r), STORE_CANCELED);
    job_clear(&j);
    CHECK_INT(store_job_get(s, b, &r), STORE_OK);
    CHECK_INT(r.status, JOB_CANCELED);
    CHECK(r.image_key == NULL);
    CHECK_INT(r.credits_charged, 0);
    job_clear(&r);
    CHECK_INT(balance(s, "u"), 10);
    CHECK_INT(reserved(s, "u"), 0);
    CHECK_INT(ledger_rows(s, "u", "charge"), 0);
    int req = -1, fl = -1;
    CHECK_INT(store_reap(s, 3, 0, T0 + 10 * LEASE, &req, &fl), STORE_OK);
    CHECK_INT(req + fl, 0);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 7, &j), STORE_EMPTY);
    store_job_counts_t c;
    CHECK_INT(store_job_counts(s, &c), STORE_OK);
    CHECK_INT(c.canceled, 2);
    close_fresh(s);
}

static void test_fair_share(void)
{
    store_t *s = open_fresh();
    char b_first[JOB_ID_SIZE];
    job_t j;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "a", "standard", 0, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "b", "standard", 0, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "e", "enterprise", 0, T0), STORE_OK);
    for (int i = 0; i < 10; i++)
        CHECK_INT(create(s, "a", 0, T0 + i, NULL), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 20, &j), STORE_OK);
    CHECK_STR(j.user, "a"); /* FIFO while A is alone */
    job_clear(&j);
    CHECK_INT(create(s, "b", 0, T0 + 30, b_first), STORE_OK);
    CHECK_INT(create(s, "b", 0, T0 + 31, NULL), STORE_OK);
    CHECK_INT(create(s, "e", 0, T0 + 32, NULL), STORE_OK);
    /* A holds one running slot, B none: B goes next although A's jobs are older */
    CHECK_INT(store_job_claim(s, "standard", "w2", LEASE, T0 + 40, &j), STORE_OK);
    CHECK_STR(j.user, "b");
    CHECK_STR(j.id, b_first);
    job_clear(&j);
    /* one each running: tie goes to the oldest head, A's */
    CHECK_INT(store_job_claim(s, "standard", "w3", LEASE, T0 + 41, &j), STORE_OK);
    CHECK_STR(j.user, "a");
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "standard", "w4", LEASE, T0 + 42, &j), STORE_OK);
    CHECK_STR(j.user, "b");
    job_clear(&j);
    /* B has nothing queued: A gets the rest */
    CHECK_INT(store_job_claim(s, "standard", "w5", LEASE, T0 + 43, &j), STORE_OK);
    CHECK_STR(j.user, "a");
    job_clear(&j);
    /* the enterprise queue is separate */
    CHECK_INT(store_job_claim(s, "enterprise", "we", LEASE, T0 + 44, &j), STORE_OK);
    CHECK_STR(j.user, "e");
    CHECK_STR(j.tier, "enterprise");
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "enterprise", "we", LEASE, T0 + 45, &j), STORE_EMPTY);

    queue_stats_t q;
    CHECK_INT(store_queue_stats(s, "standard", 60000, T0 + 50, &q), STORE_OK);
    CHECK_INT(q.queued, 7);
    CHECK_INT(q.running, 5);
    CHECK_INT(q.workers, 5); /* claims mark their workers busy */
    CHECK_INT(q.idle_workers, 0);
    close_fresh(s);
}

static void test_list_pagination(void)
{
    store_t *s = open_fresh();
    char ids[25][JOB_ID_SIZE];
    job_t *v = NULL, j;
    size_t n = 0;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 0, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "v", "standard", 0, T0), STORE_OK);
    for (int i = 0; i < 25; i++) {
        CHECK_INT(create(s, "u", 0, T0 + i, ids[i]), STORE_OK);
        CHECK_INT(create(s, "v", 0, T0 + i, NULL), STORE_OK);
    }
    CHECK_INT(store_job_cancel(s, "u", ids[3], T0 + 100, &j), STORE_OK);
    job_clear(&j);

    int seen = 0;
    int64_t cursor = 0;
    for (int page = 0; page < 5; page++) {
        CHECK_INT(store_job_list(s, "u", -1, 10, cursor, &v, &n), STORE_OK);
        for (size_t i = 0; i < n; i++) {
            CHECK_STR(v[i].user, "u");
            CHECK_STR(v[i].id, ids[24 - seen]); /* newest first */
            seen++;
            cursor = v[i].seq;
            job_clear(&v[i]);
        }
        free(v);
        if (n < 10)
            break;
    }
    CHECK_INT(seen, 25);
    CHECK_INT(store_job_list(s, "u", JOB_CANCELED, 10, 0, &v, &n), STORE_OK);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_STR(v[0].id, ids[3]);
    for (size_t i = 0; i < n; i++)
        job_clear(&v[i]);
    free(v);
    CHECK_INT(count_jobs(s, "u", JOB_QUEUED), 24);
    CHECK_INT(count_jobs(s, "nobody", -1), 0);
    CHECK_INT(store_job_list(s, "u", -1, 0, 0, &v, &n), STORE_OK);
    CHECK_INT(n, 0);
    free(v);
    close_fresh(s);
}

static void test_reopen_keeps_jobs(void)
{
    store_t *s = open_fresh();
    char ids[50][JOB_ID_SIZE];
    char err[256];
    job_t j;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 1000, T0), STORE_OK);
    for (int i = 0; i < 50; i++)
        CHECK_INT(create(s, "u", 1, T0 + i, ids[i]), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 60, &j), STORE_OK);
    CHECK_INT(store_job_complete(s, j.id, j.lease_id, 3.0, "img/0.png", 1.0, T0 + 61, NULL),
              STORE_OK);
    job_clear(&j);
    store_close(s);

    s = store_open(t_url, err, sizeof err);
    CHECK(s != NULL);
    if (!s) {
        remove_db();
        return;
    }
    CHECK_INT(store_migrate(s), STORE_OK);
    for (int i = 0; i < 50; i++) {
        CHECK_INT(store_job_get(s, ids[i], &j), STORE_OK);
        CHECK_INT(j.status, i == 0 ? JOB_COMPLETED : JOB_QUEUED);
        job_clear(&j);
    }
    CHECK_INT(store_job_get(s, ids[0], &j), STORE_OK);
    CHECK_STR(j.image_key, "img/0.png");
    job_clear(&j);
    CHECK_INT(balance(s, "u"), 997);
    CHECK_INT(reserved(s, "u"), 49);
    /* seq keeps growing after a reopen */
    char next[JOB_ID_SIZE];
    CHECK_INT(create(s, "u", 1, T0 + 100, next), STORE_OK);
    job_t *v = NULL;
    size_t n = 0;
    CHECK_INT(store_job_list(s, "u", -1, 1, 0, &v, &n), STORE_OK);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_STR(v[0].id, next);
    for (size_t i = 0; i < n; i++)
        job_clear(&v[i]);
    free(v);
    close_fresh(s);
}

#define CLAIM_THREADS 2
#define CLAIMS_PER_THREAD 200

struct claim_arg {
    store_t *s;
    int index;
    char ids[CLAIMS_PER_THREAD][JOB_ID_SIZE];
    int got;
};

static void *claim_thread(void *p)
{
    struct claim_arg *a = p;
    char worker[32];
    snprintf(worker, sizeof worker, "w%d", a->index);
    for (int i = 0; i < CLAIMS_PER_THREAD; i++) {
        job_t j;
        if (store_job_claim(a->s, "standard", worker, LEASE, T0 + 1000 + i, &j) != STORE_OK)
            break;
        snprintf(a->ids[a->got++], JOB_ID_SIZE, "%s", j.id);
        job_clear(&j);
    }
    return NULL;
}

static int cmp_id(const void *x, const void *y)
{
    return strcmp(x, y);
}

static void test_concurrent_claims(void)
{
    store_t *s = open_fresh();
    static struct claim_arg args[CLAIM_THREADS];
    pthread_t th[CLAIM_THREADS];
    CHECK(s != NULL);
    if (!s)
        return;
    const char *users[] = {"a", "b", "c", "d"};
    for (int u = 0; u < 4; u++)
        CHECK_INT(store_user_add(s, users[u], "standard", 0, T0), STORE_OK);
    for (int i = 0; i < CLAIM_THREADS * CLAIMS_PER_THREAD; i++)
        CHECK_INT(create(s, users[i % 4], 0, T0 + i, NULL), STORE_OK);
    for (int t = 0; t < CLAIM_THREADS; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].s = s;
        args[t].index = t;
        pthread_create(&th[t], NULL, claim_thread, &args[t]);
    }
    for (int t = 0; t < CLAIM_THREADS; t++)
        pthread_join(th[t], NULL);
    static char all[CLAIM_THREADS * CLAIMS_PER_THREAD][JOB_ID_SIZE];
    size_t total = 0;
    for (int t = 0; t < CLAIM_THREADS; t++) {
        CHECK_INT(args[t].got, CLAIMS_PER_THREAD);
        for (int i = 0; i < args[t].got; i++)
            memcpy(all[total++], args[t].ids[i], JOB_ID_SIZE);
    }
    CHECK_INT(total, CLAIM_THREADS * CLAIMS_PER_THREAD);
    qsort(all, total, JOB_ID_SIZE, cmp_id);
    size_t dups = 0;
    for (size_t i = 1; i < total; i++)
        if (strcmp(all[i - 1], all[i]) == 0)
            dups++;
    CHECK_INT(dups, 0);
    job_t j;
    CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + 5000, &j), STORE_EMPTY);
    queue_stats_t q;
    CHECK_INT(store_queue_stats(s, "standard", 0, T0 + 5000, &q), STORE_OK);
    CHECK_INT(q.running, total);
    CHECK_INT(q.queued, 0);
    close_fresh(s);
}

/* Concurrent creates share transactions (group commit); each keeps its own outcome. */
#define CREATE_THREADS 8
#define CREATES_PER_THREAD 150

struct create_arg {
    store_t *s;
    int index;
    int ok, no_credits, exists, other;
    char idem_id[JOB_ID_SIZE];
    int idem_rc;
};

static void *create_thread(void *arg)
{
    struct create_arg *a = arg;
    for (int i = 0; i < CREATES_PER_THREAD; i++) {
        /* Two users: "rich" can pay for everything, "poor" for exactly 500 reservations of 1. */
        const char *user = i % 2 ? "poor" : "rich";
        int rc = create(a->s, user, 1, T0 + i, NULL);
        if (rc == STORE_OK)
            a->ok++;
        else if (rc == STORE_NO_CREDITS)
            a->no_credits++;
        else
            a->other++;
    }
    job_params_t p = params(9);
    job_t j;
    a->idem_rc = store_job_create(a->s, "rich", &p, "same-key", 1, 0, 0, T0, &j);
    snprintf(a->idem_id, sizeof a->idem_id, "%s", j.id);
    job_clear(&j);
    return NULL;
}

static void test_concurrent_creates(void)
{
    store_t *s = open_fresh();
    static struct create_arg args[CREATE_THREADS];
    pthread_t th[CREATE_THREADS];
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "rich", "standard", 1000000, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "poor", "standard", 500, T0), STORE_OK);
    for (int t = 0; t < CREATE_THREADS; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].s = s;
        args[t].index = t;
        pthread_create(&th[t], NULL, create_thread, &args[t]);
    }
    for (int t = 0; t < CREATE_THREADS; t++)
        pthread_join(th[t], NULL);
    int ok = 0, no_credits = 0, other = 0, idem_ok = 0, idem_exists = 0;
    for (int t = 0; t < CREATE_THREADS; t++) {
        ok += args[t].ok;
        no_credits += args[t].no_credits;
        other += args[t].other;
        idem_ok += args[t].idem_rc == STORE_OK;
        idem_exists += args[t].idem_rc == STORE_EXISTS;
        CHECK_STR(args[t].idem_id, args[0].idem_id);
    }
    int half = CREATE_THREADS * CREATES_PER_THREAD / 2;
    CHECK_INT(other, 0);
    CHECK_INT(ok, half + 500);         /* every "rich" create, exactly 500 "poor" ones */
    CHECK_INT(no_credits, half - 500); /* the rest of "poor", refused with nothing written */
    CHECK_INT(idem_ok, 1);
    CHECK_INT(idem_exists, CREATE_THREADS - 1);
    CHECK_INT(count_jobs(s, "poor", -1), 500);
    CHECK_INT(count_jobs(s, "rich", -1), half + 1);
    user_t u;
    CHECK_INT(store_user_get(s, "poor", &u), STORE_OK);
    CHECK_INT(u.reserved, 500);
    check_derived();
    close_fresh(s);
}

static void test_workers_and_stats(void)
{
    store_t *s = open_fresh();
    queue_stats_t q;
    int req, fl;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_worker_seen(s, "w1", "standard", "idle", T0), STORE_OK);
    CHECK_INT(store_worker_seen(s, "w2", "standard", "busy", T0), STORE_OK);
    CHECK_INT(store_worker_seen(s, "w3", "enterprise", "idle", T0), STORE_OK);
    CHECK_INT(store_worker_seen(s, "w1", "standard", "idle", T0 + 20000), STORE_OK); /* upsert */
    CHECK_INT(store_queue_stats(s, "standard", 30000, T0 + 20000, &q), STORE_OK);
    CHECK_INT(q.workers, 2);
    CHECK_INT(q.idle_workers, 1);
    CHECK_INT(q.queued, 0);
    /* w2 is past the TTL for the stats, and the reaper forgets it */
    CHECK_INT(store_queue_stats(s, "standard", 30000, T0 + 40000, &q), STORE_OK);
    CHECK_INT(q.workers, 1);
    CHECK_INT(store_reap(s, 3, 30000, T0 + 40000, &req, &fl), STORE_OK);
    CHECK_INT(store_queue_stats(s, "standard", 0, T0 + 40000, &q), STORE_OK);
    CHECK_INT(q.workers, 1); /* ttl 0: every worker still recorded */
    CHECK_INT(store_worker_gone(s, "w1"), STORE_OK);
    CHECK_INT(store_queue_stats(s, "standard", 30000, T0 + 40000, &q), STORE_OK);
    CHECK_INT(q.workers, 0);
    CHECK_INT(store_queue_stats(s, "enterprise", 0, T0 + 40000, &q), STORE_OK);
    CHECK_INT(q.workers, 0); /* forgotten by the reaper */

    store_job_counts_t c;
    CHECK_INT(store_job_counts(s, &c), STORE_OK);
    CHECK_INT(c.completed + c.failed + c.canceled, 0);
    close_fresh(s);
}

/* The queries of the hot paths and of the background ticks search an index, never scan the jobs
 * (or the ledger): their cost stays flat as the history grows (issue 12, the size rows of
 * bench/RESULTS.md). Each is checked against the plan the store itself gets. */
static const struct {
    const char *name;
    const char *sqlite, *pg; /* the index its plan must use on each store (NULL: no such query) */
} t_plans[] = {
    {"job_get", "sqlite_autoindex_generation_jobs_1", "generation_jobs_pkey"},
    /* the user's row and its job in one statement (PostgreSQL: two reads, job_get) */
    {"user_job_get", "sqlite_autoindex_generation_jobs_1", NULL},
    {"job_by_idem", "generation_jobs_idem", NULL},
    {"job_next_seq", "sqlite_autoindex_generation_jobs_2", NULL}, /* PostgreSQL: a sequence */
    {"job_list", "generation_jobs_user", "generation_jobs_user"},
    {"job_list_status", "generation_jobs_user_status", "generation_jobs_user_status"},
    /* PostgreSQL: the queue table of the queued jobs alone (store_pg.c, schema_v10) */
    {"job_pick_user", "generation_jobs_fair", "job_queue_fair"},
    {"job_head", "generation_jobs_fair", "job_queue_fair"},
    /* PostgreSQL: the front of the queue table (store_pg.c, schema_v13) */
    {"job_requeue", "generation_jobs_claim", "job_queue_order"},
    /* PostgreSQL: either partial index of the running jobs */
    {"reap_list", "generation_jobs_reap", "generation_jobs_reap|generation_jobs_running"},
    /* live jobs only (PostgreSQL: the queue table and the running jobs, schema_v13) */
    {"stats_jobs", "generation_jobs_claim", "job_queue_fair&generation_jobs_running"},
    {"purge_list", "generation_jobs_ended", "generation_jobs_ended"},
    {"purge_ledger", "sqlite_autoindex_credit_ledger_1", NULL},
    {"ledger_list", "credit_ledger_user", "credit_ledger_user"},
    /* the ended jobs by completed_at (PostgreSQL: schema_v13; SQLite: schema_v12, after
     * schema_v11 made generation_jobs_ended's predicate one that `status = 'completed'` implies) */
    {"usage", "generation_jobs_ended", "generation_jobs_ended"},
    /* PostgreSQL: the job leased or renewed by its primary key, not by a scan of the partial
     * index of the queued or running jobs (one statement each there; see store_pg.c); the claim
     * finds the fair-share user and its head job in the queue's index */
    {"job_claim", NULL, "generation_jobs_pkey&job_queue_fair&job_queue_order"},
    {"job_claim_alone", NULL, "generation_jobs_pkey&job_queue_fair&job_queue_order&users_pkey"},
    {"job_heartbeat", NULL, "generation_jobs_pkey"},
    /* PostgreSQL: a complete batch's user rows locked and counted by name (store_pg.c:
     * USERS_LOCK_SQL, CLAIMED_COUNT_SQL) */
    {"users_lock", NULL, "users_pkey"},
    {"claimed_count", NULL, "users_pkey"},
    /* PostgreSQL: a create batch's inserts, one statement over its arrays (store_pg.c) */
    {"job_create", NULL, "Function Scan on d&Insert on generation_jobs&Insert on job_queue"},
};

/* Whether plan names one of the indexes in alternatives ("a|b"), or all of them ("a&b"). */
static int plan_uses(const char *plan, const char *alternatives)
{
    char name[128];
    int all = strchr(alternatives, '&') != NULL;
    for (const char *p = alternatives; *p;) {
        size_t n = strcspn(p, "|&");
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        if ((strstr(plan, name) == NULL) == all)
            return !all;
        p += n + (p[n] != '\0');
    }
    return all;
}

static void test_query_plans(void)
{
    store_t *s = open_fresh();
    char plan[8192];
    CHECK(s != NULL);
    if (!s)
        return;
    for (size_t i = 0; i < sizeof t_plans / sizeof t_plans[0]; i++) {
        const char *index = t_pg ? t_plans[i].pg : t_plans[i].sqlite;
        int rc = store_explain(s, t_plans[i].name, plan, sizeof plan);
        CHECK_INT(rc, index ? STORE_OK : STORE_NOT_FOUND);
        if (!index)
            continue;
        /* SQLite: "SCAN t" reads all of t; PostgreSQL: "Seq Scan on t" with seqscan off */
        int ok =
            rc == STORE_OK && plan_uses(plan, index) && !strstr(plan, "SCAN generation_jobs") &&
            !strstr(plan, "SCAN credit_ledger") && !strstr(plan, "Seq Scan on generation_jobs") &&
            !strstr(plan, "Seq Scan on credit_ledger") && !strstr(plan, "Seq Scan on job_queue");
        if (!ok)
            fprintf(stderr, "%s: expected a search of %s, got:\n%s", t_plans[i].name, index, plan);
        CHECK(ok);
    }
    CHECK_INT(store_explain(s, "no_such_query", plan, sizeof plan), STORE_NOT_FOUND);
    close_fresh(s);
}

/* Runs sql on the current test's store through a second connection; 0 on success. */
static int raw_exec(const char *sql)
{
    if (t_pg) {
#ifdef PINGVAS_HAVE_PQ
        return t_pg_exec(t_url, sql) < 0 ? -1 : 0;
#else
        return -1;
#endif
    }
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(t_path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
                     sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK
                 ? 0
                 : -1;
    if (rc)
        fprintf(stderr, "sqlite: %s: %s\n", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc;
}

/* PostgreSQL: the claim's searches of the queue keep their index whatever the statistics say. An
 * ANALYZE that saw a few jobs of one user in another tier, then 20,000 jobs of 50 users in
 * "standard": with the plain tier leading job_queue_order, the planner read the fair-share walk's
 * range through it and sorted the tier's whole queue. */
static void test_query_plans_stale_statistics(void)
{
    if (!t_pg)
        return;
    store_t *s = open_fresh();
    char plan[8192];
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(
        raw_exec("INSERT INTO job_queue SELECT 'g' || i, 'gold', 'ann', i"
                 " FROM generate_series(1, 20) i; ANALYZE job_queue;"
                 " INSERT INTO job_queue SELECT 's' || i, 'standard', 'u' || (i % 50), 100 + i"
                 " FROM generate_series(1, 20000) i"),
        0);
    static const char *const names[] = {"job_pick_user", "job_head", "job_claim"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        CHECK_INT(store_explain(s, names[i], plan, sizeof plan), STORE_OK);
        /* job_queue_order serves only the claim's fallback, which needs no sort */
        int ok = plan_uses(plan, "job_queue_fair") && !strstr(plan, "Sort Key: job_queue") &&
                 (strcmp(names[i], "job_claim") == 0) == (strstr(plan, "job_queue_order") != NULL);
        if (!ok)
            fprintf(stderr, "%s with stale statistics:\n%s", names[i], plan);
        CHECK(ok);
    }
    CHECK_INT(raw_exec("DELETE FROM job_queue"), 0);
    close_fresh(s);
}

/* A fresh store with users ann and bob, n queued jobs each: ann's (ids into a), then bob's. */
static store_t *open_ann_bob(int n, char (*a)[JOB_ID_SIZE], char (*b)[JOB_ID_SIZE])
{
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return NULL;
    CHECK_INT(store_user_add(s, "ann", "standard", 1000, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "bob", "standard", 1000, T0), STORE_OK);
    for (int i = 0; i < n; i++)
        CHECK_INT(create(s, "ann", 10, T0 + i, a[i]), STORE_OK);
    for (int i = 0; i < n; i++)
        CHECK_INT(create(s, "bob", 10, T0 + n + i, b[i]), STORE_OK);
    return s;
}

/* PostgreSQL: while another transaction holds the queue rows of the fair-share user's jobs (a
 * replica claiming them), a claim neither waits nor comes back empty: it takes the tier's first
 * job it can lock, another user's (the claim statement's fallback, b in store_pg.c). SQLite has
 * one writer: no claim runs beside another. */
static void test_claim_skips_locked_user(void)
{
    if (!t_pg)
        return;
#ifdef PINGVAS_HAVE_PQ
    char a[1][JOB_ID_SIZE], b[1][JOB_ID_SIZE];
    job_t j = {0};
    store_t *s = open_ann_bob(1, a, b);
    if (!s)
        return;
    PGconn *c = PQconnectdb(t_url);
    PGresult *r = PQexec(c, "BEGIN; SELECT job_id FROM job_queue WHERE user_id = 'ann' FOR UPDATE");
    CHECK_INT(PQresultStatus(r), PGRES_TUPLES_OK);
    CHECK_INT(PQntuples(r), 1);
    PQclear(r);
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 2, &j), STORE_OK);
    CHECK_STR(j.id, b[0]);
    job_clear(&j);
    PQclear(PQexec(c, "ROLLBACK"));
    PQfinish(c);
    CHECK_INT(store_job_claim(s, "standard", "w2", LEASE, T0 + 3, &j), STORE_OK);
    CHECK_STR(j.id, a[0]);
    job_clear(&j);
    close_fresh(s);
#endif
}

/* What PostgreSQL's schema versions 10 and 11 added (the queue table, store_pg.c), undone. */
#define PG_UNDO_QUEUE                                                                              \
    "DROP TRIGGER job_queue_delete ON generation_jobs;"                                            \
    " DROP TRIGGER job_queue_update ON generation_jobs;"                                           \
    " DROP FUNCTION job_queue_sync(); DROP TABLE job_queue;"                                       \
    " CREATE INDEX generation_jobs_fair ON generation_jobs(tier, user_id, queue_pos)"              \
    " WHERE status = 'queued';"

/* PostgreSQL: a store of version 9 with queued, running and ended jobs gets the queue table from
 * `pingvas migrate` filled with its queued jobs alone, and claims then take them in fair-share
 * order (SQLite has no such table: its claim reads an index of generation_jobs). */
static void test_migrate_queue_table(void)
{
    char a[2][JOB_ID_SIZE], b[2][JOB_ID_SIZE];
    job_t j = {0};
    store_t *s = open_ann_bob(2, a, b);
    if (!s)
        return;
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 4, &j), STORE_OK);
    CHECK_STR(j.id, a[0]); /* ann's first: both users run none, ann's head is older */
    job_clear(&j);
    CHECK_INT(store_job_cancel(s, "bob", b[1], T0 + 5, NULL), STORE_OK);
    if (t_pg) {
        CHECK_INT(raw_exec(PG_UNDO_QUEUE "UPDATE schema_version SET version = 9"), 0);
        CHECK_INT(store_migrate(s), STORE_OK);
    }
    /* ann runs one job now: bob's (b[0]) before ann's second; then ann's; then none */
    CHECK_INT(store_job_claim(s, "standard", "w2", LEASE, T0 + 6, &j), STORE_OK);
    CHECK_STR(j.id, b[0]);
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "standard", "w3", LEASE, T0 + 7, &j), STORE_OK);
    CHECK_STR(j.id, a[1]);
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "standard", "w4", LEASE, T0 + 8, &j), STORE_EMPTY);
    job_clear(&j);
    close_fresh(s);
}

/* PostgreSQL: version 12's writes undone (store_pg.c, schema_v12): the UPDATE triggers of version
 * 11, without `accounted`. */
#define PG_QUEUED_ROW(r)                                                                           \
    "(" r ".status = 'queued' AND " r ".tier IS NOT NULL AND " r ".queue_pos IS NOT NULL)"
#define PG_UNDO_SELF_ACCOUNTING                                                                    \
    "DROP TRIGGER generation_jobs_sums_delete ON generation_jobs;"                                 \
    " DROP TRIGGER generation_jobs_sums ON generation_jobs;"                                       \
    " CREATE TRIGGER generation_jobs_sums AFTER DELETE OR UPDATE OF status, user_id,"              \
    " credits_reserved, gpu_seconds, credits_charged ON generation_jobs"                           \
    " FOR EACH ROW EXECUTE FUNCTION generation_jobs_sums();"                                       \
    " DROP TRIGGER events_job ON generation_jobs;"                                                 \
    " CREATE TRIGGER events_job AFTER UPDATE OF status, progress_step ON generation_jobs"          \
    " FOR EACH ROW EXECUTE FUNCTION events_job();"                                                 \
    " DROP TRIGGER webhooks_job_delete ON generation_jobs;"                                        \
    " DROP TRIGGER webhooks_job ON generation_jobs;"                                               \
    " CREATE TRIGGER webhooks_job AFTER DELETE OR UPDATE OF status ON generation_jobs"             \
    " FOR EACH ROW EXECUTE FUNCTION webhooks_job();"                                               \
    " DROP TRIGGER job_queue_update ON generation_jobs;"                                           \
    " CREATE TRIGGER job_queue_update AFTER UPDATE OF status, tier, user_id, queue_pos"            \
    " ON generation_jobs FOR EACH ROW WHEN (" PG_QUEUED_ROW(                                       \
        "OLD") " IS DISTINCT FROM " PG_QUEUED_ROW("NEW") " OR (" PG_QUEUED_ROW("NEW") " AND "      \
                                                                                      "(OLD.tier," \
                                                                                      " OLD.user_" \
                                                                                      "id, "       \
                                                                                      "OLD.queue_" \
                                                                                      "pos)"       \
                                                                                      " IS "       \
                                                                                      "DISTINCT "  \
                                                                                      "FROM "      \
                                                                                      "(NEW.tier," \
                                                                                      " NEW.user_" \
                                                                                      "id, "       \
                                                                                      "NEW.queue_" \
                                                                                      "pos))) "    \
                                                                                      "EXECUTE "   \
                                                                                      "FUNCTION "  \
                                                                                      "job_queue_" \
                                                                                      "sync();"    \
                                                                                      " ALTER "    \
                                                                                      "TABLE "     \
                                                                                      "generation" \
                                                                                      "_jobs "     \
                                                                                      "DROP "      \
                                                                                      "COLUMN "    \
                                                                                      "accounted;"

/* Runs the statement fmt (one %s: job id) on the test's store through a second connection. */
static int raw_job_exec(const char *fmt, const char *id)
{
    char sql[1024];
    snprintf(sql, sizeof sql, fmt, id);
    return raw_exec(sql);
}

/* SQLite: how many in-memory B-trees (OpenEphemeral) the program of sql builds, through a second
 * connection; -1 when it does not compile. */
static int raw_ephemerals(const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    char explain[1024];
    int n = -1;
    snprintf(explain, sizeof explain, "EXPLAIN %s", sql);
    if (sqlite3_open_v2(t_path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, explain, -1, &stmt, NULL) == SQLITE_OK) {
        n = 0;
        while (sqlite3_step(stmt) == SQLITE_ROW)
            n += strcmp((const char *)sqlite3_column_text(stmt, 1), "OpenEphemeral") == 0;
    }
    if (n < 0)
        fprintf(stderr, "sqlite: %s: %s\n", explain, sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return n;
}

/* What schema_v11 and schema_v12 changed, put back as it was in a store of version 10: the
 * CHECKs of a job's status and a webhook's state, the predicate of generation_jobs_ended and the
 * WHEN of webhooks_job_end as IN lists, and generation_jobs_completed. */
#define SQLITE_UNDO_V11                                                                            \
    "BEGIN; PRAGMA writable_schema = ON;"                                                          \
    " UPDATE sqlite_schema SET sql = replace(sql, 'status = ''pending'' OR status = ''queued'' OR" \
    " status = ''in_progress'' OR status = ''completed'' OR status = ''failed'' OR status ="       \
    " ''canceled''', 'status IN     (''pending'',''queued'',''in_progress'',''completed'',"        \
    "''failed'',''canceled'')') WHERE name = 'generation_jobs';"                                   \
    " UPDATE sqlite_schema SET sql = replace(sql, 'state = ''waiting'' OR state = ''pending'' OR"  \
    " state = ''delivered'' OR state = ''failed''', 'state IN    (''waiting'',''pending'',"        \
    "''delivered'',''failed'')') WHERE name = 'webhooks';"                                         \
    " PRAGMA schema_version = 1000; PRAGMA writable_schema = OFF;"                                 \
    " DROP INDEX generation_jobs_ended; CREATE INDEX generation_jobs_ended ON"                     \
    " generation_jobs(completed_at) WHERE status IN ('completed','failed','canceled');"            \
    " DROP TRIGGER webhooks_job_end; CREATE TRIGGER webhooks_job_end AFTER UPDATE OF status ON"    \
    " generation_jobs WHEN NEW.status IN ('completed','failed','canceled') AND OLD.status IS NOT"  \
    " NEW.status BEGIN UPDATE webhooks SET state = 'pending' WHERE job_id = NEW.id AND state ="    \
    " 'waiting'; END; CREATE INDEX generation_jobs_completed ON generation_jobs(completed_at)"     \
    " WHERE status = 'completed'; UPDATE schema_version SET version = 10; COMMIT;"

#define T_INSERT_SQL                                                                               \
    "INSERT INTO generation_jobs(id, user_id, status, prompt, seq, queue_pos, counted)"            \
    " VALUES ('j-raw', 'ann', 'queued', 'p', 1000, 1000, 1)"
#define T_END_SQL "UPDATE generation_jobs SET status = 'completed', completed_at = 5 WHERE id = 'x'"

/* SQLite (schema_v11): a job's insert and the update that ends it build no in-memory B-tree (an
 * IN list of three or more constants in a CHECK, a partial index's predicate or a trigger's
 * WHEN builds one each time), in a new store and in one migrated from version 10; the CHECK still
 * refuses a status that is not one of the six, and an ended job's webhook is still made due.
 * schema_v12: neither store has generation_jobs_completed. */
static void test_job_writes_build_no_temp_btree(void)
{
    if (t_pg)
        return;
    store_t *s = open_fresh();
    job_params_t p = params(3);
    p.webhook_url = "https://hooks.example.com/x";
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 1000, T0), STORE_OK);
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* a store of version 10, migrated by this pingvas */
            CHECK_INT(raw_ephemerals(T_INSERT_SQL), 2);
            CHECK_INT(raw_ephemerals(T_END_SQL), 5);
            CHECK_INT(store_migrate(s), STORE_OK);
        }
        CHECK_INT(raw_ephemerals(T_INSERT_SQL), 0);
        CHECK_INT(raw_ephemerals(T_END_SQL), 0);
        CHECK(raw_exec("DROP INDEX generation_jobs_completed") != 0); /* no such index */
        CHECK(raw_exec("INSERT INTO generation_jobs(id, user_id, status, prompt, seq, queue_pos)"
                       " VALUES ('bad', 'ann', 'done', 'p', 2000, 2000)") != 0);
        job_t j;
        char id[JOB_ID_SIZE];
        store_webhook_t w;
        CHECK_INT(create(s, "ann", 1, T0 + 1, NULL), STORE_OK);
        CHECK_INT(store_job_create(s, "ann", &p, NULL, 1, 0, 0, T0 + 1, &j), STORE_OK);
        snprintf(id, sizeof id, "%s", j.id);
        job_clear(&j);
        CHECK_INT(store_job_cancel(s, "ann", id, T0 + 2, &j), STORE_OK);
        job_clear(&j);
        CHECK_INT(store_webhook_get(s, id, &w), STORE_OK);
        CHECK_STR(w.state, "pending");
        CHECK(raw_exec("UPDATE webhooks SET state = 'sent'") != 0); /* the CHECK holds */
        if (round == 0)
            CHECK_INT(raw_exec(SQLITE_UNDO_V11), 0);
    }
    close_fresh(s);
}

/* SQLite: a job the server creates (counted, schema_v10: its event and counts written by the create
 * writer) and one another writer inserts (counted by the triggers) leave the same: the event's
 * text, users' reserved, queued and stored, job_totals (check_derived, at close). */
static void test_create_counted_like_triggers(void)
{
    if (t_pg)
        return; /* PostgreSQL's creates count themselves in their statement (store_pg.c) */
    store_t *s = open_fresh();
    store_event_t *v = NULL;
    size_t n = 0;
    char id[JOB_ID_SIZE], want[256];
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 1000, T0), STORE_OK);
    job_params_t p = params(1);
    store_create_t c[2] = {{.user = "ann", .reserve = 3}, {.user = "ann", .reserve = 4}};
    for (int i = 0; i < 2; i++) {
        c[i].p = &p;
        c[i].now = T0 + 1;
    }
    CHECK_INT(store_job_create_many(s, c, 2), STORE_OK);
    snprintf(id, sizeof id, "%s", c[1].out.id);
    for (int i = 0; i < 2; i++)
        job_clear(&c[i].out);
    CHECK_INT(raw_exec("INSERT INTO generation_jobs(id, user_id, status, prompt, seq, tier,"
                       " created_at, credits_reserved, queue_pos) VALUES ('raw-1', 'ann',"
                       " 'queued', 'x', 1000, 'standard', 1700000000002, 5, 1000)"),
              0);
    CHECK_INT(reserved(s, "ann"), 3 + 4 + 5);
    CHECK_INT(store_events_read(s, 0, INT64_MAX, "ann", 100, &v, &n), STORE_OK);
    CHECK_INT(n, 3);
    for (size_t i = 0; i < n; i++) {
        const char *job = i == 1 ? id : i == 2 ? "raw-1" : NULL;
        if (!job)
            continue;
        snprintf(want, sizeof want,
                 "{\"id\":\"%s\",\"status\":\"queued\",\"tier\":\"standard\",\"attempts\":0,"
                 "\"error_message\":null}",
                 job);
        CHECK_STR(v[i].data, want);
        CHECK_STR(v[i].kind, "job");
        CHECK_STR(v[i].user, "ann");
    }
    store_events_free(v, n);
    close_fresh(s);
}

/* A claim and a complete keep their job's derived rows themselves (PostgreSQL's schema 12: the
 * queue row, the user's queued count and reservations, job_totals, the event, the webhook), and
 * every other writer of a job is still followed by the triggers: a store of version 11 with a job
 * running is migrated, then jobs are claimed and completed by this pingvas and by the statements
 * of a replica of version 11 (UPDATEs that leave `accounted` alone), one after the other.
 * close_fresh checks the sums and the queue table; the events and webhooks are checked here.
 * SQLite runs the same writes (its triggers follow them all). */
static void test_migrate_self_accounting(void)
{
    store_t *s = open_fresh();
    job_params_t p = params(7);
    job_t a[4], j = {0};
    store_event_t *v = NULL;
    store_webhook_t w;
    size_t n = 0;
    p.webhook_url = "https://hooks.example.com/done";
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 1000, T0), STORE_OK);
    for (int i = 0; i < 4; i++)
        CHECK_INT(store_job_create(s, "ann", &p, NULL, 10, 0, 0, T0 + i, &a[i]), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 4, &j), STORE_OK);
    CHECK_STR(j.id, a[0].id);
    if (t_pg) {
        CHECK_INT(raw_exec(PG_UNDO_SELF_ACCOUNTING "UPDATE schema_version SET version = 11"), 0);
        CHECK_INT(store_migrate(s), STORE_OK);
    }
    /* a[0], claimed before the migration, completed by this pingvas */
    CHECK_INT(store_job_complete(s, j.id, j.lease_id, 2.0, "a0.png", 1.0, T0 + 5, NULL), STORE_OK);
    job_clear(&j);
    /* a[1] claimed by an old replica, completed by this pingvas */
    CHECK_INT(raw_job_exec("UPDATE generation_jobs SET status = 'in_progress', lease_id = 'old',"
                           " worker_id = 'w2', lease_expires_at = 9000000000000,"
                           " attempts = attempts + 1 WHERE id = '%s'",
                           a[1].id),
              0);
    CHECK_INT(store_job_complete(s, a[1].id, "old", 1.0, "a1.png", 1.0, T0 + 6, NULL), STORE_OK);
    /* a[2] claimed by this pingvas, completed by an old replica */
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 7, &j), STORE_OK);
    CHECK_STR(j.id, a[2].id);
    job_clear(&j);
    CHECK_INT(raw_job_exec("UPDATE generation_jobs SET status = 'completed', image_url = 'a2.png',"
                           " gpu_seconds = 1.5, completed_at = 1700000000008, credits_charged = 2,"
                           " credits_reserved = 0, lease_expires_at = NULL WHERE id = '%s'",
                           a[2].id),
              0);
    CHECK_INT(balance(s, "ann"), 1000 - 2 - 1); /* the old replica's write charged nothing */
    /* each job's events: queued, then in_progress and completed for the three that ran */
    CHECK_INT(store_events_read(s, 0, INT64_MAX, "ann", 100, &v, &n), STORE_OK);
    for (int i = 0; i < 4; i++) {
        int count = 0;
        const char *last = "";
        for (size_t k = 0; k < n; k++)
            if (strstr(v[k].data, a[i].id)) {
                count++;
                last = v[k].data;
            }
        CHECK_INT(count, i < 3 ? 3 : 1);
        CHECK(strstr(last, i < 3 ? "completed" : "queued") != NULL);
        CHECK_INT(store_webhook_get(s, a[i].id, &w), STORE_OK);
        CHECK_STR(w.state, i < 3 ? "pending" : "waiting");
        job_clear(&a[i]);
    }
    store_events_free(v, n);
    close_fresh(s);
}

/* PostgreSQL: a store of version 12 (generation_jobs_claim, generation_jobs_completed and the
 * unique index of seq still there) loses them to `pingvas migrate` (schema_v13), and what searched
 * them searches the queue table and the ended-jobs index: the queue statistics count the same
 * jobs, a released job goes back to the front of the queue, usage finds the completed job. SQLite
 * keeps its indexes (the same checks run there). */
static void test_migrate_drop_indexes(void)
{
    char a[2][JOB_ID_SIZE], b[2][JOB_ID_SIZE], plan[8192];
    job_t j = {0};
    queue_stats_t q;
    usage_row_t *u = NULL;
    size_t n = 0;
    store_t *s = open_ann_bob(2, a, b);
    if (!s)
        return;
    if (t_pg) {
        CHECK_INT(
            raw_exec("CREATE INDEX generation_jobs_claim ON generation_jobs(tier, status,"
                     " queue_pos) WHERE status IN ('queued','in_progress');"
                     " CREATE INDEX generation_jobs_completed ON generation_jobs(completed_at)"
                     " WHERE status = 'completed';"
                     " ALTER TABLE generation_jobs ADD CONSTRAINT generation_jobs_seq_key"
                     " UNIQUE (seq); UPDATE schema_version SET version = 12"),
            0);
        CHECK_INT(store_migrate(s), STORE_OK);
#ifdef PINGVAS_HAVE_PQ
        CHECK_INT(t_pg_exec(t_url, "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN"
                                   " ('generation_jobs_claim', 'generation_jobs_completed',"
                                   " 'generation_jobs_seq_key')"),
                  0);
#endif
        CHECK_INT(store_explain(s, "usage", plan, sizeof plan), STORE_OK);
        CHECK(strstr(plan, "generation_jobs_ended") != NULL);
    }
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 5, &j), STORE_OK);
    CHECK_STR(j.id, a[0]);
    CHECK_INT(store_queue_stats(s, "standard", 0, T0 + 5, &q), STORE_OK);
    CHECK_INT(q.queued, 3);
    CHECK_INT(q.running, 1);
    job_t k = {0};
    CHECK_INT(store_job_claim(s, "standard", "w2", LEASE, T0 + 6, &k), STORE_OK);
    CHECK_STR(k.id, b[0]); /* ann runs one */
    CHECK_INT(store_job_release(s, k.id, k.lease_id, T0 + 7, NULL), STORE_OK);
    job_clear(&k);
    CHECK_INT(store_job_complete(s, j.id, j.lease_id, 1.0, "a.png", 1.0, T0 + 8, NULL), STORE_OK);
    job_clear(&j);
    /* neither runs a job: the earlier head, bob's released job at the front of the queue */
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 9, &j), STORE_OK);
    CHECK_STR(j.id, b[0]);
    job_clear(&j);
    CHECK_INT(store_usage(s, 0, INT64_MAX, &u, &n), STORE_OK);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_INT(u[0].images, 1);
    free(u);
    close_fresh(s);
}

/* A worker's events: one when it appears, one per change of state, one when it is gone; none when
 * it is seen again in the state it has (a claim records its worker busy each time). PostgreSQL:
 * on a store of version 13 migrated to 14 (the UPDATE trigger only WHEN the state changes). */
static void test_migrate_worker_events(void)
{
    store_t *s = open_fresh();
    store_event_t *v = NULL;
    size_t n = 0;
    job_t j = {0};
    CHECK(s != NULL);
    if (!s)
        return;
    if (t_pg) {
        CHECK_INT(raw_exec("DROP TRIGGER events_worker_update ON workers;"
                           " DROP TRIGGER events_worker ON workers;"
                           " CREATE TRIGGER events_worker AFTER INSERT OR DELETE OR UPDATE OF state"
                           " ON workers FOR EACH ROW EXECUTE FUNCTION events_worker();"
                           " UPDATE schema_version SET version = 13"),
                  0);
        CHECK_INT(store_migrate(s), STORE_OK);
    }
    CHECK_INT(store_user_add(s, "ann", "standard", 1000, T0), STORE_OK);
    CHECK_INT(create(s, "ann", 1, T0, NULL), STORE_OK);
    CHECK_INT(create(s, "ann", 1, T0, NULL), STORE_OK);
    CHECK_INT(store_worker_seen(s, "w1", "standard", "idle", T0), STORE_OK);      /* appears */
    CHECK_INT(store_worker_seen(s, "w1", "standard", "idle", T0 + 1), STORE_OK);  /* no change */
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 2, &j), STORE_OK); /* busy */
    job_clear(&j);
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0 + 3, &j), STORE_OK); /* busy again */
    job_clear(&j);
    CHECK_INT(store_worker_gone(s, "w1"), STORE_OK);
    CHECK_INT(store_events_read(s, 0, INT64_MAX, NULL, 100, &v, &n), STORE_OK);
    const char *want[] = {"\"idle\"", "\"busy\"", "\"gone\""};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].kind, "worker") != 0)
            continue;
        CHECK(k < 3 && strstr(v[i].data, want[k]) != NULL);
        k++;
    }
    CHECK_INT(k, 3);
    store_events_free(v, n);
    close_fresh(s);
}

/* SQLite's version 10 undone: the column its creates mark counted (its triggers first). */
#define SQLITE_UNDO_COUNTED                                                                        \
    "DROP TRIGGER generation_jobs_ai; DROP TRIGGER generation_jobs_stored_ai;"                     \
    " DROP TRIGGER events_job_ai; ALTER TABLE generation_jobs DROP COLUMN counted;"

/* A store of the previous schema version (no index of a user's jobs by status) gets the index
 * from `pingvas migrate`, and its jobs stay listed as before. */
static void test_migrate_user_status_index(void)
{
    store_t *s = open_fresh();
    char plan[8192], id[JOB_ID_SIZE];
    job_t *v = NULL;
    size_t n = 0;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 1000, T0), STORE_OK);
    CHECK_INT(create(s, "ann", 10, T0, id), STORE_OK);
    /* the index is SQLite's version 9, PostgreSQL's 8 (its 9 runs again: it is idempotent; its
     * 10 and 11, the queue table, undone first; SQLite's 10 likewise) */
    CHECK_INT(raw_exec(t_pg ? PG_UNDO_QUEUE "DROP INDEX generation_jobs_user_status;"
                                            " UPDATE schema_version SET version = 7"
                            : SQLITE_UNDO_COUNTED "DROP INDEX generation_jobs_user_status;"
                                                  " UPDATE schema_version SET version = 8"),
              0);
    CHECK_INT(store_migrate(s), STORE_OK);
    CHECK_INT(store_explain(s, "job_list_status", plan, sizeof plan), STORE_OK);
    CHECK(strstr(plan, "generation_jobs_user_status") != NULL);
    CHECK_INT(store_job_list(s, "ann", JOB_QUEUED, 10, 0, &v, &n), STORE_OK);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_STR(v[0].id, id);
    for (size_t i = 0; i < n; i++)
        job_clear(&v[i]);
    free(v);
    CHECK_INT(count_jobs(s, "ann", JOB_COMPLETED), 0);
    CHECK_INT(count_jobs(s, "ann", -1), 1);
    close_fresh(s);
}

struct complete_many_arg {
    store_t *s;
    store_complete_t c[2];
};

/* Runs store_job_complete_many on a thread of its own, as the server's complete writer does. */
static void *complete_many_thread(void *arg)
{
    struct complete_many_arg *a = arg;
    store_job_complete_many(a->s, a->c, 2);
    return NULL;
}

#define REFUSE_LEDGER_SQLITE                                                                       \
    "CREATE TRIGGER refuse_ledger BEFORE INSERT ON credit_ledger"                                  \
    " BEGIN SELECT RAISE(ABORT, 'ledger refused by the test'); END"
#define REFUSE_LEDGER_PG                                                                           \
    "CREATE FUNCTION refuse_ledger() RETURNS trigger LANGUAGE plpgsql AS"                          \
    " $$BEGIN RAISE EXCEPTION 'ledger refused by the test'; END$$;"                                \
    " CREATE TRIGGER refuse_ledger BEFORE INSERT ON credit_ledger"                                 \
    " FOR EACH ROW EXECUTE FUNCTION refuse_ledger()"

/* A store error in a batch of completes run on another thread (the server's complete writer):
 * every item is STORE_ERR and carries the store's message in its err, since store_last_error is
 * per thread and the thread that answers the complete never saw it (a 503 and /readyz said only
 * "store: " when the disk was full). Nothing is written; once the fault is gone both complete. */
static void test_complete_many_error(void)
{
    store_t *s = open_fresh();
    char id[2][JOB_ID_SIZE], lease[2][JOB_ID_SIZE];
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 100, T0), STORE_OK);
    for (int i = 0; i < 2; i++) {
        CHECK_INT(create(s, "ann", 5, T0, NULL), STORE_OK);
        claim_one(s, "w1", id[i], lease[i]);
    }
    CHECK_INT(raw_exec(t_pg ? REFUSE_LEDGER_PG : REFUSE_LEDGER_SQLITE), 0);
    struct complete_many_arg arg = {.s = s};
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2; i++)
            arg.c[i] = (store_complete_t){.id = id[i],
                                          .lease_id = lease[i],
                                          .image_key = "images/x.png",
                                          .gpu_seconds = 1.0,
                                          .credit_rate = 2.0,
                                          .now = T0 + 20};
        pthread_t th;
        CHECK_INT(pthread_create(&th, NULL, complete_many_thread, &arg), 0);
        pthread_join(th, NULL);
        for (int i = 0; i < 2; i++) {
            CHECK_INT(arg.c[i].rc, round == 0 ? STORE_ERR : STORE_OK);
            if (round == 0 && !strstr(arg.c[i].err, "ledger refused by the test"))
                CHECK_STR(arg.c[i].err, "(the trigger's message)");
            if (round == 1)
                CHECK_STR(arg.c[i].err, "");
            job_clear(&arg.c[i].done);
        }
        if (round == 0) {
            CHECK_INT(balance(s, "ann"), 100);
            CHECK_INT(ledger_rows(s, "ann", "charge"), 0);
            CHECK_INT(raw_exec(t_pg ? "DROP TRIGGER refuse_ledger ON credit_ledger"
                                    : "DROP TRIGGER refuse_ledger"),
                      0);
        }
    }
    CHECK_INT(balance(s, "ann"), 100 - 2 - 2);
    close_fresh(s);
}

#define REFUSE_BOOM_SQLITE                                                                         \
    "CREATE TRIGGER refuse_boom BEFORE INSERT ON generation_jobs WHEN NEW.prompt = 'boom'"         \
    " BEGIN SELECT RAISE(ABORT, 'boom refused by the test'); END"

/* A write that fails for one create of a batch (SQLite): that create alone is STORE_ERR with the
 * store's message; the others before and after it are created (the writer runs the batch again,
 * each create under a savepoint), with their users' counts and distinct, growing seqs. */
static void test_create_many_write_error(void)
{
    if (t_pg)
        return; /* PostgreSQL writes a batch in one statement: all or nothing */
    store_t *s = open_fresh();
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "ann", "standard", 100, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "bob", "standard", 100, T0), STORE_OK);
    CHECK_INT(raw_exec(REFUSE_BOOM_SQLITE), 0);
    job_params_t p = params(3), boom = params(3);
    boom.prompt = (char *)"boom";
    store_create_t c[4] = {{.user = "ann", .reserve = 5, .p = &p},
                           {.user = "ann", .reserve = 7, .p = &boom},
                           {.user = "bob", .reserve = 2, .p = &p, .idem_key = "kb"},
                           {.user = "ann", .reserve = 1, .p = &p}};
    for (int i = 0; i < 4; i++)
        c[i].now = T0 + 1;
    CHECK_INT(store_job_create_many(s, c, 4), STORE_OK);
    int want[4] = {STORE_OK, STORE_ERR, STORE_OK, STORE_OK};
    for (int i = 0; i < 4; i++)
        CHECK_INT(c[i].rc, want[i]);
    if (!strstr(c[1].err, "boom refused by the test"))
        CHECK_STR(c[1].err, "(the trigger's message)");
    CHECK(c[0].out.seq > 0 && c[0].out.seq < c[2].out.seq && c[2].out.seq < c[3].out.seq);
    for (int i = 0; i < 4; i++) {
        job_t j;
        if (i == 1)
            continue;
        CHECK_INT(store_job_get(s, c[i].out.id, &j), STORE_OK);
        CHECK_INT(j.seq, c[i].out.seq);
        job_clear(&j);
    }
    for (int i = 0; i < 4; i++)
        job_clear(&c[i].out);
    CHECK_INT(reserved(s, "ann"), 5 + 1);
    CHECK_INT(reserved(s, "bob"), 2);
    CHECK_INT(count_jobs(s, "ann", -1), 2);
    CHECK_INT(count_jobs(s, "bob", -1), 1);
    user_t u;
    CHECK_INT(store_user_get(s, "ann", &u), STORE_OK);
    CHECK_INT(u.stored, 2);
    close_fresh(s);
}

/* The event log: triggers write a "job" event per status change and a "worker" event per
 * worker change, in the same transaction; reads filter by user; seq only grows. */
static void test_event_log(void)
{
    store_t *s = open_fresh();
    char id[JOB_ID_SIZE];
    job_t j;
    store_event_t *v = NULL;
    size_t n = 0;
    int64_t last = -1;
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_events_last(s, &last), STORE_OK);
    CHECK_INT(last, 0);
    CHECK_INT(store_user_add(s, "ev", "standard", 1000, T0), STORE_OK);
    CHECK_INT(store_user_add(s, "other", "standard", 1000, T0), STORE_OK);
    CHECK_INT(create(s, "ev", 1, T0, id), STORE_OK);
    CHECK_INT(create(s, "other", 1, T0, NULL), STORE_OK);
    CHECK_INT(store_job_claim(s, "standard", "w1", LEASE, T0, &j), STORE_OK);
    CHECK_INT(store_job_heartbeat(s, j.id, j.lease_id, LEASE, T0 + 1), STORE_OK); /* no event */
    CHECK_INT(store_job_complete(s, j.id, j.lease_id, 1.0, "k.png", 1.0, T0 + 2, NULL), STORE_OK);
    job_clear(&j);
    CHECK_INT(store_event_add(s, "scaling", NULL, "{\"to\":2}"), STORE_OK);
    CHECK_INT(store_events_read(s, 0, INT64_MAX, "ev", 100, &v, &n), STORE_OK);
    CHECK_INT(n, 3); /* queued, in_progress, completed: the claim took ev's job first */
    for (size_t i = 0; i < n; i++) {
        CHECK_STR(v[i].kind, "job");
        CHECK_STR(v[i].user, "ev");
        CHECK(strstr(v[i].data, id) != NULL);
        CHECK(i == 0 || v[i].seq > v[i - 1].seq);
    }
    if (n == 3) { /* JSON text: PostgreSQL's json_build_object spaces it, SQLite does not */
        json_t *d = json_loads(v[2].data, 0, NULL);
        CHECK_STR(json_string_value(json_object_get(d, "status")), "completed");
        json_decref(d);
    }
    store_events_free(v, n);
    CHECK_INT(store_events_read(s, 0, INT64_MAX, NULL, 100, &v, &n), STORE_OK);
    CHECK_INT(n, 6); /* two creates, the claim, worker w1 appearing busy, the completion, scaling */
    int workers = 0, scaling = 0;
    for (size_t i = 0; i < n; i++) {
        workers += strcmp(v[i].kind, "worker") == 0 && v[i].user[0] == '\0';
        scaling += strcmp(v[i].kind, "scaling") == 0;
    }
    CHECK_INT(workers, 1);
    CHECK_INT(scaling, 1);
    CHECK_INT(store_events_last(s, &last), STORE_OK);
    CHECK_INT(last, n ? v[n - 1].seq : -1);
    int64_t mid = n > 2 ? v[2].seq : 0;
    store_events_free(v, n);
    CHECK_INT(store_events_read(s, mid, mid + 1, NULL, 100, &v, &n), STORE_OK);
    CHECK_INT(n, 1);
    store_events_free(v, n);
    /* retention: nothing is older than a day; everything is older than -1 ms */
    CHECK_INT(store_events_trim(s, 86400000, 300000), STORE_OK);
    CHECK_INT(store_events_read(s, 0, INT64_MAX, NULL, 100, &v, &n), STORE_OK);
    CHECK_INT(n, 6);
    store_events_free(v, n);
    CHECK_INT(store_events_trim(s, -1000, -1000), STORE_OK);
    CHECK_INT(store_events_read(s, 0, INT64_MAX, NULL, 100, &v, &n), STORE_OK);
    CHECK_INT(n, 0);
    store_events_free(v, n);
    CHECK_INT(store_worker_gone(s, "w1"), STORE_OK); /* a new event keeps growing the seq */
    CHECK_INT(store_events_read(s, 0, INT64_MAX, NULL, 100, &v, &n), STORE_OK);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK(v[0].seq > last);
        CHECK(strstr(v[0].data, "\"gone\"") != NULL);
    }
    store_events_free(v, n);
    close_fresh(s);
}

/* Not an assertion (DESIGN 9: speed lives in bench/): prints rough rates for the record. */
static void test_throughput_report(void)
{
    const int N = t_pg ? 500 : 5000; /* a network round trip each on PostgreSQL */
    store_t *s = open_fresh();
    struct timespec t0, t1;
    job_params_t p = params(1);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(store_user_add(s, "u", "standard", 1000000, T0), STORE_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        job_t j;
        CHECK_INT(store_job_create(s, "u", &p, NULL, 1, 0, 0, T0 + i, &j), STORE_OK);
        job_clear(&j);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* claim and complete alternate, as with workers: few jobs run at a time */
    double claim_s = 0, complete_s = 0;
    for (int i = 0; i < N; i++) {
        job_t j;
        struct timespec a, b, c;
        clock_gettime(CLOCK_MONOTONIC, &a);
        CHECK_INT(store_job_claim(s, "standard", "w", LEASE, T0 + N, &j), STORE_OK);
        clock_gettime(CLOCK_MONOTONIC, &b);
        CHECK_INT(store_job_complete(s, j.id, j.lease_id, 1.5, "i.png", 1.0, T0 + N, NULL),
                  STORE_OK);
        clock_gettime(CLOCK_MONOTONIC, &c);
        job_clear(&j);
        claim_s += (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
        complete_s += (double)(c.tv_sec - b.tv_sec) + (c.tv_nsec - b.tv_nsec) / 1e9;
    }
#define SECS(a, b) ((double)((b).tv_sec - (a).tv_sec) + ((b).tv_nsec - (a).tv_nsec) / 1e9)
    printf(
        "     throughput (%s, this build, %d jobs): create %.0f/s, claim %.0f/s, complete %.0f/s\n",
        t_pg ? "postgresql" : "sqlite", N, N / SECS(t0, t1), N / claim_s, N / complete_s);
#undef SECS
    CHECK_INT(balance(s, "u"), 1000000 - 2 * N);
    close_fresh(s);
}

#define TESTS(X)                                                                                   \
    X(test_open_and_migrate)                                                                       \
    X(test_users_and_ledger)                                                                       \
    X(test_create_fields_and_seed)                                                                 \
    X(test_job_ids_are_time_ordered_uuids)                                                         \
    X(test_create_answer_and_get_webhook)                                                          \
    X(test_user_job_get)                                                                           \
    X(test_reservations)                                                                           \
    X(test_idempotency_key)                                                                        \
    X(test_user_disable)                                                                           \
    X(test_max_queued)                                                                             \
    X(test_max_stored_and_purge)                                                                   \
    X(test_lease_state_machine)                                                                    \
    X(test_requeue_order_several)                                                                  \
    X(test_complete_and_idempotent)                                                                \
    X(test_ended_has_webhook)                                                                      \
    X(test_complete_many)                                                                          \
    X(test_complete_many_error)                                                                    \
    X(test_create_many_write_error)                                                                \
    X(test_job_writes_build_no_temp_btree)                                                         \
    X(test_create_many)                                                                            \
    X(test_create_many_values)                                                                     \
    X(test_create_counted_like_triggers)                                                           \
    X(test_charge_rounding_and_cap)                                                                \
    X(test_release)                                                                                \
    X(test_progress)                                                                               \
    X(test_fail)                                                                                   \
    X(test_cancel)                                                                                 \
    X(test_fair_share)                                                                             \
    X(test_list_pagination)                                                                        \
    X(test_reopen_keeps_jobs)                                                                      \
    X(test_concurrent_claims)                                                                      \
    X(test_concurrent_creates)                                                                     \
    X(test_workers_and_stats)                                                                      \
    X(test_query_plans)                                                                            \
    X(test_query_plans_stale_statistics)                                                           \
    X(test_migrate_user_status_index)                                                              \
    X(test_migrate_queue_table)                                                                    \
    X(test_migrate_self_accounting)                                                                \
    X(test_migrate_drop_indexes)                                                                   \
    X(test_migrate_worker_events)                                                                  \
    X(test_claim_skips_locked_user)                                                                \
    X(test_event_log)                                                                              \
    X(test_throughput_report)
#define T_ENTRY(fn) {#fn, fn},
static const struct {
    const char *name;
    void (*fn)(void);
} t_tests[] = {TESTS(T_ENTRY)};

/* Runs every test (or those whose name holds filter) against the store of this pass. */
static void run_pass(const char *store, const char *filter, int *passed, int *failed)
{
    for (size_t i = 0; i < sizeof t_tests / sizeof t_tests[0]; i++) {
        if (filter && strstr(t_tests[i].name, filter) == NULL)
            continue;
        int before = t_failed_checks;
        t_tests[i].fn();
        int ok = t_failed_checks == before;
        ++*(ok ? passed : failed);
        printf("%s %s [%s]\n", ok ? "ok  " : "FAIL", t_tests[i].name, store);
    }
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    const char *filter = argc > 1 ? argv[1] : NULL;
    run_pass("sqlite", filter, &passed, &failed);
    t_admin = getenv("PINGVAS_TEST_PG_URL");
    const char *req = getenv("PINGVAS_TEST_STORE_REQUIRE_PG");
    int required = req && strcmp(req, "1") == 0;
#ifndef PINGVAS_HAVE_PQ
    t_admin = NULL;
    printf("NOT RUN: the PostgreSQL half (this build has no libpq)\n");
#else
    if (!t_admin || !*t_admin)
        printf("NOT RUN: the PostgreSQL half (PINGVAS_TEST_PG_URL is not set; run "
               "eval \"$(scripts/services/postgres.sh)\" first)\n");
#endif
    if (t_admin && *t_admin) {
        t_pg = 1;
        run_pass("postgresql", filter, &passed, &failed);
    } else if (required) {
        printf("FAIL the PostgreSQL half is required here (PINGVAS_TEST_STORE_REQUIRE_PG=1)\n");
        failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
