#!/usr/bin/env bash
# Mandate and a peer, measured side by side in one run (see docs/BENCHMARKS.md, "Peer").
#
# The peer is node oidc-provider (bench/peer/provider.mjs, version pinned in
# bench/peer/package-lock.json) doing what Mandate's `client_credentials` does: `support-v2`
# authenticates with `private_key_jwt` (EdDSA, the same Ed25519 key, single-use `jti`) and gets an
# EdDSA-signed JWT access token for https://crm.example.com, scope `tickets:read`.
#
# Installs the npm packages into bench/peer/node_modules if missing (`npm ci`), builds release
# binaries, starts `mandate serve --dev` on a free loopback port with a throwaway data directory,
# runs `mandate-load` scenario `client-credentials` then `exchange` against it, then starts the
# peer (with the public half of the data directory's `support-v2` key) and runs
# `peer-client-credentials` against it, once per entry of PEER_WORKERS (the peer restarted each
# time). Every scenario runs with the same workers, warm-up and duration. Prints the results, the
# ratios Mandate ÷ peer and the CPU seconds each server used during its scenarios, then stops
# everything.
#
# Knobs (environment): DURATION (measured seconds per scenario, default 10, at most 20), WARMUP
# (default 2), CONCURRENCY (default 32), PEER_WORKERS (comma-separated node cluster sizes,
# default 1, e.g. 1,2; each 1–8), NO_BUILD (1: use the release binaries already in target/).
#
# The load generator runs on the same machine as both servers and competes with them for cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-32}"
PEER_WORKERS="${PEER_WORKERS:-1}"
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 20)); then
    echo "DURATION must be 1–20 seconds" >&2
    exit 64
fi
if ! [[ "$WARMUP" =~ ^[0-9]+$ ]] || ((WARMUP > 10)); then
    echo "WARMUP must be 0–10 seconds" >&2
    exit 64
fi
if ! [[ "$CONCURRENCY" =~ ^[0-9]+$ ]] || ((CONCURRENCY < 1 || CONCURRENCY > 1024)); then
    echo "CONCURRENCY must be 1–1024" >&2
    exit 64
fi
if ! [[ "$PEER_WORKERS" =~ ^[1-8](,[1-8]){0,3}$ ]]; then
    echo "PEER_WORKERS must be 1–4 comma-separated numbers, each 1–8" >&2
    exit 64
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are needed for the peer" >&2
    exit 69
fi

cd "$repo"
peer_dir="$repo/bench/peer"
if [[ ! -d "$peer_dir/node_modules/oidc-provider" ]]; then
    echo "installing the peer's npm packages (npm ci in bench/peer)" >&2
    timeout 300 npm ci --prefix "$peer_dir" --no-audit --no-fund --omit=dev >&2
fi
peer_version="$(node -p 'require(process.argv[1]).version' "$peer_dir/node_modules/oidc-provider/package.json")"

if [[ "${NO_BUILD:-0}" == 0 ]]; then
    cargo build --release -p mandate -p mandate-load
fi
mandate="$repo/target/release/mandate"
load="$repo/target/release/mandate-load"

work="$(mktemp -d "${TMPDIR:-/tmp}/mandate-peer.XXXXXX")"
server_pid=""
peer_pid=""
load_pid=""

# Stops process $1: TERM, up to 5 s, then KILL; for the peer also its cluster workers.
stop() {
    local pid="$1"
    [[ -z "$pid" ]] && return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    local kids
    kids="$(pgrep -P "$pid" 2>/dev/null || true)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for k in $kids; do
        kill -KILL "$k" 2>/dev/null || true
    done
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    if [[ -n "$load_pid" ]]; then
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    stop "$peer_pid"
    stop "$server_pid"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to 20 s for process $1 to print `$2<url>` to file $3; prints the URL.
wait_for_url() {
    local pid="$1" prefix="$2" file="$3" url=""
    for _ in $(seq 1 200); do
        url="$(sed -n "s/^$prefix\([^ ]*\).*/\1/p" "$file" 2>/dev/null)"
        if [[ -n "$url" ]]; then
            echo "$url"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Mandate, as bench/run.sh starts it: port 0, logging at `warn`, no ./mandate.toml.
(
    cd "$work"
    unset MANDATE_CONFIG
    exec env MANDATE_LOG=warn "$mandate" serve --dev --data "$work/data" --listen 127.0.0.1:0
) >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
if ! url="$(wait_for_url "$server_pid" "Mandate is listening on " "$work/server.out")"; then
    echo "Mandate did not report its address in 20 s:" >&2
    tail -20 "$work/server.err" >&2
    exit 1
fi
ready=""
for _ in $(seq 1 200); do
    if curl -fsS --max-time 2 --noproxy '*' "$url/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "Mandate at $url did not become ready in 20 s" >&2
    exit 1
fi
client_jwk="$work/data/agents/support-v2.jwk"
if [[ ! -s "$client_jwk" ]]; then
    echo "the dev data directory has no \`agents/support-v2.jwk\`" >&2
    exit 1
fi

# CPU seconds (user + system) used so far by process $1 and its live children (the peer's
# cluster workers).
cpu_of() {
    local pid="$1" total=0 p
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
        total="$(awk -v hz="$(getconf CLK_TCK)" -v t="$total" \
            '{ printf "%.2f", t + ($14 + $15) / hz }' "/proc/$p/stat" 2>/dev/null || echo "$total")"
    done
    echo "$total"
}

# CPU seconds (user + system) of this script's finished children, from a `times` snapshot.
children_cpu() {
    awk 'NR == 2 {
        split($1, u, /[ms]/); split($2, s, /[ms]/)
        printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2]
    }' "$1"
}

