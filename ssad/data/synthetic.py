"""Synthetic anomaly-detection data set in the MVTec AD layout (the embedded default data set).

Textures are random crops of photographs scikit-image ships offline (``skimage.data.brick``,
``grass``, ``gravel``); objects are shaded renderings (a printed gel capsule, a bottle cap seen
from above, and a hexagonal nut placed anywhere at any angle). Each class has its own realistic
defect types — never the convex cut-paste patches or thin rectangular scars of the pretext task.
A mask is the set of pixels its defect changed by more than ``_CHANGE`` in some channel (closed
and hole-filled within the defect's footprint). Layout::

    <out>/<class>/{train/good, test/good, test/<defect>}/000.png
    <out>/<class>/ground_truth/<defect>/000_mask.png
    <out>/ssad_classes.yaml   # {class: {category: texture|object, placement: fixed|moving}}

Each image has its own ``SeedSequence([seed, class, split, index])``: one seed writes
byte-identical files, and a subset of classes gets the same images as the full set.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml
from scipy.ndimage import binary_fill_holes

__all__ = ["DEFECT_TYPES", "SYNTHETIC_CLASSES", "Sample", "generate", "make_sample"]

SYNTHETIC_CLASSES: dict[str, tuple[str, str]] = {
    "brick": ("texture", "fixed"),
    "grass": ("texture", "fixed"),
    "gravel": ("texture", "fixed"),
    "gelcap": ("object", "fixed"),
    "bottle_cap": ("object", "fixed"),
    "hex_nut": ("object", "moving"),
}

_CHANGE = 0.04  # a pixel is defective when some channel changed by more than this (of 1.0)
_MIN_AREA = 0.002  # a defect covering less of the image than this is drawn again
_LIGHT = np.array([-0.45, -0.55, 0.70], dtype=np.float32)  # towards the light (top left, above)
_TEXTURES = {  # class: (skimage.data photo, dark colour, light colour, may turn by 90°)
    "brick": ("brick", (0.18, 0.07, 0.05), (0.96, 0.72, 0.58), False),
    "grass": ("grass", (0.03, 0.09, 0.02), (0.70, 0.90, 0.42), True),
    "gravel": ("gravel", (0.07, 0.06, 0.05), (0.96, 0.94, 0.89), True),
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


@dataclass
class _Scene:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1], before sensor noise
    cover: np.ndarray  # (H, W) float32 object coverage in [0, 1]; ones for textures
    background: np.ndarray | None = None  # (H, W, 3) the scene without the object
    plain: np.ndarray | None = None  # (H, W, 3) the object without its print
    ink: np.ndarray | None = None  # (H, W) print coverage
    corners: np.ndarray | None = None  # (K, 2) x, y of corners that can break off


# --- normal images ---------------------------------------------------------------------------


@cache
def _photo(name: str) -> np.ndarray:
    import skimage.data  # shipped with the wheel: no download

    photo = getattr(skimage.data, name)().astype(np.float32)
    lo, hi = np.percentile(photo, [1, 99])
    return np.clip((photo - lo) / (hi - lo), 0, 1)


def _texture(name: str, rng: np.random.Generator, size: int) -> _Scene:
    """A random crop / flip / brightness change of the class's photograph, tinted."""
    photo_name, dark, light, turn = _TEXTURES[name]
    photo = _photo(photo_name)
    side = int(min(photo.shape) * rng.uniform(0.42, 0.55))
    y0, x0 = rng.integers(0, np.array(photo.shape) - side + 1)
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    crop = crop[:, ::-1] if rng.random() < 0.5 else crop
    crop = crop[::-1] if rng.random() < 0.5 else crop
    crop = crop.T if turn and rng.random() < 0.5 else crop
    gray = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    gray = np.clip(gray * rng.uniform(0.94, 1.06) + rng.uniform(-0.03, 0.03), 0, 1)
    dark_, light_ = np.float32(dark), np.float32(light)
    image = dark_ + (light_ - dark_) * gray[..., None]
    return _Scene(image.astype(np.float32), np.ones((size, size), np.float32))


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian noise (H, W) blurred by ``sigma`` pixels, rescaled to unit std."""
    noise = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _shading(nx, ny, nz, rng: np.random.Generator, gloss: float):
    """Lambert diffuse and Blinn specular (H, W, 1) of normals (nx, ny, nz), light jittered."""
    light = _LIGHT + rng.normal(0, 0.05, 3).astype(np.float32)
    light /= np.linalg.norm(light)
    norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-6
    half = light + np.float32([0, 0, 1])
    half /= np.linalg.norm(half)
    diffuse = np.clip((nx * light[0] + ny * light[1] + nz * light[2]) / norm, 0, 1)
    spec = np.clip((nx * half[0] + ny * half[1] + nz * half[2]) / norm, 0, 1) ** gloss
    return (0.3 + 0.75 * diffuse)[..., None], spec[..., None]


def _frame(size: int, cx: float, cy: float, angle: float):
    """Pixel-centre offsets (dx, dy) from (cx, cy) and the same in the object's frame (u, v)."""
    y, x = np.indices((size, size), dtype=np.float32) + 0.5
    dx, dy = x - float(cx), y - float(cy)
    c, s = math.cos(angle), math.sin(angle)
    return dx, dy, dx * c + dy * s, -dx * s + dy * c


