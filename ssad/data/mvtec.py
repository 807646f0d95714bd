"""MVTec AD layout: ``<class>/train/good``, ``<class>/test/<defect>``, ``ground_truth/<defect>/*_mask.png``.

The loader validates the layout up front and raises :class:`DatasetError` naming the folder or file,
so a broken data set fails before training starts, not hours into a study.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from ssad.data.images import IMAGE_SUFFIXES

__all__ = [
    "MVTEC_CLASSES",
    "ClassData",
    "DatasetError",
    "Sample",
    "class_info",
    "fingerprint",
    "list_classes",
    "load_class",
    "split_test",
]

# name -> (category, placement). Hazelnut, screw and metal_nut are not fixed in position.
MVTEC_CLASSES: dict[str, tuple[str, str]] = {
    "bottle": ("object", "fixed"),
    "cable": ("object", "fixed"),
    "capsule": ("object", "fixed"),
    "carpet": ("texture", "fixed"),
    "grid": ("texture", "fixed"),
    "hazelnut": ("object", "moving"),
    "leather": ("texture", "fixed"),
    "metal_nut": ("object", "moving"),
    "pill": ("object", "fixed"),
    "screw": ("object", "moving"),
    "tile": ("texture", "fixed"),
    "toothbrush": ("object", "fixed"),
    "transistor": ("object", "fixed"),
    "wood": ("texture", "fixed"),
    "zipper": ("object", "fixed"),
}
CLASSES_FILE = "ssad_classes.yaml"  # written by the synthetic generator for its own classes


class DatasetError(ValueError):
    """The data set is missing, incomplete or not in the MVTec AD layout (names the path)."""


@dataclass(frozen=True)
class Sample:
    """One test image: ``label`` 0 = good, 1 = anomalous; ``mask`` is None for good images."""

    path: Path
    label: int
    defect: str
    mask: Path | None


@dataclass(frozen=True)
class ClassData:
    name: str
    root: Path
    category: Literal["texture", "object"]
    placement: Literal["fixed", "moving"]
    train: tuple[Path, ...]
    test: tuple[Sample, ...]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def list_classes(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found")
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def class_info(root: str | Path, name: str) -> tuple[str, str]:
    """(category, placement) from ``ssad_classes.yaml`` at the root, else the MVTec AD table."""
    meta = Path(root) / CLASSES_FILE
    if meta.is_file():
        table = yaml.safe_load(meta.read_text()) or {}
        if name in table:
            entry = table[name]
            return entry["category"], entry["placement"]
    if name in MVTEC_CLASSES:
        return MVTEC_CLASSES[name]
    raise DatasetError(
        f"{root}/{name}: unknown class kind; set data.category (texture|object) and data.placement "
        f"(fixed|moving), or list it in {meta}"
    )


def load_class(
    root: str | Path,
    name: str,
    *,
    category: str = "auto",
    placement: str = "auto",
) -> ClassData:
    """Index one class folder and validate it (every defect image has its mask)."""
    root = Path(root)
    folder = root / name
    if not folder.is_dir():
        available = list_classes(root) if root.is_dir() else []
        raise DatasetError(f"{folder}: class folder not found (available: {available or 'none'})")
    train_dir, test_dir = folder / "train" / "good", folder / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DatasetError(f"{d}: missing folder (expected the MVTec AD layout)")
    train = _images(train_dir)
    if len(train) < 2:
        raise DatasetError(f"{train_dir}: needs at least 2 training images, found {len(train)}")
    test: list[Sample] = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for img in _images(defect_dir):
            if defect == "good":
                test.append(Sample(img, 0, defect, None))
                continue
            mask = folder / "ground_truth" / defect / f"{img.stem}_mask.png"
            if not mask.is_file():
                raise DatasetError(f"{img}: ground-truth mask missing (expected {mask})")
            test.append(Sample(img, 1, defect, mask))
    labels = {s.label for s in test}
    if labels != {0, 1}:
        raise DatasetError(f"{test_dir}: needs both good and defective test images")
    if category == "auto" or placement == "auto":
        auto_cat, auto_place = class_info(root, name)
        category = auto_cat if category == "auto" else category
        placement = auto_place if placement == "auto" else placement
    return ClassData(name, root, category, placement, tuple(train), tuple(test))  # type: ignore[arg-type]


def split_test(
    samples: tuple[Sample, ...] | list[Sample], *, val_fraction: float = 0.5, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Fixed, stratified (per defect type) split of the test set into (validation, test).

    The searcher only ever sees the validation half; the test half is touched once, at promotion.
    Every defect type with >= 2 images lands in both halves.
    """
    rng = np.random.default_rng(seed)
    val: list[Sample] = []
    test: list[Sample] = []
    for defect in sorted({s.defect for s in samples}):
        group = sorted((s for s in samples if s.defect == defect), key=lambda s: s.path.name)
        order = rng.permutation(len(group))
        n_val = int(round(len(group) * val_fraction))
        if len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        val += [group[i] for i in order[:n_val]]
        test += [group[i] for i in order[n_val:]]
    return val, test


def fingerprint(data: ClassData) -> str:
    """Short hash of the file names and sizes of a class (MLflow tag: which data a run saw)."""
    h = hashlib.sha256()
    for p in (*data.train, *(s.path for s in data.test)):
        h.update(f"{p.relative_to(data.root)}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:12]
