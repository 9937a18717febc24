/* test_synthetic.c: the synthetic backend: PNG validity, determinism, time model, cancel. */
#include <png.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "lib/clock.h"
#include "t.h"

static backend_t *make(const char *profile, double scale)
{
    char err[256] = "";
    backend_config_t cfg = {.name = "synthetic", .gpu_profile = profile, .time_scale = scale};
    backend_t *b = backend_create(&cfg, err, sizeof err);
    if (!b)
        fprintf(stderr, "backend_create: %s\n", err);
    return b;
}

static backend_t *make_loaded(const char *profile, double scale)
{
    char err[256] = "";
    backend_t *b = make(profile, scale);
    if (b && b->ops->load(b, err, sizeof err) != BACKEND_OK) {
        b->ops->destroy(b);
        return NULL;
    }
    return b;
}

/* Parameters borrow string literals; never passed to job_params_clear. */
static job_params_t params(const char *prompt, int w, int h, int steps, int64_t seed)
{
    job_params_t p = {.prompt = (char *)prompt, .negative_prompt = (char *)"blurry"};
    snprintf(p.model, sizeof p.model, "sd15");
    p.width = w;
    p.height = h;
    p.steps = steps;
    p.cfg_scale = 7.0;
    p.seed = seed;
    return p;
}

static int gen(backend_t *b, const job_params_t *p, backend_result_t *r)
{
    char err[256] = "";
    backend_ctl_t ctl = {0};
    int rc = b->ops->generate(b, p, &ctl, r, err, sizeof err);
    if (rc != BACKEND_OK)
        fprintf(stderr, "generate: rc=%d %s\n", rc, err);
    /* A finished job has reported all its steps. */
    int step = -1, steps = -1;
    if (rc == BACKEND_OK &&
        (backend_progress_get(&ctl, &step, &steps) != 0 || step != p->steps || steps != p->steps)) {
        fprintf(stderr, "generate: progress %d/%d after a %d-step job\n", step, steps, p->steps);
        rc = BACKEND_ERR;
    }
    return rc;
}

/* Decodes PNG bytes to RGB; returns malloc'd pixels (caller frees) or NULL. */
static unsigned char *decode(const backend_result_t *r, int *w, int *h)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, r->png, r->png_len))
        return NULL;
    img.format = PNG_FORMAT_RGB;
    unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
    if (!px || !png_image_finish_read(&img, NULL, px, 0, NULL)) {
        free(px);
        png_image_free(&img);
        return NULL;
    }
    *w = (int)img.width;
    *h = (int)img.height;
    return px;
}

static int contains(const backend_result_t *r, const char *needle)
{
    return memmem(r->png, r->png_len, needle, strlen(needle)) != NULL;
}

static void test_png_is_valid(void)
{
    backend_t *b = make_loaded("t4", 0);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p = params("a lighthouse at dusk", 320, 200, 20, 42);
    backend_result_t r;
    CHECK_INT(gen(b, &p, &r), BACKEND_OK);
    CHECK(r.png != NULL && r.png_len > 8);
    CHECK(png_sig_cmp(r.png, 0, 8) == 0);
    int w = 0, h = 0;
    unsigned char *px = decode(&r, &w, &h);
    CHECK(px != NULL);
    CHECK_INT(w, 320);
    CHECK_INT(h, 200);
    CHECK(contains(&r, "tEXtSoftware"));
    CHECK(contains(&r, "pingvas synthetic backend (test workload, not Stable Diffusion)"));
    CHECK(contains(&r, "tEXtParameters"));
    CHECK(contains(&r, "a lighthouse at dusk"));
    CHECK(contains(&r, "Seed: 42"));
    CHECK(contains(&r, "Steps: 20"));
    free(px);
    free(r.png);
    b->ops->destroy(b);
}

static void test_utf8_prompt_goes_to_itxt(void)
{
    backend_t *b = make_loaded("l4", 0);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p = params("k\xc3\xb6ttur \xe2\x98\x95", 64, 64, 4, 1);
    backend_result_t r;
    CHECK_INT(gen(b, &p, &r), BACKEND_OK);
    CHECK(contains(&r, "iTXtParameters"));
    int w = 0, h = 0;
    unsigned char *px = decode(&r, &w, &h);
    CHECK(px != NULL);
    free(px);
    free(r.png);
    b->ops->destroy(b);
}

