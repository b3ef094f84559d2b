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

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PORT="${BENCH_PORT:-18080}"

bench_build
bench_env
export KONTAKT_LISTEN="127.0.0.1:$PORT"
bench_recreate_and_seed "${SEED_CUSTOMERS:-20000}" "${SEED_TOUCHPOINTS:-1000000}" "${SEED_HEAVY:-1000,100000,1000000}"

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
bench_wait_healthy "$SERVER_PID" "$OUT/server.log" "http://127.0.0.1:$PORT/healthz"

TOKEN="$(bench_token profiles:read,profiles:write,touchpoints:read,touchpoints:write,pii:read,cx:read kontakt-bench)"

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
