#!/usr/bin/env python3
"""MoCoOp on the shape world with hand-made, suggested and random template groups.

Usage: scripts/groups-table.py [--seeds 1,2,3] [--out runs/groups-table] [--epochs N]

For each seed it writes the shape-world benchmark (the demo's sizes: 16 training, 4 validation and
30 test images per class) and trains MoCoOp base-to-new three times with the shipped small CLIP:

- hand-made: the `shapeworld` section of assets/template-groups.toml (5 groups of 4 templates);
- suggested: `--groups auto` (CLIP's 80 ImageNet templates clustered for the 32 class names);
- random: the same 80 templates shuffled (seeded) into groups of the suggested groups' sizes, so
  that only the clustering differs from `suggested`.

It prints a Markdown table of base / new / HM test accuracy, mean ± sample standard deviation
over the seeds. The `mocoop` binary is $MOCOOP, else target/debug/mocoop (build it first:
`cargo build -p mocoop-cli`); the benchmark is written with the mocoop-world example
(`cargo run -p mocoop-world --example write_benchmark`).
"""
import argparse
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLIP = ROOT / "assets" / "shapeworld-clip.safetensors"
CONDITIONS = ("hand-made", "suggested", "random")


def run(args, **kw):
    print("+", " ".join(str(a) for a in args), file=sys.stderr, flush=True)
    return subprocess.run([str(a) for a in args], check=True, **kw)


def write_benchmark(data: pathlib.Path, seed: int):
    cargo = ["cargo", "run", "-q", "-p", "mocoop-world", "--example", "write_benchmark", "--"]
    run(cargo + [data, seed, 16, 4, 30], cwd=ROOT, stdout=subprocess.DEVNULL)


def toml_groups(groups, section="shapeworld"):
    rows = ",\n".join("  [" + ", ".join(json.dumps(t) for t in g) + "]" for g in groups)
    return f"[{section}]\ngroups = [\n{rows},\n]\n"


def read_groups(path: pathlib.Path):
    table = tomllib.loads(path.read_text())
    (section,) = table.values()
    return section["groups"]


def train(mocoop, data, out, seed, epochs, groups):
    args = [mocoop, "train", "--weights", CLIP, "--dataset", "shapeworld", "--root", data,
            "--seed", seed, "--out", out, "--overwrite", "--quiet"]
    if groups:
        args += ["--groups", groups]
    if epochs:
        args += ["--epochs", epochs]
    result = run(args, stdout=subprocess.PIPE)
    splits = json.loads(result.stdout)["results"]["splits"]
    acc = {s["split"]: s["accuracy"] for s in splits}
    base, new = acc["base"], acc["new"]
    return base, new, 2 * base * new / (base + new)


def one_seed(mocoop, out, seed, epochs):
    data = out / f"data-s{seed}"
    write_benchmark(data, seed)
    results = {}
    # No --groups: the built-in table's `shapeworld` section.
    results["hand-made"] = train(mocoop, data, out / f"hand-made-s{seed}", seed, epochs, None)
    suggested_run = out / f"suggested-s{seed}"
    results["suggested"] = train(mocoop, data, suggested_run, seed, epochs, "auto")
    suggested = read_groups(suggested_run / "groups.toml")
    pool = [t for g in suggested for t in g]
    random.Random(seed).shuffle(pool)
    shuffled, start = [], 0
    for g in suggested:
        shuffled.append(pool[start:start + len(g)])
        start += len(g)
    random_file = out / f"random-s{seed}.toml"
    random_file.write_text(toml_groups(shuffled))
    results["random"] = train(mocoop, data, out / f"random-s{seed}", seed, epochs, random_file)
    sizes = [len(g) for g in suggested]
    print(f"seed {seed}: suggested group sizes {sizes}; {results}", file=sys.stderr)
    return results, sizes


def cell(values):
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", default="runs/groups-table")
    parser.add_argument("--epochs", type=int, default=0, help="0: the recipe's (50)")
    args = parser.parse_args()
    mocoop = pathlib.Path(os.environ.get("MOCOOP", ROOT / "target" / "debug" / "mocoop"))
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = [one_seed(mocoop, out, s, args.epochs) for s in seeds]
    print(f"| groups | base | new | HM |  (MoCoOp, shape world, seeds {args.seeds})")
    print("|---|---|---|---|")
    for name in CONDITIONS:
        columns = zip(*(results[name] for results, _ in per_seed))
        print(f"| {name} | " + " | ".join(cell(list(c)) for c in columns) + " |")
    for seed, (_, sizes) in zip(seeds, per_seed):
        print(f"seed {seed}: suggested (and random) group sizes {sizes}")


if __name__ == "__main__":
    main()
