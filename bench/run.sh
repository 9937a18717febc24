#!/usr/bin/env bash
# bench/run.sh: pingvas's benchmarks beside BullMQ, in one run on this machine (~9 minutes).
#
#   bench/run.sh            build Release (build-bench/), install the peer, measure, print the
#                           table and update bench/RESULTS.md between its bench markers
#   BENCH_QUICK=1 bench/run.sh   shorter runs, for working on the script itself
#   BENCH_ONLY=size bench/run.sh the size rows alone (per-operation cost at 0 / 100,000 /
#                           1,000,000 stored jobs, SQLite and PostgreSQL, a few minutes); rewrites
#                           only their block of bench/RESULTS.md
#
# PostgreSQL rows run on a durable loopback cluster in /tmp/pingvas-pg-bench (port 55433), stopped
# at the end unless it was already running.
#
# Needs (Debian 12): cmake, a C compiler and pingvas's -dev packages (scripts/deps.sh), wrk,
# redis-server, nodejs + npm, python3. Missing wrk/redis-server/npm are installed with apt-get
# when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CMDLINE="bench/run.sh${*:+ $*}"
[ "${BENCH_QUICK:-}" = 1 ] && CMDLINE="BENCH_QUICK=1 $CMDLINE"
SIZE_ONLY=0
[ "${BENCH_ONLY:-}" = size ] && SIZE_ONLY=1 && CMDLINE="BENCH_ONLY=size $CMDLINE"

need=()
if [ $SIZE_ONLY = 0 ]; then
  command -v wrk >/dev/null || need+=(wrk)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v npm >/dev/null || need+=(nodejs npm)
fi
command -v pgrep >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bench: installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "bench: please install: ${need[*]} (apt-get install ${need[*]})" >&2
    exit 2
  fi
fi

# PostgreSQL for the rows on the PostgreSQL store: a loopback cluster of its own with
# PostgreSQL's default durability (fsync, synchronous_commit, full_page_writes on), so that every
# acknowledged create and charge there is on disk as with pingvas's defaults; not the tests'
# cluster, which runs with fsync off.
# Stopped again at the end when this run started it (its data directory stays for the next run).
bench_pg() { PINGVAS_PG_DIR=/tmp/pingvas-pg-bench PINGVAS_PG_PORT=55433 PINGVAS_PG_DURABLE=1 \
  bash scripts/services/postgres.sh "$@"; }
bench_pg status || trap 'bench_pg stop || true' EXIT
eval "$(bench_pg)"
export PINGVAS_TEST_PG_URL

# Release build in its own directory.
echo "bench: building Release in build-bench/" >&2
mkdir -p build-bench
if ! { cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPINGVAS_WERROR=OFF &&
       cmake --build build-bench -j"$(nproc)" --target pingvas; } >build-bench/build.log 2>&1; then
  tail -30 build-bench/build.log >&2
  echo "bench: the Release build failed; full log in build-bench/build.log" >&2
  exit 1
fi

if [ $SIZE_ONLY = 0 ]; then
  echo "bench: installing the peer (npm ci in bench/peer)" >&2
  (cd bench/peer && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

python3 bench/bench.py "$ROOT/build-bench/pingvas" "$ROOT/bench/peer" \
  "$ROOT/bench/RESULTS.md" "$CMDLINE"