def _print(size: int, items, cx: float, cy: float, angle: float) -> np.ndarray:
    """Text coverage (H, W): ``items`` = [(text, u, v, scale, thickness)] in the object's frame."""
    ink = np.zeros((size, size), np.uint8)
    for text, u, v, scale, thick in items:
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thick)
        org = (round(cx + u - w / 2), round(cy + v + h / 2))
        cv2.putText(ink, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, 255, thick, cv2.LINE_AA)
    c, s = math.cos(angle), math.sin(angle)  # object frame -> image, about (cx, cy)
    m = np.float32([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]])
    return cv2.warpAffine(ink.astype(np.float32) / 255, m, (size, size), flags=cv2.INTER_LINEAR)


def _stage(rng, size, cover, obj, colour) -> tuple[np.ndarray, np.ndarray]:
    """Put the object (H, W, 3) on a lightly mottled, shaded table; returns (image, background)."""
    s = size / 256
    y, x = np.indices((size, size), dtype=np.float32) / size
    tint = np.float32(colour) * rng.uniform(0.95, 1.05) + rng.normal(0, 0.004, 3).astype(np.float32)
    light = 1 + 0.08 * (1 - x - y) + 0.015 * _smooth_noise(rng, size, 2 * s)
    background = tint * light[..., None]
    shift = np.float32([[1, 0, 4 * s], [0, 1, 5 * s]])  # shadow falls away from the light
    shadow = cv2.GaussianBlur(cv2.warpAffine(cover, shift, (size, size)), (0, 0), 4 * s)
    background *= (1 - 0.45 * shadow)[..., None]
    image = background + (obj - background) * cover[..., None]
    return image.astype(np.float32), background.astype(np.float32)


def _gelcap(rng: np.random.Generator, size: int) -> _Scene:
    """A red/cream gel capsule lying horizontally, printed "SSAD" and "25"; tiny jitter."""
    s = size / 256
    cx, cy = (size / 2 + rng.normal(0, 1.2 * s, 2)).tolist()
    angle = math.radians(rng.normal(0, 1.0))
    _, _, u, v = _frame(size, cx, cy, angle)
    half, r = 62 * s, 33 * s
    du = u - np.clip(u, -half, half)  # offset from the capsule's axis segment
    d = np.sqrt(du * du + v * v)
    cover = np.clip(r - d + 0.5, 0, 1)
    nz = np.sqrt(np.clip(r * r - d * d, 0, None))
    c, sn = math.cos(angle), math.sin(angle)
    diffuse, spec = _shading(du * c - v * sn, du * sn + v * c, nz, rng, 30)
    left = np.float32((0.76, 0.14, 0.10)) + rng.normal(0, 0.012, 3).astype(np.float32)
    right = np.float32((0.93, 0.90, 0.80)) + rng.normal(0, 0.008, 3).astype(np.float32)
    base = np.where((u < 0)[..., None], left, right)
    base *= (1 - 0.3 * np.clip(1.5 * s - np.abs(u), 0, 1))[..., None]  # seam of the two halves
    t = max(1, round(1.6 * s))
    items = [("SSAD", 36 * s, 0, 0.62 * s, t), ("25", -36 * s, 0, 0.7 * s, t)]
    ink = _print(size, items, cx, cy, angle) * cover
    ink_colour = np.where((u < 0)[..., None], np.float32(0.96), np.float32(0.12))
    printed = base + (ink_colour - base) * ink[..., None]
    image, background = _stage(rng, size, cover, printed * diffuse + 0.35 * spec, (0.2, 0.22, 0.26))
    plain = background + (base * diffuse + 0.35 * spec - background) * cover[..., None]
    return _Scene(image, cover, background, plain.astype(np.float32), ink)


