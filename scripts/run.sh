#!/usr/bin/env bash
# Runs Roster on a working local database: starts SecantusDB (data kept in .data/secantus and
# reused next time) unless MONGODB_URI is set, creates the `demo` tenant if missing, prints a
# server token, a user token, a dashboard link and curl lines to try, then serves until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -z "${MONGODB_URI:-}" ]; then
  start_secantus ".data/secantus" "${ROSTER_DB_PORT:-27117}"
fi
log "building roster"
cargo build --quiet --bin roster
bin=target/debug/roster

"$bin" tenant create demo --name "Demo" --if-missing >&2
server_token=$("$bin" token --tenant demo --server --ttl 24h)
user_token=$("$bin" token --tenant demo --user alice --ttl 24h)
frank_token=$("$bin" token --tenant demo --user frank --ttl 24h)
dashboard_link=$("$bin" dashboard-link --tenant demo)
console_link=$("$bin" admin-link)
bind="${ROSTER__HTTP__BIND:-127.0.0.1:8080}"
cat <<TXT

Roster on http://$bind  (API document: http://$bind/docs/)

  Tenant admin dashboard (open within 10 minutes, once; \`$bin dashboard-link --tenant demo\` for another):
  $dashboard_link

  Operators' console (the same; \`$bin admin-link\` for another):
  $console_link

  export SERVER_TOKEN=$server_token
  export USER_TOKEN=$user_token
  export FRANK_TOKEN=$frank_token

  curl -s -X PUT http://$bind/v1/users/alice -H "Authorization: Bearer \$SERVER_TOKEN" -H 'Content-Type: application/json' -d '{"display_name":"Alice"}'
  curl -s -X POST http://$bind/v1/conversations -H "Authorization: Bearer \$USER_TOKEN" -H 'Content-Type: application/json' -d '{"name":"Book club","members":[{"user_id":"bob"},{"user_id":"carol","role":"moderator"}]}'
  curl -s "http://$bind/v1/users/alice/conversations" -H "Authorization: Bearer \$USER_TOKEN"

TXT
# A local run: the compiled-in secrets are accepted and webhooks may point at receivers on this
# machine (config/development.toml).
export ROSTER_ENV="${ROSTER_ENV:-development}"
"$bin" serve
