/* test_celery.c: the Celery bridge's pure parts: envelopes as Python Celery 5 / kombu and
 * celery-node write them (base64 and plain JSON bodies, protocol 2 and 1), every reject, result
 * JSON as Celery 5's Redis backend stores it, kombu's priority list names, REDIS_URL; and
 * store_job_adopt on SQLite (a seed row becomes a queued job). */
#include "t.h"

#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include "bridge/celery.h"
#include "store/store.h"

#define JOB "5f0c2a8e-3b7d-4c1e-9a6f-0d2b4e8c1a37"
#define TASK "d9b8c7a6-1234-4f5e-8a9b-0c1d2e3f4a5b"
#define TAG "0e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b"

static char *b64(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

/* An envelope byte for byte as kombu writes it for Python Celery 5's apply_async((JOB,)):
 * json.dumps of the message, ", " and ": " separators, body base64 of json.dumps(body). */
static char *celery5_envelope(const char *task, const char *body, const char *content_type,
                              int priority)
{
    char *eb = b64(body);
    size_t cap = strlen(eb) + 2048;
    char *out = malloc(cap);
    snprintf(out, cap,
             "{\"body\": \"%s\", \"content-encoding\": \"utf-8\", \"content-type\": \"%s\", "
             "\"headers\": {\"lang\": \"py\", \"task\": \"%s\", \"id\": \"" TASK "\", "
             "\"shadow\": null, \"eta\": null, \"expires\": null, \"group\": null, "
             "\"group_index\": null, \"retries\": 0, \"timelimit\": [null, null], "
             "\"root_id\": \"" TASK "\", \"parent_id\": null, \"argsrepr\": \"('" JOB "',)\", "
             "\"kwargsrepr\": \"{}\", \"origin\": \"gen12345@api-7d9f\", \"ignore_result\": "
             "false, \"replaced_task_nesting\": 0, \"stamped_headers\": null, \"stamps\": {}}, "
             "\"properties\": {\"correlation_id\": \"" TASK "\", \"reply_to\": "
             "\"8a4b3c2d-0000-4000-8000-000000000001\", \"delivery_mode\": 2, "
             "\"delivery_info\": {\"exchange\": \"\", \"routing_key\": \"celery\"}, "
             "\"priority\": %d, \"body_encoding\": \"base64\", \"delivery_tag\": \"" TAG "\"}}",
             eb, content_type, task, priority);
    free(eb);
    return out;
}

#define BODY_V2                                                                                    \
    "[[\"" JOB "\"], {}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": "   \
    "null}]"

static void test_python_celery5_envelope(void)
{
    celery_msg_t m;
    celery_reject_t rej;
    char *e = celery5_envelope("tasks.generate_image", BODY_V2, "application/json", 0);
    CHECK_INT(celery_parse(e, strlen(e), &m, &rej), 0);
    CHECK_INT(m.protocol, 2);
    CHECK_STR(m.task, "tasks.generate_image");
    CHECK_STR(m.task_id, TASK);
    CHECK_STR(m.job_id, JOB);
    CHECK_STR(m.delivery_tag, TAG);
    CHECK_STR(m.exchange, "");
    CHECK_STR(m.routing_key, "celery");
    CHECK_STR(m.reply_to, "8a4b3c2d-0000-4000-8000-000000000001");
    CHECK_INT(m.priority, 0);
    /* every truncation is refused cleanly */
    for (size_t n = 0; n < strlen(e); n++)
        CHECK_INT(celery_parse(e, n, &m, &rej), -1);
    free(e);
    e = celery5_envelope("tasks.generate_image", BODY_V2, "application/json", 9);
    CHECK_INT(celery_parse(e, strlen(e), &m, &rej), 0);
    CHECK_INT(m.priority, 9);
    free(e);
}

typedef struct env_case {
    const char *name;
    const char *text;
    int rc;
    const char *reason;  /* on a reject */
    const char *task_id; /* expected, "" for none */
    const char *job_id;  /* on success */
    int protocol;
    const char *exc_type;
} env_case_t;

