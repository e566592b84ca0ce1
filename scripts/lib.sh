# Shared by scripts/run.sh and scripts/test.sh: a local SecantusDB (a MongoDB wire-protocol
# server on WiredTiger that presents as a single-node replica set), installed from PyPI into a
# project-local virtual environment.
# shellcheck shell=bash

SECANTUS_VERSION="${SECANTUS_VERSION:-0.7.0b3}"
VENV=".venv"

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

ensure_secantus() {
  if [ ! -x "$VENV/bin/secantusd-py" ]; then
    log "installing SecantusDB $SECANTUS_VERSION into $VENV (once)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION"
  fi
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
    "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path "$storage" --log-level WARNING \
      >"target/secantus-$port.log" 2>&1 &
    SECANTUS_PID=$!
    trap 'kill "$SECANTUS_PID" 2>/dev/null; wait "$SECANTUS_PID" 2>/dev/null' EXIT
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
