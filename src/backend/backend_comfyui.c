/* backend_comfyui.c: the comfyui backend. Each job is an API-format workflow (the shipped SD 1.5
 * txt2img graph, or --comfyui-workflow) with the job's parameters put in its placeholders, sent
 * to a ComfyUI server with POST /prompt; progress and the end come over the /ws WebSocket
 * (progress, executing, execution_start, execution_success, execution_error,
 * execution_interrupted); the image is read from /history/{prompt_id} and /view. Cancel removes
 * the prompt from ComfyUI's queue (POST /queue {"delete":[id]}) when it has not started, and
 * POSTs /interrupt when it runs. Rules and limits: docs/backends.md. */
#include "backend/backend.h"
#include "backend/comfyui_proto.h"
#include "blob/sigv4.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/clock.h"
#include "lib/httpc.h"
#include "lib/log.h"
#include "lib/wsc.h"

#define CF_MAX_CKPTS 32
#define CF_NAME_MAX 256
#define CF_PNG_MAX (64u * 1024u * 1024u)
#define CF_SMALL_MAX (8u * 1024u * 1024u) /* object_info, history, errors */
#define CF_WORKFLOW_MAX (4L * 1024L * 1024L)
#define CF_WS_OPEN_MS 10000L
#define CF_WS_HELLO_MS 10000L /* ComfyUI's first "status" message: the socket is registered */
#define CF_TICK_MS 50L
#define CF_HISTORY_WAIT_MS 5000L
#define CF_HISTORY_TRIES 4
#define CF_HTTP_MS 30000L
#define CF_ERR_MAX (COMFYUI_ERR_MAX + 64)
#define CF_DEFAULT_CKPTS "sd15=v1-5-pruned-emaonly.safetensors"

/* The shipped workflow: SD 1.5 txt2img in ComfyUI's API format. Placeholders: docs/backends.md. */
static const char shipped_workflow[] =
    "{"
    "\"3\":{\"class_type\":\"KSampler\",\"inputs\":{\"seed\":\"{{seed}}\",\"steps\":\"{{steps}}\","
    "\"cfg\":\"{{cfg}}\",\"sampler_name\":\"euler\",\"scheduler\":\"normal\",\"denoise\":1.0,"
    "\"model\":[\"4\",0],\"positive\":[\"6\",0],\"negative\":[\"7\",0],"
    "\"latent_image\":[\"5\",0]}},"
    "\"4\":{\"class_type\":\"CheckpointLoaderSimple\",\"inputs\":{\"ckpt_name\":"
    "\"{{checkpoint}}\"}},"
    "\"5\":{\"class_type\":\"EmptyLatentImage\",\"inputs\":{\"width\":\"{{width}}\","
    "\"height\":\"{{height}}\",\"batch_size\":1}},"
    "\"6\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"{{prompt}}\","
    "\"clip\":[\"4\",1]}},"
    "\"7\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"{{negative_prompt}}\","
    "\"clip\":[\"4\",1]}},"
    "\"8\":{\"class_type\":\"VAEDecode\",\"inputs\":{\"samples\":[\"3\",0],\"vae\":[\"4\",2]}},"
    "\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"filename_prefix\":\"pingvas\","
    "\"images\":[\"8\",0]}}"
    "}";

typedef struct ckpt {
    char model[64];
    char file[CF_NAME_MAX];
} ckpt_t;

typedef struct comfy {
    backend_t base; /* first: a backend_t * is a comfy_t * */
    char url[BACKEND_URL_MAX];
    char workflow_src[512]; /* "the shipped SD 1.5 workflow" or the file's path */
    httpc_t *h;
    json_t *workflow;
    ckpt_t ckpts[CF_MAX_CKPTS];
    int nckpts;
    int64_t hang_grace_ms;
    backend_rate_t rate;
    int loaded;
} comfy_t;

