"""Synthetic defects of the pretext task: big defect (y=1), scar (y=2) and line (y=3).

Every function is pure: it takes an RGB ``uint8`` image (H, W, 3) and a ``np.random.Generator``
and returns ``(new_image, mask)`` where ``mask`` is a ``bool`` (H, W) array of the pixels the
defect changed; pixels outside the mask are left bit-identical and the input is never modified.
Given the same generator state, a call always returns the same result.

The method (DESIGN.md, "The method"):

- The cut region is a rectangle whose area is a fraction ``a`` of H·W and whose aspect ratio
  ``r = w / h`` lies in ``[aspect_low_min, aspect_low_max) ∪ (aspect_high_min, aspect_high_max]``.
- Big defect: a convex polygon with 1–2 vertices on each side of the rectangle masks it.
- Scar: the whole thin rectangle, rotated by an angle drawn from ``[-max_angle, max_angle]``.
- Fill: ``cutpaste`` (cut from a random place of ``source``, or of the image itself), ``mean``
  (the mean colour of the pixels it covers) or ``random`` (a random flat colour).
- When the pasted colour is nearly the image's mean colour (cosine similarity of the mean RGB
  vectors > 0.99) its brightness is rescaled by a factor in [0.5, 0.8] ∪ [1.2, 1.5] (plus a shift
  for very dark content) so that the defect stays visible.
- The paste centre is drawn uniformly from the True pixels of ``center_mask`` (the object's
  foreground; all ones for textures) and the box is shifted to lie inside the image.
- Line (the seed's later 4th class): a smoothed random polyline in black, white or silver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ssad.config import DefectShape
from ssad.data.defect_geometry import (
    convex_polygon,
    place_box,
    polygon_mask,
    sample_area_aspect,
    sample_center,
    sample_rect,
    scar_geometry,
)

__all__ = [
    "FILLS",
    "LINE_COLOURS",
    "SIMILAR_COSINE",
    "big_defect",
    "convex_polygon",
    "line_defect",
    "place_box",
    "polygon_mask",
    "sample_area_aspect",
    "sample_center",
    "sample_rect",
    "scar",
    "scar_geometry",
]

FILLS = ("cutpaste", "mean", "random")
LINE_COLOURS = ((0, 0, 0), (255, 255, 255), (192, 192, 192))  # black, white, silver
SIMILAR_COSINE = 0.99  # above this, pasted and image mean colours are "the same": rescale
_MIN_SHIFT = 25.0  # minimum brightness change (grey levels) of a rescaled defect


# ---- defects ----------------------------------------------------------------------------------
def big_defect(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    shape: DefectShape,
    fills: Sequence[str],
    center_mask: np.ndarray | None,
    source: np.ndarray | None = None,
    patch_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Big defect (y=1): a convex polygon cut from a rectangle, filled and pasted.

    Args:
        image: RGB uint8 (H, W, 3).
        rng: Random generator (draws: rectangle, polygon, centre, fill, content, rescale).
        shape: Area / aspect ranges (``DefectsConfig.big``).
        fills: Fills to choose from uniformly (``cutpaste``, ``mean``, ``random``).
        center_mask: bool (H, W) where the centre may fall; ``None`` means anywhere.
        source: Image to cut ``cutpaste`` content from (another class for textures);
            ``None`` cuts from ``image`` itself. Resized to (H, W) if its size differs.
        patch_mode: Use the ``patch_area_*`` ranges (``image`` is a patch).

    Returns:
        ``(new_image, mask)``: RGB uint8 (H, W, 3) and bool (H, W) of the changed region.
    """
    _check_image(image)
    h, w = sample_rect(rng, image_hw=image.shape[:2], shape=shape, patch_mode=patch_mode)
    box_mask = polygon_mask(convex_polygon(rng, h, w), h, w)
    if not box_mask.any():  # a rectangle of a pixel or two has no pixel centre inside
        box_mask[:] = True
    return _paste_defect(
        image,
        rng,
        cut_hw=(h, w),
        box_mask=box_mask,
        warp=lambda patch: patch,
        fills=fills,
        center_mask=center_mask,
        source=source,
    )


