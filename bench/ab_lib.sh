# bench/ab_lib.sh: sourced by bench/ab.sh and bench/ab_e2e.sh.
# ab_start BIN: a fresh `BIN server` on an ephemeral port in a new temp dir, with one user `u`
# (no rate limit, no queued cap, no stored-jobs cap); sets D (the dir), P (the server's pid), URL
# and TOKEN (the user's). ab_stop (the callers' EXIT trap): stops P and every pid in AB_PIDS,
# removes D.
AB_PIDS=()
D=
P=
ab_start() {
  D=$(mktemp -d)
  export PINGVAS_RATE_LIMIT=0 JWT_SECRET=ab-secret-0123456789abcdef0123456789
  export PINGVAS_WORKER_TOKEN=ab-worker-token-0123456789abcdef
  mkdir -p "$D/data"
  "$1" user add u --credits 2000000000 --data "$D/data" >/dev/null
  TOKEN=$("$1" token u --data "$D/data")
  "$1" server --port 0 --data "$D/data" --log-level warn --max-queued-per-user 0 \
    --max-jobs-per-user 0 >"$D/out" 2>"$D/err" &
  P=$!
  AB_PIDS+=("$P")
  for _ in $(seq 100); do grep -q "listening on " "$D/out" && break; sleep 0.1; done
  URL=$(grep -o "http://[0-9.:]*" "$D/out" | head -1)
  if [ -z "$URL" ]; then
    echo "ab: the server did not start: $(cat "$D/err")" >&2
    exit 1
  fi
}
ab_stop() {
  if [ ${#AB_PIDS[@]} -gt 0 ]; then
    kill "${AB_PIDS[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  [ -z "$D" ] || rm -rf "$D"
}