/* One job in flight. */
typedef struct run {
    comfy_t *c;
    backend_ctl_t *ctl;
    char prompt_id[128];
    int64_t t_start, t_end;   /* monotonic ms when execution_start and the end were read */
    int64_t ts_start, ts_end; /* the server's "timestamp" of execution_start and _success */
    int done;                 /* 1 success, -1 error, 2 interrupted */
    int finished;             /* "executing" with node null: the server has stored the history */
    char err[CF_ERR_MAX];
} run_t;

static int cf_request(comfy_t *c, const char *method, const char *path, const char *body,
                      size_t cap, httpc_resp_t *out)
{
    return backend_request(c->h, c->url, method, path, body, CF_HTTP_MS, cap, NULL, out);
}

/* Reads and checks the workflow (file or shipped). 0, or -1 with err set. */
static int workflow_load(comfy_t *c, const char *path, char *err, size_t errlen)
{
    json_error_t je;
    struct stat st;
    if (path && path[0] && stat(path, &st) == 0 && st.st_size > CF_WORKFLOW_MAX) {
        snprintf(err, errlen, "comfyui backend: workflow %s is larger than %ld bytes", path,
                 CF_WORKFLOW_MAX);
        return -1;
    }
    if (path && path[0])
        c->workflow = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    else
        c->workflow = json_loads(shipped_workflow, 0, &je);
    snprintf(c->workflow_src, sizeof c->workflow_src, "%s",
             path && path[0] ? path : "the shipped SD 1.5 workflow");
    if (!c->workflow) {
        snprintf(err, errlen, "comfyui backend: workflow %s: %s (line %d)", c->workflow_src,
                 je.text, je.line);
        return -1;
    }
    char why[200];
    if (comfyui_workflow_check(c->workflow, why, sizeof why) != 0) {
        snprintf(err, errlen, "comfyui backend: workflow %s %s", c->workflow_src, why);
        return -1;
    }
    return 0;
}

/* ---- workflow and checkpoints ---- */

/* Parses "model=file,model=file". 0, or -1 with err set. */
static int parse_ckpts(comfy_t *c, const char *spec, char *err, size_t errlen)
{
    const char *p = spec && spec[0] ? spec : CF_DEFAULT_CKPTS;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof c->ckpts[0].model ||
            n - (size_t)(eq - p) - 1 == 0 || n - (size_t)(eq - p) - 1 >= CF_NAME_MAX ||
            c->nckpts >= CF_MAX_CKPTS) {
            snprintf(err, errlen,
                     "comfyui backend: --comfyui-checkpoints: \"%.200s\" is not a list of "
                     "model=checkpoint-file pairs (at most %d), e.g. %s",
                     spec, CF_MAX_CKPTS, CF_DEFAULT_CKPTS);
            return -1;
        }
        ckpt_t *k = &c->ckpts[c->nckpts++];
        snprintf(k->model, sizeof k->model, "%.*s", (int)(eq - p), p);
        snprintf(k->file, sizeof k->file, "%.*s", (int)(n - (size_t)(eq - p) - 1), eq + 1);
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

static const char *ckpt_for(const comfy_t *c, const char *model)
{
    for (int i = 0; i < c->nckpts; i++)
        if (strcmp(c->ckpts[i].model, model) == 0)
            return c->ckpts[i].file;
    return NULL;
}

/* The checkpoint names the server offers: from /object_info/CheckpointLoaderSimple (the
 * ckpt_name choices, old [[names], {...}] or new ["COMBO", {"options": [names]}] form), else
 * from /models/checkpoints. Returns a JSON array (caller decrefs) or NULL. */
static json_t *names_from_object_info(json_t *info)
{
    json_t *spec = json_object_get(
        json_object_get(json_object_get(json_object_get(info, "CheckpointLoaderSimple"), "input"),
                        "required"),
        "ckpt_name");
    json_t *first = json_array_get(spec, 0);
    if (json_is_array(first))
        return json_incref(first);
    json_t *opts = json_object_get(json_array_get(spec, 1), "options");
    return json_is_array(opts) ? json_incref(opts) : NULL;
}

