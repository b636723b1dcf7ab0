#!/usr/bin/env bash
# Issue #6's GPU measurements as one prepared command, for a session lent an NVIDIA machine (the
# `run` tool: 15 minutes of device time in all, 10 per command, nothing fetched over the network).
#
# Here, once (builds the CUDA-only release binary and downloads the Python wheels that the device
# image lacks, open_clip and its two small dependencies, into the ignored folder .device/):
#     bench/device-check.sh --prepare
# There, with `.device` carried:
#     bench/device-check.sh [run.sh options, e.g. --steps 10]
# It prints the GPU, runs one tiny training step on CUDA as a smoke test, then
# `bench/run.sh --device cuda` (ViT-B/16 geometry, bf16) with the carried binary and the machine's
# own PyTorch, and copies the results and the log into $OUT (or bench/results/ without $OUT).
# `DEVICE=cpu bench/device-check.sh --geometry tiny` rehearses the same steps on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.device

if [[ "${1:-}" == "--prepare" ]]; then
    cargo build --release -p mocoop-cli --no-default-features --features cuda
    mkdir -p "$kit/whl"
    cp "${CARGO_TARGET_DIR:-target}/release/mocoop" "$kit/mocoop"
    strip "$kit/mocoop"   # what travels to the device machine is limited to 64 MiB
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 -d "$kit/whl" \
        open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
    du -sh "$kit"
    exit 0
fi

device="${DEVICE:-cuda}"
out="${OUT:-bench/results}"
mkdir -p "$out"
log="$out/device-check.log"
{
    [[ -x "$kit/mocoop" ]] || { echo "no $kit/mocoop: run bench/device-check.sh --prepare here first" >&2; exit 2; }
    if [[ -d "$kit/whl" && "$device" == cuda* ]]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$kit"/whl/*.whl
        export PYTHONPATH=/tmp/site
    fi
    python="${PYTHON:-python3}"
    if [[ "$device" == cuda* ]]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    fi
    "$python" -c 'import torch, open_clip; print("torch", torch.__version__, "open_clip", open_clip.__version__)'
    echo "== smoke test: one tiny training step on $device"
    "$kit/mocoop" bench --device "$device" --geometry tiny --steps 1 --warmup 1 --cases train-ln
    echo "== bench/run.sh --device $device $*"
    MOCOOP="$kit/mocoop" PYTHON="$python" bench/run.sh --device "$device" "$@"
    if [[ "$out" != bench/results ]]; then
        cp bench/results/"$(date -u +%F)-${device%%:*}"-* "$out"/
    fi
} 2>&1 | tee "$log"
