/* fuzz_celery.c: libFuzzer target for the Celery envelope parser (celery_parse) and the result
 * formatter fed with what it parsed.
 *
 *   scripts/fuzz.sh 60 celery     (builds build-fuzz/celery/fuzz_celery and runs it), or by hand:
 *   clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_celery.c \
 *       src/bridge/celery.c src/core/job.c src/lib/b64.c src/lib/clock.c src/lib/log.c \
 *       -ljansson -lcrypto -lm -o fuzz_celery && ./fuzz_celery fuzz/corpus/celery
 *   (built without -DPINGVAS_HAVE_HIREDIS: the parser and formatters only, no Redis)
 *
 * Invariants: no crash, no leak, no read past size; a parsed message names the task, a task id
 * and a job id within their caps; a reject has a reason, an exception type and a message; a
 * FAILURE result can be written for any task id the parser kept, and it is valid JSON. The same
 * input as a remote-control message (celery_parse_revoke): a revoke holds n safe task ids. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/celery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    celery_msg_t m;
    celery_reject_t rej;
    int rc = celery_parse((const char *)data, size, &m, &rej);
    if (rc == 0) {
        if (strcmp(m.task, CELERY_TASK_NAME) != 0 || !m.task_id[0] || !m.job_id[0] ||
            strlen(m.job_id) >= JOB_ID_SIZE || (m.protocol != 1 && m.protocol != 2))
            abort();
    } else if (rc == -1) {
        if (!rej.reason || !rej.exc_type || !rej.exc_module || !rej.message[0])
            abort();
    } else {
        abort();
    }
    if (strlen(m.task_id) > CELERY_ID_MAX || m.priority < 0 || m.priority > 255)
        abort();
    if (m.task_id[0]) {
        char *s = rc == 0 ? celery_result_success(m.task_id, "https://cdn.example/x.png", 1)
                          : celery_result_exception("FAILURE", m.task_id, rej.exc_type,
                                                    rej.exc_module, rej.message, 1);
        json_t *j = s ? json_loads(s, 0, NULL) : NULL;
        if (!j)
            abort();
        json_decref(j);
        free(s);
    }
    celery_revoke_t rv;
    rc = celery_parse_revoke((const char *)data, size, &rv);
    if (rc == 1) {
        if (rv.n < 1 || !rv.task_ids)
            abort();
        for (int i = 0; i < rv.n; i++)
            if (!rv.task_ids[i][0] || strlen(rv.task_ids[i]) > CELERY_ID_MAX ||
                strpbrk(rv.task_ids[i], "\" "))
                abort();
    } else if (rc < -1 || rc > 1 || rv.task_ids || rv.n) {
        abort();
    }
    celery_revoke_free(&rv);
    return 0;
}