static int check_checkpoints(comfy_t *c, const httpc_resp_t *r, char *err, size_t errlen)
{
    json_t *doc = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
    json_t *names = names_from_object_info(doc);
    json_decref(doc);
    if (!names) {
        httpc_resp_t m;
        cf_request(c, "GET", "/models/checkpoints", NULL, CF_SMALL_MAX, &m);
        json_t *list = m.status == 200 ? json_loadb(m.body ? m.body : "", m.len, 0, NULL) : NULL;
        httpc_resp_free(&m);
        if (!json_is_array(list)) {
            json_decref(list);
            snprintf(err, errlen,
                     "comfyui backend: server %s lists no checkpoints (neither "
                     "/object_info/CheckpointLoaderSimple nor /models/checkpoints answered)",
                     c->url);
            return -1;
        }
        names = list;
    }
    int rc = 0;
    for (int i = 0; i < c->nckpts && rc == 0; i++) {
        int found = 0;
        size_t j;
        json_t *n;
        json_array_foreach(names, j, n) if (json_is_string(n) &&
                                            strcmp(json_string_value(n), c->ckpts[i].file) == 0)
            found = 1;
        if (!found) {
            snprintf(err, errlen,
                     "comfyui backend: checkpoint \"%s\" (model %s) is not on the ComfyUI server "
                     "%s (%zu checkpoints there); put it in ComfyUI's models/checkpoints or fix "
                     "--comfyui-checkpoints",
                     c->ckpts[i].file, c->ckpts[i].model, c->url, json_array_size(names));
            rc = -1;
        }
    }
    json_decref(names);
    return rc;
}

/* ---- backend_ops: load ---- */

static int cf_load(backend_t *b, char *err, size_t errlen)
{
    comfy_t *c = (comfy_t *)b;
    httpc_resp_t r;
    backend_get_patient(c->h, c->url, "/object_info/CheckpointLoaderSimple", CF_SMALL_MAX, &r);
    int rc = BACKEND_ERR;
    if (r.status == 0) {
        snprintf(err, errlen,
                 "comfyui backend: ComfyUI server %s not reachable: %s (start ComfyUI first, or "
                 "set --comfyui-url)",
                 c->url, r.error);
    } else if (r.status != 200) {
        char detail[BACKEND_DETAIL_MAX + 1];
        backend_error_detail(&r, detail, sizeof detail);
        snprintf(err, errlen,
                 "comfyui backend: %s is not a ComfyUI server: GET "
                 "/object_info/CheckpointLoaderSimple answered HTTP %ld%s%s",
                 c->url, r.status, detail[0] ? ": " : "", detail);
    } else if (check_checkpoints(c, &r, err, errlen) == 0) {
        c->loaded = 1;
        rc = BACKEND_OK;
        log_info("event=comfyui_ready url=%s workflow=\"%s\" checkpoints=%d", c->url,
                 c->workflow_src, c->nckpts);
    }
    httpc_resp_free(&r);
    return rc;
}

/* ---- generate: messages ---- */

/* Applies one WebSocket message to the run; other prompts' messages are ignored. */
static void on_message(run_t *r, const char *text, size_t len)
{
    comfyui_msg_t m;
    comfyui_msg_parse(text, len, r->prompt_id, &m);
    int64_t now = clock_mono_ms();
    if (m.mine == 0 || (m.mine < 0 && m.kind != CM_PROGRESS)) /* old servers: progress unnamed */
        return;
    switch (m.kind) {
    case CM_START:
        if (!r->t_start) {
            r->t_start = now;
            r->ts_start = m.timestamp;
        }
        break;
    case CM_EXECUTING:
        if (!r->t_start)
            r->t_start = now;
        if (m.node_null) {
            r->finished = 1;
            if (!r->done) /* servers before execution_success: this is the end */
                r->done = 1;
        }
        break;
    case CM_PROGRESS:
        backend_progress(r->ctl, m.value, m.max);
        break;
    case CM_SUCCESS:
        r->done = 1;
        r->ts_end = m.timestamp;
        break;
    case CM_ERROR:
        snprintf(r->err, sizeof r->err, "comfyui backend: %s", m.error);
        r->done = -1;
        break;
    case CM_INTERRUPTED:
        r->done = 2;
        break;
    default:
        break;
    }
    if (r->done && !r->t_end)
        r->t_end = now;
}

