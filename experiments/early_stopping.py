"""P5, early stopping: the same search with per-class ASHA and without (``scheduler.type: none``).

Both studies are one spec apart: the same classes, search space, Optuna searcher seed, trial
count, base config and concurrency; each runs through ``run_study`` on its own fresh local Ray
(SQLite MLflow in a temp dir), one after the other in one process; per-trial figures come from
Tune's ``result.json`` files. Reported per study: compute used (Σ epochs trained, Σ trial
seconds from Tune's ``time_total_s``, the runner's wall time) and the best validation metric per
class from the study's own leaderboard (finished trials; ``val_image_auroc_ema``); then ASHA /
none ratios against the issue's target: <= 35 % of the compute for <= 1 AUROC point (0.01) lost.

The searcher sees results as they come: with ASHA it is told a stopped trial's last value (at an
early epoch), so after Optuna's start-up trials (``max(2, trials // 3)`` per class) its proposals
may differ between the two studies. How many configurations both studies tried is reported.

Usage::

    python -m experiments.early_stopping [--classes gelcap] [--trials 12] [--grace-period 1]
        [--reduction-factor 3] [--epochs 1 8] [--min-samples 64] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from ssad.data.synthetic import generate

__all__ = ["asha_share", "compare", "main", "markdown", "measure"]

TARGETS = {"compute_ratio": 0.35, "auroc_lost": 0.01}
Row = dict[str, Any]
# The tests' tiny search space (tests/study/conftest.py): bank k, phase-2 learning rate, score.
SPACE = {
    "memory.k": {"type": "int", "low": 1, "high": 5},
    "train.phase2_lr": {"type": "logfloat", "low": 0.001, "high": 0.1},
    "eval.image_score": {"type": "categorical", "choices": ["max", "topk"]},
}


def base_overrides(min_samples: int, epochs: tuple[int, int]) -> dict[str, Any]:
    """The tests' tiny trial (64 px, 16 px patches, batch 16) with a chosen length."""
    return {
        "data.image_size": 64,
        "pretext.patch_size": 16,
        "train.phase1_epochs": epochs[0],
        "train.phase2_epochs": epochs[1],
        "train.min_samples": min_samples,
        "train.batch_size": 16,
        "memory.bank_size": 500,
        "eval.tsne": False,
        "eval.heatmaps": 2,
    }


def write_spec(folder: Path, *, data_root: Path, name: str, **fields: Any) -> Path:
    """A study spec in ``folder`` (SQLite MLflow and Tune storage inside it); ``fields`` override."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    spec: dict[str, Any] = {
        "name": name,
        "data": {"root": str(data_root)},
        "search_space": "space.yaml",
        "searcher": {"type": "optuna", "seed": 0},
        "metric": "val_image_auroc_ema",
        "mode": "max",
        "seeds_per_config": 1,
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
        "mlflow": {
            "tracking_uri": f"sqlite:///{(folder / 'mlflow.db').resolve()}",
            "experiment": f"bench-{name}",
        },
        "storage_path": str((folder / "ray").resolve()),
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_local(spec_path: Path, num_cpus: int) -> dict[str, Any]:
    """``run_study`` on a fresh local Ray (its own temp dir); the study's output and Tune's
    per-trial reports (trial id → one dict per epoch, from ``result.json``)."""
    import ray

    from ssad.study.spec import load_spec
    from ssad.study.tune.runner import run_study

    spec = load_spec(spec_path)
    tmp = tempfile.mkdtemp(prefix="sse", dir="/tmp")  # short: Unix socket path limit
    os.environ.update(RAY_TMPDIR=tmp, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        out = run_study(spec)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    results: dict[str, list[dict[str, Any]]] = {}
    for path in (Path(spec.storage_path) / spec.name).glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            results[rows[0]["trial_id"]] = rows
    return {"spec": spec, "out": out, "results": results}


def per_trial(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial from its last report: class, number, params, epochs, seconds, metric."""
    rows = []
    for trial_id, reports in sorted(raw["results"].items()):
        last = reports[-1]
        config = last.get("config") or {}
        rows.append(
            {
                "trial_id": trial_id,
                "trial_number": config.get("trial_number"),
                "params": config.get("params"),
                "class": config.get("class_name"),
                "epochs": int(last["training_iteration"]),
                "time_total_s": float(last["time_total_s"]),
                "metric": last.get(raw["spec"].metric),
            }
        )
    return rows


