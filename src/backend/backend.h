/* backend.h: the generation backend contract. A backend loads its model once (load), then turns
 * job parameters into PNG bytes (generate). One file per implementation. */
#ifndef PINGVAS_BACKEND_H
#define PINGVAS_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/job.h"

typedef struct backend_config {
    const char *name;        /* "synthetic", "a1111", "sdcpp" */
    const char *gpu_profile; /* synthetic: t4|a10g|l4|a100|h100 */
    double time_scale;       /* synthetic: multiplies every simulated duration; 0 = instant */
    const char *url;         /* a1111: base URL of the server */
    const char *model_dir;   /* MODEL_DIR */
} backend_config_t;

typedef struct backend_result {
    unsigned char *png; /* malloc'd PNG bytes; caller frees */
    size_t png_len;
    double gpu_seconds; /* time the GPU was busy with this job (model load excluded) */
} backend_result_t;

enum backend_rc { BACKEND_OK = 0, BACKEND_ERR = -1, BACKEND_CANCELED = 1 };

typedef struct backend backend_t;

struct backend_ops {
    const char *name;
    /* Loads the model; called once at worker start. BACKEND_OK or BACKEND_ERR (+ err). */
    int (*load)(backend_t *b, char *err, size_t errlen);
    /* Generates one image. Polls *cancel and returns BACKEND_CANCELED soon after it turns
     * nonzero. On BACKEND_OK the result owns a PNG. */
    int (*generate)(backend_t *b, const job_params_t *p, atomic_int *cancel, backend_result_t *out,
                    char *err, size_t errlen);
    /* Seconds a job with these parameters is expected to take (drain decisions). */
    double (*estimate_seconds)(backend_t *b, const job_params_t *p);
    void (*destroy)(backend_t *b);
};

struct backend {
    const struct backend_ops *ops;
};

/* Creates the backend named in cfg (not yet loaded). NULL with a message on error. */
backend_t *backend_create(const backend_config_t *cfg, char *err, size_t errlen);

/* The a1111 backend: cfg->url is the base URL of a server with the /sdapi/v1/txt2img API. */
backend_t *backend_a1111_create(const backend_config_t *cfg, char *err, size_t errlen);
backend_t *backend_synthetic_create(const backend_config_t *cfg, char *err, size_t errlen);
/* The synthetic backend's model load, in seconds with its time scale applied (b must be a
 * synthetic backend). */
double backend_synthetic_load_seconds(const backend_t *b);
/* The synthetic backend's GPU profile names (static strings, for --help); returns their count. */
int backend_synthetic_profile_names(const char *const **names);

#endif
