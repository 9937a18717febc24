/* fuzz_url.c: libFuzzer target for the URLs pingvas reads from its configuration (src/lib/url.c
 * over libcurl's curl_url(); REDIS_URL, AWS_ENDPOINT_URL) and the log redaction of URLs
 * (src/lib/log.c). Built by scripts/fuzz.sh (see fuzz/README.md).
 *
 * Invariants: no crash, no leak; an accepted URL has a scheme, a port of 1..65535 or none, and a
 * host unless it may lack one; every part is NUL-terminated within its field; the redaction of a
 * URL with a password never shows that password. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/log.h"
#include "lib/url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        abort();
    memcpy(url, data, size);
    url[size] = '\0';
    url_parts_t u;
    char err[128], shown[4096];
    for (int no_host = 0; no_host < 2; no_host++) {
        if (url_parse(url, no_host, &u, err, sizeof err) != 0) {
            if (strnlen(err, sizeof err) == 0)
                abort(); /* a refusal says why */
            continue;
        }
        if (!u.scheme[0] || u.port < 0 || u.port > 65535 || (!no_host && !u.host[0]))
            abort();
        if (strnlen(u.host, sizeof u.host) >= sizeof u.host ||
            strnlen(u.path, sizeof u.path) >= sizeof u.path)
            abort();
    }
    log_redact_url(url, shown, sizeof shown);
    if (strnlen(shown, sizeof shown) >= sizeof shown)
        abort();
    /* scheme://user:password@host...: a password of at least 8 characters, spelled as written
     * and found nowhere else in the URL, is never shown */
    int ok = url_parse(url, 0, &u, err, sizeof err) == 0;
    size_t sl = strlen(u.scheme);
    if (ok && strlen(u.password) >= 8 && !strchr(u.password, '%') && strlen(url) < sizeof shown &&
        strchr(url, '@') && strchr(url, '@') == strrchr(url, '@') &&
        strncasecmp(url, u.scheme, sl) == 0 && strncmp(url + sl, "://", 3) == 0) {
        /* the password must stand, written as it decodes, between the userinfo's ':' and the
         * '@', and nowhere else in the URL (a percent-encoded one may decode to text written
         * plainly in the user name, host or path: that is not a leak) */
        const char *at = strchr(url, '@'), *colon = strchr(url + sl + 3, ':');
        size_t pl = strlen(u.password);
        const char *first = strstr(url, u.password);
        if (colon && colon < at && colon + 1 + pl == at && first == colon + 1 &&
            !strstr(first + 1, u.password) && strstr(shown, u.password))
            abort();
    }
    free(url);
    return 0;
}
