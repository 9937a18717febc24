/* hmac.c: HMAC-SHA256 over one SHA-256 fetched per process (see hmac.h). */
#include "lib/hmac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#define BLOCK 64 /* SHA-256's block: the key is padded (or first hashed) to it */

static EVP_MD *sha256; /* fetched once; OpenSSL's fetched methods may be shared by threads */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* SHA-256 of (k0 ^ pad) || a into out, in ctx. */
static int hash_padded(EVP_MD_CTX *ctx, const unsigned char k0[BLOCK], unsigned char pad,
                       const void *a, size_t alen, unsigned char out[HMAC_SHA256_LEN])
{
    unsigned char block[BLOCK];
    for (int i = 0; i < BLOCK; i++)
        block[i] = k0[i] ^ pad;
    int ok = EVP_DigestInit_ex(ctx, sha256, NULL) && EVP_DigestUpdate(ctx, block, BLOCK) &&
             EVP_DigestUpdate(ctx, a, alen) && EVP_DigestFinal_ex(ctx, out, NULL);
    OPENSSL_cleanse(block, sizeof block);
    return ok ? 0 : -1;
}

int hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                unsigned char out[HMAC_SHA256_LEN])
{
    pthread_once(&sha256_once, fetch_sha256);
    if (!sha256)
        return -1;
    unsigned char k0[BLOCK] = {0}, inner[HMAC_SHA256_LEN];
    int rc = 0;
    if (klen > BLOCK)
        rc = EVP_Digest(key, klen, k0, NULL, sha256, NULL) ? 0 : -1;
    else if (klen)
        memcpy(k0, key, klen);
    EVP_MD_CTX *ctx = rc == 0 ? EVP_MD_CTX_new() : NULL;
    if (!ctx)
        rc = -1;
    if (rc == 0)
        rc = hash_padded(ctx, k0, 0x36, msg, mlen, inner);
    if (rc == 0)
        rc = hash_padded(ctx, k0, 0x5c, inner, sizeof inner, out);
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(k0, sizeof k0);
    OPENSSL_cleanse(inner, sizeof inner);
    return rc;
}
