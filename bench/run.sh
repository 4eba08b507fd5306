#!/usr/bin/env bash
# Reproducible load run of Mandate on loopback (see docs/BENCHMARKS.md).
#
# Builds release binaries, starts `mandate serve --dev` on a free loopback port with a throwaway
# data directory, waits for /readyz, runs each scenario of `mandate-load` for a bounded time
# against it, stops the server, and prints the results with the machine they were taken on.
#
# Knobs (environment): DURATION (measured seconds per scenario, default 10, at most 20 here),
# WARMUP (default 2), CONCURRENCY (default 32; with RATE, the most requests in flight), RATE
# (default unset: a closed loop of CONCURRENCY workers; N: an open loop starting N requests per
# second, latency counted from when each was due), SCENARIOS (comma-separated, default all four),
# EXTRA_POLICIES (default 0: only the demo policies), REVOCATIONS (default 0: skip; N measures
# revocation-to-refusal latency at a subscribed verifier over N revocations, after the scenarios;
# SCENARIOS= with REVOCATIONS=1000 runs only that), GATEWAY (default 0; 1 measures the gateway's
# added latency over calling the sample CRM directly, after the scenarios: SCENARIOS= GATEWAY=1
# runs only that), with GW_CONNECTIONS (default 1,16,64), GW_ROUNDS (default 2, at most 4; each
# round runs both sides, ABBA), GW_WARMUP (default 1) and GW_DURATION (default 4, at most 20)
# seconds per side and round.
# SERVER_BIN runs another `mandate` binary (e.g. a copy of an earlier build, for an A/B run)
# instead of the one just built.
#
# The load generator runs on the same machine as the server and competes with it for the cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-32}"
SCENARIOS="${SCENARIOS-exchange,exchange-fresh-user,client-credentials,introspect}"
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 20)); then
    echo "DURATION must be 1–20 seconds" >&2
    exit 64
fi
if ! [[ "$WARMUP" =~ ^[0-9]+$ ]] || ((WARMUP > 10)); then
    echo "WARMUP must be 0–10 seconds" >&2
    exit 64
fi
GATEWAY="${GATEWAY:-0}"
GW_CONNECTIONS="${GW_CONNECTIONS:-1,16,64}"
GW_ROUNDS="${GW_ROUNDS:-2}"
GW_WARMUP="${GW_WARMUP:-1}"
GW_DURATION="${GW_DURATION:-4}"
if [[ -n "${RATE:-}" ]] && { ! [[ "$RATE" =~ ^[1-9][0-9]{0,5}$ ]] || ((RATE > 200000)); }; then
    echo "RATE must be 1–200000 requests per second" >&2
    exit 64
fi
if [[ "$GATEWAY" != 0 ]]; then
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
fi

cd "$repo"
cargo build --release -p mandate -p mandate-load
mandate="${SERVER_BIN:-$repo/target/release/mandate}"
load="$repo/target/release/mandate-load"

