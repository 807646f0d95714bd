"""What a person reads while a study or a promotion runs: trial names, progress lines, tables.

* :func:`trial_name` names a Tune trial ``<class>-<number>`` (``brick-0007``), the number counted
  per class by :class:`ssad.study.tune.routing.ClassRoutedSearcher` (so a resumed study continues it).
* :class:`Progress` prints one line per class and stage of a long job, with the elapsed time.
* :func:`short_number`, :func:`config_changes` and :func:`readable` turn result tables into
  something a terminal can show: 4 significant digits, only the keys that differ from a base, at
  most 120 columns (:func:`promotion_text` for a promotion's report).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import pandas as pd

__all__ = [
    "TRIAL_NUMBER",
    "Progress",
    "config_changes",
    "fit_line",
    "format_changes",
    "leading",
    "parse_value",
    "promotion_text",
    "readable",
    "short_number",
    "trial_name",
]

TRIAL_NUMBER = "trial_number"  # trial-config key: the trial's number within its class, from 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")  # Tune strips '/()<>:"\|?*' from folder names


def trial_name(trial: Any) -> str:
    """``<class>-<4-digit number>`` from a Tune trial's config; the trial id when unnumbered;
    ``<class>-<variant>-s<seed>`` for an ablation's trial.

    Used as Tune's ``trial_name_creator`` and ``trial_dirname_creator``: the live table, the
    trial's folder and its MLflow run carry the same name.
    """
    config = getattr(trial, "config", None) or {}
    cls = _UNSAFE.sub("_", str(config.get("class_name", "trial")))
    if "variant" in config:  # an ablation trial: brick-fifo-s2
        return f"{cls}-{_UNSAFE.sub('_', str(config['variant']))}-s{int(config.get('seed', 0))}"
    number = config.get(TRIAL_NUMBER)
    return f"{cls}-{int(number):04d}" if number is not None else f"{cls}-{trial.trial_id}"


def leading(metrics: Mapping[str, Any], keys: tuple[str | None, ...]) -> dict[str, Any]:
    """``metrics`` with ``keys`` (those present) first: Tune's live table shows the first four
    numbers of a trial's report after its own columns, in report order."""
    return {**{k: metrics[k] for k in keys if k in metrics}, **metrics}


def short_number(value: Any, digits: int = 4) -> str:
    """A number in ``digits`` significant digits (``0.9123``, ``123.5``); large ones whole."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int) or abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}".replace(",", "")
    return f"{value:.{digits}g}"


def p_value(value: float | None) -> str:
    """A p-value as the tables print it: 3 decimals, ``<0.001`` below that, ``–`` when missing."""
    if value is None or not math.isfinite(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def parse_value(value: Any) -> Any:
    """MLflow params come back as strings: numbers, booleans and None turned back into values."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return {"True": True, "False": False, "None": None}.get(value, value)


def _same(a: Any, b: Any) -> bool:
    a, b = parse_value(a), parse_value(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def config_changes(config: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a flat ``config`` whose value differs from the flat ``base`` (sorted)."""
    return {
        k: parse_value(v) for k, v in sorted(config.items()) if k not in base or not _same(v, base[k])
    }


def format_changes(changes: Mapping[str, Any] | str, digits: int = 4) -> str:
    """``key=value, …`` with short numbers; a JSON object string is read first."""
    if isinstance(changes, str):
        try:
            changes = json.loads(changes)
        except ValueError:
            return changes
        if not isinstance(changes, dict):
            return str(changes)
    if not changes:
        return "(as base)"
    return ", ".join(f"{k}={short_number(parse_value(v), digits)}" for k, v in changes.items())


WIDTH = 120  # the widest line a summary table prints


def readable(
    table: pd.DataFrame,
    *,
    config_columns: Mapping[str, Mapping[str, Any] | None] | None = None,
    digits: int = 4,
    width: int = WIDTH,
) -> str:
    """``table`` as text: floats in ``digits`` significant digits; each of ``config_columns``
    (a JSON object per cell, or a dict) shown as the keys that differ from its base (None: as
    is), cut with ``…`` so that the table stays within ``width`` columns where it can."""
    out = table.copy()
    for col, base in (config_columns or {}).items():
        if col not in out:
            continue

        def cell(v: Any, base: Mapping[str, Any] | None = base) -> str:
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    return v
            if not isinstance(v, dict):
                return str(v)
            return format_changes(config_changes(v, base) if base is not None else v, digits)

        out[col] = out[col].map(cell)
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: short_number(float(v), digits))
    for col in config_columns or {}:
        if col in out:
            out[col] = _cut(out, col, width)
    with pd.option_context("display.width", 250, "display.max_colwidth", 1000):
        return out.to_string(index=False)


def _cut(table: pd.DataFrame, col: str, width: int) -> pd.Series:
    """``table[col]``'s cells shortened (ending in ``…``) by as much as the table is too wide."""
    with pd.option_context("display.width", 250, "display.max_colwidth", 1000):
        text = table.to_string(index=False)
    excess = max(len(line) for line in text.splitlines()) - width
    cells = table[col].astype(str)
    if excess <= 0 or cells.empty:
        return cells
    keep = max(len(col), 8, int(cells.map(len).max()) - excess)
    return cells.map(lambda v: v if len(v) <= keep else v[: keep - 1] + "…")


def fit_line(text: str, width: int = WIDTH) -> str:
    """``text`` cut with ``…`` to at most ``width`` characters."""
    return text if len(text) <= width else text[: width - 1] + "…"


def promotion_text(report: pd.DataFrame, width: int = WIDTH) -> str:
    """A promotion's report: a table of the scores, then per class its model (or its error), the
    file with its full config and the keys it changed from the study's base (cut to ``width``)."""
    wide = [c for c in ("model", "version", "config", "changed_from_base", "error") if c in report]
    lines = [readable(report.drop(columns=wide), width=width)] if len(report) else []
    for _, row in report.iterrows():
        model, version = _text(row.get("model")), _text(row.get("version"))
        model += f" version {version}" if version else ""
        lines.append(fit_line(f"{row['class']}: {model or 'not promoted'}", width))
        for label, key in (("error", "error"), ("config", "config")):
            if _text(row.get(key)):
                lines.append(fit_line(f"  {label}: {row[key]}", width))
        if _text(row.get("changed_from_base")):
            changes = format_changes(row["changed_from_base"])
            lines.append(fit_line(f"  changed from base: {changes}", width))
    return "\n".join(lines)


def _text(value: Any) -> str:
    """A table cell as text; missing (None, NaN) as ``""``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


class Progress:
    """One line per class and stage of a long job, with the seconds since it started::

    [   12.4s] brick: final training started
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out
        self.start = time.monotonic()

    def __call__(self, cls: str, message: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"[{elapsed:8.1f}s] {cls}: {message}", file=self.out or sys.stdout, flush=True)
