#!/usr/bin/env bash
# Offline checks of deploy/: every kustomize tree renders, every rendered object validates
# against the Kubernetes, Karpenter v1 and KEDA schemas (plus an unknown-field check and
# the deployment's invariants), the Terraform is formatted, and the validator itself
# catches deliberately broken copies (so it is not vacuous).
#
# Run from anywhere as root on Debian 12; installs what it needs (apt, npm ci). Prints one
# line per check and ends with "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
CHECK_DIR="$ROOT/deploy/check"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pingvas-check-deploy.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
finish() {
  echo "${PASSED} passed, ${FAILED} failed"
  [ "$FAILED" -eq 0 ]
  exit $?
}
die() { fail "$*"; finish; }

# ------------------------------------------------------------------ tools
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then return 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$WORK/apt.log" 2>&1 && return 0
  apt-get update -q >>"$WORK/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$WORK/apt.log" 2>&1
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm || die "tools: node and npm are missing and 'apt-get install nodejs npm' failed (see apt log)"
fi

# kubectl with an embedded kustomize v4 or newer (kubectl >= 1.21). Debian 12's own
# kubernetes-client is kubectl 1.20 with kustomize v2.0.3, which cannot render these trees
# (directories in `resources`, `patches`), so it is not a fallback.
kustomize_ok() {
  local v
  v="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')"
  [ -n "$v" ] && [ "$v" -ge 4 ]
}
if ! command -v kubectl >/dev/null || ! kustomize_ok; then
  apt_install kubectl || true # the kubectl package, where the Kubernetes/Google apt source is configured
fi
if command -v kubectl >/dev/null && kustomize_ok; then
  pass "tools: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
else
  die "tools: need kubectl >= 1.21 (kustomize v4+) on PATH; Debian's kubernetes-client (1.20) is too old. Install the 'kubectl' package from the Kubernetes apt repository."
fi

# npm ci into deploy/check/node_modules, only when the lock file changed.
STAMP="$CHECK_DIR/node_modules/.pingvas-lock.sha256"
LOCK_SUM="$(sha256sum "$CHECK_DIR/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$LOCK_SUM" ]; then
  if (cd "$CHECK_DIR" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1); then
    echo "$LOCK_SUM" >"$STAMP"
  else
    cat "$WORK/npm.log"
    die "tools: npm ci in deploy/check failed"
  fi
fi
pass "tools: validator packages installed (deploy/check, npm ci)"

# ------------------------------------------------------------------ helpers
# run_validator LOG ARGS... : runs validate.mjs, echoes its PASS/FAIL lines into our count.
run_validator() {
  local log="$1"
  shift
  node "$CHECK_DIR/validate.mjs" "$@" >"$log" 2>&1
  local rc=$?
  while IFS= read -r line; do
    case "$line" in
      PASS:*) pass "${line#PASS: }" ;;
      FAIL:*) fail "${line#FAIL: }" ;;
      "# "*) ;;
      *) [ -n "$line" ] && echo "  $line" ;;
    esac
  done <"$log"
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL:' "$log"; then
    fail "validator crashed (exit $rc): $(tail -n 3 "$log" | tr '\n' ' ')"
  fi
}

# render DIR OUT : kubectl kustomize, quietly
render() { kubectl kustomize "$1" >"$2" 2>"$2.err"; }

