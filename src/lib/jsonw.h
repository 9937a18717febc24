/* jsonw.h: a JSON text writer for hot answers (a job's JSON on every create and GET): appends to
 * one growing buffer with no document tree, in the same text json_dumps(JSON_COMPACT) gives for
 * the same members in the same order (strings escaped as jansson does, reals as "%.17g" with
 * ".0" added to whole numbers and the exponent written without '+' or leading zeros).
 *
 * Usage: jsonw_t w = {0}; jsonw_open(&w); jsonw_str(&w, "id", id); ... jsonw_close(&w);
 * then jsonw_take(&w, &len) hands the text over (caller frees), or jsonw_free(&w). Members of
 * one object are separated by commas automatically. Any allocation failure, or growing past
 * JSONW_MAX bytes, sets err; jsonw_take then returns NULL. */
#ifndef PINGVAS_JSONW_H
#define PINGVAS_JSONW_H

#include <stddef.h>
#include <stdint.h>

#define JSONW_MAX (16u << 20) /* the cap of one document */
#define JSONW_DEPTH 8         /* nesting of objects */

typedef struct jsonw {
    char *buf;
    size_t len, cap;
    int depth;
    unsigned char first[JSONW_DEPTH]; /* no member yet at this depth */
    int err;
} jsonw_t;

/* '{' of an object; with key (not NULL) as a member of the enclosing object. */
void jsonw_open_key(jsonw_t *w, const char *key);
static inline void jsonw_open(jsonw_t *w)
{
    jsonw_open_key(w, NULL);
}
void jsonw_close(jsonw_t *w);
/* Members: a string (NULL writes null), an integer, a real, null, a boolean (v != 0: true). */
void jsonw_str(jsonw_t *w, const char *key, const char *v);
void jsonw_int(jsonw_t *w, const char *key, int64_t v);
void jsonw_real(jsonw_t *w, const char *key, double v);
void jsonw_null(jsonw_t *w, const char *key);
void jsonw_bool(jsonw_t *w, const char *key, int v);
/* The text written (NUL-terminated, caller frees) and its length; NULL after an error (the
 * buffer is freed either way). */
char *jsonw_take(jsonw_t *w, size_t *len);
void jsonw_free(jsonw_t *w);

#endif
