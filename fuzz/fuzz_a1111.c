/* fuzz_a1111.c: libFuzzer target for what an AUTOMATIC1111-compatible server answers the a1111
 * backend (src/backend/a1111_proto.c): the first input byte picks the reader, the rest is the
 * body. Built by scripts/fuzz.sh (see fuzz/README.md).
 *
 *   0: GET /sdapi/v1/sd-models;  1: GET /sdapi/v1/progress;  2: POST /sdapi/v1/txt2img.
 *
 * Invariants: no crash, no leak; models are at most A1_MAX_MODELS with NUL-terminated names;
 * progress is 0 <= step <= steps with steps > 0; an image is a PNG of at most the cap, and a
 * refused one says why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/a1111_proto.h"

#define CAP (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0: {
        a1111_model_t *m = NULL;
        int n = -1;
        if (a1111_parse_models(body, len, &m, &n) == 0) {
            if (!m || n < 0 || n > A1_MAX_MODELS)
                abort();
            for (int i = 0; i < n; i++)
                if (strnlen(m[i].title, A1_NAME_MAX) >= A1_NAME_MAX ||
                    strnlen(m[i].name, A1_NAME_MAX) >= A1_NAME_MAX)
                    abort();
        } else if (m) {
            abort();
        }
        free(m);
        break;
    }
    case 1: {
        int step = -1, steps = -1;
        if (a1111_parse_progress(body, len, 20, &step, &steps) &&
            (steps <= 0 || step < 0 || step > steps))
            abort();
        break;
    }
    default: {
        char err[300] = "";
        size_t n = 0;
        unsigned char *png = a1111_parse_image(body, len, CAP, &n, err, sizeof err);
        if (png && (n < 8 || n > CAP || memcmp(png, "\x89PNG\r\n\x1a\n", 8) != 0))
            abort();
        if (!png && !err[0])
            abort();
        free(png);
    }
    }
    return 0;
}
