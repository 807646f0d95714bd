"""Study specs and search spaces: YAML → validated, typed objects, before anything launches.

A study spec (``studies/*.yaml``) names classes, data, the base config, a search space file, the
searcher, the scheduler, metric/mode, budget, resources, Ray address, MLflow and storage. A search
space (``search_spaces/*.yaml``) maps dotted config keys to distributions. Every error names the
file and the key.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ssad.config import PRESETS, Config, ConfigError, flatten, read_yaml_mapping
from ssad.study.rules import (
    ablation_refusal,
    base_override_refusal,
    final_override_refusal,
    name_refusal,
    path_refusal,
    search_refusal,
)

__all__ = ["Dimension", "SearchSpace", "SpecError", "StudySpec", "load_search_space", "load_spec"]

log = logging.getLogger(__name__)

# Raw per-epoch validation metrics and their moving averages over epochs (ssad.study.trial).
METRICS = tuple(
    f"val_{m}{suffix}"
    for suffix in ("_ema", "")
    for m in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
)


class SpecError(ConfigError):
    """A study spec or search space is invalid (message names file and key)."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``float`` / ``logfloat`` / ``int`` (low..high) or ``categorical``."""

    key: str
    kind: Literal["float", "logfloat", "int", "categorical"]
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
        """``…_min`` key → its ``…_max`` partner where both are searched (max sampled after min)."""
        keys = set(self.keys)
        return {k: k[:-4] + "_max" for k in keys if k.endswith("_min") and k[:-4] + "_max" in keys}

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


