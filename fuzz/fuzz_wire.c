/* fuzz_wire.c: libFuzzer target for the worker-protocol bodies (src/wire.c): claim, heartbeat,
 * complete, fail, release, bye and the lifecycle report. The first input byte picks the operation,
 * the rest is the body. Built by scripts/fuzz.sh (see fuzz/README.md):
 *
 *   clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_wire.c \
 *       src/wire.c src/apierr.c -ljansson -o fuzz_wire
 *
 * Invariants: no crash, no leak; an accepted body yields fields inside their documented bounds
 * (worker_id 1..127 bytes without NUL, tier standard|enterprise, wait_ms 0..60000, lease_id
 * 1..39 bytes without NUL, gpu_seconds in [0, 1e7), an error message, heartbeat progress
 * 0 <= step <= steps <= 1e6; a lifecycle report's event, tier, capacity type, placement
 * characters, gpus 1..64 and busy 0..1e12 ms); a refused one is a 400
 * with a code and a message that can be sent as JSON. A first byte 'J' feeds the claim answer to
 * the worker's decoder (wire_parse_job) instead, 'S' a scaling event (wire_parse_scaling). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/wire.h"

static const char *const ops[] = {"heartbeat", "complete", "fail", "release", "frobnicate"};

static void check_error(const api_error_t *e)
{
    if (e->status != 400 || e->code[0] == '\0' || e->message[0] == '\0')
        abort();
    json_t *m = json_string(e->message);
    if (!m)
        abort();
    json_decref(m);
}

static void check_life(const wire_life_t *l)
{
    size_t n = strnlen(l->worker_id, sizeof l->worker_id);
    if (n == 0 || n > WIRE_WORKER_ID_MAX || l->gpus < 1 || l->gpus > 64 || l->busy_ms < 0 ||
        l->busy_ms > 1000000000000LL)
        abort();
    if (strcmp(l->tier, "standard") != 0 && strcmp(l->tier, "enterprise") != 0)
        abort();
    if (strcmp(l->event, "started") != 0 && strcmp(l->event, "loaded") != 0 &&
        strcmp(l->event, "alive") != 0 && strcmp(l->event, "ended") != 0)
        abort();
    if (l->capacity_type[0] && strcmp(l->capacity_type, "spot") != 0 &&
        strcmp(l->capacity_type, "on-demand") != 0)
        abort();
    const char *place[2] = {l->instance_type, l->zone};
    for (int i = 0; i < 2; i++)
        if (strspn(place[i], "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(place[i]) ||
            strlen(place[i]) > WIRE_PLACE_MAX)
            abort();
}

/* An accepted claim answer has an id and a lease, parameters inside the create body's bounds and
 * an http(s) upload target; a refused one says why. */
static void check_job(const char *body, size_t len)
{
    wire_job_t j;
    char err[128] = "";
    if (wire_parse_job(body, len, &j, err, sizeof err) != 0) {
        if (!err[0] || j.params.prompt)
            abort();
        return;
    }
    const job_params_t *p = &j.params;
    if (!j.id[0] || !j.lease_id[0] || j.heartbeat_ms < 1 || j.lease_ms < 1 || !p->prompt ||
        !p->negative_prompt || p->width < JOB_SIZE_MIN || p->width > JOB_SIZE_MAX ||
        p->height < JOB_SIZE_MIN || p->height > JOB_SIZE_MAX || p->steps < JOB_STEPS_MIN ||
        p->steps > JOB_STEPS_MAX || !(p->cfg_scale >= JOB_CFG_MIN && p->cfg_scale <= JOB_CFG_MAX) ||
        p->seed < 0 || p->seed > JOB_SEED_MAX)
        abort();
    if (strncmp(j.upload.url, "http", 4) != 0 ||
        (strcmp(j.upload.method, "PUT") != 0 && strcmp(j.upload.method, "POST") != 0))
        abort();
    wire_job_clear(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] == 'J') { /* the claim answer, as the worker decodes it */
        check_job((const char *)data + 1, size - 1);
        return 0;
    }
    if (data[0] == 'S') { /* a scaling event of `pingvas autoscale` */
        wire_scaling_t ev;
        api_error_t e;
        if (wire_parse_scaling((const char *)data + 1, size - 1, &ev, &e) != 0)
            check_error(&e);
        else if (tier_index(ev.tier) < 0 || ev.from < 0 || ev.to < 0 ||
                 ev.from > WIRE_REPLICAS_MAX || ev.to > WIRE_REPLICAS_MAX ||
                 strnlen(ev.reason, sizeof ev.reason) > WIRE_REASON_MAX)
            abort();
        return 0;
    }
    unsigned sel = data[0] % 8;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    api_error_t e;
    if (sel == 0) {
        wire_claim_t c;
        if (wire_parse_claim(body, len, &c, &e) == 0) {
            size_t n = strnlen(c.worker_id, sizeof c.worker_id);
            if (n == 0 || n > WIRE_WORKER_ID_MAX)
                abort();
            if (strcmp(c.tier, "standard") != 0 && strcmp(c.tier, "enterprise") != 0)
                abort();
            if (c.wait_ms < 0 || c.wait_ms > WIRE_CLAIM_WAIT_MAX_MS)
                abort();
        } else {
            check_error(&e);
        }
    } else if (sel == 7) {
        wire_life_t l;
        if (wire_parse_life(body, len, &l, &e) == 0)
            check_life(&l);
        else
            check_error(&e);
    } else if (sel == 6) {
        wire_bye_t b;
        if (wire_parse_bye(body, len, &b, &e) == 0) {
            if (strnlen(b.worker_id, sizeof b.worker_id) > WIRE_WORKER_ID_MAX)
                abort();
        } else {
            check_error(&e);
        }
    } else {
        const char *op = ops[sel - 1];
        wire_report_t r;
        if (wire_parse_report(op, body, len, &r, &e) == 0) {
            size_t n = strnlen(r.lease_id, sizeof r.lease_id);
            if (n == 0 || n >= JOB_ID_SIZE)
                abort();
            if (strcmp(op, "complete") == 0 && !(r.gpu_seconds >= 0 && r.gpu_seconds < 1e7))
                abort();
            if (strcmp(op, "fail") == 0 &&
                (r.error[0] == '\0' || strnlen(r.error, sizeof r.error) > WIRE_ERROR_MAX))
                abort();
            if (r.retryable != 0 && r.retryable != 1)
                abort();
            if (r.steps < 0 || r.steps > WIRE_STEPS_MAX || r.step < 0 || r.step > r.steps ||
                (r.steps == 0 && r.step != 0))
                abort();
        } else {
            check_error(&e);
        }
    }
    return 0;
}