# ------------------------------------------------------------------ 1. render
TREES=(deploy/k8s/base)
for d in deploy/k8s/overlays/*/; do TREES+=("${d%/}"); done
VARGS=()
for t in "${TREES[@]}"; do
  name="$(basename "$t")"
  out="$WORK/render-$name.yaml"
  if render "$t" "$out"; then
    if grep -qi 'warning' "$out.err"; then
      fail "render $t: kustomize warns: $(tr '\n' ' ' <"$out.err")"
    else
      pass "render $t ($(grep -c '^kind:' "$out") objects)"
    fi
    VARGS+=("$name=$out")
  else
    fail "render $t: $(tr '\n' ' ' <"$out.err")"
  fi
done

# ------------------------------------------------------------------ 2. validate
[ "${#VARGS[@]}" -gt 0 ] && run_validator "$WORK/k8s.log" k8s "${VARGS[@]}"

# ------------------------------------------------------------------ 3. terraform fmt
mapfile -t TF_FILES < <(find deploy/terraform -name '*.tf' -not -path '*/.terraform/*' | sort)
if [ "${#TF_FILES[@]}" -eq 0 ]; then
  fail "terraform: no .tf files under deploy/terraform"
else
  run_validator "$WORK/hcl.log" hcl "${TF_FILES[@]}"
fi

# ------------------------------------------------------------------ 4. negative self-tests
# Each breaks a temporary copy in one way the seed (or a typo) would, and expects the
# validator to fail with a specific message.
expect_caught() { # NAME PATTERN LOG
  if grep -E '^FAIL:' "$3" | grep -qE "$2"; then
    pass "self-test: validator catches $1"
  else
    fail "self-test: validator did NOT catch $1 (expected a FAIL matching /$2/)"
  fi
}
neg_k8s() { # NAME PATTERN EDIT-COMMAND [TREE] (edit runs inside the copy's k8s dir; TREE: overlays/dev)
  local name="$1" pattern="$2" edit="$3" tree="${4:-overlays/dev}" dir="$WORK/neg-$PASSED-$FAILED"
  mkdir -p "$dir" && cp -r deploy/k8s "$dir/"
  (cd "$dir/k8s" && eval "$edit") || { fail "self-test $name: edit failed"; return; }
  if ! render "$dir/k8s/$tree" "$dir/out.yaml"; then
    fail "self-test $name: broken copy did not render: $(tr '\n' ' ' <"$dir/out.yaml.err")"
    return
  fi
  node "$CHECK_DIR/validate.mjs" k8s "neg=$dir/out.yaml" >"$dir/log" 2>&1
  expect_caught "$name" "$pattern" "$dir/log"
}
neg_k8s "a misspelt field (readOnlyRootFilesytem)" "fields Deployment .*readOnlyRootFilesytem" \
  "sed -i '0,/readOnlyRootFilesystem/s//readOnlyRootFilesytem/' base/server.yaml"
neg_k8s "a Karpenter v1beta1 NodePool (the seed's API)" "schema karpenter.sh/v1beta1 .*no schema" \
  "sed -i 's#^apiVersion: karpenter.sh/v1\$#apiVersion: karpenter.sh/v1beta1#' base/karpenter.yaml overlays/dev/karpenter.yaml"
neg_k8s "v1beta1's consolidationPolicy WhenUnderutilized" "schema karpenter.sh/v1 NodePool gpu-spot.*consolidationPolicy" \
  "sed -i 's/consolidationPolicy: WhenEmptyOrUnderutilized/consolidationPolicy: WhenUnderutilized/' base/karpenter.yaml"
neg_k8s "the seed's worker PDB (minAvailable: 1)" "PodDisruptionBudget .* selects .*pingvas-worker" \
  "printf -- '---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: worker-pdb\n  namespace: pingvas\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: pingvas-worker\n' >> base/worker-standard.yaml"
neg_k8s "a grace period shorter than the drain window" "grace period above the drain window" \
  "sed -i 's/terminationGracePeriodSeconds: 110/terminationGracePeriodSeconds: 30/' base/worker-standard.yaml"
neg_k8s "the seed's 4 CPU / 16Gi request on xlarge spot types" "does not fit g4dn.xlarge" \
  "sed -i 's/cpu: 2500m/cpu: \"4\"/; s/memory: 11Gi/memory: 16Gi/g' base/worker-standard.yaml" base
neg_k8s "driver installation in EC2NodeClass user data" "userData installs drivers" \
  "sed -i 's#^  role: KarpenterNodeRole-pingvas#  role: KarpenterNodeRole-pingvas\n  userData: |\n    yum install -y nvidia-driver-latest-dkms#' base/karpenter.yaml"
# Issue 9's findings, each as the broken manifest that had it.
neg_k8s "the server bound to loopback only (no --bind; finding 1)" "binds 127.0.0.1" \
  "sed -i 's/, \"--bind\", \"0.0.0.0\"\]/]/' base/server.yaml"
neg_k8s "a backend this build refuses (PINGVAS_BACKEND=sdcpp; finding 3)" "sdcpp" \
  "sed -i 's/value: comfyui/value: sdcpp/' base/worker-standard.yaml" base
neg_k8s "do-not-disrupt on every worker pod (finding 4)" "do-not-disrupt on every pod" \
  "sed -i 's#^        workload-type: gpu\$#        workload-type: gpu\n      annotations:\n        karpenter.sh/do-not-disrupt: \"true\"#' base/worker-enterprise.yaml"
neg_k8s "IMDS within the pods' reach (hop limit 2; finding 6)" "httpPutResponseHopLimit 2" \
  "sed -i 's/httpPutResponseHopLimit: 1/httpPutResponseHopLimit: 2/' base/karpenter.yaml"
neg_k8s "image URLs on the private bucket itself (finding 8)" "blocks public access" \
  "sed -i 's#^  PUBLIC_IMAGE_BASE_URL: null#  PUBLIC_IMAGE_BASE_URL: https://dev-pingvas-eks-images.s3.us-east-1.amazonaws.com/images#' overlays/dev/config.yaml"
neg_k8s "REDIS_URL wired nowhere (finding 9)" "REDIS_URL is wired nowhere" \
  "sed -i '/^  REDIS_URL:/d' base/config.yaml"
# Finding 10: what the schemas let through.
neg_k8s "a wrong KEDA URL host" "no Service pingvas/pingvas-srv" \
  "sed -i '0,/pingvas-server.pingvas.svc/s//pingvas-srv.pingvas.svc/' base/keda.yaml"
neg_k8s "a wrong KEDA URL port" "port 8081 is not a port of Service" \
  "sed -i '0,/svc.cluster.local:8080/s//svc.cluster.local:8081/' base/keda.yaml"
neg_k8s "a wrong Secret name in the TriggerAuthentication" "TriggerAuthentication does not map token" \
  "sed -i 's/      name: pingvas-secrets/      name: pingvas-secret/' base/keda.yaml"
neg_k8s "a Service port that the URLs do not use" "is not a port of Service pingvas-server" \
  "sed -i 's/^      port: 8080/      port: 80/' base/server.yaml"
neg_k8s "metricType: Averagevalue" "metricType Averagevalue" \
  "sed -i '0,/metricType: AverageValue/s//metricType: Averagevalue/' base/keda.yaml"
neg_k8s "an unknown trigger metadata key" "unknown metrics-api metadata activationThreshold" \
  "sed -i '0,/activationTargetValue:/s//activationThreshold:/' base/keda.yaml"
neg_k8s "a device-plugin nodeSelector typo" "nodeSelector .*matches no node of gpu-spot" \
  "sed -i '0,/        workload-type: gpu/s//        workload-typ: gpu/' base/nvidia-device-plugin.yaml"
# Issue 10 item 5: the engine beside the worker.
neg_k8s "an engine without a startup probe" "engine startupProbe missing" \
  "sed -i '/^          startupProbe:/,/^            failureThreshold: 120/d' base/worker-standard.yaml" base
neg_k8s "a writable models volume in the engine" "models volume not mounted read-only into the engine" \
  "sed -i '/mountPath: \\/opt\\/ComfyUI\\/models/{n;s/readOnly: true/readOnly: false/}' base/worker-standard.yaml" base
neg_k8s "the worker pointed at another port than the engine's" "PINGVAS_A1111_URL port 7861 is not an engine port" \
  "sed -i 's#http://127.0.0.1:7860#http://127.0.0.1:7861#' components/engine-a1111/engine.yaml" overlays/a1111

NEG_TF="$WORK/neg-tf"
mkdir -p "$NEG_TF"
sed 's/^  name               = "KarpenterNodeRole/  name = "KarpenterNodeRole/' deploy/terraform/modules/pingvas-karpenter/main.tf >"$NEG_TF/main.tf"
node "$CHECK_DIR/validate.mjs" hcl "$NEG_TF/main.tf" >"$NEG_TF/log" 2>&1
expect_caught "misaligned Terraform (terraform fmt would rewrite it)" "terraform fmt .*not formatted" "$NEG_TF/log"

finish