/* celery-node 0.5.9's RedisBroker.publish of asTaskV2 (body base64 of [args, kwargs, {}]) */
#define NODE_HEAD                                                                                  \
    "{\"body\":\"%s\",\"content-type\":\"application/json\",\"content-encoding\":\"utf-8\","       \
    "\"headers\":{\"lang\":\"js\",\"task\":\"tasks.generate_image\",\"id\":\"" TASK "\"},"         \
    "\"properties\":{\"body_encoding\":\"base64\",\"delivery_info\":{\"exchange\":\"\","           \
    "\"routing_key\":\"celery\"},\"delivery_mode\":2,\"delivery_tag\":\"" TAG "\","                \
    "\"correlationId\":\"" TASK "\",\"replyTo\":\"\"}}"

#define PLAIN(headers, body)                                                                       \
    "{\"body\": " body ", \"content-type\": \"application/json\", \"headers\": " headers           \
    ", \"properties\": {\"delivery_tag\": \"" TAG "\"}}"
#define H(task) "{\"task\": \"" task "\", \"id\": \"" TASK "\"}"

static const env_case_t cases[] = {
    {"inline JSON body", PLAIN(H("tasks.generate_image"), "[[\"" JOB "\"], {}, {}]"), 0, NULL, TASK,
     JOB, 2, NULL},
    {"JSON text body", PLAIN(H("tasks.generate_image"), "\"[[\\\"" JOB "\\\"], {}, {}]\""), 0, NULL,
     TASK, JOB, 2, NULL},
    {"kwargs job_id", PLAIN(H("tasks.generate_image"), "[[], {\"job_id\": \"" JOB "\"}, {}]"), 0,
     NULL, TASK, JOB, 2, NULL},
    {"args only", PLAIN(H("tasks.generate_image"), "[[\"" JOB "\"]]"), 0, NULL, TASK, JOB, 2, NULL},
    {"protocol 1",
     "{\"body\": {\"task\": \"tasks.generate_image\", \"id\": \"" TASK "\", \"args\": [\"" JOB
     "\"], \"kwargs\": {}}, \"content-type\": \"application/json\", \"headers\": {}, "
     "\"properties\": {}}",
     0, NULL, TASK, JOB, 1, NULL},
    {"unknown task", PLAIN(H("tasks.other"), "[[\"" JOB "\"], {}, {}]"), -1, "unknown_task", TASK,
     NULL, 2, "NotRegistered"},
    {"bad JSON", "{\"body\": [", -1, "bad_json", "", NULL, 0, "ValueError"},
    {"not an object", "[1, 2]", -1, "bad_envelope", "", NULL, 0, "ValueError"},
    {"empty", "", -1, "bad_json", "", NULL, 0, "ValueError"},
    {"missing args", PLAIN(H("tasks.generate_image"), "[[], {}, {}]"), -1, "missing_args", TASK,
     NULL, 2, "TypeError"},
    {"non-string job id", PLAIN(H("tasks.generate_image"), "[[42], {}, {}]"), -1, "bad_job_id",
     TASK, NULL, 2, "ValueError"},
    {"null job id", PLAIN(H("tasks.generate_image"), "[[null], {}, {}]"), -1, "bad_job_id", TASK,
     NULL, 2, "ValueError"},
    {"job id with a quote", PLAIN(H("tasks.generate_image"), "[[\"a'b\"], {}, {}]"), -1,
     "bad_job_id", TASK, NULL, 2, "ValueError"},
    {"job id too long",
     PLAIN(H("tasks.generate_image"), "[[\"0123456789012345678901234567890123456789\"], {}, {}]"),
     -1, "bad_job_id", TASK, NULL, 2, "ValueError"},
    {"two args", PLAIN(H("tasks.generate_image"), "[[\"" JOB "\", 1], {}, {}]"), -1, "bad_args",
     TASK, NULL, 2, "TypeError"},
    {"arg and kwarg",
     PLAIN(H("tasks.generate_image"), "[[\"" JOB "\"], {\"job_id\": \"" JOB "\"}, {}]"), -1,
     "bad_args", TASK, NULL, 2, "TypeError"},
    {"unknown kwarg", PLAIN(H("tasks.generate_image"), "[[\"" JOB "\"], {\"x\": 1}, {}]"), -1,
     "bad_args", TASK, NULL, 2, "TypeError"},
    {"args not a list", PLAIN(H("tasks.generate_image"), "[\"" JOB "\", {}, {}]"), -1, "bad_args",
     TASK, NULL, 2, "TypeError"},
    {"body not a list", PLAIN(H("tasks.generate_image"), "{\"a\": 1}"), -1, "bad_body", TASK, NULL,
     2, "ValueError"},
    {"body empty list", PLAIN(H("tasks.generate_image"), "[]"), -1, "bad_body", TASK, NULL, 2,
     "ValueError"},
    {"no body", "{\"headers\": " H("tasks.generate_image") "}", -1, "bad_envelope", TASK, NULL, 0,
     "ValueError"},
    {"bad base64",
     "{\"body\": \"!!!\", \"headers\": " H("tasks.generate_image") ", \"properties\": "
                                                                   "{\"body_encoding\": "
                                                                   "\"base64\"}}",
     -1, "bad_body", TASK, NULL, 0, "ValueError"},
    {"pickle",
     "{\"body\": \"gAN9\", \"content-type\": \"application/x-python-serialize\", "
     "\"headers\": " H("tasks.generate_image") ", \"properties\": {\"body_encoding\": "
                                               "\"base64\"}}",
     -1, "unsupported_content_type", TASK, NULL, 0, "ContentDisallowed"},
    {"no task id", PLAIN("{\"task\": \"tasks.generate_image\"}", "[[\"" JOB "\"], {}, {}]"), -1,
     "bad_envelope", "", NULL, 2, "ValueError"},
    {"task id with a space",
     PLAIN("{\"task\": \"tasks.generate_image\", \"id\": \"a b\"}", "[[\"" JOB "\"], {}, {}]"), -1,
     "bad_envelope", "", NULL, 2, "ValueError"},
    {"no task name", PLAIN("{\"id\": \"" TASK "\"}", "[[\"" JOB "\"], {}, {}]"), -1, "bad_envelope",
     TASK, NULL, 0, "ValueError"},
};

