#!/usr/bin/env bash
# Scaling curves of the token endpoint (issue 11; see docs/BENCHMARKS.md, "Scaling curves").
#
# For each curve and each point: copy a freshly initialised `--dev` data directory, fill it with
# `mandate-seed` (server stopped), start `mandate serve --dev` on it, run `mandate-load` for a short
# bounded time, read the server's VmRSS, stop it, delete the directory. At the end, one table per
# curve: ok/s, p50, p99, errors, RSS and the ratio to the curve's first point (and, on the
# revocation curve, the RSS added per revoked token).
#
# Curves (CURVES, comma-separated, default all four):
#   agents    registered agents in total (the demo world's 2 + seeded ones)  scenario exchange
#   revoked   revoked, unexpired tokens in the revocation index               exchange, introspect
#   policies  Cedar policies in total (the demo world's 7 + seeded ones)     exchange
#   audit     audit events seeded before the run                             exchange
#
# Knobs (environment): DURATION (measured seconds per scenario, default 5, at most 20), WARMUP
# (default 1), CONCURRENCY (default 32); POINTS_AGENTS (default 10,1000,10000,100000),
# POINTS_REVOKED (0,10000,100000,1000000), POINTS_POLICIES (10,100,1000,3000: 10000 took 84 s
# to start and 12 GiB of RSS on 2026-11-25, see docs/BENCHMARKS.md), POINTS_AUDIT
# (0,100000,1000000; AUDIT_10M=1 adds 10000000, whose seeding takes many minutes); SEED_TIMEOUT
# (seconds per seeding, default 3600); READY_TIMEOUT (seconds for a seeded server to answer
# /readyz, default 300); NO_BUILD=1 to use the release binaries as they are; BIN_DIR to use
# `mandate`, `mandate-load` and `mandate-seed` from another directory (implies NO_BUILD=1).
#
# The load generator runs on the same machine as the server and competes with it for the cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
CONCURRENCY="${CONCURRENCY:-32}"
CURVES="${CURVES:-agents,revoked,policies,audit}"
POINTS_AGENTS="${POINTS_AGENTS:-10,1000,10000,100000}"
POINTS_REVOKED="${POINTS_REVOKED:-0,10000,100000,1000000}"
POINTS_POLICIES="${POINTS_POLICIES:-10,100,1000,3000}"
POINTS_AUDIT="${POINTS_AUDIT:-0,100000,1000000}"
if [[ "${AUDIT_10M:-0}" == 1 ]]; then
    POINTS_AUDIT+=",10000000"
fi
SEED_TIMEOUT="${SEED_TIMEOUT:-3600}"
READY_TIMEOUT="${READY_TIMEOUT:-300}"

fail() {
    echo "$*" >&2
    exit 64
}
[[ "$DURATION" =~ ^[0-9]+$ ]] && ((DURATION >= 1 && DURATION <= 20)) || fail "DURATION must be 1–20 seconds"
[[ "$WARMUP" =~ ^[0-9]+$ ]] && ((WARMUP <= 10)) || fail "WARMUP must be 0–10 seconds"
[[ "$CONCURRENCY" =~ ^[0-9]+$ ]] && ((CONCURRENCY >= 1 && CONCURRENCY <= 1024)) || fail "CONCURRENCY must be 1–1024"
[[ "$SEED_TIMEOUT" =~ ^[0-9]+$ ]] || fail "SEED_TIMEOUT must be seconds"
[[ "$READY_TIMEOUT" =~ ^[0-9]+$ ]] || fail "READY_TIMEOUT must be seconds"
for v in POINTS_AGENTS POINTS_REVOKED POINTS_POLICIES POINTS_AUDIT; do
    [[ "${!v}" =~ ^[0-9]+(,[0-9]+){0,9}$ ]] || fail "$v must be 1–10 comma-separated numbers"
done
IFS=',' read -r -a curves <<<"$CURVES"
for c in "${curves[@]}"; do
    case "$c" in
        agents | revoked | policies | audit) ;;
        *) fail "unknown curve \`$c\` (agents, revoked, policies, audit)" ;;
    esac
done

cd "$repo"
if [[ "${NO_BUILD:-0}" != 1 && -z "${BIN_DIR:-}" ]]; then
    cargo build --release -p mandate -p mandate-load
