"""Normal images of the synthetic data set: texture crops and shaded object renderings.

``RENDER[class](rng, size)`` draws one normal :class:`Scene` of a class (``ssad.data.synthetic``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import cv2
import numpy as np

__all__ = ["LIGHT", "RENDER", "Scene", "frame", "smooth_noise"]

LIGHT = np.array([-0.45, -0.55, 0.70], dtype=np.float32)  # towards the light (top left, above)
_TEXTURES = {  # class: (skimage.data photo, dark colour, light colour, may turn by 90°)
    "brick": ("brick", (0.18, 0.07, 0.05), (0.96, 0.72, 0.58), False),
    "grass": ("grass", (0.03, 0.09, 0.02), (0.70, 0.90, 0.42), True),
    "gravel": ("gravel", (0.07, 0.06, 0.05), (0.96, 0.94, 0.89), True),
}


@dataclass
class Scene:
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


def _texture(name: str, rng: np.random.Generator, size: int) -> Scene:
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
    return Scene(image.astype(np.float32), np.ones((size, size), np.float32))


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian noise (H, W) blurred by ``sigma`` pixels, rescaled to unit std."""
    noise = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _shading(nx, ny, nz, rng: np.random.Generator, gloss: float):
    """Lambert diffuse and Blinn specular (H, W, 1) of normals (nx, ny, nz), light jittered."""
    light = LIGHT + rng.normal(0, 0.05, 3).astype(np.float32)
    light /= np.linalg.norm(light)
    norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-6
    half = light + np.float32([0, 0, 1])
    half /= np.linalg.norm(half)
    diffuse = np.clip((nx * light[0] + ny * light[1] + nz * light[2]) / norm, 0, 1)
    spec = np.clip((nx * half[0] + ny * half[1] + nz * half[2]) / norm, 0, 1) ** gloss
    return (0.3 + 0.75 * diffuse)[..., None], spec[..., None]


def frame(size: int, cx: float, cy: float, angle: float):
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
    light = 1 + 0.08 * (1 - x - y) + 0.015 * smooth_noise(rng, size, 2 * s)
    background = tint * light[..., None]
    shift = np.float32([[1, 0, 4 * s], [0, 1, 5 * s]])  # shadow falls away from the light
    shadow = cv2.GaussianBlur(cv2.warpAffine(cover, shift, (size, size)), (0, 0), 4 * s)
    background *= (1 - 0.45 * shadow)[..., None]
    image = background + (obj - background) * cover[..., None]
    return image.astype(np.float32), background.astype(np.float32)


def _gelcap(rng: np.random.Generator, size: int) -> Scene:
    """A red/cream gel capsule lying horizontally, printed "SSAD" and "25"; tiny jitter."""
    s = size / 256
    cx, cy = (size / 2 + rng.normal(0, 1.2 * s, 2)).tolist()
    angle = math.radians(rng.normal(0, 1.0))
    _, _, u, v = frame(size, cx, cy, angle)
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
    return Scene(image, cover, background, plain.astype(np.float32), ink)


def _bottle_cap(rng: np.random.Generator, size: int) -> Scene:
    """A knurled red metal crown cap seen from above, with an embossed ring and a white logo."""
    s = size / 256
    cx, cy = (size / 2 + rng.normal(0, 1.2 * s, 2)).tolist()
    dx, dy, _, _ = frame(size, cx, cy, 0.0)
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
    return Scene(image, cover, background, ink=ink)


def _hex_nut(rng: np.random.Generator, size: int) -> Scene:
    """A steel hexagonal nut with a threaded bore, at a random angle and position."""
    s = size / 256
    outer = 64 * s  # circumradius
    apothem = outer * math.sqrt(3) / 2
    reach = size / 2 - outer - 6 * s
    cx, cy = (size / 2 + rng.uniform(-reach, reach, 2)).tolist()
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy, u, v = frame(size, cx, cy, angle)
    hexd = np.maximum(np.abs(u), np.maximum(np.abs(u / 2 + v * 0.866), np.abs(u / 2 - v * 0.866)))
    d = np.sqrt(dx * dx + dy * dy) + 1e-6
    bore = 0.42 * apothem
    cover = np.clip(apothem - hexd + 0.5, 0, 1) * np.clip(d - bore + 0.5, 0, 1)
    slope = np.where(d > 0.92 * apothem, 0.9, 0.0)  # chamfered corners
    thread = d < 0.56 * apothem
    slope = np.where(thread, -1.3, slope).astype(np.float32)  # bore wall faces the centre
    diffuse, spec = _shading(slope * dx / d, slope * dy / d, np.ones_like(d), rng, 20)
    steel = np.float32((0.60, 0.61, 0.64)) + rng.normal(0, 0.012, 3).astype(np.float32)
    grain = 1 + 0.04 * smooth_noise(rng, size, 0.8 * s)
    grain *= np.where(thread, 0.75 + 0.25 * np.sin(2 * np.pi * d / (3.2 * s)), 1.0)
    obj = steel * (grain * diffuse[..., 0])[..., None] + 0.55 * spec
    image, background = _stage(rng, size, cover, obj, (0.16, 0.18, 0.22))
    k = np.arange(6) * np.pi / 3 + np.pi / 6 + angle  # corners of the hexagon
    corners = np.stack([cx + outer * np.cos(k), cy + outer * np.sin(k)], axis=1)
    return Scene(image, cover, background, corners=corners)


RENDER: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    **{name: partial(_texture, name) for name in _TEXTURES},
    "gelcap": _gelcap,
    "bottle_cap": _bottle_cap,
    "hex_nut": _hex_nut,
}
