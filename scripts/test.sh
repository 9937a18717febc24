#!/usr/bin/env bash
# The one command that runs every test on a fresh Debian 12 machine (as root): installs the
# packages, builds, runs the whole CTest suite, then runs it again under AddressSanitizer and
# UndefinedBehaviorSanitizer (a leak is a failure).
#   scripts/test.sh            everything
#   scripts/test.sh --quick    one build, no sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
scripts/deps.sh --test

JOBS=$(nproc)
status=0

# Services for the production stack (PostgreSQL, Redis, an S3-compatible server), started on
# loopback by scripts/services/*.sh; each prints the environment that points tests at it.
PRODUCTION=ON
for svc in scripts/services/*.sh; do
  [ -e "$svc" ] || continue
  echo "== service $(basename "$svc" .sh)"
  if out=$(bash "$svc"); then
    eval "$out"
  else
    echo "service $(basename "$svc" .sh) did not start: production-stack tests cannot run" >&2
    PRODUCTION=OFF
    status=1
  fi
done
[ -e scripts/services/postgres.sh ] && [ -e scripts/services/s3.sh ] || PRODUCTION=OFF

echo "== build (RelWithDebInfo, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPINGVAS_WERROR=ON \
  -DPINGVAS_TEST_PRODUCTION=$PRODUCTION >/dev/null
cmake --build build -j"$JOBS" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
test -x build/pingvas

echo "== tests"
(cd build && ctest --output-on-failure -j"$JOBS" --timeout 900) || status=1

if [ "${1:-}" != "--quick" ]; then
  echo "== build (ASan + UBSan)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPINGVAS_SANITIZE=ON \
    -DPINGVAS_TEST_PRODUCTION=$PRODUCTION >/dev/null
  cmake --build build-asan -j"$JOBS" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
  echo "== tests under sanitizers"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan && ctest --output-on-failure -j"$JOBS" --timeout 900 -LE deploy) || status=1
fi
exit $status
