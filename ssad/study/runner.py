"""Ray adapter: a study spec → one Tune experiment (per-class Optuna + ASHA) → MLflow → leaderboard.

All classes' trials run in one Tuner so the cluster stays full; routing by class keeps their
searches and early stopping apart (see :mod:`ssad.study.routing`). The MLflow records are written
by a driver-side Tune callback, so many concurrent trials and worker nodes never write to the
tracking store themselves (no SQLite contention) and nothing is lost when a worker dies.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ssad.config import Config
from ssad.data.mvtec import DatasetError, fingerprint, load_class
from ssad.study.spec import SpecError, StudySpec
from ssad.study.tracking import (
    TAG_CLASS,
    TAG_STATUS,
    StudyTracker,
    check_tracking_uri,
    git_sha,
)
from ssad.study.trial import load_state, resolve_trial_config, run_trial

__all__ = ["preflight", "run_study", "synthetic_root"]

log = logging.getLogger(__name__)


def synthetic_root(seed: int) -> Path:
    return Path("runs/data") / f"synthetic-{seed}"


def preflight(spec: StudySpec) -> tuple[StudySpec, dict[str, str]]:
    """Check data, tracking store and Ray address before anything launches.

    Returns the spec with an absolute data root and tracking URI, and the dataset fingerprints.
    """
    root = spec.data_root
    if root == "synthetic":
        from ssad.data.synthetic import generate

        path = synthetic_root(spec.synthetic_seed)
        if not (path / "ssad_classes.yaml").is_file():
            log.info("generating the synthetic data set in %s", path)
            generate(path, seed=spec.synthetic_seed)
        root = str(path.resolve())
    else:
        root = str(Path(root).expanduser().resolve())
    prints = {}
    for name in spec.classes:
        try:
            data = load_class(root, name)
        except DatasetError as exc:
            raise SpecError(f"{spec.path}: classes/data.root: {exc}") from None
        prints[name] = fingerprint(data)
    try:
        uri = check_tracking_uri(spec.tracking_uri)
    except (ValueError, ConnectionError) as exc:
        raise SpecError(f"{spec.path}: {exc}") from None
    from dataclasses import replace

    base = spec.base.with_overrides({"data.root": root})
    return replace(spec, base=base, data_root=root, tracking_uri=uri), prints


def _init_ray(address: str | None, spec: StudySpec) -> None:
    import ray

    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SpecError(
            f"{spec.path}: ray_address {address!r}: cannot connect to Ray ({exc})"
        ) from None


def tune_trainable(trial_config: dict[str, Any], *, base: dict[str, Any]) -> None:
    """The Tune function trainable: resumes from Tune's checkpoint, reports every epoch."""
    from ray import tune

    config = resolve_trial_config(base, trial_config)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_state(folder)

    import ray

    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float], folder: Path) -> None:
        tune.report(
            {**metrics, "node_id": node}, checkpoint=tune.Checkpoint.from_directory(str(folder))
        )

    run_trial(config, report, resume=resume)


_LOGGED = {
    "loss",
    "accuracy",
    "lr",
    "seconds",
    "bank_size",
    "phase",
    "training_iteration",
    "time_total_s",
}