work="$(mktemp -d "${TMPDIR:-/tmp}/mandate-bench.XXXXXX")"
server_pid=""
load_pid=""
cleanup() {
    if [[ -n "$load_pid" ]]; then
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the kernel picks a free port and the server prints the URL it got. Run from the work
# directory so no ./mandate.toml is picked up, with logging at `warn` so the log is not measured.
(
    cd "$work"
    unset MANDATE_CONFIG
    exec env MANDATE_LOG=warn "$mandate" serve --dev --data "$work/data" --listen 127.0.0.1:0
) >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

url=""
for _ in $(seq 1 200); do
    url="$(sed -n 's/^Mandate is listening on //p' "$work/server.out")"
    [[ -n "$url" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server exited early:" >&2
        cat "$work/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$url" ]]; then
    echo "the server did not report its address in 20 s" >&2
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
    echo "the server at $url did not become ready in 20 s" >&2
    exit 1
fi

# EXTRA_POLICIES=N adds N policies that never apply to the benchmark's requests (other teams'
# scopes, some conditional), to measure what a large policy set costs issuance.
if [[ "${EXTRA_POLICIES:-0}" -gt 0 ]]; then
    for ((i = 0; i < EXTRA_POLICIES; i++)); do
        case $((i % 3)) in
            0) echo "@id(\"team-$i\") permit(principal in Group::\"team-$i\", action == Action::\"svc$i.records:read\", resource);" ;;
            1) echo "@id(\"stage-$i\") permit(principal in Group::\"team-$i\", action in Action::\"svc$i.*:write\", resource) when { context.stage == \"execute\" };" ;;
            *) echo "@id(\"deny-$i\") forbid(principal, action == Action::\"svc$i.admin:delete\", resource) unless { context.chain.contains(\"ops-$i\") };" ;;
        esac
    done >"$work/data/policies/extra.cedar"
    curl -fsS -X POST -H "Authorization: Bearer $(cat "$work/data/admin.token")" \
        "$url/v1/policies/reload" >/dev/null
    echo "policies: demo + $EXTRA_POLICIES extra"
fi

# CPU seconds (user + system) the server has used so far.
server_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' \
        "/proc/$server_pid/stat" 2>/dev/null || echo 0
}

# CPU seconds (user + system) of this script's finished children, from a `times` snapshot (taken
# in the main shell: a subshell's `times` would not see them).
children_cpu() {
    awk 'NR == 2 {
        split($1, u, /[ms]/); split($2, s, /[ms]/)
        printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2]
    }' "$1"
}

echo "== Mandate load run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]]; then
    commit+=" (plus uncommitted changes)"
fi
echo "commit:  $commit"
echo "cpus:    $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "memory:  $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "kernel:  $(uname -sr)"
echo "server:  $url (data in $work/data)"
if [[ -n "$SCENARIOS" ]]; then
    if [[ -n "${RATE:-}" ]]; then
        echo "load:    open loop at $RATE/s, at most $CONCURRENCY in flight, warm-up $WARMUP s, measured $DURATION s per scenario"
    else
        echo "load:    concurrency $CONCURRENCY, warm-up $WARMUP s, measured $DURATION s per scenario"
    fi
fi
echo "note:    the load generator runs on the same $(nproc) cores as the server"
echo

