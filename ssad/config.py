"""Typed, frozen configuration of one class model.

Every tunable value has a dotted key (``defects.big.area_max``); YAML files, ``--set`` overrides,
search spaces and ablations all speak in those keys. Unknown keys, wrong types and impossible ranges
raise :class:`ConfigError` naming the source (file) and the key, before any compute is spent.
The defaults are the recommended run (the ``cpu`` preset); the seed project's recipe is the ``seed``
preset (:mod:`ssad.presets`). The typing machinery is :mod:`ssad.typed`, shared with the study
spec.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from ssad.presets import PRESETS
from ssad.typed import ConfigError, build, flatten, read_yaml_mapping, set_dotted, to_plain

__all__ = [
    "CATEGORIES",
    "PRESETS",
    "Config",
    "ConfigError",
    "DataConfig",
    "DefectShape",
    "DefectsConfig",
    "EvalConfig",
    "MemoryConfig",
    "ModelConfig",
    "PretextConfig",
    "TrainConfig",
    "flatten",
    "load_config",
    "parse_overrides",
    "read_yaml_mapping",
    "replace_config",
]


CATEGORIES = ("texture", "object")  # a class's kind: data.category, train.categories
# Removed options by their "off" value, which a saved config.yaml may still hold (docs/detector.md)
REMOVED_KEYS: dict[str, Any] = {"memory.views": 0}


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/synthetic"  # MVTec-layout folder
    class_name: str = ""
    image_size: int = 256
    category: Literal["auto", "texture", "object"] = "auto"  # auto: MVTec table / ssad_classes.yaml
    placement: Literal["auto", "fixed", "moving"] = "auto"  # moving: foreground mask per image
    # Selection data: "test_half" = a fixed, stratified half of the test split (the other half is
    # the test split); "synthetic" = held-out normal training images with synthetic defects added
    # (the real test split is then never seen before promotion).
    val_source: Literal["test_half", "synthetic"] = "test_half"
    val_fraction: float = 0.5  # test_half: share of the test split used for validation
    holdout_fraction: float = 0.2  # synthetic: share of train/good held out for validation
    val_draws: int = 3  # synthetic: defective copies drawn per held-out image
    split_seed: int = 0


@dataclass(frozen=True)
class DefectShape:
    """Area (fraction of the image) and aspect ranges of one synthetic defect kind.

    The aspect ratio is drawn from ``[aspect_low_min, aspect_low_max) ∪ (aspect_high_min,
    aspect_high_max]``; the seed keeps 1 out of both intervals.
    """

    area_min: float
    area_max: float
    patch_area_min: float
    patch_area_max: float
    aspect_low_min: float
    aspect_low_max: float
    aspect_high_min: float
    aspect_high_max: float


@dataclass(frozen=True)
class DefectsConfig:
    big: DefectShape = DefectShape(0.03, 0.1, 0.1, 0.2, 0.3, 1.0, 1.0, 3.3)
    scar: DefectShape = DefectShape(0.003, 0.007, 0.01, 0.02, 0.05, 0.5, 2.5, 3.3)
    scar_angle: float = 45.0  # scar rotation drawn from [-scar_angle, scar_angle] degrees
    fills: tuple[str, ...] = ("cutpaste", "mean", "random")


@dataclass(frozen=True)
class PretextConfig:
    classes: Literal[2, 3, 4] = 3  # 2: no scars (normal / big); 4 adds the seed's 'line' defect
    mode: Literal["image", "patch"] = "patch"
    patch_size: int = 64
    jitter: float = 0.1  # brightness/contrast/saturation strength; hue uses jitter / 2


@dataclass(frozen=True)
class ModelConfig:
    # resnet18 (the seed's) | efficientnet_lite0 (ImageNet weights ship with ssad) | a timm name
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"  # none | imagenet | path to a state dict
    fusion_dim: int = 512
    head_dims: tuple[int, ...] = (512, 512)
    embedding_dim: int = 128


@dataclass(frozen=True)
class TrainConfig:
    phase1_epochs: int = 1
    phase1_lr: float = 0.03
    phase2_epochs: int = 2
    phase2_lr: float = 0.001  # 0: weights fixed, BatchNorm statistics re-estimated in phase 2
    # The class categories the pretext task trains; a class of another category keeps the
    # pretrained weights (0 epochs, resolved per class into the saved config:
    # ssad.autoresolve.resolve_class_config).
    categories: tuple[str, ...] = ("texture",)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32
    min_samples: int = 1024  # the train list is repeated to at least this many samples per epoch
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Training forward passes: "fp32", or "bf16" autocast (convolutions and matmuls in bfloat16,
    # BatchNorm, loss and weights in fp32; CPU and CUDA). Banks and scoring always run in fp32.
    precision: Literal["fp32", "bf16"] = "fp32"
    workers: int = 0
    val_every: int = 1  # evaluate the validation split every N epochs (0: only at the end)
    progress: bool = True


@dataclass(frozen=True)
class MemoryConfig:
    # "final": rebuilt after training (and for every validation pass) from eval-mode features of
    # the current weights over the normal training images, subsampled to bank_size: the saved
    # model's bank. "fifo": the seed's train-mode embeddings (y = 0 and ŷ = 0) collected during
    # training, the newest kept. "auto": fifo for textures, final for objects. Dense: final.
    fill: Literal["auto", "final", "fifo"] = "final"
    subsample: Literal["coreset", "random"] = "coreset"  # final fill: greedy k-center or random
    # What the bank holds per window/image: "embedding" = the projection head's output z (the
    # seed's), "backbone" = pooled layer2/3/4 features, each stage L2-normalised (896-d; the
    # representation before the head). Dense scoring uses its own features.
    feature: Literal["embedding", "backbone"] = "embedding"
    bank_size: int = 262144  # all positions of up to 256 training images at 256 px
    k: int = 1
    # kNN distance: "cosine" ((1 - cos) / 2 of L2-normalised vectors, in [0, 1]) or "l2"
    # (Euclidean on the vectors as they are, PatchCore's).
    metric: Literal["cosine", "l2"] = "l2"
    backend: Literal["auto", "cpu", "gpu"] = "auto"
    # FAISS index: "flat" exact; "ivf" / "hnsw" approximate, for large banks; hnsw is CPU only.
    index: Literal["flat", "ivf", "hnsw"] = "ivf"


@dataclass(frozen=True)
class EvalConfig:
    # "windows": one embedding per patch_size window at patch_stride (patch mode) or per image
    # with GradCAM maps (image mode); "dense": one forward per image, layer2+layer3 features of
    # the backbone, kNN at every feature position (needs memory.fill: final).
    scoring: Literal["windows", "dense"] = "dense"
    # dense: the backbone stages (by stride) concatenated on the stride-8 grid, finer ones
    # averaged over each cell, coarser ones upsampled (SSADNet.local_features)
    dense_stages: tuple[int, ...] = (8, 16)
    patch_stride: int = 8
    map_sigma: float = 4.0  # Gaussian smoothing (pixels) of the anomaly map; 0: none
    image_score: Literal["max", "topk"] = "max"  # max of the smoothed map | top-k cell mean
    # Per-position calibration of the score grid (windows in patch mode, or dense): each
    # position's score is re-centred on its own mean ("shift") or standardised by its mean and std
    # ("zscore") over the normal training images (against a final bank, each training window is
    # scored without its own image's vectors), back on the class's overall scale
    # (ssad.localize.normalize_positions). "none": scores as they are. "auto" (resolved per class
    # into the saved config): shift for objects in a fixed place, none for textures and moving ones.
    position_norm: Literal["none", "shift", "zscore", "auto"] = "shift"
    topk: int = 10
    batch_size: int = 64
    heatmaps: int = 8  # overlays written per evaluation
    tsne: bool = True


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    defects: DefectsConfig = field(default_factory=DefectsConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, source: str = "<config>") -> Config:
        """Build a validated config from nested and/or dotted keys (dotted keys win)."""
        flat = flatten(data or {}, source=source)
        return cls().with_overrides(flat, source=source)

    def with_overrides(self, overrides: dict[str, Any], *, source: str = "<overrides>") -> Config:
        """Return a copy with dotted-key values replaced, validated."""
        tree = self.to_dict()
        for key, value in overrides.items():
            if key in REMOVED_KEYS:  # ignored at the value that meant "off", refused otherwise
                if value != REMOVED_KEYS[key] or isinstance(value, bool):
                    raise ConfigError(f"{source}: {key}: removed; only {REMOVED_KEYS[key]!r} loads")
                continue
            set_dotted(tree, key, value, source=source)
        cfg = build(Config, tree, source=source)
        cfg.validate(source=source)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def flat(self) -> dict[str, Any]:
        """All values by dotted key (for MLflow params and search spaces)."""
        return flatten(self.to_dict(), source="<config>")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, *, source: str = "<config>") -> None:
        """Ranges and combinations the types cannot express; raises naming ``source`` and key."""

        def fail(key: str, msg: str) -> typing.NoReturn:
            raise ConfigError(f"{source}: {key}: {msg}")

        for check in (_check_data, _check_defects, _check_model, _check_train, _check_scoring):
            check(self, fail)


Fail = typing.Callable[[str, str], typing.NoReturn]


def _check_data(cfg: Config, fail: Fail) -> None:
    """data.*: sizes and split fractions."""
    d = cfg.data
    if d.image_size < 32:
        fail("data.image_size", f"must be >= 32, got {d.image_size}")
    if not 0.0 < d.val_fraction < 1.0:
        fail("data.val_fraction", f"must be in (0, 1), got {d.val_fraction}")
    if not 0.0 < d.holdout_fraction < 1.0:
        fail("data.holdout_fraction", f"must be in (0, 1), got {d.holdout_fraction}")
    if d.val_draws < 1:
        fail("data.val_draws", f"must be >= 1, got {d.val_draws}")


def _check_defects(cfg: Config, fail: Fail) -> None:
    """defects.*: areas in (0, 1), min <= max, aspect intervals around 1."""
    for name in ("big", "scar"):
        s: DefectShape = getattr(cfg.defects, name)
        k = f"defects.{name}"
        for lo, hi in (("area_min", "area_max"), ("patch_area_min", "patch_area_max")):
            a, b = getattr(s, lo), getattr(s, hi)
            if not (0.0 < a < 1.0 and 0.0 < b < 1.0):
                fail(f"{k}.{lo}", f"areas must lie in (0, 1), got [{a}, {b}]")
            if a > b:
                fail(f"{k}.{lo}", f"min {a} exceeds {k}.{hi} = {b}")
        if not 0.0 < s.aspect_low_min <= s.aspect_low_max <= 1.0:
            fail(
                f"{k}.aspect_low_max",
                f"low aspect interval must satisfy 0 < min <= max <= 1 (it may not contain 1), "
                f"got [{s.aspect_low_min}, {s.aspect_low_max}]",
            )
        if not 1.0 <= s.aspect_high_min <= s.aspect_high_max:
            fail(
                f"{k}.aspect_high_min",
                f"high aspect interval must satisfy 1 <= min <= max (it may not contain 1), "
                f"got [{s.aspect_high_min}, {s.aspect_high_max}]",
            )
    if not 0.0 <= cfg.defects.scar_angle <= 90.0:
        fail("defects.scar_angle", f"must be in [0, 90], got {cfg.defects.scar_angle}")
    bad = set(cfg.defects.fills) - {"cutpaste", "mean", "random"}
    if bad or not cfg.defects.fills:
        fail("defects.fills", f"choose from cutpaste/mean/random, got {list(cfg.defects.fills)}")


def _check_model(cfg: Config, fail: Fail) -> None:
    """pretext.* and model.*: window size, jitter, weights, backbone, head."""
    d, p = cfg.data, cfg.pretext
    if not 8 <= p.patch_size <= d.image_size:
        fail("pretext.patch_size", f"must be in [8, data.image_size={d.image_size}]")
    if not 0.0 <= p.jitter <= 1.0:
        fail("pretext.jitter", f"must be in [0, 1], got {p.jitter}")
    w = cfg.model.weights
    if w not in ("none", "imagenet") and not Path(w).expanduser().is_file():
        fail("model.weights", f"'none', 'imagenet' or an existing file; no file at {w!r}")
    from ssad.backbones import check_backbone

    why = check_backbone(cfg.model.backbone)
    if why:
        fail("model.backbone", f"{cfg.model.backbone!r}: {why}")
    if not cfg.model.head_dims or min(cfg.model.head_dims) < 1:
        fail("model.head_dims", "needs at least one positive width")


def _check_train(cfg: Config, fail: Fail) -> None:
    """train.*, and what 0 epochs (for some or all classes) rules out."""
    p, t, m, e = cfg.pretext, cfg.train, cfg.memory, cfg.eval
    for key in ("phase1_epochs", "phase2_epochs"):
        if getattr(t, key) < 0:
            fail(f"train.{key}", "must be >= 0")
    if set(t.categories) - set(CATEGORIES) or len(set(t.categories)) != len(t.categories):
        fail("train.categories", f"texture and/or object, each once, got {list(t.categories)}")
    frozen_somewhere = set(t.categories) != set(CATEGORIES)  # some classes: 0 epochs
    if t.phase1_epochs + t.phase2_epochs == 0 or frozen_somewhere:  # pretrained, untrained
        if m.fill == "fifo":
            fail("memory.fill", "fifo collects its bank during training; with 0 epochs use final")
        if e.scoring == "windows" and (m.feature == "embedding" or p.mode == "image"):
            fail(
                "memory.feature",
                "with 0 epochs the projection head (and the image-mode classifier that "
                "GradCAM explains) is untrained: use eval.scoring=dense, or patch-mode "
                "windows with memory.feature=backbone",
            )
    for key in ("phase1_lr", "phase2_lr"):  # 0: no weight moves (phase 2 still re-estimates
        if not getattr(t, key) >= 0:  # the backbone's BatchNorm statistics on the pretext)
            fail(f"train.{key}", f"must be >= 0, got {getattr(t, key)}")
    if t.batch_size < 2:
        fail("train.batch_size", "must be >= 2 (BatchNorm)")
    if t.device != "auto" and t.device != "cpu" and not t.device.startswith("cuda"):
        fail("train.device", f"auto | cpu | cuda[:N], got {t.device!r}")


def _check_scoring(cfg: Config, fail: Fail) -> None:
    """memory.* and eval.*: bank, kNN, index and scoring combinations."""
    p, m, e = cfg.pretext, cfg.memory, cfg.eval
    if m.fill == "fifo" and e.scoring == "dense":
        fail(
            "memory.fill",
            "fifo collects projection-head embeddings during training, but "
            "eval.scoring=dense needs a bank of backbone features: use memory.fill=final",
        )
    if e.map_sigma < 0:
        fail("eval.map_sigma", f"must be >= 0, got {e.map_sigma}")
    if m.k < 1:
        fail("memory.k", f"must be >= 1, got {m.k}")
    if m.bank_size < m.k:
        fail("memory.bank_size", f"must be >= memory.k={m.k}, got {m.bank_size}")
    if m.index == "hnsw" and m.backend == "gpu":
        fail("memory.index", "FAISS has no GPU HNSW index: use memory.index=ivf with backend=gpu")
    if e.position_norm != "none" and e.scoring == "windows" and p.mode == "image":
        fail(
            "eval.position_norm",
            "image-mode windows give one score per image, no positions: use "
            "pretext.mode=patch or eval.scoring=dense, or eval.position_norm=none",
        )
    if not e.dense_stages or not set(e.dense_stages) <= {4, 8, 16, 32}:
        fail("eval.dense_stages", f"strides from [4, 8, 16, 32], got {list(e.dense_stages)}")
    if len(set(e.dense_stages)) != len(e.dense_stages):
        fail("eval.dense_stages", f"each stride once, got {list(e.dense_stages)}")
    if e.patch_stride < 1:
        fail("eval.patch_stride", "must be >= 1")
    if e.topk < 1:
        fail("eval.topk", "must be >= 1")


def load_config(
    path: str | Path | None = None,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
    preset: str | None = None,
) -> Config:
    """Defaults → preset → YAML file → overrides (``["a.b=1", ...]`` or ``{"a.b": 1}``)."""
    cfg = Config()
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        cfg = cfg.with_overrides(PRESETS[preset], source=f"preset {preset}")
    if path is not None:
        path = Path(path)
        raw = read_yaml_mapping(path, error=ConfigError, what="config file")
        cfg = cfg.with_overrides(flatten(raw, source=str(path)), source=str(path))
    if overrides:
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        cfg = cfg.with_overrides(overrides, source="--set")
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.seed=3", "defects.fills=[mean]"]`` → ``{"train.seed": 3, ...}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def replace_config(cfg: Config, **sections: Any) -> Config:
    """``dataclasses.replace`` for top-level sections, re-validated."""
    out = replace(cfg, **sections)
    out.validate()
    return out