def scar(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    shape: DefectShape,
    max_angle: float,
    fills: Sequence[str],
    center_mask: np.ndarray | None,
    source: np.ndarray | None = None,
    patch_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scar (y=2): a thin rectangle rotated by a random angle, filled and pasted.

    The first draws are those of :func:`scar_geometry` (so a generator in the same state gives
    the geometry used here). The patch and its mask are rotated together on a canvas that holds
    the rotated rectangle (bilinear for the content, mask thresholded at 0.5).

    Args:
        image: RGB uint8 (H, W, 3).
        rng: Random generator.
        shape: Area / aspect ranges (``DefectsConfig.scar``).
        max_angle: Rotation is uniform on ``[-max_angle, max_angle]`` degrees.
        fills, center_mask, source, patch_mode: As in :func:`big_defect`.

    Returns:
        ``(new_image, mask)``: RGB uint8 (H, W, 3) and bool (H, W) of the changed region.
    """
    _check_image(image)
    img_h, img_w = image.shape[:2]
    h, w, angle = scar_geometry(
        rng, image_hw=(img_h, img_w), shape=shape, max_angle=max_angle, patch_mode=patch_mode
    )
    # Canvas holding the rotated h×w rectangle; rotate about the rectangle's centre and move that
    # centre to the canvas centre.
    rad = np.deg2rad(angle)
    c, s = abs(np.cos(rad)), abs(np.sin(rad))
    canvas_h = int(np.ceil(w * s + h * c))
    canvas_w = int(np.ceil(w * c + h * s))
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    m[0, 2] += (canvas_w - w) / 2.0
    m[1, 2] += (canvas_h - h) / 2.0
    # A canvas larger than the image (long scars in small patches) is centre-cropped.
    bh, bw = min(canvas_h, img_h), min(canvas_w, img_w)
    oy, ox = (canvas_h - bh) // 2, (canvas_w - bw) // 2

    def warp(patch: np.ndarray, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
        out = cv2.warpAffine(
            patch, m, (canvas_w, canvas_h), flags=cv2.INTER_LINEAR, borderMode=border
        )
        return out[oy : oy + bh, ox : ox + bw]

    box_mask = warp(np.ones((h, w), np.float32), cv2.BORDER_CONSTANT) >= 0.5
    if not box_mask.any():
        box_mask[bh // 2, bw // 2] = True
    return _paste_defect(
        image,
        rng,
        cut_hw=(h, w),
        box_mask=box_mask,
        warp=warp,
        fills=fills,
        center_mask=center_mask,
        source=source,
    )


def line_defect(
    image: np.ndarray, rng: np.random.Generator, *, center_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Line (y=3, the seed's later defect): a smoothed random polyline, 1–3 px, anti-aliased.

    3–6 points are laid out as a random walk (steps of 4–12 % of the image side, gently
    turning) centred on a point drawn from ``center_mask``, smoothed with 3 Chaikin iterations
    and drawn in black, white or silver (a colour that differs from the pixels it covers is
    preferred, so the line stays visible).

    Returns:
        ``(new_image, mask)``; ``mask`` holds every pixel the anti-aliased line touches.
    """
    _check_image(image)
    img_h, img_w = image.shape[:2]
    cy, cx = sample_center(rng, _center_mask(center_mask, image))
    n = int(rng.integers(3, 7))
    steps = rng.uniform(0.04, 0.12, size=n - 1) * min(img_h, img_w)
    heading = rng.uniform(0.0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.5, size=n - 1))
    walk = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * steps[:, None], 0)
    points = np.vstack([np.zeros((1, 2)), walk])
    points += np.array([cx + 0.5, cy + 0.5]) - points.mean(axis=0)
    curve = _chaikin(points, iterations=3)
    thickness = int(rng.integers(1, 4))
    coverage = np.zeros((img_h, img_w), np.uint8)
    fixed = np.round((curve - 0.5) * 16).astype(np.int32)  # 4 fractional bits, pixel centres
    cv2.polylines(coverage, [fixed], False, 255, thickness, cv2.LINE_AA, shift=4)
    mask = coverage > 0
    if not mask.any():  # pragma: no cover - a centre inside the image always draws something
        return image.copy(), mask
    # Pick a colour that contrasts with what the line covers.
    local = image[mask].mean(axis=0)
    colours = np.array(LINE_COLOURS, dtype=np.float32)
    visible = np.flatnonzero(np.linalg.norm(colours - local, axis=1) >= 60.0)
    choices = visible if visible.size else np.arange(len(colours))
    colour = colours[choices[rng.integers(choices.size)]]
    alpha = coverage[mask].astype(np.float32)[:, None] / 255.0
    out = image.copy()
    out[mask] = np.round(image[mask] * (1.0 - alpha) + colour * alpha).astype(np.uint8)
    return out, mask


