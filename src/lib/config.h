/* config.h: declarative configuration. One table row per option (flag name, environment
 * variable, type, default, bounds, help) drives flag parsing, the environment fallback,
 * validation and --help. Precedence: flag, then environment, then default. */
#ifndef PINGVAS_CONFIG_H
#define PINGVAS_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum opt_type {
    OPT_STR,      /* char * (points into argv/env/default; never freed) */
    OPT_INT,      /* int, bounded by min..max */
    OPT_DOUBLE,   /* double, bounded by min..max */
    OPT_DURATION, /* int64_t milliseconds; "250ms", "15s", "5m", "24h", "2d"; bare number = s */
    OPT_BOOL,     /* int 0/1; the flag takes no value; env accepts 1/0/true/false/yes/no */
} opt_type_t;

typedef struct opt {
    const char *name; /* flag without dashes */
    const char *env;  /* environment variable or NULL */
    opt_type_t type;
    const char *def; /* default as text, or NULL (string NULL / number 0) */
    double min, max; /* numeric bounds (durations in ms) */
    size_t offset;   /* into the config struct */
    const char *help;
} opt_t;

/* Applies defaults, then environment, then argv[start..]. Positional (non-option) arguments are
 * collected into pos (up to max_pos, in order) and their count stored in *npos.
 * Returns 0; 1 when --help was given (usage should be printed, exit 0); -1 on error with a
 * message naming the flag or variable in err (exit status 2). */
int config_parse(const opt_t *opts, size_t nopts, void *cfg, int argc, char **argv, int start,
                 char **pos, int max_pos, int *npos, char *err, size_t errlen);

/* Prints the option table as --help text. */
void config_usage(FILE *f, const opt_t *opts, size_t nopts);

/* Parses a duration ("15s", "500ms", "24h", bare seconds). 0 or -1. */
int config_parse_duration(const char *s, int64_t *ms_out);

#endif
