#!/usr/bin/env bash
# The gateway's added latency against a minimal upstream (see docs/BENCHMARKS.md, "Gateway
# against a minimal upstream").
#
# Builds release binaries, starts `mandate-upstream` (200 and a fixed JSON body, API key checked,
# nothing else) on a free loopback port, then `mandate serve --dev --config <generated>` whose
# `[gateway]` has that one upstream (secret `minimal-api`, sent as `x-api-key`) and one route
# (`GET /customers/{id}` → `crm.customers:read` on `customers/{id}`, as in --dev), stores the key
# as the secret through the admin API, and runs `mandate-load --gateway-latency`: the same
# `GET /customers/9821` straight to the upstream with its key, and through the gateway with a
# Mandate access token, ABBA rounds per concurrency level. Prints the tables, the machine and the
# CPU each process used, and cleans up.
#
# Knobs (environment): GW_CONNECTIONS (default 1,16,64), GW_ROUNDS (default 2, at most 4),
# GW_WARMUP (default 1), GW_DURATION (default 4, at most 20) seconds per side and round;
# GW_BUILD (default 1; 0 skips `cargo build`, using the binaries already built);
# GW_MANDATE_BIN (default: the release build) the `mandate` binary to measure, e.g. a saved copy
# of an earlier build for before/after runs; UPSTREAM_THREADS (default: unset, one per core) worker threads of the upstream;
# PERF_SECONDS (default 0: off): with N > 0, `perf record --call-graph dwarf` samples the server for N s in the
# middle of the first gateway phase at the second level (16 connections by default) and
# `perf report` writes its top entries to $PERF_OUT (default /tmp/gateway-perf.txt).
#
# The upstream, the server (Mandate and the gateway in one process) and the load generator all
# run on the same cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GW_CONNECTIONS="${GW_CONNECTIONS:-1,16,64}"
GW_ROUNDS="${GW_ROUNDS:-2}"
GW_WARMUP="${GW_WARMUP:-1}"
GW_DURATION="${GW_DURATION:-4}"
PERF_SECONDS="${PERF_SECONDS:-0}"
PERF_OUT="${PERF_OUT:-/tmp/gateway-perf.txt}"
if ! [[ "$GW_CONNECTIONS" =~ ^[0-9]+(,[0-9]+){0,7}$ ]]; then
    echo "GW_CONNECTIONS must be 1–8 comma-separated numbers" >&2
    exit 64
fi
if ! [[ "$GW_ROUNDS" =~ ^[1-4]$ ]]; then
    echo "GW_ROUNDS must be 1–4" >&2
    exit 64
fi
if ! [[ "$GW_DURATION" =~ ^[0-9]+$ ]] || ((GW_DURATION < 1 || GW_DURATION > 20)); then
    echo "GW_DURATION must be 1–20 seconds" >&2
    exit 64
fi
if ! [[ "$GW_WARMUP" =~ ^[0-9]+$ ]] || ((GW_WARMUP > 10)); then
    echo "GW_WARMUP must be 0–10 seconds" >&2
    exit 64
fi
if ! [[ "$PERF_SECONDS" =~ ^[0-9]+$ ]] || ((PERF_SECONDS > 20)); then
    echo "PERF_SECONDS must be 0–20" >&2
    exit 64
fi
upstream_threads=()
if [[ -n "${UPSTREAM_THREADS:-}" ]]; then
    if ! [[ "$UPSTREAM_THREADS" =~ ^[1-9][0-9]?$ ]]; then
        echo "UPSTREAM_THREADS must be 1–64" >&2
        exit 64
    fi
    upstream_threads=(--threads "$UPSTREAM_THREADS")
fi

cd "$repo"
if [[ "${GW_BUILD:-1}" != 0 ]]; then
    cargo build --release -p mandate -p mandate-load
