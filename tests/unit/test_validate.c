/* test_validate.c: the create body, table-driven. Each row is a body, the status expected
 * (0 = accepted), the error code and the field named. */
#include <jansson.h>
#include <stdlib.h>

#include "t.h"
#include "core/validate.h"

typedef struct row {
    const char *body;
    size_t len; /* 0: strlen(body) */
    int status; /* 0: accepted */
    const char *code;
    const char *field;
} row_t;

#define OK(b)                                                                                      \
    {                                                                                              \
        b, 0, 0, "", ""                                                                            \
    }
#define E422(b, f)                                                                                 \
    {                                                                                              \
        b, 0, 422, "invalid_argument", f                                                           \
    }
#define E400(b)                                                                                    \
    {                                                                                              \
        b, 0, 400, "invalid_json", ""                                                              \
    }

static const row_t rows[] = {
    /* minimal and full bodies */
    OK("{\"prompt\":\"a cat\"}"),
    OK("  {\"prompt\":\"a cat\"}\n"),
    OK("{\"prompt\":\"a cat\",\"negative_prompt\":\"blurry\",\"model\":\"sd15\",\"width\":768,"
       "\"height\":1024,\"steps\":30,\"cfg_scale\":6.5,\"seed\":42}"),

    /* prompt */
    E422("{}", "prompt"),
    E422("{\"width\":512}", "prompt"),
    E422("{\"prompt\":\"\"}", "prompt"),
    E422("{\"prompt\":\" \"}", "prompt"),
    E422("{\"prompt\":\" \\t\\n\\r \"}", "prompt"),
    E422("{\"prompt\":\"\\u3000\\u00a0\"}", "prompt"), /* Unicode whitespace only */
    OK("{\"prompt\":\"x\"}"),
    OK("{\"prompt\":\"  x  \"}"),
    OK("{\"prompt\":\"\xf0\x9f\xa6\x8a\"}"), /* one emoji, raw UTF-8 */
    OK("{\"prompt\":\"\\ud83e\\udd8a\"}"),   /* one emoji, escaped surrogate pair */
    E422("{\"prompt\":5}", "prompt"),
    E422("{\"prompt\":null}", "prompt"),
    E422("{\"prompt\":true}", "prompt"),
    E422("{\"prompt\":[\"a\"]}", "prompt"),
    E422("{\"prompt\":{\"text\":\"a\"}}", "prompt"),
    E422("{\"prompt\":\"\\u0000\"}", "prompt"),
    E422("{\"prompt\":\"a\\u0000b\"}", "prompt"),
    {"{\"prompt\":\"a\0b\"}", 16, 400, "invalid_json", ""}, /* raw NUL byte in the string */
    {"{\"prompt\":\"ab\"}\0", 16, 400, "invalid_json", ""}, /* raw NUL byte after the object */
    E400("{\"prompt\":\"\xff\"}"),                          /* invalid UTF-8 */
    E400("{\"prompt\":\"\xc0\xaf\"}"),                      /* overlong encoding */
    E400("{\"prompt\":\"\xed\xa0\x80\"}"),                  /* encoded surrogate */
    E400("{\"prompt\":\"\\ud800\"}"),                       /* lone surrogate escape */
    E400("{\"prompt\":\"a\nb\"}"),                          /* raw control character */

    /* negative_prompt */
    OK("{\"prompt\":\"a\",\"negative_prompt\":\"\"}"),
    OK("{\"prompt\":\"a\",\"negative_prompt\":\" \"}"),
    E422("{\"prompt\":\"a\",\"negative_prompt\":5}", "negative_prompt"),
    E422("{\"prompt\":\"a\",\"negative_prompt\":null}", "negative_prompt"),
    E422("{\"prompt\":\"a\",\"negative_prompt\":false}", "negative_prompt"),
    E422("{\"prompt\":\"a\",\"negative_prompt\":[]}", "negative_prompt"),
    E422("{\"prompt\":\"a\",\"negative_prompt\":\"x\\u0000\"}", "negative_prompt"),

    /* model (default configuration: only sd15) */
    OK("{\"prompt\":\"a\",\"model\":\"sd15\"}"),
    E422("{\"prompt\":\"a\",\"model\":\"sdxl\"}", "model"),
    E422("{\"prompt\":\"a\",\"model\":\"SD15\"}", "model"),
    E422("{\"prompt\":\"a\",\"model\":\"sd15 \"}", "model"),
    E422("{\"prompt\":\"a\",\"model\":\"sd15\\u0000\"}", "model"),
    E422("{\"prompt\":\"a\",\"model\":\"\"}", "model"),
    E422("{\"prompt\":\"a\",\"model\":15}", "model"),
    E422("{\"prompt\":\"a\",\"model\":null}", "model"),
    E422("{\"prompt\":\"a\",\"model\":[\"sd15\"]}", "model"),

    /* width */
    E422("{\"prompt\":\"a\",\"width\":0}", "width"),
    E422("{\"prompt\":\"a\",\"width\":-64}", "width"),
    E422("{\"prompt\":\"a\",\"width\":56}", "width"),
    E422("{\"prompt\":\"a\",\"width\":63}", "width"),
    OK("{\"prompt\":\"a\",\"width\":64}"),
    E422("{\"prompt\":\"a\",\"width\":65}", "width"),
    OK("{\"prompt\":\"a\",\"width\":72}"),
    E422("{\"prompt\":\"a\",\"width\":513}", "width"),
    OK("{\"prompt\":\"a\",\"width\":2048}"),
    E422("{\"prompt\":\"a\",\"width\":2049}", "width"),
    E422("{\"prompt\":\"a\",\"width\":2056}", "width"),
    E422("{\"prompt\":\"a\",\"width\":\"512\"}", "width"),
    E422("{\"prompt\":\"a\",\"width\":512.5}", "width"),
    E422("{\"prompt\":\"a\",\"width\":512.0}", "width"),
    E422("{\"prompt\":\"a\",\"width\":5.12e2}", "width"),
    E422("{\"prompt\":\"a\",\"width\":true}", "width"),
    E422("{\"prompt\":\"a\",\"width\":null}", "width"),
    E422("{\"prompt\":\"a\",\"width\":[512]}", "width"),
    E422("{\"prompt\":\"a\",\"width\":{}}", "width"),
    E422("{\"prompt\":\"a\",\"width\":9223372036854775807}", "width"),
    E422("{\"prompt\":\"a\",\"width\":99999999999999999999}", "width"), /* beyond int64 */
    E422("{\"prompt\":\"a\",\"width\":-99999999999999999999}", "width"),

    /* height */
    E422("{\"prompt\":\"a\",\"height\":63}", "height"),
    OK("{\"prompt\":\"a\",\"height\":64}"),
    E422("{\"prompt\":\"a\",\"height\":65}", "height"),
    OK("{\"prompt\":\"a\",\"height\":2048}"),
    E422("{\"prompt\":\"a\",\"height\":2049}", "height"),
    E422("{\"prompt\":\"a\",\"height\":2056}", "height"),
    E422("{\"prompt\":\"a\",\"height\":\"512\"}", "height"),
    E422("{\"prompt\":\"a\",\"height\":512.5}", "height"),
    E422("{\"prompt\":\"a\",\"height\":false}", "height"),
    E422("{\"prompt\":\"a\",\"height\":[]}", "height"),

    /* steps */
    E422("{\"prompt\":\"a\",\"steps\":-1}", "steps"),
    E422("{\"prompt\":\"a\",\"steps\":0}", "steps"),
    OK("{\"prompt\":\"a\",\"steps\":1}"),
    OK("{\"prompt\":\"a\",\"steps\":150}"),
    E422("{\"prompt\":\"a\",\"steps\":151}", "steps"),
    E422("{\"prompt\":\"a\",\"steps\":\"20\"}", "steps"),
    E422("{\"prompt\":\"a\",\"steps\":20.5}", "steps"),
    E422("{\"prompt\":\"a\",\"steps\":true}", "steps"),
    E422("{\"prompt\":\"a\",\"steps\":null}", "steps"),
    E422("{\"prompt\":\"a\",\"steps\":[20]}", "steps"),

    /* cfg_scale */
    E422("{\"prompt\":\"a\",\"cfg_scale\":0}", "cfg_scale"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":0.99}", "cfg_scale"),
    OK("{\"prompt\":\"a\",\"cfg_scale\":1}"),
    OK("{\"prompt\":\"a\",\"cfg_scale\":1.0}"),
    OK("{\"prompt\":\"a\",\"cfg_scale\":7}"),
    OK("{\"prompt\":\"a\",\"cfg_scale\":7.5}"),
    OK("{\"prompt\":\"a\",\"cfg_scale\":30}"),
    OK("{\"prompt\":\"a\",\"cfg_scale\":3e1}"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":30.01}", "cfg_scale"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":-7}", "cfg_scale"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":\"7\"}", "cfg_scale"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":true}", "cfg_scale"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":null}", "cfg_scale"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":[7]}", "cfg_scale"),
    E422("{\"prompt\":\"a\",\"cfg_scale\":99999999999999999999}", "cfg_scale"),
    E400("{\"prompt\":\"a\",\"cfg_scale\":1e400}"), /* jansson: real number overflow */
    E400("{\"prompt\":\"a\",\"cfg_scale\":NaN}"),
    E400("{\"prompt\":\"a\",\"cfg_scale\":Infinity}"),

    /* seed */
    E422("{\"prompt\":\"a\",\"seed\":-1}", "seed"),
    OK("{\"prompt\":\"a\",\"seed\":0}"),
    OK("{\"prompt\":\"a\",\"seed\":4294967295}"),
    E422("{\"prompt\":\"a\",\"seed\":4294967296}", "seed"),
    OK("{\"prompt\":\"a\",\"seed\":null}"),
    E422("{\"prompt\":\"a\",\"seed\":\"42\"}", "seed"),
    E422("{\"prompt\":\"a\",\"seed\":42.5}", "seed"),
    E422("{\"prompt\":\"a\",\"seed\":true}", "seed"),
    E422("{\"prompt\":\"a\",\"seed\":[42]}", "seed"),
    E422("{\"prompt\":\"a\",\"seed\":9223372036854775807}", "seed"),
    E422("{\"prompt\":\"a\",\"seed\":-9223372036854775808}", "seed"),
    E422("{\"prompt\":\"a\",\"seed\":9223372036854775808}", "seed"), /* beyond int64 */
    E422("{\"prompt\":\"a\",\"seed\":-9223372036854775809}", "seed"),
    E422("{\"prompt\":\"a\",\"seed\":123456789012345678901234567890}", "seed"),

    /* unknown fields, first in body order */
    E422("{\"prompt\":\"a\",\"widht\":512}", "widht"),
    E422("{\"Prompt\":\"a\"}", "Prompt"),
    E422("{\"prompt\":\"a\",\"user\":\"root\"}", "user"),
    E422("{\"prompt\":\"a\",\"\":1}", ""),
    E422("{\"prompt\":\"a\",\"extra\":null}", "extra"),
    E422("{\"width\":1,\"prompt\":\"a\",\"zzz\":1}", "zzz"), /* unknown wins over bad width */
    E400("{\"prompt\":\"a\",\"prompt\\u0000\":1}"),          /* jansson: NUL in key */
    E422("{\"prompt\":\"a\",\"seed\":99999999999999999999,\"x\":1}", "x"),
    E422("{\"prompt\":\"a\",\"w\u00efdth\":1}", "w?dth"),
    E422("{\"prompt\":\"a\",\"a\\\"b\":1}", "a?b"),
    E422("{\"prompt\":\"a\","
         "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}",
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..."),

    /* duplicate keys */
    E400("{\"prompt\":\"a\",\"prompt\":\"b\"}"),
    E400("{\"prompt\":\"a\",\"width\":512,\"width\":512}"),

    /* first bad field in body order */
    E422("{\"prompt\":\"a\",\"steps\":0,\"width\":1}", "width"), /* fixed check order */

    /* not an object, not JSON */
    E400(""),
    E400(" "),
    E400("[]"),
    E400("[{\"prompt\":\"a\"}]"),
    E400("\"x\""),
    E400("1"),
    E400("null"),
    E400("true"),
    E400("{"),
    E400("{\"prompt\":\"a\""),
    E400("{\"prompt\":\"a\",}"),
    E400("{\"prompt\":'a'}"),
    E400("{prompt:\"a\"}"),
    E400("{\"prompt\":\"a\"} {}"),
    E400("{\"prompt\":\"a\"} x"),
    E400("\xef\xbb\xbf{\"prompt\":\"a\"}"),            /* BOM */
    E400("\xff\xfe{}"),                                /* raw bytes quoted back by jansson */
    E400("{\"prompt\":\"a\",\xe2\x82:1}"),             /* truncated UTF-8 outside a string */
    E400("{\"prompt\":\"a\",\"w\":\xf0\x9f\xa6\x8a}"), /* emoji as a bare value */
};

/* Checks one body; where says which row failed. */
static void check_body(const char *where, const char *body, size_t len, int status,
                       const char *code, const char *field, const validate_config_t *cfg)
{
    job_params_t p;
    api_error_t e;
    memset(&p, 0xa5, sizeof p); /* garbage in: validate must not read it */
    int rc = validate_create_body(body, len, cfg, &p, &e);
    int bad = 0;
    if (status == 0) {
        bad = rc != 0 || !p.prompt || !p.negative_prompt;
        if (bad)
            fprintf(stderr, "  row %s: expected success, got %d %s field=%s: %s\n", where, e.status,
                    e.code, e.field, e.message);
    } else {
        bad = rc != -1 || e.status != status || strcmp(e.code, code) != 0 ||
              strcmp(e.field, field) != 0 || e.message[0] == '\0';
        if (bad)
            fprintf(stderr,
                    "  row %s: expected %d %s field=\"%s\", got rc=%d %d %s field=\"%s\": %s\n",
                    where, status, code, field, rc, e.status, e.code, e.field, e.message);
        /* On error out is cleared. */
        CHECK(p.prompt == NULL && p.negative_prompt == NULL);
        /* The message goes into a JSON response: it must be valid UTF-8, NUL-free. */
        json_t *s = json_string(e.message);
        CHECK(s != NULL);
        json_decref(s);
        s = json_string(e.field);
        CHECK(s != NULL);
        json_decref(s);
    }
    CHECK(!bad);
    job_params_clear(&p);
}

static void test_table(void)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char where[300];
        const row_t *r = &rows[i];
        size_t len = r->len ? r->len : strlen(r->body);
        snprintf(where, sizeof where, "%zu %.200s", i, r->body);
        check_body(where, r->body, len, r->status, r->code, r->field, NULL);
    }
}

