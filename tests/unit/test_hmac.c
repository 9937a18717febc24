/* test_hmac.c: hmac_sha256 (lib/hmac.h) against RFC 4231's test cases and against OpenSSL's own
 * HMAC() over keys and messages of every length around SHA-256's 64-byte block, from several
 * threads at once. */
#include "t.h"

#include <openssl/hmac.h>
#include <pthread.h>

#include "lib/b64.h"
#include "lib/hmac.h"

static void check_case(const void *key, size_t klen, const char *msg, size_t mlen, const char *want)
{
    unsigned char mac[HMAC_SHA256_LEN];
    char got[2 * HMAC_SHA256_LEN + 1];
    CHECK_INT(hmac_sha256(key, klen, msg, mlen, mac), 0);
    hex_encode(mac, sizeof mac, got);
    CHECK_STR(got, want);
}

/* RFC 4231, section 4: test cases 1, 2, 3, 4, 6 and 7 (5 truncates the output). */
static void test_rfc4231(void)
{
    unsigned char k[131], d[50];
    memset(k, 0x0b, 20);
    check_case(k, 20, "Hi There", 8,
               "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    check_case("Jefe", 4, "what do ya want for nothing?", 28,
               "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    memset(k, 0xaa, 20);
    memset(d, 0xdd, 50);
    check_case(k, 20, (const char *)d, 50,
               "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    for (int i = 0; i < 25; i++)
        k[i] = (unsigned char)(i + 1);
    memset(d, 0xcd, 50);
    check_case(k, 25, (const char *)d, 50,
               "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    memset(k, 0xaa, 131);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    check_case(k, 131, m6, strlen(m6),
               "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    const char *m7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the HMAC "
                     "algorithm.";
    check_case(k, 131, m7, strlen(m7),
               "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

/* Keys of 0 to 140 bytes (shorter than, equal to and longer than the block) and messages of 0 to
 * 200 bytes give what OpenSSL's HMAC() gives. Returns the number of differences. */
static int compare_with_openssl(unsigned seed)
{
    unsigned char key[140], msg[200], a[HMAC_SHA256_LEN], b[EVP_MAX_MD_SIZE];
    int diff = 0;
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (unsigned char)(seed * 31 + i * 7);
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)(seed * 17 + i * 13);
    for (size_t kl = 0; kl <= sizeof key; kl += 1 + (kl > 70) * 9) {
        for (size_t ml = 0; ml <= sizeof msg; ml += 1 + (ml > 70) * 13) {
            unsigned int bl = 0;
            if (hmac_sha256(key, kl, msg, ml, a) != 0 ||
                !HMAC(EVP_sha256(), kl ? key : (const unsigned char *)"", (int)kl, msg, ml, b,
                      &bl) ||
                bl != HMAC_SHA256_LEN || memcmp(a, b, bl) != 0)
                diff++;
        }
    }
    return diff;
}

static void *compare_thread(void *arg)
{
    return (void *)(intptr_t)compare_with_openssl((unsigned)(intptr_t)arg);
}

static void test_same_as_openssl_from_threads(void)
{
    CHECK_INT(compare_with_openssl(1), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CHECK_INT(pthread_create(&th[i], NULL, compare_thread, (void *)(intptr_t)(i + 2)), 0);
    for (int i = 0; i < 4; i++) {
        void *diff = NULL;
        pthread_join(th[i], &diff);
        CHECK_INT((intptr_t)diff, 0);
    }
}

#define TESTS(X) X(test_rfc4231) X(test_same_as_openssl_from_threads)
#include "t_main.h"
