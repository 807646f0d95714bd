"""Test-only fault injection for trials (the fault suite in ``tests/study/test_faults.py``).

Set ``SSAD_FAULT_INJECT`` in the driver's environment; the runner reads it once and hands it to
every trial (workers never read the variable themselves). Comma-separated rules::

    raise:brick      every brick trial raises InjectedFault before training
    raise@2:brick/1  brick trials of seed replica 1 raise when they report epoch 2 (a retry
                     resumes from epoch 1's checkpoint and raises again)
    nan:gelcap/1     gelcap trials of seed replica 1: the 3-way classifier outputs NaN while
                     training, the loss goes NaN and ssad.train raises its FloatingPointError
                     (the real divergence path)

A rule matches a trial by its class and, after ``/``, its seed replica (``0`` to
``seeds_per_config - 1``). Not for production use: nothing else reads the variable, and an unset
or empty variable injects nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ENV", "Fault", "InjectedFault", "for_trial", "nan_logits", "parse"]

ENV = "SSAD_FAULT_INJECT"


class InjectedFault(RuntimeError):
    """The error an injected ``raise`` fault raises."""


@dataclass(frozen=True)
class Fault:
    kind: str  # "raise" | "nan"
    class_name: str
    seed: int | None = None  # seed replica; None: every replica
    epoch: int = 0  # raise: at this reported epoch (0: before training)


def parse(text: str | None) -> tuple[Fault, ...]:
    """Parse ``SSAD_FAULT_INJECT``; a malformed rule raises ValueError naming it."""
    faults = []
    for rule in (text or "").split(","):
        rule = rule.strip()
        if not rule:
            continue
        head, sep, target = rule.partition(":")
        kind, _, epoch = head.partition("@")
        cls, _, seed = target.partition("/")
        if (
            not sep
            or not cls
            or kind not in ("raise", "nan")
            or (epoch and not epoch.isdigit())
            or (seed and not seed.isdigit())
        ):
            raise ValueError(
                f"{ENV}: bad rule {rule!r} (raise[@EPOCH]:CLASS[/SEED] | nan:CLASS[/SEED])"
            )
        faults.append(Fault(kind, cls, int(seed) if seed else None, int(epoch or 0)))
    return tuple(faults)


def for_trial(faults: tuple[Fault, ...], trial_config: dict) -> Fault | None:
    """The first rule matching a trial config (``class_name``, ``seed``), or None."""
    for f in faults:
        if f.class_name == trial_config.get("class_name") and f.seed in (
            None,
            int(trial_config.get("seed", 0)),
        ):
            return f
    return None


class _NaN(torch.autograd.Function):
    """NaN forward, zero gradient: the loss is NaN while the weights stay finite."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, math.nan)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


@contextlib.contextmanager
def nan_logits(num_classes: int = 3) -> Iterator[None]:
    """While active, every training-mode ``nn.Linear`` with ``num_classes`` outputs gives NaN."""

    def hook(module: nn.Module, inputs, output):
        if isinstance(module, nn.Linear) and module.out_features == num_classes and module.training:
            return _NaN.apply(output)
        return None

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
