/* test_podguard.c: the worker's busy/idle pod marks and node watch (podguard.h) against a loopback
 * stand-in of the Kubernetes API server. The stand-in checks each request (path, method, content
 * type, the bearer token from the token file, the merge-patch body), applies the JSON merge patch
 * (RFC 7386: null removes) to its pod's annotations and answers with the pod, as the API does;
 * GET of the node answers the Node with the taints the test sets. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "t.h"
#include "t_peer.h"
#include "worker/podguard.h"

#define POD "pingvas-worker-standard-7d9c5b-x2k4q"
#define NODE "ip-10-0-12-34.ec2.internal"

static char dir[] = "/tmp/pingvas-podguard-XXXXXX";
static char token_file[600];

static struct {
    char token[128], prev_token[128]; /* the kubelet's rotation leaves the old one valid a while */
    json_t *annotations;              /* the pod's annotations as the API server holds them */
    int patches, node_gets;
    int tainted, status; /* node tainted karpenter.sh/disrupted; status to answer (0: normal) */
} api;

static void write_file(const char *name, const char *text)
{
    /* Replaced atomically, as the kubelet swaps projected token files. */
    char path[700], tmp[710];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
}

static void set_token(const char *t)
{
    snprintf(api.prev_token, sizeof api.prev_token, "%s", api.token);
    snprintf(api.token, sizeof api.token, "%s", t);
    write_file("token", t);
}

static void answer_status(t_peer_resp_t *out, int code, const char *reason)
{
    out->status = code;
    out->content_type = "application/json";
    snprintf(out->body, sizeof out->body,
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
             "\"reason\":\"%s\",\"code\":%d}",
             reason, code);
}

static void patch_pod(t_peer_t *p, const t_peer_req_t *r, t_peer_resp_t *out)
{
    const char *ct = t_peer_header(r, "Content-Type");
    PEER_EXPECT(p, ct && strcmp(ct, "application/merge-patch+json") == 0);
    json_t *b = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *ann = json_object_get(json_object_get(b, "metadata"), "annotations");
    /* Only the two annotations, only under metadata.annotations, values strings or null. */
    PEER_EXPECT(p, json_is_object(b) && json_object_size(b) == 1 && json_is_object(ann));
    PEER_EXPECT(p, json_object_size(json_object_get(b, "metadata")) == 1);
    const char *k;
    json_t *v;
    json_object_foreach(ann, k, v)
    {
        PEER_EXPECT(p, strcmp(k, "controller.kubernetes.io/pod-deletion-cost") == 0 ||
                           strcmp(k, "karpenter.sh/do-not-disrupt") == 0);
        PEER_EXPECT(p, json_is_string(v) || json_is_null(v));
        if (json_is_null(v))
            json_object_del(api.annotations, k);
        else
            json_object_set(api.annotations, k, v);
    }
    json_decref(b);
    api.patches++;
    json_t *pod = json_pack("{s:s, s:s, s:{s:s, s:s, s:O}, s:{s:s}}", "kind", "Pod", "apiVersion",
                            "v1", "metadata", "name", POD, "namespace", "pingvas", "annotations",
                            api.annotations, "spec", "nodeName", NODE);
    char *txt = json_dumps(pod, JSON_COMPACT);
    out->status = 200;
    out->content_type = "application/json";
    snprintf(out->body, sizeof out->body, "%s", txt);
    free(txt);
    json_decref(pod);
}

static void api_peer(t_peer_t *p, const t_peer_req_t *r, t_peer_resp_t *out)
{
    char want[200], prev[200];
    snprintf(want, sizeof want, "Bearer %s", api.token);
    snprintf(prev, sizeof prev, "Bearer %s", api.prev_token);
    const char *auth = t_peer_header(r, "Authorization");
    /* A watch GET may race the rotation; a pod PATCH made after it must carry the new token. */
    int is_get = strcmp(r->method, "GET") == 0;
    if (auth && is_get && api.prev_token[0] && strcmp(auth, prev) == 0)
        auth = want;
    PEER_EXPECT(p, auth && strcmp(auth, want) == 0);
    const char *acc = t_peer_header(r, "Accept");
    PEER_EXPECT(p, acc && strcmp(acc, "application/json") == 0);
    if (!auth || strcmp(auth, want) != 0)
        return answer_status(out, 401, "Unauthorized");
    if (api.status)
        return answer_status(out, api.status, "Forbidden");
    if (strcmp(r->path, "/api/v1/namespaces/pingvas/pods/" POD) == 0) {
        PEER_EXPECT(p, strcmp(r->method, "PATCH") == 0);
        return patch_pod(p, r, out);
    }
    if (strcmp(r->path, "/api/v1/nodes/" NODE) == 0) {
        PEER_EXPECT(p, strcmp(r->method, "GET") == 0 && r->body_len == 0);
        api.node_gets++;
        out->status = 200;
        out->content_type = "application/json";
        snprintf(out->body, sizeof out->body,
                 "{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"" NODE "\","
                 "\"labels\":{\"karpenter.sh/capacity-type\":\"spot\",\"node.kubernetes.io/"
                 "instance-type\":"
                 "\"g4dn.xlarge\",\"topology.kubernetes.io/"
                 "zone\":\"us-east-1a\"}},\"spec\":{\"providerID\":"
                 "\"aws:///us-east-1a/i-0abc\",\"taints\":[{\"key\":\"nvidia.com/gpu\",\"effect\":"
                 "\"NoSchedule\"}%s]},\"status\":{}}",
                 api.tainted ? ",{\"key\":\"karpenter.sh/disrupted\",\"effect\":\"NoSchedule\"}"
                             : "");
        return;
    }
    t_peer_problem(p, "unexpected %s %s", r->method, r->path);
    answer_status(out, 404, "NotFound");
}

