#!/usr/bin/env bash
# Fuzzes the readers of untrusted files (tokenizer files, pickles and PyTorch archives,
# safetensors and config.json, dataset lists) for SECONDS_PER_TARGET seconds each (default 60).
# Needs the nightly toolchain; installs cargo-fuzz when missing. Not part of CI.
#
# Seeds come from fuzz/make_seeds.py (small inputs built from scratch and from tests/fixtures); the
# growing corpora stay in fuzz/corpus/<target>/ and crash inputs in fuzz/artifacts/<target>/ (both
# git-ignored). Exits non-zero when any target crashed, ran out of memory or timed out.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Burn is large and the code under test is safe Rust: coverage-guided fuzzing without ASan.
cargo +nightly fuzz build --sanitizer none

python3 make_seeds.py "$root" "$root/fuzz/corpus"

# The targets write the fuzzed bytes to scratch files; keep them inside the git-ignored build folder.
export TMPDIR="$root/fuzz/target/scratch"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
    echo "=== $target: ${seconds}s"
    mkdir -p "corpus/$target" "artifacts/$target"
    if ! cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]}" >&2
    for target in "${failed[@]}"; do
        find "artifacts/$target" -type f -newer "$stamp" -printf '  %p\n' >&2 || true
    done
    echo "reproduce: cd fuzz && cargo +nightly fuzz run --sanitizer none TARGET ARTIFACT" >&2
    exit 1
fi
echo "no crashes in $(cargo +nightly fuzz list | wc -l) targets, ${seconds}s each"
