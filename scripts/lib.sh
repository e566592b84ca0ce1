# Shared by scripts/run.sh and scripts/test.sh: a local SecantusDB (a MongoDB wire-protocol
# server on WiredTiger that presents as a single-node replica set), installed from PyPI into a
# project-local virtual environment.
# shellcheck shell=bash

SECANTUS_VERSION="${SECANTUS_VERSION:-0.7.0b3}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
HYPOTHESIS_VERSION="${HYPOTHESIS_VERSION:-6.170.15}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
VENV=".venv"

# Servers started by this shell; all stopped when it exits.
STARTED_PIDS=()
stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true  # already stopped by its script
    wait "$pid" 2>/dev/null || true
  done
  return 0
}
trap stop_started EXIT

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

ensure_secantus() {
  if [ ! -x "$VENV/bin/secantusd-py" ]; then
    log "installing SecantusDB $SECANTUS_VERSION into $VENV (once)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION"
  fi
}

# ensure_python_test_deps: what scripts/test_secantusd.py needs besides SecantusDB.
ensure_python_test_deps() {
  ensure_secantus
  if ! "$VENV/bin/python" -c 'import hypothesis' 2>/dev/null; then
    log "installing hypothesis $HYPOTHESIS_VERSION into $VENV (once)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "hypothesis==$HYPOTHESIS_VERSION"
  fi
}

# ensure_schemathesis: the API conformance checker of scripts/api_conformance.sh.
ensure_schemathesis() {
  ensure_python_test_deps
  if [ ! -x "$VENV/bin/st" ]; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV (once)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION"
  fi
}

# ensure_chromium: Debian's headless Chromium and its WebDriver, for the dashboard's browser
# tests (tests/api/browser.rs). Installed with apt-get when missing (as root, or through sudo).
ensure_chromium() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    return
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  log "installing chromium and chromium-driver with apt-get (once)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
}

# ensure_axe: axe-core (pinned, from the npm registry) for the accessibility checks of the
# browser tests, in target/axe/. Tests only: nothing Roster ships needs npm.
AXE_CORE_VERSION=4.14.1
ensure_axe() {
  local js=target/axe/node_modules/axe-core/axe.min.js
  if [ -f "$js" ] && grep -q "axe v$AXE_CORE_VERSION" "$js"; then
    return
  fi
  log "installing axe-core $AXE_CORE_VERSION into target/axe (once)"
  mkdir -p target/axe
  npm install --prefix target/axe --no-audit --no-fund --silent "axe-core@$AXE_CORE_VERSION" >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

db_ping() { # $1 = port
  "$VENV/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys
from pymongo import MongoClient
MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true", serverSelectionTimeoutMS=500).admin.command("ping")
PY
}

# start_secantus STORAGE PORT: starts SecantusDB (or reuses one already answering on PORT),
# waits until it answers, exports MONGODB_URI, and stops it when this shell exits.
start_secantus() {
  local storage="$1" port="$2"
  ensure_secantus
  if db_ping "$port"; then
    log "reusing the database already on 127.0.0.1:$port"
  else
    [ "$storage" = ":memory:" ] || mkdir -p "$storage"
    mkdir -p target
    log "starting SecantusDB on 127.0.0.1:$port (storage: $storage)"
    # --sync-on-commit: without it SecantusDB loses acknowledged transactions when killed.
    # scripts/secantusd: secantusd-py with keyset pages that stop at their limit (see there).
    scripts/secantusd --host 127.0.0.1 --port "$port" --storage-path "$storage" --log-level WARNING \
      --sync-on-commit \
      >"target/secantus-$port.log" 2>&1 &
    SECANTUS_PID=$!
    STARTED_PIDS+=("$SECANTUS_PID")
    local i
    for i in $(seq 1 150); do
      db_ping "$port" && break
      if ! kill -0 "$SECANTUS_PID" 2>/dev/null; then
        cat "target/secantus-$port.log" >&2
        log "SecantusDB did not start"; return 1
      fi
      sleep 0.2
    done
    db_ping "$port" || { log "SecantusDB did not answer within 30 s"; return 1; }
  fi
  export MONGODB_URI="mongodb://127.0.0.1:$port/?directConnection=true"
}

ensure_moto() {
  if [ ! -x "$VENV/bin/moto_server" ]; then
    ensure_secantus
    log "installing moto $MOTO_VERSION (an S3-compatible test server) into $VENV (once)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
}

# start_moto PORT BUCKET: starts moto's S3-compatible server, creates BUCKET, exports
# S3_TEST_ENDPOINT and S3_TEST_BUCKET for the S3 backend tests, and stops it on exit.
start_moto() {
  local port="$1" bucket="$2"
  ensure_moto
  mkdir -p target
  log "starting moto (S3) on 127.0.0.1:$port"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"target/moto-$port.log" 2>&1 &
  STARTED_PIDS+=("$!")
  "$VENV/bin/python" - "$port" "$bucket" <<'PY'
import sys, time, boto3
port, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
for _ in range(150):
    try:
        s3.create_bucket(Bucket=bucket)
        break
    except Exception:
        time.sleep(0.2)
else:
    sys.exit("moto did not answer within 30 s")
PY
  export S3_TEST_ENDPOINT="http://127.0.0.1:$port" S3_TEST_BUCKET="$bucket"
}
