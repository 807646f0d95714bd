"""Promotion: best per-class configuration → final training → test once → MLflow registry.

Per class: rank the study's configurations by their mean validation metric; optionally re-train
the top-k with N fresh seeds — seeds the study did not use, so a lucky study seed cannot win
again — and keep the best mean; train the winner with the spec's ``final`` overrides; evaluate it
once on the held-out test split; register it as ``ssad-<class>`` with alias ``champion``. All
trainings run as Ray tasks, and each class is registered as soon as its final model is done: a
failing class is reported (and the command fails) without discarding the others. A promotion key
(study, candidates, seeds, final config, data fingerprint) tags each version, so re-running
promote for an unchanged study adds no version.

Every training runs :func:`ssad.pipeline.train_class`, the path ``ssad train`` and trials take: a
promoted detector's threshold is the one rule of :mod:`ssad.calibration`.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ssad.config import Config
from ssad.export import export_for_registry
from ssad.study.candidates import (
    Candidate,
    candidates,
    promotion_key,
    recheck,
    reseed_offsets,
)
from ssad.study.results.leaderboard import trials_frame
from ssad.study.results.report import Progress, config_changes, short_number
from ssad.study.spec import SpecError, StudySpec
from ssad.study.tracking import (
    CHAMPION,
    TAG_CLASS,
    TAG_ROLE,
    TAG_STUDY,
    StudyTracker,
    git_sha,
    model_name,
)
from ssad.study.tune.trial import resolve_trial_config

__all__ = ["Candidate", "PromotionError", "promote", "recheck", "reseed_offsets"]

log = logging.getLogger(__name__)


class PromotionError(RuntimeError):
    """Some classes could not be promoted (the others were registered; see ``report``)."""

    def __init__(self, message: str, report: pd.DataFrame) -> None:
        super().__init__(message)
        self.report = report


def _train_task(config: dict[str, Any], final: bool) -> dict[str, Any]:
    """Ray task body: train one model; the final one comes back as files (it may run on any node)."""
    from ssad.pipeline import train_class

    cfg = Config.from_dict(config, source="promotion")
    with tempfile.TemporaryDirectory(prefix="ssad-promote-") as tmp:
        result = train_class(cfg, out_dir=tmp, evaluate_test=final, artifacts=final)
        files = {}
        if final:
            files = {
                str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()
            }
    return {"result": result, "files": files}


def _diff(config: Config, base: Config, keys: list[str]) -> dict[str, Any]:
    """Searched values that differ from the study's base config."""
    now = config.flat()
    out = config_changes({k: now[k] for k in keys}, base.flat())
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in out.items()}


def promote(
    spec: StudySpec,
    *,
    top_k: int = 1,
    seeds: int = 1,
    classes: list[str] | None = None,
    ray_address: str | None = None,
    out_root: str | Path = "promoted",
    models_root: str | Path = "runs/promoted",
    progress: Callable[[str, str], None] | None = None,
) -> pd.DataFrame:
    """Promote every (selected) class of a finished study; returns the promotion report.

    ``progress(class, message)`` hears of every stage as it happens (default: :class:`Progress`,
    one line each on stdout with the elapsed time).

    Raises:
        PromotionError: some classes failed; the others are registered and listed in its
            ``report`` (with an ``error`` column naming what failed).
    """
    from ssad.study.tune.runner import _init_ray, preflight

    progress = progress or Progress()
    if top_k < 1 or seeds < 1:
        raise SpecError("--top-k and --seeds must be >= 1")
    spec, prints = preflight(spec, files=False)  # a class whose files broke fails on its own
    classes = _check_classes(spec, classes)
    tracker = StudyTracker(spec.tracking_uri, spec.experiment, spec.name)
    df = trials_frame(tracker, spec)  # the newest launch's trials only
    if df.empty:
        raise SpecError(
            f"{spec.path}: no trials of study {spec.name!r} in {spec.tracking_uri}; run the study first"
        )
    parent_id = tracker.launch_parent_id()
    plan, rows = _plan(df, spec, classes, (top_k, seeds), prints, tracker, out_root, progress)
    reseeds = [] if seeds == 1 and top_k == 1 else reseed_offsets(spec, seeds)
    reseeds = [spec.base.train.seed + s for s in reseeds]
    if plan:
        _init_ray(ray_address or spec.ray_address, spec)
        trainings = _trainings(plan, spec, seeds=seeds, top_k=top_k, progress=progress)
        for cls, cand, cfg, out in trainings:
            try:
                if isinstance(out, BaseException):
                    raise out
                rows[cls] = _register(
                    cls,
                    cand,
                    cfg,
                    out,
                    plan[cls][1],
                    spec,
                    tracker,
                    parent_id,
                    out_root,
                    models_root,
                    reseeds,
                )
                progress(cls, f"registered version {rows[cls]['version']}")
            except Exception as exc:  # one class's failure must not discard the others
                cause = getattr(exc, "cause", None) or exc  # a Ray task error's own exception
                progress(cls, f"promotion failed: {type(cause).__name__}: {cause}")
                rows[cls] = {"class": cls, "model": "", "error": f"{type(cause).__name__}: {cause}"}
    report = pd.DataFrame([rows[c] for c in classes if c in rows])
    _log_report(report, tracker, parent_id)
    failed = [r["class"] for r in rows.values() if r.get("error")]
    if failed:
        raise PromotionError(
            f"{spec.path}: promotion failed for {failed} (the other classes are registered): "
            + "; ".join(f"{r['class']}: {r['error']}" for r in rows.values() if r.get("error")),
            report,
        )
    return report


