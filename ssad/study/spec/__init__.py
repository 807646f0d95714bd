"""Study specs: YAML → a validated, typed :class:`StudySpec`, before anything launches.

A study spec (``studies/*.yaml``) names classes, data, the base config, a search space file (or,
for ``kind: ablation``, named variants), the searcher, the scheduler, metric/mode, budget,
resources, Ray address, MLflow and storage. The file's schema is
:class:`ssad.study.spec.schema.SpecFile`: frozen dataclasses read by the same typed machinery as the
class config (:mod:`ssad.typed`), so every default sits in one place and every error names the
file and the key. Search spaces: :mod:`ssad.study.spec.space`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ssad.config import Config, flatten, load_config
from ssad.study.spec.rules import (
    ablation_refusal,
    base_override_refusal,
    final_override_refusal,
    name_refusal,
    path_refusal,
)
from ssad.study.spec.schema import (
    ABLATION_KEYS,
    ABLATION_METRICS,
    ABLATION_VAL_EVERY,
    DEFAULT_TRACKING_URI,
    METRICS,
    SEARCH_KEYS,
    SpecFile,
)
from ssad.study.spec.space import (
    Dimension,
    SearchSpace,
    SpecError,
    checked_overrides,
    flatten_space,
    load_search_space,
    space_dim,
    variants_space,
)
from ssad.study.tracking.names import default_experiment
from ssad.typed import build, read_yaml_mapping

__all__ = [
    "ABLATION_METRICS",
    "DEFAULT_TRACKING_URI",
    "METRICS",
    "Dimension",
    "SearchSpace",
    "SpecError",
    "SpecFile",
    "StudySpec",
    "checked_overrides",
    "flatten_space",
    "load_search_space",
    "load_spec",
    "space_dim",
]

log = logging.getLogger(__name__)

# ---- the resolved spec ------------------------------------------------------------------------
@dataclass(frozen=True)
class StudySpec:
    """A loaded study: the file's values resolved (paths absolute, base config built, search
    space read or made from the variants). Defaults live in :class:`SpecFile`."""

    name: str
    path: Path
    classes: tuple[str, ...]
    data_root: str  # a folder or "synthetic"
    synthetic_seed: int
    base: Config  # preset + overrides applied; data.root set
    space: SearchSpace
    searcher: Literal["optuna", "grid", "ablation"]
    searcher_seed: int
    scheduler: Literal["asha", "none"]
    grace_period: int
    reduction_factor: int
    metric: str
    mode: Literal["max", "min"]
    num_samples: int
    seeds_per_config: int
    cpu: float
    gpu: float
    max_concurrent: int
    max_failures: int
    ray_address: str | None
    tracking_uri: str
    experiment: str
    storage_path: Path
    final: dict[str, Any]  # {"overrides": {dotted key: value}}: promotion's config changes
    raw: dict[str, Any]  # the file's mapping, --set overrides applied
    kind: Literal["search", "ablation"] = "search"
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → dotted overrides
    baseline: str = ""
    metrics: tuple[str, ...] = ()  # ablation: the metrics of its table (``metric`` first)
    alpha: float = 0.05

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


# ---- loading ----------------------------------------------------------------------------------
def load_spec(path: str | Path, *, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read and validate a study spec (``overrides``: dotted spec keys, e.g. ``num_samples``)."""
    path = Path(path)
    src = str(path)
    raw, f = _read(path, overrides or {})
    base = _base_config(f, path)
    ablation: dict[str, Any] = {}
    if f.kind == "ablation":
        variants, baseline = _variants(f, base, src)
        space = variants_space(variants, base, src)
        ablation = {"variants": variants, "baseline": baseline, "metrics": f.metrics}
    else:
        space = _search_space(f, path, base)
    name = f.name if f.name is not None else path.stem
    search = f.kind == "search"
    spec = StudySpec(
        name=name,
        path=path.resolve(),
        classes=f.classes,
        data_root=f.data.root,
        synthetic_seed=f.data.synthetic_seed,
        base=base,
        space=space,
        searcher=f.searcher.type if search else "ablation",
        searcher_seed=f.searcher.seed,
        scheduler=f.scheduler.type if search else "none",
        grace_period=f.scheduler.grace_period,
        reduction_factor=f.scheduler.reduction_factor,
        metric=f.metric,
        mode=f.mode,
        num_samples=f.num_samples,
        seeds_per_config=f.seeds_per_config if search else f.seeds,
        cpu=f.resources.cpu,
        gpu=f.resources.gpu,
        max_concurrent=f.max_concurrent,
        max_failures=f.max_failures,
        ray_address=f.ray_address,
        tracking_uri=f.mlflow.tracking_uri,
        experiment=f.mlflow.experiment or default_experiment(name),
        storage_path=Path(f.storage_path).expanduser().resolve(),
        final={"overrides": f.final.overrides},
        raw=raw,
        kind=f.kind,
        alpha=f.alpha,
        **ablation,
    )
    _check(spec, src)
    return spec


