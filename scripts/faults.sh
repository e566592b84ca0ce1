#!/usr/bin/env bash
# Fault-injection run (scripts/faults.py): two `roster serve` instances on a SecantusDB started
# with --sync-on-commit behind a proxy, clients adding and removing members with Idempotency-Key
# retries, while instances and the database are killed (kill -9) and connections are cut and
# stalled; then a check of the database against what the clients were told.
# Usage: scripts/faults.sh [SECONDS] (default 120; one fault every 5 s). Extra arguments go to
# scripts/faults.py (--every, --clients).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds="${1:-120}"
shift || true
ensure_secantus
log "building roster"
cargo build --quiet --bin roster
log "fault-injection run of ${seconds} s"
"$VENV/bin/python" scripts/faults.py --roster target/debug/roster \
  --secantusd "$PWD/scripts/secantusd" --seconds "$seconds" "$@"
