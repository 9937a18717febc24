/* log.h: one line per event, key=value, to stderr. Levels below the threshold cost one compare. */
#ifndef PINGVAS_LOG_H
#define PINGVAS_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

extern int log_threshold;

/* Sets the component name printed on every line ("server", "worker", ...). Not thread safe;
 * call once at start. */
void log_set_component(const char *name);
/* Parses "debug|info|warn|error|off"; returns -1 for anything else. */
int log_level_parse(const char *s);
/* Copies url into buf (truncated to size) with every password replaced by "***", for logs and
 * messages: the userinfo's ("scheme://user:secret@host", also with '@' or '/' in the secret) and
 * the value of any parameter named like a secret ("?password=", "&sslpassword=", "token=",
 * "X-Amz-Signature=", and "password=..." in a key=value list). Returns buf. */
const char *log_redact_url(const char *url, char *buf, unsigned long size);
/* Formats like snprintf, as log lines are: every %s argument is escaped ('"' and '\' with a
 * backslash, \n \r \t, other control bytes as \xHH), the format's own text is not. */
void log_format(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG(level, ...)                                                                            \
    do {                                                                                           \
        if ((level) >= log_threshold)                                                              \
            log_write((level), __VA_ARGS__);                                                       \
    } while (0)
#define log_debug(...) LOG(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) LOG(LOG_INFO, __VA_ARGS__)
#define log_warn(...) LOG(LOG_WARN, __VA_ARGS__)
#define log_error(...) LOG(LOG_ERROR, __VA_ARGS__)

#endif
