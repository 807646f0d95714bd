"""Study-wide panels of an ablation's results table: the variants' means and the forest plot."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.panels.common import BEST, VARIANTS, VERDICT, note, too_few
from ssad.study.dashboard.spec import Panel
from ssad.study.results.report import p_value

# A t interval of the mean needs a spread: from one run (seed) it is the mean itself, a bar whose
# zero-width CI would read as certainty. A scope with fewer runs per variant says so instead.
CI_MIN_RUNS = 2
# ssad.study.results.stats.paired tests from 2 (class, seed) pairs; from one it gives no p-value and its
# CI is the one difference itself. A forest row (or the whole panel) with fewer pairs says so.
FOREST_MIN_PAIRS = 2


def variant_bars(data: DashboardData, panel: Panel) -> plt.Figure:
    rows, why = _ablation_rows(data, panel)
    if rows.empty:
        return note(*plt.subplots(figsize=(5, 2.5)), why)
    metric = panel.metric or data.metric
    scopes, variants = list(dict.fromkeys(rows["scope"])), _variants(rows)
    base = set(rows.loc[rows["verdict"] == "baseline", "variant"])
    colour = dict(zip([v for v in variants if v not in base], VARIANTS * len(variants)))
    colour.update({v: BEST for v in base})
    cols = min(len(scopes), 4)
    nrows = math.ceil(len(scopes) / cols)
    width = max(2.4 + 0.35 * len(variants), 2.8)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(width * cols, 2.6 * nrows + 0.5), layout="constrained", squeeze=False
    )
    for ax in axes.flat[len(scopes) :]:
        ax.axis("off")
    for ax, scope in zip(axes.flat, scopes):
        sub = rows[rows["scope"] == scope].set_index("variant").reindex(variants)
        _scope_bars(ax, sub, scope, [colour[v] for v in variants], base)
    axes.flat[0].set_ylabel(metric, fontsize=8)
    fig.legend(
        handles=[
            Patch(
                color=colour[v], label=v + (" (baseline)" if v in base and v != "baseline" else "")
            )
            for v in variants
        ],
        loc="outside upper left",
        ncols=min(len(variants), 6),
        fontsize=8,
        frameon=False,
    )
    return fig


def _scope_bars(
    ax: plt.Axes, sub: pd.DataFrame, scope: str, colours: list[str], base: set[str]
) -> None:
    """One scope's bars: each variant's mean with its CI, on the scope's own zoomed y range; a
    note instead with fewer than ``CI_MIN_RUNS`` runs per variant."""
    n = sub["n"].max()
    name = "all classes" if scope == "all" else scope
    ax.set_title(f"{name} (n={n})", fontsize=9)
    if not n >= CI_MIN_RUNS:
        note(ax.figure, ax, too_few("A 95 % CI", CI_MIN_RUNS, "runs per variant", n, where="this scope"))
        return
    variants = list(sub.index)
    mean = sub["mean"].astype(float)
    err = [
        (mean - sub["ci_low"]).clip(lower=0).fillna(0),
        (sub["ci_high"] - mean).clip(lower=0).fillna(0),
    ]
    x = range(len(variants))
    ax.bar(
        x,
        mean.fillna(0),
        yerr=err,
        capsize=3,
        color=colours,
        edgecolor="#212529",
        linewidth=[1.5 if v in base else 0 for v in variants],
        error_kw={"elinewidth": 1, "ecolor": "#343a40"},
    )
    lo = pd.concat([sub["ci_low"], mean]).min()
    hi = pd.concat([sub["ci_high"], mean]).max()
    if pd.notna(lo) and pd.notna(hi):
        pad = max(0.15 * (hi - lo), 5e-3)
        ax.set_ylim(lo - pad, hi + pad)  # zoomed: bars start at the axis, not at 0
    ax.set_xticks(list(x), [v for v in variants], rotation=30, ha="right", fontsize=7.5)
    ax.tick_params(axis="y", labelsize=7.5)
    ax.grid(axis="y", alpha=0.3)


def forest(data: DashboardData, panel: Panel) -> plt.Figure:
    rows, why = _ablation_rows(data, panel)
    rows = rows[rows["verdict"] != "baseline"] if len(rows) else rows
    if rows.empty:
        return note(*plt.subplots(figsize=(5, 2.5)), why or "no variant besides the baseline")
    if not (rows["pairs"] >= FOREST_MIN_PAIRS).any():
        have = int(rows["pairs"].fillna(0).max())
        what = "(class, seed) pairs per variant"
        text = too_few("A paired test", FOREST_MIN_PAIRS, what, have, where="this study")
        return note(*plt.subplots(figsize=(5, 2.5)), text)
    metric = panel.metric or data.metric
    n = len(rows)
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.3 * n), layout="constrained")
    labels = [_forest_row(ax, y, r) for y, r in enumerate(rows.itertuples(index=False))]
    ax.axvline(0, color="#212529", lw=1)
    pooled_rows = int((rows["scope"] == "all").sum())
    if 0 < pooled_rows < n:
        ax.axhline(pooled_rows - 0.5, color="#ced4da", lw=1)
    ax.set_yticks(range(n), labels, fontsize=7.5)
    for tick, scope in zip(ax.get_yticklabels(), rows["scope"]):
        if scope == "all":
            tick.set_fontweight("bold")
        else:
            tick.set_color("#868e96")
    ax.set_ylim(n - 0.5, -0.5)
    better = "right" if data.mode == "max" else "left"
    ax.set_xlabel(f"{metric}: variant − baseline (mean paired difference; {better} = better)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[Patch(color=c, label=v) for v, c in VERDICT.items()],
        loc="lower left",
        bbox_to_anchor=(0, 1),
        ncols=3,
        fontsize=7.5,
        frameon=False,
    )
    return fig


def _forest_row(ax: plt.Axes, y: int, r: tuple) -> str:
    """Row ``y``: the paired difference with its CI and the test's p-value; returns its label."""
    pooled = r.scope == "all"
    colour = VERDICT.get(r.verdict, VERDICT["no detectable difference"])
    alpha = 1.0 if pooled else 0.45
    tested = r.pairs >= FOREST_MIN_PAIRS
    if tested and pd.notna(r.diff):
        lo, hi = r.diff - r.diff_ci_low, r.diff_ci_high - r.diff
        ax.errorbar(
            r.diff,
            y,
            xerr=[[max(lo, 0) if pd.notna(lo) else 0], [max(hi, 0) if pd.notna(hi) else 0]],
            fmt="D" if pooled else "o",
            ms=6 if pooled else 4,
            color=colour,
            alpha=alpha,
            capsize=3,
            lw=2 if pooled else 1.2,
        )
    ax.text(
        1.01,
        y,
        f"p_holm {p_value(r.p_holm)} ({r.test or 'no test'}, {r.pairs} pairs)"
        if tested
        else f"a paired test needs at least {FOREST_MIN_PAIRS} pairs; this row has {r.pairs}",
        transform=ax.get_yaxis_transform(),
        va="center",
        fontsize=7,
        color="#212529" if pooled else "#868e96",
    )
    return r.variant if pooled else f"{r.variant} · {r.scope}"


def _ablation_rows(data: DashboardData, panel: Panel) -> tuple[pd.DataFrame, str]:
    """The table's rows of the panel's metric, scope ``all`` first; or empty and why."""
    metric = panel.metric or data.metric
    table = data.ablation
    if table is None:
        return pd.DataFrame(), "not an ablation study"
    rows = table[table["metric"] == metric]
    if rows.empty:
        return rows, f"no {metric} in the ablation results"
    order = {s: i for i, s in enumerate(["all", *data.classes])}
    rows = rows.assign(_order=rows["scope"].map(order).fillna(len(order)))
    return rows.sort_values("_order", kind="stable").drop(columns="_order"), ""


def _variants(rows: pd.DataFrame) -> list[str]:
    """Variant names, the baseline first."""
    names = list(dict.fromkeys(rows["variant"]))
    base = set(rows.loc[rows["verdict"] == "baseline", "variant"])
    return sorted(names, key=lambda v: v not in base)