static void test_deterministic(void)
{
    backend_t *b = make_loaded("a10g", 0);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p = params("same prompt", 256, 192, 25, 7);
    backend_result_t r1, r2;
    CHECK_INT(gen(b, &p, &r1), BACKEND_OK);
    CHECK_INT(gen(b, &p, &r2), BACKEND_OK);
    CHECK(r1.png_len == r2.png_len && memcmp(r1.png, r2.png, r1.png_len) == 0);
    free(r1.png);
    free(r2.png);
    /* A second backend instance produces the same bytes too. */
    backend_t *b2 = make_loaded("h100", 0);
    CHECK(b2 != NULL);
    if (b2) {
        CHECK_INT(gen(b2, &p, &r2), BACKEND_OK);
        CHECK_INT(gen(b, &p, &r1), BACKEND_OK);
        CHECK(r1.png_len == r2.png_len && memcmp(r1.png, r2.png, r1.png_len) == 0);
        free(r1.png);
        free(r2.png);
        b2->ops->destroy(b2);
    }
    b->ops->destroy(b);
}

/* Fraction of pixels that differ between two images of the same size. */
static double pixel_difference(const backend_result_t *a, const backend_result_t *b)
{
    int wa = 0, ha = 0, wb = 0, hb = 0;
    unsigned char *pa = decode(a, &wa, &ha), *pb = decode(b, &wb, &hb);
    double frac = -1;
    if (pa && pb && wa == wb && ha == hb) {
        long differ = 0;
        for (long i = 0; i < (long)wa * ha; i++)
            if (memcmp(pa + 3 * i, pb + 3 * i, 3) != 0)
                differ++;
        frac = (double)differ / ((double)wa * ha);
    }
    free(pa);
    free(pb);
    return frac;
}

static void test_prompt_and_seed_change_image(void)
{
    backend_t *b = make_loaded("t4", 0);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p1 = params("a red fox", 256, 256, 20, 1000);
    job_params_t p2 = params("a red box", 256, 256, 20, 1000);
    job_params_t p3 = params("a red fox", 256, 256, 20, 1001);
    job_params_t p4 = p1;
    p4.negative_prompt = (char *)"";
    backend_result_t r1, r2, r3, r4;
    CHECK_INT(gen(b, &p1, &r1), BACKEND_OK);
    CHECK_INT(gen(b, &p2, &r2), BACKEND_OK);
    CHECK_INT(gen(b, &p3, &r3), BACKEND_OK);
    CHECK_INT(gen(b, &p4, &r4), BACKEND_OK);
    CHECK(r1.png_len != r2.png_len || memcmp(r1.png, r2.png, r1.png_len) != 0);
    CHECK(r1.png_len != r3.png_len || memcmp(r1.png, r3.png, r1.png_len) != 0);
    /* Visibly different: most pixels change, not just the text chunk. */
    CHECK(pixel_difference(&r1, &r2) > 0.5);
    CHECK(pixel_difference(&r1, &r3) > 0.5);
    CHECK(pixel_difference(&r1, &r4) > 0.5);
    free(r1.png);
    free(r2.png);
    free(r3.png);
    free(r4.png);
    b->ops->destroy(b);
}

static void test_large_image(void)
{
    backend_t *b = make_loaded("h100", 0);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p = params("big", 2048, 2048, 30, 3);
    backend_result_t r;
    CHECK_INT(gen(b, &p, &r), BACKEND_OK);
    int w = 0, h = 0;
    unsigned char *px = decode(&r, &w, &h);
    CHECK(px != NULL);
    CHECK_INT(w, 2048);
    CHECK_INT(h, 2048);
    free(px);
    free(r.png);
    b->ops->destroy(b);
}

