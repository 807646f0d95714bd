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


# ---- geometry ---------------------------------------------------------------------------------
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
