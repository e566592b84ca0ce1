#!/usr/bin/env bash
# Checks that the API answers as its OpenAPI document says: schemathesis generates requests for
# every tenant operation from /openapi.json (examples, boundary values, fuzzing, and stateful
# sequences that reuse created ids) and fails on any server error or any answer whose status
# code, content type or body the document does not describe. Runs once with a server token and
# once with a user token, against a real `roster serve` on MONGODB_URI (scripts/test.sh calls it
# after the tests; alone it starts a SecantusDB). The platform API (/admin) is left out: it sits
# on the operators' listener. Bounded: ST_EXAMPLES cases per operation and phase (default 10),
# a fixed seed so that a failure reproduces, one worker (hypothesis reads lambda sources with
# Python's `ast`, which on Python 3.11 fails at random when two threads parse at once).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_schemathesis
if [ -z "${MONGODB_URI:-}" ]; then
  start_secantus ":memory:" "$(free_port)"
fi
cargo build --quiet --bin roster
bin=target/debug/roster
api_port=$(free_port)
admin_port=$(free_port)
export ROSTER_ENV=development
export ROSTER__DATABASE__NAME="roster_conformance_$(date +%s)"
export ROSTER__HTTP__BIND="127.0.0.1:$api_port" ROSTER__HTTP__ADMIN_BIND="127.0.0.1:$admin_port"
# The checker sends hundreds of requests a second as one user.
export ROSTER__RATE_LIMITS__USER_PER_SEC=100000 ROSTER__RATE_LIMITS__USER_BURST=100000
export ROSTER__RATE_LIMITS__TENANT_PER_SEC=100000 ROSTER__RATE_LIMITS__TENANT_BURST=100000
export ROSTER__LOG__LEVEL=error
"$bin" tenant create conformance >/dev/null
server_token=$("$bin" token --tenant conformance --server --ttl 2h)
user_token=$("$bin" token --tenant conformance --user alice --ttl 2h)
mkdir -p target
"$bin" serve >"target/conformance-serve.log" 2>&1 &
STARTED_PIDS+=("$!")
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && break
  sleep 0.3
done

status=0
for who in server user; do
  token=$server_token
  [ "$who" = user ] && token=$user_token
  log "API conformance with a $who token"
  "$VENV/bin/st" run "http://127.0.0.1:$api_port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${ST_EXAMPLES:-10}" --seed "${ST_SEED:-1}" --workers 1 \
    --exclude-path-regex '^/admin' --no-color >"target/conformance-$who.txt" 2>&1 || status=1
  tail -n 4 "target/conformance-$who.txt" >&2
done
if [ "$status" != 0 ]; then
  log "the API and its document disagree: see target/conformance-*.txt"
fi
exit "$status"