def load_search_space(path: str | Path, *, base: Config | None = None) -> SearchSpace:
    """Parse and validate a search space file against the config schema and ``base``."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise SpecError(f"{src}: search space file not found")
    raw = _read_yaml(path)
    known = Config().flat()
    dims = []
    for key, d in flatten_space(raw).items():
        if key not in known:
            raise SpecError(f"{src}: {key}: not a config key")
        why = search_refusal(key)
        if why:
            raise SpecError(f"{src}: {key}: {why}")
        if not isinstance(d, dict) or "type" not in d:
            raise SpecError(
                f"{src}: {key}: expected a mapping with 'type' (float|logfloat|int|categorical)"
            )
        kind = d["type"]
        extra = set(d) - {"type", "low", "high", "choices"}
        if extra:
            raise SpecError(f"{src}: {key}: unknown field(s) {sorted(extra)}")
        if kind == "categorical":
            choices = d.get("choices")
            if not isinstance(choices, list) or not choices:
                raise SpecError(f"{src}: {key}: categorical needs a non-empty 'choices' list")
            dims.append(
                Dimension(
                    key,
                    kind,
                    choices=tuple(tuple(c) if isinstance(c, list) else c for c in choices),
                )
            )
            continue
        if kind not in ("float", "logfloat", "int"):
            raise SpecError(
                f"{src}: {key}: type must be float|logfloat|int|categorical, got {kind!r}"
            )
        low, high = d.get("low"), d.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise SpecError(f"{src}: {key}: needs numeric 'low' and 'high'")
        if low >= high:
            raise SpecError(f"{src}: {key}: low {low} must be < high {high}")
        if kind == "logfloat" and low <= 0:
            raise SpecError(f"{src}: {key}: logfloat needs low > 0, got {low}")
        if kind == "int" and (int(low) != low or int(high) != high):
            raise SpecError(f"{src}: {key}: int bounds must be integers")
        if kind != "int" and isinstance(known[key], int):  # bool too; 2.7 would fail in a trial
            raise SpecError(f"{src}: {key}: an integer key needs type int or categorical")
        dims.append(Dimension(key, kind, float(low), float(high)))
    if not dims:
        raise SpecError(f"{src}: empty search space")
    space = SearchSpace(tuple(dims), source=src)
    for lo, hi in space.pairs().items():
        dlo, dhi = space_dim(space, lo), space_dim(space, hi)
        if dlo.kind != "categorical" and dhi.kind != "categorical" and dlo.low > dhi.high:
            raise SpecError(
                f"{src}: {lo}: its lowest value {dlo.low} exceeds the highest {hi} {dhi.high}"
            )
    base = base or Config()
    for corner in space.corners():
        # every categorical choice, not only the first and last, at both corners
        points = [corner] + [
            {**corner, d.key: c} for d in space.dims if d.kind == "categorical" for c in d.choices
        ]
        for point in points:
            try:
                base.with_overrides(point, source=src)
            except ConfigError as exc:
                raise SpecError(f"{exc} (at a corner of the search space)") from None
    return space


def space_dim(space: SearchSpace, key: str) -> Dimension:
    return next(d for d in space.dims if d.key == key)


def flatten_space(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested or dotted keys down to the distribution mappings (those with a 'type')."""
    out = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not {"type", "low", "high", "choices"} & set(v):
            out.update(flatten_space(v, f"{key}."))
        else:
            out[key] = v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, error=SpecError)


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: Path
    classes: tuple[str, ...]
    data_root: str  # a folder or "synthetic"
    synthetic_seed: int
    base: Config  # preset + overrides applied; data.root set
    space: SearchSpace
    searcher: Literal["optuna", "grid", "ablation"] = "optuna"
    searcher_seed: int = 0
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = 2
    reduction_factor: int = 2
    metric: str = "val_image_auroc"
    mode: Literal["max", "min"] = "max"
    num_samples: int = 8  # configurations per class (grid: every grid point)
    seeds_per_config: int = 1
    cpu: float = 1.0
    gpu: float = 0.0
    max_concurrent: int = 2
    max_failures: int = 2
    ray_address: str | None = None
    tracking_uri: str = "sqlite:///runs/mlflow.db"
    experiment: str = "ssad"
    storage_path: Path = Path("runs/ray")
    final: dict[str, Any] = field(default_factory=dict)  # promotion overrides
    raw: dict[str, Any] = field(default_factory=dict)
    # kind "ablation": named override sets run over every class x seed, compared to a baseline
    kind: Literal["search", "ablation"] = "search"
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → dotted overrides
    baseline: str = ""
    metrics: tuple[str, ...] = ()  # ablation: the metrics of its table (``metric`` first)
    alpha: float = 0.05  # ablation: family-wise error rate of the verdicts (Holm)

    @property
    def max_epochs(self) -> int:
        """The longest schedule a trial can have (ASHA's max_t): the base config's epochs, or
        the largest searched value of ``train.phase1_epochs`` / ``train.phase2_epochs``."""
        total = 0
        for key in ("train.phase1_epochs", "train.phase2_epochs"):
            dim = next((d for d in self.space.dims if d.key == key), None) if self.space else None
            if dim is None:
                total += getattr(self.base.train, key.split(".")[1])
            else:
                total += int(max(dim.choices) if dim.kind == "categorical" else dim.high)
        return total

    def configs_per_class(self) -> int:
        if self.kind == "ablation":
            return len(self.variants)
        return len(self.space.grid()) if self.searcher == "grid" else self.num_samples

    def variant_epochs(self, overrides: dict[str, Any]) -> int:
        """Epochs of a trial with ``overrides`` (an ablation's variants may change them)."""
        cfg = self.base.with_overrides(overrides) if overrides else self.base
        return cfg.train.phase1_epochs + cfg.train.phase2_epochs

    def trials_per_class(self) -> int:
        return self.configs_per_class() * self.seeds_per_config

    def total_trials(self) -> int:
        return self.trials_per_class() * len(self.classes)


_SPEC_KEYS = {
    "name",
    "classes",
    "data",
    "base",
    "search_space",
    "searcher",
    "scheduler",
    "metric",
    "mode",
    "num_samples",
    "seeds_per_config",
    "resources",
    "max_concurrent",
    "max_failures",
    "ray_address",
    "mlflow",
    "storage_path",
    "final",
    "kind",
}
# An ablation spec has variants instead of a search: these keys belong to searches only, and the
# ablation keys to ablations only.
_SEARCH_ONLY = {"search_space", "searcher", "scheduler", "num_samples", "seeds_per_config"}
_ABLATION_ONLY = {"variants", "baseline", "seeds", "metrics", "alpha"}
ABLATION_METRICS = ("val_image_auroc", "val_pixel_auroc", "val_aupro")
ABLATION_VAL_EVERY = "train.val_every"  # an ablation's base may set it (default 0: at the end)


