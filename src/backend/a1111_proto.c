/* a1111_proto.c: the readers of a1111_proto.h. */
#include "backend/a1111_proto.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/b64.h"

int a1111_parse_models(const char *body, size_t len, a1111_model_t **models, int *n)
{
    json_t *arr = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
    *models = NULL;
    *n = 0;
    if (!json_is_array(arr)) {
        json_decref(arr);
        return -1;
    }
    size_t count = json_array_size(arr);
    if (count > A1_MAX_MODELS)
        count = A1_MAX_MODELS;
    a1111_model_t *v = calloc(count ? count : 1, sizeof *v);
    if (!v) {
        json_decref(arr);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        json_t *m = json_array_get(arr, i);
        const char *title = json_string_value(json_object_get(m, "title"));
        const char *name = json_string_value(json_object_get(m, "model_name"));
        if (!title && !name)
            continue;
        a1111_model_t *dst = &v[(*n)++];
        snprintf(dst->title, sizeof dst->title, "%s", title ? title : "");
        snprintf(dst->name, sizeof dst->name, "%s", name ? name : "");
    }
    json_decref(arr);
    *models = v;
    return 0;
}

int a1111_parse_progress(const char *body, size_t len, int job_steps, int *step, int *steps)
{
    json_t *o = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
    json_t *st = json_object_get(o, "state");
    json_t *sv = json_object_get(st, "sampling_step"), *nv = json_object_get(st, "sampling_steps");
    json_t *jobs = json_object_get(st, "job_count"), *frac = json_object_get(o, "progress");
    int running = !json_is_integer(jobs) || json_integer_value(jobs) > 0, got = 0;
    json_int_t s = json_integer_value(sv), n = json_integer_value(nv);
    double f = json_number_value(frac);
    if (running && json_is_integer(sv) && json_is_integer(nv) && n > 0 && n <= 100000) {
        *steps = (int)n;
        *step = s < 0 ? 0 : s > n ? (int)n : (int)s;
        got = 1;
    } else if (running && json_is_number(frac) && f > 0 && job_steps > 0) {
        *steps = job_steps;
        *step = f >= 1 ? job_steps : (int)(f * job_steps);
        got = 1;
    }
    json_decref(o);
    return got;
}

/* The image text: standard or URL-safe base64, white space and padding optional, after an
 * optional "data:...;base64," prefix. */
static unsigned char *image_decode(const char *s, size_t len, size_t max, size_t *outlen, char *err,
                                   size_t errlen)
{
    if (len > 5 && strncmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', len);
        if (!comma) {
            snprintf(err, errlen, "a1111 backend: malformed data URL in the image");
            return NULL;
        }
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    unsigned char *out = b64_decode(s, len, B64_LENIENT, max, outlen);
    if (!out)
        snprintf(err, errlen,
                 "a1111 backend: the image is not valid base64, or larger than %zu bytes", max);
    return out;
}

unsigned char *a1111_parse_image(const char *body, size_t len, size_t max, size_t *outlen,
                                 char *err, size_t errlen)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    json_t *doc = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
    json_t *first = json_array_get(json_object_get(doc, "images"), 0);
    unsigned char *png = NULL;
    *outlen = 0;
    if (!json_is_string(first))
        snprintf(err, errlen, "a1111 backend: txt2img answer has no image");
    else
        png = image_decode(json_string_value(first), json_string_length(first), max, outlen, err,
                           errlen);
    if (png && (*outlen < sizeof sig || memcmp(png, sig, sizeof sig) != 0)) {
        snprintf(err, errlen, "a1111 backend: the server's image is not a PNG");
        free(png);
        png = NULL;
    }
    json_decref(doc);
    return png;
}
