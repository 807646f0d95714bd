"""Defects of the synthetic data set, each class its own types (``ssad.data.synthetic``).

A defect is drawn as ``draw(scene, rng, s) -> (alpha (H, W), target)``; :func:`apply_defect` blends
it into a :class:`ssad.data.synthetic_scenes.Scene` until it is large enough, and its mask is the
set of pixels it changed by more than ``_CHANGE`` in some channel (closed and hole-filled within
the defect's footprint).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
from scipy.ndimage import binary_fill_holes

from ssad.data.synthetic_scenes import LIGHT, Scene, frame, smooth_noise

__all__ = ["DEFECTS", "DEFECT_TYPES", "apply_defect"]

_CHANGE = 0.04  # a pixel is defective when some channel changed by more than this (of 1.0)
_MIN_AREA = 0.002  # a defect covering less of the image than this is drawn again


# --- defects: (scene, rng, s) -> (alpha (H, W), target (H, W, 3) or (3,)) -------------------


def _spot(scene: Scene, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A random point (x, y) at least ``margin`` pixels inside the object and the image."""
    m = max(1, int(margin))
    inside = (scene.cover > 0.999).astype(np.uint8)
    inside[:m], inside[-m:], inside[:, :m], inside[:, -m:] = 0, 0, 0, 0
    eroded = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1,) * 2))
    idx = np.flatnonzero(eroded if eroded.any() else scene.cover > 0.5)
    y, x = divmod(int(idx[rng.integers(len(idx))]), scene.cover.shape[1])
    return np.float32([x, y]) + rng.uniform(0, 1, 2).astype(np.float32)


