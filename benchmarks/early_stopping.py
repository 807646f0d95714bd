"""P5, early stopping: the same search with per-class ASHA and without (``scheduler.type: none``).

Both studies are one spec apart: the same classes, search space, Optuna searcher seed, trial
count, base config and concurrency; each runs through ``run_study`` on its own fresh local Ray
(SQLite MLflow in a temp dir; observed by :mod:`benchmarks.studies`), one after the other in one
process. Reported per study: compute used (Σ epochs trained, Σ trial seconds from Tune's
``time_total_s``, ``Tuner.fit`` wall) and the best validation metric per class from the study's
own leaderboard (finished trials; ``val_image_auroc_ema``); then ASHA / none ratios against the
issue's target: <= 35 % of the compute for <= 1 AUROC point (0.01) lost.

The searcher sees results as they come: with ASHA it is told a stopped trial's last value (at an
early epoch), so after Optuna's start-up trials (``max(2, trials // 3)`` per class) its proposals
may differ between the two studies. How many configurations both studies tried is reported.

Usage::

    python benchmarks/early_stopping.py [--classes gelcap] [--trials 12] [--grace-period 1]
        [--reduction-factor 3] [--epochs 1 8] [--min-samples 64] [--out ...]
    python benchmarks/run.py --only early_stopping
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.studies import (
    base_overrides,
    instrumented_study,
    local_ray,
    make_data,
    per_trial,
    write_spec,
)

__all__ = ["bench_early_stopping", "compare", "main", "markdown", "measure"]

TARGETS = {"compute_ratio": 0.35, "auroc_lost": 0.01}
Row = dict[str, Any]


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
        "wall_s": raw["fit"]["wall_s"],
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
        data = make_data(folder / "data", classes, n_train=16, n_test_good=16, per_defect=8)
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
            with local_ray(num_cpus=concurrent):
                raw = instrumented_study(spec)
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


def bench_early_stopping(quick: bool) -> list[Row]:
    """For ``benchmarks/run.py --only early_stopping``."""
    if quick:
        return [measure(classes=["gelcap"], trials=3, epochs=(1, 3))]
    return [measure(classes=["gelcap"])]


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
            f"| Tuner.fit wall | {a['wall_s']:.0f} s | {n['wall_s']:.0f} s "
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
