/* fuzz_route.c: libFuzzer target for the server's URL routing (src/route.c). The input is
 * "METHOD\nPATH" (a missing newline: GET and the whole input as the path). Built by
 * scripts/fuzz.sh (see fuzz/README.md):
 *
 *   clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_route.c \
 *       src/route.c -o fuzz_route
 *
 * Invariants: no crash; the same request routes the same way twice; a route that carries a job
 * id has a non-empty one without '/' that appears in the path; image keys and worker operations
 * point inside the path; worker routes (worker token required) come only from /internal/ paths
 * and every /internal/ path is a worker route (nothing under /internal/ skips the token check);
 * /api/ paths never route outside the API. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/route.h"

#define MAX_INPUT 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    char buf[MAX_INPUT + 8];
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *method = "GET", *url = buf;
    char *nl = memchr(buf, '\n', size);
    if (nl) {
        *nl = '\0';
        method = buf;
        url = nl + 1;
    }
    /* MHD hands the handler NUL-terminated strings: anything after a NUL is invisible. */
    route_t a, b;
    route_parse(method, url, &a);
    route_parse(method, url, &b);
    if (a.id != b.id || strcmp(a.job_id, b.job_id) != 0 || a.arg != b.arg)
        abort();
    size_t ulen = strlen(url);
    int carries = a.id == ROUTE_JOB_GET || a.id == ROUTE_JOB_CANCEL || a.id == ROUTE_WORKER_IMAGE ||
                  a.id == ROUTE_WORKER_OP;
    if (carries) {
        size_t n = strnlen(a.job_id, sizeof a.job_id);
        if (n == 0 || n >= JOB_ID_SIZE || strchr(a.job_id, '/') || !strstr(url, a.job_id))
            abort();
    } else if (a.job_id[0] != '\0') {
        abort();
    }
    if (a.arg[0] != '\0' && (a.arg < url || a.arg > url + ulen))
        abort();
    int internal = strncmp(url, "/internal/", 10) == 0;
    if (route_is_worker(a.id) != internal)
        abort();
    int api = strncmp(url, "/api/", 5) == 0;
    if (api && !(a.id >= ROUTE_CREATE && a.id <= ROUTE_API_NOT_FOUND))
        abort();
    if (a.id == ROUTE_IMAGE && strncmp(url, "/images/", 8) != 0)
        abort();
    return 0;
}
