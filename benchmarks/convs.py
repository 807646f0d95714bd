"""``OnePositionConv2d`` against ``nn.Conv2d``: the patch-mode training step, side by side.

On 24 px windows layer4's 3×3 convolutions have one output position; ``ssad.model`` computes them
as ``F.linear`` over the kernel slice that overlaps the input, the baseline as oneDNN's
convolution (``nn.Conv2d.forward``, all nine taps). Both are timed as ``train.fit`` end to end at
the ``cpu`` preset's sizes (3 phase-2 epochs of 3072 samples, as ``benchmarks/precision.py``), in
interleaved runs (conv2d, linear, linear, conv2d) per thread count; CPU and wall seconds, medians,
and the ratio conv2d / linear. Results go to ``benchmarks/results/convs.json``::

    python -m benchmarks.convs [--class gravel] [--threads 1 2]
    python -m benchmarks.convs --table
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from benchmarks.precision import RESULTS, _time_fit
from ssad.data.synthetic import generate
from ssad.model import OnePositionConv2d

OUT = RESULTS / "convs.json"
ORDER = ("conv2d", "linear", "linear", "conv2d")


@contextlib.contextmanager
def _path(name: str) -> Iterator[None]:
    """``linear``: ssad's forward; ``conv2d``: every convolution through ``nn.Conv2d.forward``."""
    fast = OnePositionConv2d.forward
    if name == "conv2d":
        OnePositionConv2d.forward = nn.Conv2d.forward
    try:
        yield
    finally:
        OnePositionConv2d.forward = fast


def speed(root: Path, cls: str, threads: list[int]) -> list[dict]:
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        runs: dict[str, list[tuple[float, float]]] = {"conv2d": [], "linear": []}
        for name in ORDER:
            with _path(name):
                runs[name].append(_time_fit(root, cls, "fp32"))
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
                "cpu_ratio": med["conv2d"][0] / med["linear"][0],
                "wall_ratio": med["conv2d"][1] / med["linear"][1],
            }
        )
        print(rows[-1], flush=True)
    return rows


def table() -> str:
    res = json.loads(OUT.read_text())
    lines = [
        "| threads | nn.Conv2d CPU-s | one-position linear CPU-s | CPU ratio | nn.Conv2d wall s "
        "| linear wall s | wall ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["speed"]:
        lines.append(
            f"| {r['threads']} | {r['conv2d_cpu_s']:.1f} | {r['linear_cpu_s']:.1f} | "
            f"{r['cpu_ratio']:.2f} | {r['conv2d_wall_s']:.1f} | {r['linear_wall_s']:.1f} | "
            f"{r['wall_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--class", dest="cls", default="gravel")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--data", type=Path, default=Path("runs/data/noise/v2"))
    p.add_argument("--table", action="store_true", help="print the README table and exit")
    args = p.parse_args()
    if not args.table:
        if not (args.data / "ssad_classes.yaml").is_file():
            generate(args.data, seed=0, size=256)
        OUT.write_text(
            json.dumps({"class": args.cls, "speed": speed(args.data, args.cls, args.threads)})
        )
    print(table())


if __name__ == "__main__":
    main()
