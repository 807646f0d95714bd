"""Extension points of a study run: ``run_study(spec, hooks=...)``; the default does nothing.

The runner calls every hook unconditionally at fixed points of the driver and of each trial;
it never looks for faults itself. The fault suite passes :class:`ssad.study.tune.faults.FaultHooks`
(trials that raise or diverge, a driver that stalls so that a test can SIGKILL it there).

A hooks object must pickle: Tune ships it to every trial (``tune.with_parameters``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["NO_HOOKS", "StudyHooks"]


class StudyHooks:
    """No-op hooks; subclass and override what you need."""

    # ---- the driver ------------------------------------------------------------------------
    def driver_callbacks(self) -> list[Any]:
        """Extra Tune callbacks for a new Tune experiment.

        A restored experiment keeps the callbacks pickled at its first launch (Tune restores
        them from ``tuner.pkl``); these are not added to it.
        """
        return []

    def driver_stage(self, stage: str) -> None:
        """The driver reached ``stage``: ``"final"``, in the end-of-study logging (the dashboard
        logged, the leaderboard and summary not yet)."""

    # ---- a trial, in its Ray worker ----------------------------------------------------------
    def trial_start(self, trial_config: dict[str, Any]) -> None:
        """Before the trial loads its checkpoint and trains."""

    def trial_report(self, trial_config: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Before each epoch's report to Tune."""

    @contextlib.contextmanager
    def trial_running(self, trial_config: dict[str, Any]) -> Iterator[None]:
        """Around the trial's training."""
        yield


NO_HOOKS = StudyHooks()