/* Waits for ComfyUI's first "status" message: the server has registered our client id. */
static int wait_hello(wsc_t *ws, char *err, size_t errlen)
{
    int64_t end = clock_mono_ms() + CF_WS_HELLO_MS;
    while (clock_mono_ms() < end) {
        char *msg;
        size_t len;
        int got = wsc_next(ws, CF_TICK_MS, &msg, &len, err, errlen);
        if (got < 0)
            return -1;
        if (got == 0)
            continue;
        comfyui_msg_t m;
        comfyui_msg_parse(msg, len, "", &m);
        free(msg);
        if (m.kind == CM_STATUS)
            return 0;
    }
    snprintf(err, errlen, "no \"status\" message in %ld s", CF_WS_HELLO_MS / 1000);
    return -1;
}

/* ---- generate: prompt, cancel, result ---- */

/* POSTs the workflow; fills r->prompt_id. 0, or -1 with r->err set. */
static int post_prompt(run_t *r, json_t *wf, const char *client_id)
{
    json_t *o = json_pack("{s:O, s:s}", "prompt", wf, "client_id", client_id);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body) {
        snprintf(r->err, sizeof r->err, "comfyui backend: out of memory");
        return -1;
    }
    httpc_resp_t resp;
    cf_request(r->c, "POST", "/prompt", body, CF_SMALL_MAX, &resp);
    free(body);
    json_t *doc = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
    const char *pid = json_string_value(json_object_get(doc, "prompt_id"));
    int rc = -1;
    if (resp.status == 200 && pid && strlen(pid) < sizeof r->prompt_id) {
        snprintf(r->prompt_id, sizeof r->prompt_id, "%s", pid);
        rc = 0;
    } else if (resp.status == 0) {
        snprintf(r->err, sizeof r->err, "comfyui backend: POST %s/prompt failed: %s", r->c->url,
                 resp.error);
    } else {
        json_t *e = json_object_get(doc, "error");
        const char *msg = json_is_string(e) ? json_string_value(e)
                                            : json_string_value(json_object_get(e, "message"));
        const char *det = json_string_value(json_object_get(e, "details"));
        char *ne = json_dumps(json_object_get(doc, "node_errors"), JSON_COMPACT);
        snprintf(r->err, sizeof r->err,
                 "comfyui backend: ComfyUI refused the workflow (HTTP %ld): %.120s%s%.80s%s%.150s",
                 resp.status, msg ? msg : "no prompt_id in the answer", det && *det ? ": " : "",
                 det ? det : "", ne && strcmp(ne, "{}") ? "; node_errors " : "",
                 ne && strcmp(ne, "{}") ? ne : "");
        free(ne);
    }
    json_decref(doc);
    httpc_resp_free(&resp);
    return rc;
}

/* 1 when prompt_id is in list (GET /queue's queue_running or queue_pending entries). */
static int in_queue_list(json_t *list, const char *prompt_id)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *id = json_string_value(json_array_get(e, 1));
        if (id && strcmp(id, prompt_id) == 0)
            return 1;
    }
    return 0;
}

/* Stops our prompt: out of the queue when it waits there, /interrupt when it runs. Returns 1
 * when it was running (an execution_interrupted message will follow), else 0. */
