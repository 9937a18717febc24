/* png_write.h: encodes an 8-bit RGB image as PNG into memory, one row at a time, so a large image
 * never needs a full frame buffer. Text chunks ride along (tEXt, or iTXt when not ASCII). */
#ifndef PINGVAS_PNG_WRITE_H
#define PINGVAS_PNG_WRITE_H

#include <stddef.h>

/* Largest PNG png_write_rgb produces unless the caller passes a smaller cap: 64 MiB. A 4096x4096
 * RGB image is 48 MiB raw, so every image the backends accept fits even if incompressible. */
#define PNG_WRITE_MAX ((size_t)64 << 20)

typedef struct png_write_text {
    const char *key;  /* 1..79 Latin-1 characters */
    const char *text; /* any NUL-terminated text; UTF-8 goes into an iTXt chunk */
} png_write_text_t;

/* Fills row y (0..height-1) with width*3 bytes of RGB. */
typedef void (*png_write_row_fn)(void *ctx, int y, unsigned char *row);

/* Encodes a width x height RGB image whose rows come from row_fn. On success returns 0 and
 * *out_png holds a malloc'd buffer of *out_len bytes that the caller frees. On failure (bad size,
 * allocation failure, output above cap) returns -1, leaves *out_png NULL and writes err. */
int png_write_rgb(int width, int height, png_write_row_fn row_fn, void *ctx,
                  const png_write_text_t *texts, int ntexts, size_t cap, unsigned char **out_png,
                  size_t *out_len, char *err, size_t errlen);

#endif
