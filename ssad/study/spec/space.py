"""Search spaces: dotted config keys → distributions, validated against the config schema.

A search space file (``search_spaces/*.yaml``) maps each searched key to a distribution,
``{type: float | logfloat | int, low, high}`` or ``{type: categorical, choices: [...]}``. An
ablation's variants make a space too (:func:`variants_space`): one categorical dimension per key
they set. Every error names the file and the key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ssad.config import Config, ConfigError, flatten
from ssad.study.spec.rules import search_refusal
from ssad.typed import build, read_yaml_mapping

__all__ = [
    "Dimension",
    "SearchSpace",
    "SpecError",
    "checked_overrides",
    "flatten_space",
    "load_search_space",
    "space_dim",
    "variants_space",
]

DimKind = Literal["float", "logfloat", "int", "categorical"]
_DIM_FIELDS = {"type", "low", "high", "choices"}


class SpecError(ConfigError):
    """A study spec or search space is invalid (message names file and key)."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``float`` / ``logfloat`` / ``int`` (low..high) or ``categorical``."""

    key: str
    kind: DimKind
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def grid_values(self) -> list[Any]:
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise SpecError(
            f"{self.key}: grid search needs categorical or int dimensions, got {self.kind}"
        )


@dataclass(frozen=True)
class SearchSpace:
    dims: tuple[Dimension, ...]
    source: str = "<space>"

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dims]

    def pairs(self) -> dict[str, str]:
        """``…_min`` key → its ``…_max`` partner where both are searched (max drawn after min)."""
        keys = set(self.keys)
        return {
            k: k[:-4] + "_max" for k in keys if k.endswith("_min") and k[:-4] + "_max" in keys
        }

    def grid(self) -> list[dict[str, Any]]:
        values = [d.grid_values() for d in self.dims]
        return [dict(zip(self.keys, combo)) for combo in itertools.product(*values)]

    def corners(self) -> list[dict[str, Any]]:
        """The low and high corner configurations (pairs kept ordered) used for validation."""
        out = []
        for pick in (0, -1):
            point = {}
            for d in self.dims:
                vals = list(d.choices) if d.kind == "categorical" else [d.low, d.high]
                v = vals[pick]
                point[d.key] = int(v) if d.kind == "int" else v
            for lo, hi in self.pairs().items():
                point[hi] = max(point[hi], point[lo])
            out.append(point)
        return out


@dataclass(frozen=True)
class _DimensionEntry:
    """One entry of a search space file, as written (bounds checked by :func:`_dimension`)."""

    type: DimKind
    low: Any = None
    high: Any = None
    choices: Any = None


def load_search_space(path: str | Path, *, base: Config | None = None) -> SearchSpace:
    """Parse and validate a search space file against the config schema and ``base``."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise SpecError(f"{src}: search space file not found")
    raw = read_yaml_mapping(path, error=SpecError)
    known = Config().flat()
    dims = []
    for key, entry in flatten_space(raw).items():
        if key not in known:
            raise SpecError(f"{src}: {key}: not a config key")
        why = search_refusal(key)
        if why:
            raise SpecError(f"{src}: {key}: {why}")
        dims.append(_dimension(key, entry, known[key], src))
    if not dims:
        raise SpecError(f"{src}: empty search space")
    space = SearchSpace(tuple(dims), source=src)
    for lo, hi in space.pairs().items():
        dlo, dhi = space_dim(space, lo), space_dim(space, hi)
        if dlo.kind != "categorical" and dhi.kind != "categorical" and dlo.low > dhi.high:
            raise SpecError(
                f"{src}: {lo}: its lowest value {dlo.low} exceeds the highest {hi} {dhi.high}"
            )
    _check_corners(space, base or Config(), src)
    return space


def _dimension(key: str, entry: Any, default: Any, src: str) -> Dimension:
    """One file entry → a :class:`Dimension`; ``default``: the key's value type in the config."""
    if not isinstance(entry, dict) or "type" not in entry:
        raise SpecError(
            f"{src}: {key}: expected a mapping with 'type' (float|logfloat|int|categorical)"
        )
    d = build(_DimensionEntry, entry, source=src, prefix=f"{key}.", error=SpecError)
    if d.type == "categorical":
        if not isinstance(d.choices, list) or not d.choices:
            raise SpecError(f"{src}: {key}: categorical needs a non-empty 'choices' list")
        choices = tuple(tuple(c) if isinstance(c, list) else c for c in d.choices)
        return Dimension(key, "categorical", choices=choices)
    low, high = d.low, d.high
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise SpecError(f"{src}: {key}: needs numeric 'low' and 'high'")
    if low >= high:
        raise SpecError(f"{src}: {key}: low {low} must be < high {high}")
    if d.type == "logfloat" and low <= 0:
        raise SpecError(f"{src}: {key}: logfloat needs low > 0, got {low}")
    if d.type == "int" and (int(low) != low or int(high) != high):
        raise SpecError(f"{src}: {key}: int bounds must be integers")
    if d.type != "int" and isinstance(default, int):  # bool too; 2.7 would fail in a trial
        raise SpecError(f"{src}: {key}: an integer key needs type int or categorical")
    return Dimension(key, d.type, float(low), float(high))


def _check_corners(space: SearchSpace, base: Config, src: str) -> None:
    """Both corners, with every categorical choice at each, must make a valid config."""
    for corner in space.corners():
        points = [corner] + [
            {**corner, d.key: c} for d in space.dims if d.kind == "categorical" for c in d.choices
        ]
        for point in points:
            try:
                base.with_overrides(point, source=src)
            except ConfigError as exc:
                raise SpecError(f"{exc} (at a corner of the search space)") from None


def space_dim(space: SearchSpace, key: str) -> Dimension:
    return next(d for d in space.dims if d.key == key)


def flatten_space(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested or dotted keys down to the distribution mappings (those with a 'type')."""
    out = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not _DIM_FIELDS & set(v):
            out.update(flatten_space(v, f"{key}."))
        else:
            out[key] = v
    return out


def checked_overrides(
    over: dict[str, Any], base: Config, refusal: Callable[[str], str | None], where: str
) -> dict[str, Any]:
    """Dotted overrides, flattened; a refused or unknown key or a bad value raises, named."""
    flat = flatten(over, source=where)
    for key in flat:
        why = refusal(key)
        if why:
            raise SpecError(f"{where}: {key}: {why}")
    try:
        base.with_overrides(flat, source=where)
    except SpecError:
        raise
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    return flat


def variants_space(variants: dict[str, dict[str, Any]], base: Config, src: str) -> SearchSpace:
    """An ablation's space: one categorical dimension per key a variant sets, holding every value
    the variants give it (the base config's value for a variant that leaves it alone)."""
    flat_base = base.flat()
    dims = []
    for key in sorted({k for over in variants.values() for k in over}):
        values = [over.get(key, flat_base[key]) for over in variants.values()]
        choices = tuple(dict.fromkeys(tuple(v) if isinstance(v, list) else v for v in values))
        dims.append(Dimension(key, "categorical", choices=choices))
    return SearchSpace(tuple(dims), source=src)
