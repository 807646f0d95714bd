"""``train.precision``: bf16 autocast against fp32 training, side by side in one run.

``train.fit`` of one texture class at the ``cpu`` preset's sizes (3 phase-2 epochs), once per
precision, in interleaved rounds at the current thread count (``benchmarks/run.py --threads``).
ratio = fp32 seconds / bf16 seconds: > 1 means bf16 trains faster. Quality under bf16 was an
experiment (docs/experiments.md)::

    python benchmarks/run.py --only precision --out benchmarks/results/precision.json
"""

from __future__ import annotations

from benchmarks.fits import fit_side_by_side

__all__ = ["bench_precision"]


def bench_precision(quick: bool) -> list[dict[str, object]]:
    return fit_side_by_side(
        "train.precision",
        {"fp32": {"train.precision": "fp32"}, "bf16 autocast": {"train.precision": "bf16"}},
        quick=quick,
    )