def _check_classes(spec: StudySpec, classes: list[str] | None) -> list[str]:
    """The classes to promote: all of the study's, or those asked for (each one of them)."""
    classes = list(classes or spec.classes)
    unknown = set(classes) - set(spec.classes)
    if unknown:
        raise SpecError(
            f"{spec.path}: --classes {sorted(unknown)} not in the study's classes {list(spec.classes)}"
        )
    return classes


def _plan(
    df: pd.DataFrame,
    spec: StudySpec,
    classes: list[str],
    top_k_seeds: tuple[int, int],
    prints: dict[str, str],
    tracker: StudyTracker,
    out_root: str | Path,
    progress: Callable[[str, str], None],
) -> tuple[dict[str, tuple[list[Candidate], str]], dict[str, dict[str, Any]]]:
    """(classes to train: candidates and promotion key, report rows of unchanged classes).

    A class whose promotion key a registered version already carries is not trained again: that
    version becomes the champion."""
    top_k, seeds = top_k_seeds
    plan: dict[str, tuple[list[Candidate], str]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for cls in classes:
        cands = candidates(df, spec, cls, top_k)
        key = promotion_key(spec, cands, seeds, _final_config(spec, cls, cands[0]), prints[cls])
        existing = tracker.find_version(model_name(cls), key=key)  # registry errors propagate
        if existing is not None:
            progress(cls, f"unchanged since version {existing.version}; nothing to train")
            tracker.set_champion(model_name(cls), existing.version)
            rows[cls] = _row_from_version(cls, existing, spec, out_root)
            continue
        plan[cls] = (cands, key)
    return plan, rows


def _log_report(report: pd.DataFrame, tracker: StudyTracker, parent_id: str | None) -> None:
    """The promotion report as CSV and HTML artifacts of the study's launch run."""
    if parent_id is None or report.empty:
        return
    with tempfile.TemporaryDirectory() as tmp:
        report.to_csv(Path(tmp) / "promotion.csv", index=False)
        (Path(tmp) / "promotion.html").write_text(report.to_html(index=False))
        tracker.log_artifacts(parent_id, Path(tmp), artifact_path="promotion")


def _promotion_config(spec: StudySpec, cls: str, cand: Candidate, seed: int) -> Config:
    """A candidate's config for a promotion training: validated once, at its last epoch.

    A study's trial validates every epoch (ASHA's rungs); a re-seed is judged on its final model
    and the promoted model's threshold comes from its final validation, so validating (and, with a
    final bank, rebuilding the bank) at every epoch would only cost time.
    """
    cfg = resolve_trial_config(spec.base, {"class_name": cls, "seed": seed, "params": cand.params})
    return cfg.with_overrides({"train.val_every": 0}, source="promotion")


def _final_config(spec: StudySpec, cls: str, cand: Candidate) -> Config:
    over = spec.final.get("overrides", {})
    cfg = _promotion_config(spec, cls, cand, 0)
    return cfg.with_overrides(over, source=f"{spec.path}: final.overrides")


def _trainings(
    plan: dict[str, tuple[list[Candidate], str]],
    spec: StudySpec,
    *,
    seeds: int,
    top_k: int,
    progress: Callable[[str, str], None],
) -> Iterator[tuple[str, Candidate | None, Config | None, dict[str, Any] | BaseException]]:
    """Re-seed (when asked) and train each class's final model; yield each as it completes.

    Yields ``(class, chosen candidate, final config, task output or the exception it raised)``.
    A class's re-seed trainings use :func:`reseed_offsets`; the best mean wins, and its final
    training starts as soon as that class's re-seeds are done.
    """
    import ray

    task = ray.remote(num_cpus=spec.cpu, num_gpus=spec.gpu, max_retries=spec.max_failures)(
        _train_task
    )
    pending: dict[Any, tuple[str, Candidate, Config, bool]] = {}

    def submit(cls: str, cand: Candidate, cfg: Config, final: bool) -> None:
        pending[task.remote(cfg.to_dict(), final)] = (cls, cand, cfg, final)
        if final:
            progress(cls, f"final training of {cand.name or cand.config_id} started")

    # a re-trained candidate is judged on its final model's raw validation metric (a moving
    # average over epochs is what ASHA compares, not a property of the final model)
    metric = spec.metric.removeprefix("val_").removesuffix("_ema")
    scores: dict[str, dict[str, dict[int, float]]] = {}  # class → config → seed → value
    waiting: dict[str, int] = {}
    for cls, (cands, _) in plan.items():
        if seeds == 1 and top_k == 1:
            submit(cls, cands[0], _final_config(spec, cls, cands[0]), True)
            continue
        scores[cls] = {c.config_id: {} for c in cands}
        progress(cls, f"re-training {len(cands)} candidate(s) x {seeds} seed(s) started")
        for cand in cands:
            for s in reseed_offsets(spec, seeds):
                submit(cls, cand, _promotion_config(spec, cls, cand, s), False)
                waiting[cls] = waiting.get(cls, 0) + 1
    failed: set[str] = set()
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        cls, cand, cfg, final = pending.pop(ref)
        try:
            out = ray.get(ref)
        except Exception as exc:
            if cls not in failed:  # a failed re-seed fails its class once
                failed.add(cls)
                yield cls, cand, cfg, exc
            continue
        if final:
            value = out["result"].get("val", {}).get(metric, math.nan)
            progress(cls, f"final training finished: val {metric} {short_number(value)}")
            yield cls, cand, cfg, out
            continue
        scores[cls][cand.config_id][cfg.train.seed] = float(out["result"]["val"][metric])
        waiting[cls] -= 1
        if waiting[cls] == 0 and cls not in failed:
            best, text = recheck(plan[cls][0], scores[cls], mode=spec.mode)
            progress(cls, f"re-training finished: val {metric} {text}")
            submit(cls, best, _final_config(spec, cls, best), True)


def _register(
    cls: str,
    cand: Candidate,
    cfg: Config,
    out: dict[str, Any],
    key: str,
    spec: StudySpec,
    tracker: StudyTracker,
    parent_id: str | None,
    out_root: str | Path,
    models_root: str | Path,
    reseeds: list[int],
) -> dict[str, Any]:
    folder = Path(models_root) / spec.name / cls
    for rel, data in out["files"].items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    config_path = Path(out_root) / spec.name / f"{cls}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(config_path)
    result = out["result"]
    val, test = result["val"], result["test"]
    tags = {
        TAG_STUDY: spec.name,
        TAG_ROLE: "promotion",
        TAG_CLASS: cls,
        "ssad.trial_id": cand.trial_id,
        "ssad.git_sha": git_sha(),
        "ssad.seed": str(cfg.train.seed),
        "ssad.reseed_seeds": ",".join(map(str, reseeds)),
    }
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run_id = tracker.create_run(run_name=f"promote-{cls}", tags=tags)
    tracker.log_metrics(
        run_id,
        {f"{prefix}_{k}": v for prefix, m in (("val", val), ("test", test)) for k, v in m.items()}
        | {"threshold": result["threshold"]},
    )
    for sub in ("val", "test"):
        if (folder / sub).is_dir():
            tracker.log_artifacts(run_id, folder / sub, artifact_path=sub)
    tracker.log_artifacts(run_id, config_path)
    tracker.close(run_id)
    version_tags = {
        "ssad.study": spec.name,
        "ssad.trial_id": cand.trial_id,
        "ssad.promotion_key": key,
        "ssad.git_sha": git_sha(),
        f"val_{spec.metric.removeprefix('val_')}": f"{cand.value:.4f}",
        **{f"test_{k}": f"{test[k]:.4f}" for k in ("image_auroc", "pixel_auroc", "aupro")},
        "ssad.threshold": f"{result['threshold']:.6f}",
    }
    version_tags |= export_for_registry(folder)  # the ONNX graph travels with the version
    version = tracker.register_detector(
        run_id=run_id, folder=folder, class_name=cls, tags=version_tags
    )
    diff = _diff(cfg, spec.base, list(cand.params))
    return {
        "class": cls,
        f"study_{spec.metric}": cand.value,
        "test_image_auroc": test["image_auroc"],
        "test_pixel_auroc": test["pixel_auroc"],
        "test_aupro": test["aupro"],
        "threshold": result["threshold"],
        "model": f"models:/{model_name(cls)}@{CHAMPION}",
        "version": version,
        "config": str(config_path),
        "changed_from_base": json.dumps(diff, default=str),
        "recheck": cand.recheck,
    }


def _row_from_version(cls: str, version, spec: StudySpec, out_root: str | Path) -> dict[str, Any]:
    t = version.tags
    return {
        "class": cls,
        f"study_{spec.metric}": float(t.get(f"val_{spec.metric.removeprefix('val_')}", "nan")),
        "test_image_auroc": float(t.get("test_image_auroc", "nan")),
        "test_pixel_auroc": float(t.get("test_pixel_auroc", "nan")),
        "test_aupro": float(t.get("test_aupro", "nan")),
        "threshold": float(t.get("ssad.threshold", "nan")),
        "model": f"models:/{model_name(cls)}@{CHAMPION}",
        "version": version.version,
        "config": str(Path(out_root) / spec.name / f"{cls}.yaml"),
        "changed_from_base": "(unchanged; existing version)",
    }