def _study(raw: dict[str, Any], scheduler: str) -> Row:
    spec, out = raw["spec"], raw["out"]
    trials = per_trial(raw)
    board = out["leaderboard"]
    best_col = f"best_{spec.metric}"
    best = {str(r["class"]): float(r[best_col]) for _, r in board.iterrows()}
    configs = {}
    for reports in raw["results"].values():
        cfg = reports[-1].get("config") or {}
        key = f"{cfg.get('class_name')}#{cfg.get('trial_number')}"
        configs[key] = json.dumps(cfg.get("params", {}), sort_keys=True)
    return {
        "scheduler": scheduler,
        "trials": len(trials),
        "finished": int(out["stats"]["finished"]),
        "stopped": int(out["stats"]["stopped"]),
        "failed": int(out["stats"]["failed"]),
        "epochs": sum(t["epochs"] for t in trials),
        "max_epochs": len(trials) * spec.max_epochs,
        "trial_seconds": sum(t["time_total_s"] for t in trials),
        "wall_s": raw["out"]["stats"]["wall_s"],
        "best": best,
        "best_mean": sum(best.values()) / len(best) if best else math.nan,
        "configs": configs,
        "per_trial": trials,
    }


def measure(
    *,
    classes: list[str],
    trials: int = 12,
    concurrent: int = 2,
    min_samples: int = 64,
    epochs: tuple[int, int] = (1, 8),
    grace_period: int = 1,
    reduction_factor: int = 3,
) -> Row:
    """Both studies, one after the other; returns the comparison row (``kind="early_stopping"``)."""
    with tempfile.TemporaryDirectory(prefix="ssad-bench-asha-") as tmp:
        folder = Path(tmp)
        data = generate(
            folder / "data",
            classes=classes,
            size=64,
            n_train=16,
            n_test_good=16,
            n_test_per_defect=8,
        )
        studies = []
        for scheduler in ("asha", "none"):
            sched = (
                {"type": "asha", "grace_period": grace_period, "reduction_factor": reduction_factor}
                if scheduler == "asha"
                else {"type": "none"}
            )
            spec = write_spec(
                folder / scheduler,
                data_root=data,
                name=f"es-{scheduler}",
                classes=classes,
                base={"preset": "cpu", "overrides": base_overrides(min_samples, epochs)},
                num_samples=trials,
                max_concurrent=concurrent,
                scheduler=sched,
            )
            print(f"[early_stopping] scheduler {scheduler} …", file=sys.stderr, flush=True)
            tic = time.perf_counter()
            raw = run_local(spec, concurrent)
            study = _study(raw, scheduler)
            study["run_s"] = time.perf_counter() - tic
            studies.append(study)
    sizes = {
        "classes": classes,
        "trials_per_class": trials,
        "max_concurrent": concurrent,
        "epochs_per_trial": sum(epochs),
        "min_samples": min_samples,
        "image_px": 64,
        "asha": {"grace_period": grace_period, "reduction_factor": reduction_factor},
        "metric": "val_image_auroc_ema",
        "searcher": "optuna TPE, seed 0",
    }
    return compare(studies[0], studies[1], sizes)


def asha_share(max_t: int, grace: int, rf: int) -> tuple[float, list[int]]:
    """Compute share of synchronous successive halving (one bracket, many trials) against every
    trial running to ``max_t``: all reach the first rung, 1/rf of them the next, …"""
    rungs, r = [], grace
    while r < max_t:
        rungs.append(r)
        r *= rf
    epochs, prev, alive = 0.0, 0, 1.0
    for rung in [*rungs, max_t]:
        epochs += alive * (rung - prev)
        prev, alive = rung, alive / rf
    return epochs / max_t, rungs


def _winners(none: Row, asha: Row) -> dict[str, dict[str, Any]]:
    """Per class: the configuration that won without early stopping, and what ASHA did with it
    (the same configuration, when the searcher proposed it there too)."""
    out = {}
    for cls in none["best"]:
        done = [t for t in none["per_trial"] if t["class"] == cls and t["metric"] is not None]
        if not done:
            continue
        win = max(done, key=lambda t: t["metric"])
        if win.get("trial_number") is None:  # results written before trials were numbered here
            continue
        twin = next(
            (
                t
                for t in asha["per_trial"]
                if t["class"] == cls
                and t.get("trial_number") == win["trial_number"]
                and t.get("params") == win["params"]
            ),
            None,
        )
        out[cls] = {
            "trial_number": win["trial_number"],
            "none_value": win["metric"],
            "asha_epochs": twin["epochs"] if twin else None,
            "asha_value": twin["metric"] if twin else None,
        }
    return out