static int stop_prompt(comfy_t *c, const char *prompt_id)
{
    httpc_resp_t q;
    cf_request(c, "GET", "/queue", NULL, CF_SMALL_MAX, &q);
    json_t *doc = q.status == 200 ? json_loadb(q.body ? q.body : "", q.len, 0, NULL) : NULL;
    httpc_resp_free(&q);
    int pending = in_queue_list(json_object_get(doc, "queue_pending"), prompt_id);
    int running = !doc || in_queue_list(json_object_get(doc, "queue_running"), prompt_id);
    json_decref(doc);
    json_t *o = pending ? json_pack("{s:[s]}", "delete", prompt_id)
                        : json_pack("{s:s}", "prompt_id", prompt_id);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body && (pending || running)) {
        httpc_resp_t r;
        cf_request(c, "POST", pending ? "/queue" : "/interrupt", body, CF_SMALL_MAX, &r);
        log_info("event=comfyui_stop prompt=%s how=%s status=%ld", prompt_id,
                 pending ? "queue_delete" : "interrupt", r.status);
        httpc_resp_free(&r);
    }
    free(body);
    return running && !pending;
}

/* The first image of the prompt's outputs (type "output" preferred): GET /history/{id}, then
 * /view. 0 with out->png set, or -1 with r->err set. */
static int is_output(json_t *img)
{
    const char *type = json_string_value(json_object_get(img, "type"));
    return type && strcmp(type, "output") == 0;
}

static json_t *pick_image(json_t *outputs)
{
    const char *node;
    json_t *o, *best = NULL;
    json_object_foreach(outputs, node, o)
    {
        size_t i;
        json_t *img;
        json_array_foreach(json_object_get(o, "images"), i, img)
        {
            if (!json_is_string(json_object_get(img, "filename")))
                continue;
            if (!best || (is_output(img) && !is_output(best)))
                best = img;
        }
    }
    return best;
}

static int view_image(run_t *r, json_t *img, backend_result_t *out)
{
    const char *fields[3] = {"filename", "subfolder", "type"};
    char path[2048] = "/view?";
    for (int i = 0; i < 3; i++) {
        const char *v = json_string_value(json_object_get(img, fields[i]));
        char esc[2048]; /* percent-encoded as a query value (the encoder of SigV4 does just that) */
        if (sigv4_uri_encode(v ? v : (i == 2 ? "output" : ""), 0, esc, sizeof esc) < 0)
            esc[0] = '\0';
        size_t used = strlen(path);
        snprintf(path + used, sizeof path - used, "%s%s=%s", i ? "&" : "", fields[i], esc);
    }
    httpc_resp_t resp;
    cf_request(r->c, "GET", path, NULL, CF_PNG_MAX, &resp);
    int rc = -1;
    if (resp.status != 200) {
        snprintf(r->err, sizeof r->err, "comfyui backend: GET %.300s answered %ld %s", path,
                 resp.status, resp.status ? "" : resp.error);
    } else if (!backend_is_png((const unsigned char *)resp.body, resp.len)) {
        snprintf(r->err, sizeof r->err, "comfyui backend: the image from %.300s is not a PNG",
                 path);
    } else {
        out->png = (unsigned char *)resp.body;
        out->png_len = resp.len;
        resp.body = NULL;
        rc = 0;
    }
    httpc_resp_free(&resp);
    return rc;
}

/* GET /history/{id}: the prompt's entry (new reference), or NULL while the server has none.
 * Servers that say "executing" null before they store the history (and a wait for that
 * message that ran out) get CF_HISTORY_TRIES reads, 100, 200, 400 ms apart. */
static json_t *history_entry(run_t *r, const char *path)
{
    json_t *entry = NULL;
    for (int i = 0; i < CF_HISTORY_TRIES && !entry; i++) {
        if (i)
            clock_sleep_ms(100L << (i - 1));
        httpc_resp_t resp;
        cf_request(r->c, "GET", path, NULL, CF_SMALL_MAX, &resp);
        json_t *doc =
            resp.status == 200 ? json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL) : NULL;
        httpc_resp_free(&resp);
        entry = json_incref(json_object_get(doc, r->prompt_id));
        json_decref(doc);
    }
    return entry;
}

