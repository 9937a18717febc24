#include "core/apierr.h"

#include <stdarg.h>
#include <stdio.h>

int api_error_set(api_error_t *e, int status, const char *code, const char *field, const char *fmt,
                  ...)
{
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}
