/* jsonw.c: see jsonw.h. */
#include "lib/jsonw.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for n more bytes (and the NUL jsonw_take writes); 0 or -1 with err set. */
static int reserve(jsonw_t *w, size_t n)
{
    if (w->err)
        return -1;
    if (w->len + n + 1 <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 512;
    while (cap < w->len + n + 1)
        cap *= 2;
    char *nb = cap <= JSONW_MAX ? realloc(w->buf, cap) : NULL;
    if (!nb) {
        w->err = 1;
        return -1;
    }
    w->buf = nb;
    w->cap = cap;
    return 0;
}

/* Appends n bytes that reserve made room for. */
static inline void append(jsonw_t *w, const char *s, size_t n)
{
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void put(jsonw_t *w, const char *s, size_t n)
{
    if (reserve(w, n) == 0)
        append(w, s, n);
}

/* 1 for the bytes a JSON string escapes: '"', '\\' and the control characters. */
static const unsigned char needs_escape[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1,
    [0x07] = 1, [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1,
    [0x0e] = 1, [0x0f] = 1, [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1,
    [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1,
    [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, ['"'] = 1,  ['\\'] = 1};

/* The length of s and whether any of its bytes needs escaping (*plain 1: none does). */
static size_t scan(const char *s, int *plain)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char any = 0;
    for (; *p; p++)
        any |= needs_escape[*p];
    *plain = !any;
    return (size_t)(p - (const unsigned char *)s);
}

/* The escape of c (a byte needs_escape marks) into esc; returns its length. */
static size_t escape(unsigned char c, char esc[6])
{
    static const char hex[] = "0123456789ABCDEF"; /* as jansson writes \u001F */
    /* the characters with a two-character escape, and the letter after the backslash */
    static const char two[256] = {['"'] = '"',  ['\\'] = '\\', ['\b'] = 'b', ['\f'] = 'f',
                                  ['\n'] = 'n', ['\r'] = 'r',  ['\t'] = 't'};
    esc[0] = '\\';
    if (two[c]) {
        esc[1] = two[c];
        return 2;
    }
    memcpy(esc + 1, "u00", 3);
    esc[4] = hex[c >> 4];
    esc[5] = hex[c & 15];
    return 6;
}

/* s (len bytes, some needing escapes) as a JSON string. */
static void put_escaped(jsonw_t *w, const char *s, size_t len)
{
    put(w, "\"", 1);
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s; p < (const unsigned char *)s + len;
         p++) {
        if (!needs_escape[*p])
            continue;
        char esc[6];
        put(w, run, (size_t)((const char *)p - run));
        put(w, esc, escape(*p, esc));
        run = (const char *)p + 1;
    }
    put(w, run, (size_t)(s + len - run));
    put(w, "\"", 1);
}

/* s as a JSON string: '"', '\\' and control characters escaped, everything else as is (valid
 * UTF-8 stays UTF-8, as jansson writes it without JSON_ENSURE_ASCII), after the prefix of
 * prefix_len bytes (a member's comma, or nothing). A string with nothing to escape (nearly all)
 * is one copy. */
static void put_string(jsonw_t *w, const char *prefix, size_t prefix_len, const char *s)
{
    int plain;
    size_t len = scan(s, &plain);
    if (!plain) {
        put(w, prefix, prefix_len);
        put_escaped(w, s, len);
        return;
    }
    if (reserve(w, prefix_len + len + 2) != 0)
        return;
    append(w, prefix, prefix_len);
    w->buf[w->len++] = '"';
    append(w, s, len);
    w->buf[w->len++] = '"';
}

/* The comma before a member (not before the first of its object) and its key. */
static void member(jsonw_t *w, const char *key)
{
    int comma = 0;
    if (w->depth > 0) {
        comma = !w->first[w->depth - 1];
        w->first[w->depth - 1] = 0;
    }
    if (!key) {
        if (comma)
            put(w, ",", 1);
        return;
    }
    put_string(w, ",", (size_t)comma, key);
    put(w, ":", 1);
}

void jsonw_open_key(jsonw_t *w, const char *key)
{
    if (w->depth >= JSONW_DEPTH) {
        w->err = 1;
        return;
    }
    member(w, key);
    put(w, "{", 1);
    w->first[w->depth++] = 1;
}

void jsonw_close(jsonw_t *w)
{
    if (w->depth > 0)
        w->depth--;
    put(w, "}", 1);
}

void jsonw_str(jsonw_t *w, const char *key, const char *v)
{
    member(w, key);
    if (v)
        put_string(w, "", 0, v);
    else
        put(w, "null", 4);
}

/* v in decimal, ending at end (no NUL); returns where it starts (at most 20 bytes before). */
static char *format_int(char *end, int64_t v)
{
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--end = '-';
    return end;
}

void jsonw_int(jsonw_t *w, const char *key, int64_t v)
{
    char num[24], *p = format_int(num + sizeof num, v);
    member(w, key);
    put(w, p, (size_t)(num + sizeof num - p));
}

/* jansson's real: "%.17g", ".0" after a whole number, the exponent without '+' and leading
 * zeros ("1e+20" is "1e20", "1e-07" is "1e-7"). */
void jsonw_real(jsonw_t *w, const char *key, double v)
{
    /* a whole number below 10^15 (not -0): its digits and ".0", which is what "%.17g" gives */
    if (fabs(v) < 1e15 && v == (double)(int64_t)v && !(v == 0 && signbit(v))) {
        char whole[28], *p = format_int(whole + sizeof whole - 2, (int64_t)v);
        memcpy(whole + sizeof whole - 2, ".0", 2);
        member(w, key);
        put(w, p, (size_t)(whole + sizeof whole - p));
        return;
    }
    char num[40];
    int n = snprintf(num, sizeof num, "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof num - 2) {
        w->err = 1;
        return;
    }
    if (!strchr(num, '.') && !strchr(num, 'e') && !strchr(num, 'n') && !strchr(num, 'i'))
        memcpy(num + n, ".0", 3);
    char *e = strchr(num, 'e');
    if (e) {
        char *from = e + 1, *to = e + 1;
        if (*from == '+')
            from++;
        else if (*from == '-')
            from++, to++;
        while (*from == '0' && from[1])
            from++;
        memmove(to, from, strlen(from) + 1);
    }
    member(w, key);
    put(w, num, strlen(num));
}

void jsonw_null(jsonw_t *w, const char *key)
{
    member(w, key);
    put(w, "null", 4);
}

void jsonw_bool(jsonw_t *w, const char *key, int v)
{
    member(w, key);
    if (v)
        put(w, "true", 4);
    else
        put(w, "false", 5);
}

char *jsonw_take(jsonw_t *w, size_t *len)
{
    if (!w->err && w->buf)
        w->buf[w->len] = '\0'; /* reserve kept room for it */
    char *text = w->err || !w->buf ? NULL : w->buf;
    if (!text)
        free(w->buf);
    if (len)
        *len = text ? w->len : 0;
    *w = (jsonw_t){0};
    return text;
}

void jsonw_free(jsonw_t *w)
{
    free(w->buf);
    *w = (jsonw_t){0};
}