fi
mandate="${GW_MANDATE_BIN:-$repo/target/release/mandate}"
load="$repo/target/release/mandate-load"
upstream="$repo/target/release/mandate-upstream"

work="$(mktemp -d "${TMPDIR:-/tmp}/mandate-gw-bench.XXXXXX")"
server_pid=""
upstream_pid=""
load_pid=""
perf_pid=""
stop() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop "$perf_pid"
    stop "$load_pid"
    stop "$server_pid"
    stop "$upstream_pid"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to 20 s for `pattern` (a sed expression printing the URL) in `file` while `pid` lives.
wait_for_url() {
    local file="$1" pattern="$2" pid="$3" what="$4" url=""
    for _ in $(seq 1 200); do
        url="$(sed -n "$pattern" "$file" | head -1)"
        [[ -n "$url" ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$what exited early:" >&2
            cat "$work"/*.err >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z "$url" ]]; then
        echo "$what did not report its address in 20 s" >&2
        exit 1
    fi
    printf '%s' "$url"
}

# The upstream's API key: new at each run, in a file only this user can read.
(umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$work/upstream.key")
"$upstream" --listen 127.0.0.1:0 --key-file "$work/upstream.key" "${upstream_threads[@]}" \
    >"$work/upstream.out" 2>"$work/upstream.err" &
upstream_pid=$!
up_url="$(wait_for_url "$work/upstream.out" 's/^mandate-upstream is listening on //p' "$upstream_pid" "the upstream")"

cat >"$work/mandate.toml" <<EOF
# The gateway in front of the minimal upstream only (no sample CRM, no MCP server).
[gateway]

[[gateway.upstreams]]
name = "minimal"
url = "$up_url"
secret = "minimal-api"
credential = { header = { name = "x-api-key" } }

[[gateway.routes]]
method = "GET"
path = "/customers/{id}"
action = "crm.customers:read"
resource = "customers/{id}"
EOF

# Port 0: the kernel picks free ports and the server prints them. Run from the work directory
# with logging at `warn` so the log is not measured.
(
    cd "$work"
    unset MANDATE_CONFIG
    exec env MANDATE_LOG=warn "$mandate" serve --dev --config "$work/mandate.toml" \
        --data "$work/data" --listen 127.0.0.1:0
) >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
url="$(wait_for_url "$work/server.out" 's/^Mandate is listening on //p' "$server_pid" "the server")"
ready=""
for _ in $(seq 1 200); do
    if curl -fsS --max-time 2 --noproxy '*' "$url/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "the server at $url did not become ready in 20 s" >&2
    exit 1
fi
gw_url="$(sed -n 's/^Gateway is listening on \([^ ]*\).*/\1/p' "$work/server.out")"
if [[ -z "$gw_url" ]]; then
    echo "the server did not print the gateway's address" >&2
    exit 1
fi

# The upstream's key as the gateway's secret (neither the key nor the admin token is printed).
jq -n --rawfile v "$work/upstream.key" '{value: ($v | rtrimstr("\n")), description: "minimal upstream (bench/gateway.sh)"}' \
    >"$work/secret.json"
curl -fsS --max-time 10 --noproxy '*' -X PUT -o /dev/null \
    -H "Authorization: Bearer $(cat "$work/data/admin.token")" \
    -H 'Content-Type: application/json' --data-binary "@$work/secret.json" \
    "$url/v1/secrets/minimal-api"
rm -f "$work/secret.json"

# CPU seconds (user + system) a process has used so far.
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' \
        "/proc/$1/stat" 2>/dev/null || echo 0
}

echo "== Gateway against a minimal upstream, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]]; then
    commit+=" (plus uncommitted changes)"
fi
echo "commit:   $commit"
echo "cpus:     $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "kernel:   $(uname -sr)"
echo "server:   $url, gateway $gw_url ($mandate)"
echo "upstream: $up_url (mandate-upstream${UPSTREAM_THREADS:+, $UPSTREAM_THREADS threads})"
echo "load:     connections $GW_CONNECTIONS, $GW_ROUNDS rounds (ABBA), $GW_WARMUP s warm-up + $GW_DURATION s measured per side and round"
echo "note:     the upstream, the server and the load generator share the same $(nproc) cores"
echo

levels=$(($(tr -cd ',' <<<"$GW_CONNECTIONS" | wc -c) + 1))
srv_before="$(cpu_of "$server_pid")"
up_before="$(cpu_of "$upstream_pid")"
start_ns="$(date +%s%N)"
timeout $((levels * GW_ROUNDS * 2 * (GW_WARMUP + GW_DURATION + 5) + 90)) "$load" \
    --url "$url" --data "$work/data" --gateway-latency \
    --gateway "$gw_url" --upstream "$up_url" --upstream-key-file "$work/upstream.key" \
    --connections "$GW_CONNECTIONS" --rounds "$GW_ROUNDS" \
    --warmup "$GW_WARMUP" --duration "$GW_DURATION" >"$work/gateway.out" 2>"$work/gateway.err" &
load_pid=$!

if ((PERF_SECONDS > 0)); then
    # The first gateway phase of the second level (of the only one if there is one): round 0
    # runs the direct side first, so wait until the generator reports that direct phase, then
    # for the gateway phase's warm-up.
    level="$(cut -d, -f"$((levels > 1 ? 2 : 1))" <<<"$GW_CONNECTIONS")"
    for _ in $(seq 1 1200); do
        grep -q "^\[$level conns, round 0, direct" "$work/gateway.err" 2>/dev/null && break
        kill -0 "$load_pid" 2>/dev/null || break
        sleep 0.1
    done
    sleep "$GW_WARMUP"
    sleep 0.5
    perf record -q -F 499 --call-graph dwarf,16384 -p "$server_pid" -o "$work/perf.data" -- sleep "$PERF_SECONDS" \
        >/dev/null 2>"$work/perf.err" &
    perf_pid=$!
    wait "$perf_pid" || true
    perf_pid=""
fi

rc=0
wait "$load_pid" || rc=$?
load_pid=""
end_ns="$(date +%s%N)"
srv_after="$(cpu_of "$server_pid")"
up_after="$(cpu_of "$upstream_pid")"
cat "$work/gateway.err" >&2
if ((rc != 0)); then
    echo "[gateway-latency] mandate-load exited with $rc" >&2
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server died during the run:" >&2
    tail -20 "$work/server.err" >&2
    exit 1
fi

echo
echo "gateway: added latency over calling mandate-upstream directly (GET /customers/9821):"
cat "$work/gateway.out"
echo
wall="$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
echo "CPU seconds over the whole run ($wall s wall, $(nproc) cores):" \
    "server $(awk -v a="$srv_before" -v b="$srv_after" 'BEGIN { printf "%.1f", b - a }'),"\
    "upstream $(awk -v a="$up_before" -v b="$up_after" 'BEGIN { printf "%.1f", b - a }')"
if [[ -f "$work/perf.data" ]]; then
    perf report -i "$work/perf.data" --no-children --percent-limit 0.7 --stdio \
        --sort dso,symbol -g none 2>/dev/null >"$PERF_OUT" || true
    perf report -i "$work/perf.data" --children --percent-limit 2 --stdio \
        --sort symbol -g none 2>/dev/null >"${PERF_OUT%.txt}-children.txt" || true
    cp "$work/perf.data" "${PERF_OUT%.txt}.data"
    echo "perf: $PERF_SECONDS s of the server at $level connections → $PERF_OUT (self) and ${PERF_OUT%.txt}-children.txt (inclusive), data in ${PERF_OUT%.txt}.data"
fi
if [[ -s "$work/server.err" ]]; then
    echo
    echo "server log (warn and above):"
    tail -20 "$work/server.err"
fi
exit "$rc"