/* Builds {"<field>":"<n copies of unit>"<tail>} padded with spaces to pad bytes (0: none).
 * Returns a malloc'd string the caller frees; *len_out its length. */
static char *make_body(const char *field, const char *unit, size_t n, const char *tail, size_t pad,
                       size_t *len_out)
{
    size_t ul = strlen(unit), fl = strlen(field), tl = strlen(tail);
    size_t len = 2 + fl + 3 + ul * n + 1 + tl + 1;
    size_t cap = (pad > len ? pad : len) + 1;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    size_t o = 0;
    b[o++] = '{';
    b[o++] = '"';
    memcpy(b + o, field, fl);
    o += fl;
    memcpy(b + o, "\":\"", 3);
    o += 3;
    for (size_t i = 0; i < n; i++, o += ul)
        memcpy(b + o, unit, ul);
    b[o++] = '"';
    memcpy(b + o, tail, tl);
    o += tl;
    b[o++] = '}';
    while (o < pad)
        b[o++] = ' ';
    b[o] = '\0';
    *len_out = o;
    return b;
}

/* Long prompts: lengths count code points, not bytes. */
static void test_lengths(void)
{
    static const struct {
        const char *field, *unit, *tail;
        size_t n;
        int status;
    } cases[] = {
        {"prompt", "a", "", 1, 0},
        {"prompt", "a", "", 2000, 0},
        {"prompt", "a", "", 2001, 422},
        {"prompt", "\xc3\xa9", "", 2000, 0}, /* é, 2 bytes */
        {"prompt", "\xc3\xa9", "", 2001, 422},
        {"prompt", "\xe4\xb8\xad", "", 2000, 0},     /* 3 bytes */
        {"prompt", "\xf0\x9f\xa6\x8a", "", 2000, 0}, /* emoji, 4 bytes: 8000 bytes pass */
        {"prompt", "\xf0\x9f\xa6\x8a", "", 2001, 422},
        {"prompt", "\\ud83e\\udd8a", "", 2000, 0}, /* escaped emoji: 24000 body bytes */
        {"prompt", "\\ud83e\\udd8a", "", 2001, 422},
        {"prompt", "\\n", "", 2000, 422}, /* 2000 newlines: whitespace only */
        {"prompt", " ", "", 2001, 422},
        {"negative_prompt", "b", ",\"prompt\":\"a\"", 2000, 0},
        {"negative_prompt", "b", ",\"prompt\":\"a\"", 2001, 422},
        {"negative_prompt", "\xf0\x9f\xa6\x8a", ",\"prompt\":\"a\"", 2000, 0},
        {"negative_prompt", "\xf0\x9f\xa6\x8a", ",\"prompt\":\"a\"", 2001, 422},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 0;
        char *b = make_body(cases[i].field, cases[i].unit, cases[i].n, cases[i].tail, 0, &len);
        CHECK(b != NULL);
        if (!b)
            continue;
        char where[128];
        snprintf(where, sizeof where, "lengths %zu (%s x %zu)", i, cases[i].field, cases[i].n);
        check_body(where, b, len, cases[i].status, cases[i].status ? "invalid_argument" : "",
                   cases[i].status ? cases[i].field : "", NULL);
        if (cases[i].status == 0) {
            job_params_t p;
            api_error_t e;
            CHECK_INT(validate_create_body(b, len, NULL, &p, &e), 0);
            const char *s = strcmp(cases[i].field, "prompt") == 0 ? p.prompt : p.negative_prompt;
            CHECK(s != NULL);
            job_params_clear(&p);
        }
        free(b);
    }
}

