"""Hand-made dashboard data (no MLflow) for the dashboard tests: trials, histories, an ablation."""

from __future__ import annotations

import math
import random

import matplotlib.pyplot as plt
import pandas as pd

from ssad.study.dashboard import DashboardData
from ssad.study.spec import Dimension, SearchSpace

SPACE = SearchSpace(
    (
        Dimension("memory.k", "int", 1, 9),
        Dimension("train.phase2_lr", "logfloat", 0.003, 0.03),
        Dimension("eval.image_score", "categorical", choices=("max", "topk")),
        Dimension("pretext.patch_size", "categorical", choices=(24, 32)),
        Dimension("defects.fills", "categorical", choices=(("mean",), ("mean", "noise"))),
    )
)
CYCLE = ("finished", "finished", "stopped", "failed")  # trial i has status CYCLE[i % 4]
EPOCHS = {"finished": 8, "stopped": 3, "failed": 1}


def k_value(k: int) -> float:
    return 0.5 + 0.05 * k  # the value is determined by memory.k alone


def handmade(
    n: int = 12,
    classes: tuple[str, ...] = ("a", "b"),
    *,
    ablation: pd.DataFrame | None = None,
    heatmaps: dict | None = None,
) -> DashboardData:
    """``n`` trials per class with MLflow-like string params; status cycles through CYCLE."""
    rng = random.Random(0)
    trials, history, board = [], [], []
    for cls in classes:
        rows = []
        for i in range(n):
            k, status = rng.randint(1, 9), CYCLE[i % 4]
            lr = 10 ** rng.uniform(math.log10(0.003), math.log10(0.03))
            config = {
                "memory.k": str(k),
                "train.phase2_lr": str(lr),
                "eval.image_score": rng.choice(["max", "topk"]),
                "pretext.patch_size": rng.choice(["24", "32"]),
                "defects.fills": rng.choice(["['mean']", "['mean', 'noise']"]),
            }
            run_id = f"{cls}-run{i}"
            rows.append(
                {
                    "run_id": run_id,
                    "trial_name": f"{cls}-t{i}",
                    "class": cls,
                    "config_id": f"{cls}-c{i}",
                    "status": status,
                    "epochs": EPOCHS[status],
                    "val_image_auroc": k_value(k),
                    "seconds": 10.0,
                    "config": config,
                }
            )
            for epoch in range(1, EPOCHS[status] + 1):
                history.append((run_id, "val_image_auroc", epoch, k_value(k)))
        done = [r for r in rows if r["status"] == "finished"]
        best = max(done, key=lambda r: r["val_image_auroc"])
        for r in rows:
            r["best"] = r is best
        trials += rows
        board.append(
            {
                "class": cls,
                "trials": n,
                **{
                    s: sum(r["status"] == s for r in rows)
                    for s in ("finished", "stopped", "failed")
                },
                "compute_s": 10.0 * n,
                "best_val_image_auroc": best["val_image_auroc"],
                "best_run_id": best["run_id"],
                "best_config": "{}",
            }
        )
    frame = pd.DataFrame(trials)
    params = pd.DataFrame(list(frame["config"]), index=frame["run_id"])
    return DashboardData(
        "hand",
        "val_image_auroc",
        "max",
        classes,
        pd.DataFrame(board),
        frame,
        params,
        pd.DataFrame(history, columns=["run_id", "metric", "step", "value"]),
        space=SPACE,
        max_epochs=8,
        heatmaps=heatmaps or {},
        ablation=ablation,
    )


# variant → (mean, diff to the baseline or None, verdict)
VARIANTS = {
    "base": (0.80, None, "baseline"),
    "no_jitter": (0.75, -0.05, "worse"),
    "big_bank": (0.81, 0.01, "no detectable difference"),
    "more_epochs": (0.86, 0.06, "better"),
}


def ablation_table(classes: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    """A results table shaped like ssad.study.results.ablation.results_table's (per-class scopes first)."""
    nan, rows = math.nan, []
    for metric, shift in (("val_image_auroc", 0.0), ("val_pixel_auroc", 0.1)):
        for j, scope in enumerate([*classes, "all"]):
            for variant, (mean, diff, verdict) in VARIANTS.items():
                mean += shift + 0.01 * j
                paired = diff is not None
                rows.append(
                    {
                        "metric": metric,
                        "scope": scope,
                        "variant": variant,
                        "n": 6 if scope == "all" else 3,
                        "mean": mean,
                        "std": 0.01,
                        "ci_low": mean - 0.02,
                        "ci_high": mean + 0.02,
                        "pairs": (6 if scope == "all" else 3) if paired else 0,
                        "diff": diff if paired else nan,
                        "diff_ci_low": diff - 0.02 if paired else nan,
                        "diff_ci_high": diff + 0.02 if paired else nan,
                        "p": 0.01 if paired else nan,
                        "p_holm": 0.03 if paired else nan,
                        "test": "paired t" if paired else "",
                        "verdict": verdict,
                    }
                )
    return pd.DataFrame(rows)


def note_text(fig: plt.Figure) -> str:
    """The text of a panel's note ("" when it drew a chart), its line breaks as spaces."""
    ax = fig.axes[0]
    return "" if ax.axison else " ".join(" ".join(t.get_text() for t in ax.texts).split())
