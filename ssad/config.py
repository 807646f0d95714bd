"""Typed, frozen configuration of one class model.

Every tunable value has a dotted key (``defects.big.area_max``); YAML files, ``--set`` overrides,
search spaces and ablations all speak in those keys. Unknown keys, wrong types and impossible ranges
raise :class:`ConfigError` naming the source (file) and the key, before any compute is spent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

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
    "load_config",
    "parse_overrides",
]


CATEGORIES = ("texture", "object")  # a class's kind: data.category, train.categories


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range (message names source and key)."""


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
    mode: Literal["image", "patch"] = "image"
    patch_size: int = 32
    jitter: float = 0.1  # brightness/contrast/saturation strength; hue uses jitter / 2


@dataclass(frozen=True)
class ModelConfig:
    # resnet18 (the seed's) | efficientnet_lite0 (ImageNet weights ship with ssad) | a timm name
    backbone: str = "resnet18"
    weights: str = "imagenet"  # none | imagenet | path to a state dict
    fusion_dim: int = 512
    head_dims: tuple[int, ...] = (512, 512)
    embedding_dim: int = 128


@dataclass(frozen=True)
class TrainConfig:
    phase1_epochs: int = 10
    phase1_lr: float = 0.03
    phase2_epochs: int = 50
    phase2_lr: float = 0.01  # 0: weights fixed, BatchNorm statistics re-estimated in phase 2
    # The class categories the pretext task trains; a class of another category keeps the
    # pretrained weights (0 epochs, resolved per class into the saved config: ssad.train.
    # class_config). The cpu preset trains textures only (README, "Does the self-supervised
    # training help?").
    categories: tuple[str, ...] = CATEGORIES
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 96
    min_samples: int = 500  # the train list is repeated to at least this many samples per epoch
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
    # "final": after training (and for every validation pass) the bank is rebuilt from eval-mode
    # features of the current weights over the normal training images, then subsampled to
    # bank_size; the saved model uses exactly that bank. "fifo": the seed's bank of train-mode
    # embeddings (y = 0 and ŷ = 0) collected during training, the newest bank_size kept.
    # "auto": fifo for textures, final for objects (the measured choice for banks of embeddings:
    # docs/measurements-scratch.md, "The signal"; with memory.feature backbone the final bank wins on every class, and
    # the cpu preset sets final); dense scoring always uses a final bank.
    fill: Literal["auto", "final", "fifo"] = "auto"
    subsample: Literal["coreset", "random"] = "coreset"  # final fill: greedy k-center or random
    views: int = 0  # final fill: colour-jittered views per training image added to the plain one
    # What the bank holds per window/image: "embedding" = the projection head's output z (the
    # seed's), "backbone" = pooled layer2/3/4 features, each stage L2-normalised (896-d; the
    # representation before the head; docs/measurements-scratch.md, "The signal"). Dense scoring uses its own features.
    feature: Literal["embedding", "backbone"] = "embedding"
    bank_size: int = 500
    k: int = 3
    # kNN distance: "cosine" ((1 - cos) / 2 of L2-normalised vectors, in [0, 1]) or "l2"
    # (Euclidean on the vectors as they are, PatchCore's).
    metric: Literal["cosine", "l2"] = "cosine"
    backend: Literal["auto", "cpu", "gpu"] = "auto"
    # FAISS index: "flat" exact; "ivf" / "hnsw" approximate, for large patch-mode banks (ivf:
    # recall@3 1.000 at 22x the exact speed on 1e6 vectors, README benchmarks); hnsw is CPU only.
    index: Literal["flat", "ivf", "hnsw"] = "flat"


