"""MVTec AD layout: ``<class>/train/good``, ``<class>/test/<defect>``, ``ground_truth/<defect>/*_mask.png``.

The loader validates the layout up front and raises :class:`DatasetError` naming the folder or file,
so a broken data set fails before training starts, not hours into a study. :func:`check_files`
(run by the study preflight) also opens every image and mask header: empty, truncated or
non-image files, images too small or too large to be real, and masks whose size differs from
their image's are refused there, naming the file.

Conversions, not errors: files with other suffixes (``notes.txt``) are not images and are
skipped; grayscale, RGBA and 16-bit images are converted to 8-bit RGB; every image is resized to
``data.image_size`` (small ones upscaled), masks to the same size (nearest neighbour).
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
    "check_files",
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
MIN_SIDE = 8  # pixels: below this an image holds no structure worth a patch
MAX_PIXELS = 64 * 1024 * 1024  # 64 MP: MVTec AD's largest is 1 MP; more is a mistake or a bomb
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
    if not root.is_dir():
        raise DatasetError(f"{root}: data root not found")
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


def check_files(data: ClassData) -> None:
    """Open every image and mask of a class (headers and chunk checksums, no full decode).

    Raises:
        DatasetError: naming the first bad file: empty, truncated or corrupt, not an image,
            smaller than ``MIN_SIDE`` or larger than ``MAX_PIXELS``, or a mask whose size is not
            its image's.
    """
    for path in data.train:
        _image_size(path)
    for sample in data.test:
        size = _image_size(sample.path)
        if sample.mask is not None:
            mask_size = _image_size(sample.mask, what="mask")
            if mask_size != size:
                raise DatasetError(
                    f"{sample.mask}: mask is {mask_size[0]}x{mask_size[1]} px but its image "
                    f"{sample.path} is {size[0]}x{size[1]} px"
                )


def _image_size(path: Path, *, what: str = "image") -> tuple[int, int]:
    """(width, height) of an image file after checking it can be read."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty {what} file (0 bytes)")
    try:
        with Image.open(path) as im:
            size = im.size
            if size[0] * size[1] > MAX_PIXELS:
                raise DatasetError(
                    f"{path}: {what} is {size[0]}x{size[1]} px, over the {MAX_PIXELS} pixel "
                    "limit; resize it first"
                )
            im.verify()  # chunk checksums to the end of the file: catches truncated PNGs
        if path.suffix.lower() != ".png":
            with Image.open(path) as im:
                im.load()  # other formats: decode (verify checks little for JPEG)
    except DatasetError:
        raise
    except Image.DecompressionBombError:
        raise DatasetError(f"{path}: {what} larger than the {MAX_PIXELS} pixel limit") from None
    except UnidentifiedImageError:
        raise DatasetError(f"{path}: not an {what} file (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: corrupt or truncated {what} file ({exc})") from None
    if min(size) < MIN_SIDE:
        raise DatasetError(
            f"{path}: {what} is {size[0]}x{size[1]} px, below the {MIN_SIDE} px minimum"
        )
    return size


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