fi
bin="${BIN_DIR:-$repo/target/release}"
mandate="$bin/mandate"
load="$bin/mandate-load"
seed="$bin/mandate-seed"
for b in "$mandate" "$load" "$seed"; do
    [[ -x "$b" ]] || fail "\`$b\` is missing: build with \`cargo build --release -p mandate -p mandate-load\`"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/mandate-curves.XXXXXX")"
server_pid=""
child_pid=""
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "$server_pid" ]]; then
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
cleanup() {
    if [[ -n "$child_pid" ]]; then
        kill -TERM "$child_pid" 2>/dev/null || true
        wait "$child_pid" 2>/dev/null || true
    fi
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command in the background (so a signal to this script reaches the trap at once) and
# waits for it; returns its status.
run_child() {
    "$@" &
    child_pid=$!
    local rc=0
    wait "$child_pid" || rc=$?
    child_pid=""
    return "$rc"
}

# Starts `mandate serve --dev` on a free loopback port with data directory $1 and waits up to $2
# seconds for /readyz; sets server_pid, url and ready_s. Run from the work directory so no
# ./mandate.toml is picked up, with logging at `warn` so the log is not measured.
start_server() {
    local data="$1" limit="$2" log="$1.server"
    local t0
    t0="$(date +%s%N)"
    : >"$log.out"
    : >"$log.err"
    (
        cd "$work"
        unset MANDATE_CONFIG
        exec env MANDATE_LOG=warn "$mandate" serve --dev --data "$data" --listen 127.0.0.1:0
    ) >"$log.out" 2>"$log.err" &
    server_pid=$!
    url=""
    local tries=$((limit * 10))
    for _ in $(seq 1 "$tries"); do
        url="$(sed -n 's/^Mandate is listening on //p' "$log.out" 2>/dev/null || true)"
        [[ -n "$url" ]] && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the server exited early:" >&2
            tail -20 "$log.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    [[ -n "$url" ]] || {
        echo "the server did not report its address in $limit s" >&2
        exit 1
    }
    for _ in $(seq 1 "$tries"); do
        if curl -fsS --max-time 2 --noproxy '*' "$url/readyz" >/dev/null 2>&1; then
            ready_s="$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the server at $url did not become ready in $limit s:" >&2
    tail -20 "$log.err" >&2
    exit 1
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || echo 0
}

echo "== Mandate scaling curves, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]]; then
    commit+=" (plus uncommitted changes)"
fi
echo "commit:  $commit"
echo "cpus:    $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "memory:  $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "kernel:  $(uname -sr)"
echo "load:    concurrency $CONCURRENCY, warm-up $WARMUP s, measured $DURATION s per scenario, a fresh server per point"
echo "note:    the load generator runs on the same $(nproc) cores as the server"
echo

# One initialised data directory (keys, demo agents and policies, admin credential), copied for
# every point so each starts from the same state.
template="$work/template"
start_server "$template" 60
stop_server
echo "initialised a --dev data directory in $ready_s s" >&2

