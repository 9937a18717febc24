#!/usr/bin/env bash
# The one command that runs pingvas on a fresh Debian 12 machine: installs packages, builds,
# and starts `pingvas up` (server + local workers, SQLite and files under ./data).
# Extra arguments go to `pingvas up` (e.g. --port 9000 --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target pingvas >/dev/null
exec build/pingvas up "$@"
