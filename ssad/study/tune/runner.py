"""Ray adapter: a study spec → one Tune experiment (per-class Optuna + ASHA) → MLflow → leaderboard.

All classes' trials run in one Tuner so the cluster stays full; routing by class keeps their
searches and early stopping apart (see :mod:`ssad.study.tune.routing`). The MLflow records are written
by a driver-side Tune callback, so many concurrent trials and worker nodes never write to the
tracking store themselves (no SQLite contention) and nothing is lost when a worker dies.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ssad.data.mvtec import DatasetError, check_files, fingerprint, load_class
from ssad.study.results.report import leading, trial_name
from ssad.study.spec import SpecError, StudySpec
from ssad.study.tracking import StudyTracker, check_tracking_uri
from ssad.study.tune.hooks import NO_HOOKS, StudyHooks
from ssad.study.tune.launch import Launch, open_launch
from ssad.study.tune.trial import load_state, resolve_trial_config, run_trial

__all__ = ["check_resources", "finish_study", "preflight", "run_study", "synthetic_root"]

log = logging.getLogger(__name__)


def synthetic_root(seed: int) -> Path:
    return Path("runs/data") / f"synthetic-v2-{seed}"  # v2: 60 good + 30 per defect test images


def preflight(spec: StudySpec, *, files: bool = True) -> tuple[StudySpec, dict[str, str]]:
    """Check data, tracking store and Ray address before anything launches.

    With ``files`` every image and mask header is read (:func:`ssad.data.mvtec.check_files`): a
    bad file fails here, naming it, not in a trial (promotion, after a study checked them, skips
    this and isolates a class whose files broke since). Returns the spec with an absolute data
    root and tracking URI, and the dataset fingerprints.
    """
    root = spec.data_root
    if root == "synthetic":
        from ssad.data.synthetic import generate

        path = synthetic_root(spec.synthetic_seed)
        if not (path / "ssad_classes.yaml").is_file():
            # generated aside and moved into place whole: an interrupted generation leaves no
            # half-written data set behind for the next launch to trip over
            log.info("generating the synthetic data set in %s", path)
            part = path.with_name(f"{path.name}.partial-{os.getpid()}")
            shutil.rmtree(part, ignore_errors=True)
            generate(part, seed=spec.synthetic_seed)
            shutil.rmtree(path, ignore_errors=True)  # an earlier interrupted, unindexed attempt
            os.replace(part, path)
        root = str(path.resolve())
    else:
        root = str(Path(root).expanduser().resolve())
    prints = {}
    for name in spec.classes:
        try:
            data = load_class(root, name)
            if files:
                check_files(data)
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


def check_resources(spec: StudySpec) -> None:
    """Refuse per-trial resources that no node of the connected Ray cluster has.

    Tune would otherwise keep such trials pending forever (e.g. ``gpu: 1`` on a CPU-only
    cluster). A trial runs on one node, so the largest node is what counts.
    """
    import ray

    need = {"CPU": spec.cpu, "GPU": spec.gpu}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for key, amount in need.items():
        most = max((float(n.get(key, 0.0)) for n in nodes), default=0.0)
        if amount > most:
            have = (
                ", ".join(f"cpu={n.get('CPU', 0):g} gpu={n.get('GPU', 0):g}" for n in nodes)
                or "no live node"
            )
            raise SpecError(
                f"{spec.path}: resources.{key.lower()}: a trial needs {amount:g} {key} but no node "
                f"of the Ray cluster has that many ({have}); Tune would wait forever. Lower "
                f"resources.{key.lower()} or connect to a cluster that has them (--ray-address)"
            )


def tune_trainable(
    trial_config: dict[str, Any],
    *,
    base: dict[str, Any],
    metric: str | None = None,
    hooks: StudyHooks = NO_HOOKS,
) -> None:
    """The Tune function trainable: resumes from Tune's checkpoint, reports every epoch.

    ``metric`` (the study's), ``epoch`` and ``phase`` lead each report: Tune's live table shows
    the first four numbers of a report. ``hooks``: the study's (:mod:`ssad.study.tune.hooks`).
    """
    from ray import tune

    config = resolve_trial_config(base, trial_config)
    hooks.trial_start(trial_config)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_state(folder)

    import ray

    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float], folder: Path) -> None:
        hooks.trial_report(trial_config, metrics)
        tune.report(
            {**leading(metrics, (metric, "epoch", "phase")), "node_id": node},
            checkpoint=tune.Checkpoint.from_directory(str(folder)),
        )

    try:
        with hooks.trial_running(trial_config):
            run_trial(config, report, resume=resume)
    finally:
        release_memory()


def release_memory() -> None:
    """Hand a finished trial's freed heap back to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    The study reuses Ray workers across trials (``reuse_actors``); each trial runs in a new thread
    whose malloc arena otherwise keeps its peak: measured here, a worker's RSS after 5 trials in a
    row 1.23 GiB without the trim, 0.91-0.94 GiB with it.
    """
    import contextlib
    import ctypes
    import ctypes.util

    # no glibc (musl, macOS): nothing to trim
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def run_study(
    spec: StudySpec,
    *,
    resume: bool = False,
    new: bool = False,
    ray_address: str | None = None,
    hooks: StudyHooks = NO_HOOKS,
) -> dict[str, Any]:
    """Run (or resume) the study; returns ``{"wall_s", "leaderboard", "experiment_id", ...}``.

    ``hooks``: called at fixed points of the driver and the trials (:mod:`ssad.study.tune.hooks`;
    the fault suite injects its faults through them).
    """
    from ray import tune

    spec, prints = preflight(spec)
    tracker = StudyTracker(spec.tracking_uri, spec.experiment, spec.name)
    # first launch / --resume / --new, decided before Ray starts: a re-launch never reuses an
    # old launch's parent run or mixes with its trial runs (--new moves the old Tune folder aside)
    launch = open_launch(spec, tracker, resume=resume, new=new)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    # Every epoch checkpoints (num_to_keep forces an experiment snapshot each time: that is what
    # makes a SIGKILLed driver resumable); silence Tune's warning about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    _init_ray(ray_address or spec.ray_address, spec)
    check_resources(spec)
    sources = {spec.path, Path(spec.space.source).resolve()}  # an ablation's space is its spec
    parent_id = launch.open_parent(tracker, params=_parent_params(spec), artifacts=sorted(sources))
    base = spec.base
    launch.write_record(spec, tracker, base=base.to_dict(), prints=prints)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, base=base.to_dict(), metric=spec.metric, hooks=hooks),
        {"cpu": spec.cpu, "gpu": spec.gpu},
    )
    tic = time.time()
    if launch.restorable:
        tuner = tune.Tuner.restore(str(launch.exp_dir), trainable=trainable, resume_errored=True)
    else:
        tuner = _new_tuner(spec, trainable, launch, hooks)
    results = tuner.fit()
    board, stats, table = finish_study(tracker, parent_id, spec, time.time() - tic, hooks=hooks)
    errors = sum(1 for r in results if r.error is not None)
    return {
        "leaderboard": board,
        "stats": stats,
        "errors": errors,
        "experiment_id": tracker.experiment_id,
        "parent_run_id": parent_id,
        "tracking_uri": spec.tracking_uri,
        "ablation": table,
    }


def _parent_params(spec: StudySpec) -> dict[str, Any]:
    """What the launch's parent run logs as params."""
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
    if spec.kind == "ablation":
        params.update(kind="ablation", baseline=spec.baseline, variants=",".join(spec.variants))
    return params


def _new_tuner(spec: StudySpec, trainable: Any, launch: Launch, hooks: StudyHooks) -> Any:
    """A new Tune experiment: the per-class searcher and scheduler, the driver's callbacks."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from ssad.study.tune.callbacks import MlflowTrials
    from ssad.study.tune.progress import class_progress
    from ssad.study.tune.routing import (
        ClassRoutedScheduler,
        ClassRoutedSearcher,
        SchedulerState,
        asha_factory,
    )

    # An ablation's trials validate at the end only (by default): no per-report metric for Tune
    # to require; its searcher hands out the variants and needs no results.
    tune_metric, tune_mode = (None, None) if spec.kind == "ablation" else (spec.metric, spec.mode)
    searcher = ClassRoutedSearcher(
        classes=list(spec.classes),
        space=spec.space,
        configs_per_class=spec.configs_per_class(),
        seeds_per_config=spec.seeds_per_config,
        kind=spec.searcher,
        seed=spec.searcher_seed,
        metric=tune_metric,
        mode=tune_mode,
        variants=spec.variants,
    )
    callbacks = [MlflowTrials(launch.exp_dir)]
    if spec.scheduler == "asha":
        make = asha_factory(
            max_t=spec.max_epochs,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
        )
        scheduler = ClassRoutedScheduler(make, metric=spec.metric, mode=spec.mode)
        callbacks.append(SchedulerState(scheduler))
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.total_trials(),
            max_concurrent_trials=spec.max_concurrent,
            metric=tune_metric,
            mode=tune_mode,
            trial_name_creator=trial_name,  # brick-0007: class and number within it
            trial_dirname_creator=trial_name,
            # a Ray worker runs trial after trial: its imports (torch, torchvision, ...) cost
            # ~13 s per trial otherwise (docs/measurements-scratch.md, P4); trials share one resource request
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(spec.storage_path),
            # per-class console lines (ssad.study.tune.progress) instead of Tune's table
            callbacks=[*callbacks, class_progress(spec), *hooks.driver_callbacks()],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Two, not one: Tune deletes the older checkpoint before its (asynchronous)
            # experiment snapshot lands; with one kept, a driver killed in between leaves a
            # snapshot pointing at a deleted checkpoint and --resume fails.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )


def finish_study(
    tracker: StudyTracker,
    parent_id: str,
    spec: StudySpec,
    wall: float,
    *,
    have: frozenset[str] | set[str] = frozenset(),
    hooks: StudyHooks = NO_HOOKS,
) -> tuple[Any, dict[str, Any], Any]:
    """The end-of-study records on the launch's parent run: an ablation's table, the dashboard,
    the leaderboard and the summary (then the run is closed). ``have``: the parent's artifact
    paths already there (``ssad study sync``), not logged again.

    Returns:
        (leaderboard, summary stats, ablation table or None)
    """
    from ssad.study.dashboard import dashboard_for, log_dashboard
    from ssad.study.results.leaderboard import leaderboard, summary_artifacts

    board, stats = leaderboard(tracker, spec)
    stats["wall_s"] = wall
    stats["parallel_efficiency"] = (
        stats["trial_seconds"] / (wall * spec.max_concurrent) if wall > 0 else 0.0
    )
    table = None
    if spec.kind == "ablation":
        from ssad.study.results.ablation import log_results, results_table

        table = results_table(tracker, spec)
        if "ablation/ablation.csv" not in have:
            log_results(tracker, parent_id, table, spec)
    if not any(p.startswith("dashboards/") and p.endswith(".html") for p in have):
        try:
            log_dashboard(tracker, parent_id, dashboard_for(spec), spec)
        except (ValueError, OSError) as exc:  # a broken dashboard must not fail a finished study
            log.warning("dashboard not rendered: %s", exc)
    hooks.driver_stage("final")
    summary_artifacts(tracker, parent_id, board, stats)
    return board, stats, table
