#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int log_threshold = LOG_INFO;
static const char *component = "pingvas";

void log_set_component(const char *name)
{
    component = name;
}

int log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* A bounded output buffer: writes stop at its end, always NUL-terminated. */
typedef struct outbuf {
    char *p;
    size_t size, len;
} outbuf_t;

static void out_bytes(outbuf_t *o, const char *s, size_t n)
{
    if (o->size == 0)
        return;
    size_t room = o->size - 1 - o->len;
    if (n > room)
        n = room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* 1 when a parameter name (query string or key=value list) names a secret. */
static int secret_param(const char *name, size_t n)
{
    static const char *words[] = {"pass", "pwd", "secret", "token", "signature", "credential"};
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= n; i++)
            if (strncasecmp(name + i, words[w], wl) == 0)
                return 1;
    }
    return 0;
}

/* Masks the password of the userinfo: everything between the first ':' after "://" and the
 * LAST '@' (a password may hold '@', '/', '?' or '#' unencoded; masking too much is safe), and
 * the value of every parameter whose name names a secret (?password=, &sslpassword=,
 * X-Amz-Signature=, "password=... " in a key=value list). */
const char *log_redact_url(const char *url, char *buf, unsigned long size)
{
    outbuf_t o = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    if (!url)
        return buf;
    const char *mask_from = NULL, *mask_to = NULL;
    const char *auth = strstr(url, "://");
    if (auth) {
        auth += 3;
        const char *at = strrchr(auth, '@');
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon) {
            mask_from = colon + 1;
            mask_to = at;
        }
    }
    for (const char *p = url; *p;) {
        if (p == mask_from) { /* once: an empty password has mask_from == mask_to */
            out_bytes(&o, "***", 3);
            p = mask_to;
            mask_from = NULL;
            continue;
        }
        int param_start = p == url || strchr("?&; ", p[-1]) != NULL;
        size_t nl = param_start ? strcspn(p, "=&?#; /@:") : 0;
        if (nl > 0 && p[nl] == '=' && secret_param(p, nl) && !(mask_from && p < mask_to)) {
            out_bytes(&o, p, nl + 1);
            out_bytes(&o, "***", 3);
            p += nl + 1;
            p += strcspn(p, "&#; ");
            continue;
        }
        out_bytes(&o, p, 1);
        p++;
    }
    return buf;
}

/* Appends s (at most max bytes; -1: all) with '"' and '\' escaped by a backslash, \n \r \t
 * written as such and every other control byte as \xHH: a value can neither end its quotes nor
 * start a line of its own. */
static void out_escaped(outbuf_t *o, const char *s, long max)
{
    static const char hex[] = "0123456789abcdef";
    if (!s)
        s = "(null)";
    for (long i = 0; s[i] && (max < 0 || i < max); i++) {
        unsigned char c = (unsigned char)s[i];
        char e[4] = {'\\', 0, 0, 0};
        size_t n = 2;
        if (c == '"' || c == '\\')
            e[1] = (char)c;
        else if (c == '\n')
            e[1] = 'n';
        else if (c == '\r')
            e[1] = 'r';
        else if (c == '\t')
            e[1] = 't';
        else if (c < 0x20 || c == 0x7f) {
            e[1] = 'x';
            e[2] = hex[c >> 4];
            e[3] = hex[c & 15];
            n = 4;
        } else {
            out_bytes(o, (const char *)&c, 1);
            continue;
        }
        out_bytes(o, e, n);
    }
}

/* Formats one conversion spec (spec: "%", flags, width, precision, length, conversion; '*' already
 * replaced) whose argument is taken from ap by its type. */