table=""
cpu_lines=""
status=0
IFS=',' read -r -a scenarios <<<"$SCENARIOS"
for s in "${scenarios[@]}"; do
    [[ -z "$s" ]] && continue
    before="$(server_cpu)"
    start_ns="$(date +%s%N)"
    times >"$work/times.before"
    timeout $((WARMUP + DURATION + 90)) "$load" --url "$url" --data "$work/data" \
        --scenario "$s" --duration "$DURATION" --warmup "$WARMUP" \
        --concurrency "$CONCURRENCY" ${RATE:+--rate "$RATE"} >"$work/$s.out" 2>"$work/$s.err" &
    load_pid=$!
    rc=0
    wait "$load_pid" || rc=$?
    load_pid=""
    times >"$work/times.after"
    end_ns="$(date +%s%N)"
    after="$(server_cpu)"
    cat "$work/$s.err" >&2
    if ((rc != 0)); then
        echo "[$s] mandate-load exited with $rc" >&2
        status=1
    fi
    [[ -z "$table" ]] && table="$(head -1 "$work/$s.out")"
    table+=$'\n'"$(tail -n +2 "$work/$s.out")"
    wall="$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
    gen="$(awk -v a="$(children_cpu "$work/times.before")" -v b="$(children_cpu "$work/times.after")" 'BEGIN { printf "%.1f", b - a }')"
    srv="$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", b - a }')"
    cpu_lines+="$(printf '%-21s %8s %12s %15s' "$s" "$wall" "$srv" "$gen")"$'\n'
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server died during \`$s\`:" >&2
        tail -20 "$work/server.err" >&2
        exit 1
    fi
done

gateway_table=""
if [[ "$GATEWAY" != 0 ]]; then
    # The gateway and the sample CRM behind it run in the server's process; `mandate serve --dev`
    # prints both addresses and the file holding the CRM's API key.
    gw_url="$(sed -n 's/^Gateway is listening on \([^ ]*\).*/\1/p' "$work/server.out")"
    crm_line="$(grep -m1 '^  the sample CRM itself: ' "$work/server.out" || true)"
    crm_url="$(sed -n 's/^  the sample CRM itself: \([^ ]*\).*/\1/p' <<<"$crm_line")"
    crm_key="$(sed -n 's/.*(its API key: \(.*\))$/\1/p' <<<"$crm_line")"
    if [[ -z "$gw_url" || -z "$crm_url" ]]; then
        echo "the server did not print the gateway's and the sample CRM's addresses" >&2
        exit 1
    fi
    levels=$(($(tr -cd ',' <<<"$GW_CONNECTIONS" | wc -c) + 1))
    echo "gateway: $gw_url in front of the sample CRM at $crm_url"
    echo "         connections $GW_CONNECTIONS, $GW_ROUNDS rounds (ABBA), $GW_WARMUP s warm-up + $GW_DURATION s measured per side and round"
    before="$(server_cpu)"
    start_ns="$(date +%s%N)"
    times >"$work/times.before"
    timeout $((levels * GW_ROUNDS * 2 * (GW_WARMUP + GW_DURATION + 5) + 90)) "$load" \
        --url "$url" --data "$work/data" --gateway-latency \
        --gateway "$gw_url" --upstream "$crm_url" --upstream-key-file "${crm_key:-$work/data/sample-crm.key}" \
        --connections "$GW_CONNECTIONS" --rounds "$GW_ROUNDS" \
        --warmup "$GW_WARMUP" --duration "$GW_DURATION" >"$work/gateway.out" 2>"$work/gateway.err" &
    load_pid=$!
    rc=0
    wait "$load_pid" || rc=$?
    load_pid=""
    times >"$work/times.after"
    end_ns="$(date +%s%N)"
    after="$(server_cpu)"
    cat "$work/gateway.err" >&2
    if ((rc != 0)); then
        echo "[gateway-latency] mandate-load exited with $rc" >&2
        status=1
    fi
    gateway_table="$(cat "$work/gateway.out")"
    wall="$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
    gen="$(awk -v a="$(children_cpu "$work/times.before")" -v b="$(children_cpu "$work/times.after")" 'BEGIN { printf "%.1f", b - a }')"
    srv="$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", b - a }')"
    cpu_lines+="$(printf '%-21s %8s %12s %15s' "gateway-latency" "$wall" "$srv" "$gen")"$'\n'
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server died during the gateway run:" >&2
        tail -20 "$work/server.err" >&2
        exit 1
    fi
fi

if [[ "${REVOCATIONS:-0}" -gt 0 ]]; then
    echo "revocation-to-refusal latency, $REVOCATIONS revocations:"
    timeout 600 "$load" --url "$url" --data "$work/data" --revocation-latency "$REVOCATIONS" || status=1
fi

echo
[[ -n "$table" ]] && echo "$table"
if [[ -n "$gateway_table" ]]; then
    echo
    echo "gateway: added latency over calling the sample CRM directly (GET /customers/9821):"
    echo "$gateway_table"
fi
echo
echo "CPU seconds per scenario (preparation, warm-up and measurement; $(nproc) cores):"
printf '%-21s %8s %12s %15s\n' "scenario" "wall s" "server cpu s" "generator cpu s"
printf '%s' "$cpu_lines"
db="$(du -sh "$work/data" 2>/dev/null | cut -f1)"
echo
echo "data directory after the run: $db"
if [[ -s "$work/server.err" ]]; then
    echo
    echo "server log (warn and above):"
    tail -20 "$work/server.err"
fi
exit "$status"
