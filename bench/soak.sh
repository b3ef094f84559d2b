#!/usr/bin/env bash
# Memory soak (issue 13, item 8): mixed profile reads, `customer(id) { id }` reads and GraphQL ingestion against one
# `kontakt serve` for SOAK_SECONDS, nobody scraping /metrics, with the server's RSS sampled every SOAK_SAMPLE
# seconds. Prints the samples and the growth from the first sample after the warm-up to the last; a server that
# keeps something per request grows in a straight line, one that does not stays flat.
#
#   bench/soak.sh                                  # 10 minutes, 8 clients, 2,000 customers / 100,000 touchpoints
#   SOAK_SECONDS=120 SKIP_BUILD=1 bench/soak.sh    # a short look with the binaries already built
#
# Settings (environment): SOAK_SECONDS=600 SOAK_WARMUP=60 SOAK_SAMPLE=10 SOAK_ROUND=30 BENCH_CONCURRENCY=8
# BENCH_PORT=18090, and bench/run.sh's database and build settings (SKIP_BUILD, SKIP_SEED, BENCH_PROFILE, PG*).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PORT="${BENCH_PORT:-18090}"
SECONDS_TOTAL="${SOAK_SECONDS:-600}"
WARMUP="${SOAK_WARMUP:-60}"
SAMPLE="${SOAK_SAMPLE:-10}"
ROUND="${SOAK_ROUND:-30}"

bench_build
bench_env
export KONTAKT_LISTEN="127.0.0.1:$PORT"
bench_recreate_and_seed "${SEED_CUSTOMERS:-2000}" "${SEED_TOUCHPOINTS:-100000}" "${SEED_HEAVY:-1000}"

log "starting kontakt serve on 127.0.0.1:$PORT"
"$BIN/kontakt" serve >"$OUT/soak-server.log" 2>&1 &
SERVER_PID=$!
LOAD_PID=""
cleanup() {
    [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null || true
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
bench_wait_healthy "$SERVER_PID" "$OUT/soak-server.log" "http://127.0.0.1:$PORT/healthz"
TOKEN="$(bench_token profiles:read,profiles:write,touchpoints:read,touchpoints:write,pii:read kontakt-bench)"

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }

# The load: rounds of the three scenarios one after another, until the time is up.
: >"$OUT/soak-load.md"
(
    end=$((SECONDS + SECONDS_TOTAL))
    while ((SECONDS < end)); do
        "$BIN/kontakt-bench" --url "http://127.0.0.1:$PORT" --token "$TOKEN" --manifest "$OUT/manifest.json" \
            --scenario profile,profile-id,ingest-graphql --concurrency "${BENCH_CONCURRENCY:-8}" \
            --duration "$ROUND" --warmup 0 --batch 50 --write-key "${KONTAKT_WRITE_KEYS%%=*}" \
            >>"$OUT/soak-load.md" 2>&1
    done
) &
LOAD_PID=$!

log "soak: ${SECONDS_TOTAL} s, RSS every ${SAMPLE} s (growth measured from ${WARMUP} s)"
printf '| second | server RSS MB |\n|---:|---:|\n'
start=$SECONDS
base=""
last=""
peak=0
while kill -0 "$LOAD_PID" 2>/dev/null; do
    sleep "$SAMPLE"
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited; see $OUT/soak-server.log" >&2; exit 1; }
    now=$((SECONDS - start))
    last="$(rss_mb)"
    printf '| %d | %s |\n' "$now" "$last"
    if [[ -z "$base" ]] && ((now >= WARMUP)); then base="$last"; fi
    peak=$(awk -v a="$peak" -v b="$last" 'BEGIN { if (b + 0 > a + 0) print b; else print a }')
done
wait "$LOAD_PID" || true
LOAD_PID=""
requests=$(awk -F'|' '/^\| (profile|profile-id|ingest-graphql) / { gsub(/[ ,]/, "", $3); n += $3 } END { print n + 0 }' "$OUT/soak-load.md")
printf '\nrequests: %s; RSS after the warm-up %s MB, at the end %s MB, peak %s MB: growth %s %%\n' \
    "$requests" "${base:-?}" "$last" "$peak" \
    "$(awk -v a="${base:-0}" -v b="$last" 'BEGIN { if (a > 0) printf "%+.1f", (b - a) * 100 / a; else print "?" }')"
