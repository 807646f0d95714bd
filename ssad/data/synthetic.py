"""Synthetic anomaly-detection data set in the MVTec AD layout (the embedded default data set).

Textures are random crops of photographs scikit-image ships offline (``skimage.data.brick``,
``grass``, ``gravel``); objects are shaded renderings (a printed gel capsule, a bottle cap seen
from above, and a hexagonal nut placed anywhere at any angle). Each class has its own realistic
defect types — never the convex cut-paste patches or thin rectangular scars of the pretext task.
A mask is the set of pixels its defect changed by more than a small amount in some channel (closed
and hole-filled within the defect's footprint). Layout::

    <out>/<class>/{train/good, test/good, test/<defect>}/000.png
    <out>/<class>/ground_truth/<defect>/000_mask.png
    <out>/ssad_classes.yaml   # {class: {category: texture|object, placement: fixed|moving}}

Each image has its own ``SeedSequence([seed, class, split, index])``: one seed writes
byte-identical files, and a subset of classes gets the same images as the full set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml

from ssad.data.synthetic_defects import DEFECT_TYPES, DEFECTS, apply_defect
from ssad.data.synthetic_scenes import RENDER

__all__ = ["DEFECT_TYPES", "SYNTHETIC_CLASSES", "Sample", "generate", "make_sample"]

SYNTHETIC_CLASSES: dict[str, tuple[str, str]] = {
    "brick": ("texture", "fixed"),
    "grass": ("texture", "fixed"),
    "gravel": ("texture", "fixed"),
    "gelcap": ("object", "fixed"),
    "bottle_cap": ("object", "fixed"),
    "hex_nut": ("object", "moving"),
}


@dataclass(frozen=True)
class Sample:
    """One generated image with its ground truth.

    Attributes:
        image: RGB uint8 (H, W, 3).
        mask: bool (H, W), the defect's pixels (all False for a good image).
        foreground: bool (H, W), the pixels the object covers (all True for textures).
    """

    image: np.ndarray
    mask: np.ndarray
    foreground: np.ndarray


def _check_classes(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in SYNTHETIC_CLASSES]
    if unknown:
        raise ValueError(
            f"unknown synthetic class(es) {unknown}; valid: {', '.join(SYNTHETIC_CLASSES)}"
        )


def make_sample(
    class_name: str,
    *,
    defect: str | None = None,
    split: Literal["train", "test"] = "test",
    index: int = 0,
    seed: int = 0,
    size: int = 256,
) -> Sample:
    """Render one image of a synthetic class, exactly as :func:`generate` writes it.

    Args:
        class_name: A key of :data:`SYNTHETIC_CLASSES`.
        defect: One of ``DEFECT_TYPES[class_name]``, or None for a good image.
        split: ``"train"`` or ``"test"`` (defects exist in the test split only).
        index: Image number within its folder.
        seed: Data-set seed (non-negative).
        size: Side of the square image in pixels.

    Returns:
        The image, its defect mask and the object's foreground.
    """
    _check_classes([class_name])
    if defect is not None and defect not in DEFECT_TYPES[class_name]:
        raise ValueError(
            f"unknown defect {defect!r} for {class_name}; valid: {DEFECT_TYPES[class_name]}"
        )
    if split not in ("train", "test") or (split == "train" and defect is not None):
        raise ValueError(f"split must be 'train' (good only) or 'test', got {split!r}")
    if seed < 0 or index < 0 or size < 32:
        raise ValueError(f"need seed >= 0, index >= 0, size >= 32; got {seed}, {index}, {size}")
    part = 0 if split == "train" else 1 + (defect is not None)
    part += DEFECT_TYPES[class_name].index(defect) if defect is not None else 0
    key = [seed, list(SYNTHETIC_CLASSES).index(class_name), part, index]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    scene = RENDER[class_name](rng, size)
    image, mask = scene.image, np.zeros((size, size), bool)
    if defect is not None:
        image, mask = apply_defect(scene, DEFECTS[class_name][defect], rng)
    noisy = image + rng.standard_normal((size, size, 1), dtype=np.float32) * 0.006  # sensor
    pixels = np.clip(noisy * 255 + 0.5, 0, 255).astype(np.uint8)
    return Sample(pixels, mask, scene.cover > 0)


def _write_sample(
    root: Path, name: str, split: Literal["train", "test"], folder: str, index: int, *, seed, size
) -> None:
    defect = None if folder == "good" else folder
    sample = make_sample(name, defect=defect, split=split, index=index, seed=seed, size=size)
    files = {f"{split}/{folder}/{index:03d}.png": cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)}
    if defect is not None:
        files[f"ground_truth/{defect}/{index:03d}_mask.png"] = sample.mask.astype(np.uint8) * 255
    for path, pixels in files.items():
        if not cv2.imwrite(str(root / name / path), pixels):
            raise OSError(f"{root / name / path}: could not write the image")


def generate(
    out: str | Path,
    *,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    size: int = 256,
    n_train: int = 60,
    n_test_good: int = 60,
    n_test_per_defect: int = 30,
) -> Path:
    """Write the synthetic data set in the MVTec AD layout.

    A class folder written earlier by this function (listed in ``ssad_classes.yaml``) is replaced;
    any other existing folder of the same name is left alone and raises :class:`FileExistsError`.

    Args:
        out: Root folder (created if missing).
        classes: Class names (keys of :data:`SYNTHETIC_CLASSES`); None means all.
        seed: Data-set seed (non-negative); the same seed writes byte-identical files.
        size: Side of the square images in pixels (at least 32).
        n_train: Good training images per class (at least 1).
        n_test_good: Good test images per class.
        n_test_per_defect: Test images per defect type.

    Returns:
        The root folder.

    Raises:
        ValueError: An unknown class name (the message lists the valid ones) or a bad count.
    """
    classes = [classes] if isinstance(classes, str) else classes
    names = list(dict.fromkeys(SYNTHETIC_CLASSES if classes is None else classes))
    _check_classes(names)
    if seed < 0 or size < 32 or n_train < 1 or min(n_test_good, n_test_per_defect) < 0:
        raise ValueError("need seed >= 0, size >= 32, n_train >= 1 and test counts >= 0")
    root = Path(out)
    index_file = root / "ssad_classes.yaml"
    known = yaml.safe_load(index_file.read_text()) if index_file.is_file() else None
    known = known if isinstance(known, dict) else {}
    for name in names:
        if (root / name).exists():
            if name not in known:
                raise FileExistsError(f"{root / name} is not ssad's synthetic data; kept it")
            shutil.rmtree(root / name)
    jobs = []
    for name in names:
        folders = [("train", "good", n_train), ("test", "good", n_test_good)]
        folders += [("test", defect, n_test_per_defect) for defect in DEFECT_TYPES[name]]
        for split, folder, count in folders:
            (root / name / split / folder).mkdir(parents=True, exist_ok=True)
            if folder != "good":
                (root / name / "ground_truth" / folder).mkdir(parents=True, exist_ok=True)
            jobs += [(name, split, folder, i) for i in range(count)]
    # Images are independent (one seed each), so threads keep the output byte-identical.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: _write_sample(root, *job, seed=seed, size=size), jobs))
    entries = {k: v for k, v in known.items() if k in SYNTHETIC_CLASSES and (root / k).is_dir()}
    for name in names:
        category, placement = SYNTHETIC_CLASSES[name]
        entries[name] = {"category": category, "placement": placement}
    index_file.write_text(yaml.safe_dump(entries, sort_keys=True))
    return root
