/* test_b64.c: the standard base64 decoder shared by the Celery bridge and the a1111 backend. */
#include <stdlib.h>

#include "lib/b64.h"
#include "t.h"

static void check_decode(const char *in, int flags, size_t max, const char *want)
{
    size_t n = 0;
    unsigned char *out = b64_decode(in, strlen(in), flags, max, &n);
    if (!want) {
        if (out)
            fprintf(stderr, "accepted \"%s\"\n", in);
        CHECK(out == NULL);
        free(out);
        return;
    }
    CHECK(out != NULL);
    if (out) {
        CHECK_INT(n, strlen(want));
        CHECK_STR((const char *)out, want);
    }
    free(out);
}

static void test_rfc4648_vectors(void)
{
    const char *v[][2] = {{"", ""},
                          {"Zg==", "f"},
                          {"Zm8=", "fo"},
                          {"Zm9v", "foo"},
                          {"Zm9vYg==", "foob"},
                          {"Zm9vYmE=", "fooba"},
                          {"Zm9vYmFy", "foobar"},
                          {"Zm9vYg", "foob"},
                          {"Zm8", "fo"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        check_decode(v[i][0], 0, 1024, v[i][1]);
        check_decode(v[i][0], B64_LENIENT, 1024, v[i][1]);
    }
}

static void test_strict_and_lenient(void)
{
    check_decode("Zm9v\nYmFy", 0, 1024, NULL);
    check_decode("Zm9v\nYmFy", B64_LENIENT, 1024, "foobar");
    check_decode("-_8=", 0, 1024, NULL);
    size_t n;
    unsigned char *out = b64_decode("-_8=", 4, B64_LENIENT, 16, &n);
    CHECK(out != NULL && n == 2 && out[0] == 0xfb && out[1] == 0xff);
    free(out);
}

static void test_rejects(void)
{
    const char *bad[] = {"Z", "Zm9vY", "Zg=a", "Zg===", "Zm9v!", "Zg==Zg==", "@@@@"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        check_decode(bad[i], 0, 1024, NULL);
        check_decode(bad[i], B64_LENIENT, 1024, NULL);
    }
    check_decode("Zm9vYmFy", 0, 5, NULL); /* 6 bytes over a cap of 5 */
    check_decode("Zm9vYmFy", 0, 6, "foobar");
}

/* hex_encode: two lowercase digits a byte, high nibble first, then a NUL; nothing for none. */
static void test_hex_encode(void)
{
    const unsigned char in[] = {0x00, 0x0f, 0xa5, 0xff, 0x10};
    char out[2 * sizeof in + 1];
    memset(out, 'x', sizeof out);
    hex_encode(in, sizeof in, out);
    CHECK_STR(out, "000fa5ff10");
    hex_encode(in, 0, out);
    CHECK_STR(out, "");
}

#define TESTS(X)                                                                                   \
    X(test_rfc4648_vectors) X(test_strict_and_lenient) X(test_rejects) X(test_hex_encode)
#include "t_main.h"
