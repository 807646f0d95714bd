"""Promotion: best per-class configuration → final training → test once → MLflow registry.

Per class: rank the study's configurations by their mean validation metric; optionally re-train
the top-k with N seeds and keep the best mean (robust to a lucky seed); train the winner with the
spec's ``final`` overrides; evaluate it once on the held-out test split; register it as
``ssad-<class>`` with alias ``champion``. Trainings of all classes run in parallel as Ray tasks.
A promotion key (study, candidates, seeds, final config, data fingerprint) tags each version, so
re-running promote for an unchanged study adds no version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ssad.config import Config
from ssad.study.leaderboard import trials_frame
from ssad.study.registry import CHAMPION, log_detector, model_name
from ssad.study.spec import SpecError, StudySpec
from ssad.study.tracking import TAG_CLASS, TAG_ROLE, TAG_STUDY, StudyTracker, git_sha
from ssad.study.trial import resolve_trial_config

__all__ = ["Candidate", "promote"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    class_name: str
    config_id: str
    trial_id: str
    value: float  # mean validation metric over the study's seeds
    params: dict[str, Any]


def candidates(df: pd.DataFrame, spec: StudySpec, cls: str, top_k: int) -> list[Candidate]:
    """The class's top-k configurations by mean validation metric (finished or stopped trials)."""
    sub = df[(df["class"] == cls) & df[spec.metric].notna()]
    if sub.empty:
        raise SpecError(
            f"{spec.path}: class {cls}: the study has no trial with {spec.metric} to promote"
        )
    means = sub.groupby("config_id")[spec.metric].mean()
    means = means.sort_values(ascending=spec.mode == "min")
    out = []
    for cid, value in means.head(top_k).items():
        row = sub[sub["config_id"] == cid].iloc[0]
        out.append(
            Candidate(cls, str(cid), str(row["trial_id"]), float(value), json.loads(row["params"]))
        )
    return out


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


def _run_tasks(jobs: list[tuple[Config, bool]], spec: StudySpec) -> list[dict[str, Any]]:
    import ray

    task = ray.remote(num_cpus=spec.cpu, num_gpus=spec.gpu, max_retries=spec.max_failures)(
        _train_task
    )
    refs = [task.remote(cfg.to_dict(), final) for cfg, final in jobs]
    return ray.get(refs)


