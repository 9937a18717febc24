/* podguard.c: busy/idle annotations on the worker's own pod and the watch of its node, through
 * the Kubernetes API. Contract in podguard.h. */
#include "worker/podguard.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "lib/httpc.h"
#include "lib/log.h"

#define PG_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define PG_NAME_MAX 254 /* a DNS subdomain name (pod, node) and its NUL */
#define PG_TOKEN_MAX 16384
#define PG_TIMEOUT_MS 5000
#define PG_DISRUPTED_TAINT "karpenter.sh/disrupted"

struct pod_guard {
    char api[512];
    char token_file[600], ca_file[600];
    char pod[PG_NAME_MAX], ns[PG_NAME_MAX], node[PG_NAME_MAX];
    int64_t poll_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int busy;       /* -1 unknown (first mark always patches), 0 idle, 1 busy */
    int protected_; /* 1 while do-not-disrupt is on the pod */
    int hold;       /* 1 while the node is being disrupted */
    int kick;       /* check the node now */
    int stop;
    httpc_t *h_main, *h_watch; /* one handle per thread */
};

/* Reads the first line of a small file into buf. 0 or -1. */
static int read_line(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    int big = !feof(f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return big || !buf[0] ? -1 : 0;
}

/* A DNS-1123 subdomain: lowercase alphanumerics, '-' and '.', 1..253 characters. */
static int name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n < PG_NAME_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") == n;
}

/* One API call on handle h with the current service-account token. body NULL: GET. Returns the
 * HTTP status (0: no answer); the answer is in r (caller frees). */
static long api_call(pod_guard_t *g, httpc_t *h, const char *method, const char *path,
                     const char *body, httpc_resp_t *r)
{
    char *token = malloc(PG_TOKEN_MAX), url[1024];
    memset(r, 0, sizeof *r);
    if (!token || read_line(g->token_file, token, PG_TOKEN_MAX) != 0) {
        snprintf(r->error, sizeof r->error, "cannot read the service-account token %s",
                 g->token_file);
        free(token);
        return 0;
    }
    snprintf(url, sizeof url, "%s%s", g->api, path);
    httpc_req_t req = {.method = method,
                       .url = url,
                       .bearer = token,
                       .extra_header = "Accept: application/json",
                       .body = body,
                       .body_len = body ? strlen(body) : 0,
                       .content_type = "application/merge-patch+json",
                       .timeout_ms = PG_TIMEOUT_MS,
                       .ca_file = g->ca_file[0] ? g->ca_file : NULL};
    httpc_do(h, &req, r);
    memset(token, 0, PG_TOKEN_MAX);
    free(token);
    return r->status;
}

/* Merge-patches the pod's annotations: cost and dnd are a value or NULL (remove); keep_cost 1
 * leaves the deletion cost alone. 0 or -1 (logged). */
static int patch_pod(pod_guard_t *g, httpc_t *h, const char *cost, const char *dnd, int keep_cost)
{
    json_t *ann = json_object();
    if (!keep_cost)
        json_object_set_new(ann, "controller.kubernetes.io/pod-deletion-cost",
                            cost ? json_string(cost) : json_null());
    json_object_set_new(ann, "karpenter.sh/do-not-disrupt", dnd ? json_string(dnd) : json_null());
    json_t *o = json_pack("{s:{s:o}}", "metadata", "annotations", ann);
    char *body = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    char path[700];
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/pods/%s", g->ns, g->pod);
    httpc_resp_t r;
    long st = body ? api_call(g, h, "PATCH", path, body, &r) : 0;
    int rc = st == 200 ? 0 : -1;
    if (rc != 0)
        log_warn("event=pod_patch_failed pod=%s/%s status=%ld err=\"%s\" msg=\"%s\"", g->ns, g->pod,
                 st, st ? "" : r.error,
                 st == 401 || st == 403 ? "check the worker's ServiceAccount and Role (patch pods)"
                                        : "the drain window still protects the job");
    httpc_resp_free(&r);
    free(body);
    return rc;
}

/* 1 when the node is being disrupted (Karpenter's taint, deletion, cordon), 0 when not, -1 when
 * it cannot be read. */
