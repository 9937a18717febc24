/* celery.c: the Celery bridge. See celery.h and docs/celery.md.
 *
 * Parsing and result formatting are pure functions on jansson. The bridge is one thread with
 * one hiredis connection for commands, and one subscribed to kombu's remote-control channel for
 * revokes (read without blocking between polls). It pops messages (a Lua script that moves a
 * message from its list into kombu's `unacked` hash and `unacked_index` sorted set in one step),
 * adopts the row, and settles the message (a second script: record the task id, or write a FAILURE
 * result, and remove the message from `unacked`/`unacked_index`, which is kombu's ack). Between
 * polls it writes the results of jobs that ended, restores unacked messages older than the
 * visibility timeout to their lists, and reconnects with backoff when Redis goes away. */
#include "bridge/celery.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/b64.h"
#include "lib/url.h"
#include "lib/clock.h"
#include "lib/log.h"

/* ---- small helpers ---- */

static void copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

/* A string that can be used in a Redis key name and a log line: 1..max printable ASCII
 * characters, no space, quote or backslash. */
static bool safe_token(const char *s, size_t max)
{
    size_t n = 0;
    if (!s || !*s)
        return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max || c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return false;
    }
    return true;
}

static bool valid_job_id(const char *s)
{
    size_t n = 0;
    if (!s || !*s)
        return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= JOB_ID_SIZE - 1 || !(isalnum(c) || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* ---- envelope parsing ---- */

static int reject(celery_reject_t *rej, const char *reason, const char *exc_type,
                  const char *exc_module, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int reject(celery_reject_t *rej, const char *reason, const char *exc_type,
                  const char *exc_module, const char *fmt, ...)
{
    va_list ap;
    rej->reason = reason;
    rej->exc_type = exc_type;
    rej->exc_module = exc_module;
    va_start(ap, fmt);
    vsnprintf(rej->message, sizeof rej->message, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *obj_str(json_t *o, const char *key)
{
    json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The body as JSON: inline JSON, a JSON text in a string, or base64 of a JSON text. New
 * reference, or NULL (rej set). */
static json_t *load_body(json_t *env, json_t *props, celery_reject_t *rej)
{
    json_t *body = json_object_get(env, "body");
    const char *enc = obj_str(props, "body_encoding");
    if (json_is_array(body) || json_is_object(body))
        return json_incref(body);
    if (!json_is_string(body)) {
        reject(rej, "bad_envelope", "ValueError", "builtins", "the envelope has no body");
        return NULL;
    }
    const char *text = json_string_value(body);
    size_t tlen = json_string_length(body);
    unsigned char *decoded = NULL;
    if (enc && strcmp(enc, "base64") == 0) {
        decoded = b64_decode(text, tlen, 0, CELERY_MESSAGE_MAX, &tlen);
        if (!decoded) {
            reject(rej, "bad_body", "ValueError", "builtins", "the body is not valid base64");
            return NULL;
        }
        text = (const char *)decoded;
    } else if (enc && *enc) {
        reject(rej, "bad_body", "ValueError", "builtins", "unsupported body_encoding '%.64s'", enc);
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(text, tlen, JSON_DECODE_ANY, &jerr);
    free(decoded);
    if (!j)
        reject(rej, "bad_body", "ValueError", "builtins", "the body is not JSON: %.120s",
               jerr.text);
    return j;
}

/* Picks the job id from args and kwargs, as Python would bind generate_image(self, job_id). */
static int bind_job_id(json_t *args, json_t *kwargs, celery_msg_t *out, celery_reject_t *rej)
{
    size_t nargs = json_is_array(args) ? json_array_size(args) : 0;
    json_t *kw = json_is_object(kwargs) ? json_object_get(kwargs, "job_id") : NULL;
    size_t nkw = json_is_object(kwargs) ? json_object_size(kwargs) : 0;
    json_t *v = NULL;
    if (args && !json_is_array(args))
        return reject(rej, "bad_args", "TypeError", "builtins", "args must be a list");
    if (kwargs && !json_is_object(kwargs) && !json_is_null(kwargs))
        return reject(rej, "bad_args", "TypeError", "builtins", "kwargs must be a dict");
    if (nargs > 1)
        return reject(rej, "bad_args", "TypeError", "builtins",
                      "generate_image() takes 2 positional arguments but %zu were given",
                      nargs + 1);
    if (nkw > (kw ? 1u : 0u))
        return reject(rej, "bad_args", "TypeError", "builtins",
                      "generate_image() got an unexpected keyword argument");
    if (nargs == 1 && kw)
        return reject(rej, "bad_args", "TypeError", "builtins",
                      "generate_image() got multiple values for argument 'job_id'");
    v = nargs == 1 ? json_array_get(args, 0) : kw;
    if (!v)
        return reject(rej, "missing_args", "TypeError", "builtins",
                      "generate_image() missing 1 required positional argument: 'job_id'");
    if (!json_is_string(v))
        return reject(rej, "bad_job_id", "ValueError", "builtins",
                      "job_id must be a string (a generation_jobs id)");
    if (!valid_job_id(json_string_value(v)))
        return reject(rej, "bad_job_id", "ValueError", "builtins",
                      "job_id '%.60s' is not a generation_jobs id", json_string_value(v));
    copy_str(out->job_id, sizeof out->job_id, json_string_value(v));
    return 0;
}

/* kombu's delivery bookkeeping and the task id from the envelope's headers and properties (the
 * id as early as possible: a reject can then still be answered with a result). */
static void read_envelope(json_t *headers, json_t *props, celery_msg_t *out)
{
    const char *tag = obj_str(props, "delivery_tag");
    if (tag && safe_token(tag, CELERY_ID_MAX))
        copy_str(out->delivery_tag, sizeof out->delivery_tag, tag);
    json_t *di = props ? json_object_get(props, "delivery_info") : NULL;
    copy_str(out->exchange, sizeof out->exchange, obj_str(di, "exchange"));
    copy_str(out->routing_key, sizeof out->routing_key, obj_str(di, "routing_key"));
    copy_str(out->reply_to, sizeof out->reply_to, obj_str(props, "reply_to"));
    json_t *pri = props ? json_object_get(props, "priority") : NULL;
    if (json_is_integer(pri)) {
        json_int_t p = json_integer_value(pri);
        out->priority = p < 0 ? 0 : p > 255 ? 255 : (int)p;
    }
    const char *id = obj_str(headers, "id");
    if (!id)
        id = obj_str(props, "correlation_id");
    if (id && safe_token(id, CELERY_ID_MAX))
        copy_str(out->task_id, sizeof out->task_id, id);
}

/* The task name and its args and kwargs: protocol 2 (the name in the headers, the body
 * [args, kwargs, embed]) or protocol 1 (all in the body). The name, or NULL after a reject. */
static const char *read_task(json_t *headers, json_t *body, json_t **args, json_t **kwargs,
                             celery_msg_t *out, celery_reject_t *rej)
{
    const char *task = obj_str(headers, "task");
    if (task) {
        out->protocol = 2;
        if (!json_is_array(body) || json_array_size(body) < 1) {
            reject(rej, "bad_body", "ValueError", "builtins",
                   "protocol 2 body must be [args, kwargs, embed]");
            return NULL;
        }
        *args = json_array_get(body, 0);
        *kwargs = json_array_get(body, 1);
        return task;
    }
    if (!json_is_object(body) || !obj_str(body, "task")) {
        reject(rej, "bad_envelope", "ValueError", "builtins",
               "no task name in headers (protocol 2) or body (protocol 1)");
        return NULL;
    }
    out->protocol = 1;
    const char *bid = obj_str(body, "id");
    if (!out->task_id[0] && bid && safe_token(bid, CELERY_ID_MAX))
        copy_str(out->task_id, sizeof out->task_id, bid);
    *args = json_object_get(body, "args");
    *kwargs = json_object_get(body, "kwargs");
    return obj_str(body, "task");
}

/* A task time (expires or eta: headers.<key> in protocol 2, body.<key> in protocol 1): null or
 * an ISO 8601 time into *out (ms; 0 for null). 0, or -1 after a reject ("bad_<key>"). */
static int read_time(json_t *v, const char *key, int64_t *out, celery_reject_t *rej)
{
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_string_value(v);
    /* Python's datetime.isoformat(), what Celery writes; a naive time is UTC, Celery's default */
    if (clock_parse_iso8601_ms(s, out) != 0)
        return reject(rej, strcmp(key, "eta") == 0 ? "bad_eta" : "bad_expires", "ValueError",
                      "builtins", "%s is not an ISO 8601 time: %.64s", key,
                      s ? s : "(not a string)");
    return 0;
}

int celery_parse(const char *data, size_t len, celery_msg_t *out, celery_reject_t *rej)
{
    json_t *env = NULL, *body = NULL, *args = NULL, *kwargs = NULL;
    json_error_t jerr;
    int rc = -1;
    memset(out, 0, sizeof *out);
    memset(rej, 0, sizeof *rej);
    if (len > CELERY_MESSAGE_MAX) {
        reject(rej, "too_large", "ValueError", "builtins", "message of %zu bytes (cap %d)", len,
               CELERY_MESSAGE_MAX);
        goto out;
    }
    env = json_loadb(data, len, 0, &jerr);
    if (!env) {
        reject(rej, "bad_json", "ValueError", "builtins", "not JSON: %.120s", jerr.text);
        goto out;
    }
    json_t *headers = json_object_get(env, "headers");
    json_t *props = json_object_get(env, "properties");
    headers = json_is_object(headers) ? headers : NULL;
    props = json_is_object(props) ? props : NULL;
    read_envelope(headers, props, out);
    const char *ctype = obj_str(env, "content-type");
    if (ctype && strcmp(ctype, "application/json") != 0) {
        reject(rej, "unsupported_content_type", "ContentDisallowed", "kombu.exceptions",
               "refusing to deserialize content of type %.64s", ctype);
        goto out;
    }
    body = load_body(env, props, rej);
    const char *task = body ? read_task(headers, body, &args, &kwargs, out, rej) : NULL;
    if (!task)
        goto out;
    copy_str(out->task, sizeof out->task, task);
    if (!out->task_id[0]) {
        reject(rej, "bad_envelope", "ValueError", "builtins", "the message has no valid task id");
        goto out;
    }
    if (strcmp(task, CELERY_TASK_NAME) != 0) {
        reject(rej, "unknown_task", "NotRegistered", "celery.exceptions", "'%.150s'", task);
        goto out;
    }
    json_t *times = out->protocol == 2 ? headers : body;
    if (read_time(json_object_get(times, "expires"), "expires", &out->expires_ms, rej) != 0 ||
        read_time(json_object_get(times, "eta"), "eta", &out->eta_ms, rej) != 0)
        goto out;
    rc = bind_job_id(args, kwargs, out, rej);
out:
    json_decref(body);
    json_decref(env);
    return rc;
}

/* ---- remote control (kombu's pidbox broadcast) ---- */

/* Appends one task id to out->task_ids. 0, or -1 for a value that is not a task id. */
static int add_revoked_id(celery_revoke_t *out, json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || !safe_token(s, CELERY_ID_MAX))
        return -1;
    void *grown = realloc(out->task_ids, ((size_t)out->n + 1) * sizeof *out->task_ids);
    if (!grown)
        return -1;
    out->task_ids = grown;
    copy_str(out->task_ids[out->n++], sizeof *out->task_ids, s);
    return 0;
}

int celery_parse_revoke(const char *data, size_t len, celery_revoke_t *out)
{
    celery_reject_t rej;
    json_error_t jerr;
    json_t *env = NULL, *body = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (len > CELERY_MESSAGE_MAX || !(env = json_loadb(data, len, 0, &jerr)) ||
        !json_is_object(env))
        goto out;
    const char *ctype = obj_str(env, "content-type");
    json_t *props = json_object_get(env, "properties");
    if ((ctype && strcmp(ctype, "application/json") != 0) ||
        !(body = load_body(env, json_is_object(props) ? props : NULL, &rej)) ||
        !json_is_object(body) || !obj_str(body, "method"))
        goto out;
    json_t *dest = json_object_get(body, "destination");
    rc = 0;
    if (strcmp(obj_str(body, "method"), "revoke") != 0 ||
        !(!dest || json_is_null(dest) || (json_is_array(dest) && json_array_size(dest) == 0)))
        goto out; /* another command, or one for named Celery workers */
    rc = -1;
    json_t *args = json_object_get(body, "arguments");
    json_t *ids = json_object_get(args, "task_id"), *v;
    size_t i;
    if (json_is_array(ids)) {
        json_array_foreach(ids, i, v) if (add_revoked_id(out, v) != 0) goto out;
    } else if (add_revoked_id(out, ids) != 0) {
        goto out;
    }
    out->terminate = json_is_true(json_object_get(args, "terminate"));
    rc = out->n > 0 ? 1 : -1;
out:
    if (rc != 1)
        celery_revoke_free(out);
    json_decref(body);
    json_decref(env);
    return rc;
}

void celery_revoke_free(celery_revoke_t *r)
{
    free(r->task_ids);
    r->task_ids = NULL;
    r->n = 0;
}

/* ---- results ---- */

/* Python's datetime.isoformat() of an aware UTC time: microseconds only when not zero. */
static void iso_date(int64_t now_ms, char *buf, size_t size)
{
    time_t t = (time_t)(now_ms / 1000);
    int ms = (int)(now_ms % 1000);
    struct tm tm;
    char base[32];
    gmtime_r(&t, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    if (ms)
        snprintf(buf, size, "%s.%03d000+00:00", base, ms);
    else
        snprintf(buf, size, "%s+00:00", base);
}

/* Steals result. */
static char *meta_json(const char *status, const char *task_id, json_t *result,
                       const char *traceback, int64_t now_ms)
{
    char date[48];
    char *text = NULL;
    iso_date(now_ms, date, sizeof date);
    json_t *m = json_object();
    if (!m || !result)
        goto out;
    json_object_set_new(m, "status", json_string(status));
    json_object_set(m, "result", result);
    json_object_set_new(m, "traceback", traceback ? json_string(traceback) : json_null());
    json_object_set_new(m, "children", json_array());
    json_object_set_new(m, "date_done", json_string(date));
    json_object_set_new(m, "task_id", json_string(task_id));
    text = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
    json_decref(result);
    json_decref(m);
    return text;
}

char *celery_result_success(const char *task_id, const char *image_url, int64_t now_ms)
{
    json_t *r = json_object();
    if (r) {
        json_object_set_new(r, "success", json_true());
        json_object_set_new(r, "image_url", image_url ? json_string(image_url) : json_null());
    }
    return meta_json("SUCCESS", task_id, r, NULL, now_ms);
}

char *celery_result_exception(const char *status, const char *task_id, const char *exc_type,
                              const char *exc_module, const char *message, int64_t now_ms)
{
    char tb[600];
    bool builtin = !exc_module || strcmp(exc_module, "builtins") == 0;
    json_t *r = json_object();
    if (r) {
        json_t *args = json_array();
        json_array_append_new(args, json_string(message ? message : ""));
        json_object_set_new(r, "exc_type", json_string(exc_type));
        json_object_set_new(r, "exc_message", args);
        json_object_set_new(r, "exc_module", json_string(builtin ? "builtins" : exc_module));
    }
    snprintf(tb, sizeof tb,
             "Traceback (most recent call last):\n"
             "  File \"pingvas\", line 1, in generate_image\n"
             "%s%s%s: %s\n",
             builtin ? "" : exc_module, builtin ? "" : ".", exc_type, message ? message : "");
    return meta_json(status, task_id, r, strcmp(status, "FAILURE") == 0 ? tb : NULL, now_ms);
}

char *celery_result_for_job(const job_t *j, const char *task_id, const char *image_url,
                            int64_t now_ms)
{
    switch (j->status) {
    case JOB_COMPLETED:
        return celery_result_success(task_id, image_url, now_ms);
    case JOB_FAILED:
        return celery_result_exception("FAILURE", task_id, "RuntimeError", "builtins",
                                       j->error_message ? j->error_message : "failed", now_ms);
    case JOB_CANCELED:
        return celery_result_exception("REVOKED", task_id, "TaskRevokedError", "celery.exceptions",
                                       "canceled", now_ms);
    default:
        return NULL;
    }
}

/* ---- configuration ---- */

int celery_parse_redis_url(const char *url, celery_redis_addr_t *out, char *err, size_t errlen)
{
    char shown[512], why[128]; /* the URL as messages show it: never its password */
    url_parts_t u;
    memset(out, 0, sizeof *out);
    log_redact_url(url, shown, sizeof shown);
    if (url_parse(url, 0, &u, why, sizeof why) != 0 || strcmp(u.scheme, "redis") != 0) {
        snprintf(err, errlen,
                 "REDIS_URL: '%s' is not redis://[[user]:password@]host[:port][/db]%s%s%s", shown,
                 url && strncmp(url, "redis://", 8) == 0 ? " (" : "",
                 url && strncmp(url, "redis://", 8) == 0 ? why : "",
                 url && strncmp(url, "redis://", 8) == 0 ? ")" : "");
        return -1;
    }
    if (strlen(u.user) >= sizeof out->user || strlen(u.password) >= sizeof out->password) {
        snprintf(err, errlen, "REDIS_URL: user or password too long");
        return -1;
    }
    snprintf(out->host, sizeof out->host, "%s", u.host);
    snprintf(out->user, sizeof out->user, "%s", u.user);
    snprintf(out->password, sizeof out->password, "%s", u.password);
    out->port = u.port ? u.port : 6379;
    const char *db = u.path[0] == '/' ? u.path + 1 : u.path;
    if (*db) {
        char *e = NULL;
        errno = 0;
        long n = strtol(db, &e, 10);
        if (errno || *e || e == db || n < 0 || n > 100000) {
            snprintf(err, errlen, "REDIS_URL: bad database number in '%s'", shown);
            return -1;
        }
        out->db = (int)n;
    }
    return 0;
}

static const int priority_steps[] = {0, 3, 6, 9};
#define NSTEPS 4
#define PRIORITY_SEP "\x06\x16"

int celery_queue_for_priority(const char *queue, int priority, char *buf, size_t size)
{
    int step = 0;
    for (int i = 0; i < NSTEPS; i++) /* steps[bisect(steps, n) - 1] */
        if (priority >= priority_steps[i])
            step = priority_steps[i];
    int n = step ? snprintf(buf, size, "%s" PRIORITY_SEP "%d", queue, step)
                 : snprintf(buf, size, "%s", queue);
    return n < 0 || (size_t)n >= size ? -1 : n;
}

/* ---- the bridge ---- */

#ifndef PINGVAS_HAVE_HIREDIS

celery_bridge_t *celery_bridge_start(const celery_config_t *cfg, store_t *store,
                                     celery_image_url_fn url_fn, celery_work_fn work_fn,
                                     celery_revoke_fn revoke_fn, void *arg, char *err,
                                     size_t errlen)
{
    snprintf(err, errlen,
             "REDIS_URL is set but this pingvas was built without hiredis "
             "(install libhiredis-dev and rebuild)");
    return NULL;
}
void celery_bridge_job_ended(celery_bridge_t *b, const char *job_id) {}
void celery_bridge_stop(celery_bridge_t *b) {}

#else

#include <hiredis/hiredis.h>

#define TASKS_KEY "pingvas-celery-tasks" /* job id -> space-separated Celery task ids */
#define UNACKED_KEY "unacked"
#define UNACKED_INDEX_KEY "unacked_index"
#define UNACKED_MUTEX_KEY "unacked_mutex"
#define UNACKED_MUTEX_EXPIRE_MS (300 * 1000) /* kombu's unacked_mutex_expire */
#define META_PREFIX "celery-task-meta-"
#define ENDED_MAX 1024   /* hints of ended jobs kept between two loop turns */
#define SWEEP_MS 2000    /* how often the mapping is checked against the store */
#define RESTORE_MAX 1000 /* unacked messages restored per pass */
#define WAIT_S "0.25"    /* how long one idle wait blocks */
#define TASK_IDS_MAX 4096
#define REVOKED_MAX 1024    /* task ids revoked before their message came (Celery: 50,000) */
#define CONTROL_PER_TURN 64 /* remote-control messages handled per loop turn */
#define HELD_MAX 100000     /* tasks held until their eta (a Celery worker: no cap) */
#define REFRESH_BATCH 256   /* held delivery tags per ZADD of their refreshed times */

/* Moves the next message (priority lists in order) into unacked / unacked_index, like kombu's
 * BRPOP + QoS.append but atomically. KEYS: the lists, then unacked, unacked_index. ARGV: now in
 * seconds, a delivery tag for a message without one, the queue name (default routing key).
 * Returns {list, message, tag}; tag "" for a message that is not JSON (not recorded). */
static const char pop_lua[] =
    "local n = #KEYS - 2\n"
    "for i = 1, n do\n"
    "  local m = redis.call('RPOP', KEYS[i])\n"
    "  if m then\n"
    "    local ok, env = pcall(cjson.decode, m)\n"
    "    if not ok or type(env) ~= 'table' then return {KEYS[i], m, ''} end\n"
    "    local tag, ex, rk = ARGV[2], '', ARGV[3]\n"
    "    local p = env['properties']\n"
    "    if type(p) == 'table' then\n"
    "      if type(p['delivery_tag']) == 'string' and p['delivery_tag'] ~= '' then\n"
    "        tag = p['delivery_tag'] end\n"
    "      local di = p['delivery_info']\n"
    "      if type(di) == 'table' then\n"
    "        if type(di['exchange']) == 'string' then ex = di['exchange'] end\n"
    "        if type(di['routing_key']) == 'string' then rk = di['routing_key'] end\n"
    "      end\n"
    "    end\n"
    "    redis.call('HSET', KEYS[n + 1], tag,\n"
    "      '[' .. m .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')\n"
    "    redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)\n"
    "    return {KEYS[i], m, tag}\n"
    "  end\n"
    "end\n"
    "return false\n";

/* Settles a delivered message: records the task id for the job (ARGV[2], ARGV[3]) and/or writes
 * a result (ARGV[4], expiring after ARGV[5] s), then acks it (kombu: ZREM unacked_index, HDEL
 * unacked). KEYS: unacked, unacked_index, the tasks hash, the result key. */
static const char settle_lua[] =
    "if ARGV[2] ~= '' then\n"
    "  local cur = redis.call('HGET', KEYS[3], ARGV[2])\n"
    "  if not cur then redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])\n"
    "  elseif not string.find(' ' .. cur .. ' ', ' ' .. ARGV[3] .. ' ', 1, true) then\n"
    "    redis.call('HSET', KEYS[3], ARGV[2], cur .. ' ' .. ARGV[3]) end\n"
    "end\n"
    "if ARGV[4] ~= '' then\n"
    "  redis.call('SETEX', KEYS[4], ARGV[5], ARGV[4])\n"
    "  redis.call('PUBLISH', KEYS[4], ARGV[4])\n"
    "end\n"
    "if ARGV[1] ~= '' then\n"
    "  redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "  redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "end\n"
    "return 1\n";

/* Writes the results of an ended job exactly once: only while the tasks hash still holds the
 * task ids read before (ARGV[2]). KEYS: the tasks hash, then one result key per task. ARGV: job
 * id, the ids, expiry, then one result per task. */
static const char finish_lua[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "for i = 2, #KEYS do\n"
    "  redis.call('SETEX', KEYS[i], ARGV[3], ARGV[i + 2])\n"
    "  redis.call('PUBLISH', KEYS[i], ARGV[i + 2])\n"
    "end\n"
    "return 1\n";

/* kombu's restore_by_tag, checked against the value read before. KEYS: unacked, unacked_index,
 * the destination list. ARGV: tag, the unacked value read, the payload, "1" to push leftmost. */
static const char restore_lua[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "if ARGV[4] == '1' then redis.call('LPUSH', KEYS[3], ARGV[3])\n"
    "else redis.call('RPUSH', KEYS[3], ARGV[3]) end\n"
    "return 1\n";

/* The job a task id was recorded for: the field of the tasks hash (KEYS[1]) whose value lists
 * ARGV[1], or false. */
static const char find_task_lua[] =
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #all, 2 do\n"
    "  if string.find(' ' .. all[i + 1] .. ' ', ' ' .. ARGV[1] .. ' ', 1, true) then\n"
    "    return all[i] end\n"
    "end\n"
    "return false\n";

static const char unlock_lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                 "  return redis.call('DEL', KEYS[1]) end\n"
                                 "return 0\n";

/* A task held until its eta, as a Celery worker keeps it (its message stays in unacked). */
struct held {
    int64_t eta_ms, expires_ms;
    char tag[CELERY_ID_MAX + 1];
    char task_id[CELERY_ID_MAX + 1];
    char job_id[JOB_ID_SIZE];
    char list[CELERY_NAME_MAX + 8];
};

struct celery_bridge {
    celery_config_t cfg;
    char *redis_url;
    char queue[CELERY_NAME_MAX + 1];
    char lists[NSTEPS][CELERY_NAME_MAX + 8];
    celery_redis_addr_t addr;
    store_t *store;
    celery_image_url_fn url_fn;
    celery_work_fn work_fn;
    celery_revoke_fn revoke_fn;
    void *arg;

    pthread_t thread;
    atomic_int stopping;
    redisContext *rc;
    redisContext *sub; /* subscribed to the remote-control channel (revokes) */
    char control[64];  /* that channel: kombu's "/<db>.celery.pidbox" */
    bool no_blmove;
    char revoked[REVOKED_MAX][CELERY_ID_MAX + 1]; /* task ids revoked, a ring */
    int revoked_next;
    struct held *held; /* tasks whose eta has not come: unacked, kept until it does */
    int nheld, held_cap;

    pthread_mutex_t mu; /* guards ended */
    char ended[ENDED_MAX][JOB_ID_SIZE];
    int nended;
    bool ended_overflow;
};

static void close_conns(celery_bridge_t *b)
{
    if (b->rc)
        redisFree(b->rc);
    if (b->sub)
        redisFree(b->sub);
    b->rc = NULL;
    b->sub = NULL;
}

/* After an I/O error: says so and closes both connections (the loop connects again). */
static void drop_conn(celery_bridge_t *b, const char *what)
{
    redisContext *c = b->rc && b->rc->errstr[0] ? b->rc : b->sub ? b->sub : b->rc;
    if (c)
        log_warn("event=celery_redis_lost what=%s err=\"%s\"", what,
                 c->errstr[0] ? c->errstr : "unexpected reply");
    close_conns(b);
}

/* Runs a command (argv with lengths). NULL on an I/O error (the connection is dropped); a Redis
 * error reply is returned as is. Caller frees the reply. */
static redisReply *cmd(celery_bridge_t *b, int argc, const char **argv, const size_t *lens,
                       const char *what)
{
    if (!b->rc)
        return NULL;
    redisReply *r = redisCommandArgv(b->rc, argc, argv, lens);
    if (!r)
        drop_conn(b, what);
    return r;
}

/* The arguments of a command of at most 8 C strings (argv, lens); their count. */
static int simple_args(int argc, va_list ap, const char **argv, size_t *lens)
{
    argc = argc < 8 ? argc : 8;
    for (int i = 0; i < argc; i++) {
        argv[i] = va_arg(ap, const char *);
        lens[i] = strlen(argv[i]);
    }
    return argc;
}

/* A command of C strings on c. NULL on an I/O error. */
static redisReply *ctx_simple(redisContext *c, int argc, ...)
{
    const char *argv[8];
    size_t lens[8];
    va_list ap;
    va_start(ap, argc);
    argc = simple_args(argc, ap, argv, lens);
    va_end(ap);
    return redisCommandArgv(c, argc, argv, lens);
}

/* cmd with C-string arguments. */
static redisReply *cmd_simple(celery_bridge_t *b, const char *what, int argc, ...)
{
    const char *argv[8];
    size_t lens[8];
    va_list ap;
    va_start(ap, argc);
    argc = simple_args(argc, ap, argv, lens);
    va_end(ap);
    return cmd(b, argc, argv, lens, what);
}

static bool reply_ok(redisReply *r)
{
    return r && r->type != REDIS_REPLY_ERROR;
}

/* A connection, authenticated, on the database; NULL (logged) when that fails. */
static redisContext *open_conn(celery_bridge_t *b)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(b->addr.host, b->addr.port, tv);
    if (!c || c->err) {
        log_warn("event=celery_redis_unreachable host=%s port=%d err=\"%s\"", b->addr.host,
                 b->addr.port, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    struct timeval io = {10, 0};
    redisSetTimeout(c, io);
    redisReply *r = NULL;
    if (b->addr.password[0]) {
        r = b->addr.user[0] ? ctx_simple(c, 3, "AUTH", b->addr.user, b->addr.password)
                            : ctx_simple(c, 2, "AUTH", b->addr.password);
        if (!reply_ok(r)) {
            log_error("event=celery_redis_auth_failed err=\"%s\"",
                      r && r->str ? r->str : "connection lost");
            goto fail;
        }
        freeReplyObject(r);
    }
    char db[16];
    snprintf(db, sizeof db, "%d", b->addr.db);
    r = ctx_simple(c, 2, "SELECT", db);
    if (!reply_ok(r)) {
        log_error("event=celery_redis_select_failed db=%s err=\"%s\"", db,
                  r && r->str ? r->str : "connection lost");
        goto fail;
    }
    freeReplyObject(r);
    return c;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* The command connection, and one subscribed to kombu's remote-control channel (revokes). */
static int connect_redis(celery_bridge_t *b)
{
    b->rc = open_conn(b);
    if (!b->rc || !b->revoke_fn)
        return b->rc ? 0 : -1;
    b->sub = open_conn(b);
    redisReply *r = b->sub ? ctx_simple(b->sub, 2, "SUBSCRIBE", b->control) : NULL;
    bool ok = r && r->type == REDIS_REPLY_ARRAY;
    if (r)
        freeReplyObject(r);
    if (!ok) {
        log_warn("event=celery_redis_unreachable what=subscribe channel=%s", b->control);
        drop_conn(b, "subscribe");
        return -1;
    }
    return 0;
}

/* Writes a result for one task and/or records a task, and acks the delivery (tag may be ""). */
static int settle(celery_bridge_t *b, const char *tag, const char *job_id, const char *task_id,
                  const char *result)
{
    char key[sizeof META_PREFIX + CELERY_ID_MAX];
    char expires[24];
    snprintf(key, sizeof key, META_PREFIX "%s", task_id ? task_id : "");
    snprintf(expires, sizeof expires, "%lld", (long long)b->cfg.result_expires_s);
    const char *argv[] = {"EVAL",
                          settle_lua,
                          "4",
                          UNACKED_KEY,
                          UNACKED_INDEX_KEY,
                          TASKS_KEY,
                          key,
                          tag ? tag : "",
                          job_id ? job_id : "",
                          job_id && task_id ? task_id : "",
                          result ? result : "",
                          expires};
    size_t lens[12];
    for (int i = 0; i < 12; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r = cmd(b, 12, argv, lens, "settle");
    int rc = reply_ok(r) ? 0 : -1;
    if (r && rc)
        log_error("event=celery_settle_failed err=\"%s\"", r->str ? r->str : "");
    if (r)
        freeReplyObject(r);
    return rc;
}

/* The destination list of a restored message: kombu's _lookup (the default exchange routes by
 * queue name; another exchange through its _kombu.binding.<exchange> table) and the priority
 * list for properties.priority. */
static int restore_dest(celery_bridge_t *b, json_t *msg, const char *ex, const char *rk, char *buf,
                        size_t size)
{
    char queue[CELERY_NAME_MAX + 1];
    copy_str(queue, sizeof queue, rk && *rk ? rk : b->queue);
    if (ex && *ex) {
        char key[CELERY_NAME_MAX + 32];
        snprintf(key, sizeof key, "_kombu.binding.%s", ex);
        redisReply *r = cmd_simple(b, "smembers", 2, "SMEMBERS", key);
        if (r && r->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i < r->elements; i++) {
                const char *e = r->element[i]->str;
                const char *s1 = e ? strstr(e, PRIORITY_SEP) : NULL;
                const char *s2 = s1 ? strstr(s1 + 2, PRIORITY_SEP) : NULL;
                if (s2 && (size_t)(s1 - e) == strlen(rk ? rk : "") &&
                    strncmp(e, rk ? rk : "", (size_t)(s1 - e)) == 0) {
                    copy_str(queue, sizeof queue, s2 + 2);
                    break;
                }
            }
        }
        if (r)
            freeReplyObject(r);
        if (!b->rc)
            return -1;
    }
    json_t *props = json_object_get(msg, "properties");
    json_t *pri = json_is_object(props) ? json_object_get(props, "priority") : NULL;
    int p = json_is_integer(pri) ? (int)(json_integer_value(pri) < 0     ? 0
                                         : json_integer_value(pri) > 255 ? 255
                                                                         : json_integer_value(pri))
                                 : 0;
    return celery_queue_for_priority(queue, p, buf, size) < 0 ? -1 : 0;
}

/* kombu's restore_by_tag: the message goes back on its list (the consuming end unless
 * leftmost), marked redelivered, and leaves unacked. 0 when done or nothing to do, -1 on a
 * Redis error. */
static int restore_tag(celery_bridge_t *b, const char *tag, size_t taglen, bool leftmost)
{
    const char *hargv[] = {"HGET", UNACKED_KEY, tag};
    size_t hlens[] = {4, strlen(UNACKED_KEY), taglen};
    redisReply *r = cmd(b, 3, hargv, hlens, "hget unacked");
    json_t *triple = NULL;
    char *payload = NULL;
    char dest[CELERY_NAME_MAX + 8];
    int rc = -1;
    if (!r)
        return -1;
    if (r->type != REDIS_REPLY_STRING) { /* gone: only the index entry is left */
        freeReplyObject(r);
        const char *zargv[] = {"ZREM", UNACKED_INDEX_KEY, tag};
        size_t zlens[] = {4, strlen(UNACKED_INDEX_KEY), taglen};
        r = cmd(b, 3, zargv, zlens, "zrem");
        rc = r ? 0 : -1;
        goto out;
    }
    json_error_t jerr;
    triple = json_loadb(r->str, r->len, 0, &jerr);
    json_t *msg = json_array_get(triple, 0);
    const char *ex = json_string_value(json_array_get(triple, 1));
    const char *rk = json_string_value(json_array_get(triple, 2));
    if (!json_is_object(msg)) {
        log_error("event=celery_restore_dropped tag=%.*s reason=bad_unacked_entry", (int)taglen,
                  tag);
        const char *sargv[] = {"EVAL",    settle_lua,  "4", UNACKED_KEY, UNACKED_INDEX_KEY,
                               TASKS_KEY, META_PREFIX, tag, "",          "",
                               "",        "0"};
        size_t slens[12];
        for (int i = 0; i < 12; i++)
            slens[i] = i == 7 ? taglen : strlen(sargv[i]);
        redisReply *s = cmd(b, 12, sargv, slens, "drop unacked");
        rc = s ? 0 : -1;
        if (s)
            freeReplyObject(s);
        goto out;
    }
    json_t *headers = json_object_get(msg, "headers");
    json_t *props = json_object_get(msg, "properties");
    json_t *di = json_is_object(props) ? json_object_get(props, "delivery_info") : NULL;
    if (json_is_object(headers) && json_is_object(di)) { /* kombu sets both or neither */
        json_object_set_new(headers, "redelivered", json_true());
        json_object_set_new(di, "redelivered", json_true());
    }
    if (restore_dest(b, msg, ex, rk, dest, sizeof dest) != 0)
        goto out;
    payload = json_dumps(msg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!payload)
        goto out;
    const char *argv[] = {"EVAL", restore_lua, "3",    UNACKED_KEY, UNACKED_INDEX_KEY,
                          dest,   tag,         r->str, payload,     leftmost ? "1" : "0"};
    size_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    lens[6] = taglen;
    lens[7] = r->len;
    redisReply *x = cmd(b, 10, argv, lens, "restore");
    if (reply_ok(x)) {
        rc = 0;
        if (x->type == REDIS_REPLY_INTEGER && x->integer == 1)
            log_info("event=celery_restored tag=%.*s queue=%.*s", (int)taglen, tag,
                     (int)strcspn(dest, PRIORITY_SEP), dest);
    }
    if (x)
        freeReplyObject(x);
out:
    free(payload);
    json_decref(triple);
    if (r)
        freeReplyObject(r);
    return rc;
}

/* kombu's QoS.restore_visible: under unacked_mutex, every unacked message older than the
 * visibility timeout goes back to its list. */
static void restore_visible(celery_bridge_t *b)
{
    char token[33], ceil_s[32], px[24], limit[16];
    random_hex(token, 16);
    snprintf(px, sizeof px, "%d", UNACKED_MUTEX_EXPIRE_MS);
    redisReply *r = cmd_simple(b, "lock", 6, "SET", UNACKED_MUTEX_KEY, token, "NX", "PX", px);
    if (!r || r->type != REDIS_REPLY_STATUS) { /* held by another consumer */
        if (r)
            freeReplyObject(r);
        return;
    }
    freeReplyObject(r);
    snprintf(ceil_s, sizeof ceil_s, "%.3f",
             (double)(clock_now_ms() - b->cfg.visibility_timeout_ms) / 1000.0);
    snprintf(limit, sizeof limit, "%d", RESTORE_MAX);
    const char *argv[] = {"ZREVRANGEBYSCORE", UNACKED_INDEX_KEY, ceil_s, "0", "LIMIT", "0", limit};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    r = cmd(b, 7, argv, lens, "zrevrangebyscore");
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements && b->rc; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                restore_tag(b, r->element[i]->str, r->element[i]->len, false);
    }
    if (r)
        freeReplyObject(r);
    r = cmd_simple(b, "unlock", 5, "EVAL", unlock_lua, "1", UNACKED_MUTEX_KEY, token);
    if (r)
        freeReplyObject(r);
}

/* The results of a job's tasks: one celery-task-meta key and one result text per task id. */
typedef struct {
    int n;
    char **keys;    /* META_PREFIX + task id */
    char **results; /* the result JSON */
} task_results_t;

static void task_results_free(task_results_t *t)
{
    for (int i = 0; i < t->n; i++) {
        free(t->keys[i]);
        free(t->results[i]);
    }
    free(t->keys);
    free(t->results);
}

/* Builds a result for every task id in ids (space-separated; as many as the mapping holds, no
 * cap): the job's outcome, or "not found" when rc is STORE_NOT_FOUND. 0, or -1 out of memory. */
static int task_results_build(task_results_t *t, const char *ids, const char *job_id, int rc,
                              const job_t *j, const char *url)
{
    size_t cap = 1;
    for (const char *p = ids; *p; p++)
        cap += *p == ' ';
    memset(t, 0, sizeof *t);
    t->keys = calloc(cap, sizeof *t->keys);
    t->results = calloc(cap, sizeof *t->results);
    if (!t->keys || !t->results)
        return -1;
    int64_t now = clock_now_ms();
    for (const char *p = ids; *p && (size_t)t->n < cap;) {
        size_t len = strcspn(p, " ");
        if (len > 0 && len <= CELERY_ID_MAX) {
            char tid[CELERY_ID_MAX + 1], msg[96];
            memcpy(tid, p, len);
            tid[len] = '\0';
            snprintf(msg, sizeof msg, "Job %s not found", job_id);
            char *res =
                rc == STORE_NOT_FOUND
                    ? celery_result_exception("FAILURE", tid, "ValueError", "builtins", msg, now)
                    : celery_result_for_job(j, tid, url, now);
            char *key = res ? malloc(sizeof META_PREFIX + len) : NULL;
            if (!key) {
                free(res);
                return -1;
            }
            snprintf(key, sizeof META_PREFIX + len, META_PREFIX "%s", tid);
            t->keys[t->n] = key;
            t->results[t->n++] = res;
        }
        p += len;
        while (*p == ' ')
            p++;
    }
    return 0;
}

/* Writes the results and drops the job's mapping (finish_lua). 0, or -1. */
static int task_results_write(celery_bridge_t *b, const task_results_t *t, const char *job_id,
                              const char *ids)
{
    int argc = 4 + t->n + 3 + t->n, a = 0, ok = -1;
    const char **argv = calloc((size_t)argc, sizeof *argv);
    size_t *lens = calloc((size_t)argc, sizeof *lens);
    char nkeys[16], expires[24];
    if (!argv || !lens)
        goto out;
    snprintf(nkeys, sizeof nkeys, "%d", 1 + t->n);
    snprintf(expires, sizeof expires, "%lld", (long long)b->cfg.result_expires_s);
    argv[a++] = "EVAL";
    argv[a++] = finish_lua;
    argv[a++] = nkeys;
    argv[a++] = TASKS_KEY;
    for (int i = 0; i < t->n; i++)
        argv[a++] = t->keys[i];
    argv[a++] = job_id;
    argv[a++] = ids;
    argv[a++] = expires;
    for (int i = 0; i < t->n; i++)
        argv[a++] = t->results[i];
    for (int i = 0; i < a; i++)
        lens[i] = strlen(argv[i]);
    redisReply *x = cmd(b, a, argv, lens, "finish");
    if (x && x->type == REDIS_REPLY_INTEGER && x->integer == 1)
        ok = 0;
    else if (x && x->type == REDIS_REPLY_ERROR)
        log_error("event=celery_result_failed job_id=%s err=\"%s\"", job_id, x->str);
    if (x)
        freeReplyObject(x);
out:
    free(argv);
    free(lens);
    return ok;
}

/* Writes the results of job_id's tasks when the job is final (or gone). */
static void finish_job(celery_bridge_t *b, const char *job_id)
{
    job_t j;
    char *ids = NULL, *url = NULL;
    task_results_t t = {0};
    redisReply *r = cmd_simple(b, "hget tasks", 3, "HGET", TASKS_KEY, job_id);
    memset(&j, 0, sizeof j);
    if (!r || r->type != REDIS_REPLY_STRING || r->len > TASK_IDS_MAX)
        goto out;
    ids = strndup(r->str, r->len);
    if (!ids)
        goto out;
    int rc = store_job_get(b->store, job_id, &j);
    if (rc == STORE_ERR || (rc == STORE_OK && !job_status_is_final(j.status)))
        goto out;
    if (rc == STORE_OK && j.status == JOB_COMPLETED && b->url_fn)
        url = b->url_fn(b->arg, &j);
    if (task_results_build(&t, ids, job_id, rc, &j, url) == 0 &&
        task_results_write(b, &t, job_id, ids) == 0)
        log_info("event=celery_result_written job_id=%s status=%s tasks=%d", job_id,
                 rc == STORE_NOT_FOUND ? "missing" : job_status_name(j.status), t.n);
out:
    task_results_free(&t);
    free(url);
    free(ids);
    job_clear(&j);
    if (r)
        freeReplyObject(r);
}

/* Checks every recorded job against the store (jobs that ended through the reaper, another
 * server, or while this one was down). */
static void sweep(celery_bridge_t *b)
{
    char cursor[32] = "0";
    int rounds = 0;
    do {
        redisReply *r = cmd_simple(b, "hscan", 5, "HSCAN", TASKS_KEY, cursor, "COUNT", "200");
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING) {
            if (r)
                freeReplyObject(r);
            return;
        }
        copy_str(cursor, sizeof cursor, r->element[0]->str);
        redisReply *kv = r->element[1];
        for (size_t i = 0; kv->type == REDIS_REPLY_ARRAY && i + 1 < kv->elements && b->rc; i += 2) {
            if (kv->element[i]->type == REDIS_REPLY_STRING && valid_job_id(kv->element[i]->str))
                finish_job(b, kv->element[i]->str);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && b->rc && ++rounds < 100 && !atomic_load(&b->stopping));
}

static bool is_revoked(const celery_bridge_t *b, const char *task_id)
{
    for (int i = 0; i < REVOKED_MAX && b->revoked[i][0]; i++)
        if (strcmp(b->revoked[i], task_id) == 0)
            return true;
    return false;
}

/* A task expired or revoked before it ran: acked and answered REVOKED, its row not adopted
 * (Celery: "Discarding revoked task"). true when it was. */
static bool discard_revoked(celery_bridge_t *b, const celery_msg_t *m, const char *tag, int64_t now)
{
    bool expired = m->expires_ms > 0 && m->expires_ms < now;
    if (!expired && !is_revoked(b, m->task_id))
        return false;
    log_info("event=celery_discarded_%s job_id=%s task_id=%s", expired ? "expired" : "revoked",
             m->job_id, m->task_id);
    char *result =
        celery_result_exception("REVOKED", m->task_id, "TaskRevokedError", "celery.exceptions",
                                expired ? "expired" : "revoked", now);
    settle(b, tag, NULL, m->task_id, result);
    free(result);
    return true;
}

/* The message of held task i (what discard_revoked and adopt_task read), and the task taken out
 * of the held set (the last one takes its place). */
static void unhold(celery_bridge_t *b, int i, celery_msg_t *m, struct held *h)
{
    *h = b->held[i];
    b->held[i] = b->held[--b->nheld];
    memset(m, 0, sizeof *m);
    copy_str(m->job_id, sizeof m->job_id, h->job_id);
    copy_str(m->task_id, sizeof m->task_id, h->task_id);
    m->expires_ms = h->expires_ms;
    m->eta_ms = h->eta_ms;
}

/* One task id of a revoke: remembered (its message may not have come yet: a Celery worker
 * discards such a task when it arrives), and its job canceled through revoke_fn when the task
 * was adopted. */
static void revoke_task(celery_bridge_t *b, const char *task_id, bool terminate)
{
    if (!is_revoked(b, task_id)) {
        copy_str(b->revoked[b->revoked_next], CELERY_ID_MAX + 1, task_id);
        b->revoked_next = (b->revoked_next + 1) % REVOKED_MAX;
    }
    const char *outcome = "not_adopted";
    char job_id[JOB_ID_SIZE] = "-";
    redisReply *r = NULL;
    bool held = false;
    for (int i = 0; i < b->nheld && !held; i++) {
        if (strcmp(b->held[i].task_id, task_id) == 0) { /* waiting for its eta: discarded now */
            celery_msg_t m;
            struct held h;
            unhold(b, i, &m, &h);
            discard_revoked(b, &m, h.tag, clock_now_ms());
            copy_str(job_id, sizeof job_id, h.job_id);
            outcome = "discarded_before_eta";
            held = true;
        }
    }
    if (!held) /* a held task was never adopted: no job to find */
        r = cmd_simple(b, "find task", 5, "EVAL", find_task_lua, "1", TASKS_KEY, task_id);
    if (r && r->type == REDIS_REPLY_STRING && valid_job_id(r->str)) {
        copy_str(job_id, sizeof job_id, r->str);
        int rc = b->revoke_fn(b->arg, job_id, terminate);
        outcome = rc > 0 ? "canceled" : rc == 0 ? "left_running_or_ended" : "store_error";
    }
    if (r)
        freeReplyObject(r);
    log_info("event=celery_revoke task_id=%s job_id=%s terminate=%d outcome=%s", task_id, job_id,
             terminate, outcome);
}

/* A message on the remote-control channel: ["message", channel, envelope]. */
static void control_message(celery_bridge_t *b, const redisReply *r)
{
    celery_revoke_t rv;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    int rc = celery_parse_revoke(r->element[2]->str, r->element[2]->len, &rv);
    if (rc < 0)
        log_warn("event=celery_control_rejected channel=%s bytes=%zu", b->control,
                 r->element[2]->len);
    if (rc != 1)
        return;
    for (int i = 0; i < rv.n && b->rc; i++)
        revoke_task(b, rv.task_ids[i], rv.terminate);
    celery_revoke_free(&rv);
}

/* Handles the remote-control messages that have arrived, without blocking. */
static void drain_control(celery_bridge_t *b)
{
    for (int i = 0; b->sub && b->rc && i < CONTROL_PER_TURN; i++) {
        void *reply = NULL;
        if (redisGetReplyFromReader(b->sub, &reply) != REDIS_OK) {
            drop_conn(b, "control");
            return;
        }
        if (!reply) {
            struct pollfd pfd = {.fd = b->sub->fd, .events = POLLIN};
            if (poll(&pfd, 1, 0) <= 0)
                return;
            if (redisGetReply(b->sub, &reply) != REDIS_OK || !reply) {
                drop_conn(b, "control");
                return;
            }
        }
        control_message(b, reply);
        freeReplyObject(reply);
    }
}

/* Adopts the task's row as a queued job and acks its message (or answers it when the row is
 * missing, already ended or not payable; puts it back when the store is down). */
static void adopt_task(celery_bridge_t *b, const celery_msg_t *m, const char *list, const char *tag,
                       int64_t now)
{
    job_t j;
    char *result = NULL;
    char msg[160];
    memset(&j, 0, sizeof j);
    int queue_len = (int)strcspn(list, PRIORITY_SEP);
    int rc = store_job_adopt(b->store, m->job_id, b->cfg.credit_rate, now, &j);
    switch (rc) {
    case STORE_OK:
        log_info("event=celery_adopted job_id=%s task_id=%s queue=%.*s tier=%s user=%s", m->job_id,
                 m->task_id, queue_len, list, j.tier, j.user);
        /* committed: the job runs even if the ack fails (then the message is redelivered and
         * adopt answers STORE_EXISTS) */
        settle(b, tag, m->job_id, m->task_id, NULL);
        if (b->work_fn)
            b->work_fn(b->arg);
        break;
    case STORE_EXISTS:
        if (job_status_is_final(j.status)) {
            char *url = j.status == JOB_COMPLETED && b->url_fn ? b->url_fn(b->arg, &j) : NULL;
            result = celery_result_for_job(&j, m->task_id, url, now);
            free(url);
            settle(b, tag, NULL, m->task_id, result);
        } else {
            settle(b, tag, m->job_id, m->task_id, NULL);
        }
        log_info("event=celery_redelivered job_id=%s task_id=%s status=%s", m->job_id, m->task_id,
                 job_status_name(j.status));
        break;
    case STORE_NOT_FOUND:
    case STORE_NO_CREDITS: {
        const char *reason = "missing_row";
        job_clear(&j);
        if (rc == STORE_NO_CREDITS) {
            reason = "no_credits";
            snprintf(msg, sizeof msg, "Job %s: insufficient credits", m->job_id);
        } else if (store_job_get(b->store, m->job_id, &j) == STORE_OK) {
            reason = "no_such_user";
            snprintf(msg, sizeof msg, "Job %s: user %s not found", m->job_id, j.user);
        } else {
            snprintf(msg, sizeof msg, "Job %s not found", m->job_id);
        }
        log_warn("event=celery_rejected reason=%s queue=%.*s task_id=%s job_id=%s "
                 "detail=\"ValueError: %s\"",
                 reason, queue_len, list, m->task_id, m->job_id, msg);
        result = celery_result_exception("FAILURE", m->task_id, "ValueError", "builtins", msg, now);
        settle(b, tag, NULL, m->task_id, result);
        break;
    }
    default: /* the store is down: back on the list, try again after a pause */
        log_error("event=celery_store_error job_id=%s task_id=%s err=\"%s\"", m->job_id, m->task_id,
                  store_last_error(b->store));
        if (tag[0])
            restore_tag(b, tag, strlen(tag), false);
        for (int i = 0; i < 20 && !atomic_load(&b->stopping); i++)
            clock_sleep_ms(50);
        break;
    }
    free(result);
    job_clear(&j);
}

/* A task whose eta has not come, kept as a Celery worker keeps it: its message stays in unacked
 * (its time in unacked_index refreshed by refresh_held, so no restore_visible takes it back while
 * this server runs) until run_due adopts it. Put back on its list when HELD_MAX are held. */
static void hold(celery_bridge_t *b, const celery_msg_t *m, const char *list, const char *tag)
{
    char eta[32];
    clock_format_rfc3339(m->eta_ms, eta, sizeof eta);
    if (b->nheld == b->held_cap && b->nheld < HELD_MAX) {
        int cap = b->held_cap ? b->held_cap * 2 : 64;
        cap = cap > HELD_MAX ? HELD_MAX : cap;
        struct held *h = realloc(b->held, (size_t)cap * sizeof *h);
        if (h) {
            b->held = h;
            b->held_cap = cap;
        }
    }
    if (!tag[0] || b->nheld == b->held_cap) {
        log_warn("event=celery_eta_not_held job_id=%s task_id=%s eta=%s held=%d (put back)",
                 m->job_id, m->task_id, eta, b->nheld);
        if (tag[0])
            restore_tag(b, tag, strlen(tag), true);
        for (int i = 0; i < 5 && !atomic_load(&b->stopping); i++)
            clock_sleep_ms(50);
        return;
    }
    struct held *h = &b->held[b->nheld++];
    h->eta_ms = m->eta_ms;
    h->expires_ms = m->expires_ms;
    copy_str(h->tag, sizeof h->tag, tag);
    copy_str(h->task_id, sizeof h->task_id, m->task_id);
    copy_str(h->job_id, sizeof h->job_id, m->job_id);
    copy_str(h->list, sizeof h->list, list);
    log_info("event=celery_eta_held job_id=%s task_id=%s eta=%s held=%d", m->job_id, m->task_id,
             eta, b->nheld);
}

/* Adopts the held tasks whose eta came, and discards those that expired (or were revoked)
 * meanwhile as REVOKED: a Celery worker checks expires again right before running a task. */
static void run_due(celery_bridge_t *b)
{
    int64_t now = clock_now_ms();
    for (int i = 0; i < b->nheld && b->rc && !atomic_load(&b->stopping);) {
        const struct held *h = &b->held[i];
        if (h->eta_ms > now && !(h->expires_ms > 0 && h->expires_ms < now)) {
            i++;
            continue;
        }
        celery_msg_t m;
        struct held taken;
        unhold(b, i, &m, &taken);
        if (!discard_revoked(b, &m, taken.tag, now))
            adopt_task(b, &m, taken.list, taken.tag, now);
    }
}

/* Moves the held tasks' delivery times in unacked_index to now (ZADD XX: a message another
 * consumer restored meanwhile is not recorded again). */
static void refresh_held(celery_bridge_t *b)
{
    const char *argv[3 + 2 * REFRESH_BATCH];
    size_t lens[3 + 2 * REFRESH_BATCH];
    char now_s[32];
    snprintf(now_s, sizeof now_s, "%.3f", (double)clock_now_ms() / 1000.0);
    for (int i = 0; i < b->nheld && b->rc;) {
        int a = 0;
        argv[a++] = "ZADD";
        argv[a++] = UNACKED_INDEX_KEY;
        argv[a++] = "XX";
        for (; i < b->nheld && a < 3 + 2 * REFRESH_BATCH; i++) {
            argv[a++] = now_s;
            argv[a++] = b->held[i].tag;
        }
        for (int k = 0; k < a; k++)
            lens[k] = strlen(argv[k]);
        redisReply *r = cmd(b, a, argv, lens, "refresh held");
        if (r)
            freeReplyObject(r);
    }
}

/* On a clean stop the held tasks go back on their lists (as kombu restores a stopping worker's
 * unacked messages): another server, or this one restarted, holds them again. After a crash they
 * come back with the visibility timeout. */
static void release_held(celery_bridge_t *b)
{
    int n = b->nheld;
    for (int i = 0; i < b->nheld && b->rc; i++)
        restore_tag(b, b->held[i].tag, strlen(b->held[i].tag), false);
    if (n)
        log_info("event=celery_eta_released tasks=%d restored=%d", n, b->rc ? n : 0);
    b->nheld = 0;
}

static void handle_message(celery_bridge_t *b, const char *list, const char *raw, size_t len,
                           const char *tag)
{
    celery_msg_t m;
    celery_reject_t rej;
    int64_t now = clock_now_ms();
    if (celery_parse(raw, len, &m, &rej) != 0) {
        log_warn("event=celery_rejected reason=%s queue=%.*s task_id=%s task=\"%s\" "
                 "detail=\"%s: %s\"",
                 rej.reason, (int)strcspn(list, PRIORITY_SEP), list, m.task_id[0] ? m.task_id : "-",
                 m.task, rej.exc_type, rej.message);
        char *result = m.task_id[0] ? celery_result_exception("FAILURE", m.task_id, rej.exc_type,
                                                              rej.exc_module, rej.message, now)
                                    : NULL;
        settle(b, tag, NULL, m.task_id, result);
        free(result);
        return;
    }
    if (discard_revoked(b, &m, tag, now))
        return;
    if (m.eta_ms > now)
        hold(b, &m, list, tag);
    else
        adopt_task(b, &m, list, tag, now);
}

/* Pops and handles one message. 1 when there was one, 0 when the lists are empty, -1 on a
 * connection error. */
static int poll_once(celery_bridge_t *b)
{
    char now_s[32], tag[40];
    int64_t now = clock_now_ms();
    snprintf(now_s, sizeof now_s, "%.3f", (double)now / 1000.0);
    job_new_id(tag, now);
    const char *argv[4 + NSTEPS + 2 + 3];
    size_t lens[4 + NSTEPS + 2 + 3];
    int a = 0;
    char nkeys[8];
    snprintf(nkeys, sizeof nkeys, "%d", NSTEPS + 2);
    argv[a++] = "EVAL";
    argv[a++] = pop_lua;
    argv[a++] = nkeys;
    for (int i = 0; i < NSTEPS; i++)
        argv[a++] = b->lists[i];
    argv[a++] = UNACKED_KEY;
    argv[a++] = UNACKED_INDEX_KEY;
    argv[a++] = now_s;
    argv[a++] = tag;
    argv[a++] = b->queue;
    for (int i = 0; i < a; i++)
        lens[i] = strlen(argv[i]);
    redisReply *r = cmd(b, a, argv, lens, "pop");
    if (!r)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        char list[CELERY_NAME_MAX + 8];
        char dtag[CELERY_ID_MAX + 1];
        copy_str(list, sizeof list, r->element[0]->str);
        copy_str(dtag, sizeof dtag, r->element[2]->str);
        handle_message(b, list, r->element[1]->str ? r->element[1]->str : "", r->element[1]->len,
                       dtag);
        rc = 1;
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_error("event=celery_pop_failed err=\"%s\"", r->str);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* Blocks until the main list has a message or WAIT_S passed, without taking it (BLMOVE of the
 * list onto itself is an atomic rotation of one element: the list is unchanged). The priority
 * lists are polled at least every WAIT_S. */
static void wait_for_work(celery_bridge_t *b)
{
    if (b->no_blmove) {
        clock_sleep_ms(100);
        return;
    }
    redisReply *r =
        cmd_simple(b, "blmove", 6, "BLMOVE", b->queue, b->queue, "RIGHT", "RIGHT", WAIT_S);
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_info("event=celery_no_blmove err=\"%s\" (polling every 100 ms)", r->str);
        b->no_blmove = true;
    }
    if (r)
        freeReplyObject(r);
}

static void take_ended(celery_bridge_t *b, char (*out)[JOB_ID_SIZE], int *n, bool *overflow)
{
    pthread_mutex_lock(&b->mu);
    memcpy(out, b->ended, (size_t)b->nended * sizeof b->ended[0]);
    *n = b->nended;
    *overflow = b->ended_overflow;
    b->nended = 0;
    b->ended_overflow = false;
    pthread_mutex_unlock(&b->mu);
}

static void *bridge_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pv-celery"); /* top -H, perf */
    celery_bridge_t *b = arg;
    int64_t backoff = 100, last_sweep = 0, last_restore = 0;
    int64_t restore_every = b->cfg.visibility_timeout_ms / 2;
    char(*ended)[JOB_ID_SIZE] = malloc(ENDED_MAX * sizeof *ended);
    bool was_down = false;
    if (!ended)
        return NULL;
    if (restore_every > 10000)
        restore_every = 10000; /* kombu: every 10th empty poll of 1 s */
    if (restore_every < 200)
        restore_every = 200;
    while (!atomic_load(&b->stopping)) {
        if (!b->rc) {
            if (connect_redis(b) != 0) {
                was_down = true;
                for (int64_t t = 0; t < backoff && !atomic_load(&b->stopping); t += 50)
                    clock_sleep_ms(50);
                backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
                continue;
            }
            backoff = 100;
            log_info("event=celery_%s host=%s port=%d db=%d queue=%s",
                     was_down ? "reconnected" : "connected", b->addr.host, b->addr.port, b->addr.db,
                     b->queue);
            was_down = false;
            last_restore = 0;
            last_sweep = 0;
        }
        int64_t now = clock_mono_ms();
        int n = 0;
        bool overflow = false;
        take_ended(b, ended, &n, &overflow);
        for (int i = 0; i < n && b->rc; i++)
            finish_job(b, ended[i]);
        if (b->rc && (overflow || now - last_sweep >= SWEEP_MS)) {
            sweep(b);
            last_sweep = now;
        }
        if (b->rc && (last_restore == 0 || now - last_restore >= restore_every)) {
            refresh_held(b);
            restore_visible(b);
            last_restore = now;
        }
        drain_control(b);
        run_due(b);
        if (!b->rc)
            continue;
        int got = poll_once(b);
        if (got == 0 && b->rc)
            wait_for_work(b);
        if (got < 0 && b->rc) { /* an error reply: do not spin */
            clock_sleep_ms(500);
        }
    }
    free(ended);
    release_held(b);
    close_conns(b);
    return NULL;
}

celery_bridge_t *celery_bridge_start(const celery_config_t *cfg, store_t *store,
                                     celery_image_url_fn url_fn, celery_work_fn work_fn,
                                     celery_revoke_fn revoke_fn, void *arg, char *err,
                                     size_t errlen)
{
    celery_bridge_t *b = NULL;
    if (!store || !store->ops->job_adopt) {
        snprintf(err, errlen, "REDIS_URL: the %s store cannot adopt Celery jobs (no job_adopt)",
                 store ? store->ops->name : "(none)");
        return NULL;
    }
    b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    if (celery_parse_redis_url(cfg->redis_url, &b->addr, err, errlen) != 0)
        goto fail;
    const char *q = cfg->queue && *cfg->queue ? cfg->queue : CELERY_DEFAULT_QUEUE;
    if (!safe_token(q, CELERY_NAME_MAX)) {
        snprintf(err, errlen,
                 "--celery-queue: '%s' is not a queue name (1..%d printable "
                 "characters, no spaces)",
                 q, CELERY_NAME_MAX);
        goto fail;
    }
    copy_str(b->queue, sizeof b->queue, q);
    for (int i = 0; i < NSTEPS; i++)
        celery_queue_for_priority(b->queue, priority_steps[i], b->lists[i], sizeof b->lists[i]);
    if (b->cfg.visibility_timeout_ms <= 0)
        b->cfg.visibility_timeout_ms = CELERY_DEFAULT_VISIBILITY_MS;
    if (b->cfg.result_expires_s <= 0)
        b->cfg.result_expires_s = CELERY_DEFAULT_RESULT_EXPIRES;
    b->cfg.redis_url = NULL;
    b->cfg.queue = NULL;
    b->store = store;
    b->url_fn = url_fn;
    b->work_fn = work_fn;
    b->revoke_fn = revoke_fn;
    b->arg = arg;
    snprintf(b->control, sizeof b->control, "/%d.celery.pidbox", b->addr.db);
    pthread_mutex_init(&b->mu, NULL);
    if (pthread_create(&b->thread, NULL, bridge_main, b) != 0) {
        pthread_mutex_destroy(&b->mu);
        snprintf(err, errlen, "cannot start the Celery bridge thread");
        goto fail;
    }
    log_info("event=celery_bridge_started queue=%s task=%s visibility_timeout_s=%lld "
             "result_expires_s=%lld",
             b->queue, CELERY_TASK_NAME, (long long)(b->cfg.visibility_timeout_ms / 1000),
             (long long)b->cfg.result_expires_s);
    return b;
fail:
    free(b);
    return NULL;
}

void celery_bridge_job_ended(celery_bridge_t *b, const char *job_id)
{
    if (!b || !valid_job_id(job_id))
        return;
    pthread_mutex_lock(&b->mu);
    if (b->nended < ENDED_MAX)
        copy_str(b->ended[b->nended++], JOB_ID_SIZE, job_id);
    else
        b->ended_overflow = true;
    pthread_mutex_unlock(&b->mu);
}

void celery_bridge_stop(celery_bridge_t *b)
{
    if (!b)
        return;
    atomic_store(&b->stopping, 1);
    pthread_join(b->thread, NULL);
    pthread_mutex_destroy(&b->mu);
    free(b->held);
    free(b);
}

#endif
