#!/usr/bin/env bash
# Where a profile read's time goes: the same server and dataset as bench/run.sh, driven by wrk (Debian package
# `wrk`) with one fixed customer, for four queries that add one part of the profile at a time:
#   viewer        `{ viewer { tenant } }`: HTTP, the token, GraphQL — no database
#   row           `customer(id) { id }`: + the one statement of a profile read (row and consents) and its access log
#   profile-core  + identities and consents (identities from the profile cache when warm)
#   profile       + the latest 20 touchpoints: the `profile` scenario's query
# Run after bench/run.sh (it needs the seeded database, its manifest and the built binaries):
#   bench/floor.sh                      # 32 connections, 8 s each
#   FLOOR_CONNECTIONS=1 bench/floor.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/${BENCH_PROFILE:-release}"
OUT="${BENCH_OUT:-$TARGET/bench}"
PORT="${BENCH_PORT:-18081}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
export DATABASE_URL="postgres://${PGUSER:-postgres}@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/${BENCH_DB:-kontakt_bench}?sslmode=${PGSSLMODE:-disable}"
export KONTAKT_JWT_SECRET="floor-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export KONTAKT_LISTEN="127.0.0.1:$PORT" KONTAKT_LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}" KONTAKT_MIGRATE_ON_START=false
unset KONTAKT_ENV
"$BIN/kontakt" serve >"$OUT/floor-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.5; done
token="$("$BIN/kontakt" token --tenant bench --scopes profiles:read,touchpoints:read,pii:read \
    --purpose personalization --subject floor --ttl-secs 3600)"
id="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['sample_customers'][0])" "$OUT/manifest.json")"
declare -A queries=(
    [viewer]='{ viewer { tenant } }'
    [row]='query($id: UUID!) { customer(id: $id) { id } }'
    [profile-core]='query($id: UUID!) { customer(id: $id) { id givenName familyName identities { kind value } consents { purpose status } } }'
    [profile]='query($id: UUID!) { customer(id: $id) { id givenName familyName identities { kind value } consents { purpose status } touchpoints(first: 20) { edges { node { id channel type stage occurredAt } } } } }'
)
printf '| query | connections | req/s | mean latency |\n|---|---:|---:|---:|\n'
for name in viewer row profile-core profile; do
    script="$OUT/floor-$name.lua"
    body="$(python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1], "variables": {"id": sys.argv[2]}}))' "${queries[$name]}" "$id")"
    printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer %s"\nwrk.body = [[%s]]\n' "$token" "$body" >"$script"
    result="$(wrk -t1 -c"${FLOOR_CONNECTIONS:-32}" -d"${FLOOR_DURATION:-8}s" -s "$script" "http://127.0.0.1:$PORT/graphql")"
    if grep -q "Non-2xx" <<<"$result"; then echo "$name: non-2xx answers" >&2; echo "$result" >&2; exit 1; fi
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$result")"
    mean="$(awk '/Latency/ {print $2; exit}' <<<"$result")"
    printf '| %s | %s | %s | %s |\n' "$name" "${FLOOR_CONNECTIONS:-32}" "$rps" "$mean"
done
