// Offline validation of pingvas's deploy/ tree. Run by scripts/check-deploy.sh.
//
//   node validate.mjs k8s NAME=rendered.yaml [NAME=rendered.yaml ...]
//   node validate.mjs hcl file.tf [file.tf ...]
//
// Prints one line per check, "PASS: ..." or "FAIL: ...", and exits 1 if any failed.
//
// Kubernetes objects are checked three ways:
//  1. schema: the JSON-schema validators shipped by kubernetes-models (Kubernetes core),
//     @kubernetes-models/karpenter (karpenter.sh/v1, karpenter.k8s.aws/v1, generated from
//     Karpenter's v1 CRDs) and @kubernetes-models/keda (keda.sh/v1alpha1): types, required
//     fields, enums, patterns. An apiVersion/kind without a schema here fails (so a
//     leftover karpenter.sh/v1beta1 object fails).
//  2. fields: those validators ignore unknown fields, which the API server rejects (or
//     silently drops). So every object is also type-checked by the TypeScript compiler
//     against the same packages' interfaces, as an object literal: an unknown or
//     misspelt field anywhere in the tree is an excess-property error.
//  3. invariants: what this deployment promises (docs/deploy.md), e.g. workers' grace
//     period above the drain window, do-not-disrupt, no PDB on workers, KEDA target and
//     limits, NodePools' capacity types and taints, pinned AMI alias, IMDSv2.
//
// HCL files are parsed (hcl2json, HashiCorp's HCL parser compiled to wasm) and compared
// with hclwrite.Format's output (@cdktf/hcl-tools, the formatter `terraform fmt` is built
// on), plus terraform fmt's two extra rewrites (redundant "${x}" interpolation, quoted
// type names).

import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
let failed = 0;
let passed = 0;
function pass(msg) { passed++; console.log(`PASS: ${msg}`); }
function fail(msg) { failed++; console.log(`FAIL: ${msg}`); }
function check(name, fn) {
  let problems;
  try { problems = fn(); } catch (e) { problems = [`exception: ${e && e.message ? e.message : e}`]; }
  if (!problems || problems.length === 0) pass(name);
  else fail(`${name}: ${problems.join("; ")}`);
}

// ---------------------------------------------------------------- schema registry
const CRD_PACKAGES = {
  "karpenter.sh": "@kubernetes-models/karpenter/karpenter.sh",
  "karpenter.k8s.aws": "@kubernetes-models/karpenter/karpenter.k8s.aws",
  "keda.sh": "@kubernetes-models/keda/keda.sh",
};
function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (CRD_PACKAGES[group]) return `${CRD_PACKAGES[group]}/${version}/${kind}`;
  if (group.includes(".") && !group.endsWith(".k8s.io")) return null; // unknown CRD group
  return `kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`;
}
async function loadModel(apiVersion, kind) {
  const mp = modulePath(apiVersion, kind);
  if (!mp) return null;
  try {
    const mod = await import(mp);
    return mod[kind] ? { cls: mod[kind], mp } : null;
  } catch {
    return null;
  }
}

const CLUSTER_SCOPED = new Set(["Namespace", "NodePool", "EC2NodeClass", "NodeClaim",
  "ClusterRole", "ClusterRoleBinding", "StorageClass", "PersistentVolume", "PriorityClass",
  "CustomResourceDefinition", "ClusterTriggerAuthentication"]);

function objName(o) {
  const ns = o?.metadata?.namespace ? `${o.metadata.namespace}/` : "";
  return `${o?.kind ?? "?"} ${ns}${o?.metadata?.name ?? "?"}`;
}

// ---------------------------------------------------------------- k8s
async function k8s(args) {
  for (const arg of args) {
    const eq = arg.indexOf("=");
    const label = arg.slice(0, eq);
    const file = arg.slice(eq + 1);
    let objs;
    try {
      objs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => {
        if (d.errors.length) throw new Error(d.errors.map(String).join(", "));
        return d.toJS();
      }).filter((o) => o != null);
    } catch (e) {
      fail(`[${label}] rendered YAML parses: ${e.message}`);
      continue;
    }
    check(`[${label}] renders to objects`, () => (objs.length ? [] : ["no objects"]));

    // 1. schema
    const typed = [];
    for (const o of objs) {
      const m = o && o.apiVersion && o.kind ? await loadModel(o.apiVersion, o.kind) : null;
      if (!m) { fail(`[${label}] schema ${o?.apiVersion} ${objName(o)}: no schema for this apiVersion/kind (outdated API?)`); continue; }
      try {
        new m.cls(o).validate();
        pass(`[${label}] schema ${o.apiVersion} ${objName(o)}`);
      } catch (e) {
        fail(`[${label}] schema ${o.apiVersion} ${objName(o)}: ${e.message}`);
      }
      typed.push({ o, mp: m.mp });
    }

    // 2. unknown fields, by the TypeScript compiler
    strictFields(label, typed);

    // 3. invariants
    invariants(label, objs);
  }
}