def _make_callback(
    tracker: StudyTracker, parent_id: str, base: Config, prints: dict[str, str], max_t: int
):
    from ray.tune import Callback

    class MlflowTrials(Callback):
        """Driver-side: nested MLflow run per trial, per-epoch metrics, artifacts at the end."""

        def __init__(self) -> None:
            self.tracker, self.parent_id, self.base, self.prints = (
                tracker,
                parent_id,
                base.to_dict(),
                prints,
            )
            self.sha = git_sha()
            self.runs: dict[str, str] = {}
            self.nodes: dict[str, str] = {}
            self.reported: set[str] = set()  # trials with a result in this driver session

        def _run(self, trial) -> str:
            if trial.trial_id not in self.runs:
                cfg = resolve_trial_config(self.base, trial.config)
                tc = trial.config
                tags = {
                    TAG_CLASS: tc["class_name"],
                    "ssad.seed": str(cfg.train.seed),
                    "ssad.config_id": tc["config_id"],
                    "ssad.git_sha": self.sha,
                    "ssad.dataset_fingerprint": self.prints.get(tc["class_name"], ""),
                    "ssad.searched": ",".join(sorted(tc["params"])),
                    "ssad.params": json.dumps(tc["params"], sort_keys=True),
                }
                self.runs[trial.trial_id] = self.tracker.trial_run(
                    parent_id=self.parent_id,
                    trial_id=trial.trial_id,
                    params=cfg.flat(),
                    tags=tags,
                )
            return self.runs[trial.trial_id]

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self._run(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            run_id = self._run(trial)
            self.reported.add(trial.trial_id)
            metrics = {k: v for k, v in result.items() if k in _LOGGED or k.startswith("val_")}
            self.tracker.log_step(run_id, metrics, int(result["training_iteration"]))
            if "node_id" in result and self.nodes.get(trial.trial_id) != result["node_id"]:
                self.nodes[trial.trial_id] = result["node_id"]
                self.tracker.client.set_tag(run_id, "ssad.node_id", result["node_id"])

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            done = int((trial.last_result or {}).get("training_iteration", 0))
            status = "finished" if done >= max_t else "stopped"
            self._finish(trial, status)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._finish(trial, "failed")

        def _finish(self, trial, status: str) -> None:
            run_id = self._run(trial)
            if trial.trial_id not in self.reported:
                # Killed after the trial ended but before Tune's next snapshot, the driver's
                # restart re-runs it from its final checkpoint with nothing new: keep the record
                # (closing it again would move its end time past the downtime).
                closed = self.tracker.client.get_run(run_id).data.tags.get(TAG_STATUS)
                if closed in ("finished", "stopped"):
                    return
            ckpt = trial.checkpoint
            if ckpt is None:
                self.tracker.finish(run_id, status=status)
                return
            with tempfile.TemporaryDirectory(prefix="ssad-art-") as tmp:
                folder = Path(ckpt.to_directory(tmp))
                (folder / "state.pt").unlink(missing_ok=True)  # training state: Tune keeps it
                det = folder / "detector"
                if det.is_dir():  # the finished model stays in Tune's storage, not in MLflow
                    for f in ("model.pt", "bank.npy"):
                        (det / f).unlink(missing_ok=True)
                self.tracker.finish(
                    run_id,
                    status=status,
                    artifacts=folder,
                    tags={"ssad.checkpoint": str(ckpt.path)},
                )

    return MlflowTrials()


def _trial_name(trial) -> str:
    return f"{trial.config.get('class_name', 'trial')}-{trial.trial_id}"


def run_study(
    spec: StudySpec,
    *,
    resume: bool = False,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study; returns ``{"wall_s", "leaderboard", "experiment_id", ...}``."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from ssad.study.dashboard import DEFAULT_DASHBOARD, log_dashboard
    from ssad.study.leaderboard import leaderboard, summary_artifacts
    from ssad.study.routing import ClassRoutedScheduler, ClassRoutedSearcher, asha_factory

    spec, prints = preflight(spec)
    exp_dir = spec.storage_path / spec.name
    restorable = exp_dir.exists() and tune.Tuner.can_restore(str(exp_dir))
    if exp_dir.exists() and not resume:
        raise SpecError(
            f"{spec.path}: a study named {spec.name!r} already exists in {exp_dir}; "
            "pass --resume to continue it, or remove that folder to start over"
        )
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    # Every epoch checkpoints (num_to_keep forces an experiment snapshot each time: that is what
    # makes a SIGKILLed driver resumable); silence Tune's warning about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    _init_ray(ray_address or spec.ray_address, spec)
    tracker = StudyTracker(spec.tracking_uri, spec.experiment, spec.name)
    params = {
        "classes": ",".join(spec.classes),
        "searcher": spec.searcher,
        "scheduler": spec.scheduler,
        "metric": spec.metric,
        "mode": spec.mode,
        "num_samples": spec.num_samples,
        "seeds_per_config": spec.seeds_per_config,
        "resources": f"cpu={spec.cpu},gpu={spec.gpu}",
        "max_concurrent": spec.max_concurrent,
        "space": Path(spec.space.source).name,
    }
    parent_id = tracker.parent_run(params=params, artifacts=[spec.path, Path(spec.space.source)])
    base = spec.base
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, base=base.to_dict()),
        {"cpu": spec.cpu, "gpu": spec.gpu},
    )
    tic = time.time()
    if restorable:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=True)
    else:
        searcher = ClassRoutedSearcher(
            classes=list(spec.classes),
            space=spec.space,
            configs_per_class=spec.configs_per_class(),
            seeds_per_config=spec.seeds_per_config,
            kind=spec.searcher,
            seed=spec.searcher_seed,
            metric=spec.metric,
            mode=spec.mode,
        )
        if spec.scheduler == "asha":
            make = asha_factory(
                max_t=spec.max_epochs,
                grace_period=spec.grace_period,
                reduction_factor=spec.reduction_factor,
            )
            scheduler = ClassRoutedScheduler(make, metric=spec.metric, mode=spec.mode)
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=spec.total_trials(),
                max_concurrent_trials=spec.max_concurrent,
                metric=spec.metric,
                mode=spec.mode,
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=str(spec.storage_path),
                callbacks=[_make_callback(tracker, parent_id, base, prints, spec.max_epochs)],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                # Two, not one: Tune deletes the older checkpoint before its (asynchronous)
                # experiment snapshot lands; with one kept, a driver killed in between leaves a
                # snapshot pointing at a deleted checkpoint and --resume fails.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=1,
            ),
        )
    results = tuner.fit()
    wall = time.time() - tic
    board, stats = leaderboard(tracker, spec)
    stats["wall_s"] = wall
    stats["parallel_efficiency"] = (
        stats["trial_seconds"] / (wall * spec.max_concurrent) if wall else 0.0
    )
    try:
        log_dashboard(tracker, parent_id, DEFAULT_DASHBOARD, spec)
    except (ValueError, OSError) as exc:  # a broken dashboard must not fail a finished study
        log.warning("dashboard not rendered: %s", exc)
    summary_artifacts(tracker, parent_id, board, stats)
    errors = sum(1 for r in results if r.error is not None)
    return {
        "leaderboard": board,
        "stats": stats,
        "errors": errors,
        "experiment_id": tracker.experiment_id,
        "parent_run_id": parent_id,
        "tracking_uri": spec.tracking_uri,
    }