static void test_time_model(void)
{
    backend_t *t4 = make("t4", 1.0), *h100 = make("h100", 1.0), *half = make("t4", 0.5);
    CHECK(t4 && h100 && half);
    if (!t4 || !h100 || !half)
        goto out;
    job_params_t p = params("x", 512, 512, 20, 1);
    double base = t4->ops->estimate_seconds(t4, &p);
    CHECK_NEAR(base, 20.0 / 6.9 + 0.35, 1e-9);
    p.width = p.height = 1024;
    double big = t4->ops->estimate_seconds(t4, &p);
    CHECK_NEAR(big - 0.35, 4.0 * (20.0 / 6.9), 1e-9);
    p.width = p.height = 512;
    p.steps = 40;
    CHECK_NEAR(t4->ops->estimate_seconds(t4, &p), 40.0 / 6.9 + 0.35, 1e-9);
    p.steps = 20;
    CHECK(h100->ops->estimate_seconds(h100, &p) < base / 3);
    CHECK_NEAR(half->ops->estimate_seconds(half, &p), base / 2, 1e-9);
out:
    if (t4)
        t4->ops->destroy(t4);
    if (h100)
        h100->ops->destroy(h100);
    if (half)
        half->ops->destroy(half);
}

static void test_profiles(void)
{
    const char *const *names = NULL;
    int n = backend_synthetic_profile_names(&names);
    CHECK_INT(n, 5);
    double prev = 1e9;
    job_params_t p = params("x", 512, 512, 20, 1);
    /* Listed slowest first: every profile builds and is faster than the one before. */
    for (int i = 0; i < n; i++) {
        backend_t *b = make(names[i], 1.0);
        CHECK(b != NULL);
        if (!b)
            continue;
        double t = b->ops->estimate_seconds(b, &p);
        CHECK(t > 0 && t < prev);
        if (t < prev)
            prev = t;
        b->ops->destroy(b);
    }
    /* NULL profile means the default, t4. */
    backend_t *d = make(NULL, 1.0);
    CHECK(d != NULL);
    if (d) {
        CHECK_NEAR(d->ops->estimate_seconds(d, &p), 20.0 / 6.9 + 0.35, 1e-9);
        d->ops->destroy(d);
    }
}

static void test_gpu_seconds_is_computed_time(void)
{
    backend_t *inst = make_loaded("a100", 0), *fast = make_loaded("a100", 0.01);
    CHECK(inst && fast);
    if (inst && fast) {
        job_params_t p = params("metering", 128, 128, 20, 9);
        backend_result_t r;
        CHECK_INT(gen(inst, &p, &r), BACKEND_OK);
        CHECK_NEAR(r.gpu_seconds, 0.0, 1e-12);
        free(r.png);
        CHECK_INT(gen(fast, &p, &r), BACKEND_OK);
        CHECK_NEAR(r.gpu_seconds, fast->ops->estimate_seconds(fast, &p), 1e-12);
        CHECK_NEAR(r.gpu_seconds, 0.01 * (20.0 / 21.7 / 16.0 + 0.08), 1e-12);
        free(r.png);
    }
    if (inst)
        inst->ops->destroy(inst);
    if (fast)
        fast->ops->destroy(fast);
}

/* time_scale 0.01: loading takes 60 ms, and a 150-step 2048x2048 T4 job 3.5 s, so only the
 * cancel flag can end generate early. */
#define CANCEL_SCALE 0.01

static void test_cancel_before_call(void)
{
    backend_t *b = make_loaded("t4", CANCEL_SCALE);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p = params("never", 2048, 2048, 150, 1);
    backend_ctl_t ctl = {.cancel = 1};
    backend_result_t r;
    char err[256] = "";
    CHECK_INT(b->ops->generate(b, &p, &ctl, &r, err, sizeof err), BACKEND_CANCELED);
    CHECK(r.png == NULL);
    b->ops->destroy(b);
}

typedef struct canceller {
    atomic_int *flag;
} canceller_t;

static void *cancel_later(void *arg)
{
    canceller_t *c = arg;
    clock_sleep_ms(120);
    atomic_store(c->flag, 1);
    return NULL;
}

static void test_cancel_from_thread(void)
{
    backend_t *b = make_loaded("t4", CANCEL_SCALE);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p = params("long", 2048, 2048, 150, 1);
    CHECK(b->ops->estimate_seconds(b, &p) > 1.0); /* long enough that only cancel ends it */
    backend_ctl_t ctl = {0};
    canceller_t c = {.flag = &ctl.cancel};
    pthread_t th;
    CHECK_INT(pthread_create(&th, NULL, cancel_later, &c), 0);
    backend_result_t r;
    char err[256] = "";
    CHECK_INT(b->ops->generate(b, &p, &ctl, &r, err, sizeof err), BACKEND_CANCELED);
    CHECK(r.png == NULL);
    int step = -1, steps = -1; /* canceled part-way: some progress, not all of it */
    CHECK_INT(backend_progress_get(&ctl, &step, &steps), 0);
    CHECK(steps == 150 && step < 150);
    pthread_join(th, NULL);
    b->ops->destroy(b);
}

