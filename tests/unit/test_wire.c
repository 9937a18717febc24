/* test_wire.c: the worker protocol both ways: what the worker encodes the server's parsers
 * accept, and the claim answer the server encodes the worker's decoder reads back and checks. */
#include <stdlib.h>

#include "core/wire.h"
#include "t.h"

static job_t leased_job(void)
{
    static char prompt[] = "a lighthouse at dawn", negative[] = "fog";
    job_t j;
    memset(&j, 0, sizeof j);
    snprintf(j.id, sizeof j.id, "0f6d1c9e-1111-4222-8333-944455556666");
    snprintf(j.user, sizeof j.user, "alice");
    snprintf(j.tier, sizeof j.tier, "enterprise");
    snprintf(j.lease_id, sizeof j.lease_id, "9a8b7c6d-1111-4222-8333-944455556666");
    j.status = JOB_IN_PROGRESS;
    j.params.prompt = prompt;
    j.params.negative_prompt = negative;
    snprintf(j.params.model, sizeof j.params.model, "sdxl");
    j.params.width = 1024;
    j.params.height = 768;
    j.params.steps = 30;
    j.params.cfg_scale = 5.5;
    j.params.seed = 4294967295LL;
    return j;
}

static void test_claim_answer_round_trip(void)
{
    job_t j = leased_job();
    char *text = wire_claim_answer(&j, 30000, 2500, "PUT", "http://127.0.0.1:1/x", 1);
    wire_job_t w;
    char err[128] = "";
    CHECK(text != NULL);
    CHECK_INT(wire_parse_job(text, text ? strlen(text) : 0, &w, err, sizeof err), 0);
    CHECK_STR(w.id, j.id);
    CHECK_STR(w.lease_id, j.lease_id);
    CHECK_INT(w.lease_ms, 30000);
    CHECK_INT(w.heartbeat_ms, 2500);
    CHECK_STR(w.params.prompt, "a lighthouse at dawn");
    CHECK_STR(w.params.negative_prompt, "fog");
    CHECK_STR(w.params.model, "sdxl");
    CHECK_INT(w.params.width, 1024);
    CHECK_INT(w.params.height, 768);
    CHECK_INT(w.params.steps, 30);
    CHECK_NEAR(w.params.cfg_scale, 5.5, 1e-9);
    CHECK_INT(w.params.seed, 4294967295LL);
    CHECK_STR(w.upload.method, "PUT");
    CHECK_STR(w.upload.url, "http://127.0.0.1:1/x");
    CHECK_INT(w.upload.needs_lease, 1);
    wire_job_clear(&w);
    free(text);
}

/* The claim answer is written without a document tree, in the very text jansson gives for the
 * same members (what the server sent before, and what every worker parses). */
static void test_claim_answer_text_is_janssons(void)
{
    job_t j = leased_job();
    for (int lease = 0; lease < 2; lease++) {
        char *text = wire_claim_answer(&j, 30000, 2500, lease ? "PUT" : "POST",
                                       "http://127.0.0.1:1/x?a=\"b\"", lease);
        json_t *want =
            json_pack("{s:o, s:s, s:I, s:I, s:{s:s, s:s, s:b}}", "job", job_to_json(&j, NULL),
                      "lease_id", j.lease_id, "lease_ms", (json_int_t)30000, "heartbeat_ms",
                      (json_int_t)2500, "upload", "method", lease ? "PUT" : "POST", "url",
                      "http://127.0.0.1:1/x?a=\"b\"", "needs_lease", lease);
        char *want_text = json_dumps(want, JSON_COMPACT);
        CHECK(text != NULL && want_text != NULL);
        if (text && want_text)
            CHECK_STR(text, want_text);
        free(text);
        free(want_text);
        json_decref(want);
    }
}

