"""MLflow adapter — the one package that calls MLflow: study runs, trial runs, the model registry.

Tracking: one experiment per study, a parent run per launch, one nested run per trial.

Modules, each one responsibility:

* :mod:`.names` — defaults (the tracking URI, the experiment name) and names of runs, tags and
  models; no MLflow import, so the study spec reads its defaults there;
* :mod:`.store` — the store's URI, an unreachable store, a fail-fast client;
* :mod:`.tracker` — :class:`StudyTracker`: the experiment, launches and their parent runs, plain
  run records; with the mixins of :mod:`.runs` (a trial run's primitives), :mod:`.artifacts`
  (a run's artifacts, what of a trial's checkpoint is logged) and :mod:`.registry` (the model
  registry, ``models:/`` / ``runs:/`` URIs);
* :mod:`.trial_runs` — :class:`TrialRunWriter`, the one writer of trial runs (the driver's Tune
  callback and ``ssad study sync``), with the one rule for a run already closed;
* :mod:`.views` — the runs table's saved trials view and its deep link;
* ``pyfunc_model.py`` — the model code MLflow itself loads (logged by path).

The names are loaded when first used (importing this package loads neither MLflow nor its
modules), so ``from ssad.study.tracking.names import DEFAULT_TRACKING_URI`` stays light.
Importing this package registers ``models:/`` and ``runs:/`` with :mod:`ssad.resolve`, so
``Detector.load("models:/…")`` works without the detector core importing the study layer.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ssad import resolve

# Where each public name lives (loaded on first use by __getattr__).
_EXPORTS = {
    "names": (
        "CHAMPION",
        "DEFAULT_TRACKING_URI",
        "EXPERIMENT_KIND_TRAINING",
        "TAG_CLASS",
        "TAG_EXPERIMENT_KIND",
        "TAG_LAUNCH",
        "TAG_ROLE",
        "TAG_STATUS",
        "TAG_STUDY",
        "TAG_TRIAL",
        "TAG_VARIANT",
        "default_experiment",
        "default_tracking_uri",
        "model_name",
    ),
    "store": (
        "TRACKING_ERRORS",
        "TrackingUnavailable",
        "_UNREACHABLE",
        "check_tracking_uri",
        "mark_reachable",
        "mark_unreachable",
        "reachable",
        "unreachable",
    ),
    "tracker": ("StudyTracker", "git_sha"),
    "registry": ("PYFUNC_CODE", "artifact_location", "download_detector"),
    "trial_runs": ("TrialRunWriter", "already_closed"),
    "views": (
        "RUNS_VIEW_KEY",
        "RUNS_VIEW_NAME",
        "TAG_SAVED_VIEW",
        "runs_table_url",
        "runs_view_state",
        "save_runs_view",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(n for n in _WHERE if not n.startswith("_"))


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


def _download_detector(uri: str) -> Path:
    from ssad.study.tracking.registry import download_detector

    return download_detector(uri)


resolve.register(("models:/", "runs:/"), _download_detector)
