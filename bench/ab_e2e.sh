#!/usr/bin/env bash
# bench/ab_e2e.sh BIN [LOADTEST_BIN]: one A/B sample of a small (b) for bench/RESULTS.md. Starts a
# fresh `BIN server` (bench/ab_lib.sh) and 4 `BIN worker --time-scale 0`, runs
# `LOADTEST_BIN loadtest` (default BIN) for 10,000 64x64 one-step jobs at 64 concurrent with
# `--poll 1s` as bench/run.sh's (b) does, and prints jobs/s, the server's CPU (utime + stime from
# /proc) and the loadtest's (getrusage) per completed job, and the server's 2xx answers.
# Run it for two binaries in turn on the same machine.
set -euo pipefail
BIN=$1
LT=${2:-$1}
. "$(cd "$(dirname "$0")" && pwd)/ab_lib.sh"
trap ab_stop EXIT
ab_start "$BIN"
for i in 1 2 3 4; do
  "$BIN" worker --server "$URL" --log-level warn --imds-url off --time-scale 0 \
    --worker-id "ab$i" 2>/dev/null &
  AB_PIDS+=("$!")
done
sleep 1
T0=$(awk '{print $14 + $15}' "/proc/$P/stat")
python3 - "$LT" "$URL" "$TOKEN" "$D/rep" <<'PY'
import resource, subprocess, sys
lt, url, token, rep = sys.argv[1:5]
with open(rep, "w") as out:
    subprocess.run([lt, "loadtest", "--server", url, "--token", token, "--jobs", "10000",
                    "--concurrency", "64", "--width", "64", "--height", "64", "--steps", "1",
                    "--poll", "1s", "--json"], stdout=out, stderr=subprocess.DEVNULL, check=True)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
open(rep + ".cpu", "w").write(f"{ru.ru_utime + ru.ru_stime}")
PY
T1=$(awk '{print $14 + $15}' "/proc/$P/stat")
OK=$(curl -s -H "Authorization: Bearer $PINGVAS_WORKER_TOKEN" "$URL/metrics" |
  awk '/^pingvas_http_responses_total\{class="2xx"\}/ {print $2}')
python3 - "$D/rep" "$T0" "$T1" "$(getconf CLK_TCK)" "$OK" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
n = max(r["completed"], 1)
srv = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4]) * 1e6 / n
lt = float(open(sys.argv[1] + ".cpu").read())
print(f"{r['jobs_per_second']:,.0f} jobs/s ({r['completed']} completed), server CPU {srv:.0f} us "
      f"per job, loadtest {lt * 1e6 / n:.0f} us per job, {sys.argv[5]} 2xx answers")
PY
