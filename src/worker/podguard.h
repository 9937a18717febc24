/* podguard.h: tells Kubernetes, through the API server and the pod's own service account, which
 * worker pod is busy (docs/deploy.md, "Disruption").
 *   busy: the worker's pod carries controller.kubernetes.io/pod-deletion-cost "100" (an HPA
 *         scale-down removes idle workers first) and karpenter.sh/do-not-disrupt "true"
 *         (Karpenter does not consolidate or drift the node away from under the job);
 *   idle: it carries neither.
 * A thread watches the pod's node (GET, every poll_ms, and at once after each busy mark). When
 * Karpenter taints it karpenter.sh/disrupted (spot interruption, expiry, manual deletion), or it
 * is being deleted or cordoned, do-not-disrupt comes off at once, so that Karpenter's drain can
 * evict the pod (SIGTERM, then the worker's drain window), and pod_guard_hold() says 1: the worker
 * claims nothing more on that node. Patches are JSON merge patches
 * (application/merge-patch+json) of metadata.annotations; the bearer token is re-read from the
 * service-account token file for each request (the kubelet rotates it). */
#ifndef PINGVAS_PODGUARD_H
#define PINGVAS_PODGUARD_H

#include <stddef.h>
#include <stdint.h>

#define POD_GUARD_BUSY_COST "100" /* pod-deletion-cost of a busy worker; idle: none (0) */

typedef struct pod_guard_config {
    const char *api_url;   /* "https://host:port"; NULL or "": from KUBERNETES_SERVICE_HOST/PORT */
    const char *sa_dir;    /* holds token, ca.crt, namespace; NULL: the in-pod default */
    const char *pod_name;  /* the downward API's metadata.name */
    const char *namespace; /* metadata.namespace; NULL: sa_dir/namespace */
    const char *node_name; /* spec.nodeName */
    int64_t poll_ms;       /* node check interval */
} pod_guard_config_t;

typedef struct pod_guard pod_guard_t;

/* Starts the guard. NULL with err when the configuration is incomplete (which field to set). */
pod_guard_t *pod_guard_start(const pod_guard_config_t *cfg, char *err, unsigned long errlen);
/* Marks the pod busy (1) or idle (0); patches only on a change. Failures are logged, not fatal:
 * the drain window still protects the job. */
void pod_guard_set_busy(pod_guard_t *g, int busy);
/* 1 while the pod's node is being disrupted: claim nothing more. */
int pod_guard_hold(pod_guard_t *g);
/* Where the pod runs, for cost accounting: the node's labels node.kubernetes.io/instance-type,
 * karpenter.sh/capacity-type and topology.kubernetes.io/zone, each into its buffer ("" when the
 * label is absent). 0 when the node was read, -1 otherwise (g NULL, API error). Its own
 * connection: safe beside the guard's threads. */
int pod_guard_placement(pod_guard_t *g, char *instance_type, size_t itsize, char *capacity,
                        size_t capsize, char *zone, size_t zsize);
void pod_guard_stop(pod_guard_t *g);

#endif