static void test_envelope_table(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const env_case_t *c = &cases[i];
        celery_msg_t m;
        celery_reject_t rej;
        int rc = celery_parse(c->text, strlen(c->text), &m, &rej);
        if (rc != c->rc)
            fprintf(stderr, "case '%s': rc %d (%s: %s)\n", c->name, rc,
                    rej.reason ? rej.reason : "-", rej.message);
        CHECK_INT(rc, c->rc);
        CHECK_STR(m.task_id, c->task_id);
        if (c->rc == 0) {
            CHECK_STR(m.job_id, c->job_id);
            CHECK_INT(m.protocol, c->protocol);
        } else {
            if (!rej.reason || strcmp(rej.reason, c->reason) != 0)
                fprintf(stderr, "case '%s': reason %s\n", c->name, rej.reason);
            CHECK_STR(rej.reason, c->reason);
            CHECK_STR(rej.exc_type, c->exc_type);
            CHECK(rej.message[0] != '\0');
        }
    }
}

static void test_celery_node_envelope(void)
{
    celery_msg_t m;
    celery_reject_t rej;
    char *eb = b64("[[\"" JOB "\"],{},{}]");
    char text[2048];
    snprintf(text, sizeof text, NODE_HEAD, eb);
    free(eb);
    CHECK_INT(celery_parse(text, strlen(text), &m, &rej), 0);
    CHECK_STR(m.task_id, TASK);
    CHECK_STR(m.job_id, JOB);
    CHECK_STR(m.delivery_tag, TAG);
}

static void test_missing_args_message_and_wrong_task(void)
{
    celery_msg_t m;
    celery_reject_t rej;
    char *e = celery5_envelope("tasks.generate_image", "[[], {}, {}]", "application/json", 0);
    CHECK_INT(celery_parse(e, strlen(e), &m, &rej), -1);
    CHECK_STR(rej.message, "generate_image() missing 1 required positional argument: 'job_id'");
    free(e);
    e = celery5_envelope("tasks.upscale", BODY_V2, "application/json", 0);
    CHECK_INT(celery_parse(e, strlen(e), &m, &rej), -1);
    CHECK_STR(rej.reason, "unknown_task");
    CHECK_STR(rej.exc_module, "celery.exceptions");
    CHECK_STR(rej.message, "'tasks.upscale'");
    CHECK_STR(m.task_id, TASK);
    free(e);
    e = celery5_envelope("tasks.generate_image", BODY_V2, "application/yaml", 0);
    CHECK_INT(celery_parse(e, strlen(e), &m, &rej), -1);
    CHECK_STR(rej.reason, "unsupported_content_type");
    free(e);
    static const char big_head[] = "{\"body\": \"";
    size_t n = CELERY_MESSAGE_MAX + 16;
    char *big = malloc(n);
    memset(big, 'A', n);
    memcpy(big, big_head, sizeof big_head - 1);
    CHECK_INT(celery_parse(big, n, &m, &rej), -1);
    CHECK_STR(rej.reason, "too_large");
    free(big);
}

