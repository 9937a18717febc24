#include "lib/config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int config_parse_duration(const char *s, int64_t *ms_out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(v) || v < 0)
        return -1;
    double mult;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
    else
        return -1;
    double ms = v * mult;
    if (ms > 9.0e15)
        return -1;
    *ms_out = (int64_t)llround(ms);
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    if (!strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") ||
        !strcasecmp(s, "on")) {
        *out = 1;
        return 0;
    }
    if (!strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") ||
        !strcasecmp(s, "off")) {
        *out = 0;
        return 0;
    }
    return -1;
}

/* Sets one option from text; `from` names the source for messages ("--port", "PINGVAS_PORT"). */
static int set_value(const opt_t *o, void *cfg, const char *val, const char *from, char *err,
                     size_t errlen)
{
    char *field = (char *)cfg + o->offset;
    char *end;
    switch (o->type) {
    case OPT_STR:
        *(const char **)field = val;
        return 0;
    case OPT_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        if (end == val || *end != '\0' || errno != 0 || v < o->min || v > o->max) {
            snprintf(err, errlen, "%s: '%s' is not an integer between %.0f and %.0f", from, val,
                     o->min, o->max);
            return -1;
        }
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        if (end == val || *end != '\0' || errno != 0 || !isfinite(v) || v < o->min || v > o->max) {
            snprintf(err, errlen, "%s: '%s' is not a number between %g and %g", from, val, o->min,
                     o->max);
            return -1;
        }
        *(double *)field = v;
        return 0;
    }
    case OPT_DURATION: {
        int64_t ms;
        if (config_parse_duration(val, &ms) != 0 || (double)ms < o->min || (double)ms > o->max) {
            snprintf(err, errlen,
                     "%s: '%s' is not a duration between %.0fms and %.0fms (use e.g. 500ms, 15s, "
                     "5m, 24h)",
                     from, val, o->min, o->max);
            return -1;
        }
        *(int64_t *)field = ms;
        return 0;
    }
    case OPT_BOOL: {
        int b;
        if (parse_bool(val, &b) != 0) {
            snprintf(err, errlen, "%s: '%s' is not a boolean (use true or false)", from, val);
            return -1;
        }
        *(int *)field = b;
        return 0;
    }
    }
    return -1;
}

int config_parse(const opt_t *opts, size_t nopts, void *cfg, int argc, char **argv, int start,
                 char **pos, int max_pos, int *npos, char *err, size_t errlen)
{
    *npos = 0;
    for (size_t i = 0; i < nopts; i++) {
        const opt_t *o = &opts[i];
        if (o->def) {
            if (set_value(o, cfg, o->def, o->name, err, errlen) != 0)
                return -1;
        } else if (o->type == OPT_STR) {
            *(const char **)((char *)cfg + o->offset) = NULL;
        }
    }
    for (size_t i = 0; i < nopts; i++) {
        const opt_t *o = &opts[i];
        const char *v = o->env ? getenv(o->env) : NULL;
        if (v && *v && set_value(o, cfg, v, o->env, err, errlen) != 0)
            return -1;
    }
    for (int i = start; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (*npos >= max_pos) {
                    snprintf(err, errlen, "unexpected argument '%s'", argv[i]);
                    return -1;
                }
                pos[(*npos)++] = argv[i];
            }
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (*npos >= max_pos) {
                snprintf(err, errlen, "unexpected argument '%s'", a);
                return -1;
            }
            pos[(*npos)++] = argv[i];
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_t *o = NULL;
        for (size_t k = 0; k < nopts; k++)
            if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0)
                o = &opts[k];
        if (!o) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)nlen, name);
            return -1;
        }
        char from[80];
        snprintf(from, sizeof from, "--%s", o->name);
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (o->type == OPT_BOOL) {
            val = "true";
        } else {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", from);
                return -1;
            }
            val = argv[++i];
        }
        if (set_value(o, cfg, val, from, err, errlen) != 0)
            return -1;
    }
    return 0;
}

void config_usage(FILE *f, const opt_t *opts, size_t nopts)
{
    fprintf(f, "Options (flag, then environment variable, then default):\n");
    for (size_t i = 0; i < nopts; i++) {
        const opt_t *o = &opts[i];
        char left[64];
        const char *arg = o->type == OPT_BOOL       ? ""
                          : o->type == OPT_DURATION ? " DURATION"
                          : o->type == OPT_STR      ? " VALUE"
                                                    : " N";
        snprintf(left, sizeof left, "--%s%s", o->name, arg);
        fprintf(f, "  %-28s %s", left, o->help);
        if (o->def && *o->def)
            fprintf(f, " [default: %s]", o->def);
        if (o->env)
            fprintf(f, " [env: %s]", o->env);
        fprintf(f, "\n");
    }
    fprintf(f, "  %-28s %s\n", "--help", "show this help");
}
