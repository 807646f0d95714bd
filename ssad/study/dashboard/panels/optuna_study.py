"""One class's trial runs as an in-memory Optuna study, and its fANOVA parameter importances."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import matplotlib

from ssad.study.dashboard.data import DashboardData, number
from ssad.study.dashboard.panels.common import class_trials, final
from ssad.study.spec import SearchSpace

if TYPE_CHECKING:
    import optuna

__all__ = ["class_study", "param_importances", "quiet_optuna"]


def class_study(
    data: DashboardData, cls: str, *, metric: str | None = None, include_stopped: bool = False
) -> optuna.Study:
    """An in-memory Optuna study of one class's trials, in start order, valued by final ``metric``.

    Finished trials (and stopped ones with ``include_stopped``, at their last reported value);
    distributions from ``data.space``. MLflow params are strings: each is turned back into its
    distribution's type (categorical: the choice whose text it is; list choices as text). A trial
    with no final value or a value outside its distribution (another search space) is left out.
    """
    import optuna

    metric = metric or data.metric
    keep = ("finished", "stopped") if include_stopped else ("finished",)
    trials = class_trials(data, cls)
    trials = trials[trials["status"].isin(keep)]
    values = final(data, metric)
    dists = _distributions(data.space) if data.space is not None else {}
    direction = "maximize" if data.mode == "max" else "minimize"
    with quiet_optuna():
        study = optuna.create_study(direction=direction, study_name=f"{data.study}/{cls}")
        for run_id, config in zip(trials["run_id"], trials["config"]):
            value = values.get(run_id, math.nan)
            if not math.isfinite(value):
                continue
            try:
                params = {
                    k: _param_value(v, dists[k])
                    for k, v in (config or {}).items()
                    if k in dists and v is not None
                }
                frozen = optuna.trial.create_trial(
                    params=params,
                    distributions={k: dists[k] for k in params},
                    value=float(value),
                    user_attrs={"run_id": run_id},
                )
            except ValueError:  # not in this space's distributions
                continue
            study.add_trial(frozen)
    return study


def param_importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances (seed 0) of the study's params, most important first.

    Raises:
        ValueError: fewer than 2 trials, or neither the values nor any param vary.
    """
    import optuna

    trials = study.trials
    keys = {k for t in trials for k in t.params}
    varying = [k for k in keys if len({t.params.get(k) for t in trials}) > 1]
    if len(trials) < 2 or len({t.value for t in trials}) < 2 or not varying:
        raise ValueError(
            f"fANOVA needs 2 or more trials whose values and params vary (have {len(trials)})"
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with quiet_optuna():
            return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"fANOVA: {exc}") from None


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's info logs and its plots' warnings off; their ggplot style kept local."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # matplotlib's, e.g. on a param with one value (singular limits) or no legend entries
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _distributions(space: SearchSpace) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for d in space.dims:
        if d.kind == "categorical":
            out[d.key] = CategoricalDistribution(tuple(_choice(c) for c in d.choices))
        elif d.kind == "int":
            out[d.key] = IntDistribution(int(d.low), int(d.high))
        else:
            out[d.key] = FloatDistribution(d.low, d.high, log=d.kind == "logfloat")
    return out


def _choice(value: Any) -> Any:
    """A categorical choice as Optuna takes it: a tuple (a list in YAML) as its MLflow text."""
    return str(list(value)) if isinstance(value, (tuple, list)) else value


def _param_value(text: Any, dist: Any) -> Any:
    """An MLflow param (a string) as a value of ``dist``; ValueError when it isn't one."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        for c in dist.choices:
            if str(c) == str(text):
                return c
        as_number = number(text)
        for c in dist.choices:  # "24.0" for the choice 24
            if isinstance(as_number, float) and isinstance(c, (int, float)) and c == as_number:
                return c
        raise ValueError(f"{text!r} is not one of {dist.choices}")
    value = float(text)
    if isinstance(dist, IntDistribution):
        if value != int(value):
            raise ValueError(f"{text!r} is not an integer")
        value = int(value)
    if not dist.low <= value <= dist.high:
        raise ValueError(f"{text!r} is outside [{dist.low}, {dist.high}]")
    return value
