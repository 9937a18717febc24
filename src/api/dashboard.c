/* dashboard.c: looks up the dashboard's compiled-in files (dashboard.h). */
#include "api/dashboard.h"

#include <string.h>

const dashboard_file_t *dashboard_find(const char *name)
{
    if (!name || !*name)
        name = "index.html";
    for (const dashboard_file_t *f = dashboard_files; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

const char *dashboard_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
    };
    const char *dot = strrchr(name && *name ? name : "index.html", '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}
