#!/usr/bin/env bash
# Runs issue #6's benchmark: every case of `mocoop bench` (Rust, Burn) and of the PyTorch
# reference (bench/reference/mocoop_step.py) the official code bases' way and with --eot-cut
# (prompts cut after their EOT, as this project does), alternating per case on the same machine,
# and writes bench/results/<date>-<device>-<geometry>-<precision>[-N].{json,md} with both ratios
# of every case (-N: the day's Nth run). --cases a,b runs only those cases.
#
# Usage: bench/run.sh [--device cpu|cuda] [--geometry small|vit-b-16|tiny] [--steps N]
#                     [--warmup N] [--threads N] [--precision f32|f16|bf16] [--breakdown]
#                     [--parallel LIST [--split batch|classes]] [--cases LIST]
# Defaults: cpu + small + f32 (3 timed steps after 1 warm-up); cuda + vit-b-16 + bf16 (20 after
# 5). The precision is Rust's --precision and the reference's AMP (f32: off, f16: fp16 with a
# GradScaler, bf16: bf16 autocast; AMP runs on CUDA only).
# Both sides use the same number of CPU threads (RAYON_NUM_THREADS / torch.set_num_threads).
# --parallel cpu,cpu (or cuda:0,cuda:1) also runs Rust's training cases data-parallel on those
# devices, as `train --device LIST` does, reported as extra rows against the same PyTorch step;
# --split classes shares each step's prompts between them instead of its batch (`train --split`).
# MOCOOP=path/to/mocoop uses an already built release binary instead of building one;
# PYTHON=path/to/python a Python that already has torch and open_clip instead of .venv-ref.
set -euo pipefail

device=cpu geometry="" steps="" warmup="" threads="" precision="" breakdown=() parallel="" split=batch
all_cases=train-ln,train-no-ln,train-imagenet,train-cocoop,train-cocoop-b8,train-kgcoop,train-prograd,train-maple,infer-cached,encode-image
cases="$all_cases"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --geometry) geometry="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --precision) precision="$2"; shift 2 ;;
        --breakdown) breakdown=(--breakdown); shift ;;
        --parallel) parallel="$2"; shift 2 ;;
        --split) split="$2"; shift 2 ;;
        --cases) cases="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/{/^set -e/d;p}' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$device" in
    cpu) features=(--no-default-features); geometry="${geometry:-small}"
         steps="${steps:-3}"; warmup="${warmup:-1}"; precision="${precision:-f32}" ;;
    cuda*) features=(--no-default-features --features cuda); geometry="${geometry:-vit-b-16}"
           steps="${steps:-20}"; warmup="${warmup:-5}"; precision="${precision:-bf16}" ;;
    *) echo "--device must be cpu or cuda[:N]" >&2; exit 2 ;;
esac
case "$precision" in
    f32) amp=off ;; f16) amp=fp16 ;; bf16) amp=bf16 ;;
    *) echo "--precision must be f32, f16 or bf16" >&2; exit 2 ;;
esac
threads="${threads:-$(nproc)}"

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
if [[ -n "${MOCOOP:-}" ]]; then
    mocoop="$MOCOOP"
else
    cargo build --release -p mocoop-cli "${features[@]}"
    mocoop="$target_dir/release/mocoop"
fi
if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
else
    [[ -x .venv-ref/bin/python ]] || tests/fixtures/setup_reference_env.sh
    python=.venv-ref/bin/python
fi

export RAYON_NUM_THREADS="$threads"
shared=(--geometry "$geometry" --steps "$steps" --warmup "$warmup" "${breakdown[@]}")
common=(--device "$device" "${shared[@]}")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for case in ${cases//,/ }; do
    echo "== $case: Rust" >&2
    "$mocoop" bench "${common[@]}" --precision "$precision" --cases "$case" \
        --json "$work/rust-$case.json" >&2
    if [[ -n "$parallel" && "$case" =~ ^train-(ln|no-ln|imagenet)$ ]]; then
        echo "== $case: Rust on $parallel, split by $split" >&2
        "$mocoop" bench --device "$parallel" --split "$split" "${shared[@]}" \
            --precision "$precision" --cases "$case" --json "$work/rust-$case-parallel.json" >&2
    fi
    echo "== $case: PyTorch" >&2
    "$python" bench/reference/mocoop_step.py "${common[@]}" --threads "$threads" --amp "$amp" \
        --cases "$case" --json "$work/pytorch-$case.json" >&2
    echo "== $case: PyTorch, prompts cut after their EOT" >&2
    "$python" bench/reference/mocoop_step.py "${common[@]}" --threads "$threads" --amp "$amp" \
        --eot-cut --cases "$case" --json "$work/pytorch-eot-cut-$case.json" >&2
done

out="bench/results/$(date -u +%F)-${device%%:*}-$geometry-$precision"
# A second run on the same day gets a numbered name instead of replacing the first one's results.
if [[ -e "$out.json" ]]; then
    n=2
    while [[ -e "$out-$n.json" ]]; do n=$((n + 1)); done
    out="$out-$n"
fi
command="bench/run.sh --device $device --geometry $geometry --steps $steps --warmup $warmup --precision $precision ${parallel:+--parallel $parallel --split $split }${breakdown[*]}"
command="${command% }"
[[ "$cases" == "$all_cases" ]] || command+=" --cases $cases"
"$python" bench/reference/compare.py --out "$out" --command "$command" "$work"/*.json
echo "wrote $out.json and $out.md" >&2
