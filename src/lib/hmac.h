/* hmac.h: HMAC-SHA256 (RFC 2104) for the image keys, JWTs, webhook signatures and SigV4.
 *
 * OpenSSL 3's one-shot HMAC() looks the MAC and then the digest up by name in its provider store
 * and builds a keyed context on every call: about 33,000 instructions for a job id, three
 * quarters of them in those look-ups (callgrind). This one fetches SHA-256 once per process and
 * runs the two hashes of RFC 2104 over it, with the same result. */
#ifndef PINGVAS_HMAC_H
#define PINGVAS_HMAC_H

#include <stddef.h>

#define HMAC_SHA256_LEN 32

/* HMAC-SHA256 of msg under key (any length, 0 included) into out. 0, or -1 when OpenSSL fails
 * (out of memory, no SHA-256 provider). */
int hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                unsigned char out[HMAC_SHA256_LEN]);

#endif
