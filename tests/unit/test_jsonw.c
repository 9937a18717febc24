/* test_jsonw.c: the JSON text writer (lib/jsonw.h) writes what jansson's json_dumps(JSON_COMPACT)
 * writes (strings, reals, integers, nesting), and a job's JSON (job_json_members, the one field
 * list of every job answer) is what the API documents (docs/operations.md, DESIGN section 3):
 * every member in its order and type, strings escaped, times RFC 3339 or null, progress while in
 * progress. job_to_json (the same field list into a jansson tree, for the answers that are trees)
 * dumps to the same bytes. */
#include <stdlib.h>

#include "core/job.h"
#include "lib/jsonw.h"
#include "t.h"

/* The job's JSON through the writer; equal to want when want is not NULL, and the same bytes
 * again through job_to_json and json_dumps. Returns the text (caller frees). */
static char *check_job(const job_t *j, const char *url, const char *want)
{
    jsonw_t w = {0};
    jsonw_open(&w);
    job_json_members(&w, j, url);
    jsonw_close(&w);
    size_t len = 0;
    char *got = jsonw_take(&w, &len);
    CHECK(got != NULL);
    CHECK_INT(len, got ? strlen(got) : 0);
    if (want)
        CHECK_STR(got, want);
    json_t *o = job_to_json(j, url);
    CHECK(o != NULL);
    char *again = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    CHECK_STR(again, got);
    free(again);
    return got;
}

/* A number as jansson writes it (json_dumps of one real or integer). */
static void check_member(const char *text, const char *key, json_t *num)
{
    char *n = json_dumps(num, JSON_COMPACT | JSON_ENCODE_ANY);
    char member[128];
    snprintf(member, sizeof member, ",\"%s\":%s,", key, n);
    CHECK(strstr(text, member) != NULL);
    if (!strstr(text, member))
        fprintf(stderr, "  %s not in %s\n", member, text);
    json_decref(num);
    free(n);
}

static void job_fill(job_t *j)
{
    *j = (job_t){0};
    snprintf(j->id, sizeof j->id, "0b7c1e5e-3c1f-4e43-9b0a-2f7d6c1d9e11");
    snprintf(j->user, sizeof j->user, "alice");
    snprintf(j->tier, sizeof j->tier, "standard");
    snprintf(j->params.model, sizeof j->params.model, "sd15");
    j->params.prompt = "a cat \"quoted\" \\ back/slash\n\t\x01 caf\xc3\xa9 \xe2\x9c\x93 \x7f";
    j->params.negative_prompt = "";
    j->params.width = 512;
    j->params.height = 768;
    j->params.steps = 20;
    j->params.cfg_scale = 7.0;
    j->params.seed = 4294967295LL;
    j->status = JOB_QUEUED;
    j->created_at = 1764460800123LL;
    j->credits_reserved = 12;
}

#define JOB_HEAD                                                                                   \
    "{\"id\":\"0b7c1e5e-3c1f-4e43-9b0a-2f7d6c1d9e11\",\"status\":\"%s\",\"prompt\":\"a cat "       \
    "\\\"quoted\\\" \\\\ back/slash\\n\\t\\u0001 caf\xc3\xa9 \xe2\x9c\x93 \x7f\","                 \
    "\"negative_prompt\":\"\",\"model\":\"sd15\",\"width\":512,\"height\":768,\"steps\":20,"       \
    "\"cfg_scale\":7.0,\"seed\":4294967295,\"tier\":\"standard\","                                 \
    "\"created_at\":\"2025-11-30T00:00:00.123Z\","

/* The members of an ended job before image_url, and after error_message. */
#define ENDED                                                                                      \
    "\"started_at\":\"2025-11-30T00:00:01.000Z\",\"completed_at\":\"2025-11-30T00:00:02.999Z\","   \
    "\"attempts\":2,\"releases\":1,"
#define ENDED_TAIL                                                                                 \
    "\"gpu_seconds\":1.25,\"credits_reserved\":12,\"credits_charged\":9,\"progress\":null}"

/* j's JSON is JOB_HEAD with status, then rest (the members from started_at on). */
static void check_documented(const job_t *j, const char *url, const char *status, const char *rest)
{
    char want[2048];
    snprintf(want, sizeof want, JOB_HEAD "%s", status, rest);
    free(check_job(j, url, want));
}

/* The documented object for a job in each status, byte for byte. */
static void test_job_json_documented(void)
{
    job_t j;
    job_fill(&j);
    check_documented(&j, NULL, "queued",
                     "\"started_at\":null,\"completed_at\":null,\"attempts\":0,\"releases\":0,"
                     "\"image_url\":null,\"error_message\":null,\"gpu_seconds\":0.0,"
                     "\"credits_reserved\":12,\"credits_charged\":0,\"progress\":null}");
    j.status = JOB_IN_PROGRESS;
    j.started_at = 1764460801000LL;
    j.attempts = 2;
    j.releases = 1;
    j.progress_step = 3;
    j.progress_steps = 20;
    j.gpu_seconds = 1.25;
    check_documented(&j, NULL, "in_progress",
                     "\"started_at\":\"2025-11-30T00:00:01.000Z\",\"completed_at\":null,"
                     "\"attempts\":2,\"releases\":1,\"image_url\":null,\"error_message\":null,"
                     "\"gpu_seconds\":1.25,\"credits_reserved\":12,\"credits_charged\":0,"
                     "\"progress\":{\"step\":3,\"steps\":20}}");
    j.status = JOB_COMPLETED;
    j.completed_at = 1764460802999LL;
    j.credits_charged = 9;
    check_documented(&j, "https://images.example.com/a/b.png?X-Amz-Signature=ab%2F&x=1",
                     "completed",
                     ENDED "\"image_url\":\"https://images.example.com/a/b.png?X-Amz-Signature="
                           "ab%2F&x=1\",\"error_message\":null," ENDED_TAIL);
    j.status = JOB_FAILED;
    j.error_message = "worker said: \"out of memory\"\r\n";
    check_documented(&j, NULL, "failed",
                     ENDED "\"image_url\":null,\"error_message\":\"worker said: \\\"out of "
                           "memory\\\"\\r\\n\"," ENDED_TAIL);
}

