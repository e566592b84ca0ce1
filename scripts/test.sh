#!/usr/bin/env bash
# Runs the whole test suite against a real MongoDB-compatible server: a throwaway in-memory
# SecantusDB unless MONGODB_URI is set (each test then makes its own database there), and a
# real S3-compatible server (moto) for the S3 media backend unless S3_TEST_ENDPOINT is set, and
# headless Chromium for the dashboard's browser journeys (Debian's chromium and chromium-driver,
# installed with apt-get when missing; screenshots go to target/dashboard/).
# Extra arguments go to the test runner; without any, scripts/api_conformance.sh follows (the
# API checked against its OpenAPI document with schemathesis, about 2.5 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -z "${MONGODB_URI:-}" ]; then
  start_secantus ":memory:" "$(free_port)"
fi
ensure_secantus
export SECANTUSD="$PWD/scripts/secantusd"
ensure_python_test_deps
ensure_chromium
ensure_axe
# The tests compile while the launcher's differential tests run (the compiler's single-threaded
# stretches leave a core to them); the build's output is shown if it fails.
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --lib --bins --tests)
else
  runner=(cargo test --lib --bins --tests)
fi
mkdir -p target
log "building the tests (beside the next two steps; output in target/test-build.log)"
"${runner[@]}" --no-run "$@" >target/test-build.log 2>&1 &
build_pid=$!
log "differential test of the SecantusDB launcher's index walk"
"$VENV/bin/python" scripts/test_secantusd.py
log "differential test of the launcher on concurrent writes (patched against unpatched)"
"$VENV/bin/python" scripts/test_secantusd_writes.py
log "waiting for the test build"
if ! wait "$build_pid"; then
  cat target/test-build.log
  exit 1
fi
if [ -z "${S3_TEST_ENDPOINT:-}" ]; then
  start_moto "$(free_port)" roster-test
fi
log "testing against $MONGODB_URI"
"${runner[@]}" --no-fail-fast "$@"
# The whole suite (no filter given): the API must also answer as its OpenAPI document says,
# and hold its invariants through a short fault-injection run (scripts/faults.sh runs longer).
if [ "$#" -eq 0 ]; then
  scripts/api_conformance.sh
  log "fault-injection run (30 s; scripts/faults.sh for the full 120 s)"
  cargo build --quiet --bin roster
  "$VENV/bin/python" scripts/faults.py --roster target/debug/roster \
    --secantusd "$PWD/scripts/secantusd" --seconds 30 --every 4
fi