#define NOW_MS 1700000000123LL /* 2023-11-14T22:13:20.123Z */

static void test_result_json(void)
{
    char *s = celery_result_success(TASK, "https://cdn.example/jobs/" JOB ".png", NOW_MS);
    CHECK_STR(s, "{\"status\":\"SUCCESS\",\"result\":{\"success\":true,\"image_url\":"
                 "\"https://cdn.example/jobs/" JOB ".png\"},\"traceback\":null,\"children\":[],"
                 "\"date_done\":\"2023-11-14T22:13:20.123000+00:00\",\"task_id\":\"" TASK "\"}");
    free(s);
    s = celery_result_exception("FAILURE", TASK, "ValueError", "builtins", "Job X not found",
                                1700000000000LL);
    CHECK_STR(s, "{\"status\":\"FAILURE\",\"result\":{\"exc_type\":\"ValueError\",\"exc_message\":"
                 "[\"Job X not found\"],\"exc_module\":\"builtins\"},\"traceback\":\"Traceback "
                 "(most recent call last):\\n  File \\\"pingvas\\\", line 1, in generate_image\\n"
                 "ValueError: Job X not found\\n\",\"children\":[],\"date_done\":"
                 "\"2023-11-14T22:13:20+00:00\",\"task_id\":\"" TASK "\"}");
    free(s);
    s = celery_result_exception("FAILURE", TASK, "NotRegistered", "celery.exceptions", "'t'",
                                NOW_MS);
    CHECK(s && strstr(s, "celery.exceptions.NotRegistered: 't'\\n"));
    free(s);

    job_t j;
    memset(&j, 0, sizeof j);
    j.status = JOB_QUEUED;
    CHECK(celery_result_for_job(&j, TASK, NULL, NOW_MS) == NULL);
    j.status = JOB_IN_PROGRESS;
    CHECK(celery_result_for_job(&j, TASK, NULL, NOW_MS) == NULL);
    j.status = JOB_COMPLETED;
    s = celery_result_for_job(&j, TASK, "http://x/i.png", NOW_MS);
    CHECK(s && strstr(s, "\"status\":\"SUCCESS\"") &&
          strstr(s, "\"image_url\":\"http://x/i.png\""));
    free(s);
    j.status = JOB_FAILED;
    j.error_message = "lease expired 3 times (worker lost)";
    s = celery_result_for_job(&j, TASK, NULL, NOW_MS);
    CHECK(s && strstr(s, "\"status\":\"FAILURE\"") && strstr(s, "\"exc_type\":\"RuntimeError\"") &&
          strstr(s, "[\"lease expired 3 times (worker lost)\"]"));
    free(s);
    j.status = JOB_CANCELED;
    s = celery_result_for_job(&j, TASK, NULL, NOW_MS);
    CHECK(s && strstr(s, "\"status\":\"REVOKED\"") && strstr(s, "\"TaskRevokedError\"") &&
          strstr(s, "\"traceback\":null"));
    free(s);
}

static void test_priority_lists(void)
{
    static const struct {
        int pri;
        const char *name;
    } t[] = {{0, "celery"},
             {1, "celery"},
             {2, "celery"},
             {3, "celery\x06\x16"
                 "3"},
             {5, "celery\x06\x16"
                 "3"},
             {6, "celery\x06\x16"
                 "6"},
             {8, "celery\x06\x16"
                 "6"},
             {9, "celery\x06\x16"
                 "9"},
             {255, "celery\x06\x16"
                   "9"}};
    char buf[64];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        CHECK(celery_queue_for_priority("celery", t[i].pri, buf, sizeof buf) > 0);
        CHECK_STR(buf, t[i].name);
    }
    CHECK_INT(celery_queue_for_priority("celery", 9, buf, 8), -1);
}

