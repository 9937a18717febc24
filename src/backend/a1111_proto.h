/* a1111_proto.h: what an AUTOMATIC1111-compatible server answers the a1111 backend, read by pure
 * functions (no I/O, no state) so that they can be fuzzed (fuzz/fuzz_a1111.c): the checkpoint
 * list, the progress reading, the txt2img image. */
#ifndef PINGVAS_A1111_PROTO_H
#define PINGVAS_A1111_PROTO_H

#include <stddef.h>

#define A1_MAX_MODELS 256
#define A1_NAME_MAX 512

typedef struct a1111_model {
    char title[A1_NAME_MAX];
    char name[A1_NAME_MAX];
} a1111_model_t;

/* GET /sdapi/v1/sd-models: a JSON array of objects with "title" and/or "model_name" (others are
 * skipped; at most A1_MAX_MODELS). *models is malloc'd (caller frees), *n its entries. 0, or -1
 * when the body is not such an array or out of memory (*models NULL). */
int a1111_parse_models(const char *body, size_t len, a1111_model_t **models, int *n);

/* GET /sdapi/v1/progress while a job of job_steps steps runs: state.sampling_step of
 * state.sampling_steps (AUTOMATIC1111, Forge, SD.Next), else the "progress" fraction of
 * job_steps. 1 with 0 <= *step <= *steps and *steps > 0; 0 when the answer gives no progress. */
int a1111_parse_progress(const char *body, size_t len, int job_steps, int *step, int *steps);

/* A 200 POST /sdapi/v1/txt2img answer: the first entry of "images", standard or URL-safe base64
 * (optionally a data: URL), decoded and at most max bytes, which must be a PNG. A malloc'd buffer
 * (caller frees) and its length in *outlen, or NULL with err set. */
unsigned char *a1111_parse_image(const char *body, size_t len, size_t max, size_t *outlen,
                                 char *err, size_t errlen);

#endif