static const char *ann(const char *key)
{
    return json_string_value(json_object_get(api.annotations, key));
}

#define COST "controller.kubernetes.io/pod-deletion-cost"
#define DND "karpenter.sh/do-not-disrupt"

/* Waits (bounded) for cond, polling; the guard's thread does the work. */
#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        for (int i_ = 0; i_ < 1000 && !(cond); i_++)                                               \
            clock_sleep_ms(10);                                                                    \
        CHECK(cond);                                                                               \
    } while (0)

static void test_marks_and_node_watch(void)
{
    t_peer_t p;
    CHECK(t_peer_start(&p, api_peer, NULL) == 0);
    api.annotations = json_object();
    set_token("sa-token-1");
    write_file("namespace", "pingvas\n");
    char err[512];
    pod_guard_config_t cfg = {
        .api_url = p.url, .sa_dir = dir, .pod_name = POD, .node_name = NODE, .poll_ms = 50};
    pod_guard_t *g = pod_guard_start(&cfg, err, sizeof err);
    CHECK(g != NULL);
    WAIT_FOR(api.node_gets >= 1);
    CHECK(!pod_guard_hold(g));
    /* Cost accounting reads where the pod runs from the node's labels. */
    char it[48], cap[16], zone[48];
    CHECK_INT(pod_guard_placement(g, it, sizeof it, cap, sizeof cap, zone, sizeof zone), 0);
    CHECK_STR(it, "g4dn.xlarge");
    CHECK_STR(cap, "spot");
    CHECK_STR(zone, "us-east-1a");
    CHECK(pod_guard_placement(NULL, it, sizeof it, cap, sizeof cap, zone, sizeof zone) == -1);
    CHECK_STR(it, "");
    /* Busy: both annotations. A second busy mark sends nothing. */
    pod_guard_set_busy(g, 1);
    CHECK_INT(api.patches, 1);
    CHECK_STR(ann(COST), "100");
    CHECK_STR(ann(DND), "true");
    pod_guard_set_busy(g, 1);
    CHECK_INT(api.patches, 1);
    /* Idle: neither; the rotated token is read from the file. */
    set_token("sa-token-2-rotated");
    pod_guard_set_busy(g, 0);
    CHECK_INT(api.patches, 2);
    CHECK(ann(COST) == NULL && ann(DND) == NULL);
    /* Busy, then Karpenter taints the node (spot interruption): do-not-disrupt comes off so the
     * drain can evict the pod, the deletion cost stays, and the worker is told to hold. */
    pod_guard_set_busy(g, 1);
    CHECK_STR(ann(DND), "true");
    api.tainted = 1;
    WAIT_FOR(pod_guard_hold(g) && ann(DND) == NULL);
    CHECK_STR(ann(COST), "100");
    /* While the node is going away a busy mark does not bring do-not-disrupt back. */
    pod_guard_set_busy(g, 0);
    pod_guard_set_busy(g, 1);
    CHECK_STR(ann(COST), "100");
    CHECK(ann(DND) == NULL);
    /* The taint goes (a replacement failed and Karpenter backed off): claims resume. */
    api.tainted = 0;
    WAIT_FOR(!pod_guard_hold(g));
    /* RBAC missing (403): logged, the mark is retried on the next change. */
    pod_guard_set_busy(g, 0);
    api.status = 403;
    int before = api.patches;
    pod_guard_set_busy(g, 1);
    CHECK_INT(api.patches, before);
    api.status = 0;
    pod_guard_set_busy(g, 1);
    CHECK_STR(ann(DND), "true");
    pod_guard_stop(g);
    t_peer_stop(&p);
    CHECK_STR(p.problems, "");
    json_decref(api.annotations);
}

static void test_configuration_errors(void)
{
    char err[512];
    pod_guard_config_t cfg = {.api_url = "http://127.0.0.1:9", .sa_dir = dir, .node_name = NODE};
    CHECK(pod_guard_start(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "PINGVAS_POD_NAME") != NULL);
    cfg.pod_name = POD;
    cfg.node_name = "Not_A_Node";
    CHECK(pod_guard_start(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "PINGVAS_NODE_NAME") != NULL);
    cfg.node_name = NODE;
    cfg.api_url = NULL;
    unsetenv("KUBERNETES_SERVICE_HOST");
    CHECK(pod_guard_start(&cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "KUBERNETES_SERVICE_HOST") != NULL);
}

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(token_file, sizeof token_file, "%s/token", dir);
}

static void teardown(void)
{
    char path[700];
    snprintf(path, sizeof path, "%s/namespace", dir);
    unlink(path);
    unlink(token_file);
    rmdir(dir);
    curl_global_cleanup();
}

#define T_SETUP() setup()
#define T_TEARDOWN() teardown()
#define TESTS(X)                                                                                   \
    X(test_marks_and_node_watch)                                                                   \
    X(test_configuration_errors)
#include "t_main.h"
