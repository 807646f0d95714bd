"""A study's console progress: one short line per trial report, with the best so far per class.

Tune's own reporter prints a table of every trial with its parameters and one "current best
trial" across all classes (one class's best hides the others'). :class:`ClassProgress` replaces
it (the runner sets Tune's ``verbose=0``): each line names the class, the trial, the epoch, the
study's metric and the best value that class has reached so far; no parameters::

    [   41.2s] brick   brick-0003  epoch 2/3  val_image_auroc_ema 0.9312  best 0.9401 (brick-0001)
    [   55.0s] brick   brick-0003  ended after 3/3 epochs (trial 3/8 of brick done)
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

from ssad.study.results.report import fit_line, short_number, trial_name

__all__ = ["ClassProgress", "class_progress"]


def class_progress(spec: Any) -> ClassProgress:
    """The progress callback for a study spec (:class:`ssad.study.spec.StudySpec`)."""
    return ClassProgress(
        spec.metric,
        spec.mode,
        trials_per_class=spec.trials_per_class(),
        max_epochs=spec.max_epochs,
    )


class ClassProgress(Callback):
    """Per-class progress lines for a study's Tune run (a Tune callback; picklable)."""

    def __init__(
        self,
        metric: str,
        mode: str,
        *,
        trials_per_class: int,
        max_epochs: int,
        out: TextIO | None = None,
    ) -> None:
        self.metric, self.mode = metric, mode
        self.trials_per_class, self.max_epochs = trials_per_class, max_epochs
        self.out = out
        self.start = time.monotonic()
        self.best: dict[str, tuple[float, str]] = {}  # class → (value, trial name)
        self.done: dict[str, int] = {}  # class → trials ended

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "out": None}  # Tune pickles its callbacks with the experiment

    def setup(self, **info: Any) -> None:
        self.start = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        cls = _class_of(trial)
        value = result.get(self.metric)
        epoch = result.get("epoch", result.get("training_iteration", "?"))
        text = f"epoch {epoch}/{self.max_epochs}"
        if _number(value):
            self._update_best(cls, float(value), trial_name(trial))
            text += f"  {self.metric} {short_number(float(value))}"
        best = self.best.get(cls)
        if best is not None:
            text += f"  best {short_number(best[0])} ({best[1]})"
        self._print(cls, trial, text)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._ended(trial, "ended")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._ended(trial, "failed")

    def _ended(self, trial: Any, how: str) -> None:
        cls = _class_of(trial)
        self.done[cls] = self.done.get(cls, 0) + 1
        epochs = (getattr(trial, "last_result", None) or {}).get("training_iteration", 0)
        self._print(
            cls,
            trial,
            f"{how} after {epochs}/{self.max_epochs} epochs (trial {self.done[cls]}/"
            f"{self.trials_per_class} of {cls} done)",
        )

    def _update_best(self, cls: str, value: float, name: str) -> None:
        best = self.best.get(cls)
        if best is None or (value > best[0] if self.mode == "max" else value < best[0]):
            self.best[cls] = (value, name)

    def _print(self, cls: str, trial: Any, text: str) -> None:
        elapsed = time.monotonic() - self.start
        line = f"[{elapsed:8.1f}s] {cls:<10} {trial_name(trial):<14} {text}"
        print(fit_line(line), file=self.out or sys.stdout, flush=True)


def _class_of(trial: Any) -> str:
    return str((getattr(trial, "config", None) or {}).get("class_name", "?"))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