def compare(asha: Row, none: Row, sizes: dict[str, Any]) -> Row:
    same = [k for k, v in asha["configs"].items() if none["configs"].get(k) == v]
    a = sizes["asha"]
    share, rungs = asha_share(sizes["epochs_per_trial"], a["grace_period"], a["reduction_factor"])
    lost = {c: none["best"][c] - asha["best"].get(c, math.nan) for c in none["best"]}
    row: Row = {
        "kind": "early_stopping",
        "name": "P5 early stopping (ASHA vs none)",
        "sizes": sizes,
        "asha": asha,
        "none": none,
        "compute_ratio_epochs": asha["epochs"] / none["epochs"],
        "compute_ratio_trial_seconds": asha["trial_seconds"] / none["trial_seconds"],
        "wall_ratio": asha["wall_s"] / none["wall_s"],
        "auroc_lost_per_class": lost,
        "auroc_lost_mean": none["best_mean"] - asha["best_mean"],
        "synchronous_sha_share": share,  # what ASHA's geometry saves with many trials
        "rungs": rungs,
        "winner_under_asha": _winners(none, asha),
        "same_configurations": len(same),
        "configurations": len(none["configs"]),
        "targets": TARGETS,
    }
    row["met"] = {
        "compute_ratio": row["compute_ratio_epochs"] <= TARGETS["compute_ratio"],
        "auroc_lost": row["auroc_lost_mean"] <= TARGETS["auroc_lost"],
    }
    return row


def markdown(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        s, a, n, met = r["sizes"], r["asha"], r["none"], r["met"]
        ok = {k: "✓" if v else "✗" for k, v in met.items()}
        best = " ".join(
            f"{c} {a['best'].get(c, math.nan):.3f} vs {n['best'][c]:.3f};" for c in n["best"]
        )
        lines += [
            "",
            f"P5 early stopping: {', '.join(s['classes'])} × {s['trials_per_class']} trials, "
            f"{s['max_concurrent']} concurrent, {s['epochs_per_trial']} epochs of "
            f"{s['min_samples']} samples at {s['image_px']} px, ASHA grace "
            f"{s['asha']['grace_period']} / reduction {s['asha']['reduction_factor']}, "
            f"{s['searcher']}; metric {s['metric']}",
            "",
            "| quantity | ASHA | none | ASHA / none | target |",
            "|---|---:|---:|---:|---:|",
            f"| trials finished / stopped | {a['finished']} / {a['stopped']} "
            f"| {n['finished']} / {n['stopped']} | | |",
            f"| epochs trained (compute) | {a['epochs']} | {n['epochs']} "
            f"| **{r['compute_ratio_epochs']:.2f}** {ok['compute_ratio']} | ≤ 0.35 |",
            f"| the same for synchronous halving with many trials (rungs {r['rungs']}) | | "
            f"| {r['synchronous_sha_share']:.2f} | |",
            f"| Σ trial seconds | {a['trial_seconds']:.0f} s | {n['trial_seconds']:.0f} s "
            f"| {r['compute_ratio_trial_seconds']:.2f} | |",
            f"| study wall (the runner's) | {a['wall_s']:.0f} s | {n['wall_s']:.0f} s "
            f"| {r['wall_ratio']:.2f} | |",
            f"| best val AUROC (EMA), mean over classes | {a['best_mean']:.3f} "
            f"| {n['best_mean']:.3f} | lost **{r['auroc_lost_mean']:+.3f}** {ok['auroc_lost']} "
            "| ≤ 0.01 lost |",
            "",
            f"Per class (ASHA vs none): {best} configurations tried by both studies: "
            f"{r['same_configurations']} of {r['configurations']} (Optuna sees ASHA's early "
            "values, so its proposals diverge after its start-up trials).",
        ]
        for cls, w in r["winner_under_asha"].items():
            fate = (
                "not proposed with ASHA"
                if w["asha_epochs"] is None
                else f"with ASHA it ran {w['asha_epochs']} of {s['epochs_per_trial']} epochs "
                f"({w['asha_value']:.3f})"
            )
            lines.append(
                f"{cls}: the winner without early stopping, trial {w['trial_number']} "
                f"({w['none_value']:.3f}): {fate}."
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", default=["gelcap"])
    parser.add_argument("--trials", type=int, default=12, help="trials per class")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--min-samples", type=int, default=64, help="samples per epoch")
    parser.add_argument("--epochs", type=int, nargs=2, default=(1, 8), metavar=("P1", "P2"))
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads per library (driver)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "early-stopping.json"
    )
    args = parser.parse_args(argv)
    from benchmarks.timing import machine_info, set_threads

    set_threads(args.threads)
    info = machine_info()
    row = measure(
        classes=args.classes,
        trials=args.trials,
        concurrent=args.concurrent,
        min_samples=args.min_samples,
        epochs=tuple(args.epochs),
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
    )
    info["load_average_after"] = machine_info()["load_average_1_5_15"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "early_stopping": [row]}, indent=2) + "\n")
    text = "\n".join(markdown([row])) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
