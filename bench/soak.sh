#!/usr/bin/env bash
# Bounded soak run of Mandate on loopback (see docs/BENCHMARKS.md, "Soak").
#
# Builds release binaries, starts one `mandate serve --dev` on a free loopback port with a
# throwaway data directory, and for DURATION seconds drives it with `mandate-load`, rotating
# through steps of STEP seconds each: token exchange (one user, then 1000 users), client
# credentials, introspection, gateway pass-through (the sample CRM through the in-process
# gateway, and directly), and task revocations observed by a subscribed verifier. Every INTERVAL
# seconds it samples the server's resident memory (VmRSS), open file descriptors, threads, CPU
# seconds, data directory size and the requests and errors of the steps finished so far.
#
# Writes RESULTS/samples.csv (one row per sample), RESULTS/steps.csv (one row per load step) and
# RESULTS/server.err (the server's warn-and-above log), then prints a summary: requests and
# errors in all, RSS at start, max and end, and its growth over the run and over its second half.
# Exits non-zero if any step had errors or the server died.
#
# Knobs (environment): DURATION (seconds, default 1800), INTERVAL (default 10), STEP (seconds
# per load step, default 20, 2–120), CONCURRENCY (default 16), REVOCATIONS (per revocation step,
# default 50), RESULTS (default $TMPDIR/mandate-soak-<UTC time>; created).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-1800}"
INTERVAL="${INTERVAL:-10}"
STEP="${STEP:-20}"
CONCURRENCY="${CONCURRENCY:-16}"
REVOCATIONS="${REVOCATIONS:-50}"
RESULTS="${RESULTS:-${TMPDIR:-/tmp}/mandate-soak-$(date -u +%Y%m%dT%H%M%SZ)}"
for knob in DURATION INTERVAL STEP CONCURRENCY REVOCATIONS; do
    if ! [[ "${!knob}" =~ ^[0-9]+$ ]] || ((${!knob} < 1)); then
        echo "$knob must be a positive whole number" >&2
        exit 64
    fi
done
if ((STEP < 2 || STEP > 120)); then
    echo "STEP must be 2–120 seconds" >&2
    exit 64
fi

cd "$repo"
cargo build --release -p mandate -p mandate-load
mandate="$repo/target/release/mandate"
load="$repo/target/release/mandate-load"

mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
samples="$RESULTS/samples.csv"
steps="$RESULTS/steps.csv"
work="$(mktemp -d "${TMPDIR:-/tmp}/mandate-soak.XXXXXX")"
server_pid=""
load_pid=""
sampler_pid=""
cleanup() {
    for pid in "$sampler_pid" "$load_pid"; do
        if [[ -n "$pid" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    [[ -f "$work/server.err" ]] && cp "$work/server.err" "$RESULTS/server.err"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the kernel picks a free port and the server prints the URL it got. Logging at `warn`.
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
[[ -n "$url" ]] || { echo "the server did not report its address in 20 s" >&2; exit 1; }
ready=""
for _ in $(seq 1 200); do
    if curl -fsS --max-time 2 --noproxy '*' "$url/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
[[ -n "$ready" ]] || { echo "the server at $url did not become ready in 20 s" >&2; exit 1; }
gw_url="$(sed -n 's/^Gateway is listening on \([^ ]*\).*/\1/p' "$work/server.out")"
crm_line="$(grep -m1 '^  the sample CRM itself: ' "$work/server.out" || true)"
crm_url="$(sed -n 's/^  the sample CRM itself: \([^ ]*\).*/\1/p' <<<"$crm_line")"
crm_key="$(sed -n 's/.*(its API key: \(.*\))$/\1/p' <<<"$crm_line")"

start_ns="$(date +%s%N)"
elapsed() { awk -v a="$start_ns" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

echo "step,start_s,end_s,requests,errors,ok_per_s,p99_ms,exit" >"$steps"
echo "elapsed_s,rss_kb,fds,threads,cpu_s,data_kb,requests_total,errors_total,last_step,last_ok_per_s" >"$samples"

# One sample of the server process, with the totals of the steps finished so far.
sample() {
    local rss fds threads cpu data totals
    rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || echo 0)"
    threads="$(awk '/^Threads:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || echo 0)"
    fds="$(find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    cpu="$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' \
        "/proc/$server_pid/stat" 2>/dev/null || echo 0)"
    data="$(du -sk "$work/data" 2>/dev/null | cut -f1)"
    totals="$(awk -F, 'NR > 1 { r += $4; e += $5; last = $1 "," $6 } END { printf "%d,%d,%s", r, e, (last == "" ? "," : last) }' "$steps")"
    echo "$(elapsed),${rss:-0},$fds,${threads:-0},$cpu,${data:-0},$totals" >>"$samples"
}

(
    while kill -0 "$server_pid" 2>/dev/null; do
        sample
        sleep "$INTERVAL"
    done
) &
sampler_pid=$!

echo "== Mandate soak run, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpus:    $(nproc) × $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "server:  $url (pid $server_pid), gateway ${gw_url:-none}"
echo "load:    $DURATION s, steps of $STEP s, concurrency $CONCURRENCY, $REVOCATIONS revocations per revocation step"
echo "results: $RESULTS"

# Runs one load step in the background and waits for it; appends a row to steps.csv.
run_step() {
    local name="$1" secs="$2" from rc=0 requests errors rate p99
    shift 2
    from="$(elapsed)"
    timeout $((secs * 3 + 120)) "$load" --url "$url" --data "$work/data" "$@" \
        >"$work/step.out" 2>"$work/step.err" &
    load_pid=$!
    wait "$load_pid" || rc=$?
    load_pid=""
    case "$name" in
        gateway)
            # Markdown rows `| connections | side | requests | errors | ok/s | … |`.
            read -r requests errors rate p99 < <(awk -F'|' '$3 ~ /direct|gateway/ {
                r += $4; e += $5; ok += $6; if ($9 + 0 > p) p = $9 + 0 }
                END { printf "%d %d %.1f %.3f\n", r, e, ok, p }' "$work/step.out")
            ;;
        revocations)
            read -r requests p99 < <(awk -F'|' '$2 ~ /[0-9]/ { printf "%d %.3f\n", $2, $5 / 1000 }' "$work/step.out")
            errors=0
            rate="$(awk -v n="${requests:-0}" -v a="$from" -v b="$(elapsed)" 'BEGIN { printf "%.1f", n / (b - a) }')"
            ;;
        *)
            read -r requests errors rate p99 < <(awk 'NR == 2 { print $2, $3, $4, $7 }' "$work/step.out")
            ;;
    esac
    requests="${requests:-0}"
    errors="${errors:-0}"
    if ((rc != 0 && errors == 0)); then
        errors=1
    fi
    if ((rc != 0)); then
        echo "[$name] mandate-load exited with $rc:" >&2
        tail -5 "$work/step.err" >&2
    fi
    echo "$name,$from,$(elapsed),$requests,$errors,${rate:-0},${p99:-0},$rc" >>"$steps"
}

