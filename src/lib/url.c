/* url.c: url.h over curl_url(). */
#include "lib/url.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies a part into buf (size); "" when the URL has none. 0, -1 when it does not fit or the
 * part is malformed, 1 when absent. */
static int get_part(CURLU *u, CURLUPart what, unsigned flags, char *buf, size_t size)
{
    char *v = NULL;
    CURLUcode rc = curl_url_get(u, what, &v, flags);
    buf[0] = '\0';
    if (rc != CURLUE_OK) {
        curl_free(v);
        return rc == CURLUE_NO_USER || rc == CURLUE_NO_PASSWORD || rc == CURLUE_NO_HOST ||
                       rc == CURLUE_NO_PORT || rc == CURLUE_NO_QUERY || rc == CURLUE_NO_FRAGMENT
                   ? 1
                   : -1;
    }
    size_t n = strlen(v);
    int fits = n < size && memchr(v, '\0', n) == NULL;
    if (fits)
        memcpy(buf, v, n + 1);
    curl_free(v);
    return fits ? 0 : -1;
}

static const char *why(CURLUcode rc)
{
    switch (rc) {
    case CURLUE_BAD_PORT_NUMBER:
        return "bad port";
    case CURLUE_NO_HOST:
    case CURLUE_NO_SCHEME:
        return "not scheme://host...";
    default:
        return curl_url_strerror(rc);
    }
}

/* The parts after a successful parse. */
static int fill(CURLU *u, int allow_no_host, url_parts_t *out, char *err, size_t errlen)
{
    char port[16];
    int rc = get_part(u, CURLUPART_SCHEME, 0, out->scheme, sizeof out->scheme);
    int ru = get_part(u, CURLUPART_USER, CURLU_URLDECODE, out->user, sizeof out->user);
    int rp = get_part(u, CURLUPART_PASSWORD, CURLU_URLDECODE, out->password, sizeof out->password);
    int rh = get_part(u, CURLUPART_HOST, 0, out->host, sizeof out->host);
    int rn = get_part(u, CURLUPART_PORT, 0, port, sizeof port);
    int rq = get_part(u, CURLUPART_QUERY, 0, out->query, sizeof out->query);
    char frag[8];
    out->has_fragment = get_part(u, CURLUPART_FRAGMENT, 0, frag, sizeof frag) != 1;
    if (rc || ru < 0 || rp < 0 || rh < 0 || rn < 0 || rq < 0 ||
        get_part(u, CURLUPART_PATH, 0, out->path, sizeof out->path) != 0) {
        snprintf(err, errlen, "a part is too long or malformed");
        return -1;
    }
    out->has_password = rp == 0;
    out->has_query = rq == 0;
    size_t hl = strlen(out->host);
    if (hl >= 2 && out->host[0] == '[' && out->host[hl - 1] == ']') {
        memmove(out->host, out->host + 1, hl - 2);
        out->host[hl - 2] = '\0';
    }
    if (!out->host[0] && !allow_no_host) {
        snprintf(err, errlen, "no host");
        return -1;
    }
    out->port = rn == 0 ? atoi(port) : 0;
    if (rn == 0 && (out->port < 1 || out->port > 65535)) {
        snprintf(err, errlen, "bad port");
        return -1;
    }
    return 0;
}

int url_parse(const char *url, int allow_no_host, url_parts_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    CURLU *u = curl_url();
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    unsigned flags = CURLU_NON_SUPPORT_SCHEME | (allow_no_host ? CURLU_NO_AUTHORITY : 0);
    /* libcurl reads "scheme:///x" as host x; an empty authority is "no host" here */
    const char *auth = url ? strstr(url, "://") : NULL;
    CURLUcode rc = !url ? CURLUE_MALFORMED_INPUT
                   : auth && auth[3] == '/' && !allow_no_host
                       ? CURLUE_NO_HOST
                       : curl_url_set(u, CURLUPART_URL, url, flags);
    int ok = rc == CURLUE_OK ? fill(u, allow_no_host, out, err, errlen) : -1;
    if (rc != CURLUE_OK)
        snprintf(err, errlen, "%s", why(rc));
    curl_url_cleanup(u);
    return ok;
}