/* The 64 KiB body limit: exactly CREATE_BODY_MAX bytes parses, one more is 413. */
static void test_body_limit(void)
{
    size_t len = 0;
    char *b = make_body("prompt", "\xf0\x9f\xa6\x8a", 2000, "", CREATE_BODY_MAX, &len);
    CHECK(b != NULL);
    if (b) {
        CHECK_INT(len, CREATE_BODY_MAX);
        check_body("limit exact", b, len, 0, "", "", NULL);
        free(b);
    }
    b = make_body("prompt", "a", 10, "", CREATE_BODY_MAX + 1, &len);
    CHECK(b != NULL);
    if (b) {
        CHECK_INT(len, CREATE_BODY_MAX + 1);
        check_body("limit +1", b, len, 413, "payload_too_large", "", NULL);
        free(b);
    }
    /* Oversized is refused before parsing: even garbage gets 413. */
    char *g = malloc(CREATE_BODY_MAX + 100);
    CHECK(g != NULL);
    if (g) {
        memset(g, 0xff, CREATE_BODY_MAX + 100);
        check_body("limit garbage", g, CREATE_BODY_MAX + 100, 413, "payload_too_large", "", NULL);
        free(g);
    }
    /* A NULL body of length 0 is an empty body. */
    check_body("null body", NULL, 0, 400, "invalid_json", "", NULL);
}