def promotion_key(
    spec: StudySpec, cands: list[Candidate], seeds: int, final: Config, fingerprint: str
) -> str:
    payload = json.dumps(
        {
            "study": spec.name,
            "candidates": [(c.config_id, c.params) for c in cands],
            "seeds": seeds,
            "final": final.to_dict(),
            "data": fingerprint,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _existing_version(client, name: str, key: str):
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # registered model does not exist yet
        return None
    for v in versions:
        if v.tags.get("ssad.promotion_key") == key:
            return v
    return None


def _diff(config: Config, keys: list[str]) -> dict[str, Any]:
    """Searched values that differ from the seed's defaults (``Config()``)."""
    ref, now = Config().flat(), config.flat()
    out = {k: now[k] for k in sorted(keys) if ref.get(k) != now.get(k)}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def promote(
    spec: StudySpec,
    *,
    top_k: int = 1,
    seeds: int = 1,
    classes: list[str] | None = None,
    ray_address: str | None = None,
    out_root: str | Path = "promoted",
    models_root: str | Path = "runs/promoted",
) -> pd.DataFrame:
    """Promote every (selected) class of a finished study; returns the promotion report."""
    from ssad.study.runner import _init_ray, preflight

    if top_k < 1 or seeds < 1:
        raise SpecError("--top-k and --seeds must be >= 1")
    spec, prints = preflight(spec)
    classes = list(classes or spec.classes)
    unknown = set(classes) - set(spec.classes)
    if unknown:
        raise SpecError(
            f"{spec.path}: --classes {sorted(unknown)} not in the study's classes {list(spec.classes)}"
        )
    tracker = StudyTracker(spec.tracking_uri, spec.experiment, spec.name)
    df = trials_frame(tracker, spec)
    if df.empty:
        raise SpecError(
            f"{spec.path}: no trials of study {spec.name!r} in {spec.tracking_uri}; run the study first"
        )
    client = tracker.client
    parent_id = tracker.launch_parent_id()  # trials_frame read this launch's trials only
    final_over = spec.final.get("overrides", {})
    plan: dict[str, tuple[list[Candidate], str]] = {}
    rows: list[dict[str, Any]] = []
    for cls in classes:
        cands = candidates(df, spec, cls, top_k)
        final_cfg = resolve_trial_config(
            spec.base, {"class_name": cls, "seed": 0, "params": cands[0].params}
        )
        final_cfg = final_cfg.with_overrides(final_over, source=f"{spec.path}: final.overrides")
        key = promotion_key(spec, cands, seeds, final_cfg, prints[cls])
        existing = _existing_version(client, model_name(cls), key)
        if existing is not None:
            log.info("%s: unchanged since version %s; nothing to promote", cls, existing.version)
            client.set_registered_model_alias(model_name(cls), CHAMPION, existing.version)
            rows.append(_row_from_version(cls, existing, spec))
            continue
        plan[cls] = (cands, key)
    if plan:
        _init_ray(ray_address or spec.ray_address, spec)
        chosen = _reseed(plan, spec, seeds, top_k)
        jobs = []
        for cls, cand in chosen.items():
            cfg = resolve_trial_config(
                spec.base, {"class_name": cls, "seed": 0, "params": cand.params}
            )
            jobs.append(
                (cfg.with_overrides(final_over, source=f"{spec.path}: final.overrides"), True)
            )
        outputs = _run_tasks(jobs, spec)
        for (cls, cand), (cfg, _), out in zip(chosen.items(), jobs, outputs):
            rows.append(
                _register(
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
                )
            )
    report = pd.DataFrame(rows)
    if parent_id is not None and not report.empty:
        with tempfile.TemporaryDirectory() as tmp:
            report.to_csv(Path(tmp) / "promotion.csv", index=False)
            (Path(tmp) / "promotion.html").write_text(report.to_html(index=False))
            client.log_artifacts(parent_id, tmp, artifact_path="promotion")
    return report


def _reseed(
    plan: dict[str, tuple[list[Candidate], str]], spec: StudySpec, seeds: int, top_k: int
) -> dict[str, Candidate]:
    """Re-train each class's top-k configurations with ``seeds`` seeds; keep the best mean."""
    if seeds == 1 and top_k == 1:
        return {cls: cands[0] for cls, (cands, _) in plan.items()}
    jobs, owners = [], []
    for cls, (cands, _) in plan.items():
        for cand in cands:
            for s in range(seeds):
                cfg = resolve_trial_config(
                    spec.base, {"class_name": cls, "seed": s, "params": cand.params}
                )
                jobs.append((cfg, False))
                owners.append((cls, cand))
    results = _run_tasks(jobs, spec)
    metric = spec.metric.removeprefix("val_")
    scores: dict[tuple[str, str], list[float]] = {}
    for (cls, cand), out in zip(owners, results):
        scores.setdefault((cls, cand.config_id), []).append(float(out["result"]["val"][metric]))
    chosen = {}
    for cls, (cands, _) in plan.items():

        def mean(c: Candidate, cls: str = cls) -> float:
            vals = scores[(cls, c.config_id)]
            return sum(vals) / len(vals)

        best = max(cands, key=mean) if spec.mode == "max" else min(cands, key=mean)
        chosen[cls] = Candidate(cls, best.config_id, best.trial_id, mean(best), best.params)
    return chosen


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
    client = tracker.client
    tags = {
        TAG_STUDY: spec.name,
        TAG_ROLE: "promotion",
        TAG_CLASS: cls,
        "ssad.trial_id": cand.trial_id,
        "ssad.git_sha": git_sha(),
    }
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(tracker.experiment_id, run_name=f"promote-{cls}", tags=tags)
    for prefix, metrics in (("val", val), ("test", test)):
        for k, v in metrics.items():
            client.log_metric(run.info.run_id, f"{prefix}_{k}", float(v))
    for sub in ("val", "test"):
        if (folder / sub).is_dir():
            client.log_artifacts(run.info.run_id, str(folder / sub), artifact_path=sub)
    client.log_artifact(run.info.run_id, str(config_path))
    client.set_terminated(run.info.run_id)
    version_tags = {
        "ssad.study": spec.name,
        "ssad.trial_id": cand.trial_id,
        "ssad.promotion_key": key,
        "ssad.git_sha": git_sha(),
        f"val_{spec.metric.removeprefix('val_')}": f"{cand.value:.4f}",
        **{f"test_{k}": f"{test[k]:.4f}" for k in ("image_auroc", "pixel_auroc", "aupro")},
        "ssad.threshold": f"{result['threshold']:.6f}",
    }
    version = log_detector(
        tracking_uri=tracker.tracking_uri,
        run_id=run.info.run_id,
        folder=folder,
        class_name=cls,
        tags=version_tags,
    )
    diff = _diff(cfg, list(cand.params))
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
        "changed_from_seed": json.dumps(diff, default=str),
    }


def _row_from_version(cls: str, version, spec: StudySpec) -> dict[str, Any]:
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
        "config": str(Path("promoted") / spec.name / f"{cls}.yaml"),
        "changed_from_seed": "(unchanged; existing version)",
    }
