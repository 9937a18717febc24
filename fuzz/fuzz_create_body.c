/* fuzz_create_body.c: libFuzzer target for validate_create_body.
 *
 *   clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_create_body.c \
 *       src/validate.c src/apierr.c src/job.c src/clock.c src/log.c -ljansson -lcrypto -lm \
 *       -o fuzz_create_body && ./fuzz_create_body -dict=... corpus/
 *
 * Invariants: no crash, no leak; an accepted body is within every documented bound; a refused
 * one carries a 4xx status, a code, and a message that is valid UTF-8 (it is sent as JSON). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const models[] = {"sd15", "sdxl", NULL};
    const validate_config_t cfg = {models, "sd15"};
    job_params_t p;
    api_error_t e;
    if (validate_create_body((const char *)data, size, &cfg, &p, &e) == 0) {
        if (!p.prompt || !p.negative_prompt || p.prompt[0] == '\0')
            abort();
        if (p.width < 64 || p.width > 2048 || p.width % 8 || p.height < 64 || p.height > 2048 ||
            p.height % 8 || p.steps < 1 || p.steps > 150 || !(p.cfg_scale >= 1.0) ||
            !(p.cfg_scale <= 30.0) || p.seed < -1 || p.seed > 4294967295LL)
            abort();
        if (strcmp(p.model, "sd15") != 0 && strcmp(p.model, "sdxl") != 0)
            abort();
        job_params_clear(&p);
    } else {
        if (e.status < 400 || e.status > 499 || e.code[0] == '\0' || e.message[0] == '\0')
            abort();
        if (p.prompt || p.negative_prompt)
            abort();
        json_t *m = json_string(e.message), *f = json_string(e.field);
        if (!m || !f)
            abort();
        json_decref(m);
        json_decref(f);
    }
    return 0;
}
