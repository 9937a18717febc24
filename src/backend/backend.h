/* backend.h: the generation backend contract. A backend loads its model once (load), then turns
 * job parameters into PNG bytes (generate). One file per implementation. */
#ifndef PINGVAS_BACKEND_H
#define PINGVAS_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/job.h"
#include "lib/httpc.h"

typedef struct backend_config {
    const char *name;             /* "synthetic", "comfyui", "a1111" */
    const char *gpu_profile;      /* synthetic: t4|a10g|l4|a100|h100 */
    double time_scale;            /* synthetic: multiplies every simulated duration; 0 = instant */
    const char *url;              /* a1111: base URL of the server */
    const char *model_dir;        /* MODEL_DIR */
    const char *comfyui_url;      /* comfyui: base URL of the ComfyUI server */
    const char *comfyui_workflow; /* comfyui: API-format workflow file; NULL: the shipped one */
    const char *comfyui_checkpoints; /* comfyui: "model=checkpoint,..." */
    int64_t hang_grace_ms; /* engines: a job may take 4 x its estimate + this before it is hung */
} backend_config_t;

/* What the worker and a running generate share. The worker sets cancel; the backend reports
 * progress (step of steps; 0 of 0 until it knows) with backend_progress. */
typedef struct backend_ctl {
    atomic_int cancel;
    atomic_int step;
    atomic_int steps;
} backend_ctl_t;

/* Records progress step of steps (clamped to 0..steps). Thread safe. */
void backend_progress(backend_ctl_t *c, int step, int steps);
/* Reads the last progress; returns 0 with *step and *steps set, or -1 when none was reported. */
int backend_progress_get(backend_ctl_t *c, int *step, int *steps);

/* The milliseconds an engine may take for a job of estimate_s seconds before it counts as hung:
 * 4 x the estimate + grace_ms. */
int64_t backend_hang_deadline_ms(double estimate_s, int64_t grace_ms);

/* A running mean of seconds per (step x megapixel) over completed jobs, for engines that have no
 * profile: estimate_seconds of a job before the first completes uses the t4 figure. */
typedef struct backend_rate {
    double seconds;
    double step_mp;
} backend_rate_t;
double backend_rate_estimate(const backend_rate_t *r, const job_params_t *p);
void backend_rate_add(backend_rate_t *r, const job_params_t *p, double seconds);

#define BACKEND_URL_MAX 1024

/* Copies an engine's base URL (http:// or https://) without trailing slashes into out. 0, or -1
 * with err naming the backend (who) and how to set the URL (how). */
int backend_base_url(const char *url, const char *who, const char *how, char *out, size_t outlen,
                     char *err, size_t errlen);

/* One request to base+path on curl handle h: body NULL (no body) or JSON; cancel may be NULL.
 * Returns 0 when a response arrived (any status), -1 otherwise (out->error says why). The caller
 * frees out with httpc_resp_free. */
int backend_request(void *h, const char *base, const char *method, const char *path,
                    const char *body, long timeout_ms, size_t cap, atomic_int *cancel,
                    httpc_resp_t *out);

#define BACKEND_DETAIL_MAX 200
/* Writes an engine's own error text (the "detail", "error", "message" and "errors" of a JSON
 * body that it has, joined by ": ", else the start of the body) into buf, at most
 * BACKEND_DETAIL_MAX bytes, on one line; "" when there is none. */
void backend_error_detail(const httpc_resp_t *r, char *buf, size_t buflen);

#define BACKEND_LOAD_TRIES 6 /* sleeps of 0.25, 0.5, 1, 2, 4 s between them: about 8 s */
/* GETs base+path at worker start until a definite answer: a transport error or a 5xx (an engine
 * still starting) is tried BACKEND_LOAD_TRIES times in all (BACKEND_LOAD_TRIES - 1 retries). out
 * holds the last answer; the caller frees it. */
void backend_get_patient(void *h, const char *base, const char *path, size_t cap,
                         httpc_resp_t *out);

/* Checks that buf[0..len) starts with the PNG signature. 1 if so. */
int backend_is_png(const unsigned char *buf, size_t len);

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
    /* Generates one image. Polls ctl->cancel and returns BACKEND_CANCELED soon after it turns
     * nonzero; reports progress into ctl. On BACKEND_OK the result owns a PNG. */
    int (*generate)(backend_t *b, const job_params_t *p, backend_ctl_t *ctl, backend_result_t *out,
                    char *err, size_t errlen);
    /* Seconds a job with these parameters is expected to take (drain decisions). */
    double (*estimate_seconds)(backend_t *b, const job_params_t *p);
    /* 1 when the backend can run jobs of this model, else 0. NULL: every model. */
    int (*serves)(backend_t *b, const char *model);
    void (*destroy)(backend_t *b);
};

struct backend {
    const struct backend_ops *ops;
};

/* Creates the backend named in cfg (not yet loaded). NULL with a message on error. */
backend_t *backend_create(const backend_config_t *cfg, char *err, size_t errlen);

/* The comfyui backend: cfg->comfyui_url is the base URL of a ComfyUI server. */
backend_t *backend_comfyui_create(const backend_config_t *cfg, char *err, size_t errlen);
/* The a1111 backend: cfg->url is the base URL of a server with the /sdapi/v1/txt2img API. */
backend_t *backend_a1111_create(const backend_config_t *cfg, char *err, size_t errlen);
backend_t *backend_synthetic_create(const backend_config_t *cfg, char *err, size_t errlen);
/* The synthetic backend's model load, in seconds with its time scale applied (b must be a
 * synthetic backend). */
double backend_synthetic_load_seconds(const backend_t *b);
/* The synthetic backend's GPU profile names (static strings, for --help); returns their count. */
int backend_synthetic_profile_names(const char *const **names);

#endif
