#!/usr/bin/env bash
# Runs the Rust loader benchmark (benches/loader.rs) and its PIL + torchvision counterpart
# (benches/loader_reference.py) on the same generated JPEGs with the same worker count, in
# alternating rounds, and prints both rates and their ratio.
#
#   crates/data/benches/run_loader_bench.sh [--images 500] [--workers 2] [--batch 32] [--epochs 4] [--rounds 2]
#
# The Rust side is built in the dev profile (dependencies there are already optimised, see the
# workspace Cargo.toml) with this crate and mocoop-model raised to opt-level 3, so nothing has to be
# rebuilt in release. PYTHON defaults to .venv-ref/bin/python (torch, torchvision, Pillow).
set -euo pipefail

IMAGES=500 WORKERS=2 BATCH=32 EPOCHS=4 ROUNDS=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --images) IMAGES="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv-ref/bin/python}"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/mocoop-loader-bench.XXXXXX")"
trap 'rm -rf "$DIR"' EXIT

CARGO=(cargo bench --manifest-path "$ROOT/Cargo.toml" -p mocoop-data --bench loader --profile dev
  --config 'profile.dev.package.mocoop-data.opt-level=3'
  --config 'profile.dev.package.mocoop-model.opt-level=3')
"${CARGO[@]}" --no-run 2>&1 | tail -n 1
"${CARGO[@]}" -q -- --generate --dir "$DIR" --images "$IMAGES"

COMMON=(--dir "$DIR" --workers "$WORKERS" --batch "$BATCH" --epochs "$EPOCHS")
best_rust=0 best_py=0
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  rust=$("${CARGO[@]}" -q -- "${COMMON[@]}" | tee /dev/stderr | awk '/^rust:/ {print $2}')
  py=$("$PYTHON" "$HERE/loader_reference.py" "${COMMON[@]}" | tee /dev/stderr | awk '/^python:/ {print $2}')
  best_rust=$(awk -v a="$best_rust" -v b="$rust" 'BEGIN {print (b > a) ? b : a}')
  best_py=$(awk -v a="$best_py" -v b="$py" 'BEGIN {print (b > a) ? b : a}')
done

echo "== best of $ROUNDS rounds, $IMAGES images, $WORKERS workers, batch $BATCH"
echo "rust (image/zune-jpeg + fast_image_resize): $best_rust images/s"
echo "python (PIL + torchvision DataLoader):      $best_py images/s"
awk -v r="$best_rust" -v p="$best_py" 'BEGIN {
  printf "ratio python/rust: %.2f (Rust takes %.2fx the time of PIL+torchvision; target <= 1.5)\n", p / r, p / r
}'
