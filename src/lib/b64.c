#include "lib/b64.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>

static int b64_value(unsigned char ch, int lenient)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || (lenient && ch == '-'))
        return 62;
    if (ch == '/' || (lenient && ch == '_'))
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
        int v = b64_value(ch, lenient);
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
