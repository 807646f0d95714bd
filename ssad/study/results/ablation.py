"""Ablation results: which differences between variants are real.

An ablation study (spec ``kind: ablation``) trains every variant on every class with the same
seeds, so each variant's run on (class, seed) has a twin in the baseline: the comparison is paired.
:func:`ablation_table` turns one value per (variant, class, seed) into the table a person reads:

* per variant and scope (each class, and ``all`` = pooled over classes): n, mean, std and the 95 %
  CI of the mean;
* against the baseline: the mean paired difference over matching (class, seed) pairs with its CI,
  the p-value of the test named in the ``test`` column (:func:`ssad.study.results.stats.paired`), the
  Holm-corrected p-value across the variants of the same (metric, scope), and a verdict.

:func:`results_table` reads an ablation's finished trial runs from MLflow; :func:`compare_studies`
runs the same comparison between two finished studies' best configurations, re-using their runs.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pandas as pd

from ssad.study.results import stats
from ssad.study.results.leaderboard import best_configs, trials_frame
from ssad.study.results.report import p_value, short_number
from ssad.study.spec import SpecError, StudySpec
from ssad.study.tracking import StudyTracker

__all__ = [
    "ALL",
    "ablation_table",
    "compare_studies",
    "format_table",
    "log_results",
    "results_table",
]

ALL = "all"  # the scope pooled over classes
COLUMNS = [
    "metric",
    "scope",
    "variant",
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "pairs",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p",
    "p_holm",
    "test",
    "verdict",
]


def ablation_table(
    values: pd.DataFrame,
    *,
    baseline: str,
    metrics: list[str] | tuple[str, ...],
    mode: str = "max",
    alpha: float = stats.ALPHA,
    variants: list[str] | None = None,
    classes: list[str] | None = None,
) -> pd.DataFrame:
    """The comparison table from long ``values`` (columns variant, class, seed, and each metric).

    ``variants`` / ``classes`` fix the row order (default: order of appearance). Rows with a
    missing value (a failed trial) drop out of their variant's summary and of its pairs.
    """
    if values.empty:
        return pd.DataFrame(columns=COLUMNS)
    variants = list(variants or dict.fromkeys(values["variant"]))
    classes = list(classes or dict.fromkeys(values["class"]))
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} is not one of the variants {variants}")
    rows = []
    for metric in metrics:
        for scope in [*classes, ALL]:
            sub = values if scope == ALL else values[values["class"] == scope]
            table = sub.pivot_table(
                index=["class", "seed"], columns="variant", values=metric, aggfunc="first"
            )
            base = table[baseline] if baseline in table else pd.Series(dtype=float)
            block = []
            for variant in variants:
                col = table[variant] if variant in table else pd.Series(dtype=float)
                s = stats.describe(col.tolist())
                row = {
                    "metric": metric,
                    "scope": scope,
                    "variant": variant,
                    "n": s.n,
                    "mean": s.mean,
                    "std": s.std,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                    "pairs": 0,
                    "diff": math.nan,
                    "diff_ci_low": math.nan,
                    "diff_ci_high": math.nan,
                    "p": math.nan,
                    "p_holm": math.nan,
                    "test": "",
                    "verdict": "baseline",
                }
                if variant != baseline:
                    pr = stats.paired(col.tolist(), base.reindex(col.index).tolist())
                    row.update(
                        pairs=pr.pairs,
                        diff=pr.diff,
                        diff_ci_low=pr.diff_ci_low,
                        diff_ci_high=pr.diff_ci_high,
                        p=pr.p,
                        test=pr.test,
                    )
                block.append(row)
            others = [r for r in block if r["variant"] != baseline]
            for r, p_adj in zip(others, stats.holm([r["p"] for r in others])):
                r["p_holm"] = p_adj
                r["verdict"] = stats.verdict(r["diff"], p_adj, mode=mode, alpha=alpha)
            rows.extend(block)
    return pd.DataFrame(rows, columns=COLUMNS)


def results_table(tracker: StudyTracker, spec: StudySpec) -> pd.DataFrame:
    """The ablation table of an ablation study's newest launch: each metric's last logged value
    (the final epoch's) per trial run; only finished trials have values to compare."""
    metrics = list(spec.metrics)
    values = trials_frame(tracker, spec, metrics=metrics)
    if not values.empty:
        values = values.assign(seed=values["seed"].astype(int))
        values.loc[values["status"] != "finished", metrics] = math.nan
    return ablation_table(
        values,
        baseline=spec.baseline,
        metrics=spec.metrics,
        mode=spec.mode,
        alpha=spec.alpha,
        variants=list(spec.variants),
        classes=list(spec.classes),
    )


def compare_studies(
    tracker_a: StudyTracker,
    spec_a: StudySpec,
    tracker_b: StudyTracker,
    spec_b: StudySpec,
    *,
    metric: str,
    alpha: float = stats.ALPHA,
) -> pd.DataFrame:
    """Study B's best configuration per class against study A's, paired by (class, seed).

    Each study's best configuration of a class is the one its leaderboard selects (comparable
    trials only, mean over seeds of the study's own metric); its finished runs are re-used, and
    ``metric`` is compared on the classes both studies have. Variant names are ``A:<study>`` and
    ``B:<study>``; A is the baseline.
    """
    classes = [c for c in spec_a.classes if c in spec_b.classes]
    if not classes:
        raise SpecError(
            f"studies {spec_a.name!r} and {spec_b.name!r} have no class in common "
            f"({list(spec_a.classes)} vs {list(spec_b.classes)})"
        )
    frames = []
    for label, tracker, spec in (("A", tracker_a, spec_a), ("B", tracker_b, spec_b)):
        df = trials_frame(tracker, spec, metrics=[metric])
        best = best_configs(df, spec)
        if not best:
            raise ValueError(
                f"study {spec.name!r}: no finished trial with {spec.metric} to compare"
            )
        picked = df[
            (df["config_id"] == df["class"].map(best))
            & (df["status"] == "finished")
            & df["class"].isin(classes)
        ]
        frames.append(
            pd.DataFrame(
                {
                    "variant": f"{label}:{spec.name}",
                    "class": picked["class"],
                    "seed": picked["seed"].astype(int),
                    metric: picked[metric],
                }
            )
        )
    values = pd.concat(frames, ignore_index=True)
    return ablation_table(
        values,
        baseline=f"A:{spec_a.name}",
        metrics=[metric],
        mode="min" if spec_a.mode == "min" else "max",
        alpha=alpha,
        variants=[f"A:{spec_a.name}", f"B:{spec_b.name}"],
        classes=classes,
    )


def format_table(
    table: pd.DataFrame, *, metric: str | None = None, alpha: float = stats.ALPHA
) -> str:
    """A Markdown table of one metric (default: the first), ``all`` scope first, then classes."""
    if table.empty:
        return "(no finished trials yet)"
    metric = metric or str(table["metric"].iloc[0])
    sub = table[table["metric"] == metric]
    order = [ALL, *[s for s in dict.fromkeys(sub["scope"]) if s != ALL]]
    lines = [
        f"{metric}: mean ± std [95 % CI] over seeds; diff = variant − baseline over paired "
        f"(class, seed) runs; p Holm-corrected across variants; verdict at alpha {alpha:g}",
        "",
        "| scope | variant | n | mean ± std | 95 % CI | diff [95 % CI] | p | p (Holm) | test | verdict |",
        "|---|---|---:|---|---|---|---:|---:|---|---|",
    ]
    f = short_number
    for scope in order:
        for _, r in sub[sub["scope"] == scope].iterrows():
            base = r["verdict"] == "baseline"
            diff = (
                ""
                if base
                else f"{r['diff']:+.4f} [{r['diff_ci_low']:+.4f}, {r['diff_ci_high']:+.4f}]"
            )
            lines.append(
                f"| {scope} | {r['variant']} | {r['n']} | {f(r['mean'])} ± {f(r['std'])} | "
                f"[{f(r['ci_low'])}, {f(r['ci_high'])}] | {diff} | {'' if base else p_value(r['p'])} | "
                f"{'' if base else p_value(r['p_holm'])} | {r['test']} | {r['verdict']} |"
            )
    return "\n".join(lines)


def log_results(
    tracker: StudyTracker, parent_id: str, table: pd.DataFrame, spec: StudySpec
) -> None:
    """The table (CSV, Markdown per metric) and the pooled summary as metrics, on the parent run."""
    with tempfile.TemporaryDirectory(prefix="ssad-ablation-") as tmp:
        table.to_csv(Path(tmp) / "ablation.csv", index=False)
        text = "\n\n".join(format_table(table, metric=m, alpha=spec.alpha) for m in spec.metrics)
        (Path(tmp) / "ablation.md").write_text(text + "\n")
        tracker.log_artifacts(parent_id, Path(tmp), artifact_path="ablation")
    pooled = table[table["scope"] == ALL]
    metrics = {}
    for _, r in pooled.iterrows():
        name = f"{r['variant']}.{r['metric']}"
        metrics[f"{name}.mean"] = r["mean"]
        if r["verdict"] != "baseline":
            metrics[f"{name}.diff"] = r["diff"]
            metrics[f"{name}.p_holm"] = r["p_holm"]
    tracker.log_metrics(parent_id, {k: v for k, v in metrics.items() if math.isfinite(v)})