def _bottle_cap(rng: np.random.Generator, size: int) -> _Scene:
    """A knurled red metal crown cap seen from above, with an embossed ring and a white logo."""
    s = size / 256
    cx, cy = (size / 2 + rng.normal(0, 1.2 * s, 2)).tolist()
    dx, dy, _, _ = _frame(size, cx, cy, 0.0)
    d = np.sqrt(dx * dx + dy * dy) + 1e-6
    phi = np.arctan2(dy, dx)
    radius = 84 * s * (1 + 0.02 * np.cos(21 * phi + rng.uniform(0, 2 * np.pi)))  # crimps
    rho = d / radius
    cover = np.clip((1 - rho) * radius + 0.5, 0, 1)
    ring, groove = (rho - 0.58) / 0.025, (rho - 0.84) / 0.03
    slope = 0.1 * rho + 1.6 * ring * np.exp(-ring * ring) - 1.2 * groove * np.exp(-(groove**2))
    slope += 4 * np.clip((rho - 0.88) / 0.12, 0, 1) ** 2  # rolled edge
    diffuse, spec = _shading(slope * dx / d, slope * dy / d, np.ones_like(d), rng, 25)
    turned = np.interp(d, np.arange(int(d.max()) + 2), rng.normal(0, 1, int(d.max()) + 2))
    red = np.float32((0.70, 0.09, 0.08)) + rng.normal(0, 0.012, 3).astype(np.float32)
    base = red * (1 + 0.04 * turned.astype(np.float32))[..., None]
    ink = _print(size, [("SSAD", 0, 0, 0.95 * s, max(1, round(2 * s)))], cx, cy, 0.0)
    base += (np.float32(0.95) - base) * ink[..., None]
    obj = base * diffuse + 0.5 * spec
    image, background = _stage(rng, size, cover, obj, (0.80, 0.80, 0.77))
    return _Scene(image, cover, background, ink=ink)


def _hex_nut(rng: np.random.Generator, size: int) -> _Scene:
    """A steel hexagonal nut with a threaded bore, at a random angle and position."""
    s = size / 256
    outer = 64 * s  # circumradius
    apothem = outer * math.sqrt(3) / 2
    reach = size / 2 - outer - 6 * s
    cx, cy = (size / 2 + rng.uniform(-reach, reach, 2)).tolist()
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy, u, v = _frame(size, cx, cy, angle)
    hexd = np.maximum(np.abs(u), np.maximum(np.abs(u / 2 + v * 0.866), np.abs(u / 2 - v * 0.866)))
    d = np.sqrt(dx * dx + dy * dy) + 1e-6
    bore = 0.42 * apothem
    cover = np.clip(apothem - hexd + 0.5, 0, 1) * np.clip(d - bore + 0.5, 0, 1)
    slope = np.where(d > 0.92 * apothem, 0.9, 0.0)  # chamfered corners
    thread = d < 0.56 * apothem
    slope = np.where(thread, -1.3, slope).astype(np.float32)  # bore wall faces the centre
    diffuse, spec = _shading(slope * dx / d, slope * dy / d, np.ones_like(d), rng, 20)
    steel = np.float32((0.60, 0.61, 0.64)) + rng.normal(0, 0.012, 3).astype(np.float32)
    grain = 1 + 0.04 * _smooth_noise(rng, size, 0.8 * s)
    grain *= np.where(thread, 0.75 + 0.25 * np.sin(2 * np.pi * d / (3.2 * s)), 1.0)
    obj = steel * (grain * diffuse[..., 0])[..., None] + 0.55 * spec
    image, background = _stage(rng, size, cover, obj, (0.16, 0.18, 0.22))
    k = np.arange(6) * np.pi / 3 + np.pi / 6 + angle  # corners of the hexagon
    corners = np.stack([cx + outer * np.cos(k), cy + outer * np.sin(k)], axis=1)
    return _Scene(image, cover, background, corners=corners)


# --- defects: (scene, rng, s) -> (alpha (H, W), target (H, W, 3) or (3,)) -------------------


def _spot(scene: _Scene, rng: np.random.Generator, margin: float) -> np.ndarray:
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
    dx, dy, u, v = _frame(scene.cover.shape[0], cx, cy, theta)
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 on the ellipse
    toward = (dx * _LIGHT[0] + dy * _LIGHT[1]) / (a * np.linalg.norm(_LIGHT[:2]))
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
    mottle = 1 + grain * _smooth_noise(rng, size, 1.2 * s)
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


_DEFECTS: dict[str, dict[str, Callable]] = {  # each class's own defect types
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
DEFECT_TYPES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _DEFECTS.items()}
_RENDER: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    **{name: partial(_texture, name) for name in _TEXTURES},
    "gelcap": _gelcap,
    "bottle_cap": _bottle_cap,
    "hex_nut": _hex_nut,
}


def _apply_defect(scene: _Scene, draw: Callable, rng: np.random.Generator):
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
    scene = _RENDER[class_name](rng, size)
    image, mask = scene.image, np.zeros((size, size), bool)
    if defect is not None:
        image, mask = _apply_defect(scene, _DEFECTS[class_name][defect], rng)
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