def _read(path: Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], SpecFile]:
    """The file's mapping with ``overrides`` set, and its typed :class:`SpecFile`."""
    src = str(path)
    if not path.is_file():
        raise SpecError(f"{src}: study spec not found")
    raw = read_yaml_mapping(path, error=SpecError)
    for key, value in overrides.items():
        _set_spec_key(raw, key, value, src)
    kind = raw.get("kind", "search")
    if kind not in ("search", "ablation"):
        raise SpecError(f"{src}: kind: search | ablation, got {kind!r}")
    other = "search" if kind == "ablation" else "ablation"
    foreign = SEARCH_KEYS if kind == "ablation" else ABLATION_KEYS
    known = set(SpecFile.__dataclass_fields__) - foreign
    unknown = set(raw) - known
    if unknown:
        stray = sorted(unknown & foreign)
        hint = f" ({stray} belong to kind {other} specs)" if stray else ""
        raise SpecError(
            f"{src}: unknown key(s) {sorted(unknown)} for kind {kind}{hint}; known: {sorted(known)}"
        )
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise SpecError(f"{src}: classes: expected a non-empty list of class names")
    return raw, build(SpecFile, raw, source=src, error=SpecError)


def _base_config(f: SpecFile, path: Path) -> Config:
    """The study's base config: preset → config file → base.overrides; data root and a weights
    file made absolute (trials run in other folders)."""
    src = str(path)
    base_flat = flatten(f.base.overrides, source=src, error=SpecError)
    for key in base_flat:
        why = base_override_refusal(key)
        if why and not (f.kind == "ablation" and key == ABLATION_VAL_EVERY):
            raise SpecError(f"{src}: base.overrides: {key}: {why}")
    if f.kind == "ablation" and ABLATION_VAL_EVERY not in base_flat:
        # an ablation compares final models (no early stopping): validate after the last epoch
        # only, unless the spec asks for per-epoch curves
        base_flat = {**base_flat, ABLATION_VAL_EVERY: 0}
    base_path = (path.parent / f.base.config) if f.base.config else None
    base = load_config(base_path, preset=f.base.preset)
    base = base.with_overrides(base_flat, source=f"{src}: base.overrides")
    if f.data.root != "synthetic":  # the synthetic root is generated (and set) by the runner
        base = base.with_overrides({"data.root": str(Path(f.data.root).expanduser().resolve())})
    if base.model.weights not in ("none", "imagenet"):
        weights = str(Path(base.model.weights).expanduser().resolve())
        base = base.with_overrides({"model.weights": weights})
    return base


def _search_space(f: SpecFile, path: Path, base: Config) -> SearchSpace:
    src = str(path)
    if f.search_space is None:
        raise SpecError(f"{src}: search_space: expected a path to a search space YAML")
    space_path = (path.parent / f.search_space).resolve()
    if not space_path.is_file():
        raise SpecError(f"{src}: search_space: file not found: {space_path}")
    space = load_search_space(space_path, base=base)
    if f.searcher.type == "grid":
        try:
            space.grid()  # raises for continuous dimensions
        except SpecError as exc:
            raise SpecError(f"{src}: searcher.type: grid: {space.source}: {exc}") from None
    return space


def _variants(f: SpecFile, base: Config, src: str) -> tuple[dict[str, dict[str, Any]], str]:
    """An ablation's variants (the baseline first; the base config itself when the baseline is
    not among them) and the baseline's name."""
    if not f.variants:
        raise SpecError(f"{src}: variants: expected a mapping of variant name → dotted overrides")
    out: dict[str, dict[str, Any]] = {}
    if f.baseline not in f.variants:
        out[f.baseline] = {}
    seen: dict[str, str] = {}
    for name, over in f.variants.items():
        where = f"{src}: variants.{name}"
        why = name_refusal(str(name))
        if why:
            raise SpecError(f"{where}: {why}")
        if not isinstance(over, dict | None):
            raise SpecError(f"{where}: expected a mapping of dotted config keys")
        flat = checked_overrides(over or {}, base, ablation_refusal, where)
        resolved = repr(base.with_overrides(flat).to_dict())
        if resolved in seen:
            twin = seen[resolved]
            log.warning("%s: variant %s resolves to the same config as %s", src, name, twin)
        seen[resolved] = str(name)
        out[str(name)] = flat
    if f.baseline in f.variants:
        out = {f.baseline: out[f.baseline], **{k: v for k, v in out.items() if k != f.baseline}}
    if len(out) < 2:
        raise SpecError(
            f"{src}: variants: an ablation needs at least one variant besides {f.baseline!r}"
        )
    if not f.metrics:
        raise SpecError(f"{src}: metrics: a non-empty list from {list(METRICS)}, got []")
    return out, f.baseline


def _check(spec: StudySpec, src: str) -> None:
    """Ranges, names, paths and final overrides; a warning for an ASHA rung before phase 2."""
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
        ("classes", len(set(spec.classes)) == len(spec.classes), "duplicated class names"),
    ]
    if spec.kind == "ablation":
        checks += [
            (
                "metric",
                spec.metric in spec.metrics,
                f"{spec.metric!r} must be one of metrics {list(spec.metrics)}",
            ),
            ("alpha", 0 < spec.alpha < 1, f"must be in (0, 1), got {spec.alpha}"),
        ]
    for key, ok, msg in checks:
        if not ok:
            raise SpecError(f"{src}: {key}: {msg}")
    _check_paths(spec, src)
    over = spec.final["overrides"]
    checked_overrides(over, spec.base, final_override_refusal, f"{src}: final.overrides")
    if spec.scheduler == "asha" and spec.grace_period <= spec.base.train.phase1_epochs:
        log.warning(
            "%s: scheduler.grace_period %d <= train.phase1_epochs %d: ASHA's first rung compares "
            "trials before phase 2 (and phase-2 settings) have any effect",
            src,
            spec.grace_period,
            spec.base.train.phase1_epochs,
        )


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