static void out_conversion(outbuf_t *o, const char *spec, char conv, const char *len, va_list *ap)
{
    char tmp[512];
    int n = 0;
    if (strchr("diouxXc", conv)) {
        int un = conv != 'd' && conv != 'i' && conv != 'c';
        if (strcmp(len, "ll") == 0)
            n = un ? snprintf(tmp, sizeof tmp, spec, va_arg(*ap, unsigned long long))
                   : snprintf(tmp, sizeof tmp, spec, va_arg(*ap, long long));
        else if (strcmp(len, "l") == 0)
            n = un ? snprintf(tmp, sizeof tmp, spec, va_arg(*ap, unsigned long))
                   : snprintf(tmp, sizeof tmp, spec, va_arg(*ap, long));
        else if (strcmp(len, "z") == 0 || strcmp(len, "j") == 0 || strcmp(len, "t") == 0)
            n = snprintf(tmp, sizeof tmp, spec, va_arg(*ap, size_t)); /* same width on Linux */
        else
            n = un ? snprintf(tmp, sizeof tmp, spec, va_arg(*ap, unsigned))
                   : snprintf(tmp, sizeof tmp, spec, va_arg(*ap, int));
    } else if (strchr("fFeEgGaA", conv)) {
        n = strcmp(len, "L") == 0 ? snprintf(tmp, sizeof tmp, spec, va_arg(*ap, long double))
                                  : snprintf(tmp, sizeof tmp, spec, va_arg(*ap, double));
    } else if (conv == 'p') {
        n = snprintf(tmp, sizeof tmp, spec, va_arg(*ap, void *));
    }
    if (n > 0)
        out_bytes(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* printf for log lines: the text of fmt is the program's and is copied as it is; every %s
 * argument is escaped (out_escaped), so data from clients, workers and the store cannot forge
 * quotes or lines. Supports flags, width and precision (also '*'), the hh/h/l/ll/z/j/t/L
 * lengths and the conversions d i o u x X c f F e E g G a A p s %. */
static void log_vformat(outbuf_t *o, const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    for (const char *p = fmt; *p;) {
        if (*p != '%') {
            size_t n = strcspn(p, "%");
            out_bytes(o, p, n);
            p += n;
            continue;
        }
        char spec[48];
        size_t sl = 0;
        long prec = -1;
        spec[sl++] = *p++;
        while (*p && strchr("-+ #0", *p) && sl < 8)
            spec[sl++] = *p++;
        if (*p == '*') {
            sl += (size_t)snprintf(spec + sl, sizeof spec - sl, "%d", va_arg(aq, int));
            p++;
        }
        while (*p >= '0' && *p <= '9' && sl < 24)
            spec[sl++] = *p++;
        if (*p == '.') {
            spec[sl++] = *p++;
            if (*p == '*') {
                prec = va_arg(aq, int);
                sl += (size_t)snprintf(spec + sl, sizeof spec - sl, "%ld", prec < 0 ? 0 : prec);
                p++;
            } else {
                prec = 0;
                for (; *p >= '0' && *p <= '9' && sl < 36; p++) {
                    prec = prec * 10 + (*p - '0');
                    spec[sl++] = *p;
                }
            }
        }
        char len[3] = "";
        size_t ll = 0;
        while (*p && strchr("hlzjtL", *p) && ll < 2)
            len[ll++] = *p++;
        len[ll] = '\0';
        char conv = *p ? *p++ : '\0';
        memcpy(spec + sl, len, ll);
        spec[sl + ll] = conv;
        spec[sl + ll + 1] = '\0';
        if (conv == '%')
            out_bytes(o, "%", 1);
        else if (conv == 's')
            out_escaped(o, va_arg(aq, const char *), prec);
        else if (conv)
            out_conversion(o, spec, conv, len, &aq);
    }
    va_end(aq);
}

void log_format(char *buf, size_t size, const char *fmt, ...)
{
    outbuf_t o = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    log_vformat(&o, fmt, ap);
    va_end(ap);
}

void log_write(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s pid=%d ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, names[level], component, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    outbuf_t o = {line, sizeof line - 1, (size_t)n}; /* one byte kept for the newline */
    va_list ap;
    va_start(ap, fmt);
    log_vformat(&o, fmt, ap);
    va_end(ap);
    size_t len = o.len;
    line[len++] = '\n';
    /* One write per line so lines from several threads never interleave. */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}