static void test_redis_url(void)
{
    celery_redis_addr_t a;
    char err[256];
    CHECK_INT(celery_parse_redis_url("redis://redis-primary:6379/0", &a, err, sizeof err), 0);
    CHECK_STR(a.host, "redis-primary");
    CHECK_INT(a.port, 6379);
    CHECK_INT(a.db, 0);
    CHECK_INT(celery_parse_redis_url("redis://:s%40cret@10.0.0.5:6380/3", &a, err, sizeof err), 0);
    CHECK_STR(a.password, "s@cret");
    CHECK_STR(a.user, "");
    CHECK_STR(a.host, "10.0.0.5");
    CHECK_INT(a.port, 6380);
    CHECK_INT(a.db, 3);
    CHECK_INT(celery_parse_redis_url("redis://app:pw@h", &a, err, sizeof err), 0);
    CHECK_STR(a.user, "app");
    CHECK_STR(a.password, "pw");
    CHECK_INT(a.port, 6379);
    CHECK_INT(a.db, 0);
    CHECK_INT(celery_parse_redis_url("http://h:1/0", &a, err, sizeof err), -1);
    CHECK_INT(celery_parse_redis_url("redis://h:99999/0", &a, err, sizeof err), -1);
    CHECK_INT(celery_parse_redis_url("redis://h:x/0", &a, err, sizeof err), -1);
    CHECK_INT(celery_parse_redis_url("redis://h/x", &a, err, sizeof err), -1);
    CHECK_INT(celery_parse_redis_url("redis:///0", &a, err, sizeof err), -1);
    CHECK(strstr(err, "REDIS_URL") != NULL);
    /* IPv6 loopback (the hand parser took "[" for the host and "::1]" for a port) */
    CHECK_INT(celery_parse_redis_url("redis://[::1]:6390/2", &a, err, sizeof err), 0);
    CHECK_STR(a.host, "::1");
    CHECK_INT(a.port, 6390);
    CHECK_INT(a.db, 2);
    CHECK_INT(celery_parse_redis_url("redis://:p%3Aw@[::1]", &a, err, sizeof err), 0);
    CHECK_STR(a.host, "::1");
    CHECK_STR(a.password, "p:w");
    CHECK_INT(a.port, 6379);
    CHECK_INT(celery_parse_redis_url("redis://:secret@h:0/0", &a, err, sizeof err), -1);
    CHECK(strstr(err, "secret") == NULL); /* the message never shows the password */
}

/* ---- store_job_adopt on SQLite ---- */

static char t_dir[64];
static char t_path[128];

static void exec_raw(const char *sql)
{
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(t_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "sql: %s: %s\n", sql, msg);
        t_failed_checks++;
    }
    sqlite3_free(msg);
    sqlite3_close(db);
}

/* A migrated store in a temporary directory with the users and the seed's rows of
 * test_sqlite_job_adopt, or NULL. */
static store_t *open_seed_store(void)
{
    char err[256];
    snprintf(t_dir, sizeof t_dir, "/tmp/pingvas-celery-XXXXXX");
    if (!mkdtemp(t_dir)) {
        CHECK(0);
        return NULL;
    }
    snprintf(t_path, sizeof t_path, "%s/t.db", t_dir);
    store_t *s = store_open(t_path, err, sizeof err);
    CHECK(s != NULL);
    if (!s)
        return NULL;
    CHECK_INT(store_migrate(s), STORE_OK);
    CHECK_INT(store_migrate(s), STORE_OK);
    CHECK_INT(store_user_add(s, "alice", "enterprise", 1000, 1), STORE_OK);
    CHECK_INT(store_user_add(s, "poor", "standard", 1, 1), STORE_OK);
    /* as the seed's API writes them: seed columns only, status 'pending' */
    exec_raw("INSERT INTO generation_jobs (id, user_id, status, prompt, negative_prompt, width, "
             "height, steps, cfg_scale, seed) VALUES ('j1', 'alice', 'pending', 'a cat', NULL, "
             "768, 512, 30, 7.5, NULL);"
             "INSERT INTO generation_jobs (id, user_id, status, prompt) VALUES "
             "('j2', 'alice', 'pending', 'defaults');"
             "INSERT INTO generation_jobs (id, user_id, status, prompt) VALUES "
             "('j3', 'nobody', 'pending', 'no user');"
             "INSERT INTO generation_jobs (id, user_id, status, prompt, steps) VALUES "
             "('j4', 'poor', 'pending', 'too dear', 150);");
    return s;
}

