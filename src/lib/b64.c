/* b64.c: the base64 codecs of b64.h (one alphabet table for both), and its hex encoder. */
#include "lib/b64.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { STD = 1, URL = 2 }; /* the alphabets a decoder accepts */

/* Value of one base64 character in the accepted alphabets, or -1. */
static int b64_value(unsigned char ch, int alphabets)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if ((ch == '+' && (alphabets & STD)) || (ch == '-' && (alphabets & URL)))
        return 62;
    if ((ch == '/' && (alphabets & STD)) || (ch == '_' && (alphabets & URL)))
        return 63;
    return -1;
}

unsigned char *b64_decode(const char *s, size_t len, int flags, size_t max, size_t *outlen)
{
    int lenient = (flags & B64_LENIENT) != 0;
    if (len / 4 * 3 > max + 3)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 4);
    if (!out)
        return NULL;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (lenient && isspace(ch))
            continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        int v = b64_value(ch, lenient ? STD | URL : STD);
        if (v < 0 || pad)
            goto bad; /* a bad character, or data after the padding */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits: 0 (complete), 2 or 4 (a padded or unpadded tail); 6 is impossible. */
    if (bits >= 6 || pad > 2 || n > max)
        goto bad;
    out[n] = '\0';
    *outlen = n;
    return out;
bad:
    free(out);
    return NULL;
}

/* ---- base64url (RFC 4648 section 5), strict: JWTs ---- */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Returns a malloc'd NUL-terminated string; the caller frees it. NULL on allocation failure. */
char *b64url_encode(const unsigned char *data, size_t len)
{
    if (!data && len > 0)
        return NULL;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    size_t out_len = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
    char *out = malloc(out_len + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return out;
}

/* Strict decoder: no padding, no whitespace, no characters outside the alphabet, no length
 * of 1 mod 4, and the unused low bits of the last character must be zero (so every byte
 * string has exactly one accepted encoding). Returns a malloc'd buffer, NUL-terminated, that
 * the caller frees; *out_len (when out_len is not NULL) excludes the NUL. NULL when invalid. */
unsigned char *b64url_decode(const char *s, size_t len, size_t *out_len)
{
    if (!s && len > 0)
        return NULL;
    if (len % 4 == 1)
        return NULL;
    size_t n = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    unsigned char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i], URL);
        if (v < 0)
            goto bad;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    /* Leftover bits (2 or 4) must be zero for a canonical encoding. */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        goto bad;
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return out;
bad:
    free(out);
    return NULL;
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}
