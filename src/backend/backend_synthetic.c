/* backend_synthetic.c: the synthetic backend, pingvas's test and load workload. It is NOT Stable
 * Diffusion and runs no model: it occupies the worker for as long as a real GPU would need for
 * the job (from a GPU profile) and renders a deterministic PNG from the job parameters, so the
 * queue, leases, metering and autoscaling can be exercised without a GPU. Every image says so in
 * its "Software" text chunk. */
#include "backend/backend.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "backend/png_write.h"

/* Throughput of a 20-step SD 1.5-class txt2img run at 512x512, batch 1, fp16, plus the VAE decode
 * and the one-off pipeline load. Basis and sources: docs/backends.md. */
typedef struct gpu_profile {
    const char *name;
    double steps_per_s; /* denoising steps per second at 512x512 */
    double decode_s;    /* VAE decode of one image */
    double load_s;      /* model load at worker start */
} gpu_profile_t;

/* Slowest first. */
static const gpu_profile_t profiles[] = {
    {"t4", 6.9, 0.35, 6.0},    {"l4", 11.5, 0.18, 5.0},   {"a10g", 13.5, 0.15, 4.5},
    {"a100", 21.7, 0.08, 3.5}, {"h100", 36.0, 0.05, 3.0},
};
#define NPROFILES ((int)(sizeof profiles / sizeof profiles[0]))
#define DEFAULT_PROFILE "t4"

static const char *const profile_names[] = {"t4", "l4", "a10g", "a100", "h100"};
_Static_assert(sizeof profile_names / sizeof profile_names[0] ==
                   sizeof profiles / sizeof profiles[0],
               "profile_names must list every profile");

/* Limits on what this backend renders; the API validates tighter bounds (DESIGN section 3). */
#define SYN_MAX_SIDE 4096
#define SYN_MAX_STEPS 1000
#define SYN_MAX_TEXT_BYTES (4 * PROMPT_MAX_CHARS) /* a prompt of 2000 UTF-8 characters */
#define SYN_MAX_SCALE 1000.0 /* keeps every simulated duration far inside int64 milliseconds */
#define SLICE_MS 50          /* longest sleep between cancel checks */

#define SOFTWARE_TEXT "pingvas synthetic backend (test workload, not Stable Diffusion)"

typedef struct synthetic {
    backend_t base; /* first: a backend_t * is a synthetic_t * */
    const gpu_profile_t *profile;
    double time_scale;
    int loaded;
} synthetic_t;

int backend_synthetic_profile_names(const char *const **names)
{
    *names = profile_names;
    return NPROFILES;
}

double backend_synthetic_load_seconds(const backend_t *b)
{
    const synthetic_t *s = (const synthetic_t *)b;
    return s->profile->load_s * s->time_scale;
}

/* Seconds the simulated GPU is busy with a job, time_scale applied. */
static double job_seconds(const synthetic_t *s, const job_params_t *p)
{
    double pixels = (double)p->width * (double)p->height / (512.0 * 512.0);
    double t = (double)p->steps / s->profile->steps_per_s * pixels + s->profile->decode_s;
    return t * s->time_scale;
}

/* Sleeps for seconds of real time in slices of at most SLICE_MS. With ctl, checks its cancel flag
 * before each slice and returns 1 as soon as it is set, and reports progress: the first
 * step_frac of the time are the steps denoising steps, the rest is the decode. Otherwise returns
 * 0 after the full time. */
static int busy_wait(double seconds, backend_ctl_t *ctl, int steps, double step_frac)
{
    int64_t total_ms = (int64_t)llround(seconds * 1000.0), left_ms = total_ms;
    double step_ms = (double)total_ms * step_frac;
    for (;;) {
        if (ctl && steps > 0) {
            double done = (double)(total_ms - left_ms);
            int step = step_ms > 0 ? (int)(done / step_ms * steps) : steps;
            backend_progress(ctl, step, steps);
        }
        if (ctl && atomic_load(&ctl->cancel))
            return 1;
        if (left_ms <= 0)
            return 0;
        int64_t slice = left_ms < SLICE_MS ? left_ms : SLICE_MS;
        clock_sleep_ms(slice);
        left_ms -= slice;
    }
}

/* ---- parameters hash and the deterministic picture ---- */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv_bytes(uint64_t h, const void *data, size_t len)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Strings go in with their terminating NUL so ("ab","c") and ("a","bc") differ. */
static uint64_t fnv_str(uint64_t h, const char *s)
{
    if (!s)
        s = "";
    return fnv_bytes(h, s, strlen(s) + 1);
}

static uint64_t fnv_i64(uint64_t h, int64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)v >> (8 * i));
    return fnv_bytes(h, b, sizeof b);
}

static uint64_t params_hash(const job_params_t *p)
{
    uint64_t h = FNV_OFFSET;
    h = fnv_str(h, p->prompt);
    h = fnv_str(h, p->negative_prompt);
    h = fnv_str(h, p->model);
    h = fnv_i64(h, p->width);
    h = fnv_i64(h, p->height);
    h = fnv_i64(h, p->steps);
    h = fnv_i64(h, (int64_t)llround(p->cfg_scale * 1000.0));
    h = fnv_i64(h, p->seed);
    return h;
}

