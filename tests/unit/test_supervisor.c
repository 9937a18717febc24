/* test_supervisor.c: supervisor_new under allocation failure. strdup is replaced in this binary
 * (the static core library links to it) so that the Nth copy fails. */
#include <stdlib.h>

#include "scale/supervisor.h"
#include "t.h"

static int strdup_fail_at = -1; /* the strdup call (0-based) that returns NULL; -1: none */
static int strdup_calls;

char *strdup(const char *s)
{
    if (strdup_calls++ == strdup_fail_at)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void test_argv_copy_failure_is_an_error(void)
{
    static const char *const args[] = {"--backend", "synthetic", "--time-scale", "0", NULL};
    int gpus[1] = {0};
    for (int fail = 0; fail < 4; fail++) {
        strdup_calls = 0;
        strdup_fail_at = fail;
        supervisor_t *s = supervisor_new("/bin/true", "http://127.0.0.1:1", "t", args, gpus, 0);
        if (s)
            fprintf(stderr, "strdup %d failed and the supervisor was made anyway\n", fail);
        CHECK(s == NULL); /* never a worker started with its argv cut short */
        supervisor_free(s);
    }
    strdup_fail_at = -1;
    supervisor_t *s = supervisor_new("/bin/true", "http://127.0.0.1:1", "t", args, gpus, 0);
    CHECK(s != NULL);
    supervisor_free(s);
}

#define TESTS(X) X(test_argv_copy_failure_is_an_error)
#include "t_main.h"