static void test_defaults(void)
{
    job_params_t p;
    api_error_t e;
    const char *b = "{\"prompt\":\"a red fox\"}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), 0);
    CHECK_STR(p.prompt, "a red fox");
    CHECK_STR(p.negative_prompt, "");
    CHECK_STR(p.model, "sd15");
    CHECK_INT(p.width, 512);
    CHECK_INT(p.height, 512);
    CHECK_INT(p.steps, 20);
    CHECK_NEAR(p.cfg_scale, 7.0, 1e-12);
    CHECK_INT(p.seed, -1);
    job_params_clear(&p);

    b = "{\"prompt\":\"a red fox\",\"seed\":null}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), 0);
    CHECK_INT(p.seed, -1);
    job_params_clear(&p);
}

static void test_values_kept(void)
{
    job_params_t p;
    api_error_t e;
    const char *b = "{\"seed\":4294967295,\"cfg_scale\":12,\"steps\":150,\"height\":64,"
                    "\"width\":2048,\"model\":\"sd15\",\"negative_prompt\":\"blurry, "
                    "\\\"text\\\"\",\"prompt\":\"caf\\u00e9 \xf0\x9f\xa6\x8a\"}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), 0);
    CHECK_STR(p.prompt, "caf\xc3\xa9 \xf0\x9f\xa6\x8a");
    CHECK_STR(p.negative_prompt, "blurry, \"text\"");
    CHECK_STR(p.model, "sd15");
    CHECK_INT(p.width, 2048);
    CHECK_INT(p.height, 64);
    CHECK_INT(p.steps, 150);
    CHECK_NEAR(p.cfg_scale, 12.0, 1e-12);
    CHECK_INT(p.seed, 4294967295LL);
    job_params_clear(&p);

    b = "{\"prompt\":\"a\",\"cfg_scale\":1.5,\"seed\":0}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), 0);
    CHECK_NEAR(p.cfg_scale, 1.5, 1e-12);
    CHECK_INT(p.seed, 0);
    job_params_clear(&p);
}

