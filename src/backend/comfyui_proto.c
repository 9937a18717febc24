/* comfyui_proto.c: workflow placeholders and /ws messages of ComfyUI (see comfyui_proto.h). */
#include "backend/comfyui_proto.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Placeholders: a string value that is exactly one of them becomes the typed value (a number
 * for the numeric ones); inside a longer string each is replaced by its text. {{prompt}} is
 * first (bit 0 of the scan). The order of vals in comfyui_workflow_fill follows this table. */
enum ph_kind { PH_TEXT, PH_INT, PH_REAL };
static const struct placeholder {
    const char *name;
    enum ph_kind kind;
} placeholders[] = {
    {"{{prompt}}", PH_TEXT},     {"{{negative_prompt}}", PH_TEXT},
    {"{{checkpoint}}", PH_TEXT}, {"{{model}}", PH_TEXT},
    {"{{width}}", PH_INT},       {"{{height}}", PH_INT},
    {"{{steps}}", PH_INT},       {"{{seed}}", PH_INT},
    {"{{cfg}}", PH_REAL},
};
#define NPH ((int)(sizeof placeholders / sizeof placeholders[0]))

/* The index of the placeholder that starts at s, or -1. */
static int placeholder_at(const char *s)
{
    for (int i = 0; i < NPH; i++)
        if (strncmp(s, placeholders[i].name, strlen(placeholders[i].name)) == 0)
            return i;
    return -1;
}

/* Collects the placeholders a string uses into *seen (bit i: placeholders[i]); -1 when it holds
 * a "{{...}}" that is not one of them (its start copied into bad). */
static int scan_string(const char *s, unsigned *seen, char *bad, size_t badlen)
{
    for (const char *p = strstr(s, "{{"); p; p = strstr(p + 2, "{{")) {
        int hit = placeholder_at(p);
        if (hit < 0) {
            const char *end = strstr(p, "}}");
            snprintf(bad, badlen, "%.*s", end && end - p < 40 ? (int)(end - p + 2) : 40, p);
            return -1;
        }
        *seen |= 1u << hit;
    }
    return 0;
}

static int scan_json(json_t *v, unsigned *seen, char *bad, size_t badlen)
{
    const char *key;
    json_t *child;
    size_t i;
    if (json_is_string(v))
        return scan_string(json_string_value(v), seen, bad, badlen);
    if (json_is_object(v)) {
        json_object_foreach(v, key, child) if (scan_json(child, seen, bad, badlen) != 0) return -1;
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, child) if (scan_json(child, seen, bad, badlen) != 0) return -1;
    }
    return 0;
}

int comfyui_workflow_check(json_t *wf, char *why, size_t whylen)
{
    unsigned seen = 0;
    char bad[64] = "";
    if (!json_is_object(wf) || json_object_size(wf) == 0) {
        snprintf(why, whylen,
                 "is not a ComfyUI API-format workflow (a JSON object of nodes; export it with "
                 "\"Save (API Format)\")");
        return -1;
    }
    if (scan_json(wf, &seen, bad, sizeof bad) != 0) {
        snprintf(why, whylen, "unknown placeholder %s", bad);
        return -1;
    }
    if (!(seen & 1u)) {
        snprintf(why, whylen, "has no {{prompt}} placeholder");
        return -1;
    }
    return 0;
}

/* The string s with every placeholder replaced by its text vals[i]. malloc'd; NULL on allocation
 * failure or when the result would exceed INT_MAX bytes. */
static char *expand_text(const char *s, const char *const vals[NPH])
{
    size_t cap = strlen(s) + 1, len = 0;
    for (const char *p = strstr(s, "{{"); p; p = strstr(p + 2, "{{")) {
        int hit = placeholder_at(p);
        if (hit >= 0)
            cap += strlen(vals[hit]);
        if (cap > INT_MAX)
            return NULL;
    }
    char *out = malloc(cap);
    if (!out)
        return NULL;
    while (*s) {
        int hit = placeholder_at(s);
        if (hit >= 0) {
            size_t n = strlen(vals[hit]);
            memcpy(out + len, vals[hit], n);
            len += n;
            s += strlen(placeholders[hit].name);
        } else {
            out[len++] = *s++;
        }
    }
    out[len] = '\0';
    return out;
}

/* The replacement for string value s (new reference), or NULL to keep it. */
static json_t *substitute(const char *s, const job_params_t *p, const char *const vals[NPH])
{
    for (int i = 0; i < NPH; i++) {
        if (strcmp(s, placeholders[i].name) != 0 || placeholders[i].kind == PH_TEXT)
            continue;
        if (placeholders[i].kind == PH_REAL)
            return json_real(p->cfg_scale);
        if (strcmp(s, "{{seed}}") == 0)
            return json_integer((json_int_t)p->seed);
        return json_integer(strcmp(s, "{{width}}") == 0    ? p->width
                            : strcmp(s, "{{height}}") == 0 ? p->height
                                                           : p->steps);
    }
    if (!strstr(s, "{{"))
        return NULL;
    char *t = expand_text(s, vals);
    json_t *v = t ? json_string(t) : NULL;
    free(t);
    return v;
}