static int fetch_image(run_t *r, backend_result_t *out)
{
    char path[256];
    snprintf(path, sizeof path, "/history/%s", r->prompt_id);
    json_t *entry = history_entry(r, path);
    json_t *img = pick_image(json_object_get(entry, "outputs"));
    int rc = -1;
    if (!img)
        snprintf(r->err, sizeof r->err,
                 "comfyui backend: prompt %s finished but GET %s has %s (does the workflow end "
                 "in a SaveImage node?)",
                 r->prompt_id, path, entry ? "no image in its outputs" : "no entry for it");
    else
        rc = view_image(r, img, out);
    json_decref(entry);
    return rc;
}

/* ---- generate ---- */

/* The workflow with this job's values in its placeholders (new reference), or NULL with err. */
static json_t *job_workflow(comfy_t *c, const job_params_t *p, char *err, size_t errlen)
{
    const char *ckpt = ckpt_for(c, p->model);
    if (!ckpt) {
        snprintf(err, errlen,
                 "comfyui backend: no checkpoint configured for model \"%s\" (add %s=FILE to "
                 "--comfyui-checkpoints)",
                 p->model, p->model);
        return NULL;
    }
    json_t *wf = comfyui_workflow_fill(c->workflow, p, ckpt);
    if (!wf) {
        snprintf(err, errlen, "comfyui backend: out of memory");
        return NULL;
    }
    return wf;
}

/* The prompt has ended: failed, interrupted, or succeeded and its history is stored (the
 * "executing" node null that follows; at most CF_HISTORY_WAIT_MS after execution_success). */
static int ended(const run_t *r)
{
    if (r->done == -1 || r->done == 2 || r->finished)
        return 1;
    return r->done == 1 && clock_mono_ms() - r->t_end > CF_HISTORY_WAIT_MS;
}

/* Follows the prompt over the WebSocket until it ends, is canceled, hangs or the socket drops.
 * Returns a backend_rc; r->err says why on BACKEND_ERR. */
static int follow(run_t *r, wsc_t *ws, int64_t deadline)
{
    while (!ended(r)) {
        char *msg, why[256] = "";
        size_t len;
        int got = wsc_next(ws, CF_TICK_MS, &msg, &len, why, sizeof why);
        if (got > 0) {
            on_message(r, msg, len);
            free(msg);
            continue;
        }
        int canceled = atomic_load(&r->ctl->cancel);
        if (got < 0 || canceled || clock_mono_ms() >= deadline) {
            int step = 0, steps = 0;
            backend_progress_get(r->ctl, &step, &steps);
            int was_running = stop_prompt(r->c, r->prompt_id);
            if (canceled)
                return BACKEND_CANCELED;
            if (got < 0)
                snprintf(r->err, sizeof r->err,
                         "comfyui backend: the WebSocket to %s dropped mid-job (%s) at step %d/%d; "
                         "prompt %s %s",
                         r->c->url, why, step, steps, r->prompt_id,
                         was_running ? "interrupted" : "removed from the queue");
            else
                snprintf(r->err, sizeof r->err,
                         "comfyui backend: ComfyUI did not finish prompt %s in time (hung at "
                         "step %d/%d; deadline 4 x the estimate + grace); prompt stopped",
                         r->prompt_id, step, steps);
            return BACKEND_ERR;
        }
    }
    if (r->done == 2) {
        snprintf(r->err, sizeof r->err,
                 "comfyui backend: prompt %s was interrupted on the ComfyUI server (not by this "
                 "worker)",
                 r->prompt_id);
        return atomic_load(&r->ctl->cancel) ? BACKEND_CANCELED : BACKEND_ERR;
    }
    return r->done == 1 ? BACKEND_OK : BACKEND_ERR;
}

/* The prompt's execution time, queueing excluded: from the server's own timestamps on
 * execution_start and execution_success when it sends them (ComfyUI since 2024), else from when
 * this worker read those messages. */
static double run_seconds(const run_t *r)
{
    if (r->ts_start > 0 && r->ts_end >= r->ts_start)
        return (double)(r->ts_end - r->ts_start) / 1000.0;
    int64_t t0 = r->t_start ? r->t_start : r->t_end;
    return (double)(r->t_end - t0) / 1000.0;
}

