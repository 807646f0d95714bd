"""Test-only fault injection for studies (the fault suite in ``tests/study/test_faults.py``).

A test passes ``FaultHooks(RULES)`` to ``run_study(spec, hooks=...)`` (see
:mod:`ssad.study.tune.hooks`); a test that must kill the driver runs it as a process:
``python -m ssad.study.tune.faults RULES SPEC [--resume | --new]``. Nothing in the production path
reads the rules. Comma-separated rules::

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
                     (a Tune callback, :class:`DriverStall`, added to a new Tune experiment;
                     a resume restores the first launch's callbacks, inert there)
    stall:final      in the final logging: the dashboard logged, leaderboard and summary not yet

A stalled driver writes ``ssad-fault: driver stalls at STAGE`` to stderr, then sleeps
``STALL_SECONDS`` and goes on.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from ray.tune import Callback
from torch import nn

from ssad.study.tune.hooks import StudyHooks

__all__ = [
    "STAGES",
    "DriverStall",
    "Fault",
    "FaultHooks",
    "InjectedFault",
    "for_trial",
    "main",
    "nan_logits",
    "parse",
    "stall",
]

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
    """Parse fault rules; a malformed rule raises ValueError naming it."""
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
                f"fault rules: bad rule {rule!r} (raise[@EPOCH]:CLASS[/SEED] | nan:CLASS[/SEED] | "
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

    Pickled into Tune's ``tuner.pkl`` with the other callbacks, without its rules: the copy a
    resumed study restores never stalls (the rules apply to the launch that passed them).
    """

    def __init__(self, text: str | None = None) -> None:
        self.text = text
        self.completed = False

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def setup(self, **info) -> None:
        self.completed = False

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


class FaultHooks(StudyHooks):
    """Study hooks that inject the faults of ``text`` (the rules above; parsed here, so a
    malformed rule fails before anything launches)."""

    def __init__(self, text: str | None) -> None:
        self.text = text or None
        self.rules = parse(text)

    def driver_callbacks(self) -> list[Any]:
        return [DriverStall(self.text)] if any(f.kind == "stall" for f in self.rules) else []

    def driver_stage(self, stage: str) -> None:
        stall(stage, self.text)

    def trial_start(self, trial_config: dict[str, Any]) -> None:
        rule = for_trial(self.rules, trial_config)
        if rule is not None and rule.kind == "raise" and rule.epoch == 0:
            raise InjectedFault(f"injected fault: trial raises before training ({rule})")

    def trial_report(self, trial_config: dict[str, Any], metrics: dict[str, Any]) -> None:
        rule = for_trial(self.rules, trial_config)
        if rule is not None and rule.kind == "raise" and metrics.get("epoch") == rule.epoch:
            raise InjectedFault(f"injected fault: trial raises at epoch {rule.epoch}")

    @contextlib.contextmanager
    def trial_running(self, trial_config: dict[str, Any]) -> Iterator[None]:
        rule = for_trial(self.rules, trial_config)
        if rule is not None and rule.kind == "nan":
            with nan_logits():
                yield
        else:
            yield


def main(argv: list[str] | None = None) -> int:
    """``python -m ssad.study.tune.faults RULES SPEC [--resume | --new]``: ``ssad study run`` with
    the faults of RULES injected (a driver a test can SIGKILL at a stall)."""
    import argparse
    import logging

    from ssad.study.spec import load_spec
    from ssad.study.tune.runner import run_study

    parser = argparse.ArgumentParser(prog="python -m ssad.study.tune.faults")
    parser.add_argument("rules")
    parser.add_argument("spec")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--new", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hooks = FaultHooks(args.rules)
    out = run_study(load_spec(args.spec), resume=args.resume, new=args.new, hooks=hooks)
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    # the module's own classes, not __main__'s: Tune pickles DriverStall into tuner.pkl, and a
    # later `ssad study run --resume` must unpickle it
    from ssad.study.tune.faults import main as _main

    sys.exit(_main())
