#!/usr/bin/env bash
# Runs the benchmarks (membership load, events and webhooks, reads at 100,000 members, authorize hot path, upload memory) against a throwaway in-memory SecantusDB (unless MONGODB_URI is set).
# BENCH_SECONDS sets each concurrency level's duration (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -z "${MONGODB_URI:-}" ]; then
  start_secantus ":memory:" "$(free_port)"
fi
log "benchmarking against $MONGODB_URI"
cargo bench --bench membership_load --bench events --bench reads --bench authorize --bench upload_memory "$@"
