#!/usr/bin/env bash
# Kontakt side by side with PostGraphile 4 and 5 (issue 12), in one command: build, (re)create and seed the
# PostgreSQL database `kontakt_bench`, install PostGraphile from bench/postgraphile/v4 and v5 (package.json and lock
# each), start every target over that one database, then run ROUNDS interleaved rounds of wrk points (each round:
# PostGraphile 4, PostGraphile 5, Kontakt cache off, Kontakt cache on, Kontakt `{ viewer { tenant } }`, Kontakt
# `customer(id){id}`) and print a markdown table: req/s, p50, p99, CPU per process, answer size, and the ratios
# Kontakt ÷ the better PostGraphile.
#
#   bench/compare.sh                                        # 3 rounds × 6 targets × (2 s warm-up + 10 s)
#   SKIP_BUILD=1 SKIP_SEED=1 ROUNDS=1 DURATION=3 WARMUP=1 bench/compare.sh   # smoke run on the last dataset
#
# Every target reads the same customer (a manifest sample with personalization consent and ≥ 20 touchpoints): names,
# identities, consents and its 20 latest touchpoints with properties. The load generator is wrk (Debian package
# `wrk`): POST of the GraphQL body with the bearer token, CONNECTIONS connections.
#
# Settings (environment):
#   ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS=32 WRK_THREADS=1
#   SKIP_BUILD=1  SKIP_SEED=1                     as in bench/run.sh (SKIP_SEED reuses $BENCH_DB and its manifest)
#   SEED_CUSTOMERS=2000 SEED_TOUCHPOINTS=100000 SEED_HEAVY=1000   smaller than bench/run.sh: a point read needs one
#                                                 customer, and the indexes make its cost independent of table size
#   PGHOST PGPORT PGUSER BENCH_DB BENCH_PROFILE BENCH_OUT  as in bench/run.sh (bench/common.sh)
#   COMPARE_PORT=18090                            targets listen on COMPARE_PORT+1 … +4
#   KONTAKT_CACHE_TTL=30                          the profile cache's TTL for "cache on" (seconds)
#   PGL_POOL=10                                   PostGraphile's connection pool (both versions' default)
#   PGL_JWT=1                                     PostGraphile verifies the token (0: serves without checking it)
# Output: the table on stdout; logs, wrk output, probe answers, results.md and results.json in
# $BENCH_OUT/compare-<time> (under the cargo target dir, outside git).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PGL_DIR="$ROOT/bench/postgraphile"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
BASE_PORT="${COMPARE_PORT:-18090}"
RUN_DIR="$OUT/compare-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN_DIR"

for tool in wrk node npm psql python3 curl; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed (wrk: apt-get install wrk)" >&2; exit 2; }
done

# Every process this script starts, stopped on any exit.
PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

bench_build
bench_env
bench_recreate_and_seed "${SEED_CUSTOMERS:-2000}" "${SEED_TOUCHPOINTS:-100000}" "${SEED_HEAVY:-1000}"

# PostGraphile 4 and 5 each in their own folder (4 needs graphql 15, 5 needs 16: one node_modules mixes them up).
for version in v4 v5; do
    dir="$PGL_DIR/$version"
    if [[ ! -d "$dir/node_modules" || "$dir/package-lock.json" -nt "$dir/node_modules" ]]; then
        log "installing PostGraphile $version (npm ci in bench/postgraphile/$version)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        touch "$dir/node_modules"
    fi
done
PG4_VERSION="$(node -p 'require(process.argv[1]).version' "$PGL_DIR/v4/node_modules/postgraphile/package.json")"
PG5_VERSION="$(node -p 'require(process.argv[1]).version' "$PGL_DIR/v5/node_modules/postgraphile/package.json")"

# The customer every target reads: the first manifest sample (personalization granted) with ≥ 20 touchpoints.
samples="$(python3 -c "import json,sys; print(','.join(json.load(open(sys.argv[1]))['sample_customers'][:200]))" \
    "$OUT/manifest.json")"
CUSTOMER="$(psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$BENCH_DB" -v ON_ERROR_STOP=1 -Atq -c "
    SELECT s.id FROM unnest(string_to_array('$samples', ',')::uuid[]) WITH ORDINALITY AS s(id, n)
    WHERE (SELECT count(*) FROM touchpoints t WHERE t.tenant = '$TENANT' AND t.customer_id = s.id) >= 20
    ORDER BY s.n LIMIT 1")"
[[ -n "$CUSTOMER" ]] || { echo "no sample customer with 20 touchpoints in $BENCH_DB" >&2; exit 1; }

# PostgreSQL's postmaster, for the CPU of every backend (readable when the server runs on this machine).
PGDATA_DIR="$(psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$BENCH_DB" -Atq -c 'SHOW data_directory')"
POSTMASTER="$(head -1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || echo 0)"
[[ "$POSTMASTER" != 0 ]] || echo "PostgreSQL's data directory is not readable here: no PostgreSQL CPU figures" >&2

