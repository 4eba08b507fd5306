#!/usr/bin/env bash
# Builds and runs Mandate's fuzz targets (docs/fuzzing.md).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   fuzz each target for a bounded time (default
#                                                  60 s; all targets when none is named)
#   fuzz/run.sh --replay [TARGET...]               only run the committed corpus once (CI)
#   fuzz/run.sh --merge [TARGET...]                fold what earlier runs found into the committed
#                                                  corpus (only inputs that add coverage)
#
# New inputs a run finds go to fuzz/target/corpus/<target> (not committed); the committed seeds
# in fuzz/corpus/<target> are read but never written. A crash, leak, timeout or out-of-memory
# fails the run and names the artifact under fuzz/artifacts/<target>/; reproduce it with
# `cargo +nightly fuzz run <target> <artifact>`.
#
# Needs cargo-fuzz (installed with `cargo install cargo-fuzz --locked` when missing) and a
# nightly compiler: `cargo +nightly` when that toolchain exists, else the default toolchain with
# RUSTC_BOOTSTRAP=1. Knobs (environment): FUZZ_RSS_MB (default 2048), FUZZ_JOBS (parallel
# libFuzzer workers per target, default 1), FUZZ_SANITIZER (address, the default, or none).
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$fuzz_dir")"
all_targets=(token_verify scope form jsonrpc route)
RSS_MB="${FUZZ_RSS_MB:-2048}"
JOBS="${FUZZ_JOBS:-1}"
SANITIZER="${FUZZ_SANITIZER:-address}"

mode=fuzz
seconds=60
case "${1:-}" in
    --replay) mode=replay; shift ;;
    --merge) mode=merge; shift ;;
    -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    '' | *[!0-9]*) ;;
    *) seconds="$1"; shift ;;
esac
if ((seconds < 1)); then
    echo "SECONDS_PER_TARGET must be at least 1" >&2
    exit 64
fi
targets=("$@")
((${#targets[@]} > 0)) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    if [[ ! -f "$fuzz_dir/fuzz_targets/$t.rs" ]]; then
        echo "no fuzz target \`$t\` (targets: ${all_targets[*]})" >&2
        exit 64
    fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "(no nightly toolchain: using $(rustc --version) with RUSTC_BOOTSTRAP=1)"
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

cd "$repo"
echo "== cargo fuzz build (${targets[*]})"
for t in "${targets[@]}"; do
    "${fuzz[@]}" build --sanitizer "$SANITIZER" "$t"
done

status=0
for t in "${targets[@]}"; do
    seeds="$fuzz_dir/corpus/$t"
    found="$fuzz_dir/target/corpus/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    mkdir -p "$seeds" "$found" "$artifacts"
    before="$(find "$artifacts" -type f | sort)"
    common=(-rss_limit_mb="$RSS_MB" -timeout=20 -artifact_prefix="$artifacts/")
    rc=0
    case "$mode" in
        replay)
            echo "== $t: replaying $(find "$seeds" -type f | wc -l) committed inputs"
            "${fuzz[@]}" run --sanitizer "$SANITIZER" "$t" "$seeds" -- "${common[@]}" -runs=0 || rc=$?
            ;;
        merge)
            echo "== $t: merging new inputs into fuzz/corpus/$t"
            "${fuzz[@]}" run --sanitizer "$SANITIZER" "$t" "$seeds" "$found" -- "${common[@]}" -merge=1 || rc=$?
            ;;
        fuzz)
            echo "== $t: fuzzing for $seconds s"
            "${fuzz[@]}" run --sanitizer "$SANITIZER" --jobs "$JOBS" "$t" "$found" "$seeds" -- \
                "${common[@]}" -max_total_time="$seconds" -print_final_stats=1 || rc=$?
            ;;
    esac
    new="$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | sed '/^$/d')"
    if ((rc != 0)) || [[ -n "$new" ]]; then
        status=1
        echo "!! $t failed (exit $rc)" >&2
        if [[ -n "$new" ]]; then
            echo "   artifacts:" >&2
            sed 's/^/     /' <<<"$new" >&2
            first="$(head -1 <<<"$new")"
            echo "   reproduce: ${fuzz[*]} run $t $first" >&2
        fi
    fi
done
if ((status != 0)); then
    echo "fuzzing found a problem (see above)" >&2
fi
exit "$status"