/* Each broken answer is refused, naming what is wrong, and leaves nothing to free. */
static void test_claim_answer_checked(void)
{
    static const char *const bad[][2] = {
        {"not json", "JSON"},
        {"{\"lease_id\":\"l\",\"lease_ms\":1,\"upload\":{}}", "job"},
        {"{\"job\":{\"prompt\":\"p\"},\"lease_id\":\"l\"}", "job.id"},
        {"{\"job\":{\"id\":\"i\"},\"lease_ms\":1}", "lease_id"},
        {"{\"job\":{\"id\":\"i\",\"prompt\":\"p\",\"width\":4096,\"height\":512,\"steps\":1,"
         "\"cfg_scale\":7,\"seed\":1},\"lease_id\":\"l\",\"lease_ms\":1}",
         "width"},
        {"{\"job\":{\"id\":\"i\",\"prompt\":\"p\",\"width\":512,\"height\":512,\"steps\":0,"
         "\"cfg_scale\":7,\"seed\":1},\"lease_id\":\"l\",\"lease_ms\":1}",
         "steps"},
        {"{\"job\":{\"id\":\"i\",\"prompt\":\"p\",\"width\":512,\"height\":512,\"steps\":1,"
         "\"cfg_scale\":7,\"seed\":-1},\"lease_id\":\"l\",\"lease_ms\":1}",
         "seed"},
        {"{\"job\":{\"id\":\"i\",\"prompt\":\"p\",\"width\":512,\"height\":512,\"steps\":1,"
         "\"cfg_scale\":7,\"seed\":1},\"lease_id\":\"l\",\"lease_ms\":1,\"upload\":{\"method\":"
         "\"DELETE\",\"url\":\"http://h/\"}}",
         "upload.method"},
        {"{\"job\":{\"id\":\"i\",\"prompt\":\"p\",\"width\":512,\"height\":512,\"steps\":1,"
         "\"cfg_scale\":7,\"seed\":1},\"lease_id\":\"l\",\"lease_ms\":1,\"upload\":{\"method\":"
         "\"PUT\",\"url\":\"file:///etc/passwd\"}}",
         "upload.url"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wire_job_t w;
        char err[128] = "";
        CHECK_INT(wire_parse_job(bad[i][0], strlen(bad[i][0]), &w, err, sizeof err), -1);
        if (!strstr(err, bad[i][1]))
            fprintf(stderr, "answer %zu: '%s' does not name %s\n", i, err, bad[i][1]);
        CHECK(strstr(err, bad[i][1]) != NULL);
        CHECK(w.params.prompt == NULL);
    }
}

/* What the worker sends, the server's parsers accept as sent. */
static void test_worker_bodies_parse(void)
{
    api_error_t e;
    wire_claim_t c;
    wire_report_t r;
    wire_bye_t b;
    char *s = wire_claim_body("w-1", "enterprise", 20000);
    CHECK_INT(wire_parse_claim(s, strlen(s), &c, &e), 0);
    CHECK_STR(c.worker_id, "w-1");
    CHECK_STR(c.tier, "enterprise");
    CHECK_INT(c.wait_ms, 20000);
    free(s);
    s = wire_complete_body("lease-1", 2.25, NULL);
    CHECK_INT(wire_parse_report("complete", s, strlen(s), &r, &e), 0);
    CHECK_STR(r.lease_id, "lease-1");
    CHECK_NEAR(r.gpu_seconds, 2.25, 1e-9);
    free(s);
    s = wire_fail_body("lease-1", "CUDA out of memory", 0);
    CHECK_INT(wire_parse_report("fail", s, strlen(s), &r, &e), 0);
    CHECK_STR(r.error, "CUDA out of memory");
    CHECK_INT(r.retryable, 0);
    free(s);
    s = wire_release_body("lease-1");
    CHECK_INT(wire_parse_report("release", s, strlen(s), &r, &e), 0);
    free(s);
    s = wire_bye_body("w-1");
    CHECK_INT(wire_parse_bye(s, strlen(s), &b, &e), 0);
    CHECK_STR(b.worker_id, "w-1");
    free(s);
    char url[64];
    CHECK_INT(wire_job_url(url, sizeof url, "http://h:1", "abc", "heartbeat"), 0);
    CHECK_STR(url, "http://h:1/internal/v1/jobs/abc/heartbeat");
    CHECK_INT(wire_job_url(url, 20, "http://h:1", "abc", "heartbeat"), -1);
}

static void test_scaling_event(void)
{
    api_error_t e;
    wire_scaling_t ev;
    char *s = wire_scaling_body("enterprise", 2, 5, "backlog 12 > 2 x 3");
    CHECK_INT(wire_parse_scaling(s, strlen(s), &ev, &e), 0);
    CHECK_STR(ev.tier, "enterprise");
    CHECK_INT(ev.from, 2);
    CHECK_INT(ev.to, 5);
    CHECK_STR(ev.reason, "backlog 12 > 2 x 3");
    free(s);
    static const char *const bad[] = {
        "{\"tier\":\"gold\",\"from\":1,\"to\":2}",
        "{\"tier\":\"standard\",\"from\":-1,\"to\":2}",
        "{\"tier\":\"standard\",\"from\":1,\"to\":100001}",
        "{\"tier\":\"standard\",\"from\":1,\"to\":2,\"reason\":7}",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(wire_parse_scaling(bad[i], strlen(bad[i]), &ev, &e), -1);
        CHECK_INT(e.status, 400);
    }
}

/* Complete-and-claim: "next" in the complete body, and the complete answer's "next". */
static void test_complete_and_claim(void)
{
    api_error_t e;
    wire_report_t r;
    wire_claim_t next = {.worker_id = "w-9", .tier = "enterprise", .wait_ms = 0};
    char *s = wire_complete_body("lease-1", 1.5, &next);
    CHECK_INT(wire_parse_report("complete", s, strlen(s), &r, &e), 0);
    CHECK_INT(r.has_next, 1);
    CHECK_STR(r.next.worker_id, "w-9");
    CHECK_STR(r.next.tier, "enterprise");
    free(s);
    static const char *const bad[] = {
        "{\"lease_id\":\"l\",\"gpu_seconds\":1,\"next\":5}",
        "{\"lease_id\":\"l\",\"gpu_seconds\":1,\"next\":{\"tier\":\"standard\"}}",
        "{\"lease_id\":\"l\",\"gpu_seconds\":1,\"next\":{\"worker_id\":\"w\",\"wait_ms\":-1}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(wire_parse_report("complete", bad[i], strlen(bad[i]), &r, &e), -1);
        CHECK_STR(e.field, "next");
    }
    s = "{\"lease_id\":\"l\",\"gpu_seconds\":1,\"next\":null}";
    CHECK_INT(wire_parse_report("complete", s, strlen(s), &r, &e), 0);
    CHECK_INT(r.has_next, 0);

    job_t j = leased_job();
    jsonw_t jw = {0};
    jsonw_open(&jw);
    jsonw_str(&jw, "id", "done-1");
    wire_claim_answer_write(&jw, "next", &j, 30000, 2500, "PUT", "http://h:1/x", 1);
    jsonw_close(&jw);
    char *text = jsonw_take(&jw, NULL);
    json_t *done = json_loads(text, 0, NULL);
    CHECK(done != NULL);
    wire_job_t w;
    char err[128];
    CHECK_INT(wire_parse_complete_answer(text, strlen(text), &w, err, sizeof err), 1);
    CHECK_STR(w.id, j.id);
    CHECK_STR(w.lease_id, j.lease_id);
    wire_job_clear(&w);
    free(text);
    json_object_set_new(done, "next", json_null());
    text = json_dumps(done, JSON_COMPACT);
    CHECK_INT(wire_parse_complete_answer(text, strlen(text), &w, err, sizeof err), 0);
    free(text);
    json_object_set_new(done, "next", json_pack("{s:s}", "job", "x"));
    text = json_dumps(done, JSON_COMPACT);
    CHECK_INT(wire_parse_complete_answer(text, strlen(text), &w, err, sizeof err), -1);
    free(text);
    CHECK_INT(wire_parse_complete_answer("nope", 4, &w, err, sizeof err), -1);
    json_decref(done);
}

#define TESTS(X)                                                                                   \
    X(test_claim_answer_round_trip)                                                                \
    X(test_claim_answer_text_is_janssons)                                                          \
    X(test_complete_and_claim)                                                                     \
    X(test_claim_answer_checked)                                                                   \
    X(test_worker_bodies_parse)                                                                    \
    X(test_scaling_event)
#include "t_main.h"
