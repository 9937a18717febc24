#!/usr/bin/env bash
# bench/ab.sh BIN [get]: one A/B sample for bench/RESULTS.md. Starts a fresh `BIN server` (one
# user, no rate limit, no queued cap, no stored-jobs cap) and runs `wrk -t2 -c64 -d5s -s bench/create.lua` against it:
# POST creates, or with `get` GETs of one job. Prints answers/s and the server's CPU (utime +
# stime from /proc) per 2xx answer, then that CPU by thread name (from
# /proc/PID/task/*/schedstat: `front` is libmicrohttpd's pool, `pv-create` the create writer).
# Run it for two binaries in turn on the same machine.
set -euo pipefail
BIN=$1
MODE=${2:-create}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/ab_lib.sh"
trap ab_stop EXIT
ab_start "$BIN"
export PINGVAS_TOKEN=$TOKEN
TARGET=$URL/api/v1/generation/create
GET=0
if [ "$MODE" = get ]; then
  ID=$(curl -s -H "Authorization: Bearer $PINGVAS_TOKEN" -H "Content-Type: application/json" \
    -d '{"prompt":"x"}' "$TARGET" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  TARGET=$URL/api/v1/generation/$ID
  GET=1
fi
threads() { # "tid name ns" for each of the server's threads
  for t in /proc/$P/task/*; do
    echo "${t##*/} $(tr ' ' _ <"$t/comm") $(cut -d' ' -f1 "$t/schedstat")" 2>/dev/null || true
  done
}
T0=$(awk '{print $14 + $15}' "/proc/$P/stat")
threads >"$D/t0"
OUT=$(PINGVAS_WRK_GET=$GET wrk -t2 -c64 -d5s -s "$HERE/create.lua" "$TARGET" | grep WRK_JSON)
threads >"$D/t1"
T1=$(awk '{print $14 + $15}' "/proc/$P/stat")
python3 - "$OUT" "$T0" "$T1" "$(getconf CLK_TCK)" "$D/t0" "$D/t1" <<'PY'
import collections, json, sys
w = json.loads(sys.argv[1].split(" ", 1)[1])
ok = w["requests"] - w["non2xx"]
cpu_us = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4]) * 1e6
print(f"{ok / w['seconds']:,.0f}/s, server CPU {cpu_us / max(ok, 1):.1f} us per answer, "
      f"p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms, {w['non2xx']} not 2xx")
before = {l.split()[0]: int(l.split()[2]) for l in open(sys.argv[5]) if len(l.split()) == 3}
by = collections.Counter()
for line in open(sys.argv[6]):
    f = line.split()
    if len(f) == 3:
        name = "front" if f[1].startswith("MHD") else f[1]
        by[name] += int(f[2]) - before.get(f[0], 0)
print("  by thread (us per answer): " + ", ".join(
    f"{k} {v / 1000 / max(ok, 1):.1f}" for k, v in by.most_common() if v / 1000 / max(ok, 1) >= 0.05))
PY