def load_spec(path: str | Path, *, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read and validate a study spec (``overrides``: dotted spec keys, e.g. ``num_samples``)."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise SpecError(f"{src}: study spec not found")
    raw = _read_yaml(path)
    if overrides:
        for key, value in overrides.items():
            _set_spec_key(raw, key, value, src)
    kind = raw.get("kind", "search")
    if kind not in ("search", "ablation"):
        raise SpecError(f"{src}: kind: search | ablation, got {kind!r}")
    known = (_SPEC_KEYS | _ABLATION_ONLY) - _SEARCH_ONLY if kind == "ablation" else _SPEC_KEYS
    unknown = set(raw) - known
    if unknown:
        hint = ""
        if unknown & (_SEARCH_ONLY | _ABLATION_ONLY):
            hint = f" ({sorted(unknown)} belong to kind {'search' if kind == 'ablation' else 'ablation'} specs)"
        raise SpecError(
            f"{src}: unknown key(s) {sorted(unknown)} for kind {kind}{hint}; known: {sorted(known)}"
        )

    def get(section: dict, key: str, typ, default, where: str):
        value = section.get(key, default)
        if value is None and default is None:
            return None
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise SpecError(f"{src}: {where}{key}: expected {typ.__name__}, got {value!r}")
        return value

    def section(key: str) -> dict:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise SpecError(f"{src}: {key}: expected a mapping")
        return value

    name = get(raw, "name", str, path.stem, "")
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise SpecError(f"{src}: classes: expected a non-empty list of class names")
    data, base_sec, srch, sched = (
        section("data"),
        section("base"),
        section("searcher"),
        section("scheduler"),
    )
    res, mlf = section("resources"), section("mlflow")
    for sec_name, sec, keys in (
        ("data", data, {"root", "synthetic_seed"}),
        ("base", base_sec, {"preset", "config", "overrides"}),
        ("searcher", srch, {"type", "seed"}),
        ("scheduler", sched, {"type", "grace_period", "reduction_factor"}),
        ("resources", res, {"cpu", "gpu"}),
        ("mlflow", mlf, {"tracking_uri", "experiment"}),
    ):
        bad = set(sec) - keys
        if bad:
            raise SpecError(
                f"{src}: {sec_name}: unknown key(s) {sorted(bad)}; known: {sorted(keys)}"
            )
    data_root = get(data, "root", str, "synthetic", "data.")
    preset = base_sec.get("preset")
    if preset is not None and preset not in PRESETS:
        raise SpecError(
            f"{src}: base.preset: unknown preset {preset!r}; choose from {sorted(PRESETS)}"
        )
    base_over = base_sec.get("overrides") or {}
    if not isinstance(base_over, dict):
        raise SpecError(f"{src}: base.overrides: expected a mapping of dotted keys")
    base_flat = flatten(base_over, source=src)
    for key in base_flat:
        why = base_override_refusal(key)
        if why and not (kind == "ablation" and key == ABLATION_VAL_EVERY):
            raise SpecError(f"{src}: base.overrides: {key}: {why}")
    if kind == "ablation" and ABLATION_VAL_EVERY not in base_flat:
        # an ablation compares final models (no early stopping): validate after the last epoch
        # only, unless the spec asks for per-epoch curves
        base_over = {**base_flat, ABLATION_VAL_EVERY: 0}
    from ssad.config import load_config

    base_file = base_sec.get("config")
    base_path = (path.parent / base_file) if base_file else None
    base = load_config(base_path, preset=preset)
    base = base.with_overrides(flatten(base_over, source=src), source=f"{src}: base.overrides")
    if data_root != "synthetic":  # the synthetic root is generated (and set) by the runner
        base = base.with_overrides({"data.root": str(Path(data_root).expanduser().resolve())})
    if base.model.weights not in ("none", "imagenet"):  # a file: trials run in other folders
        weights = str(Path(base.model.weights).expanduser().resolve())
        base = base.with_overrides({"model.weights": weights})
    ablation: dict[str, Any] = {}
    if kind == "ablation":
        ablation = _load_variants(raw, base, src)
        space = ablation.pop("space")
        searcher = "ablation"
    else:
        space_file = raw.get("search_space")
        if not isinstance(space_file, str):
            raise SpecError(f"{src}: search_space: expected a path to a search space YAML")
        space_path = (path.parent / space_file).resolve()
        if not space_path.is_file():
            raise SpecError(f"{src}: search_space: file not found: {space_path}")
        space = load_search_space(space_path, base=base)
        searcher = get(srch, "type", str, "optuna", "searcher.")
        if searcher not in ("optuna", "grid"):
            raise SpecError(f"{src}: searcher.type: optuna | grid, got {searcher!r}")
    if searcher == "grid":
        try:
            space.grid()  # raises for continuous dimensions
        except SpecError as exc:
            raise SpecError(f"{src}: searcher.type: grid: {space.source}: {exc}") from None
    scheduler = get(sched, "type", str, "asha" if kind == "search" else "none", "scheduler.")
    if scheduler not in ("asha", "none"):
        raise SpecError(f"{src}: scheduler.type: asha | none, got {scheduler!r}")
    metric = get(raw, "metric", str, "val_image_auroc", "")
    if metric not in METRICS:
        raise SpecError(f"{src}: metric: choose from {list(METRICS)}, got {metric!r}")
    mode = get(raw, "mode", str, "max", "")
    if mode not in ("max", "min"):
        raise SpecError(f"{src}: mode: max | min, got {mode!r}")
    spec = StudySpec(
        name=name,
        path=path.resolve(),
        classes=tuple(classes),
        data_root=data_root,
        synthetic_seed=get(data, "synthetic_seed", int, 0, "data."),
        base=base,
        space=space,
        searcher=searcher,
        searcher_seed=get(srch, "seed", int, 0, "searcher."),
        scheduler=scheduler,
        grace_period=get(sched, "grace_period", int, 2, "scheduler."),
        reduction_factor=get(sched, "reduction_factor", int, 2, "scheduler."),
        metric=metric,
        mode=mode,
        num_samples=get(raw, "num_samples", int, 8, ""),
        seeds_per_config=get(raw, "seeds", int, 3, "")
        if kind == "ablation"
        else get(raw, "seeds_per_config", int, 1, ""),
        cpu=get(res, "cpu", float, 1.0, "resources."),
        gpu=get(res, "gpu", float, 0.0, "resources."),
        max_concurrent=get(raw, "max_concurrent", int, 2, ""),
        max_failures=get(raw, "max_failures", int, 2, ""),
        ray_address=get(raw, "ray_address", str, None, ""),
        tracking_uri=get(mlf, "tracking_uri", str, "sqlite:///runs/mlflow.db", "mlflow."),
        experiment=get(mlf, "experiment", str, f"ssad-{name}", "mlflow."),
        storage_path=Path(get(raw, "storage_path", str, "runs/ray", "")).expanduser().resolve(),
        final=section("final"),
        raw=raw,
        kind=kind,
        **ablation,
    )
    if kind == "ablation":
        if spec.metric not in spec.metrics:
            raise SpecError(
                f"{src}: metric: {spec.metric!r} must be one of metrics {list(spec.metrics)}"
            )
        if not 0 < spec.alpha < 1:
            raise SpecError(f"{src}: alpha: must be in (0, 1), got {spec.alpha}")
    _check_numbers(spec, src)
    if spec.scheduler == "asha" and spec.grace_period <= spec.base.train.phase1_epochs:
        log.warning(
            "%s: scheduler.grace_period %d <= train.phase1_epochs %d: ASHA's first rung compares "
            "trials before phase 2 (and phase-2 settings) have any effect",
            src,
            spec.grace_period,
            spec.base.train.phase1_epochs,
        )
    return spec


def _load_variants(raw: dict[str, Any], base: Config, src: str) -> dict[str, Any]:
    """An ablation's variants, baseline and metrics; the space holds every value they set."""
    variants = raw.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise SpecError(f"{src}: variants: expected a mapping of variant name → dotted overrides")
    baseline = raw.get("baseline", "baseline")
    if not isinstance(baseline, str):
        raise SpecError(f"{src}: baseline: expected a variant name, got {baseline!r}")
    out: dict[str, dict[str, Any]] = {}
    if baseline not in variants:
        out[baseline] = {}  # the base config itself
    seen: dict[str, str] = {}
    for name, over in variants.items():
        where = f"{src}: variants.{name}"
        why = name_refusal(str(name))
        if why:
            raise SpecError(f"{where}: {why}")
        if not isinstance(over, dict | None):
            raise SpecError(f"{where}: expected a mapping of dotted config keys")
        flat = checked_overrides(over or {}, base, ablation_refusal, where)
        resolved = base.with_overrides(flat).to_dict()
        twin = seen.get(repr(resolved))
        if twin is not None:
            log.warning("%s: variant %s resolves to the same config as %s", src, name, twin)
        seen[repr(resolved)] = str(name)
        out[str(name)] = flat
    if baseline in variants:  # the baseline first
        out = {baseline: out[baseline], **{k: v for k, v in out.items() if k != baseline}}
    if len(out) < 2:
        raise SpecError(
            f"{src}: variants: an ablation needs at least one variant besides {baseline!r}"
        )
    metrics = raw.get("metrics", list(ABLATION_METRICS))
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics):
        raise SpecError(f"{src}: metrics: a non-empty list from {list(METRICS)}, got {metrics!r}")
    alpha = raw.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise SpecError(f"{src}: alpha: expected a number, got {alpha!r}")
    flat_base = base.flat()
    keys = sorted({k for over in out.values() for k in over})
    dims = []
    for key in keys:
        values = [over.get(key, flat_base[key]) for over in out.values()]
        choices = tuple(dict.fromkeys(tuple(v) if isinstance(v, list) else v for v in values))
        dims.append(Dimension(key, "categorical", choices=choices))
    return {
        "space": SearchSpace(tuple(dims), source=src),
        "variants": out,
        "baseline": baseline,
        "metrics": tuple(metrics),
        "alpha": float(alpha),
    }


