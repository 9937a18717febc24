/* validate.c: the create body (DESIGN section 3) from bytes to job_params_t.
 *
 * Decisions a client can observe:
 * - len > CREATE_BODY_MAX: 413 payload_too_large, before any parsing.
 * - Not JSON (empty, malformed, invalid UTF-8, a raw NUL byte, duplicate keys): 400
 *   invalid_json with jansson's reason, line and column.
 * - JSON but not an object ([], "x", 1, null): 400 invalid_json.
 * - An integer literal beyond the int64 range: 422 naming the field when the field can be
 *   found (a second parse reads integers as reals to locate it), otherwise 400 invalid_json.
 * - A "\u0000" escape inside a string value: 422 naming the field (strings never carry NULs);
 *   inside a key jansson refuses it at parse time: 400.
 * - null is accepted for seed only (random seed); for any other field it is a wrong type.
 * - Everything else wrong with a field: 422 invalid_argument naming the field: an unknown
 *   field first (in body order), then the known fields in a fixed order (prompt,
 *   negative_prompt, model, width, height, steps, cfg_scale, seed, webhook_url).
 * Lengths of prompt and negative_prompt count Unicode code points, not bytes. */
#include "core/validate.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/netguard.h"

static const char *const default_models[] = {"sd15", NULL};

#define WH_MIN JOB_SIZE_MIN
#define WH_MAX JOB_SIZE_MAX
#define WH_DEFAULT 512
#define STEPS_MIN JOB_STEPS_MIN
#define STEPS_MAX JOB_STEPS_MAX
#define STEPS_DEFAULT 20
#define CFG_MIN JOB_CFG_MIN
#define CFG_MAX JOB_CFG_MAX
#define CFG_DEFAULT 7.0
#define SEED_MAX JOB_SEED_MAX

enum field_id {
    F_PROMPT,
    F_NEGATIVE_PROMPT,
    F_MODEL,
    F_WIDTH,
    F_HEIGHT,
    F_STEPS,
    F_CFG_SCALE,
    F_SEED,
    F_WEBHOOK_URL,
    F_COUNT,
};

static const char *const field_names[F_COUNT] = {
    "prompt", "negative_prompt", "model", "width",       "height",
    "steps",  "cfg_scale",       "seed",  "webhook_url",
};

/* The message a client sees when a field has the wrong type or an out-of-range value that
 * cannot even be represented. */
static const char *const field_expect[F_COUNT] = {
    "prompt must be a string of 1 to 2000 characters",
    "negative_prompt must be a string of 0 to 2000 characters",
    "model must be a string naming a configured model",
    "width must be an integer between 64 and 2048 (a multiple of 8)",
    "height must be an integer between 64 and 2048 (a multiple of 8)",
    "steps must be an integer between 1 and 150",
    "cfg_scale must be a number between 1 and 30",
    "seed must be an integer between 0 and 4294967295, or null for a random seed",
    "webhook_url must be an https:// URL of at most 2048 characters",
};

/* Returns the field id for a key of klen bytes (keys may hold NULs), or -1. */
static int field_lookup(const char *key, size_t klen)
{
    for (int i = 0; i < F_COUNT; i++)
        if (strlen(field_names[i]) == klen && memcmp(field_names[i], key, klen) == 0)
            return i;
    return -1;
}

/* Copies at most max bytes of s (len bytes) into buf for use inside an error message:
 * printable ASCII as is; control bytes, NUL, each UTF-8 sequence and (when quotes is 0) '"'
 * and '\\' as one '?'; "..." when cut. The result is plain ASCII whatever the input, so the message
 * stays valid UTF-8 (it goes into a JSON response) even when vsnprintf later truncates it. */
static void sanitize(const char *s, size_t len, size_t max, int quotes, char *buf, size_t size)
{
    size_t o = 0, i = 0;
    if (size == 0)
        return;
    for (; i < len && i < max && o + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            /* One '?' per code point: skip continuation bytes. */
            if ((c & 0xc0) == 0x80)
                continue;
            buf[o++] = '?';
        } else if (c < 0x20 || c == 0x7f || (!quotes && (c == '"' || c == '\\'))) {
            buf[o++] = '?';
        } else {
            buf[o++] = (char)c;
        }
    }
    if (i < len && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

/* A user-supplied name, short, for a message. */
static void quote_for_msg(const char *s, size_t len, char *buf, size_t size)
{
    sanitize(s, len, 32, 0, buf, size);
}

/* The JSON type of v in words, for messages. */
static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction or exponent";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown type";
}

