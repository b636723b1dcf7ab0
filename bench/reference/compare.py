#!/usr/bin/env python3
"""Pairs the records of `mocoop bench` and `mocoop_step.py` case by case and writes the ratios.

Usage: compare.py --out bench/results/<date>-<device>-<geometry> [--command TEXT] FILE.json...
Each FILE is a report of either implementation (`implementation` = "mocoop-burn", "pytorch", or
"pytorch-eot-cut" for the reference run with `--eot-cut`).
Writes OUT.json (both records and the ratios per case) and OUT.md (the table), and prints the table.

A Rust record of a training case run on several devices (`--device cpu,cpu`, data-parallel) gets a
row of its own, "<case> on <devices>", against the same PyTorch record.

Ratios: speed = Rust images/s / PyTorch images/s (> 1: Rust faster); time = Rust ms/step /
PyTorch ms/step (<= 1 meets the CPU target); memory = Rust peak / PyTorch peak (RSS, and device
memory on GPUs). With an EOT-cut reference, every case also gets its time and memory ratios to
that run ("vs cut"): the official-way ratio shows what the cut and the framework are worth
together, the cut one what the framework is worth.
"""

import argparse
import json
from pathlib import Path

ORDER = ["train-ln", "train-no-ln", "train-imagenet", "train-cocoop", "train-cocoop-b8",
         "train-kgcoop", "train-prograd", "infer-cached", "encode-image"]


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def row_name(record):
    """The case, or "<case> on <devices>" for a run on several devices."""
    device = record.get("device", "")
    return f"{record['case']} on {device}" if "," in device else record["case"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    by_impl = {"mocoop-burn": {}, "pytorch": {}, "pytorch-eot-cut": {}}
    meta = {}
    for path in args.files:
        report = json.loads(Path(path).read_text())
        impl = report["implementation"]
        meta.setdefault(impl, {k: v for k, v in report.items() if k != "cases"})
        for record in report["cases"]:
            by_impl[impl][row_name(record)] = record

    rows = []
    get = lambda r, k: r.get(k) if r else None
    for case in ORDER:
        torch = by_impl["pytorch"].get(case)
        cut = by_impl["pytorch-eot-cut"].get(case)
        on_several = sorted(n for n in by_impl["mocoop-burn"] if n.startswith(f"{case} on "))
        for name in [case, *on_several]:
            rust = by_impl["mocoop-burn"].get(name)
            if rust is None and torch is None and cut is None:
                continue
            rows.append(dict(
                case=name, rust=rust, pytorch=torch, pytorch_eot_cut=cut,
                time_ratio_cut=ratio(get(rust, "ms_per_step"), get(cut, "ms_per_step")),
                rss_ratio_cut=ratio(get(rust, "peak_rss_mib"), get(cut, "peak_rss_mib")),
                speed_ratio=ratio(get(rust, "images_per_s"), get(torch, "images_per_s")),
                time_ratio=ratio(get(rust, "ms_per_step"), get(torch, "ms_per_step")),
                rss_ratio=ratio(get(rust, "peak_rss_mib"), get(torch, "peak_rss_mib")),
                device_mem_ratio=ratio(get(rust, "device_mem_mib"), get(torch, "device_mem_mib")),
            ))

    rust_meta, torch_meta = meta.get("mocoop-burn", {}), meta.get("pytorch", {})
    first = next((r["rust"] or r["pytorch"] or r["pytorch_eot_cut"] for r in rows), {})
    summary = dict(
        date=rust_meta.get("date") or torch_meta.get("date"),
        machine=torch_meta.get("machine") or rust_meta.get("machine"),
        device=first.get("device"), geometry=first.get("geometry"),
        threads=dict(rust=rust_meta.get("threads"), pytorch=torch_meta.get("threads")),
        torch=torch_meta.get("torch"), open_clip=torch_meta.get("open_clip"),
        command=args.command, cases=rows,
    )
    gpu = any((r["rust"] or {}).get("device_mem_mib") or (r["pytorch"] or {}).get("device_mem_mib")
              for r in rows)

    lines = [
        f"`{args.command}` — {summary['date']}, {summary['machine']}, device {summary['device']}, "
        f"geometry {summary['geometry']}, threads {summary['threads']['rust']} (Rust) / "
        f"{summary['threads']['pytorch']} (PyTorch {summary['torch']}, open_clip {summary['open_clip']})",
        "",
        "| case | E | C | batch | LN | Rust images/s | PyTorch images/s | speed ratio | Rust ms/step "
        "| PyTorch ms/step | time ratio | PyTorch EOT-cut ms/step | time ratio vs cut "
        "| Rust peak RSS MiB | PyTorch peak RSS MiB | memory ratio | memory ratio vs cut |"
        + (" Rust device MiB | PyTorch device MiB | device memory ratio |" if gpu else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        + ("---|---|---|" if gpu else ""),
    ]
    for r in rows:
        any_rec = r["rust"] or r["pytorch"] or r["pytorch_eot_cut"]
        g = lambda rec, k, d=1: fmt(rec.get(k), d) if rec else "n/a"
        line = (f"| {r['case']} | {any_rec['experts']} | {any_rec['classes']} | {any_rec['batch']} | "
                f"{'on' if any_rec['ln_tuning'] else 'off'} | {g(r['rust'], 'images_per_s')} | "
                f"{g(r['pytorch'], 'images_per_s')} | {fmt(r['speed_ratio'])} | "
                f"{g(r['rust'], 'ms_per_step')} | {g(r['pytorch'], 'ms_per_step')} | "
                f"{fmt(r['time_ratio'])} | {g(r['pytorch_eot_cut'], 'ms_per_step')} | "
                f"{fmt(r['time_ratio_cut'])} | {g(r['rust'], 'peak_rss_mib', 0)} | "
                f"{g(r['pytorch'], 'peak_rss_mib', 0)} | {fmt(r['rss_ratio'])} | "
                f"{fmt(r['rss_ratio_cut'])} |")
        if gpu:
            line += (f" {g(r['rust'], 'device_mem_mib', 0)} | {g(r['pytorch'], 'device_mem_mib', 0)} | "
                     f"{fmt(r['device_mem_ratio'])} |")
        lines.append(line)
    rust = by_impl["mocoop-burn"]
    if "infer-cached" in rust and "encode-image" in rust:
        lines += ["", f"Rust inference with cached text features runs at "
                      f"{rust['infer-cached']['images_per_s'] / rust['encode-image']['images_per_s']:.3f}"
                      f" x the images/s of plain image encoding."]
    notes = []
    for r in rows:
        for impl in ("rust", "pytorch", "pytorch_eot_cut"):
            rec = r[impl]
            if not rec or (impl != "rust" and " on " in r["case"]):
                continue  # a row on several devices shares its PyTorch record with the case's own
            for key in ("note", "memory_note"):
                if rec.get(key):
                    notes.append(f"- {r['case']} ({impl}): {rec[key]}")
            if rec.get("breakdown"):
                parts = ", ".join(f"{name} {ms:.0f} ms" for name, ms in rec["breakdown"])
                notes.append(f"- {r['case']} ({impl}) breakdown: {parts}")
    if notes:
        lines += ["", *dict.fromkeys(notes)]
    table = "\n".join(lines) + "\n"

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
