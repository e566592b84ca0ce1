#!/usr/bin/env bash
# Runs the benchmarks (membership load, message reports, events and webhooks, reads at 100,000
# members, authorize hot path, upload memory, the dashboard in headless Chromium), each against a throwaway in-memory SecantusDB of its own, so that
# none inherits another's data or load (unless MONGODB_URI is set: then all use that database).
# BENCH_SECONDS sets each concurrency level's duration (default 5). Extra arguments go to each
# `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

BENCHES=(membership_load messages events reads authorize upload_memory dashboard)
ensure_chromium
args=()
for b in "${BENCHES[@]}"; do args+=(--bench "$b"); done
log "building the benchmarks"
cargo bench --no-run "${args[@]}"

if [ -n "${MONGODB_URI:-}" ]; then
  log "benchmarking against $MONGODB_URI (one database for every benchmark)"
  cargo bench "${args[@]}" "$@"
  exit 0
fi
for b in "${BENCHES[@]}"; do
  start_secantus ":memory:" "$(free_port)"
  log "benchmark $b against a fresh database at $MONGODB_URI"
  cargo bench --bench "$b" "$@"
  kill "$SECANTUS_PID" 2>/dev/null || true
  wait "$SECANTUS_PID" 2>/dev/null || true
  unset MONGODB_URI
done