static int node_disrupted(pod_guard_t *g, httpc_t *h)
{
    char path[600];
    snprintf(path, sizeof path, "/api/v1/nodes/%s", g->node);
    httpc_resp_t r;
    long st = api_call(g, h, "GET", path, NULL, &r);
    json_t *o = st == 200 && r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    int rc = -1;
    if (json_is_object(o)) {
        json_t *spec = json_object_get(o, "spec"), *t;
        size_t i;
        rc = json_object_get(json_object_get(o, "metadata"), "deletionTimestamp") != NULL ||
             json_is_true(json_object_get(spec, "unschedulable"));
        json_array_foreach(json_object_get(spec, "taints"), i, t)
        {
            const char *key = json_string_value(json_object_get(t, "key"));
            if (key && strcmp(key, PG_DISRUPTED_TAINT) == 0)
                rc = 1;
        }
    } else {
        log_warn("event=node_read_failed node=%s status=%ld err=\"%s\"", g->node, st,
                 st ? "" : r.error);
    }
    json_decref(o);
    httpc_resp_free(&r);
    return rc;
}

int pod_guard_placement(pod_guard_t *g, char *instance_type, size_t itsize, char *capacity,
                        size_t capsize, char *zone, size_t zsize)
{
    instance_type[0] = capacity[0] = zone[0] = '\0';
    httpc_t *h = g ? httpc_new() : NULL;
    if (!h)
        return -1;
    char path[600];
    snprintf(path, sizeof path, "/api/v1/nodes/%s", g->node);
    httpc_resp_t r;
    long st = api_call(g, h, "GET", path, NULL, &r);
    json_t *o = st == 200 && r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    json_t *labels = json_object_get(json_object_get(o, "metadata"), "labels");
    static const char *const keys[3] = {"node.kubernetes.io/instance-type",
                                        "karpenter.sh/capacity-type",
                                        "topology.kubernetes.io/zone"};
    char *dst[3] = {instance_type, capacity, zone};
    size_t size[3] = {itsize, capsize, zsize};
    for (int i = 0; i < 3; i++) {
        const char *v = json_string_value(json_object_get(labels, keys[i]));
        if (v && strlen(v) < size[i])
            memcpy(dst[i], v, strlen(v) + 1);
    }
    int rc = json_is_object(o) ? 0 : -1;
    if (rc != 0)
        log_warn("event=node_read_failed node=%s status=%ld msg=\"placement unknown\"", g->node,
                 st);
    json_decref(o);
    httpc_resp_free(&r);
    httpc_free(h);
    return rc;
}

/* One node check: on disruption, drop do-not-disrupt and hold; when it clears, release. */
static void watch_once(pod_guard_t *g)
{
    int d = node_disrupted(g, g->h_watch);
    if (d < 0)
        return;
    pthread_mutex_lock(&g->mu);
    int was = g->hold, unprotect = d && g->protected_;
    g->hold = d;
    if (unprotect)
        g->protected_ = 0;
    pthread_mutex_unlock(&g->mu);
    if (d && !was)
        log_warn("event=node_disrupted node=%s msg=\"claiming nothing more; do-not-disrupt "
                 "removed so the drain can evict this pod\"",
                 g->node);
    else if (!d && was)
        log_info("event=node_disruption_cleared node=%s", g->node);
    if (unprotect && patch_pod(g, g->h_watch, NULL, NULL, 1) != 0) {
        pthread_mutex_lock(&g->mu);
        g->protected_ = 1; /* try again at the next check */
        pthread_mutex_unlock(&g->mu);
    }
}

