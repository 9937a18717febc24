#!/usr/bin/env bash
# Builds every libFuzzer target in fuzz/ with clang (-fsanitize=fuzzer,address,undefined) and
# runs each over its seed corpus (fuzz/corpus/<target>/, copied, never modified here).
#   scripts/fuzz.sh --ci        108 s in all, split evenly among the targets (CI; PINGVAS_FUZZ_SECONDS
#                               sets the seconds of each instead)
#   scripts/fuzz.sh SECONDS     each target for SECONDS
#   scripts/fuzz.sh SECONDS T   only target T (create_body, jwt, wire, route, celery, comfyui,
#                               a1111, aws, url)
# Prints the executions per target and in total; exits non-zero when a target crashes, leaks,
# or fails an invariant (the crashing input is kept in the work directory, build-fuzz/<target>/
# or under CTest build/fuzz/<target>/; see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECONDS_EACH=20
case "${1:-}" in
  --ci) SECONDS_EACH=${PINGVAS_FUZZ_SECONDS:-ci} ;;
  "") ;;
  *[!0-9]*) echo "usage: scripts/fuzz.sh [--ci|SECONDS] [TARGET]" >&2; exit 2 ;;
  *) SECONDS_EACH=$1 ;;
esac
ONLY=${2:-}

CC=${CLANG:-}
if [ -z "$CC" ]; then
  for c in clang clang-16 clang-15 clang-14; do
    if command -v "$c" >/dev/null 2>&1; then CC=$c; break; fi
  done
fi
if [ -z "$CC" ]; then
  echo "fuzz: clang not found; install it with scripts/deps.sh --test (clang, libclang-rt-14-dev)" >&2
  exit 2
fi
OUT=${PINGVAS_FUZZ_BUILD:-$ROOT/build-fuzz}
mkdir -p "$OUT"
FLAGS=(-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -fno-omit-frame-pointer -Isrc)

# target: sources and libraries it links (beside fuzz/fuzz_<target>.c)
declare -A SRCS=(
  [create_body]="src/core/validate.c src/core/apierr.c src/core/job.c src/lib/b64.c src/lib/jsonw.c src/lib/clock.c src/lib/log.c src/lib/netguard.c"
  [jwt]="src/lib/jwt.c src/lib/hmac.c src/lib/b64.c"
  [wire]="src/core/wire.c src/core/apierr.c src/core/job.c src/lib/b64.c src/lib/jsonw.c src/lib/clock.c"
  [route]="src/api/route.c"
  [celery]="src/bridge/celery.c src/core/job.c src/lib/jsonw.c src/lib/b64.c src/lib/clock.c src/lib/log.c src/lib/url.c"
  [comfyui]="src/backend/comfyui_proto.c"
  [a1111]="src/backend/a1111_proto.c src/lib/b64.c"
  [aws]="src/blob/awscreds.c src/blob/sigv4.c src/lib/hmac.c src/lib/b64.c src/worker/imds.c src/lib/httpc.c src/lib/http1.c src/lib/clock.c src/lib/log.c"
  [url]="src/lib/url.c src/lib/log.c src/lib/clock.c"
)
declare -A LIBS=(
  [create_body]="-ljansson -lcrypto -lm"
  [jwt]="-ljansson -lcrypto -lpthread"
  [wire]="-ljansson -lcrypto -lm"
  [route]=""
  [celery]="-ljansson -lcrypto -lm -lcurl"
  [comfyui]="-ljansson"
  [a1111]="-ljansson"
  [aws]="-ljansson -lcurl -lssl -lcrypto -lpthread"
  [url]="-lcurl"
)

total=0
status=0
TARGETS="create_body jwt wire route celery comfyui a1111 aws url"
CI_BUDGET_S=108 # fuzz.ci's whole run (about 12 s a target): adding a target shortens each, not the CI
if [ "$SECONDS_EACH" = ci ]; then
  # shellcheck disable=SC2086
  set -- $TARGETS
  SECONDS_EACH=$((CI_BUDGET_S / $#))
fi
if [ -n "$ONLY" ] && [[ " $TARGETS " != *" $ONLY "* ]]; then
  echo "fuzz: no target '$ONLY' (targets: $TARGETS)" >&2
  exit 2
fi
for t in $TARGETS; do
  [ -n "$ONLY" ] && [ "$ONLY" != "$t" ] && continue
  dir="$OUT/$t"
  mkdir -p "$dir/corpus"
  # shellcheck disable=SC2086
  if ! "$CC" "${FLAGS[@]}" "fuzz/fuzz_$t.c" ${SRCS[$t]} ${LIBS[$t]} -o "$dir/fuzz_$t" 2>"$dir/build.log"; then
    echo "fuzz: building fuzz_$t failed:" >&2
    cat "$dir/build.log" >&2
    exit 2
  fi
  cp -n fuzz/corpus/"$t"/* "$dir/corpus/" 2>/dev/null || true
  log="$dir/run.log"
  rc=0
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
     ./"fuzz_$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
     -max_len=70000 corpus) >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  execs=${execs:-0}
  total=$((total + execs))
  if [ "$rc" -ne 0 ]; then
    echo "fuzz_$t: FAILED (exit $rc) after $execs executions; see $log"
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20
    status=1
  else
    echo "fuzz_$t: ok, $execs executions in ${SECONDS_EACH}s, corpus $(ls "$dir/corpus" | wc -l) inputs"
  fi
done
echo "fuzz: total executions $total"
exit $status
