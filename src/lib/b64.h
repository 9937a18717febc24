/* b64.h: standard base64 decoding (RFC 4648 section 4) for message bodies and images. JWTs use
 * the strict base64url codec in jwt.h instead. */
#ifndef PINGVAS_B64_H
#define PINGVAS_B64_H

#include <stddef.h>

enum {
    B64_LENIENT = 1, /* also accept the URL-safe alphabet (-_) and ignore white space */
};

/* Decodes len bytes of base64 ('=' padding optional). Returns a malloc'd, NUL-terminated buffer
 * (caller frees) with its length in *outlen, or NULL when the text is malformed, decodes to more
 * than max bytes, or memory runs out. */
unsigned char *b64_decode(const char *s, size_t len, int flags, size_t max, size_t *outlen);

#endif
