/* apierr.h: an API error as the client sees it: HTTP status and
 * {"error":{"code":...,"message":...,"field":...}}. */
#ifndef PINGVAS_APIERR_H
#define PINGVAS_APIERR_H

typedef struct api_error {
    int status;        /* 400, 401, 402, 404, 409, 413, 415, 422, 429, 503 */
    char code[40];     /* "invalid_argument", "unauthenticated", ... */
    char message[256]; /* what, where, what to do */
    char field[64];    /* offending field, "" when none */
} api_error_t;

/* Fills e; fmt is printf-style for message. Always returns -1 (for `return api_error_set(...)`). */
int api_error_set(api_error_t *e, int status, const char *code, const char *field, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));

#endif
