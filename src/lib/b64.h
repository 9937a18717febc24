/* b64.h: bytes as text: base64 (RFC 4648), the standard alphabet's decoder for message bodies
 * and images and the strict base64url codec of JWTs; and lowercase hex. */
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

/* base64url without padding. Encode returns a malloc'd NUL-terminated string (NULL when out of
 * memory). Decode is strict: no padding, no white space, nothing outside the alphabet, no length
 * of 1 mod 4, and the unused low bits of the last character zero (so every byte string has one
 * accepted encoding); it returns a malloc'd buffer (NUL-terminated, *out_len excludes it) or NULL
 * for invalid input. */
char *b64url_encode(const unsigned char *data, size_t len);
unsigned char *b64url_decode(const char *s, size_t len, size_t *out_len);

/* The n bytes of in as 2n lowercase hex digits and a NUL, into out (2n + 1 bytes). */
void hex_encode(const unsigned char *in, size_t n, char *out);

#endif
