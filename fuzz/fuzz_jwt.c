/* fuzz_jwt.c: libFuzzer target for jwt_verify_hs256 and the base64url decoder.
 *
 *   clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_jwt.c \
 *       src/lib/jwt.c src/lib/hmac.c src/lib/b64.c -ljansson -lcrypto -o fuzz_jwt && ./fuzz_jwt
 *
 * (scripts/fuzz.sh jwt builds and runs it the same way.)
 *
 * Invariants: no crash, no leak; a token accepted under the fixed key yields a non-empty
 * subject; decoding then re-encoding base64url gives back the input (canonical encoding). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jwt.h"

static const char key[] = "fuzz-secret";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char sub[65];
    int rc = jwt_verify_hs256((const char *)data, size, key, sizeof key - 1, 1700000000, sub,
                              sizeof sub);
    if (rc == JWT_OK && (sub[0] == '\0' || strlen(sub) >= sizeof sub))
        abort();
    if (jwt_strerror(rc) == NULL)
        abort();

    size_t n = 0;
    unsigned char *d = b64url_decode((const char *)data, size, &n);
    if (d) {
        char *e = b64url_encode(d, n);
        if (!e || strlen(e) != size || memcmp(e, data, size) != 0)
            abort();
        free(e);
        free(d);
    }
    return 0;
}
