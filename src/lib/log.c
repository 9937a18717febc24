#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

const char *log_redact_url(const char *url, char *buf, unsigned long size)
{
    snprintf(buf, size, "%s", url ? url : "");
    char *scheme = strstr(buf, "://");
    if (!scheme)
        return buf;
    char *auth = scheme + 3;
    char *at = strchr(auth, '@');
    char *slash = strchr(auth, '/');
    if (!at || (slash && slash < at))
        return buf;
    char *colon = memchr(auth, ':', (size_t)(at - auth));
    if (!colon)
        return buf;
    char rest[1024];
    snprintf(rest, sizeof rest, "%s", at);
    snprintf(colon, size - (size_t)(colon - buf), ":***%s", rest);
    return buf;
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
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n;
    if (m > 0)
        len += ((size_t)m < sizeof line - (size_t)n - 1) ? (size_t)m : sizeof line - (size_t)n - 2;
    line[len++] = '\n';
    /* One write per line so lines from several threads never interleave. */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}
