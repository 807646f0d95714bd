"""What a person reads while a study or a promotion runs: trial names, progress lines, tables.

* :func:`trial_name` names a Tune trial ``<class>-<number>`` (``brick-0007``), the number counted
  per class by :class:`ssad.study.routing.ClassRoutedSearcher` (so a resumed study continues it).
* :class:`Progress` prints one line per class and stage of a long job, with the elapsed time.
* :func:`short_number`, :func:`config_changes` and :func:`readable` turn result tables into
  something a terminal can show: 4 significant digits, and only the keys that differ from a base.
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
    "format_changes",
    "leading",
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


def _parse(value: Any) -> Any:
    """MLflow params come back as strings: numbers, booleans and None turned back into values."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return {"True": True, "False": False, "None": None}.get(value, value)


def _same(a: Any, b: Any) -> bool:
    a, b = _parse(a), _parse(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def config_changes(config: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a flat ``config`` whose value differs from the flat ``base`` (sorted)."""
    return {
        k: _parse(v) for k, v in sorted(config.items()) if k not in base or not _same(v, base[k])
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
    return ", ".join(f"{k}={short_number(_parse(v), digits)}" for k, v in changes.items())


def readable(
    table: pd.DataFrame,
    *,
    config_columns: Mapping[str, Mapping[str, Any] | None] | None = None,
    digits: int = 4,
) -> str:
    """``table`` as text: floats in ``digits`` significant digits; each of ``config_columns``
    (a JSON object per cell, or a dict) shown as the keys that differ from its base (None: as is)."""
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
    with pd.option_context("display.width", 250, "display.max_colwidth", 160):
        return out.to_string(index=False)


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
