"""The CUDA path on a GPU machine: ``train.fit`` with ``train.device: auto``, side by side.

Checks what the CPU machines cannot: ``auto`` resolves to CUDA, and the ``cpu`` preset trains
there in fp32 with pretext synthesis in the training process (``train.workers: 0``, the
baseline), with 8 DataLoader workers, and with ``train.precision: bf16`` on top. ratio =
baseline seconds / variant seconds. Needs CUDA: on a machine without it the benchmark is skipped
(``run.py`` prints why; the test suite marks it skipped)::

    python benchmarks/run.py --only gpu --out benchmarks/results/gpu.json

``results/gpu-h200.json`` holds an earlier, longer run on an H200 (training and scoring per
class; docs/benchmarks-suite.md).
"""

from __future__ import annotations

import torch

from benchmarks.fits import fit_side_by_side

__all__ = ["NoGPU", "bench_gpu", "why_not"]


class NoGPU(RuntimeError):
    """Raised instead of running a GPU benchmark on a machine without CUDA."""


def why_not() -> str | None:
    """Why this machine cannot run the GPU benchmark, or None when it can."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device: the gpu benchmark runs on a GPU machine only"
    return None


def bench_gpu(quick: bool) -> list[dict[str, object]]:
    reason = why_not()
    if reason:
        raise NoGPU(reason)
    cuda = {"train.device": "auto"}
    rows = fit_side_by_side(
        f"train.fit on {torch.cuda.get_device_name(0)}",
        {
            "fp32, train.workers 0": {**cuda, "train.workers": 0},
            "fp32, train.workers 8": {**cuda, "train.workers": 8},
            "bf16, train.workers 8": {**cuda, "train.workers": 8, "train.precision": "bf16"},
        },
        quick=quick,
    )
    for row in rows:
        row["sizes"]["gpu"] = torch.cuda.get_device_name(0)
    return rows