static void test_model_config(void)
{
    static const char *const models[] = {"sd15", "sdxl", "flux-schnell", NULL};
    validate_config_t cfg = {models, "sdxl"};
    job_params_t p;
    api_error_t e;

    const char *b = "{\"prompt\":\"a\"}";
    CHECK_INT(validate_create_body(b, strlen(b), &cfg, &p, &e), 0);
    CHECK_STR(p.model, "sdxl");
    job_params_clear(&p);

    b = "{\"prompt\":\"a\",\"model\":\"flux-schnell\"}";
    CHECK_INT(validate_create_body(b, strlen(b), &cfg, &p, &e), 0);
    CHECK_STR(p.model, "flux-schnell");
    job_params_clear(&p);

    b = "{\"prompt\":\"a\",\"model\":\"sd3\"}";
    check_body("cfg sd3", b, strlen(b), 422, "invalid_argument", "model", &cfg);
    CHECK_INT(validate_create_body(b, strlen(b), &cfg, &p, &e), -1);
    CHECK(strstr(e.message, "sd15, sdxl, flux-schnell") != NULL);
    CHECK(strstr(e.message, "\"sd3\"") != NULL);

    /* models NULL: {"sd15"}; default_model NULL: "sd15". */
    validate_config_t empty = {NULL, NULL};
    b = "{\"prompt\":\"a\"}";
    CHECK_INT(validate_create_body(b, strlen(b), &empty, &p, &e), 0);
    CHECK_STR(p.model, "sd15");
    job_params_clear(&p);
    b = "{\"prompt\":\"a\",\"model\":\"sdxl\"}";
    check_body("cfg empty sdxl", b, strlen(b), 422, "invalid_argument", "model", &empty);

    /* A hostile model name is quoted into the message safely. */
    b = "{\"prompt\":\"a\",\"model\":\"\\\"<x>\\n\xf0\x9f\xa6\x8a"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}";
    CHECK_INT(validate_create_body(b, strlen(b), &cfg, &p, &e), -1);
    CHECK_STR(e.field, "model");
    CHECK(strstr(e.message, "?<x>??aaa") != NULL);
    CHECK(strstr(e.message, "...") != NULL);
}