@dataclass(frozen=True)
class EvalConfig:
    # "windows": one embedding per patch_size window at patch_stride (patch mode) or per image
    # with GradCAM maps (image mode); "dense": one forward per image, layer2+layer3 features of
    # the backbone, kNN at every feature position (needs memory.fill: final).
    scoring: Literal["windows", "dense"] = "windows"
    # dense: the backbone stages (by stride) concatenated on the stride-8 grid, finer ones
    # averaged over each cell, coarser ones upsampled (SSADNet.local_features)
    dense_stages: tuple[int, ...] = (8, 16)
    patch_stride: int = 8
    map_sigma: float = 4.0  # Gaussian smoothing (pixels) of the anomaly map; 0: none
    image_score: Literal["max", "topk"] = "topk"  # max of the smoothed map | top-k cell mean
    # Per-position calibration of the score grid (windows in patch mode, or dense), for objects
    # that sit in the same place in every image: each position's score is re-centred on its own
    # mean ("shift") or standardised by its own mean and std ("zscore") over the normal training
    # images (against a final bank, each training window is scored without its own image's
    # vectors), then put back on the class's overall scale (ssad.localize.normalize_positions).
    # "none": scores as they are. "auto": shift for objects in a fixed place, none for textures
    # and moving objects (resolved per class into the saved config: ssad.train.class_config).
    position_norm: Literal["none", "shift", "zscore", "auto"] = "none"
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
            _set_dotted(tree, key, value, source=source)
        cfg = _build(Config, tree, prefix="", source=source)
        cfg.validate(source=source)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def flat(self) -> dict[str, Any]:
        """All values by dotted key (for MLflow params and search spaces)."""
        return flatten(self.to_dict(), source="<config>")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, *, source: str = "<config>") -> None:
        def fail(key: str, msg: str) -> typing.NoReturn:
            raise ConfigError(f"{source}: {key}: {msg}")

        d, p, t, m, e = self.data, self.pretext, self.train, self.memory, self.eval
        if d.image_size < 32:
            fail("data.image_size", f"must be >= 32, got {d.image_size}")
        if not 0.0 < d.val_fraction < 1.0:
            fail("data.val_fraction", f"must be in (0, 1), got {d.val_fraction}")
        if not 0.0 < d.holdout_fraction < 1.0:
            fail("data.holdout_fraction", f"must be in (0, 1), got {d.holdout_fraction}")
        if d.val_draws < 1:
            fail("data.val_draws", f"must be >= 1, got {d.val_draws}")
        for name in ("big", "scar"):
            s: DefectShape = getattr(self.defects, name)
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
        if not 0.0 <= self.defects.scar_angle <= 90.0:
            fail("defects.scar_angle", f"must be in [0, 90], got {self.defects.scar_angle}")
        bad = set(self.defects.fills) - {"cutpaste", "mean", "random"}
        if bad or not self.defects.fills:
            fail(
                "defects.fills", f"choose from cutpaste/mean/random, got {list(self.defects.fills)}"
            )
        if not 8 <= p.patch_size <= d.image_size:
            fail("pretext.patch_size", f"must be in [8, data.image_size={d.image_size}]")
        if not 0.0 <= p.jitter <= 1.0:
            fail("pretext.jitter", f"must be in [0, 1], got {p.jitter}")
        w = self.model.weights
        if w not in ("none", "imagenet") and not Path(w).expanduser().is_file():
            fail("model.weights", f"'none', 'imagenet' or an existing file; no file at {w!r}")
        from ssad.backbones import check_backbone

        why = check_backbone(self.model.backbone)
        if why:
            fail("model.backbone", f"{self.model.backbone!r}: {why}")
        if not self.model.head_dims or min(self.model.head_dims) < 1:
            fail("model.head_dims", "needs at least one positive width")
        for key in ("phase1_epochs", "phase2_epochs"):
            if getattr(t, key) < 0:
                fail(f"train.{key}", "must be >= 0")
        if set(t.categories) - set(CATEGORIES) or len(set(t.categories)) != len(t.categories):
            fail("train.categories", f"texture and/or object, each once, got {list(t.categories)}")
        frozen_somewhere = set(t.categories) != set(CATEGORIES)  # some classes: 0 epochs
        if t.phase1_epochs + t.phase2_epochs == 0 or frozen_somewhere:  # pretrained, untrained
            if m.fill == "fifo":
                fail(
                    "memory.fill", "fifo collects its bank during training; with 0 epochs use final"
                )
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
        if m.fill == "fifo" and e.scoring == "dense":
            fail(
                "memory.fill",
                "fifo collects projection-head embeddings during training, but "
                "eval.scoring=dense needs a bank of backbone features: use memory.fill=final",
            )
        if m.views < 0:
            fail("memory.views", f"must be >= 0, got {m.views}")
        if e.map_sigma < 0:
            fail("eval.map_sigma", f"must be >= 0, got {e.map_sigma}")
        if m.k < 1:
            fail("memory.k", f"must be >= 1, got {m.k}")
        if m.bank_size < m.k:
            fail("memory.bank_size", f"must be >= memory.k={m.k}, got {m.bank_size}")
        if m.index == "hnsw" and m.backend == "gpu":
            fail(
                "memory.index", "FAISS has no GPU HNSW index: use memory.index=ivf with backend=gpu"
            )
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