static void remove_seed_store(store_t *s)
{
    store_close(s);
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s%s", t_path, sfx[i]);
        unlink(p);
    }
    rmdir(t_dir);
}

/* The seed's row j1 adopted: a queued job with its columns, a seed, the reservation made. */
static void check_adopt_full_row(store_t *s)
{
    job_t j;
    CHECK_INT(store_job_adopt(s, "j1", 1.0, 100, &j), STORE_OK);
    CHECK_STR(j.id, "j1");
    CHECK_INT(j.status, JOB_QUEUED);
    CHECK_STR(j.tier, "enterprise");
    CHECK_STR(j.params.prompt, "a cat");
    CHECK_STR(j.params.negative_prompt, "");
    CHECK_INT(j.params.width, 768);
    CHECK_INT(j.params.steps, 30);
    CHECK(j.params.seed >= 0 && j.params.seed <= 4294967295LL);
    CHECK(j.seq > 0);
    CHECK_INT(j.created_at, 100);
    int64_t reserve = job_estimate_credits(&j.params, 1.0);
    CHECK_INT(j.credits_reserved, reserve);
    job_clear(&j);
    user_t u;
    CHECK_INT(store_user_get(s, "alice", &u), STORE_OK);
    CHECK_INT(u.reserved, reserve);
}

static void test_sqlite_job_adopt(void)
{
    store_t *s = open_seed_store();
    if (!s)
        return;
    /* a pending row is not a job yet */
    queue_stats_t qs;
    CHECK_INT(store_queue_stats(s, "enterprise", 0, 10, &qs), STORE_OK);
    CHECK_INT(qs.queued, 0);
    job_t j;
    CHECK_INT(store_job_claim(s, "enterprise", "w", 1000, 10, &j), STORE_EMPTY);
    check_adopt_full_row(s);

    CHECK_INT(store_job_adopt(s, "j1", 1.0, 200, &j), STORE_EXISTS);
    CHECK_INT(j.created_at, 100);
    job_clear(&j);
    CHECK_INT(store_job_adopt(s, "j2", 1.0, 300, &j), STORE_OK);
    CHECK_INT(j.params.width, 512);
    CHECK_INT(j.params.steps, 20);
    CHECK_NEAR(j.params.cfg_scale, 7.0, 1e-9);
    CHECK_STR(j.params.model, "sd15");
    job_clear(&j);
    CHECK_INT(store_job_adopt(s, "missing", 1.0, 300, &j), STORE_NOT_FOUND);
    CHECK_INT(store_job_adopt(s, "j3", 1.0, 300, &j), STORE_NOT_FOUND);
    CHECK_INT(store_job_adopt(s, "j4", 1.0, 300, &j), STORE_NO_CREDITS);
    CHECK_INT(store_job_get(s, "j4", &j), STORE_OK); /* unchanged, still the seed's row */
    CHECK_INT(j.status, JOB_QUEUED); /* 'pending' reads as queued, as on PostgreSQL (not failed) */
    job_clear(&j);

    CHECK_INT(store_queue_stats(s, "enterprise", 0, 400, &qs), STORE_OK);
    CHECK_INT(qs.queued, 2);
    CHECK_INT(store_job_claim(s, "enterprise", "w", 1000, 500, &j), STORE_OK);
    CHECK_STR(j.id, "j1");
    job_clear(&j);
    job_t *list = NULL;
    size_t n = 0;
    CHECK_INT(store_job_list(s, "alice", -1, 10, 0, &list, &n), STORE_OK);
    CHECK_INT(n, 2);
    for (size_t i = 0; i < n; i++)
        job_clear(&list[i]);
    free(list);
    remove_seed_store(s);
}

/* kombu's pidbox broadcast as Python Celery 5.2 publishes it on "/<db>.celery.pidbox" for
 * AsyncResult.revoke() and app.control.revoke([...], terminate=True) (captured bytes; the body
 * base64 of json.dumps of the command). */