static void test_messages(void)
{
    job_params_t p;
    api_error_t e;
    const char *b = "{\"prompt\":\"a\",\"width\":\"512\"}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "width must be an integer between 64 and 2048") != NULL);
    CHECK(strstr(e.message, "got a string") != NULL);

    b = "{\"prompt\":\"a\",\"width\":65}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "width must be a multiple of 8") != NULL);
    CHECK(strstr(e.message, "try 64 or 72") != NULL);

    b = "{\"prompt\":\"a\",\"height\":2047}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "try 2040") != NULL);
    CHECK(strstr(e.message, "2048 or") == NULL);

    b = "{\"prompt\":\"a\",\n  \"width\": 512,,}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK_INT(e.status, 400);
    CHECK(strstr(e.message, "line 2") != NULL);
    CHECK(strstr(e.message, "column") != NULL);

    b = "{\"prompt\":\"a\",\"seed\":99999999999999999999}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "seed must be an integer between 0 and 4294967295") != NULL);
    CHECK(strstr(e.message, "too large") != NULL);

    b = "{\"prompt\":\"a\",\"steps\":151}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "got 151") != NULL);

    b = "{\"prompt\":\"a\",\"colour\":1}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "unknown field \"colour\"") != NULL);

    b = "{\"prompt\":\"a\",\"prompt\":\"b\"}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "duplicate") != NULL);

    b = "[]";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "must be a JSON object") != NULL);

    b = "{\"prompt\":\"\\u0000\"}";
    CHECK_INT(validate_create_body(b, strlen(b), NULL, &p, &e), -1);
    CHECK(strstr(e.message, "NUL") != NULL);
}

