/* backend.c: picks the generation backend named in the configuration, and the small pieces every
 * engine backend shares (progress, hang deadline, learned estimate, PNG check). */
#include "backend/backend.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"

#define VALID_BACKENDS "synthetic, comfyui, a1111"

/* The t4 profile of the synthetic backend: 6.9 steps/s at 512x512, as seconds per step x MP. */
#define START_S_PER_STEP_MP (1.0 / (6.9 * (512.0 * 512.0 / 1e6)))
#define HANG_FACTOR 4.0

/* Returns a new, not yet loaded backend (destroy with ops->destroy), or NULL with err set.
 * A NULL or empty name means "synthetic", the default (DESIGN section 6). */
backend_t *backend_create(const backend_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg) {
        snprintf(err, errlen, "backend: no configuration");
        return NULL;
    }
    const char *name = cfg->name && cfg->name[0] ? cfg->name : "synthetic";
    if (strcmp(name, "synthetic") == 0)
        return backend_synthetic_create(cfg, err, errlen);
    if (strcmp(name, "comfyui") == 0)
        return backend_comfyui_create(cfg, err, errlen);
    if (strcmp(name, "a1111") == 0)
        return backend_a1111_create(cfg, err, errlen);
    snprintf(err, errlen, "unknown backend \"%s\" (valid: " VALID_BACKENDS ")", name);
    return NULL;
}

void backend_progress(backend_ctl_t *c, int step, int steps)
{
    if (!c || steps <= 0)
        return;
    if (step < 0)
        step = 0;
    if (step > steps)
        step = steps;
    /* steps first: a reader that sees a step also sees a total at least as new */
    atomic_store(&c->steps, steps);
    atomic_store(&c->step, step);
}

int backend_progress_get(backend_ctl_t *c, int *step, int *steps)
{
    int n = atomic_load(&c->steps);
    int s = atomic_load(&c->step);
    if (n <= 0)
        return -1;
    *steps = n;
    *step = s > n ? n : s;
    return 0;
}

int64_t backend_hang_deadline_ms(double estimate_s, int64_t grace_ms)
{
    double ms = HANG_FACTOR * estimate_s * 1000.0;
    if (!(ms >= 0) || ms > 1e12)
        ms = 1e12;
    return (int64_t)ms + (grace_ms > 0 ? grace_ms : 0);
}

static double step_mp(const job_params_t *p)
{
    return (double)p->steps * (double)p->width * (double)p->height / 1e6;
}

double backend_rate_estimate(const backend_rate_t *r, const job_params_t *p)
{
    double per = r->step_mp > 0 ? r->seconds / r->step_mp : START_S_PER_STEP_MP;
    return per * step_mp(p);
}

void backend_rate_add(backend_rate_t *r, const job_params_t *p, double seconds)
{
    r->seconds += seconds;
    r->step_mp += step_mp(p);
}

int backend_is_png(const unsigned char *buf, size_t len)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return buf && len >= sizeof sig && memcmp(buf, sig, sizeof sig) == 0;
}

int backend_base_url(const char *url, const char *who, const char *how, char *out, size_t outlen,
                     char *err, size_t errlen)
{
    if (!url || !url[0]) {
        snprintf(err, errlen, "%s backend: no server URL (set %s)", who, how);
        return -1;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(err, errlen,
                 "%s backend: server URL \"%.200s\" must start with http:// or https://", who, url);
        return -1;
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (n >= outlen) {
        snprintf(err, errlen, "%s backend: server URL longer than %zu bytes", who, outlen - 1);
        return -1;
    }
    memcpy(out, url, n);
    out[n] = '\0';
    return 0;
}

int backend_request(void *h, const char *base, const char *method, const char *path,
                    const char *body, long timeout_ms, size_t cap, atomic_int *cancel,
                    httpc_resp_t *out)
{
    char url[BACKEND_URL_MAX + 2048];
    snprintf(url, sizeof url, "%s%s", base, path);
    httpc_req_t req = {.method = method,
                       .url = url,
                       .body = body,
                       .body_len = body ? strlen(body) : 0,
                       .timeout_ms = timeout_ms,
                       .abort_flag = cancel,
                       .max_response = cap};
    return httpc_do(h, &req, out);
}

/* Writes the server's own error text ("detail", "error" or "message" of a JSON body, else the
 * start of the body) into buf, at most BACKEND_DETAIL_MAX bytes; "" when there is none. */
void backend_error_detail(const httpc_resp_t *r, char *buf, size_t buflen)
{
    buf[0] = '\0';
    if (!r->body || !r->len)
        return;
    size_t n = buflen < BACKEND_DETAIL_MAX + 1 ? buflen : BACKEND_DETAIL_MAX + 1;
    json_t *o = json_loadb(r->body, r->len, 0, NULL);
    if (json_is_object(o)) {
        static const char *const keys[] = {"detail", "error", "message", "errors"};
        for (size_t i = 0, used = 0; i < sizeof keys / sizeof keys[0] && used + 1 < n; i++) {
            json_t *v = json_object_get(o, keys[i]);
            char *d =
                json_is_string(v) || !v || json_is_null(v) ? NULL : json_dumps(v, JSON_COMPACT);
            const char *text = json_is_string(v) ? json_string_value(v) : d;
            if (text && *text) /* all of them: sd-server says {"error":"server_error","message"} */
                snprintf(buf + used, n - used, "%s%s", used ? ": " : "", text);
            used = strlen(buf);
            free(d);
        }
    }
    json_decref(o);
    if (!buf[0] && !o) {
        snprintf(buf, n, "%.*s", (int)(r->len < BACKEND_DETAIL_MAX ? r->len : BACKEND_DETAIL_MAX),
                 r->body);
    }
    for (char *p = buf; *p; p++) /* one log line */
        if (*p == '\n' || *p == '\r' || *p == '"')
            *p = *p == '"' ? '\'' : ' ';
}

void backend_get_patient(void *h, const char *base, const char *path, size_t cap, httpc_resp_t *out)
{
    int64_t sleep_ms = 250;
    for (int attempt = 0;; attempt++) {
        backend_request(h, base, "GET", path, NULL, 10000L, cap, NULL, out);
        int definite = out->status != 0 && out->status < 500;
        if (definite || attempt + 1 >= BACKEND_LOAD_TRIES)
            return;
        httpc_resp_free(out);
        clock_sleep_ms(sleep_ms);
        sleep_ms *= 2;
    }
}