def _lines(size: int, strokes, thickness: int) -> np.ndarray:
    """Anti-aliased polylines (list of (N, 2) float points) as coverage (H, W)."""
    canvas = np.zeros((size, size), np.uint8)  # OpenCV anti-aliases 8-bit canvases only
    pts = [np.round(p * 16).astype(np.int32) for p in strokes]
    cv2.polylines(canvas, pts, False, 255, thickness, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255


def _scratch(scene, rng, s, *, colours, strength=(0.55, 0.85), width=1.6):
    """A thin curved scratch (cubic Bézier) in one of ``colours``."""
    size = scene.cover.shape[0]
    length = rng.uniform(45, 95) * s
    centre = _spot(scene, rng, 0.35 * length)
    a = rng.uniform(0, np.pi)
    along, across = np.float32([np.cos(a), np.sin(a)]), np.float32([-np.sin(a), np.cos(a)])
    p0, p3 = centre - along * length / 2, centre + along * length / 2
    p1 = p0 + along * length / 3 + across * rng.normal(0, 0.25 * length)
    p2 = p3 - along * length / 3 + across * rng.normal(0, 0.25 * length)
    t = np.linspace(0, 1, 48, dtype=np.float32)[:, None]
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    alpha = _lines(size, [curve], max(1, round(width * s))) * rng.uniform(*strength)
    return alpha, np.float32(colours[rng.integers(len(colours))])


def _crack(scene, rng, s):
    """A dark, jagged crack (a random walk) with one branch."""
    size = scene.cover.shape[0]
    n, step = int(rng.integers(14, 24)), 3.5 * s
    centre = _spot(scene, rng, 0.3 * n * step)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.45, n))
    walk = np.cumsum(step * np.stack([np.cos(heading), np.sin(heading)], 1), 0)
    main = centre + walk - walk[n // 2]
    turn = rng.uniform(0.5, 1.2) * rng.choice([-1, 1]) + np.cumsum(rng.normal(0, 0.4, n // 3))
    root = main[rng.integers(n // 4, 3 * n // 4)]
    fork = heading[0] + turn
    branch = root + np.cumsum(step * np.stack([np.cos(fork), np.sin(fork)], 1), 0)
    strokes = [main, np.vstack([root, branch])]
    alpha = _lines(size, strokes, max(1, round(1.2 * s))) * rng.uniform(0.75, 0.95)
    return alpha, scene.image * 0.2


def _ellipse(scene, rng, s, radius, margin):
    a = rng.uniform(*radius) * s
    b, theta = a * rng.uniform(0.55, 1.0), rng.uniform(0, np.pi)
    cx, cy = _spot(scene, rng, margin * a + 2)
    dx, dy, u, v = frame(scene.cover.shape[0], cx, cy, theta)
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 on the ellipse
    toward = (dx * LIGHT[0] + dy * LIGHT[1]) / (a * np.linalg.norm(LIGHT[:2]))
    return b, q, toward, scene.image[int(cy), int(cx)]


def _hole(scene, rng, s):
    """A hole: dark inside (the far wall catches light) with a raised, lit rim."""
    b, q, toward, colour = _ellipse(scene, rng, s, (5, 10), 1.4)
    inside = colour * (0.12 + 0.3 * np.clip(-toward, 0, 1))[..., None]
    rim = scene.image * (1 + 0.45 * np.clip(toward / np.maximum(q, 1e-3), -1, 1))[..., None]
    w = np.clip((1 - q) * b + 0.5, 0, 1)[..., None]
    return np.clip((1.35 - q) * b + 0.5, 0, 1), inside * w + rim * (1 - w)


def _dent(scene, rng, s):
    """A shallow dent: the side towards the light falls into shade, the far side shines."""
    b, q, toward, _ = _ellipse(scene, rng, s, (7, 13), 1.1)
    depth = np.clip(1 - q * q, 0, 1)
    gain = 1 - 0.7 * depth * np.clip(toward + 0.5, 0, None) + 0.8 * depth * np.clip(-toward, 0, 1)
    return np.clip((1 - q) * b + 0.5, 0, 1), np.clip(scene.image * gain[..., None], 0, 1)


def _blob_shape(rng, size: int, centre: np.ndarray, r: float) -> np.ndarray:
    """An irregular, non-convex blob of radius about ``r`` (smoothed noise threshold), (H, W)."""
    half = int(np.ceil(1.7 * r))
    grid = rng.standard_normal((5, 5)).astype(np.float32)
    noise = cv2.resize(grid, (2 * half + 1,) * 2, interpolation=cv2.INTER_CUBIC)
    yy, xx = np.indices(noise.shape, dtype=np.float32) - half
    box = ((1 - (xx * xx + yy * yy) / (r * r) + 0.5 * noise) > 0).astype(np.float32)
    canvas = np.zeros((size + 2 * half, size + 2 * half), np.float32)
    x, y = np.round(centre).astype(int)
    canvas[y : y + 2 * half + 1, x : x + 2 * half + 1] = box
    return canvas[half : half + size, half : half + size]


def _blob(scene, rng, s, *, radius, colours, opacity, blur, grain=0.15):
    """A stain / contamination / rust patch: an irregular blob of a mottled foreign colour."""
    size = scene.cover.shape[0]
    r = rng.uniform(*radius) * s
    shape = _blob_shape(rng, size, _spot(scene, rng, 0.8 * r), r)
    alpha = cv2.GaussianBlur(shape, (0, 0), max(0.5, blur * s)) * rng.uniform(*opacity)
    colour = np.float32(colours[rng.integers(len(colours))]) + rng.normal(0, 0.02, 3)
    mottle = 1 + grain * smooth_noise(rng, size, 1.2 * s)
    return alpha, np.clip(colour.astype(np.float32) * mottle[..., None], 0, 1)


def _missing(scene, rng, s):
    """A broken-off corner: an irregular piece of the object replaced by the background."""
    corner = scene.corners[rng.integers(len(scene.corners))]
    centre = np.asarray((scene.corners.mean(0) - corner) * 0.12 + corner)
    shape = _blob_shape(rng, scene.cover.shape[0], centre, rng.uniform(11, 17) * s)
    return cv2.GaussianBlur(shape, (0, 0), 0.6), scene.background


def _faulty_print(scene, rng, s):
    """Part of the print missing (rubbed off the capsule)."""
    ys, xs = np.nonzero(scene.ink > 0.5)
    i, r = rng.integers(len(xs)), rng.uniform(6, 11) * s
    shape = _blob_shape(rng, scene.cover.shape[0], np.float32([xs[i], ys[i]]), r)
    return cv2.GaussianBlur(shape, (0, 0), 0.6), scene.plain


_METAL = ((0.93, 0.93, 0.91), (0.85, 0.86, 0.88))


def _patch(radius, opacity, blur, grain, *colours) -> Callable:
    return partial(_blob, radius=radius, opacity=opacity, blur=blur, grain=grain, colours=colours)


DEFECTS: dict[str, dict[str, Callable]] = {  # each class's own defect types
    "brick": {
        "crack": _crack,
        "hole": _hole,
        "stain": _patch((9, 17), (0.45, 0.6), 2.5, 0.15, (0.22, 0.2, 0.16), (0.9, 0.88, 0.8)),
    },
    "grass": {
        "dry_patch": _patch((9, 16), (0.55, 0.7), 2.0, 0.25, (0.62, 0.52, 0.26)),
        "litter": _patch((5, 10), (0.9, 1), 0.6, 0.15, (0.95, 0.95, 0.97), (0.2, 0.35, 0.85)),
        "thread": partial(
            _scratch, colours=((0.95, 0.93, 0.88), (0.1, 0.1, 0.3)), strength=(0.8, 0.95)
        ),
    },
    "gravel": {
        "hole": _hole,
        "oil": _patch((9, 17), (0.5, 0.65), 2.0, 0.05, (0.04, 0.035, 0.03)),
        "scrape": partial(_scratch, colours=((0.97, 0.95, 0.9),), width=2.0),
    },
    "gelcap": {
        "crack": _crack,
        "contamination": _patch(
            (4, 8), (0.8, 0.95), 0.7, 0.15, (0.25, 0.18, 0.1), (0.3, 0.45, 0.7)
        ),
        "faulty_print": _faulty_print,
    },
    "bottle_cap": {
        "scratch": partial(_scratch, colours=_METAL),
        "dent": _dent,
        "stain": _patch((8, 15), (0.45, 0.6), 2.5, 0.15, (0.3, 0.25, 0.15), (0.55, 0.5, 0.42)),
    },
    "hex_nut": {
        "scratch": partial(_scratch, colours=_METAL),
        "missing_part": _missing,
        "rust": _patch((6, 11), (0.75, 0.9), 1.0, 0.3, (0.55, 0.26, 0.08), (0.45, 0.2, 0.07)),
    },
}
DEFECT_TYPES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in DEFECTS.items()}


def apply_defect(scene: Scene, draw: Callable, rng: np.random.Generator):
    """Draw a defect on the scene until it is large enough; returns (image, mask (H, W) bool)."""
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for _ in range(50):
        alpha, target = draw(scene, rng, scene.cover.shape[0] / 256)
        alpha = (alpha * scene.cover)[..., None]  # object defects stay on the object
        image = scene.image + (target - scene.image) * alpha
        changed = (np.abs(image - scene.image).max(axis=2) > _CHANGE).astype(np.uint8)
        closed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, close).astype(bool)
        mask = binary_fill_holes(closed) & (alpha[..., 0] > 0.02)
        if mask.mean() >= _MIN_AREA:
            return image, mask
    raise RuntimeError(f"could not draw a visible {draw} defect")  # pragma: no cover
