"""``OnePositionConv2d`` against ``nn.Conv2d``: a patch-mode training step, side by side.

On 24 px windows ResNet-18's layer4 3×3 convolutions have one output position; ``ssad.model``
computes them as ``F.linear`` over the kernel slice that overlaps the input, the baseline as
oneDNN's convolution (all nine taps). Two copies of the same model (``build_model``, ResNet-18
from random weights): ssad's, and one whose ``OnePositionConv2d`` modules are turned back into
plain ``nn.Conv2d`` (same parameters). Both compute the same logits (checked); each then runs
SGD steps (forward, cross-entropy, backward, update) on the same batch of 24 px windows, in
interleaved rounds. ratio = ``nn.Conv2d`` seconds / one-position seconds::

    python benchmarks/run.py --only convs --out benchmarks/results/convs.json
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.timing import check, first_calls, pair_row, side_by_side
from ssad.config import load_config
from ssad.model import OnePositionConv2d
from ssad.train import build_model

__all__ = ["bench_convs", "plain_convs"]

WINDOW = 24  # px: layer4 sees 2×2, then 1×1


def plain_convs(model: nn.Module) -> int:
    """Turn every ``OnePositionConv2d`` below ``model`` into an ``nn.Conv2d``, in place (the same
    parameters); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, OnePositionConv2d):
            m.__class__ = nn.Conv2d
            n += 1
    return n


def _stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        loss = F.cross_entropy(model.classify(model.embed(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def bench_convs(quick: bool) -> list[dict[str, object]]:
    batch = 8 if quick else 64  # 64: the scratch preset's train.batch_size
    cfg = load_config(preset="seed", overrides={"model.weights": "none"})  # ResNet-18
    torch.manual_seed(0)
    ours = build_model(cfg).train()
    baseline = copy.deepcopy(ours)
    replaced = plain_convs(baseline)
    check(replaced > 0, "the model has no OnePositionConv2d to compare")
    x = torch.rand(batch, 3, WINDOW, WINDOW)
    y = torch.randint(0, cfg.pretext.classes, (batch,))
    with torch.no_grad():
        same = torch.allclose(
            ours.classify(ours.embed(x)), baseline.classify(baseline.embed(x)), atol=1e-4
        )
    check(same, "one-position and nn.Conv2d models give different logits")
    fns = {"one-position linear": _stepper(ours, x, y), "nn.Conv2d": _stepper(baseline, x, y)}
    _, first_s = first_calls(fns)
    timings = side_by_side(fns, first_s=first_s, repeat=3 if quick else 9)
    return [
        pair_row(
            "layer4 convolutions, patch-mode training step",
            ours="one-position linear",
            baseline="nn.Conv2d",
            timings=timings,
            sizes={"batch": batch, "window_px": WINDOW, "model": "ResNet-18", "convs": replaced},
        )
    ]
