#!/usr/bin/env bash
# Old-against-new timing of two `mocoop` builds on this machine: every case of `mocoop bench`,
# the two binaries alternating within each round (old, new, then new, old in the next round), so
# that drift of the machine's load hits both alike. Prints a Markdown table of the median and the
# fastest ms/step of each and their ratios (new / old; below 1 is faster): on a shared machine the
# fastest run is the one least disturbed by other work.
#
# Usage: bench/ab.sh OLD_BINARY NEW_BINARY [--rounds N] [--geometry small|tiny|vit-b-16]
#                    [--steps N] [--cases LIST]
# Defaults: 3 rounds, the small geometry on the CPU, 3 timed steps after 1 warm-up, every case.
# Build a commit's binary with, e.g.:
#   git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release -p mocoop-cli \
#       --no-default-features)
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,/^set -e/{/^set -e/d;p}' "$0"; exit 2; }
old="$1" new="$2"
shift 2
rounds=3 geometry=small steps=3 cases="train-ln,train-no-ln,train-imagenet,infer-cached,encode-image"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --geometry) geometry="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --cases) cases="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
run() { # binary label case round
    "$1" bench --device cpu --geometry "$geometry" --steps "$steps" --warmup 1 --cases "$3" \
        --json "$work/$2-$3-$4.json" > /dev/null
}
IFS=, read -ra list <<< "$cases"
for case in "${list[@]}"; do
    for round in $(seq 1 "$rounds"); do
        echo "== $case, round $round" >&2
        if (( round % 2 )); then
            run "$old" old "$case" "$round"; run "$new" new "$case" "$round"
        else
            run "$new" new "$case" "$round"; run "$old" old "$case" "$round"
        fi
    done
done

python3 - "$work" "$rounds" "${list[@]}" <<'EOF'
import json, statistics, sys
work, rounds, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def ms(label, case):
    return [json.load(open(f"{work}/{label}-{case}-{r}.json"))["cases"][0]["ms_per_step"]
            for r in range(1, rounds + 1)]
print("| case | old median | new median | new / old | old fastest | new fastest | new / old | runs |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for case in cases:
    a, b = ms("old", case), ms("new", case)
    ma, mb = statistics.median(a), statistics.median(b)
    fa, fb = min(a), min(b)
    print(f"| {case} | {ma:.1f} | {mb:.1f} | {mb / ma:.3f} | {fa:.1f} | {fb:.1f} | {fb / fa:.3f} | "
          f"old {', '.join(f'{v:.0f}' for v in a)}; new {', '.join(f'{v:.0f}' for v in b)} |")
EOF
