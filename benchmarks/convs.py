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

import contextlib
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from benchmarks import precision
from ssad.model import OnePositionConv2d

OUT = precision.RESULTS / "convs.json"
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


def _time_fit(root: Path, cls: str, name: str) -> tuple[float, float]:
    with _path(name):
        return precision._time_fit(root, cls, "fp32")


def table() -> str:
    names = {"conv2d": "nn.Conv2d", "linear": "one-position linear"}
    return "\n".join(precision.speed_table(OUT, names))


def main() -> None:
    precision.cli(__doc__, OUT, ORDER, _time_fit, table)


if __name__ == "__main__":
    main()
