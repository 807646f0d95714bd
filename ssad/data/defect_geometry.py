"""Geometry of the pretext task's synthetic defects (``ssad.data.defects``): rectangle area and
aspect, scar shape, convex polygons and their masks, and where a defect is pasted."""

from __future__ import annotations

import numpy as np

from ssad.config import DefectShape

__all__ = [
    "convex_polygon",
    "place_box",
    "polygon_mask",
    "sample_area_aspect",
    "sample_center",
    "sample_rect",
    "scar_geometry",
]


def sample_area_aspect(
    rng: np.random.Generator, *, shape: DefectShape, patch_mode: bool
) -> tuple[float, float]:
    """Draw the area ratio and aspect ratio (w / h) of a defect rectangle.

    Args:
        rng: Random generator.
        shape: Area and aspect ranges of the defect kind.
        patch_mode: Use ``patch_area_*`` instead of ``area_*``.

    Returns:
        ``(area_ratio, aspect)``: area uniform in ``[area_min, area_max]``; aspect uniform on
        ``[aspect_low_min, aspect_low_max) ∪ (aspect_high_min, aspect_high_max]`` (each interval
        picked with probability proportional to its length).
    """
    a_min, a_max = (
        (shape.patch_area_min, shape.patch_area_max)
        if patch_mode
        else (shape.area_min, shape.area_max)
    )
    area = float(rng.uniform(a_min, a_max))
    low = max(shape.aspect_low_max - shape.aspect_low_min, 0.0)
    high = max(shape.aspect_high_max - shape.aspect_high_min, 0.0)
    if low + high == 0.0:  # both intervals are points: pick one of them
        return area, float(shape.aspect_low_min if rng.random() < 0.5 else shape.aspect_high_max)
    u = float(rng.random()) * (low + high)
    if u < low:  # [low_min, low_max): open at the top
        aspect = min(shape.aspect_low_min + u, np.nextafter(shape.aspect_low_max, -np.inf))
    else:  # (high_min, high_max]: open at the bottom
        aspect = max(shape.aspect_high_max - (u - low), np.nextafter(shape.aspect_high_min, np.inf))
    return area, float(aspect)


def sample_rect(
    rng: np.random.Generator,
    *,
    image_hw: tuple[int, int],
    shape: DefectShape,
    patch_mode: bool,
) -> tuple[int, int]:
    """Integer size ``(h, w)`` of a defect rectangle in an image of size ``image_hw``.

    ``h = sqrt(a·H·W / r)`` and ``w = sqrt(a·H·W · r)`` (see :func:`sample_area_aspect`), rounded
    and clipped to ``[1, H] × [1, W]``. Rounding never moves ``w / h`` into the excluded gap
    ``[aspect_low_max, aspect_high_min]``: ``w`` is nudged by one pixel when it would.
    """
    img_h, img_w = image_hw
    area, aspect = sample_area_aspect(rng, shape=shape, patch_mode=patch_mode)
    pixels = area * img_h * img_w
    h = int(np.clip(round(np.sqrt(pixels / aspect)), 1, img_h))
    w = int(np.clip(round(np.sqrt(pixels * aspect)), 1, img_w))
    if aspect < shape.aspect_low_max and w >= shape.aspect_low_max * h:
        w = int(np.ceil(shape.aspect_low_max * h)) - 1
        if w < 1:
            w, h = 1, min(int(np.floor(1.0 / shape.aspect_low_max)) + 1, img_h)
    elif aspect > shape.aspect_high_min and w <= shape.aspect_high_min * h:
        w = min(int(np.floor(shape.aspect_high_min * h)) + 1, img_w)
    return h, w


def scar_geometry(
    rng: np.random.Generator,
    *,
    image_hw: tuple[int, int],
    shape: DefectShape,
    max_angle: float,
    patch_mode: bool,
) -> tuple[int, int, float]:
    """Size and rotation of a scar: ``(h, w, angle)``, angle uniform in degrees on
    ``[-max_angle, max_angle]`` (counter-clockwise as displayed, OpenCV's convention)."""
    h, w = sample_rect(rng, image_hw=image_hw, shape=shape, patch_mode=patch_mode)
    return h, w, float(rng.uniform(-max_angle, max_angle))


def convex_polygon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A convex polygon inscribed in the box ``[0, w] × [0, h]``.

    1–2 points are drawn uniformly on each side of the rectangle (4–8 vertices) and listed in
    boundary order (top, right, bottom, left), which makes the polygon convex.

    Returns:
        Vertices (N, 2) float64 as (x, y), clockwise as displayed (y pointing down).
    """
    counts = rng.integers(1, 3, size=4)
    t = [np.sort(rng.random(n)) for n in counts]
    sides = [
        np.stack([t[0] * w, np.zeros(counts[0])], axis=1),  # top, left → right
        np.stack([np.full(counts[1], float(w)), t[1] * h], axis=1),  # right, top → bottom
        np.stack([(1.0 - t[2]) * w, np.full(counts[2], float(h))], axis=1),  # bottom, ← left
        np.stack([np.zeros(counts[3]), (1.0 - t[3]) * h], axis=1),  # left, bottom → top
    ]
    return np.concatenate(sides, axis=0)


def polygon_mask(vertices: np.ndarray, h: int, w: int) -> np.ndarray:
    """Rasterise a convex clockwise polygon: pixel ``(y, x)`` is inside when its centre
    ``(x + 0.5, y + 0.5)`` is on the inner side of every edge. Returns bool (h, w)."""
    ax, ay = vertices[:, 0, None, None], vertices[:, 1, None, None]  # edge starts, (N, 1, 1)
    d = np.roll(vertices, -1, axis=0) - vertices  # edge vectors a_i → a_{i+1}, (N, 2)
    dx, dy = d[:, 0, None, None], d[:, 1, None, None]
    xs = np.arange(w, dtype=np.float64)[None, None, :] + 0.5
    ys = np.arange(h, dtype=np.float64)[None, :, None] + 0.5
    # cross(d, p - a) >= 0 on the inner side of every edge of a clockwise (y-down) polygon
    cross = dx * (ys - ay) - dy * (xs - ax)  # (N, h, w)
    return np.all(cross >= 0.0, axis=0)


def sample_center(rng: np.random.Generator, center_mask: np.ndarray) -> tuple[int, int]:
    """Paste centre ``(cy, cx)`` drawn uniformly from the True pixels of ``center_mask``
    (the whole image when the mask is empty, e.g. a patch cropped from the background)."""
    idx = np.flatnonzero(center_mask)
    if idx.size == 0:
        return int(rng.integers(center_mask.shape[0])), int(rng.integers(center_mask.shape[1]))
    cy, cx = np.unravel_index(idx[rng.integers(idx.size)], center_mask.shape)
    return int(cy), int(cx)


def place_box(
    center: tuple[int, int], *, box_hw: tuple[int, int], image_hw: tuple[int, int]
) -> tuple[int, int]:
    """Top-left corner of a ``box_hw`` box centred on ``center``, shifted to lie inside the
    image (the box must fit: ``box_hw <= image_hw``)."""
    (cy, cx), (bh, bw), (img_h, img_w) = center, box_hw, image_hw
    top = int(np.clip(cy - bh // 2, 0, img_h - bh))
    left = int(np.clip(cx - bw // 2, 0, img_w - bw))
    return top, left
