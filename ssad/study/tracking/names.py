"""Names and defaults of the MLflow records: the store, the experiment, runs, tags, models.

Each default is defined here once. This module imports neither MLflow nor the study layer, so the
study spec can read its defaults from it (:data:`DEFAULT_TRACKING_URI`,
:func:`default_experiment`) without loading the adapter.
"""

from __future__ import annotations

import os

__all__ = [
    "CHAMPION",
    "DEFAULT_TRACKING_URI",
    "default_experiment",
    "default_tracking_uri",
    "model_name",
    "parent_run_name",
    "trial_run_name",
]

# The project's SQLite store, relative to the working directory (made absolute by
# :func:`ssad.study.tracking.store.check_tracking_uri`).
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
CHAMPION = "champion"  # the registry alias of a class's promoted detector

TAG_STUDY, TAG_ROLE, TAG_TRIAL, TAG_CLASS = "ssad.study", "ssad.role", "ssad.trial_id", "ssad.class"
TAG_STATUS, TAG_LAUNCH, TAG_VARIANT = "ssad.status", "ssad.launch_id", "ssad.variant"
# The experiment kind MLflow 3 keeps for its UI: classic model training, not GenAI (the UI's
# ExperimentKind.CUSTOM_MODEL_DEVELOPMENT; the other values: genai_development, finetuning, ...).
TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"


def default_tracking_uri() -> str:
    """The store when none is named: ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def default_experiment(study: str) -> str:
    """The MLflow experiment of a study whose spec names none: ``ssad-<study>``."""
    return f"ssad-{study}"


def model_name(class_name: str) -> str:
    """The registered model of a class: ``ssad-<class>``."""
    return f"ssad-{class_name}"


def parent_run_name(study: str, launch: str | None = None) -> str:
    """A launch's parent run: ``study-<study>-<launch>`` (started by ``--new``), or
    ``study-<study>`` (a study's first launch, started by its first run)."""
    return f"study-{study}-{launch}" if launch else f"study-{study}"


def trial_run_name(tags: dict[str, str], trial_id: str) -> str:
    """A trial's run: its ``ssad.trial_name`` tag, else ``<class>-<trial id>``."""
    return tags.get("ssad.trial_name") or f"{tags.get(TAG_CLASS, 'trial')}-{trial_id}"