static char *pidbox_envelope(const char *body, const char *content_type)
{
    char *eb = b64(body);
    size_t cap = strlen(eb) + 1024;
    char *out = malloc(cap);
    snprintf(out, cap,
             "{\"body\": \"%s\", \"content-encoding\": \"utf-8\", \"content-type\": \"%s\", "
             "\"headers\": {\"clock\": 1, \"expires\": 0}, \"properties\": {\"delivery_mode\": "
             "2, \"delivery_info\": {\"exchange\": \"celery.pidbox\", \"routing_key\": \"\"}, "
             "\"priority\": 0, \"body_encoding\": \"base64\", \"delivery_tag\": \"" TAG "\"}}",
             eb, content_type);
    free(eb);
    return out;
}

static void test_revoke_messages(void)
{
    static const struct {
        const char *body, *ctype;
        int rc, n;
        const char *ids;
        bool terminate;
    } rcases[] = {
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": \"abc-123\", \"terminate\": false, "
         "\"signal\": null}, \"destination\": null, \"pattern\": null, \"matcher\": null}",
         "application/json", 1, 1, "abc-123", false},
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": [\"t1\", \"t2\"], \"terminate\": "
         "true, \"signal\": \"SIGKILL\"}, \"destination\": null, \"pattern\": null, \"matcher\": "
         "null}",
         "application/json", 1, 2, "t1 t2", true},
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": \"t1\"}, \"destination\": []}",
         "application/json", 1, 1, "t1", false},
        /* other commands, and commands for named Celery workers, are not for pingvas */
        {"{\"method\": \"ping\", \"arguments\": {}, \"destination\": null}", "application/json", 0,
         0, NULL, false},
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": \"t1\"}, \"destination\": "
         "[\"celery@gpu-1\"]}",
         "application/json", 0, 0, NULL, false},
        /* not a revoke pingvas can act on */
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": 42}}", "application/json", -1, 0,
         NULL, false},
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": []}}", "application/json", -1, 0,
         NULL, false},
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": [\"ok\", \"a b\"]}}",
         "application/json", -1, 0, NULL, false},
        {"{\"method\": \"revoke\"}", "application/json", -1, 0, NULL, false},
        {"[1, 2]", "application/json", -1, 0, NULL, false},
        {"{\"method\": \"revoke\", \"arguments\": {\"task_id\": \"t1\"}}",
         "application/x-python-serialize", -1, 0, NULL, false},
    };
    for (size_t i = 0; i < sizeof rcases / sizeof rcases[0]; i++) {
        char *e = pidbox_envelope(rcases[i].body, rcases[i].ctype);
        celery_revoke_t r;
        CHECK_INT(celery_parse_revoke(e, strlen(e), &r), rcases[i].rc);
        CHECK_INT(r.n, rcases[i].n);
        if (rcases[i].ids) {
            char joined[512] = "";
            for (int k = 0; k < r.n; k++)
                snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s",
                         k ? " " : "", r.task_ids[k]);
            CHECK_STR(joined, rcases[i].ids);
            CHECK_INT(r.terminate, rcases[i].terminate);
        } else {
            CHECK(r.task_ids == NULL);
        }
        celery_revoke_free(&r);
        free(e);
    }
    celery_revoke_t r;
    const char *bad[] = {"", "{",
                         "{\"body\": \"%%%\", \"properties\": {\"body_encoding\": "
                         "\"base64\"}}",
                         "{\"properties\": {}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(celery_parse_revoke(bad[i], strlen(bad[i]), &r), -1);
        CHECK(r.task_ids == NULL);
    }
}

/* The envelope with its "<key>": null (expires or eta) replaced by value (malloc'd). */
static char *with_time(const char *key, const char *value)
{
    char *e = celery5_envelope(CELERY_TASK_NAME, BODY_V2, "application/json", 0);
    char field[32];
    snprintf(field, sizeof field, "\"%s\": null", key);
    const char *at = strstr(e, field);
    size_t cap = strlen(e) + strlen(value) + 1;
    char *out = malloc(cap);
    snprintf(out, cap, "%.*s\"%s\": %s%s", (int)(at - e), e, key, value, at + strlen(field));
    free(e);
    return out;
}