# ---- presets ----------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # The recommended CPU detector: ImageNet EfficientNet-Lite0 at 256 px; textures are
    # fine-tuned by the pretext task for 1 + 2 short epochs (phase 2 at lr 0.001), objects keep
    # the pretrained weights (README, "Does the self-supervised training help?": training
    # raised textures' validation AUROC and no object's); dense kNN on the stride-8 + stride-16
    # stages with Euclidean distance against every training position (an IVF index: the exact
    # bank's quality at a third of its cost; a greedy coreset lost 0.02 validation image AUROC),
    # each position's score re-centred on its normal training score (image borders, which the
    # bank covers thinly, otherwise decide the image score), max of the smoothed map.
    "cpu": {
        "data.image_size": 256,
        "model.backbone": "efficientnet_lite0",
        "model.weights": "imagenet",
        "train.phase1_epochs": 1,
        "train.phase2_epochs": 2,
        "train.phase2_lr": 0.001,
        "train.categories": ["texture"],
        "pretext.mode": "patch",
        "pretext.patch_size": 64,
        "train.batch_size": 32,
        "train.min_samples": 1024,
        "eval.scoring": "dense",
        "memory.fill": "final",
        "memory.metric": "l2",
        "memory.bank_size": 262144,  # all positions of up to 256 training images at 256 px
        "memory.index": "ivf",
        "memory.k": 1,
        "eval.image_score": "max",
        "eval.position_norm": "shift",
    },
    # ResNet-18 from random weights, trained by the 3-way pretext task in about 3 CPU-minutes
    # a class: 128 px, patch mode with 24 px windows, window scoring against a final bank of
    # backbone descriptors (the cpu preset until ImageNet weights were available offline).
    "scratch": {
        "data.image_size": 128,
        "pretext.mode": "patch",
        "pretext.patch_size": 24,
        "model.weights": "none",
        "train.phase1_epochs": 2,
        "train.phase2_epochs": 15,
        "train.batch_size": 64,
        "train.min_samples": 3072,
        "memory.bank_size": 8000,
        "memory.fill": "final",
        "memory.feature": "backbone",
        "memory.k": 1,
        "eval.scoring": "windows",
        "eval.image_score": "max",
        "eval.position_norm": "auto",
        "eval.patch_stride": 8,
    },
}


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


def read_yaml_mapping(
    path: Path, *, error: type[Exception] = ConfigError, what: str = "file"
) -> dict:
    """``yaml.safe_load`` of a file whose top level must be a mapping; errors name the file."""
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: top level must be a mapping")
    return raw


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.seed=3", "defects.fills=[mean]"]`` → ``{"train.seed": 3, ...}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


# ---- helpers ----------------------------------------------------------------------------------
def flatten(tree: dict[str, Any], *, source: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: {prefix}{key!r}: keys must be strings")
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, source=source, prefix=f"{full}."))
        else:
            out[full] = value
    return out


def _set_dotted(tree: dict[str, Any], key: str, value: Any, *, source: str) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"{source}: {key}: unknown key ({'.'.join(parts[: i + 1])})")
        node = node[part]
    if parts[-1] not in node or isinstance(node[parts[-1]], dict):
        hint = _close_keys(tree, key)
        raise ConfigError(f"{source}: {key}: unknown key{hint}")
    node[parts[-1]] = value


def _close_keys(tree: dict[str, Any], key: str) -> str:
    import difflib

    known = list(flatten(tree, source=""))
    close = difflib.get_close_matches(key, known, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _to_plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _build(cls: type, tree: dict[str, Any], *, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        kwargs[f.name] = _coerce(hints[f.name], tree[f.name], key=key, source=source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, *, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        return _build(tp, value, prefix=f"{key}.", source=source)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{source}: {key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        return tuple(_coerce(item_tp, v, key=key, source=source) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{source}: {key}: unsupported union type")  # not used by the schema
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)  # YAML 1.1 reads "5e-4" as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {tp}")  # pragma: no cover


def replace_config(cfg: Config, **sections: Any) -> Config:
    """``dataclasses.replace`` for top-level sections, re-validated."""
    out = replace(cfg, **sections)
    out.validate()
    return out
