"""Object foreground masks: where a synthetic defect's centre may fall.

Textures are defect-able everywhere (all ones). For objects the seed's recipe is followed:
grayscale → Canny edges → dilate → morphological close → fill holes → erode → largest connected
component. Two additions make it robust on photos: a Gaussian blur before Canny and Canny
thresholds taken from Otsu's threshold of the blurred image, so that background noise and fine
texture don't produce edges. A degenerate result (empty or under 1 % of the image) falls back to
all ones, so a defect can always be placed.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["MIN_FOREGROUND", "class_foreground", "foreground_mask"]

MIN_FOREGROUND = 0.01  # a mask covering less of the image than this is degenerate

Category = Literal["texture", "object"]


def foreground_mask(image: np.ndarray, *, category: Category) -> np.ndarray:
    """Foreground of one image.

    Args:
        image: RGB uint8 (H, W, 3).
        category: ``texture`` (all ones) or ``object`` (edge-based mask).

    Returns:
        bool (H, W); all ones for textures and for degenerate object masks.
    """
    _check_category(category)
    ones = np.ones(image.shape[:2], dtype=bool)
    if category == "texture":
        return ones
    mask = _object_mask(image)
    return ones if mask is None else mask


def class_foreground(images: list[np.ndarray], *, category: Category) -> np.ndarray:
    """One foreground mask for a class whose objects sit at a fixed position.

    The per-image masks of ``images`` (a few training images are enough) are combined by
    majority vote: a pixel is foreground when at least half of the non-degenerate masks hold it.
    Degenerate per-image masks don't vote (they would vote for the whole image). Objects that
    move between images need per-image masks (:func:`foreground_mask`); the caller decides.

    Args:
        images: RGB uint8 (H, W, 3) images of one class, all of the same size.
        category: ``texture`` (all ones) or ``object``.

    Returns:
        bool (H, W); all ones for textures or when the vote is degenerate.
    """
    _check_category(category)
    if not images:
        raise ValueError("class_foreground needs at least one image")
    size = images[0].shape[:2]
    if any(im.shape[:2] != size for im in images):
        raise ValueError(f"class_foreground: images differ in size (first is {size})")
    ones = np.ones(size, dtype=bool)
    if category == "texture":
        return ones
    masks = [m for m in (_object_mask(im) for im in images) if m is not None]
    if not masks:
        return ones
    vote = np.mean(np.stack(masks), axis=0) >= 0.5
    return vote if vote.mean() >= MIN_FOREGROUND else ones


def _object_mask(image: np.ndarray) -> np.ndarray | None:
    """The seed's edge recipe; ``None`` when the result is degenerate."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB (H, W, 3) image, got shape {image.shape}")
    side = min(image.shape[:2])
    k = max(3, (side // 64) | 1)  # dilate / erode size: 5 px at 256
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    gray = cv2.GaussianBlur(gray, (0, 0), sigmaX=max(1.0, side / 128))
    otsu, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    high = max(float(otsu), 20.0)
    edges = cv2.Canny(gray, 0.5 * high, high)
    # Thicken edges, bridge gaps in the outline, fill the enclosed object, undo the thickening.
    small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    large = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3 * k, 3 * k))
    mask = cv2.dilate(edges, small)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, large)
    mask = ndimage.binary_fill_holes(mask > 0).astype(np.uint8)
    mask = cv2.erode(mask, small)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = labels == largest
    return mask if mask.mean() >= MIN_FOREGROUND else None


def _check_category(category: str) -> None:
    if category not in ("texture", "object"):
        raise ValueError(f"category must be 'texture' or 'object', got {category!r}")