/* splitmix64: expands the hash into as many pseudo-random numbers as the picture needs. */
static uint64_t next_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int rand_range(uint64_t *state, int lo, int hi)
{
    return lo + (int)(next_rand(state) % (uint64_t)(hi - lo + 1));
}

#define MAX_CIRCLES 7

typedef struct picture {
    int w, h;
    unsigned char corner[4][3]; /* top-left, top-right, bottom-left, bottom-right */
    int band_dx, band_dy, band_period, band_alpha;
    unsigned char band_col[3];
    int ncircles;
    struct {
        int cx, cy, r, alpha; /* alpha 0..256 */
        unsigned char col[3];
    } circle[MAX_CIRCLES];
} picture_t;

static void picture_init(picture_t *pic, const job_params_t *p)
{
    uint64_t st = params_hash(p);
    memset(pic, 0, sizeof *pic);
    pic->w = p->width;
    pic->h = p->height;
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 3; k++)
            pic->corner[c][k] = (unsigned char)rand_range(&st, 0, 255);
    int side = p->width < p->height ? p->width : p->height;
    pic->band_dx = rand_range(&st, 0, 3);
    pic->band_dy = rand_range(&st, pic->band_dx == 0 ? 1 : 0, 3);
    pic->band_period = side / rand_range(&st, 6, 16) + 1;
    pic->band_alpha = rand_range(&st, 24, 72);
    for (int k = 0; k < 3; k++)
        pic->band_col[k] = (unsigned char)rand_range(&st, 0, 255);
    pic->ncircles = rand_range(&st, 3, MAX_CIRCLES);
    for (int i = 0; i < pic->ncircles; i++) {
        pic->circle[i].cx = rand_range(&st, 0, p->width - 1);
        pic->circle[i].cy = rand_range(&st, 0, p->height - 1);
        pic->circle[i].r = rand_range(&st, side / 16 + 1, side / 3 + 1);
        pic->circle[i].alpha = rand_range(&st, 96, 224);
        for (int k = 0; k < 3; k++)
            pic->circle[i].col[k] = (unsigned char)rand_range(&st, 0, 255);
    }
}

static unsigned char lerp8(int a, int b, int t256)
{
    return (unsigned char)((a * (256 - t256) + b * t256) >> 8);
}

/* One row: a bilinear gradient between the corner colours, diagonal translucent bands, then
 * translucent circles, each clipped to its span on this row. Integer arithmetic only, apart from
 * one correctly rounded sqrt per circle per row, so the output is the same on every platform. */
static void picture_row(void *ctx, int y, unsigned char *row)
{
    const picture_t *pic = ctx;
    int ty = pic->h > 1 ? (int)((int64_t)y * 256 / (pic->h - 1)) : 0;
    unsigned char left[3], right[3];
    for (int k = 0; k < 3; k++) {
        left[k] = lerp8(pic->corner[0][k], pic->corner[2][k], ty);
        right[k] = lerp8(pic->corner[1][k], pic->corner[3][k], ty);
    }
    for (int x = 0; x < pic->w; x++) {
        int tx = pic->w > 1 ? (int)((int64_t)x * 256 / (pic->w - 1)) : 0;
        unsigned char *px = row + 3 * x;
        int band = ((x * pic->band_dx + y * pic->band_dy) / pic->band_period) & 1;
        for (int k = 0; k < 3; k++) {
            unsigned char v = lerp8(left[k], right[k], tx);
            px[k] = band ? lerp8(v, pic->band_col[k], pic->band_alpha) : v;
        }
    }
    for (int i = 0; i < pic->ncircles; i++) {
        int64_t dy = y - pic->circle[i].cy, r = pic->circle[i].r;
        if (dy < -r || dy > r)
            continue;
        int half = (int)sqrt((double)(r * r - dy * dy));
        int x0 = pic->circle[i].cx - half, x1 = pic->circle[i].cx + half;
        if (x0 < 0)
            x0 = 0;
        if (x1 > pic->w - 1)
            x1 = pic->w - 1;
        for (int x = x0; x <= x1; x++)
            for (int k = 0; k < 3; k++)
                row[3 * x + k] = lerp8(row[3 * x + k], pic->circle[i].col[k], pic->circle[i].alpha);
    }
}

/* The "Parameters" text in the A1111 layout. malloc'd; caller frees; NULL on allocation failure. */
static char *params_text(const job_params_t *p)
{
    const char *fmt = "%s\nNegative prompt: %s\nSteps: %d, CFG scale: %g, Seed: %lld, Size: %dx%d, "
                      "Model: %s, Backend: synthetic (not Stable Diffusion)";
    const char *neg = p->negative_prompt ? p->negative_prompt : "";
    int n = snprintf(NULL, 0, fmt, p->prompt, neg, p->steps, p->cfg_scale, (long long)p->seed,
                     p->width, p->height, p->model);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    if (snprintf(s, (size_t)n + 1, fmt, p->prompt, neg, p->steps, p->cfg_scale, (long long)p->seed,
                 p->width, p->height, p->model) != n) {
        free(s);
        return NULL;
    }
    return s;
}

