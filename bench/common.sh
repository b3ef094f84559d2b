# Shared setup of the benchmark scripts (sourced by bench/run.sh and bench/compare.sh, not run on its own):
# paths, the database and the server's environment, the release build, seeding, waiting for a server, tokens.

# The one place the dataset generator is invoked: `bench_seed ARGS…` takes `kontakt-bench seed`'s arguments
# (--tenant --customers --touchpoints --heavy --seed --manifest) and needs DATABASE_URL.
bench_seed() {
    "$BIN/kontakt-bench" seed "$@"
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Where cargo puts the binaries: CARGO_TARGET_DIR when set, else what cargo itself says (a wrapper may choose it).
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
    CARGO_TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
        echo "$ROOT/target")"
fi
TARGET="$CARGO_TARGET_DIR"
PROFILE="${BENCH_PROFILE:-release}"
BIN="$TARGET/$PROFILE"
OUT="${BENCH_OUT:-$TARGET/bench}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-postgres}"
BENCH_DB="${BENCH_DB:-kontakt_bench}"
TENANT=bench
mkdir -p "$OUT"

log() { printf '\n== %s\n' "$*" >&2; }

if [[ "$BENCH_DB" != kontakt_bench* ]]; then
    echo "BENCH_DB must start with kontakt_bench: this script drops it" >&2
    exit 2
fi

# `cargo build` of the binaries the benchmark runs, unless SKIP_BUILD is set.
bench_build() {
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        log "building $PROFILE binaries"
        (cd "$ROOT" && cargo build --profile "$PROFILE" -p kontakt -p kontakt-bench)
    fi
}

# One environment for seed, serve and token: the same database and the same signing secret.
# The database is on this machine: no TLS on loopback (a remote database keeps sslmode=require in its URL).
# Development mode: the token's issuer and audience are Kontakt's development defaults (see bench_jwt_* below).
bench_env() {
    export DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$BENCH_DB?sslmode=${PGSSLMODE:-disable}"
    export KONTAKT_JWT_SECRET="${KONTAKT_JWT_SECRET:-bench-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
    export KONTAKT_LOG_FORMAT=json
    export KONTAKT_WRITE_KEYS="${KONTAKT_WRITE_KEYS:-bench-key=$TENANT/web}"
    export RUST_LOG="${RUST_LOG:-warn}"
    unset KONTAKT_DATABASE_SCHEMA KONTAKT_ENV KONTAKT_JWT_ISSUER KONTAKT_JWT_AUDIENCE
}
# What `kontakt token` puts in `iss` and `aud` in development (src/config.rs DEV_ISSUER, DEV_AUDIENCE).
bench_jwt_issuer=kontakt-dev
bench_jwt_audience=kontakt

# Unless SKIP_SEED is set: drop and create $BENCH_DB, then seed it (customers, touchpoints, heavy sizes) and write
# the manifest to $OUT/manifest.json and the log to $OUT/seed.log.
bench_recreate_and_seed() {
    local customers="$1" touchpoints="$2" heavy="$3"
    if [[ -n "${SKIP_SEED:-}" ]]; then return; fi
    log "recreating database $BENCH_DB on $PGHOST:$PGPORT"
    psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -v ON_ERROR_STOP=1 -q \
        -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB"

    log "seeding: $customers customers, $touchpoints touchpoints, heavy $heavy"
    bench_seed --tenant "$TENANT" \
        --customers "$customers" \
        --touchpoints "$touchpoints" \
        --heavy "$heavy" \
        --seed "${SEED_RNG:-42}" \
        --manifest "$OUT/manifest.json" 2>&1 | tee "$OUT/seed.log"
}

# bench_wait_healthy PID LOG CURL_ARGS…: wait up to 60 s for `curl -f CURL_ARGS…` to succeed; fail (showing LOG)
# if PID exits first.
bench_wait_healthy() {
    local pid="$1" logfile="$2"
    shift 2
    for _ in $(seq 1 120); do
        if curl -fsS -o /dev/null "$@" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server (pid $pid) exited; see $logfile" >&2
            tail -20 "$logfile" >&2
            return 1
        fi
        sleep 0.5
    done
    echo "the server (pid $pid) did not answer in 60 s; see $logfile" >&2
    tail -20 "$logfile" >&2
    return 1
}

# bench_token SCOPES SUBJECT: a development token for the bench tenant, purpose personalization, two hours.
bench_token() {
    "$BIN/kontakt" token --tenant "$TENANT" --scopes "$1" \
        --purpose personalization --subject "$2" --ttl-secs 7200
}