static void test_user_name(void)
{
    static const struct {
        const char *name;
        int ok;
    } cases[] = {
        {"alice", 1},
        {"a", 1},
        {"Bob_the-builder.2", 1},
        {"0123456789", 1},
        {"1234567890123456789012345678901234567890123456789012345678901234", 1},  /* 64 */
        {"12345678901234567890123456789012345678901234567890123456789012345", 0}, /* 65 */
        {"", 0},
        {"al ice", 0},
        {"alice/..", 0},
        {"al@ice", 0},
        {"al\nice", 0},
        {"caf\xc3\xa9", 0},
        {"a:b", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (validate_user_name(cases[i].name) != cases[i].ok)
            fprintf(stderr, "  user name \"%s\": expected %d\n", cases[i].name, cases[i].ok);
        CHECK_INT(validate_user_name(cases[i].name), cases[i].ok);
    }
    CHECK_INT(validate_user_name(NULL), 0);
}

#define TESTS(X)                                                                                   \
    X(test_table)                                                                                  \
    X(test_lengths)                                                                                \
    X(test_body_limit)                                                                             \
    X(test_defaults)                                                                               \
    X(test_values_kept)                                                                            \
    X(test_model_config)                                                                           \
    X(test_messages)                                                                               \
    X(test_user_name)
#include "t_main.h"
