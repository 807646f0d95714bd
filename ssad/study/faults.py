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
``seeds_per_config - 1``). Driver rules stall the driver itself at a named point, so that a test
can SIGKILL it there (``tests/study/test_resume.py``)::

    stall:between    after a trial completed, before Tune asks the searcher for the next one
                     (a Tune callback, :class:`DriverStall`, added by the runner with this rule)
    stall:final      in the final logging: the dashboard logged, leaderboard and summary not yet

A stalled driver writes ``ssad-fault: driver stalls at STAGE`` to stderr, then sleeps
``STALL_SECONDS`` and goes on. Not for production use: nothing else reads the variable, and an
unset or empty variable injects nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from ray.tune import Callback
from torch import nn

__all__ = [
    "ENV",
    "STAGES",
    "DriverStall",
    "Fault",
    "InjectedFault",
    "for_trial",
    "nan_logits",
    "parse",
    "stall",
]

ENV = "SSAD_FAULT_INJECT"
STAGES = ("between", "final")  # where a driver rule (stall:STAGE) stalls the driver
STALL_SECONDS = 300.0


class InjectedFault(RuntimeError):
    """The error an injected ``raise`` fault raises."""


@dataclass(frozen=True)
class Fault:
    kind: str  # "raise" | "nan" (trial rules) | "stall" (driver rule: class_name is the stage)
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
            or kind not in ("raise", "nan", "stall")
            or (epoch and not epoch.isdigit())
            or (seed and not seed.isdigit())
            or (kind == "stall" and (cls not in STAGES or epoch or seed))
        ):
            raise ValueError(
                f"{ENV}: bad rule {rule!r} (raise[@EPOCH]:CLASS[/SEED] | nan:CLASS[/SEED] | "
                f"stall:{'|'.join(STAGES)})"
            )
        faults.append(Fault(kind, cls, int(seed) if seed else None, int(epoch or 0)))
    return tuple(faults)


def for_trial(faults: tuple[Fault, ...], trial_config: dict) -> Fault | None:
    """The first rule matching a trial config (``class_name``, ``seed``), or None."""
    for f in faults:
        if f.kind == "stall":
            continue
        if f.class_name == trial_config.get("class_name") and f.seed in (
            None,
            int(trial_config.get("seed", 0)),
        ):
            return f
    return None


def stall(stage: str, text: str | None) -> bool:
    """Stall the driver at ``stage`` when ``text`` has the rule ``stall:<stage>``.

    Writes the marker line to stderr first (a test waits for it, then SIGKILLs the driver).
    Returns whether it stalled.
    """
    if not any(f.kind == "stall" and f.class_name == stage for f in parse(text)):
        return False
    print(f"ssad-fault: driver stalls at {stage}", file=sys.stderr, flush=True)
    time.sleep(STALL_SECONDS)
    return True


class DriverStall(Callback):
    """Tune callback for ``stall:between``: stalls the driver at the end of the Tune step in
    which a trial completed, before the next step asks the searcher for another trial.

    Pickled into Tune's ``tuner.pkl`` with the other callbacks, so a resumed study has it too:
    it reads the rule from ``SSAD_FAULT_INJECT`` when Tune sets it up, never from the pickle
    (a resume without the variable does not stall again).
    """

    def __init__(self) -> None:
        self.text: str | None = None
        self.completed = False

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def setup(self, **info) -> None:
        self.text, self.completed = os.environ.get(ENV) or None, False

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.completed = True

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.completed:
            self.completed = False
            stall("between", self.text)


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
