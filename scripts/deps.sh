#!/usr/bin/env bash
# Installs the Debian 12 packages pingvas needs to build, run and test. Idempotent; needs root
# (or sudo) only when something is missing.
set -euo pipefail

PKGS=(build-essential cmake pkg-config git curl ca-certificates python3
      libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev libpq-dev
      libhiredis-dev libssl-dev libpng-dev zlib1g-dev libwebsockets-dev sqlite3)
if [ "${1:-}" = "--test" ]; then
  # python3-yaml, openssl: the boot test of deploy/ (deploy/check/boot.py); chromium: the
  # dashboard's browser test (tests/integration/test_dashboard.py, driven by puppeteer-core);
  # python3-celery, python3-redis: the seed's real Celery producer and its Redis result backend
  # (tests/integration/test_celery_python.py)
  PKGS+=(clang libclang-rt-14-dev postgresql redis-server nodejs npm python3-yaml openssl chromium
         python3-celery python3-redis)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from outside Debian's packages on some images: accept any working node.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do
    [ "$p" = nodejs ] || [ "$p" = npm ] || filtered+=("$p")
  done
  missing=("${filtered[@]}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