static int check_params(const job_params_t *p, char *err, size_t errlen)
{
    if (!p->prompt) {
        snprintf(err, errlen, "synthetic backend: the job has no prompt");
        return -1;
    }
    if (p->width < 1 || p->width > SYN_MAX_SIDE || p->height < 1 || p->height > SYN_MAX_SIDE) {
        snprintf(err, errlen, "synthetic backend: image size %dx%d is outside 1..%d", p->width,
                 p->height, SYN_MAX_SIDE);
        return -1;
    }
    if (p->steps < 1 || p->steps > SYN_MAX_STEPS) {
        snprintf(err, errlen, "synthetic backend: steps %d is outside 1..%d", p->steps,
                 SYN_MAX_STEPS);
        return -1;
    }
    if (strlen(p->prompt) > SYN_MAX_TEXT_BYTES ||
        (p->negative_prompt && strlen(p->negative_prompt) > SYN_MAX_TEXT_BYTES)) {
        snprintf(err, errlen, "synthetic backend: prompt longer than %d bytes", SYN_MAX_TEXT_BYTES);
        return -1;
    }
    return 0;
}

/* ---- backend_ops ---- */

static int syn_load(backend_t *b, char *err, size_t errlen)
{
    synthetic_t *s = (synthetic_t *)b;
    /* Stands in for reading the checkpoint onto the GPU; nothing to cancel. */
    busy_wait(s->profile->load_s * s->time_scale, NULL, 0, 0);
    s->loaded = 1;
    return BACKEND_OK;
}

static int syn_generate(backend_t *b, const job_params_t *p, backend_ctl_t *ctl,
                        backend_result_t *out, char *err, size_t errlen)
{
    synthetic_t *s = (synthetic_t *)b;
    char *text = NULL;
    memset(out, 0, sizeof *out);
    if (!s->loaded) {
        snprintf(err, errlen, "synthetic backend: generate called before load");
        return BACKEND_ERR;
    }
    if (check_params(p, err, errlen) != 0)
        return BACKEND_ERR;
    double seconds = job_seconds(s, p);
    double decode = s->profile->decode_s * s->time_scale;
    if (busy_wait(seconds, ctl, p->steps, seconds > 0 ? 1.0 - decode / seconds : 1.0))
        return BACKEND_CANCELED;

    int rc = BACKEND_ERR;
    picture_t pic;
    picture_init(&pic, p);
    text = params_text(p);
    if (!text) {
        snprintf(err, errlen, "synthetic backend: out of memory");
        goto out;
    }
    png_write_text_t texts[] = {{"Software", SOFTWARE_TEXT}, {"Parameters", text}};
    if (png_write_rgb(p->width, p->height, picture_row, &pic, texts, 2, PNG_WRITE_MAX, &out->png,
                      &out->png_len, err, errlen) != 0)
        goto out;
    out->gpu_seconds = seconds;
    rc = BACKEND_OK;
out:
    free(text);
    return rc;
}

static double syn_estimate_seconds(backend_t *b, const job_params_t *p)
{
    return job_seconds((const synthetic_t *)b, p);
}

static void syn_destroy(backend_t *b)
{
    free(b);
}

static const struct backend_ops synthetic_ops = {
    .name = "synthetic",
    .load = syn_load,
    .generate = syn_generate,
    .estimate_seconds = syn_estimate_seconds,
    .destroy = syn_destroy,
};

/* Returns a new backend the caller destroys with ops->destroy, or NULL with err set. A NULL or
 * empty gpu_profile means DEFAULT_PROFILE. */
backend_t *backend_synthetic_create(const backend_config_t *cfg, char *err, size_t errlen)
{
    const char *name = cfg->gpu_profile && cfg->gpu_profile[0] ? cfg->gpu_profile : DEFAULT_PROFILE;
    const gpu_profile_t *prof = NULL;
    for (int i = 0; i < NPROFILES; i++)
        if (strcmp(profiles[i].name, name) == 0)
            prof = &profiles[i];
    if (!prof) {
        char list[128] = "";
        size_t used = 0;
        for (int i = 0; i < NPROFILES && used < sizeof list; i++) {
            int n =
                snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", profiles[i].name);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        snprintf(err, errlen, "unknown GPU profile \"%s\" (valid: %s)", name, list);
        return NULL;
    }
    if (!isfinite(cfg->time_scale) || cfg->time_scale < 0 || cfg->time_scale > SYN_MAX_SCALE) {
        snprintf(err, errlen,
                 "invalid time scale %g: must be 0 (instant) or a positive number up to %g",
                 cfg->time_scale, SYN_MAX_SCALE);
        return NULL;
    }
    synthetic_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "synthetic backend: out of memory");
        return NULL;
    }
    s->base.ops = &synthetic_ops;
    s->profile = prof;
    s->time_scale = cfg->time_scale;
    return &s->base;
}