echo "== Mandate and node oidc-provider side by side, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]]; then
    commit+=" (plus uncommitted changes)"
fi
echo "commit:  $commit"
echo "cpus:    $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "memory:  $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "kernel:  $(uname -sr)"
echo "mandate: $url (data in $work/data)"
echo "peer:    oidc-provider $peer_version on node $(node --version), workers: $PEER_WORKERS"
echo "load:    concurrency $CONCURRENCY, warm-up $WARMUP s, measured $DURATION s per scenario"
echo "note:    the load generator runs on the same $(nproc) cores as the servers"
echo

status=0
rows=""     # label, then mandate-load's fields, then server cpu s and wall s
# Runs scenario $2 labelled $1 against server pid $3 with extra arguments $4...
measure() {
    local label="$1" scenario="$2" pid="$3"
    shift 3
    local before after start_ns end_ns rc=0 f
    f="$work/run-$(tr -c 'a-z0-9\n' '_' <<<"$label")"
    before="$(cpu_of "$pid")"
    start_ns="$(date +%s%N)"
    times >"$work/times.before"
    timeout $((WARMUP + DURATION + 90)) "$load" --url "$url" --data "$work/data" \
        --scenario "$scenario" --duration "$DURATION" --warmup "$WARMUP" \
        --concurrency "$CONCURRENCY" "$@" >"$f.out" 2>"$f.err" &
    load_pid=$!
    wait "$load_pid" || rc=$?
    load_pid=""
    times >"$work/times.after"
    end_ns="$(date +%s%N)"
    after="$(cpu_of "$pid")"
    cat "$f.err" >&2
    if ((rc != 0)); then
        echo "[$label] mandate-load exited with $rc" >&2
        status=1
    fi
    local line gen
    line="$(tail -n +2 "$f.out" | head -1)"
    if [[ -z "$line" ]]; then
        line="$scenario - - 0 - - - -"
    fi
    gen="$(awk -v a="$(children_cpu "$work/times.before")" -v b="$(children_cpu "$work/times.after")" 'BEGIN { printf "%.1f", b - a }')"
    rows+="$label $(awk '{ $1 = ""; print }' <<<"$line") $(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", b - a }') $(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') $gen"$'\n'
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "the server died during \`$label\`" >&2
        exit 1
    fi
}

measure "mandate/client-credentials" client-credentials "$server_pid"
measure "mandate/exchange" exchange "$server_pid"

IFS=',' read -r -a worker_counts <<<"$PEER_WORKERS"
for n in "${worker_counts[@]}"; do
    (
        cd "$peer_dir"
        exec env NODE_ENV=production DEBUG= node provider.mjs --port 0 --client-jwk "$client_jwk" --workers "$n"
    ) >"$work/peer-$n.out" 2>"$work/peer-$n.err" &
    peer_pid=$!
    if ! peer_url="$(wait_for_url "$peer_pid" "peer is listening on " "$work/peer-$n.out")"; then
        echo "the peer ($n workers) did not report its address in 20 s:" >&2
        tail -20 "$work/peer-$n.err" >&2
        exit 1
    fi
    measure "peer×$n/client-credentials" peer-client-credentials "$peer_pid" --peer "$peer_url"
    stop "$peer_pid"
    peer_pid=""
done

echo
printf '%-29s %9s %7s %9s %7s %7s %7s %7s\n' "server/scenario" "requests" "errors" "ok/s" "p50 ms" "p90 ms" "p99 ms" "max ms"
awk 'NF { printf "%-29s %9s %7s %9s %7s %7s %7s %7s\n", $1, $2, $3, $4, $5, $6, $7, $8 }' <<<"$rows"

echo
echo "ratios (ok/s, Mandate ÷ peer):"
awk '
    NF && $1 == "mandate/client-credentials" { cc = $4 }
    NF && $1 == "mandate/exchange" { ex = $4 }
    NF && $1 ~ /^peer/ { label[++n] = $1; rate[n] = $4 }
    END {
        for (i = 1; i <= n; i++) {
            if (rate[i] + 0 > 0) {
                printf "  client-credentials ÷ %-28s %.2f\n", label[i], cc / rate[i]
                printf "  exchange ÷ %-38s %.2f\n", label[i], ex / rate[i]
            } else {
                printf "  %s: no successful requests\n", label[i]
            }
        }
    }' <<<"$rows"

echo
echo "CPU seconds per scenario (preparation, warm-up and measurement; $(nproc) cores):"
printf '%-29s %7s %13s %13s %16s\n' "server/scenario" "wall s" "server cpu s" "server cores" "generator cpu s"
awk 'NF { printf "%-29s %7s %13s %13.2f %16s\n", $1, $10, $9, ($10 > 0 ? $9 / $10 : 0), $11 }' <<<"$rows"
if [[ -s "$work/server.err" ]]; then
    echo
    echo "Mandate log (warn and above):"
    tail -20 "$work/server.err"
fi
for n in "${worker_counts[@]}"; do
    if grep -qv "Unsupported runtime" "$work/peer-$n.err" 2>/dev/null; then
        echo
        echo "peer log ($n workers):"
        tail -20 "$work/peer-$n.err"
    fi
done
exit "$status"
