"""``train.precision``: bf16 autocast against fp32 training, side by side in one run.

Speed: ``train.fit`` end to end (pretext synthesis, forward, backward, SGD) at the ``cpu``
preset's sizes, 3 phase-2 epochs of 3072 samples (no phase 1, the FIFO bank, so no final bank or
validation: the part ``train.precision`` changes), in interleaved runs (fp32, bf16, bf16, fp32)
per thread count; CPU seconds (``time.process_time``) and wall seconds, medians, and their ratio
fp32 / bf16. Quality: the full preset trained with bf16 (``python benchmarks/noise.py --name bf16
--set train.precision=bf16``) against the same seeds in fp32 (``noise-backbone.json``; seeded
CPU runs are bit-identical), validation image AUROC of the final bank. Results go to
``benchmarks/results/precision.json``::

    python benchmarks/precision.py [--class gravel] [--threads 1 2]
    python benchmarks/precision.py --table
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ssad.config import load_config
from ssad.data.synthetic import generate
from ssad.pipeline import load_data, splits
from ssad.train import fit

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "precision.json"
ORDER = ("fp32", "bf16", "bf16", "fp32")


def _time_fit(root: Path, cls: str, precision: str) -> tuple[float, float]:
    cfg = load_config(
        preset="cpu",
        overrides={
            "data.root": str(root),
            "data.class_name": cls,
            "train.progress": False,
            "train.val_every": 0,
            "train.phase1_epochs": 0,
            "train.phase2_epochs": 3,
            "memory.fill": "fifo",
            "train.precision": precision,
        },
    )
    train = splits(cfg, load_data(cfg))[0]
    wall, cpu = time.perf_counter(), time.process_time()
    fit(cfg, train)
    return time.process_time() - cpu, time.perf_counter() - wall


def side_by_side(
    root: Path, cls: str, threads: list[int], order: tuple[str, ...], fit_one: Callable
) -> list[dict]:
    """Per thread count: ``fit_one(root, cls, name)`` for each name of ``order`` (interleaved),
    medians of CPU and wall seconds per name, and the ratios first name / second name."""
    base, other = order[0], order[1]
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in order}
        for name in order:
            runs[name].append(fit_one(root, cls, name))
        med = {
            k: (statistics.median(c for c, _ in r), statistics.median(w for _, w in r))
            for k, r in runs.items()
        }
        rows.append(
            {
                "threads": n,
                "samples": 3 * 3072,
                **{f"{k}_cpu_s": m[0] for k, m in med.items()},
                **{f"{k}_wall_s": m[1] for k, m in med.items()},
                "cpu_ratio": med[base][0] / med[other][0],
                "wall_ratio": med[base][1] / med[other][1],
            }
        )
        print(rows[-1], flush=True)
    return rows


def speed_table(out: Path, names: dict[str, str]) -> list[str]:
    """Markdown rows of ``side_by_side``'s results in ``out``; ``names``: key → column title."""
    (a, ta), (b, tb) = names.items()
    lines = [
        f"| threads | {ta} CPU-s | {tb} CPU-s | CPU ratio | {ta} wall s | {tb} wall s "
        "| wall ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in json.loads(out.read_text())["speed"]:
        lines.append(
            f"| {r['threads']} | {r[f'{a}_cpu_s']:.1f} | {r[f'{b}_cpu_s']:.1f} | "
            f"{r['cpu_ratio']:.2f} | {r[f'{a}_wall_s']:.1f} | {r[f'{b}_wall_s']:.1f} | "
            f"{r['wall_ratio']:.2f} |"
        )
    return lines


def cli(doc: str, out: Path, order: tuple[str, ...], fit_one: Callable, table: Callable) -> None:
    """The command line of a side-by-side speed benchmark: run it (``--class``, ``--threads``,
    ``--data``) into ``out`` and print ``table()``, or only print it (``--table``)."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--class", dest="cls", default="gravel")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--data", type=Path, default=Path("runs/data/noise/v2"))
    p.add_argument("--table", action="store_true", help="print the README table and exit")
    args = p.parse_args()
    if not args.table:
        if not (args.data / "ssad_classes.yaml").is_file():
            generate(args.data, seed=0, size=256)
        rows = side_by_side(args.data, args.cls, args.threads, order, fit_one)
        out.write_text(json.dumps({"class": args.cls, "speed": rows}))
    print(table())


def quality() -> list[dict]:
    """Per (class, seed) in noise-bf16.json: final-bank val/test image AUROC, bf16 and fp32."""
    fp32 = {(r["class"], r["seed"]): r for r in _runs("noise-backbone.json")}
    rows = []
    for r in _runs("noise-bf16.json"):
        o = fp32[(r["class"], r["seed"])]
        rows.append(
            {
                "class": r["class"],
                "seed": r["seed"],
                **{
                    f"{p}_{split}": run["final"][split]["image_auroc"]
                    for p, run in (("bf16", r), ("fp32", o))
                    for split in ("val", "test")
                },
            }
        )
    return rows


def _runs(name: str) -> list[dict]:
    path = RESULTS / name
    return json.loads(path.read_text())["runs"] if path.is_file() else []


def table() -> str:
    lines = speed_table(OUT, {"fp32": "fp32", "bf16": "bf16"})
    q = quality()
    if q:
        lines += ["", "| class | seed | val fp32 | val bf16 | test fp32 | test bf16 |"]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for r in q:
            lines.append(
                f"| {r['class']} | {r['seed']} | {r['fp32_val']:.3f} | {r['bf16_val']:.3f} | "
                f"{r['fp32_test']:.3f} | {r['bf16_test']:.3f} |"
            )
        d = np.array([r["bf16_val"] - r["fp32_val"] for r in q])
        lines.append(f"\nPaired val difference bf16 − fp32: {d.mean():+.3f} (n {len(d)})")
    return "\n".join(lines)


def main() -> None:
    cli(__doc__, OUT, ORDER, _time_fit, table)


if __name__ == "__main__":
    main()