tables=""
seed_lines=""
status=0
for curve in "${curves[@]}"; do
    case "$curve" in
        agents) points="$POINTS_AGENTS" scenarios="exchange" unit="registered agents (total)" ;;
        revoked) points="$POINTS_REVOKED" scenarios="exchange,introspect" unit="revoked tokens in the index" ;;
        policies) points="$POINTS_POLICIES" scenarios="exchange" unit="Cedar policies (total)" ;;
        audit) points="$POINTS_AUDIT" scenarios="exchange" unit="audit events seeded" ;;
    esac
    IFS=',' read -r -a pts <<<"$points"
    rows="$work/$curve.rows"
    : >"$rows"
    for n in "${pts[@]}"; do
        data="$work/$curve-$n"
        cp -a "$template" "$data"
        case "$curve" in
            agents) args=(--agents $((n > 2 ? n - 2 : 0))) ;;
            revoked) args=(--revoked "$n") ;;
            policies) args=(--policies $((n > 7 ? n - 7 : 0))) ;;
            audit) args=(--audit "$n") ;;
        esac
        echo "[$curve $n] seeding: mandate-seed ${args[*]}" >&2
        t0="$(date +%s%N)"
        if ! run_child timeout "$SEED_TIMEOUT" "$seed" --data "$data" "${args[@]}" >"$data.seed" 2>&1; then
            cat "$data.seed" >&2
            echo "[$curve $n] seeding failed or took more than $SEED_TIMEOUT s" >&2
            exit 1
        fi
        seed_s="$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
        while read -r line; do
            [[ "$line" == seeded* ]] && seed_lines+="$curve $n: $line"$'\n'
        done <"$data.seed"
        db_mib="$(du -sm "$data" | cut -f1)"
        start_server "$data" "$READY_TIMEOUT"
        rss_idle="$(rss_kib)"
        echo "[$curve $n] seeded in $seed_s s, data $db_mib MiB, ready in $ready_s s, RSS $((rss_idle / 1024)) MiB; load: $scenarios" >&2
        rc=0
        run_child timeout $((2 * (WARMUP + DURATION) + 120)) "$load" --url "$url" --data "$data" \
            --scenario "$scenarios" --duration "$DURATION" --warmup "$WARMUP" \
            --concurrency "$CONCURRENCY" >"$data.load" 2>"$data.load.err" || rc=$?
        rss="$(rss_kib)"
        cat "$data.load.err" >&2
        if ((rc != 0)); then
            echo "[$curve $n] mandate-load exited with $rc" >&2
            status=1
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "[$curve $n] the server died:" >&2
            tail -20 "$data.server.err" >&2
            exit 1
        fi
        # scenario requests errors ok/s p50 p90 p99 max
        awk -v n="$n" -v rss="$rss" -v idle="$rss_idle" -v ready="$ready_s" -v seed="$seed_s" -v db="$db_mib" \
            'NR > 1 && NF >= 8 { print n, $1, $4, $5, $7, $3, rss, idle, ready, seed, db }' \
            "$data.load" >>"$rows"
        tail -n +2 "$data.load" >&2
        stop_server
        if grep -qv '^mandate stopped$' "$data.server.err"; then
            echo "[$curve $n] server log (warn and above):" >&2
            grep -v '^mandate stopped$' "$data.server.err" | tail -5 >&2
        fi
        rm -rf "$data" "$data".*
    done
    table="$(awk -v curve="$curve" -v unit="$unit" '
        { n[NR] = $1; sc[NR] = $2; ok[NR] = $3; p50[NR] = $4; p99[NR] = $5; err[NR] = $6
          rss[NR] = $7; idle[NR] = $8; ready[NR] = $9; seed[NR] = $10; db[NR] = $11
          if (!($2 in first)) { first[$2] = NR } }
        END {
            printf "### %s: %s\n\n", curve, unit
            printf "| point | scenario | ok/s | p50 ms | p99 ms | errors | RSS MiB | ok/s ÷ first | p99 ÷ first | idle RSS MiB |"
            if (curve == "revoked") printf " idle RSS Δ B/token |"
            printf " ready s | seed s | data MiB |\n"
            printf "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            if (curve == "revoked") printf "---:|"
            printf "---:|---:|---:|\n"
            for (i = 1; i <= NR; i++) {
                f = first[sc[i]]
                printf "| %s | %s | %.0f | %.2f | %.2f | %d | %.1f | %.2f | %.2f | %.1f |", \
                    n[i], sc[i], ok[i], p50[i], p99[i], err[i], rss[i] / 1024, \
                    (ok[f] > 0 ? ok[i] / ok[f] : 0), (p99[f] > 0 ? p99[i] / p99[f] : 0), idle[i] / 1024
                if (curve == "revoked") {
                    if (n[i] > n[f]) printf " %.0f |", (idle[i] - idle[f]) * 1024 / (n[i] - n[f])
                    else printf " – |"
                }
                printf " %s | %s | %s |\n", ready[i], seed[i], db[i]
            }
        }' "$rows")"
    if [[ "$curve" == revoked ]]; then
        # RSS after the run, per revoked token, against the first point.
        table+=$'\n\n'"$(awk '
            $2 == "exchange" { if (!have) { n0 = $1; r0 = $7; have = 1 }
                else if ($1 > n0) printf "%s revoked: RSS after the run +%.1f MiB over %s, %.0f bytes per revoked token\n", \
                    $1, ($7 - r0) / 1024, n0, ($7 - r0) * 1024 / ($1 - n0) }' "$rows")"
    fi
    tables+="$table"$'\n\n'
    echo >&2
done

echo
printf '%s' "$tables"
echo "seeding (mandate-seed's own timing):"
printf '%s' "$seed_lines"
exit "$status"