/* Counts code points in s (valid UTF-8, as jansson guarantees). */
static size_t utf8_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            n++;
    return n;
}

/* Decodes the code point at s[*i] (valid UTF-8) and advances *i. */
static uint32_t utf8_next(const char *s, size_t len, size_t *i)
{
    unsigned char c = (unsigned char)s[*i];
    int extra = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    uint32_t cp = extra == 0 ? c : extra == 1 ? c & 0x1f : extra == 2 ? c & 0x0f : c & 0x07;
    (*i)++;
    for (int k = 0; k < extra && *i < len; k++, (*i)++)
        cp = cp << 6 | ((unsigned char)s[*i] & 0x3f);
    return cp;
}

/* Unicode White_Space. */
static int is_space_cp(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

static int all_space(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len)
        if (!is_space_cp(utf8_next(s, len, &i)))
            return 0;
    return 1;
}

/* Validates a text field. On success *out is a malloc'd copy the caller owns. */
static int take_text(int f, const json_t *v, size_t min_chars, char **out, api_error_t *e)
{
    const char *name = field_names[f];
    if (!json_is_string(v))
        return api_error_set(e, 422, "invalid_argument", name, "%s; got %s", field_expect[f],
                             type_name(v));
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (memchr(s, '\0', len))
        return api_error_set(e, 422, "invalid_argument", name,
                             "%s must not contain NUL characters (\\u0000); remove them", name);
    size_t chars = utf8_count(s, len);
    if (chars < min_chars)
        return api_error_set(e, 422, "invalid_argument", name,
                             "%s is empty; send 1 to %d characters of text", name,
                             PROMPT_MAX_CHARS);
    if (chars > PROMPT_MAX_CHARS)
        return api_error_set(e, 422, "invalid_argument", name,
                             "%s is %zu characters long; the limit is %d, shorten it", name, chars,
                             PROMPT_MAX_CHARS);
    if (min_chars > 0 && all_space(s, len))
        return api_error_set(e, 422, "invalid_argument", name,
                             "%s is only whitespace; describe the image to generate", name);
    *out = malloc(len + 1);
    if (!*out)
        return api_error_set(e, 503, "unavailable", name,
                             "out of memory while reading %s; retry later", name);
    memcpy(*out, s, len + 1);
    return 0;
}

/* Validates an integer field into *out. */
static int take_int(int f, const json_t *v, long long min, long long max, int mult, long long *out,
                    api_error_t *e)
{
    const char *name = field_names[f];
    if (!json_is_integer(v))
        return api_error_set(e, 422, "invalid_argument", name, "%s; got %s", field_expect[f],
                             type_name(v));
    long long x = (long long)json_integer_value(v);
    if (x < min || x > max)
        return api_error_set(e, 422, "invalid_argument", name, "%s; got %lld", field_expect[f], x);
    if (mult > 1 && x % mult != 0) {
        long long lo = x / mult * mult, hi = lo + mult;
        if (lo < min)
            lo = hi;
        if (hi > max)
            hi = lo;
        if (lo == hi)
            return api_error_set(e, 422, "invalid_argument", name,
                                 "%s must be a multiple of %d, got %lld; try %lld", name, mult, x,
                                 lo);
        return api_error_set(e, 422, "invalid_argument", name,
                             "%s must be a multiple of %d, got %lld; try %lld or %lld", name, mult,
                             x, lo, hi);
    }
    *out = x;
    return 0;
}

static int take_model(const json_t *v, const validate_config_t *cfg, char *out, size_t size,
                      api_error_t *e)
{
    const char *const *models = cfg && cfg->models ? cfg->models : default_models;
    if (!json_is_string(v))
        return api_error_set(e, 422, "invalid_argument", "model", "%s; got %s",
                             field_expect[F_MODEL], type_name(v));
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    for (size_t i = 0; models[i]; i++) {
        if (strlen(models[i]) == len && memcmp(models[i], s, len) == 0 && len < size) {
            memcpy(out, s, len + 1);
            return 0;
        }
    }
    /* Not found: list what is available, as much as fits. */
    char shown[48], list[160];
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; models[i]; i++) {
        int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", models[i]);
        if (n < 0 || (size_t)n >= sizeof list - used) {
            list[used] = '\0';
            break;
        }
        used += (size_t)n;
    }
    quote_for_msg(s, len, shown, sizeof shown);
    return api_error_set(e, 422, "invalid_argument", "model",
                         "model \"%s\" is not available; use one of: %s", shown, list);
}

