"""Every private detail of Ray Tune and Optuna that the study relies on, one small function each.

Nothing else in ssad touches a private attribute of either library. A Ray or Optuna upgrade that
changes one of these fails :mod:`tests.study.test_tune_internals` (which runs each function on
the installed libraries' real objects) with a message naming the attribute and the versions,
and a wrapper that meets a changed object here raises :class:`TuneInternalsError` the same way,
instead of a bare ``AttributeError`` deep in a Tune step.

What is relied on:

* ``OptunaSearch._ot_trials`` (Tune trial id → the Optuna trial it asked for):
  :func:`rename_pending`, so a repeated configuration can be told and asked again under the
  same Tune trial id (:meth:`ssad.study.tune.routing.ClassRoutedSearcher._suggest_new`);
* ``OptunaSearch._ot_study``, the Optuna study: :func:`optuna_study` (tests, diagnostics);
* ``AsyncHyperBandScheduler._brackets`` and each bracket's ``_rungs`` (milestone → {trial id:
  metric}), ``_trial_info`` (trial id → bracket): :func:`asha_rungs`, :func:`asha_trial_ids`;
* that Tune's searchers and ASHA pickle whole, state included: the routed searcher saves its
  attributes (OptunaSearch objects among them) with :func:`dump_state`, and the routed
  scheduler's per-class ASHA objects ride in Tune's callback snapshot
  (:class:`ssad.study.tune.routing.SchedulerState`);
* Tune's ordering: each step calls the callbacks' ``on_step_begin`` before it asks the searcher
  for new trials, and ``Tuner.restore`` loads the snapshot's trials before the first step. So at
  a driver session's first ``on_step_begin`` the trials Tune knows are exactly those of its
  snapshot (:func:`snapshot_trial_ids`): a run of the launch for any other trial id is one
  Tune lost (``StudyTracker.retire_lost``).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "TuneInternalsError",
    "asha_rungs",
    "asha_trial_ids",
    "dump_state",
    "load_state",
    "optuna_study",
    "rename_pending",
    "snapshot_trial_ids",
    "versions",
]


class TuneInternalsError(RuntimeError):
    """A private detail of Ray Tune or Optuna that ssad relies on is not there any more."""


def versions() -> str:
    """``ray X, optuna Y``: the installed versions, for messages."""
    import optuna
    import ray

    return f"ray {ray.__version__}, optuna {optuna.__version__}"


def _private(obj: Any, name: str, user: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise TuneInternalsError(
            f"ssad.study.tune.tune_internals.{user}: {type(obj).__name__}.{name} is gone "
            f"({versions()}); the private API ssad relies on changed: adapt "
            "ssad/study/tune/tune_internals.py (tests/study/test_tune_internals.py checks it)"
        ) from None


# ---- Optuna, through Tune's OptunaSearch ---------------------------------------------------------
def rename_pending(search: Any, old: str, new: str) -> None:
    """Move the Optuna trial that ``search.suggest(old)`` asked for under the id ``new``: it is
    then told through ``new``, and ``search.suggest(old)`` asks Optuna for another trial."""
    trials = _private(search, "_ot_trials", "rename_pending")
    trials[new] = trials.pop(old)


def optuna_study(search: Any) -> Any:
    """The ``optuna.Study`` behind an ``OptunaSearch``."""
    return _private(search, "_ot_study", "optuna_study")


# ---- ASHA ----------------------------------------------------------------------------------------
def asha_rungs(scheduler: Any) -> list[tuple[int, dict[str, float]]]:
    """[(milestone, {trial id: metric at that milestone})] of every bracket of an ASHA
    scheduler, in Tune's order; ``[]`` for any other scheduler."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    if not isinstance(scheduler, AsyncHyperBandScheduler):
        return []
    return [
        (int(milestone), dict(recorded))
        for bracket in _private(scheduler, "_brackets", "asha_rungs")
        for milestone, recorded in _private(bracket, "_rungs", "asha_rungs")
    ]


def asha_trial_ids(scheduler: Any) -> set[str]:
    """The trial ids an ASHA scheduler tracks (added, not yet completed or removed)."""
    return set(_private(scheduler, "_trial_info", "asha_trial_ids"))


# ---- state that pickles Tune's and Optuna's objects whole ----------------------------------------
def dump_state(path: str | Path, state: dict[str, Any]) -> None:
    """Pickle ``state``, which may hold Tune searchers and schedulers with their state."""
    with open(path, "wb") as f:
        pickle.dump(state, f)


def load_state(path: str | Path) -> dict[str, Any]:
    """The state :func:`dump_state` wrote (a file of this study's own Tune folder)."""
    with open(path, "rb") as f:
        return pickle.load(f)


# ---- Tune's ordering -----------------------------------------------------------------------------
def snapshot_trial_ids(trials: Iterable[Any]) -> set[str]:
    """At a driver session's first ``on_step_begin``: the ids of the trials of Tune's snapshot
    (every trial it restored; none started yet in this session). See the module's doc."""
    return {t.trial_id for t in trials}
