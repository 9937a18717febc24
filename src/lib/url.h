/* url.h: URLs read through libcurl's URL API (curl_url()), the one URL parser of pingvas:
 * REDIS_URL, AWS_ENDPOINT_URL, DATABASE_URL options, log redaction. */
#ifndef PINGVAS_URL_H
#define PINGVAS_URL_H

#include <stddef.h>

typedef struct url_parts {
    char scheme[16];    /* lower case */
    char user[128];     /* percent-decoded; "" when none */
    char password[256]; /* percent-decoded; "" when none */
    int has_password;
    char host[256];  /* an IPv6 address without its brackets; "" when none */
    int port;        /* 0 when the URL names none */
    char path[1024]; /* as written ("/" when none) */
    char query[2048];
    int has_query;
    int has_fragment;
} url_parts_t;

/* Parses url (any scheme; the host may be empty only when allow_no_host). 0, or -1 with a short
 * reason in err ("bad port", "no host", ...) that never quotes the URL (it may hold a password). */
int url_parse(const char *url, int allow_no_host, url_parts_t *out, char *err, size_t errlen);

#endif
