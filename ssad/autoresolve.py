"""Every per-class ``auto`` of a config, resolved once, when a class model starts training.

:func:`resolve_class_config` is called once per class (``ssad.pipeline.prepare``) and the config
it returns is the one trained, validated, scored and saved (``config.yaml``): code below it never
sees a per-class ``auto``. Resolved here:

- ``data.category`` / ``data.placement``: the class's own (``ssad_classes.yaml`` / the MVTec AD
  table, as :func:`ssad.data.mvtec.load_class` read them);
- ``train.phase1_epochs`` / ``train.phase2_epochs``: 0 for a category ``train.categories`` leaves
  out (the class keeps its pretrained weights);
- ``memory.fill``: :func:`bank_fill`;
- ``eval.position_norm``: :func:`position_norm`.

``train.device`` and ``memory.backend`` also accept ``auto``; they name the machine, not the class,
so they are resolved where the model and the bank are placed (a saved detector can move).
"""

from __future__ import annotations

from ssad.config import CATEGORIES, Config
from ssad.data.mvtec import ClassData, class_info

__all__ = [
    "bank_fill",
    "class_category",
    "position_norm",
    "resolve_class_config",
    "scheduled_epochs",
]


def bank_fill(config: Config, category: str) -> str:
    """``memory.fill`` resolved for a class: ``auto`` is fifo for textures, final for objects
    (dense scoring needs backbone features, and a model that is not trained collects no FIFO
    bank, so both are always final)."""
    fill = config.memory.fill
    if fill == "auto":
        trained = config.train.phase1_epochs + config.train.phase2_epochs > 0
        texture = category == "texture" and config.eval.scoring == "windows"
        fill = "fifo" if texture and trained else "final"
    return fill


def position_norm(config: Config, category: str, placement: str) -> str:
    """``eval.position_norm`` resolved for a class: ``auto`` is shift for an object that sits in
    the same place in every image, none for textures and moving objects
    (docs/measurements-scratch.md, "The signal")."""
    mode = config.eval.position_norm
    if mode == "auto":
        mode = "shift" if category == "object" and placement == "fixed" else "none"
    return mode


def class_category(config: Config) -> str:
    """``data.category``, or the class's own (``ssad_classes.yaml`` / the MVTec AD table) when
    ``auto``."""
    if config.data.category != "auto":
        return config.data.category
    return class_info(config.data.root, config.data.class_name)[0]


def scheduled_epochs(config: Config, category: str | None = None) -> int:
    """Epochs the class of ``config`` trains: 0 unless ``train.categories`` names its category
    (``category``, or :func:`class_category`, read only when some category is left out)."""
    t = config.train
    total = t.phase1_epochs + t.phase2_epochs
    if set(t.categories) >= set(CATEGORIES):
        return total
    return total if (category or class_category(config)) in t.categories else 0


def resolve_class_config(config: Config, data: ClassData) -> Config:
    """``config`` with every per-class ``auto`` resolved for ``data`` (see the module docstring).
    Idempotent: a resolved config comes back unchanged."""
    overrides: dict[str, object] = {}
    if config.data.category == "auto":
        overrides["data.category"] = data.category
    if config.data.placement == "auto":
        overrides["data.placement"] = data.placement
    if (
        scheduled_epochs(config, data.category) == 0
        and config.train.phase1_epochs + config.train.phase2_epochs
    ):
        overrides.update({"train.phase1_epochs": 0, "train.phase2_epochs": 0})
    config = config.with_overrides(overrides, source=f"class {data.name}") if overrides else config
    resolved: dict[str, object] = {}
    fill = bank_fill(config, data.category)  # after the epochs: an untrained model fills final
    if fill != config.memory.fill:
        resolved["memory.fill"] = fill
    mode = position_norm(config, data.category, data.placement)
    if mode != config.eval.position_norm:
        resolved["eval.position_norm"] = mode
    if not resolved:
        return config
    return config.with_overrides(resolved, source=f"class {data.name}")
