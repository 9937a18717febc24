#!/usr/bin/env bash
# bench/simulate.sh: how long `pingvas simulate` takes for a day of 100,000 jobs (issue 13's
# target: under 2 s). Builds Release in build-bench/, writes the day as a CSV trace (Poisson,
# 1.1574 jobs/s for 24 h = about 100,000 jobs, 512x512, 20 steps), then times, 5 times each, the
# simulation of that trace (CSV parsing included) under the seed's keda settings and under local,
# with the SVG plot. Prints the table and rewrites the block between the bench-simulate markers
# of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build-bench
if ! { cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPINGVAS_WERROR=OFF &&
       cmake --build build-bench -j"$(nproc)" --target pingvas; } >build-bench/build.log 2>&1; then
  tail -30 build-bench/build.log >&2
  exit 1
fi
BIN=$PWD/build-bench/pingvas
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BIN" simulate --arrivals poisson:1.1574 --hours 24 --seed 1 --write-trace "$TMP/day.csv" \
  --json >/dev/null
JOBS=$(($(wc -l <"$TMP/day.csv") - 1))

# Median wall time of 5 runs of a command, in seconds.
median() {
  local t=()
  for _ in 1 2 3 4 5; do
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null
    e=$(date +%s.%N)
    t+=("$(echo "$e - $s" | bc -l)")
  done
  printf '%s\n' "${t[@]}" | sort -n | sed -n 3p
}
KEDA=$(median "$BIN" simulate --trace "$TMP/day.csv" --policy keda --plot "$TMP/keda.svg")
LOCAL=$(median "$BIN" simulate --trace "$TMP/day.csv" --policy local --plot "$TMP/local.svg")
verdict() { if (($(echo "$1 < 2" | bc -l))); then echo yes; else echo no; fi; }
BLOCK=$(cat <<EOT
Measured $(date -u '+%Y-%m-%d %H:%M:%S UTC') with \`bench/simulate.sh\` on $(nproc) cores.

| measurement | pingvas | target | reached |
|---|---|---|---|
| (g) \`pingvas simulate --trace day.csv --policy keda --plot F.svg\`, $JOBS jobs in 24 h, median of 5 | $(printf '%.3f' "$KEDA") s | < 2 s | $(verdict "$KEDA") |
| (g) the same with \`--policy local\` (the policy evaluated on every arrival and job end) | $(printf '%.3f' "$LOCAL") s | < 2 s | $(verdict "$LOCAL") |
EOT
)
echo "$BLOCK"
python3 - "$BLOCK" <<'PY'
import re, sys
path = "bench/RESULTS.md"
text = open(path).read()
begin, end = "<!-- bench-simulate:begin -->", "<!-- bench-simulate:end -->"
block = begin + "\n" + sys.argv[1] + "\n" + end
if begin in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, text, flags=re.S)
else:
    text += "\n## Simulator speed\n\n" + block + "\n"
open(path, "w").write(text)
PY