static void fill(json_t *v, const job_params_t *p, const char *const vals[NPH]);

/* The value to put in place of child (new reference), or NULL when child stays (its own
 * children filled in). */
static json_t *filled(json_t *child, const job_params_t *p, const char *const vals[NPH])
{
    if (json_is_string(child))
        return substitute(json_string_value(child), p, vals);
    fill(child, p, vals);
    return NULL;
}

/* Replaces the placeholders in v, in place. */
static void fill(json_t *v, const job_params_t *p, const char *const vals[NPH])
{
    const char *key;
    json_t *child;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, key, child)
        {
            json_t *r = filled(child, p, vals);
            if (r)
                json_object_set_new(v, key, r);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, child)
        {
            json_t *r = filled(child, p, vals);
            if (r)
                json_array_set_new(v, i, r);
        }
    }
}

json_t *comfyui_workflow_fill(json_t *wf, const job_params_t *p, const char *checkpoint)
{
    char num[5][32];
    snprintf(num[0], sizeof num[0], "%d", p->width);
    snprintf(num[1], sizeof num[1], "%d", p->height);
    snprintf(num[2], sizeof num[2], "%d", p->steps);
    snprintf(num[3], sizeof num[3], "%lld", (long long)p->seed);
    snprintf(num[4], sizeof num[4], "%g", p->cfg_scale);
    const char *vals[NPH] = {p->prompt ? p->prompt : "",
                             p->negative_prompt ? p->negative_prompt : "",
                             checkpoint ? checkpoint : "",
                             p->model,
                             num[0],
                             num[1],
                             num[2],
                             num[3],
                             num[4]};
    json_t *copy = json_deep_copy(wf);
    if (copy)
        fill(copy, p, vals);
    return copy;
}

/* ---- /ws messages ---- */

static void error_text(json_t *d, char *buf, size_t size)
{
    const char *node = json_string_value(json_object_get(d, "node_id"));
    const char *type = json_string_value(json_object_get(d, "node_type"));
    const char *et = json_string_value(json_object_get(d, "exception_type"));
    const char *em = json_string_value(json_object_get(d, "exception_message"));
    snprintf(buf, size, "execution_error in node %.40s (%.60s): %.80s%s%.250s", node ? node : "?",
             type ? type : "?", et ? et : "", et && em ? ": " : "", em ? em : "");
    for (char *p = buf; *p; p++) /* one log line */
        if (*p == '\n' || *p == '\r' || *p == '"')
            *p = *p == '"' ? '\'' : ' ';
}

static const struct {
    const char *type;
    enum comfyui_msg_kind kind;
} kinds[] = {
    {"status", CM_STATUS},
    {"execution_start", CM_START},
    {"executing", CM_EXECUTING},
    {"progress", CM_PROGRESS},
    {"execution_success", CM_SUCCESS},
    {"execution_error", CM_ERROR},
    {"execution_interrupted", CM_INTERRUPTED},
};

void comfyui_msg_parse(const char *text, size_t len, const char *prompt_id, comfyui_msg_t *out)
{
    memset(out, 0, sizeof *out);
    json_t *m = json_loadb(text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(m, "type"));
    json_t *d = json_object_get(m, "data");
    for (size_t i = 0; type && json_is_object(d) && i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(type, kinds[i].type) == 0)
            out->kind = kinds[i].kind;
    const char *pid = json_string_value(json_object_get(d, "prompt_id"));
    out->mine = !pid ? -1 : prompt_id && prompt_id[0] && strcmp(pid, prompt_id) == 0;
    json_t *ts = json_object_get(d, "timestamp");
    out->timestamp = json_is_integer(ts) && json_integer_value(ts) > 0 ? json_integer_value(ts) : 0;
    out->node_null = out->kind == CM_EXECUTING && json_is_null(json_object_get(d, "node"));
    if (out->kind == CM_PROGRESS) {
        json_t *v = json_object_get(d, "value"), *mx = json_object_get(d, "max");
        json_int_t vv = json_is_integer(v) ? json_integer_value(v) : -1;
        json_int_t mm = json_is_integer(mx) ? json_integer_value(mx) : 0;
        if (vv < 0 || mm <= 0 || mm > INT_MAX)
            out->kind = CM_OTHER; /* not a progress we can show */
        out->value = (int)(vv > mm ? mm : vv < 0 ? 0 : vv);
        out->max = (int)(mm > 0 && mm <= INT_MAX ? mm : 0);
    }
    if (out->kind == CM_ERROR)
        error_text(d, out->error, sizeof out->error);
    json_decref(m);
}