static void *watch_main(void *arg)
{
    pod_guard_t *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        if (!g->kick) {
            struct timespec ts = clock_deadline(g->poll_ms);
            pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        }
        if (g->stop)
            break;
        g->kick = 0;
        pthread_mutex_unlock(&g->mu);
        watch_once(g);
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

void pod_guard_set_busy(pod_guard_t *g, int busy)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    int change = g->busy != busy, hold = g->hold;
    pthread_mutex_unlock(&g->mu);
    if (!change)
        return;
    /* On a node being disrupted a busy pod gets its deletion cost but no do-not-disrupt. */
    int protect = busy && !hold;
    if (patch_pod(g, g->h_main, busy ? POD_GUARD_BUSY_COST : NULL, protect ? "true" : NULL, 0) != 0)
        return; /* busy stays as it was: the next mark tries again */
    pthread_mutex_lock(&g->mu);
    g->busy = busy;
    g->protected_ = protect;
    if (busy) {
        g->kick = 1; /* a taint that came just before the claim is seen at once */
        pthread_cond_signal(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    log_debug("event=pod_marked pod=%s/%s busy=%d do_not_disrupt=%d", g->ns, g->pod, busy, protect);
}

int pod_guard_hold(pod_guard_t *g)
{
    if (!g)
        return 0;
    pthread_mutex_lock(&g->mu);
    int h = g->hold;
    pthread_mutex_unlock(&g->mu);
    return h;
}

/* Fills api, files and names from cfg and the environment. 0, or -1 with err. */
static int configure(pod_guard_t *g, const pod_guard_config_t *cfg, char *err, unsigned long errlen)
{
    const char *dir = cfg->sa_dir && cfg->sa_dir[0] ? cfg->sa_dir : PG_SA_DIR;
    snprintf(g->token_file, sizeof g->token_file, "%s/token", dir);
    snprintf(g->ca_file, sizeof g->ca_file, "%s/ca.crt", dir);
    if (cfg->api_url && cfg->api_url[0]) {
        snprintf(g->api, sizeof g->api, "%s", cfg->api_url);
    } else {
        const char *host = getenv("KUBERNETES_SERVICE_HOST");
        const char *port = getenv("KUBERNETES_SERVICE_PORT");
        if (!host || !host[0]) {
            snprintf(err, errlen, "KUBERNETES_SERVICE_HOST is not set (not in a pod?)");
            return -1;
        }
        int v6 = strchr(host, ':') != NULL;
        snprintf(g->api, sizeof g->api, "https://%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "",
                 port && port[0] ? port : "443");
    }
    size_t n = strlen(g->api);
    while (n && g->api[n - 1] == '/')
        g->api[--n] = '\0';
    char nsfile[700];
    snprintf(nsfile, sizeof nsfile, "%s/namespace", dir);
    if (cfg->namespace && cfg->namespace[0])
        snprintf(g->ns, sizeof g->ns, "%s", cfg->namespace);
    else if (read_line(nsfile, g->ns, sizeof g->ns) != 0)
        g->ns[0] = '\0';
    snprintf(g->pod, sizeof g->pod, "%s", cfg->pod_name ? cfg->pod_name : "");
    snprintf(g->node, sizeof g->node, "%s", cfg->node_name ? cfg->node_name : "");
    const char *bad = !name_ok(g->pod)    ? "the pod name (PINGVAS_POD_NAME, from metadata.name)"
                      : !name_ok(g->ns)   ? "the namespace (PINGVAS_POD_NAMESPACE)"
                      : !name_ok(g->node) ? "the node name (PINGVAS_NODE_NAME, from spec.nodeName)"
                                          : NULL;
    if (bad) {
        snprintf(err, errlen, "%s is missing or not a valid Kubernetes name", bad);
        return -1;
    }
    if (strncmp(g->api, "http://", 7) != 0 && strncmp(g->api, "https://", 8) != 0) {
        snprintf(err, errlen, "the Kubernetes API URL \"%s\" is not http(s)", g->api);
        return -1;
    }
    g->poll_ms = cfg->poll_ms > 0 ? cfg->poll_ms : 5000;
    return 0;
}

pod_guard_t *pod_guard_start(const pod_guard_config_t *cfg, char *err, unsigned long errlen)
{
    pod_guard_t *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->busy = -1;
    if (configure(g, cfg, err, errlen) != 0) {
        free(g);
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->h_main = httpc_new();
    g->h_watch = httpc_new();
    g->kick = 1; /* first node check at once */
    if (!g->h_main || !g->h_watch || pthread_create(&g->thread, NULL, watch_main, g) != 0) {
        snprintf(err, errlen, "cannot start the node watch");
        if (g->h_main)
            httpc_free(g->h_main);
        if (g->h_watch)
            httpc_free(g->h_watch);
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    log_info("event=pod_guard_on pod=%s/%s node=%s api=%s poll_ms=%lld", g->ns, g->pod, g->node,
             g->api, (long long)g->poll_ms);
    return g;
}

void pod_guard_stop(pod_guard_t *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    httpc_free(g->h_main);
    httpc_free(g->h_watch);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