static int cf_generate(backend_t *b, const job_params_t *p, backend_ctl_t *ctl,
                       backend_result_t *out, char *err, size_t errlen)
{
    comfy_t *c = (comfy_t *)b;
    memset(out, 0, sizeof *out);
    if (!c->loaded || !p->prompt || p->width < 1 || p->height < 1 || p->steps < 1) {
        snprintf(err, errlen, "comfyui backend: %s",
                 c->loaded ? "invalid job parameters" : "generate called before load");
        return BACKEND_ERR;
    }
    if (atomic_load(&ctl->cancel))
        return BACKEND_CANCELED;
    json_t *wf = job_workflow(c, p, err, errlen);
    if (!wf)
        return BACKEND_ERR;
    run_t r = {.c = c, .ctl = ctl};
    char client_id[33], path[64], why[256] = "";
    random_hex(client_id, 16);
    snprintf(path, sizeof path, "/ws?clientId=%s", client_id);
    int rc = BACKEND_ERR;
    int64_t deadline = clock_mono_ms() + backend_hang_deadline_ms(
                                             backend_rate_estimate(&c->rate, p), c->hang_grace_ms);
    wsc_t *ws = wsc_open(c->url, path, CF_WS_OPEN_MS, why, sizeof why);
    if (!ws || wait_hello(ws, why, sizeof why) != 0) {
        snprintf(err, errlen, "comfyui backend: cannot follow progress on %s/ws: %s", c->url, why);
        goto out;
    }
    if (post_prompt(&r, wf, client_id) != 0) {
        snprintf(err, errlen, "%s", r.err);
        goto out;
    }
    log_info("event=comfyui_prompt prompt=%s", r.prompt_id);
    rc = follow(&r, ws, deadline);
    if (rc == BACKEND_OK && fetch_image(&r, out) != 0)
        rc = BACKEND_ERR;
    if (rc == BACKEND_OK) {
        out->gpu_seconds = run_seconds(&r);
        backend_rate_add(&c->rate, p, out->gpu_seconds);
    } else if (rc == BACKEND_ERR) {
        snprintf(err, errlen, "%s", r.err);
    }
out:
    wsc_close(ws);
    json_decref(wf);
    return rc;
}

static int cf_serves(backend_t *b, const char *model)
{
    return ckpt_for((const comfy_t *)b, model) != NULL;
}

static double cf_estimate_seconds(backend_t *b, const job_params_t *p)
{
    return backend_rate_estimate(&((const comfy_t *)b)->rate, p);
}

static void cf_destroy(backend_t *b)
{
    comfy_t *c = (comfy_t *)b;
    if (!c)
        return;
    if (c->h)
        httpc_free(c->h);
    json_decref(c->workflow);
    free(c);
}

static const struct backend_ops comfy_ops = {
    .name = "comfyui",
    .load = cf_load,
    .generate = cf_generate,
    .estimate_seconds = cf_estimate_seconds,
    .serves = cf_serves,
    .destroy = cf_destroy,
};

/* Returns a new backend the caller destroys with ops->destroy, or NULL with err set (bad URL,
 * unreadable or invalid workflow, bad checkpoint list). */
backend_t *backend_comfyui_create(const backend_config_t *cfg, char *err, size_t errlen)
{
    comfy_t *c = calloc(1, sizeof *c);
    if (!c || !(c->h = httpc_new())) {
        free(c);
        snprintf(err, errlen, "comfyui backend: out of memory");
        return NULL;
    }
    c->base.ops = &comfy_ops;
    c->hang_grace_ms = cfg->hang_grace_ms;
    if (backend_base_url(cfg->comfyui_url, "comfyui", "--comfyui-url or PINGVAS_COMFYUI_URL",
                         c->url, sizeof c->url, err, errlen) != 0 ||
        workflow_load(c, cfg->comfyui_workflow, err, errlen) != 0 ||
        parse_ckpts(c, cfg->comfyui_checkpoints, err, errlen) != 0) {
        cf_destroy(&c->base);
        return NULL;
    }
    return &c->base;
}