function strictFields(label, typed) {
  if (!typed.length) return;
  const dir = fs.mkdtempSync(path.join(here, ".tscheck-"));
  try {
    const lines = [];
    const ranges = [];
    typed.forEach(({ o, mp }, i) => {
      const iface = `I${o.kind}`;
      lines.push(`import type { ${iface} as T${i} } from "${mp}";`);
    });
    typed.forEach(({ o }, i) => {
      const start = lines.length + 1;
      const body = JSON.stringify(o, null, 2).split("\n");
      lines.push(`export const o${i}: T${i} = ${body[0]}`, ...body.slice(1).map((l, k) => (k === body.length - 2 ? l + ";" : l)));
      if (body.length === 1) lines[lines.length - 1] += ";";
      ranges.push([start, lines.length]);
    });
    fs.writeFileSync(path.join(dir, "objects.ts"), lines.join("\n") + "\n");
    fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "es2022", module: "esnext", moduleResolution: "bundler", strict: true,
        noEmit: true, skipLibCheck: true, types: [], typeRoots: [],
      },
      files: ["objects.ts"],
    }));
    let out = "";
    try {
      execFileSync(process.execPath, [path.join(here, "node_modules/typescript/bin/tsc"), "-p", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      out = (e.stdout || "") + (e.stderr || "");
      if (!out.trim()) out = String(e);
    }
    const perObj = typed.map(() => []);
    const general = [];
    for (const line of out.split("\n")) {
      const m = line.match(/objects\.ts\((\d+),\d+\): error (TS\d+: .*)$/);
      if (!m) { if (/error/.test(line)) general.push(line.trim()); continue; }
      const ln = Number(m[1]);
      const idx = ranges.findIndex(([a, b]) => ln >= a && ln <= b);
      if (idx < 0) general.push(m[2]);
      else perObj[idx].push(`line ${ln - ranges[idx][0] + 1}: ${m[2]}`);
    }
    if (general.length) fail(`[${label}] fields: TypeScript check could not run cleanly: ${general.slice(0, 5).join(" | ")}`);
    typed.forEach(({ o }, i) => {
      if (perObj[i].length) fail(`[${label}] fields ${objName(o)}: ${perObj[i].join(" | ")}`);
      else pass(`[${label}] fields ${objName(o)} (no unknown or mistyped field)`);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- invariants
const SECRET_KEYS = new Set(["DATABASE_URL", "JWT_SECRET", "PINGVAS_WORKER_TOKEN", "PINGVAS_WEBHOOK_SECRET"]);
const SPOT_NOTICE_S = 120;
// Worker backends this build runs, and the variable naming each one's engine URL (null: none).
const BACKENDS = { synthetic: null, a1111: "PINGVAS_A1111_URL", comfyui: "PINGVAS_COMFYUI_URL" };
// KEDA metrics-api trigger metadata keys (KEDA 2.x docs, scalers/metrics-api).
const METRICS_API_KEYS = new Set(["url", "format", "valueLocation", "targetValue", "activationTargetValue",
  "authMode", "unsafeSsl", "method", "aggregateFromKubeServiceEndpoints", "aggregationType"]);
// Smallest allocatable we count on per instance type (vCPU, GiB), after kubelet/system
// reservations and the DaemonSets (aws-node, kube-proxy, device plugin, CSI): a pod that
// asks for more than this does not fit the type.
const INSTANCE_FIT = {
  "g4dn.xlarge": [3.5, 13.5], "g4dn.2xlarge": [7.5, 29], "g5.xlarge": [3.5, 13.5],
  "g5.2xlarge": [7.5, 29], "g5.4xlarge": [15.5, 59], "g5.8xlarge": [31.5, 120],
};

function qty(v) { // Kubernetes quantity -> number (cores or GiB for Mi/Gi)
  if (typeof v === "number") return v;
  const m = String(v).match(/^([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G)?$/);
  if (!m) return NaN;
  const n = parseFloat(m[1]);
  return { undefined: n, m: n / 1000, Ki: n / 1048576, Mi: n / 1024, Gi: n, Ti: n * 1024, k: n * 1e3 / 2 ** 30, M: n * 1e6 / 2 ** 30, G: n * 1e9 / 2 ** 30 }[m[2]];
}
function envOf(c, name) {
  const e = (c.env || []).find((x) => x.name === name);
  return e ? (e.value ?? e.valueFrom) : undefined;
}
// Does some (Cluster)RoleBinding give ServiceAccount ns/sa `verb` on core `resource`? namespaced:
// the binding must be a RoleBinding in ns (or a ClusterRoleBinding).
function grants(objs, ns, sa, resource, verb, namespaced) {
  const role = (kind, name, rns) => objs.find((o) => o.kind === kind && o.metadata.name === name && (kind === "ClusterRole" || o.metadata.namespace === rns));
  return objs.some((b) => {
    if (b.kind !== "RoleBinding" && b.kind !== "ClusterRoleBinding") return false;
    if (b.kind === "RoleBinding" && b.metadata.namespace !== ns) return false;
    if (!(b.subjects || []).some((s) => s.kind === "ServiceAccount" && s.name === sa && s.namespace === ns)) return false;
    if (!namespaced && b.kind !== "ClusterRoleBinding") return false;
    const r = role(b.roleRef.kind, b.roleRef.name, b.metadata.namespace);
    return (r?.rules || []).some((x) => (x.apiGroups || []).includes("") && (x.resources || []).includes(resource) && (x.verbs || []).includes(verb));
  });
}
// The Service a cluster URL names: http://NAME.NS.svc[.cluster.local]:PORT -> {svc, port} or an error.
function serviceOfUrl(objs, url) {
  let u;
  try { u = new URL(url); } catch { return { err: `${url} is not a URL` }; }
  const m = u.hostname.match(/^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?$/);
  if (!m) return { err: `${url}: host ${u.hostname} is not a Service name (NAME.NAMESPACE.svc.cluster.local)` };
  const svc = objs.find((o) => o.kind === "Service" && o.metadata.name === m[1] && o.metadata.namespace === m[2]);
  if (!svc) return { err: `${url}: no Service ${m[2]}/${m[1]} in the manifests` };
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const sp = (svc.spec.ports || []).find((x) => x.port === port);
  if (!sp) return { err: `${url}: port ${port} is not a port of Service ${m[1]} (${(svc.spec.ports || []).map((x) => x.port)})` };
  return { svc, sp };
}
function tolerates(tols, taint) {
  return (tols || []).some((t) => {
    if (t.effect && t.effect !== taint.effect) return false;
    if (!t.key) return t.operator === "Exists";
    if (t.key !== taint.key) return false;
    if (t.operator === "Exists") return true;
    return (t.value ?? "") === (taint.value ?? "");
  });
}
function labelsMatch(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
}

// The Secret the server reads key from.
function serverSecretOf(server, key) {
  const c = server?.spec.template.spec.containers.find((x) => x.args[0] === "server");
  return c ? envOf(c, key)?.secretKeyRef?.name : undefined;
}
// Does this Service port lead to the server container's port (selector and targetPort)?
function serverServed(server, { svc, sp }) {
  const tpl = server.spec.template;
  if (!labelsMatch(svc.spec.selector, tpl.metadata.labels)) return false;
  const c = tpl.spec.containers.find((x) => x.args[0] === "server");
  const tp = sp.targetPort ?? sp.port;
  const cp = typeof tp === "string" ? (c.ports || []).find((x) => x.name === tp)?.containerPort : tp;
  const i = c.args.indexOf("--port");
  return cp !== undefined && (c.ports || []).some((x) => x.containerPort === cp) && (i < 0 || Number(c.args[i + 1]) === cp);
}

function invariants(label, objs) {
  const L = `[${label}]`;
  const of = (kind) => objs.filter((o) => o.kind === kind);
  const deps = of("Deployment");
  const server = deps.find((d) => d.spec?.template?.spec?.containers?.some((c) => (c.args || [])[0] === "server"));
  const workers = deps.filter((d) => d.spec?.template?.spec?.containers?.some((c) => (c.args || [])[0] === "worker"));
  const nodePools = of("NodePool");
  const nodeClasses = of("EC2NodeClass");
  const scaledObjects = of("ScaledObject");

  check(`${L} namespaces: namespaced objects have one, cluster-scoped ones none`, () => objs.flatMap((o) => {
    const ns = o.metadata?.namespace;
    if (CLUSTER_SCOPED.has(o.kind)) return ns ? [`${objName(o)} is cluster-scoped but has namespace ${ns}`] : [];
    return ns ? [] : [`${objName(o)} has no namespace`];
  }));

  check(`${L} secrets: every secretKeyRef is pingvas-secrets with a known key`, () => {
    const bad = [];
    const walk = (x, where) => {
      if (Array.isArray(x)) x.forEach((y) => walk(y, where));
      else if (x && typeof x === "object") {
        if (x.secretKeyRef && (x.secretKeyRef.name !== "pingvas-secrets" || !SECRET_KEYS.has(x.secretKeyRef.key))) bad.push(`${where}: ${x.secretKeyRef.name}/${x.secretKeyRef.key}`);
        Object.values(x).forEach((y) => walk(y, where));
      }
    };
    objs.forEach((o) => walk(o, objName(o)));
    return bad;
  });

  check(`${L} server: Deployment with 2+ replicas, /readyz readiness, secrets DATABASE_URL JWT_SECRET PINGVAS_WORKER_TOKEN PINGVAS_WEBHOOK_SECRET`, () => {
    if (!server) return ["no Deployment runs `pingvas server`"];
    const p = [];
    if (!(server.spec.replicas >= 2)) p.push(`replicas ${server.spec.replicas}`);
    const c = server.spec.template.spec.containers.find((x) => x.args[0] === "server");
    if (c.readinessProbe?.httpGet?.path !== "/readyz") p.push("readinessProbe is not GET /readyz");
    for (const k of SECRET_KEYS) if (envOf(c, k)?.secretKeyRef?.key !== k) p.push(`${k} not from a Secret`);
    const svc = of("Service").find((s) => labelsMatch(s.spec?.selector, server.spec.template.metadata.labels));
    if (!svc) p.push("no Service selects the server pods");
    return p;
  });

  check(`${L} server: listens beyond loopback (--bind), Celery bridge wired (REDIS_URL)`, () => {
    if (!server) return ["no server"];
    const c = server.spec.template.spec.containers.find((x) => x.args[0] === "server"), p = [];
    const i = c.args.indexOf("--bind");
    const bind = i >= 0 ? c.args[i + 1] : envOf(c, "PINGVAS_BIND") ?? "127.0.0.1";
    if (!["0.0.0.0", "::"].includes(bind)) p.push(`binds ${bind}: the kubelet, the Service and KEDA reach the pod IP`);
    const fromMap = (c.envFrom || []).some((e) => of("ConfigMap").some((m) => m.metadata.name === e.configMapRef?.name && m.data?.REDIS_URL));
    if (!envOf(c, "REDIS_URL") && !fromMap) p.push("REDIS_URL is wired nowhere (the Celery bridge is off)");
    return p;
  });

  check(`${L} cluster URLs name a Service port that leads to the server`, () => workers.flatMap((w) => {
    const c = w.spec.template.spec.containers.find((x) => x.args[0] === "worker");
    const t = serviceOfUrl(objs, envOf(c, "PINGVAS_SERVER_URL"));
    if (t.err) return [`${w.metadata.name}: ${t.err}`];
    return server && !serverServed(server, t) ? [`${w.metadata.name}: ${envOf(c, "PINGVAS_SERVER_URL")} does not lead to the server's port`] : [];
  }));

  check(`${L} PUBLIC_IMAGE_BASE_URL is a CDN, not the private bucket itself`, () => of("ConfigMap").flatMap((m) => {
    const u = m.data?.PUBLIC_IMAGE_BASE_URL;
    let host = "";
    try { host = u ? new URL(u).hostname : ""; } catch { return [`${m.metadata.name}: PUBLIC_IMAGE_BASE_URL ${u} is not a URL`]; }
    return /(^|\.)s3([.-][a-z0-9-]+)*\.amazonaws\.com$/.test(host) ? [`${m.metadata.name}: ${u} is the S3 bucket, which blocks public access: every image_url would answer 403 (use a CDN, or remove it for presigned URLs)`] : [];
  }));

  check(`${L} no backend that this build refuses (sdcpp) is named anywhere`, () =>
    objs.filter((o) => /sdcpp|stable-diffusion\.cpp-cuda/.test(JSON.stringify(o))).map(objName));

  check(`${L} NVIDIA device plugin runs on every GPU NodePool's nodes (nodeSelector)`, () => {
    const dp = of("DaemonSet").find((d) => /k8s-device-plugin/.test(d.spec.template.spec.containers[0].image));
    if (!dp) return [];
    return of("NodePool").filter((np) => !labelsMatch(dp.spec.template.spec.nodeSelector, np.spec.template.metadata?.labels))
      .map((np) => `nodeSelector ${JSON.stringify(dp.spec.template.spec.nodeSelector)} matches no node of ${np.metadata.name}`);
  });

  check(`${L} server: PodDisruptionBudget maxUnavailable 1`, () => {
    if (!server) return ["no server"];
    const pdbs = of("PodDisruptionBudget").filter((b) => labelsMatch(b.spec?.selector?.matchLabels, server.spec.template.metadata.labels));
    if (pdbs.length !== 1) return [`${pdbs.length} PDBs select the server pods`];
    const b = pdbs[0].spec;
    return b.maxUnavailable === 1 && b.minAvailable === undefined ? [] : [`PDB is ${JSON.stringify(b)}`];
  });

  check(`${L} workers: one Deployment per tier (standard, enterprise)`, () => {
    const tiers = workers.map((w) => envOf(w.spec.template.spec.containers[0], "PINGVAS_TIER")).sort();
    return JSON.stringify(tiers) === JSON.stringify(["enterprise", "standard"]) ? [] : [`tiers ${JSON.stringify(tiers)}`];
  });

  check(`${L} workers: no PodDisruptionBudget selects a worker (it would block drains and consolidation)`, () =>
    of("PodDisruptionBudget").flatMap((b) => workers.filter((w) => labelsMatch(b.spec?.selector?.matchLabels, w.spec.template.metadata.labels)).map((w) => `${objName(b)} selects ${objName(w)}`)));

  for (const w of workers) {
    const spec = w.spec.template.spec;
    const c = spec.containers.find((x) => x.args[0] === "worker");
    const tier = envOf(c, "PINGVAS_TIER");
    const W = `${L} worker ${w.metadata.name}`;
    check(`${W}: grace period above the drain window and within the ${SPOT_NOTICE_S} s spot notice`, () => {
      const drain = Number(envOf(c, "PINGVAS_DRAIN_TIMEOUT") ?? 90);
      const g = spec.terminationGracePeriodSeconds;
      return g > drain && g <= SPOT_NOTICE_S ? [] : [`terminationGracePeriodSeconds ${g}, drain ${drain}`];
    });
    check(`${W}: no static karpenter.sh/do-not-disrupt (the worker sets it only while busy), replicas left to KEDA`, () => {
      const p = [];
      if (w.spec.template.metadata?.annotations?.["karpenter.sh/do-not-disrupt"] !== undefined) p.push("do-not-disrupt on every pod: it also stops Karpenter's graceful eviction on an interruption");
      if (w.spec.replicas !== undefined) p.push(`spec.replicas is set (${w.spec.replicas}); re-applying would reset KEDA's scale`);
      return p;
    });
    const sidecars = (spec.initContainers || []).filter((x) => x.restartPolicy === "Always");
    const podContainers = [...spec.containers, ...sidecars];
    check(`${W}: 1 GPU in the pod, /dev/shm in memory, server URL and worker token`, () => {
      const p = [];
      const gpus = podContainers.filter((x) => x.resources?.limits?.["nvidia.com/gpu"] !== undefined);
      if (gpus.length !== 1 || String(gpus[0].resources.limits["nvidia.com/gpu"]) !== "1") p.push(`${gpus.length} containers ask for GPUs; want exactly one with 1`);
      for (const x of podContainers) {
        const shm = (x.volumeMounts || []).find((m) => m.mountPath === "/dev/shm");
        const shmVol = shm && (spec.volumes || []).find((v) => v.name === shm.name);
        if (shm && shmVol?.emptyDir?.medium !== "Memory") p.push(`${x.name}: /dev/shm is not a memory emptyDir`);
      }
      if (!/^https?:\/\//.test(envOf(c, "PINGVAS_SERVER_URL") || "")) p.push("PINGVAS_SERVER_URL missing");
      if (envOf(c, "PINGVAS_WORKER_TOKEN")?.secretKeyRef?.key !== "PINGVAS_WORKER_TOKEN") p.push("worker token not from the Secret");
      return p;
    });
    check(`${W}: backend exists and its engine is a sidecar on localhost with a startup probe, models read-only, no CUDA in the worker`, () => {
      const p = [], backend = envOf(c, "PINGVAS_BACKEND") ?? "synthetic";
      if (!(backend in BACKENDS)) return [`PINGVAS_BACKEND ${JSON.stringify(backend)} is not one of ${Object.keys(BACKENDS).join(", ")} (the binary refuses it)`];
      const urlVar = BACKENDS[backend];
      const engine = sidecars.find((x) => x.name === "engine");
      if (!urlVar) return engine ? ["an engine sidecar beside the synthetic backend"] : [];
      if (!engine) return [`backend ${backend} without an engine sidecar (initContainers, restartPolicy: Always)`];
      let u;
      try { u = new URL(envOf(c, urlVar)); } catch { return [`${urlVar} is not a URL`]; }
      const ports = (engine.ports || []).map((x) => x.containerPort);
      if (u.hostname !== "127.0.0.1" && u.hostname !== "localhost") p.push(`${urlVar} ${u.href} is not localhost`);
      if (!ports.includes(Number(u.port))) p.push(`${urlVar} port ${u.port} is not an engine port (${ports})`);
      const sp = engine.startupProbe?.httpGet;
      const spPort = typeof sp?.port === "string" ? (engine.ports || []).find((x) => x.name === sp.port)?.containerPort : sp?.port;
      if (!sp || !ports.includes(spPort)) p.push("engine startupProbe missing or on a port the engine does not expose");
      const models = (engine.volumeMounts || []).find((m) => m.name === "models");
      if (!models || models.readOnly !== true) p.push("models volume not mounted read-only into the engine");
      if (c.resources?.limits?.["nvidia.com/gpu"] !== undefined) p.push("the worker container asks for a GPU beside an engine");
      if (/cuda/i.test(c.image)) p.push(`worker image ${c.image} looks like a CUDA image`);
      return p;
    });
    check(`${W}: busy/idle pod marks: downward API names, service account with patch pods and get nodes`, () => {
      const p = [];
      const want = { PINGVAS_POD_NAME: "metadata.name", PINGVAS_POD_NAMESPACE: "metadata.namespace", PINGVAS_NODE_NAME: "spec.nodeName" };
      for (const [k, f] of Object.entries(want)) if (envOf(c, k)?.fieldRef?.fieldPath !== f) p.push(`${k} not from ${f}`);
      if (spec.automountServiceAccountToken === false) p.push("automountServiceAccountToken is false: no token for the Kubernetes API");
      const sa = spec.serviceAccountName || "default";
      if (!grants(objs, w.metadata.namespace, sa, "pods", "patch", true)) p.push(`ServiceAccount ${sa} may not patch pods in ${w.metadata.namespace}`);
      if (!grants(objs, w.metadata.namespace, sa, "nodes", "get", false)) p.push(`ServiceAccount ${sa} may not get nodes`);
      if (envOf(c, "PINGVAS_IMDS_URL") !== "off") p.push("PINGVAS_IMDS_URL is not off (IMDS is out of the pods' reach: hop limit 1)");
      return p;
    });
    // Which NodePools can this worker land on? nodeSelector vs pool labels, tolerations vs taints.
    const pools = nodePools.filter((np) => labelsMatch(spec.nodeSelector, np.spec.template.metadata?.labels)
      && (np.spec.template.spec.taints || []).every((t) => tolerates(spec.tolerations, t)));
    const capType = (np) => np.spec.template.spec.requirements.find((r) => r.key === "karpenter.sh/capacity-type")?.values || [];
    check(`${W}: schedules only onto the ${tier === "enterprise" ? "on-demand enterprise" : "spot"} GPU pool`, () => {
      const want = tier === "enterprise" ? "on-demand" : "spot";
      if (!pools.length) return ["no NodePool matches its nodeSelector and tolerations"];
      return pools.filter((np) => JSON.stringify(capType(np)) !== JSON.stringify([want])).map((np) => `can land on ${np.metadata.name} (${capType(np)})`);
    });
    check(`${W}: requests fit every instance type of its pool`, () => pools.flatMap((np) => {
      const types = np.spec.template.spec.requirements.find((r) => r.key === "node.kubernetes.io/instance-type")?.values || [];
      const sum = (k) => podContainers.reduce((a, x) => a + qty(x.resources?.requests?.[k] ?? 0), 0);
      const cpu = Math.round(sum("cpu") * 1000) / 1000, mem = Math.round(sum("memory") * 1000) / 1000;
      return types.filter((t) => !INSTANCE_FIT[t] || cpu > INSTANCE_FIT[t][0] || mem > INSTANCE_FIT[t][1])
        .map((t) => INSTANCE_FIT[t] ? `${cpu} CPU / ${mem}Gi does not fit ${t} (about ${INSTANCE_FIT[t][0]} CPU / ${INSTANCE_FIT[t][1]}Gi allocatable)` : `unknown instance type ${t}`);
    }));
    check(`${W}: KEDA ScaledObject on /api/v1/queue for tier ${tier}`, () => {
      const so = scaledObjects.filter((s) => s.spec.scaleTargetRef.name === w.metadata.name && (s.spec.scaleTargetRef.kind ?? "Deployment") === "Deployment");
      if (so.length !== 1) return [`${so.length} ScaledObjects target it`];
      const s = so[0].spec, p = [];
      if (s.minReplicaCount !== 0) p.push(`minReplicaCount ${s.minReplicaCount}`);
      if (typeof s.pollingInterval !== "number" || typeof s.cooldownPeriod !== "number") p.push("pollingInterval/cooldownPeriod not explicit");
      const gpuLimit = Math.min(...pools.map((np) => Number(np.spec.limits?.["nvidia.com/gpu"] ?? Infinity)));
      if (!(s.maxReplicaCount <= gpuLimit)) p.push(`maxReplicaCount ${s.maxReplicaCount} above the pool's GPU limit ${gpuLimit}`);
      const t = (s.triggers || []).find((x) => x.type === "metrics-api");
      if (!t) return [...p, "no metrics-api trigger"];
      if (!/\/api\/v1\/queue$/.test(t.metadata.url || "")) p.push(`url ${t.metadata.url}`);
      const unknown = Object.keys(t.metadata || {}).filter((k) => !METRICS_API_KEYS.has(k));
      if (unknown.length) p.push(`unknown metrics-api metadata ${unknown.join(", ")} (KEDA ignores it)`);
      if (!["AverageValue", "Value", "Utilization"].includes(t.metricType ?? "AverageValue")) p.push(`metricType ${t.metricType} is not AverageValue, Value or Utilization`);
      const target = serviceOfUrl(objs, t.metadata.url);
      if (target.err) p.push(target.err);
      else if (server && !serverServed(server, target)) p.push(`${t.metadata.url} reaches Service ${target.svc.metadata.name} port ${target.sp.port}, which does not lead to the server's port`);
      if (!new RegExp(`^tiers\\.${tier}\\.(queued|backlog)$`).test(t.metadata.valueLocation || "")) p.push(`valueLocation ${t.metadata.valueLocation} is not tier ${tier}`);
      if (t.metadata.targetValue !== "5") p.push(`targetValue ${t.metadata.targetValue}`);
      if (t.metadata.authMode !== "bearer") p.push("authMode is not bearer");
      const ta = of("TriggerAuthentication").find((a) => a.metadata.name === t.authenticationRef?.name && a.metadata.namespace === so[0].metadata.namespace);
      if (!ta) p.push(`TriggerAuthentication ${t.authenticationRef?.name} not found`);
      else if (!(ta.spec.secretTargetRef || []).some((r) => r.parameter === "token" && r.key === "PINGVAS_WORKER_TOKEN" && r.name === serverSecretOf(server, "PINGVAS_WORKER_TOKEN"))) p.push(`TriggerAuthentication does not map token <- Secret ${serverSecretOf(server, "PINGVAS_WORKER_TOKEN")} key PINGVAS_WORKER_TOKEN (the server's)`);
      return p;
    });
  }

  const want = {
    "gpu-spot": { cap: "spot", policy: "WhenEmptyOrUnderutilized", after: "30s", gpus: 20, taint: "nvidia.com/gpu" },
    "gpu-ondemand-enterprise": { cap: "on-demand", policy: "WhenEmpty", after: "5m", gpus: 5, taint: "tier" },
  };
  check(`${L} karpenter: NodePools gpu-spot and gpu-ondemand-enterprise exist`, () =>
    Object.keys(want).filter((n) => !nodePools.some((np) => np.metadata.name === n)).map((n) => `${n} missing`));
  for (const np of nodePools) {
    const w = want[np.metadata.name];
    check(`${L} karpenter NodePool ${np.metadata.name}: node class, capacity type, taint, GPU limit, consolidation`, () => {
      const p = [], s = np.spec;
      const ref = s.template.spec.nodeClassRef;
      if (!nodeClasses.some((nc) => nc.metadata.name === ref.name && ref.kind === "EC2NodeClass" && ref.group === "karpenter.k8s.aws")) p.push(`nodeClassRef ${JSON.stringify(ref)} resolves to no EC2NodeClass`);
      if (!(Number(s.limits?.["nvidia.com/gpu"]) > 0)) p.push("no nvidia.com/gpu limit");
      if (!w) return p;
      const cap = s.template.spec.requirements.find((r) => r.key === "karpenter.sh/capacity-type");
      if (JSON.stringify(cap?.values) !== JSON.stringify([w.cap]) || cap.operator !== "In") p.push(`capacity-type ${JSON.stringify(cap?.values)}`);
      if (!(s.template.spec.taints || []).some((t) => t.key === w.taint && t.effect === "NoSchedule")) p.push(`no ${w.taint} NoSchedule taint`);
      if (s.disruption?.consolidationPolicy !== w.policy || s.disruption?.consolidateAfter !== w.after) p.push(`disruption ${JSON.stringify(s.disruption)}`);
      if (Number(s.limits?.["nvidia.com/gpu"]) > w.gpus) p.push(`GPU limit above ${w.gpus}`);
      return p;
    });
  }
  for (const nc of nodeClasses) {
    check(`${L} karpenter EC2NodeClass ${nc.metadata.name}: pinned NVIDIA-capable AMI alias, no driver user data, IMDSv2, encrypted gp3 root, discovery`, () => {
      const p = [], s = nc.spec;
      const alias = (s.amiSelectorTerms || []).map((t) => t.alias).filter(Boolean);
      if (alias.length !== 1 || s.amiSelectorTerms.length !== 1) p.push("amiSelectorTerms must be exactly one alias");
      else if (!/^(al2023|bottlerocket)@v[0-9][0-9.]*$/.test(alias[0])) p.push(`alias ${alias[0]} is not a pinned al2023/bottlerocket version`);
      if (s.userData && /nvidia|dkms|yum install|dnf install/i.test(s.userData)) p.push("userData installs drivers");
      if (!!s.role === !!s.instanceProfile) p.push("exactly one of role / instanceProfile");
      if (s.metadataOptions?.httpTokens !== "required") p.push("IMDSv2 not required");
      if (s.metadataOptions?.httpPutResponseHopLimit !== 1) p.push(`httpPutResponseHopLimit ${s.metadataOptions?.httpPutResponseHopLimit}: pods could read the node role's credentials (want 1)`);
      const root = (s.blockDeviceMappings || [])[0]?.ebs;
      if (!root || root.volumeType !== "gp3" || root.encrypted !== true || qty(root.volumeSize) < 100) p.push(`root volume ${JSON.stringify(root)}`);
      if (!(s.subnetSelectorTerms || []).length || !(s.securityGroupSelectorTerms || []).length) p.push("no subnet/security-group selector");
      if (alias[0]?.startsWith("al2023")) {
        const dp = of("DaemonSet").find((d) => /k8s-device-plugin/.test(d.spec.template.spec.containers[0].image));
        if (!dp) p.push("AL2023 needs the NVIDIA device plugin DaemonSet, none found");
        else for (const np of nodePools) for (const t of np.spec.template.spec.taints || []) if (!tolerates(dp.spec.template.spec.tolerations, t)) p.push(`device plugin does not tolerate ${np.metadata.name}'s taint ${t.key}`);
      }
      return p;
    });
  }
  check(`${L} no aws-node-termination-handler next to Karpenter's interruption handling`, () =>
    objs.filter((o) => /node-termination-handler/.test(JSON.stringify(o))).map(objName));
}

// ---------------------------------------------------------------- hcl
async function hcl(files) {
  const { format } = await import("@cdktf/hcl-tools");
  const { parse } = await import("@cdktf/hcl2json");
  for (const f of files) {
    const src = fs.readFileSync(f, "utf8");
    const name = path.relative(process.cwd(), f);
    try {
      await parse(path.basename(f), src);
    } catch (e) {
      fail(`terraform ${name}: does not parse: ${String(e.message || e).slice(0, 300)}`);
      continue;
    }
    const out = await format(src);
    const problems = [];
    if (out !== src) {
      const a = src.split("\n"), b = out.split("\n");
      const i = a.findIndex((l, k) => l !== b[k]);
      problems.push(`not formatted (first difference at line ${i + 1}: ${JSON.stringify(a[i])} should be ${JSON.stringify(b[i])})`);
    }
    src.split("\n").forEach((l, k) => {
      if (/=\s*"\$\{[^}"]*\}"\s*$/.test(l)) problems.push(`line ${k + 1}: redundant interpolation (terraform fmt unwraps "\${x}" to x)`);
      if (/^\s*type\s*=\s*"(string|number|bool|list|map)"/.test(l)) problems.push(`line ${k + 1}: quoted type name (terraform fmt rewrites it)`);
    });
    if (problems.length) fail(`terraform fmt ${name}: ${problems.join("; ")}`);
    else pass(`terraform fmt ${name}`);
  }
}

// ---------------------------------------------------------------- main
const [mode, ...rest] = process.argv.slice(2);
if (mode === "k8s") await k8s(rest);
else if (mode === "hcl") await hcl(rest);
else { console.error("usage: node validate.mjs k8s NAME=FILE... | hcl FILE..."); process.exit(2); }
console.log(`# ${mode}: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
