#!/usr/bin/env bash
# The Kontakt benchmark in one command: build release binaries, (re)create the PostgreSQL database
# `kontakt_bench`, seed it, start `kontakt serve` on it, mint a token, run the scenarios, stop the server.
#
#   bench/run.sh                                   # full size: 20,000 customers, 1,000,000 touchpoints,
#                                                  # heavy customers of 1,000 / 100,000 / 1,000,000 touchpoints
#   SEED_CUSTOMERS=2000 SEED_TOUCHPOINTS=100000 SEED_HEAVY=1000,100000 BENCH_DURATION=5 bench/run.sh   # smoke run
#
# Settings (environment):
#   PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres     PostgreSQL with trust auth (psql must be installed)
#   BENCH_DB=kontakt_bench                           dropped and created again on every run (unless SKIP_SEED=1)
#   SEED_CUSTOMERS=20000 SEED_TOUCHPOINTS=1000000 SEED_HEAVY=1000,100000,1000000 SEED_RNG=42
#   SKIP_SEED=1                                      reuse the database and manifest of the previous run
#   BENCH_PORT=18080 BENCH_SCENARIOS=all BENCH_CONCURRENCY=32 BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_BATCH=500
#   REDIS_URL=redis://127.0.0.1:6379                 optional: the server's cache and pub/sub in Redis
#   BENCH_OUT=<target dir>/bench                     where the manifest, logs and results go
#   SKIP_BUILD=1                                     use the release binaries already built
#   BENCH_PROFILE=release                            cargo profile to build and run (`profiling`: no LTO, incremental)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${BENCH_PROFILE:-release}"
BIN="$TARGET/$PROFILE"
OUT="${BENCH_OUT:-$TARGET/bench}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
BENCH_DB="${BENCH_DB:-kontakt_bench}"
PORT="${BENCH_PORT:-18080}"
TENANT=bench
mkdir -p "$OUT"

log() { printf '\n== %s\n' "$*" >&2; }

if [[ "$BENCH_DB" != kontakt_bench* ]]; then
    echo "BENCH_DB must start with kontakt_bench: this script drops it" >&2
    exit 2
fi

if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --profile "$PROFILE" -p kontakt -p kontakt-bench)
fi

# One environment for seed, serve and token: the same database and the same signing secret.
# The database is on this machine: no TLS on loopback (a remote database keeps sslmode=require in its URL).
export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$BENCH_DB?sslmode=${PGSSLMODE:-disable}"
export KONTAKT_JWT_SECRET="${KONTAKT_JWT_SECRET:-bench-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
export KONTAKT_LISTEN="127.0.0.1:$PORT"
export KONTAKT_LOG_FORMAT=json
export KONTAKT_WRITE_KEYS="${KONTAKT_WRITE_KEYS:-bench-key=$TENANT/web}"
export RUST_LOG="${RUST_LOG:-warn}"
unset KONTAKT_DATABASE_SCHEMA KONTAKT_ENV

if [[ -z "${SKIP_SEED:-}" ]]; then
    log "recreating database $BENCH_DB on $PGHOST:$PGPORT"
    psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -v ON_ERROR_STOP=1 -q \
        -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB"

    log "seeding: ${SEED_CUSTOMERS:-20000} customers, ${SEED_TOUCHPOINTS:-1000000} touchpoints, heavy ${SEED_HEAVY:-1000,100000,1000000}"
    "$BIN/kontakt-bench" seed --tenant "$TENANT" \
        --customers "${SEED_CUSTOMERS:-20000}" \
        --touchpoints "${SEED_TOUCHPOINTS:-1000000}" \
        --heavy "${SEED_HEAVY:-1000,100000,1000000}" \
        --seed "${SEED_RNG:-42}" \
        --manifest "$OUT/manifest.json" 2>&1 | tee "$OUT/seed.log"
fi

log "starting kontakt serve on 127.0.0.1:$PORT"
"$BIN/kontakt" serve >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
stop_server() {
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap stop_server EXIT
for _ in $(seq 1 60); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server exited; see $OUT/server.log" >&2
        tail -20 "$OUT/server.log" >&2
        exit 1
    fi
    sleep 0.5
done

TOKEN="$("$BIN/kontakt" token --tenant "$TENANT" \
    --scopes profiles:read,touchpoints:read,touchpoints:write,pii:read \
    --purpose personalization --subject kontakt-bench --ttl-secs 7200)"

log "running scenarios (${BENCH_SCENARIOS:-all})"
"$BIN/kontakt-bench" --url "http://127.0.0.1:$PORT" --token "$TOKEN" \
    --manifest "$OUT/manifest.json" \
    --scenario "${BENCH_SCENARIOS:-all}" \
    --concurrency "${BENCH_CONCURRENCY:-32}" \
    --duration "${BENCH_DURATION:-10}" \
    --warmup "${BENCH_WARMUP:-2}" \
    --batch "${BENCH_BATCH:-500}" \
    --write-key "${KONTAKT_WRITE_KEYS%%=*}" \
    --json "$OUT/results.json" | tee "$OUT/results.md"

stop_server
trap - EXIT
log "done: $OUT/results.md, $OUT/results.json, $OUT/seed.log, $OUT/server.log"
