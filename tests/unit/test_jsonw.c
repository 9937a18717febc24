/* test_jsonw.c: the JSON text writer (lib/jsonw.h) writes what jansson's json_dumps(JSON_COMPACT)
 * writes: strings, reals, nesting, and a job's JSON (job_json_members) byte for byte equal to
 * job_to_json's for jobs of every shape the API answers. */
#include <stdlib.h>

#include "core/job.h"
#include "lib/jsonw.h"
#include "t.h"

/* job_to_json(j, url) through jansson and through the writer must be the same text. */
static void check_job(const job_t *j, const char *url)
{
    json_t *o = job_to_json(j, url);
    char *want = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    jsonw_t w = {0};
    jsonw_open(&w);
    job_json_members(&w, j, url);
    jsonw_close(&w);
    size_t len = 0;
    char *got = jsonw_take(&w, &len);
    CHECK_STR(got, want);
    CHECK_INT(len, got ? strlen(got) : 0);
    free(got);
    free(want);
}

static void test_job_json_equals_jansson(void)
{
    job_t j = {0};
    snprintf(j.id, sizeof j.id, "0b7c1e5e-3c1f-4e43-9b0a-2f7d6c1d9e11");
    snprintf(j.user, sizeof j.user, "alice");
    snprintf(j.tier, sizeof j.tier, "standard");
    snprintf(j.params.model, sizeof j.params.model, "sd15");
    j.params.prompt = "a cat \"quoted\" \\ back/slash\n\t\x01 caf\xc3\xa9 \xe2\x9c\x93 \x7f";
    j.params.negative_prompt = "";
    j.params.width = 512;
    j.params.height = 768;
    j.params.steps = 20;
    j.params.cfg_scale = 7.0;
    j.params.seed = 4294967295LL;
    j.status = JOB_QUEUED;
    j.created_at = 1764460800123LL;
    j.credits_reserved = 12;
    check_job(&j, NULL);
    /* whole numbers (written without snprintf below 10^15) among them, -0 and the edges */
    double reals[] = {7.1,
                      0.1,
                      1e20,
                      1e-7,
                      12.5,
                      0.0,
                      3.0000000000000004,
                      1.5e300,
                      2.5e-300,
                      -0.0,
                      1.0,
                      -3.0,
                      999999999999999.0,
                      -999999999999999.0,
                      1e15,
                      4503599627370497.0,
                      123456.0};
    size_t nreals = sizeof reals / sizeof reals[0];
    for (size_t i = 0; i < nreals; i++) {
        j.params.cfg_scale = reals[i];
        j.gpu_seconds = reals[(i + 3) % nreals];
        check_job(&j, NULL);
    }
    /* integers: seed and the counts, at the edges of int64 */
    int64_t ints[] = {0, -1, 9, 10, INT64_MAX, INT64_MIN, 4294967295LL};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        j.params.seed = ints[i];
        j.credits_reserved = ints[(i + 1) % 7];
        check_job(&j, NULL);
    }
    j.params.seed = 4294967295LL;
    j.credits_reserved = 12;
    j.status = JOB_IN_PROGRESS;
    j.started_at = 1764460801000LL;
    j.attempts = 2;
    j.releases = 1;
    j.progress_step = 3;
    j.progress_steps = 20;
    check_job(&j, NULL);
    j.status = JOB_COMPLETED;
    j.completed_at = 1764460802999LL;
    j.credits_charged = 9;
    check_job(&j, "https://images.example.com/a/b.png?X-Amz-Signature=ab%2F&x=1");
    j.status = JOB_FAILED;
    j.error_message = "worker said: \"out of memory\"\r\n";
    check_job(&j, NULL);
}

static void test_nesting_and_errors(void)
{
    jsonw_t w = {0};
    jsonw_open(&w);
    jsonw_null(&w, "a");
    jsonw_open_key(&w, "b");
    jsonw_int(&w, "c", -9223372036854775807LL - 1);
    jsonw_str(&w, "d", NULL);
    jsonw_close(&w);
    jsonw_open_key(&w, "e");
    jsonw_close(&w);
    jsonw_close(&w);
    char *t = jsonw_take(&w, NULL);
    CHECK_STR(t, "{\"a\":null,\"b\":{\"c\":-9223372036854775808,\"d\":null},\"e\":{}}");
    free(t);
    /* deeper than JSONW_DEPTH: an error, no text */
    for (int i = 0; i <= JSONW_DEPTH; i++)
        jsonw_open(&w);
    CHECK(jsonw_take(&w, NULL) == NULL);
    /* over the cap: an error, no text */
    char *big = malloc(JSONW_MAX / 2 + 1);
    memset(big, 'x', JSONW_MAX / 2);
    big[JSONW_MAX / 2] = '\0';
    jsonw_open(&w);
    jsonw_str(&w, "a", big);
    jsonw_str(&w, "b", big);
    CHECK(w.err);
    CHECK(jsonw_take(&w, NULL) == NULL);
    free(big);
}

#define TESTS(X) X(test_job_json_equals_jansson) X(test_nesting_and_errors)
#include "t_main.h"