# ---- internals --------------------------------------------------------------------------------
def _paste_defect(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    cut_hw: tuple[int, int],
    box_mask: np.ndarray,
    warp: Callable[[np.ndarray], np.ndarray],
    fills: Sequence[str],
    center_mask: np.ndarray | None,
    source: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Place a (bh, bw) ``box_mask`` at a sampled centre, fill it and paste it."""
    if not fills:
        raise ValueError("fills is empty; choose from cutpaste/mean/random")
    img_h, img_w = image.shape[:2]
    bh, bw = box_mask.shape
    center = sample_center(rng, _center_mask(center_mask, image))
    top, left = place_box(center, box_hw=(bh, bw), image_hw=(img_h, img_w))
    region = image[top : top + bh, left : left + bw]
    fill = fills[int(rng.integers(len(fills)))]
    if fill == "cutpaste":
        src = image if source is None else _check_source(source, image)
        ch, cw = cut_hw
        sy, sx = int(rng.integers(img_h - ch + 1)), int(rng.integers(img_w - cw + 1))
        content = warp(src[sy : sy + ch, sx : sx + cw]).astype(np.float32)
    elif fill == "mean":
        content = np.broadcast_to(region[box_mask].mean(axis=0, dtype=np.float64), (bh, bw, 3))
    elif fill == "random":
        content = np.broadcast_to(rng.integers(0, 256, size=3).astype(np.float64), (bh, bw, 3))
    else:
        raise ValueError(f"unknown fill {fill!r}; choose from {', '.join(FILLS)}")
    image_mean = image.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    pixels = _keep_visible(rng, content[box_mask].astype(np.float64), image_mean=image_mean)
    out = image.copy()
    out[top : top + bh, left : left + bw][box_mask] = np.clip(np.round(pixels), 0, 255).astype(
        np.uint8
    )
    mask = np.zeros((img_h, img_w), dtype=bool)
    mask[top : top + bh, left : left + bw] = box_mask
    return out, mask


def _keep_visible(
    rng: np.random.Generator, pixels: np.ndarray, *, image_mean: np.ndarray
) -> np.ndarray:
    """Rescale pasted ``pixels`` (N, 3) when their mean colour matches the image's.

    Colours are compared by cosine similarity of the mean RGB vectors (offset by 1 so black is
    comparable). On a match the brightness moves away from the image's (a random direction when
    equal; never towards saturation): a factor in [1.2, 1.5] or [0.5, 0.8], topped up with a
    shift so the mean changes by at least ``_MIN_SHIFT`` grey levels.
    """
    mean = pixels.mean(axis=0)
    a, b = mean + 1.0, image_mean + 1.0
    if float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b)) <= SIMILAR_COSINE:
        return pixels
    level, image_level = float(mean.mean()), float(image_mean.mean())
    if level > 204.0:  # brightening would saturate
        up = False
    elif level < 50.0:  # darkening would vanish in black
        up = True
    elif abs(level - image_level) > 0.05 * image_level:
        up = level > image_level
    else:
        up = bool(rng.random() < 0.5)
    factor = rng.uniform(1.2, 1.5) if up else rng.uniform(0.5, 0.8)
    shift = max(0.0, _MIN_SHIFT - abs(level * (factor - 1.0)))
    return pixels * factor + (shift if up else -shift)


def _chaikin(points: np.ndarray, *, iterations: int) -> np.ndarray:
    """Chaikin corner cutting of an open polyline (N, 2), endpoints kept."""
    for _ in range(iterations):
        p, q = points[:-1], points[1:]
        cut = np.stack([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], axis=1).reshape(-1, 2)
        points = np.vstack([points[:1], cut, points[-1:]])
    return points


def _center_mask(center_mask: np.ndarray | None, image: np.ndarray) -> np.ndarray:
    if center_mask is None:
        return np.ones(image.shape[:2], dtype=bool)
    if center_mask.shape != image.shape[:2]:
        raise ValueError(
            f"center_mask has shape {center_mask.shape}, expected the image's {image.shape[:2]}"
        )
    return center_mask.astype(bool, copy=False)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")


def _check_source(source: np.ndarray, image: np.ndarray) -> np.ndarray:
    _check_image(source)
    if source.shape != image.shape:
        img_h, img_w = image.shape[:2]
        source = cv2.resize(source, (img_w, img_h), interpolation=cv2.INTER_AREA)
    return source