rotation=(exchange client-credentials introspect gateway exchange-fresh-user revocations)
i=0
status=0
while :; do
    left="$(awk -v e="$(elapsed)" -v d="$DURATION" 'BEGIN { printf "%d", d - e }')"
    ((left >= 2)) || break
    secs=$((left < STEP ? left : STEP))
    step="${rotation[$((i % ${#rotation[@]}))]}"
    i=$((i + 1))
    case "$step" in
        gateway)
            [[ -n "$gw_url" && -n "$crm_url" ]] || continue
            half=$((secs / 2 > 0 ? secs / 2 : 1))
            run_step gateway "$secs" --gateway-latency --gateway "$gw_url" --upstream "$crm_url" \
                --upstream-key-file "${crm_key:-$work/data/sample-crm.key}" \
                --connections "$CONCURRENCY" --rounds 1 --warmup 0 --duration "$half"
            ;;
        revocations)
            run_step revocations "$secs" --revocation-latency "$REVOCATIONS"
            ;;
        *)
            run_step "$step" "$secs" --scenario "$step" --warmup 0 --duration "$secs" \
                --concurrency "$CONCURRENCY"
            ;;
    esac
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server died during \`$step\`:" >&2
        tail -20 "$work/server.err" >&2
        status=1
        break
    fi
done
sample
kill -TERM "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""

echo
echo "steps (from $steps):"
awk -F, 'NR > 1 { n[$1]++; r[$1] += $4; e[$1] += $5; ok[$1] += $6 }
    END { printf "%-21s %6s %10s %7s %12s\n", "step", "runs", "requests", "errors", "mean ok/s";
          for (s in n) printf "%-21s %6d %10d %7d %12.1f\n", s, n[s], r[s], e[s], ok[s] / n[s] }' "$steps"
echo
awk -F, -v dur="$(elapsed)" 'NR > 1 {
        n++; rss[n] = $2; t[n] = $1; if ($2 > max) max = $2
        if (n == 1 || $3 > fmax) fmax = $3; f[n] = $3; req = $7; err = $8
    }
    END {
        if (n == 0) { print "no samples"; exit }
        mid = int((n + 1) / 2)
        printf "samples:     %d over %.0f s (%s)\n", n, dur, FILENAME
        printf "requests:    %d in all, %.1f/s over the run\n", req, req / dur
        printf "errors:      %d\n", err
        printf "RSS:         start %.1f MiB, max %.1f MiB, end %.1f MiB\n", rss[1] / 1024, max / 1024, rss[n] / 1024
        printf "RSS growth:  %+.1f MiB over the run (%+.1f%%), %+.1f MiB over its second half (from %.0f s)\n",
            (rss[n] - rss[1]) / 1024, rss[1] ? 100 * (rss[n] - rss[1]) / rss[1] : 0, (rss[n] - rss[mid]) / 1024, t[mid]
        printf "open fds:    start %d, max %d, end %d\n", f[1], fmax, f[n]
    }' "$samples"
errors="$(awk -F, 'NR > 1 { e += $5 } END { print e + 0 }' "$steps")"
if grep -qi 'panic' "$work/server.err" 2>/dev/null; then
    echo "the server log mentions a panic:" >&2
    grep -i -m5 'panic' "$work/server.err" >&2
    status=1
fi
((errors == 0)) || status=1
exit "$status"