# start_target NAME PORT COMMAND…: start a server in the background with its log in $RUN_DIR/NAME.log.
start_target() {
    local name="$1" port="$2"
    shift 2
    log "starting $name on 127.0.0.1:$port"
    "$@" >"$RUN_DIR/$name.log" 2>&1 &
    PIDS+=("$!")
    eval "${name//-/_}_pid=$!"
}
PORT_OFF=$((BASE_PORT + 1)) PORT_ON=$((BASE_PORT + 2)) PORT_PG4=$((BASE_PORT + 3)) PORT_PG5=$((BASE_PORT + 4))

# Two Kontakt servers on the same database, the one difference being the profile cache. The seed ran the migrations.
KONTAKT_MIGRATE_ON_START=false KONTAKT_LISTEN="127.0.0.1:$PORT_OFF" KONTAKT_PROFILE_CACHE_TTL_SECS=0 \
    start_target kontakt-off "$PORT_OFF" "$BIN/kontakt" serve
KONTAKT_MIGRATE_ON_START=false KONTAKT_LISTEN="127.0.0.1:$PORT_ON" \
    KONTAKT_PROFILE_CACHE_TTL_SECS="${KONTAKT_CACHE_TTL:-30}" \
    start_target kontakt-on "$PORT_ON" "$BIN/kontakt" serve

# PostGraphile verifies the same token (HS256, same secret, issuer and audience) and, like a deployment with JWT,
# passes its claims to PostgreSQL as `jwt.claims.*` settings of each request's transaction. PGL_JWT=0: no
# verification (the header is ignored; one statement per request, no transaction). Read-only, no GraphiQL.
PGL_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$BENCH_DB?sslmode=${PGSSLMODE:-disable}"
PG4_JWT=() PG5_JWT_SECRET=""
if [[ "${PGL_JWT:-1}" != 0 ]]; then
    PG4_JWT=(--jwt-secret "$KONTAKT_JWT_SECRET" --jwt-verify-algorithms HS256
        --jwt-verify-audience "$bench_jwt_audience" --jwt-verify-issuer "$bench_jwt_issuer")
    PG5_JWT_SECRET="$KONTAKT_JWT_SECRET"
fi
NODE_ENV=production start_target pg4 "$PORT_PG4" node "$PGL_DIR/v4/node_modules/postgraphile/cli.js" \
    --connection "$PGL_URL" --schema public --host 127.0.0.1 --port "$PORT_PG4" \
    --dynamic-json --disable-default-mutations --disable-graphiql --disable-query-log \
    --max-pool-size "${PGL_POOL:-10}" "${PG4_JWT[@]}"
NODE_ENV=production DATABASE_URL="$PGL_URL" PG_SCHEMA=public HOST=127.0.0.1 PORT="$PORT_PG5" \
    PG_POOL_MAX="${PGL_POOL:-10}" JWT_SECRET="$PG5_JWT_SECRET" \
    JWT_AUDIENCE="$bench_jwt_audience" JWT_ISSUER="$bench_jwt_issuer" \
    start_target pg5 "$PORT_PG5" node -r "$PGL_DIR/polyfill.cjs" "$PGL_DIR/v5/pg5.mjs"

bench_wait_healthy "$kontakt_off_pid" "$RUN_DIR/kontakt-off.log" "http://127.0.0.1:$PORT_OFF/healthz"
bench_wait_healthy "$kontakt_on_pid" "$RUN_DIR/kontakt-on.log" "http://127.0.0.1:$PORT_ON/healthz"
for target in "pg4 $PORT_PG4" "pg5 $PORT_PG5"; do
    read -r name port <<<"$target"
    pid_var="${name}_pid"
    bench_wait_healthy "${!pid_var}" "$RUN_DIR/$name.log" -X POST -H 'Content-Type: application/json' \
        --data '{"query":"{ __typename }"}' "http://127.0.0.1:$port/graphql"
done

TOKEN="$(bench_token profiles:read,touchpoints:read,pii:read kontakt-compare)"

log "measuring: $ROUNDS round(s), $CONNECTIONS connections, $WARMUP s warm-up + $DURATION s per point" \
    "(customer $CUSTOMER)"
python3 "$ROOT/bench/compare.py" --token "$TOKEN" --customer "$CUSTOMER" --tenant "$TENANT" \
    --postmaster "$POSTMASTER" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "$CONNECTIONS" --threads "${WRK_THREADS:-1}" --out "$RUN_DIR" \
    --target "pg4=$pg4_pid:$PORT_PG4:PostGraphile $PG4_VERSION" \
    --target "pg5=$pg5_pid:$PORT_PG5:PostGraphile $PG5_VERSION" \
    --target "kontakt-off=$kontakt_off_pid:$PORT_OFF:Kontakt, profile cache off" \
    --target "kontakt-on=$kontakt_on_pid:$PORT_ON:Kontakt, profile cache on" \
    --target "viewer=$kontakt_on_pid:$PORT_ON:Kontakt \`{ viewer { tenant } }\` (ceiling)" \
    --target "row=$kontakt_on_pid:$PORT_ON:Kontakt \`customer(id) { id }\`" |
    tee "$RUN_DIR/table.md"

log "done: $RUN_DIR (table.md, results.json, wrk-*.txt, answer-*.json, server logs)"
