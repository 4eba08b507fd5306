#!/usr/bin/env bash
# Token-exchange throughput of one or two Mandate nodes (see docs/BENCHMARKS.md, "Several nodes on
# PostgreSQL").
#
# Builds release binaries, starts NODES `mandate serve --dev` processes on BACKEND (`sqlite`: one
# node on a data directory; `postgres`: a fresh database on the local PostgreSQL, dropped after),
# all sharing one data directory (master key, dev IdP, demo agents) and one issuer, then runs one
# `mandate-load --scenario exchange` per node at the same time, CONCURRENCY/NODES workers each,
# and prints each generator's table and the total.
#
# Knobs (environment): BACKEND (sqlite | postgres, default postgres), NODES (1 or 2, default 1),
# DURATION (measured seconds, default 10, at most 20), WARMUP (default 2), CONCURRENCY (total
# workers, default 32), PG_URL (default postgres://postgres@127.0.0.1:5432/postgres: where to
# create the scratch database).
#
# Everything runs on this machine: the nodes, PostgreSQL and the load generators share its cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BACKEND="${BACKEND:-postgres}"
NODES="${NODES:-1}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-32}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
[[ "$BACKEND" == sqlite || "$BACKEND" == postgres ]] || { echo "BACKEND must be sqlite or postgres" >&2; exit 64; }
[[ "$NODES" =~ ^[12]$ ]] || { echo "NODES must be 1 or 2" >&2; exit 64; }
[[ "$BACKEND" == postgres || "$NODES" == 1 ]] || { echo "several nodes need BACKEND=postgres" >&2; exit 64; }
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 20)); then
    echo "DURATION must be 1–20 seconds" >&2
    exit 64
fi
[[ "$WARMUP" =~ ^[0-9]+$ ]] && ((WARMUP <= 10)) || { echo "WARMUP must be 0–10 seconds" >&2; exit 64; }
[[ "$CONCURRENCY" =~ ^[0-9]+$ ]] && ((CONCURRENCY >= NODES)) || { echo "CONCURRENCY must be at least NODES" >&2; exit 64; }

cd "$repo"
cargo build --release -p mandate -p mandate-load
mandate="$repo/target/release/mandate"
load="$repo/target/release/mandate-load"

work="$(mktemp -d "${TMPDIR:-/tmp}/mandate-cluster.XXXXXX")"
db_name=""
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ -n "$db_name" ]]; then
        psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

db_env=()
if [[ "$BACKEND" == postgres ]]; then
    db_name="mandate_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    psql "$PG_URL" -qc "CREATE DATABASE $db_name" >/dev/null
    db_env=(MANDATE_DATABASE_URL="${PG_URL%/*}/$db_name")
fi

# Starts node $1 (issuer $2, empty for its own address); prints its URL once it is ready.
start_node() {
    local n="$1" issuer="$2" url=""
    (
        cd "$work"
        unset MANDATE_CONFIG
        if [[ -n "$issuer" ]]; then export MANDATE_ISSUER="$issuer"; fi
        exec env MANDATE_LOG=warn "${db_env[@]}" "$mandate" serve --dev --data "$work/data" --listen 127.0.0.1:0
    ) >"$work/node$n.out" 2>"$work/node$n.err" &
    pids+=($!)
    for _ in $(seq 1 200); do
        url="$(sed -n 's/^  this node: //p' "$work/node$n.out")"
        [[ -z "$url" ]] && url="$(sed -n 's/^Mandate is listening on //p' "$work/node$n.out")"
        if [[ -n "$url" ]] && curl -fsS --max-time 2 --noproxy '*' "$url/readyz" >/dev/null 2>&1; then
            echo "$url"
            return
        fi
        sleep 0.1
    done
    echo "node $n did not become ready:" >&2
    cat "$work/node$n.err" >&2
    exit 1
}

urls=()
urls+=("$(start_node 1 "")")
if ((NODES == 2)); then
    urls+=("$(start_node 2 "${urls[0]}")")
fi

echo "== Mandate exchange throughput, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]] && commit+=" (plus uncommitted changes)"
echo "commit:  $commit"
echo "cpus:    $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "backend: $BACKEND, $NODES node(s): ${urls[*]}"
echo "load:    $CONCURRENCY workers in all, warm-up $WARMUP s, measured $DURATION s"
echo

per=$((CONCURRENCY / NODES))
loads=()
for i in "${!urls[@]}"; do
    timeout $((WARMUP + DURATION + 90)) "$load" --url "${urls[$i]}" --data "$work/data" \
        --scenario exchange --duration "$DURATION" --warmup "$WARMUP" \
        --concurrency "$per" >"$work/load$i.out" 2>"$work/load$i.err" &
    loads+=($!)
done
status=0
for p in "${loads[@]}"; do
    wait "$p" || status=1
done
total=0
for i in "${!urls[@]}"; do
    echo "node $((i + 1)) (${urls[$i]}):"
    cat "$work/load$i.err" >&2
    cat "$work/load$i.out"
    ok="$(awk 'NR == 1 { for (f = 1; f <= NF; f++) if ($f == "ok/s") col = f } NR == 2 && col { print $col }' "$work/load$i.out")"
    total="$(awk -v a="$total" -v b="${ok:-0}" 'BEGIN { printf "%.0f", a + b }')"
done
echo
echo "total ok/s: $total"
for n in $(seq 1 "$NODES"); do
    if [[ -s "$work/node$n.err" ]]; then
        echo "node $n log (warn and above):"
        tail -10 "$work/node$n.err"
    fi
done
exit "$status"
