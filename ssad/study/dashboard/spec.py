"""A dashboard file (``dashboards/*.yaml``): its panel types, their options, and the loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ssad.config import Config, read_yaml_mapping
from ssad.study.spec import StudySpec

__all__ = [
    "ABLATION_DASHBOARD",
    "DEFAULT_DASHBOARD",
    "HISTORY",
    "OVERVIEW",
    "STUDY_WIDE",
    "Dashboard",
    "Panel",
    "PanelType",
    "dashboard_for",
    "load_dashboard",
]

DEFAULT_DASHBOARD = Path(__file__).resolve().parents[3] / "dashboards" / "study.yaml"
ABLATION_DASHBOARD = DEFAULT_DASHBOARD.with_name("ablation.yaml")

PanelType = Literal[
    "leaderboard",
    "status",
    "curves",
    "scatter",
    "importance",
    "optuna_history",
    "optuna_importance",
    "optuna_parallel",
    "asha_budget",
    "heatmap_gallery",
    "variant_bars",
    "forest",
]
_OPTUNA_OPTIONS = {"title": str, "metric": str, "include_stopped": bool}
_OPTIONS: dict[str, dict[str, type]] = {  # panel type → option → type
    "leaderboard": {"title": str},
    "status": {"title": str},
    "curves": {"title": str, "metric": str},
    "scatter": {"title": str, "metric": str, "param": str, "log_x": bool},
    "importance": {"title": str, "metric": str, "top": int, "include_stopped": bool},
    "optuna_history": _OPTUNA_OPTIONS,
    "optuna_importance": _OPTUNA_OPTIONS,
    "optuna_parallel": {**_OPTUNA_OPTIONS, "params": list, "top": int},
    "asha_budget": {"title": str},
    "heatmap_gallery": {"title": str, "max_images": int},
    "variant_bars": {"title": str, "metric": str},
    "forest": {"title": str, "metric": str},
}
OVERVIEW = ("leaderboard", "status")  # side by side at the top
STUDY_WIDE = (*OVERVIEW, "variant_bars", "forest", "heatmap_gallery")  # then full width
HISTORY = (  # per-class panels that read metric histories
    "curves",
    "scatter",
    "importance",
    "optuna_history",
    "optuna_importance",
    "optuna_parallel",
)
_TOP = {"importance": 10, "optuna_parallel": 6}  # default of ``top``


@dataclass(frozen=True)
class Panel:
    """One panel; ``index`` is its position in the file's ``panels`` list (for error messages)."""

    index: int
    type: PanelType
    title: str | None = None
    metric: str | None = None  # None: the study's metric
    param: str | None = None
    params: tuple[str, ...] = ()  # optuna_parallel: the axes (default: the ``top`` important)
    log_x: bool = False
    top: int | None = None  # None: the panel type's default (_TOP)
    include_stopped: bool | None = None  # None: True for importance, False for optuna panels
    max_images: int = 4

    @property
    def stopped(self) -> bool:
        """Whether stopped trials count (at their last reported value)."""
        return self.type == "importance" if self.include_stopped is None else self.include_stopped

    @property
    def top_n(self) -> int:
        return self.top or _TOP.get(self.type, 10)

    @property
    def trials_word(self) -> str:
        """Which trials the panel counts, as its notes and labels say it."""
        return "finished or stopped" if self.stopped else "finished"

    def caption(self, study_metric: str) -> str:
        m = self.metric or study_metric
        default = {
            "leaderboard": "Leaderboard",
            "status": "Trials per class",
            "curves": f"{m} per epoch",
            "scatter": f"{self.param} vs final {m}",
            "importance": f"Correlation with final {m}",
            "optuna_history": f"Optimization history of final {m}",
            "optuna_importance": f"fANOVA importance for final {m}",
            "optuna_parallel": f"Parallel coordinates, final {m}",
            "asha_budget": "Epochs per trial",
            "heatmap_gallery": "Heatmaps of each class's best trial",
            "variant_bars": f"{m} per variant: mean and 95 % CI over seeds",
            "forest": f"{m}: variant − baseline, paired over (class, seed), 95 % CI",
        }
        return self.title or default[self.type]


@dataclass(frozen=True)
class Dashboard:
    """A validated dashboard file; ``name`` (the file stem) names the HTML artifact."""

    name: str
    title: str
    panels: tuple[Panel, ...]
    source: Path


def load_dashboard(path: str | Path) -> Dashboard:
    """Read and validate a dashboard file; errors name the file and the panel index/key."""
    path = Path(path)
    raw = read_yaml_mapping(path, error=ValueError, what="dashboard file")
    if set(raw) - {"title", "panels"}:
        raise ValueError(f"{path}: expected a mapping with keys 'title' and 'panels'")
    title, items = raw.get("title", path.stem), raw.get("panels")
    if not isinstance(title, str):
        raise ValueError(f"{path}: title: expected a string, got {title!r}")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: panels: expected a non-empty list of panels")
    config_keys = Config().flat()
    panels = [_panel(item, i, f"{path}: panels[{i}]", config_keys) for i, item in enumerate(items)]
    return Dashboard(name=path.stem, title=title, panels=tuple(panels), source=path)


def _panel(item: object, index: int, where: str, config_keys: dict[str, Any]) -> Panel:
    """One validated entry of ``panels``; ``where`` (file and index) starts every error."""
    if not isinstance(item, dict) or "type" not in item:
        raise ValueError(f"{where}: expected a mapping with a 'type'")
    kind, opts = item["type"], {k: v for k, v in item.items() if k != "type"}
    if kind not in _OPTIONS:
        raise ValueError(f"{where}.type: unknown panel type {kind!r}; use {sorted(_OPTIONS)}")
    allowed = _OPTIONS[kind]
    if unknown := sorted(set(opts) - set(allowed)):
        raise ValueError(f"{where} ({kind}): unknown option(s) {unknown}; use {list(allowed)}")
    for key, value in opts.items():
        typ = allowed[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ValueError(f"{where}.{key}: expected {typ.__name__}, got {value!r}")
    if kind == "scatter" and "param" not in opts:
        raise ValueError(f"{where}.param: a scatter panel needs a searched config key")
    if "param" in opts and opts["param"] not in config_keys:
        raise ValueError(f"{where}.param: {opts['param']!r} is not a config key")
    if "params" in opts:
        keys = opts["params"]
        if not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"{where}.params: expected a non-empty list of config keys")
        if bad := [k for k in keys if k not in config_keys]:
            raise ValueError(f"{where}.params: {bad} not config key(s)")
        opts["params"] = tuple(keys)
    for key in ("top", "max_images"):
        if opts.get(key, 1) < 1:
            raise ValueError(f"{where}.{key}: must be >= 1")
    return Panel(index=index, type=kind, **opts)


def dashboard_for(spec: StudySpec) -> Path:
    """The default dashboard of a study: ``ablation.yaml`` for an ablation, else ``study.yaml``."""
    return (
        ABLATION_DASHBOARD if getattr(spec, "kind", "search") == "ablation" else DEFAULT_DASHBOARD
    )