/* Fills vals[] from root. Returns -1 with e filled at the first unknown key in body order. */
static int collect_fields(json_t *root, json_t **vals, api_error_t *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        size_t klen = json_object_iter_key_len(json_object_key_to_iter(key));
        int f = field_lookup(key, klen);
        if (f < 0) {
            char shown[48];
            quote_for_msg(key, klen, shown, sizeof shown);
            return api_error_set(e, 422, "invalid_argument", shown,
                                 "unknown field \"%s\"; allowed fields are prompt, "
                                 "negative_prompt, model, width, height, steps, cfg_scale, seed, "
                                 "webhook_url",
                                 shown);
        }
        vals[f] = v;
    }
    return 0;
}

/* Validates the form of webhook_url (lib/netguard.h); whether its host may be called is the
 * server's check, after resolving it. On success *out is a malloc'd copy the caller owns. */
static int take_webhook(const json_t *v, char **out, api_error_t *e)
{
    if (!json_is_string(v))
        return api_error_set(e, 422, "invalid_argument", "webhook_url", "%s; got %s",
                             field_expect[F_WEBHOOK_URL], type_name(v));
    const char *s = json_string_value(v);
    char why[128];
    net_url_t u;
    if (memchr(s, '\0', json_string_length(v)) || netguard_parse_url(s, &u, why, sizeof why) != 0)
        return api_error_set(e, 422, "invalid_argument", "webhook_url", "webhook_url %s",
                             memchr(s, '\0', json_string_length(v)) ? "must not contain NULs"
                                                                    : why);
    *out = strdup(s);
    if (!*out)
        return api_error_set(e, 503, "unavailable", "webhook_url", "out of memory; retry later");
    return 0;
}

/* Validates the parsed top-level object into out (which starts zeroed). Unknown fields are
 * reported first, so a typo is learned before anything else; then fields are checked in the
 * fixed order prompt, negative_prompt, model, width, height, steps, cfg_scale, seed,
 * webhook_url. */
static int fill_params(json_t *root, const validate_config_t *cfg, job_params_t *out,
                       api_error_t *e)
{
    json_t *vals[F_COUNT] = {0};
    if (collect_fields(root, vals, e) != 0)
        return -1;

    if (!vals[F_PROMPT])
        return api_error_set(e, 422, "invalid_argument", "prompt",
                             "prompt is required; send 1 to %d characters describing the image",
                             PROMPT_MAX_CHARS);
    if (take_text(F_PROMPT, vals[F_PROMPT], 1, &out->prompt, e) != 0)
        return -1;
    if (vals[F_NEGATIVE_PROMPT]) {
        if (take_text(F_NEGATIVE_PROMPT, vals[F_NEGATIVE_PROMPT], 0, &out->negative_prompt, e) != 0)
            return -1;
    } else {
        out->negative_prompt = strdup("");
        if (!out->negative_prompt)
            return api_error_set(e, 503, "unavailable", NULL, "out of memory; retry later");
    }

    if (vals[F_MODEL]) {
        if (take_model(vals[F_MODEL], cfg, out->model, sizeof out->model, e) != 0)
            return -1;
    } else {
        const char *def = cfg && cfg->default_model ? cfg->default_model : "sd15";
        int n = snprintf(out->model, sizeof out->model, "%s", def);
        if (n < 0 || (size_t)n >= sizeof out->model)
            return api_error_set(e, 503, "unavailable", "model",
                                 "the server's default model name is too long; fix the "
                                 "server configuration");
    }

    long long x = WH_DEFAULT;
    if (vals[F_WIDTH] && take_int(F_WIDTH, vals[F_WIDTH], WH_MIN, WH_MAX, 8, &x, e) != 0)
        return -1;
    out->width = (int)x;
    x = WH_DEFAULT;
    if (vals[F_HEIGHT] && take_int(F_HEIGHT, vals[F_HEIGHT], WH_MIN, WH_MAX, 8, &x, e) != 0)
        return -1;
    out->height = (int)x;
    x = STEPS_DEFAULT;
    if (vals[F_STEPS] && take_int(F_STEPS, vals[F_STEPS], STEPS_MIN, STEPS_MAX, 1, &x, e) != 0)
        return -1;
    out->steps = (int)x;

    out->cfg_scale = CFG_DEFAULT;
    if (vals[F_CFG_SCALE]) {
        json_t *c = vals[F_CFG_SCALE];
        if (!json_is_number(c))
            return api_error_set(e, 422, "invalid_argument", "cfg_scale", "%s; got %s",
                                 field_expect[F_CFG_SCALE], type_name(c));
        double d = json_number_value(c);
        if (!isfinite(d) || d < CFG_MIN || d > CFG_MAX)
            return api_error_set(e, 422, "invalid_argument", "cfg_scale", "%s; got %g",
                                 field_expect[F_CFG_SCALE], d);
        out->cfg_scale = d;
    }

    out->seed = -1;
    if (vals[F_SEED] && !json_is_null(vals[F_SEED])) {
        if (take_int(F_SEED, vals[F_SEED], 0, SEED_MAX, 1, &x, e) != 0)
            return -1;
        out->seed = x;
    }
    if (vals[F_WEBHOOK_URL] && take_webhook(vals[F_WEBHOOK_URL], &out->webhook_url, e) != 0)
        return -1;
    return 0;
}