static void test_expires(void)
{
    static const struct {
        const char *value;
        int64_t ms; /* -1: rejected */
    } ecases[] = {
        {"null", 0},
        {"\"2026-11-30T02:10:00.123456+00:00\"", 1796004600123}, /* expires.isoformat() */
        {"\"2026-11-30T02:10:00+00:00\"", 1796004600000},
        {"\"2026-11-30T11:10:00.5+09:00\"", 1796004600500},
        {"\"2026-11-29T21:10:00-05:00\"", 1796004600000},
        {"\"2026-11-30T02:10:00Z\"", 1796004600000},
        {"\"2026-11-30T02:10:00\"", 1796004600000}, /* naive: UTC */
        {"\"tomorrow\"", -1},
        {"\"2026-11-30 02:10:00\"", -1},
        {"\"2026-13-30T02:10:00+00:00\"", -1},
        {"\"2026-11-30T02:10:00+0000\"", -1},
        {"\"2026-11-30T02:10:00.+00:00\"", -1},
        {"\"2026-11-30T02:10:00+00:00 \"", -1},
        {"1796004600", -1},
    };
    for (size_t i = 0; i < sizeof ecases / sizeof ecases[0]; i++) {
        char *e = with_time("expires", ecases[i].value);
        celery_msg_t m;
        celery_reject_t rej;
        int rc = celery_parse(e, strlen(e), &m, &rej);
        if (ecases[i].ms < 0) {
            CHECK_INT(rc, -1);
            CHECK_STR(rej.reason, "bad_expires");
            CHECK_STR(m.task_id, TASK); /* answered with a FAILURE result */
        } else {
            CHECK_INT(rc, 0);
            CHECK(m.expires_ms == ecases[i].ms);
        }
        free(e);
    }
    /* protocol 1: in the body */
    const char *p1 = "{\"body\": {\"task\": \"" CELERY_TASK_NAME "\", \"id\": \"" TASK "\", "
                     "\"args\": [\"" JOB "\"], \"kwargs\": {}, \"expires\": "
                     "\"2026-11-30T02:10:00+00:00\"}, \"content-type\": \"application/json\", "
                     "\"properties\": {}}";
    celery_msg_t m;
    celery_reject_t rej;
    CHECK_INT(celery_parse(p1, strlen(p1), &m, &rej), 0);
    CHECK(m.protocol == 1 && m.expires_ms == 1796004600000);
}

/* eta (apply_async(eta=...) and countdown=, which Celery sends as an eta): the same ISO 8601
 * times as expires, in the headers (protocol 2) or the body (protocol 1). */
static void test_eta(void)
{
    celery_msg_t m;
    celery_reject_t rej;
    char *e = with_time("eta", "\"2026-11-30T02:11:00.250000+00:00\"");
    CHECK_INT(celery_parse(e, strlen(e), &m, &rej), 0);
    CHECK(m.eta_ms == 1796004660250 && m.expires_ms == 0);
    free(e);
    e = with_time("eta", "null");
    CHECK_INT(celery_parse(e, strlen(e), &m, &rej), 0);
    CHECK(m.eta_ms == 0);
    free(e);
    static const char *bad[] = {"\"in a minute\"", "60", "\"2026-11-30T02:11:00+24:00\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e = with_time("eta", bad[i]);
        CHECK_INT(celery_parse(e, strlen(e), &m, &rej), -1);
        CHECK_STR(rej.reason, "bad_eta");
        CHECK_STR(m.task_id, TASK);
        free(e);
    }
    const char *p1 = "{\"body\": {\"task\": \"" CELERY_TASK_NAME "\", \"id\": \"" TASK "\", "
                     "\"args\": [\"" JOB "\"], \"kwargs\": {}, \"eta\": "
                     "\"2026-11-30T02:10:00+00:00\"}, \"content-type\": \"application/json\", "
                     "\"properties\": {}}";
    CHECK_INT(celery_parse(p1, strlen(p1), &m, &rej), 0);
    CHECK(m.protocol == 1 && m.eta_ms == 1796004600000);
}

#define TESTS(X)                                                                                   \
    X(test_python_celery5_envelope)                                                                \
    X(test_envelope_table)                                                                         \
    X(test_celery_node_envelope)                                                                   \
    X(test_missing_args_message_and_wrong_task)                                                    \
    X(test_result_json)                                                                            \
    X(test_priority_lists)                                                                         \
    X(test_redis_url)                                                                              \
    X(test_revoke_messages)                                                                        \
    X(test_expires)                                                                                \
    X(test_eta)                                                                                    \
    X(test_sqlite_job_adopt)
#include "t_main.h"