def _check_numbers(spec: StudySpec, src: str) -> None:
    checks = [
        ("num_samples", spec.num_samples >= 1, "must be >= 1"),
        ("seeds_per_config", spec.seeds_per_config >= 1, "must be >= 1"),
        ("max_concurrent", spec.max_concurrent >= 1, "must be >= 1"),
        ("max_failures", spec.max_failures >= 0, "must be >= 0"),
        ("resources.cpu", spec.cpu > 0, "must be > 0"),
        (
            "resources.gpu",
            spec.gpu >= 0 and (spec.gpu <= 1 or spec.gpu == int(spec.gpu)),
            "a fraction in [0, 1] or a whole number of GPUs",
        ),
        (
            "scheduler.grace_period",
            1 <= spec.grace_period <= spec.max_epochs,
            f"must be in [1, max epochs = {spec.max_epochs}]",
        ),
        ("scheduler.reduction_factor", spec.reduction_factor >= 2, "must be >= 2"),
    ]
    for key, ok, msg in checks:
        if not ok:
            raise SpecError(f"{src}: {key}: {msg}")
    if len(set(spec.classes)) != len(spec.classes):
        raise SpecError(f"{src}: classes: duplicated class names")
    _check_paths(spec, src)
    final_over = spec.final.get("overrides", {})
    if set(spec.final) - {"overrides"} or not isinstance(final_over, dict):
        raise SpecError(f"{src}: final: expected {{overrides: {{dotted.key: value}}}}")
    checked_overrides(final_over, spec.base, final_override_refusal, f"{src}: final.overrides")


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


def _check_paths(spec: StudySpec, src: str) -> None:
    """Nothing a spec names may write outside the study's output folders (see rules.py)."""
    names = [("name", spec.name), *((f"classes[{i}]", c) for i, c in enumerate(spec.classes))]
    db = spec.tracking_uri.removeprefix("sqlite:///")
    paths = [("storage_path", str(spec.raw.get("storage_path", "")))]
    paths += [("mlflow.tracking_uri", db)] if db != spec.tracking_uri else []
    for key, why in [(k, name_refusal(n)) for k, n in names] + [
        (k, path_refusal(p)) for k, p in paths
    ]:
        if why:
            raise SpecError(f"{src}: {key}: {why}")


def _set_spec_key(raw: dict, key: str, value: Any, src: str) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"{src}: --set {key}: {part} is not a mapping")
    node[parts[-1]] = value