static void test_generate_needs_load(void)
{
    backend_t *b = make("t4", 0);
    CHECK(b != NULL);
    if (!b)
        return;
    job_params_t p = params("x", 64, 64, 1, 1);
    backend_result_t r;
    backend_ctl_t ctl = {0};
    char err[256] = "";
    CHECK_INT(b->ops->generate(b, &p, &ctl, &r, err, sizeof err), BACKEND_ERR);
    CHECK(strstr(err, "load") != NULL);
    b->ops->destroy(b);
}

static void test_bad_params(void)
{
    backend_t *b = make_loaded("t4", 0);
    CHECK(b != NULL);
    if (!b)
        return;
    backend_ctl_t ctl = {0};
    char err[256] = "";
    backend_result_t r;
    job_params_t p = params("x", 0, 64, 20, 1);
    CHECK_INT(b->ops->generate(b, &p, &ctl, &r, err, sizeof err), BACKEND_ERR);
    CHECK(strstr(err, "size") != NULL);
    p = params("x", 64, 64, 0, 1);
    CHECK_INT(b->ops->generate(b, &p, &ctl, &r, err, sizeof err), BACKEND_ERR);
    CHECK(strstr(err, "steps") != NULL);
    p = params(NULL, 64, 64, 20, 1);
    CHECK_INT(b->ops->generate(b, &p, &ctl, &r, err, sizeof err), BACKEND_ERR);
    b->ops->destroy(b);
}

static void test_config_errors(void)
{
    char err[256] = "";
    backend_config_t cfg = {.name = "synthetic", .gpu_profile = "v100", .time_scale = 1};
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "v100") != NULL);
    CHECK(strstr(err, "t4, l4, a10g, a100, h100") != NULL);

    cfg.gpu_profile = "t4";
    cfg.time_scale = -1;
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "time scale") != NULL);
    cfg.time_scale = NAN;
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);

    cfg.time_scale = 1;
    cfg.name = "a1111"; /* available, but needs a server URL */
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "a1111") && strstr(err, "no server URL"));
    cfg.name = "comfyui"; /* needs a workflow with a {{prompt}} */
    cfg.comfyui_url = "http://127.0.0.1:8188";
    cfg.comfyui_workflow = "/nonexistent/workflow.json";
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "comfyui backend: workflow /nonexistent/workflow.json") != NULL);
    cfg.comfyui_workflow = NULL; /* the shipped one */
    cfg.comfyui_checkpoints = "sd15";
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "model=checkpoint-file pairs") != NULL);
    cfg.comfyui_checkpoints = NULL;
    backend_t *cb = backend_create(&cfg, err, sizeof err);
    CHECK(cb != NULL);
    if (cb)
        cb->ops->destroy(cb);
    /* sdcpp is not in this build, so it is no backend at all (DESIGN section 6) */
    cfg.name = "sdcpp";
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "unknown backend \"sdcpp\"") && strstr(err, "synthetic, comfyui, a1111"));
    cfg.name = "dalle";
    CHECK(backend_create(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "\"dalle\"") && strstr(err, "synthetic, comfyui, a1111"));

    cfg.name = NULL; /* default: synthetic */
    backend_t *b = backend_create(&cfg, err, sizeof err);
    CHECK(b != NULL);
    if (b) {
        CHECK_STR(b->ops->name, "synthetic");
        b->ops->destroy(b);
    }
}

#define TESTS(X)                                                                                   \
    X(test_png_is_valid)                                                                           \
    X(test_utf8_prompt_goes_to_itxt)                                                               \
    X(test_deterministic)                                                                          \
    X(test_prompt_and_seed_change_image)                                                           \
    X(test_large_image)                                                                            \
    X(test_time_model)                                                                             \
    X(test_profiles)                                                                               \
    X(test_gpu_seconds_is_computed_time)                                                           \
    X(test_cancel_before_call)                                                                     \
    X(test_cancel_from_thread)                                                                     \
    X(test_generate_needs_load)                                                                    \
    X(test_bad_params)                                                                             \
    X(test_config_errors)
#include "t_main.h"
