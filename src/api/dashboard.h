/* dashboard.h: the browser dashboard's static files (web/dashboard/), compiled into the binary
 * by cmake/embed.cmake and served at / and /dashboard/FILE. */
#ifndef PINGVAS_DASHBOARD_H
#define PINGVAS_DASHBOARD_H

#include <stddef.h>

typedef struct dashboard_file {
    const char *name; /* "index.html", "app.js", ... */
    const unsigned char *data;
    size_t len;
} dashboard_file_t;

/* The files, ended by a row whose name is NULL (generated at build time). */
extern const dashboard_file_t dashboard_files[];

/* The file of a request path's tail ("" is index.html), or NULL. */
const dashboard_file_t *dashboard_find(const char *name);
/* The Content-Type of a file by its extension. */
const char *dashboard_content_type(const char *name);

#endif