/* Reals and integers at their edges are written as jansson writes them. */
static void test_job_json_numbers(void)
{
    job_t j;
    job_fill(&j);
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
        char *t = check_job(&j, NULL, NULL);
        check_member(t, "cfg_scale", json_real(j.params.cfg_scale));
        check_member(t, "gpu_seconds", json_real(j.gpu_seconds));
        free(t);
    }
    /* integers: seed and the counts, at the edges of int64 */
    int64_t ints[] = {0, -1, 9, 10, INT64_MAX, INT64_MIN, 4294967295LL};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        j.params.seed = ints[i];
        j.credits_reserved = ints[(i + 1) % 7];
        char *t = check_job(&j, NULL, NULL);
        check_member(t, "seed", json_integer(j.params.seed));
        check_member(t, "credits_reserved", json_integer(j.credits_reserved));
        free(t);
    }
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
    jsonw_bool(&w, "f", 1);
    jsonw_bool(&w, "g", 0);
    jsonw_close(&w);
    char *t = jsonw_take(&w, NULL);
    CHECK_STR(t, "{\"a\":null,\"b\":{\"c\":-9223372036854775808,\"d\":null},\"e\":{},"
                 "\"f\":true,\"g\":false}");
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

/* Appends the UTF-8 of code point c to s at *n. */
static void put_utf8(char *s, size_t *n, unsigned c)
{
    if (c < 0x80) {
        s[(*n)++] = (char)c;
    } else if (c < 0x800) {
        s[(*n)++] = (char)(0xc0 | c >> 6);
        s[(*n)++] = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        s[(*n)++] = (char)(0xe0 | c >> 12);
        s[(*n)++] = (char)(0x80 | (c >> 6 & 0x3f));
        s[(*n)++] = (char)(0x80 | (c & 0x3f));
    } else {
        s[(*n)++] = (char)(0xf0 | c >> 18);
        s[(*n)++] = (char)(0x80 | (c >> 12 & 0x3f));
        s[(*n)++] = (char)(0x80 | (c >> 6 & 0x3f));
        s[(*n)++] = (char)(0x80 | (c & 0x3f));
    }
}

/* Random strings (every ASCII byte but NUL, quotes, backslashes, control characters, and
 * characters of 2 to 4 UTF-8 bytes, runs of each) as keys and values, nested: the same text as
 * jansson's, whether a string has nothing to escape (written in one copy) or escapes anywhere. */
static void test_strings_match_jansson(void)
{
    static const unsigned picks[] = {'"',  '\\', '\n', '\t', '\b', '\f',   '\r',
                                     0x01, 0x1f, 0x7f, 'a',  0xe9, 0x20ac, 0x1f600};
    const unsigned npicks = sizeof picks / sizeof picks[0];
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        jsonw_t w = {0};
        json_t *want = json_object(), *inner = json_object();
        jsonw_open(&w);
        for (int m = 0; m < 6; m++) {
            char key[64], val[200];
            size_t nk = 0, nv = 0;
            seed = seed * 1103515245u + 12345u;
            int klen = (int)(seed >> 16) % 8, vlen = (int)(seed >> 8) % 40;
            for (int i = 0; i < klen; i++) {
                seed = seed * 1103515245u + 12345u;
                put_utf8(key, &nk,
                         (seed >> 16) % 4 ? 'a' + (seed >> 8) % 26 : picks[(seed >> 4) % npicks]);
            }
            for (int i = 0; i < vlen; i++) {
                seed = seed * 1103515245u + 12345u;
                unsigned c =
                    (seed >> 16) % 3 ? 0x20 + (seed >> 8) % 95 : picks[(seed >> 4) % npicks];
                put_utf8(val, &nv, c);
            }
            snprintf(key + nk, sizeof key - nk, "%d", m); /* distinct keys */
            val[nv] = '\0';
            if (m == 3)
                jsonw_open_key(&w, "in");
            jsonw_str(&w, key, val);
            json_object_set_new(m >= 3 ? inner : want, key, json_string(val));
        }
        jsonw_close(&w);
        jsonw_close(&w);
        json_object_set_new(want, "in", inner);
        char *got = jsonw_take(&w, NULL), *exp = json_dumps(want, JSON_COMPACT);
        CHECK(got != NULL && exp != NULL);
        if (got && exp && strcmp(got, exp) != 0) {
            CHECK_STR(got, exp);
            round = 2000;
        }
        free(got);
        free(exp);
        json_decref(want);
    }
}

#define TESTS(X)                                                                                   \
    X(test_job_json_documented)                                                                    \
    X(test_job_json_numbers) X(test_nesting_and_errors) X(test_strings_match_jansson)
#include "t_main.h"