/* The body failed to parse because of an integer beyond int64. Parse again reading integers
 * as reals to find the field that holds it (unknown fields still reported first, as in
 * fill_params); returns -1 with e filled when found, 0 when not. */
static int locate_big_integer(const char *body, size_t len, api_error_t *e)
{
    json_t *root = json_loadb(
        body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    json_t *vals[F_COUNT] = {0};
    int rc = 0;
    if (!json_is_object(root))
        goto out;
    rc = collect_fields(root, vals, e);
    if (rc != 0)
        goto out;
    for (int f = 0; f < F_COUNT; f++) {
        if (!json_is_real(vals[f]) || fabs(json_real_value(vals[f])) < 9.2e18)
            continue;
        rc = api_error_set(e, 422, "invalid_argument", field_names[f],
                           "%s; got a number too large to represent", field_expect[f]);
        break;
    }
out:
    json_decref(root);
    return rc;
}

int validate_create_body(const char *body, size_t len, const validate_config_t *cfg,
                         job_params_t *out, api_error_t *e)
{
    int rc = -1;
    json_t *root = NULL;
    json_error_t jerr;

    memset(out, 0, sizeof *out);
    memset(e, 0, sizeof *e);
    if (len > CREATE_BODY_MAX) {
        api_error_set(e, 413, "payload_too_large", NULL,
                      "request body is %zu bytes; the limit is %d bytes (64 KiB), shorten the "
                      "prompts",
                      len, CREATE_BODY_MAX);
        goto out;
    }
    if (!body || len == 0) {
        api_error_set(e, 400, "invalid_json", NULL,
                      "request body is empty; send a JSON object such as "
                      "{\"prompt\":\"a red fox\"}");
        goto out;
    }

    /* JSON_ALLOW_NUL so that a "\u0000" escape reaches field validation and is refused
     * with the field's name; a raw NUL byte is still a syntax error. */
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_numeric_overflow &&
            locate_big_integer(body, len, e) != 0)
            goto out;
        /* jansson quotes the offending input ("near '...'"), raw bytes and all. */
        char reason[sizeof jerr.text];
        sanitize(jerr.text, strnlen(jerr.text, sizeof jerr.text - 1), sizeof jerr.text, 1, reason,
                 sizeof reason);
        api_error_set(e, 400, "invalid_json", NULL,
                      "request body is not valid JSON: %s at line %d, column %d; send a JSON "
                      "object such as {\"prompt\":\"a red fox\"}",
                      reason, jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(root)) {
        api_error_set(e, 400, "invalid_json", NULL,
                      "request body must be a JSON object, got %s; send an object such as "
                      "{\"prompt\":\"a red fox\"}",
                      type_name(root));
        goto out;
    }
    rc = fill_params(root, cfg, out, e);
out:
    json_decref(root);
    if (rc != 0)
        job_params_clear(out);
    return rc;
}

int validate_user_name(const char *s)
{
    if (!s)
        return 0;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok || n >= USER_NAME_MAX)
            return 0;
    }
    return n > 0;
}
