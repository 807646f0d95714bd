"""Geometry, fills, placement and purity of the synthetic defects (ssad.data.defects)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ssad.config import DefectsConfig, DefectShape
from ssad.data import defects as D

CFG = DefectsConfig()
SHAPES = {"big": CFG.big, "scar": CFG.scar}
DRAWS = 300


def _noise(seed: int, size: int = 256, base=(120, 120, 120), spread: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.asarray(base, dtype=np.float64) + rng.uniform(-spread, spread, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _in_union(aspect: float, s: DefectShape) -> bool:
    low = s.aspect_low_min <= aspect < s.aspect_low_max
    high = s.aspect_high_min < aspect <= s.aspect_high_max
    return low or high


def _length_share(s: DefectShape) -> float:
    low = s.aspect_low_max - s.aspect_low_min
    return low / (low + s.aspect_high_max - s.aspect_high_min)


def _run(kind: str, image: np.ndarray, rng: np.random.Generator, **kw):
    kw.setdefault("center_mask", None)
    if kind == "line":
        return D.line_defect(image, rng, center_mask=kw["center_mask"])
    kw.setdefault("fills", CFG.fills)
    if kind == "big":
        return D.big_defect(image, rng, shape=CFG.big, **kw)
    return D.scar(image, rng, shape=CFG.scar, max_angle=CFG.scar_angle, **kw)


# ---- geometry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["big", "scar"])
@pytest.mark.parametrize("patch_mode", [False, True])
def test_area_and_aspect_draws_follow_the_configured_ranges(kind, patch_mode):
    s = SHAPES[kind]
    lo, hi = (s.patch_area_min, s.patch_area_max) if patch_mode else (s.area_min, s.area_max)
    rng = np.random.default_rng(0)
    draws = [D.sample_area_aspect(rng, shape=s, patch_mode=patch_mode) for _ in range(DRAWS)]
    areas, aspects = np.array(draws).T
    assert np.all((areas >= lo) & (areas <= hi))
    assert areas.max() - areas.min() > 0.8 * (hi - lo)  # the whole range is used
    assert all(_in_union(a, s) for a in aspects)
    assert not np.any((aspects >= s.aspect_low_max) & (aspects <= s.aspect_high_min))
    # Each interval is picked with probability proportional to its length.
    share, low = _length_share(s), np.mean(aspects < 1.0)
    assert abs(low - share) < 4 * np.sqrt(share * (1 - share) / DRAWS)


@pytest.mark.parametrize("kind", ["big", "scar"])
@pytest.mark.parametrize(("patch_mode", "size"), [(False, 256), (True, 32), (False, 200)])
def test_rectangle_sizes_are_consistent_with_area_and_aspect(kind, patch_mode, size):
    s = SHAPES[kind]
    lo, hi = (s.patch_area_min, s.patch_area_max) if patch_mode else (s.area_min, s.area_max)
    rng = np.random.default_rng(1)
    sizes = [
        D.sample_rect(rng, image_hw=(size, size), shape=s, patch_mode=patch_mode)
        for _ in range(DRAWS)
    ]
    for h, w in sizes:
        assert 1 <= h <= size and 1 <= w <= size
        # Some real size within half a pixel of (h, w) has an allowed area and aspect.
        assert (h - 0.5) * (w - 0.5) <= hi * size * size
        assert (h + 0.5) * (w + 0.5) >= lo * size * size
        assert (w - 0.5) / (h + 0.5) <= s.aspect_high_max
        assert (w + 0.5) / (h - 0.5) >= s.aspect_low_min
        # Rounding never lands in the excluded gap (for big: never a square).
        assert not s.aspect_low_max <= w / h <= s.aspect_high_min, (h, w)
    # w < h (low aspect) about as often as the low interval's share of the length.
    share = _length_share(s)
    low = np.mean([w < h for h, w in sizes])
    assert abs(low - share) < 4 * np.sqrt(share * (1 - share) / DRAWS)


def test_convex_polygon_has_one_or_two_points_per_side_and_is_convex():
    rng = np.random.default_rng(2)
    counts = set()
    for _ in range(DRAWS):
        h, w = (int(v) for v in rng.integers(3, 150, size=2))
        poly = D.convex_polygon(rng, h, w)
        counts.add(len(poly))
        assert poly.shape[1] == 2 and 4 <= len(poly) <= 8
        x, y = poly[:, 0], poly[:, 1]
        assert np.all((x >= 0) & (x <= w) & (y >= 0) & (y <= h))
        on_side = [y == 0, x == w, y == h, x == 0]
        assert all(1 <= side.sum() <= 2 for side in on_side)
        # Convex: consecutive edges always turn the same way (clockwise as displayed).
        e = np.roll(poly, -1, axis=0) - poly
        cross = e[:, 0] * np.roll(e, -1, axis=0)[:, 1] - e[:, 1] * np.roll(e, -1, axis=0)[:, 0]
        assert np.all(cross > 0)
    assert counts == set(range(4, 9))


def test_polygon_mask_area_matches_the_polygon_area():
    rng = np.random.default_rng(3)
    for _ in range(DRAWS):
        h, w = (int(v) for v in rng.integers(5, 150, size=2))
        poly = D.convex_polygon(rng, h, w)
        area = cv2.contourArea(poly.astype(np.float32))
        perimeter = cv2.arcLength(poly.astype(np.float32), True)
        assert abs(D.polygon_mask(poly, h, w).sum() - area) <= 0.25 * perimeter + 1


@pytest.mark.parametrize("patch_mode", [False, True])
def test_big_defect_mask_is_the_sampled_polygon(patch_mode):
    size = 32 if patch_mode else 256
    image = _noise(0, size)
    for seed in range(100):
        # big_defect draws its rectangle, then its polygon, before anything else.
        rng = np.random.default_rng(seed)
        h, w = D.sample_rect(rng, image_hw=(size, size), shape=CFG.big, patch_mode=patch_mode)
        poly = D.convex_polygon(rng, h, w)
        _, mask = D.big_defect(
            image,
            np.random.default_rng(seed),
            shape=CFG.big,
            fills=CFG.fills,
            center_mask=None,
            patch_mode=patch_mode,
        )
        area = cv2.contourArea(poly.astype(np.float32))
        perimeter = cv2.arcLength(poly.astype(np.float32), True)
        assert abs(mask.sum() - area) <= 0.25 * perimeter + 1
        ys, xs = np.nonzero(mask)
        assert ys.max() - ys.min() + 1 <= h and xs.max() - xs.min() + 1 <= w


@pytest.mark.parametrize("max_angle", [45.0, 10.0])
def test_scar_angle_stays_within_max_angle(max_angle):
    rng = np.random.default_rng(4)
    angles = np.array(
        [
            D.scar_geometry(
                rng, image_hw=(256, 256), shape=CFG.scar, max_angle=max_angle, patch_mode=False
            )[2]
            for _ in range(DRAWS)
        ]
    )
    assert np.all(np.abs(angles) <= max_angle)
    assert angles.min() < -0.8 * max_angle and angles.max() > 0.8 * max_angle


@pytest.mark.parametrize("patch_mode", [False, True])
def test_scar_mask_is_the_rotated_thin_rectangle(patch_mode):
    size = 32 if patch_mode else 256
    image = _noise(1, size)
    checked = 0
    for seed in range(150):
        h, w, angle = D.scar_geometry(
            np.random.default_rng(seed),
            image_hw=(size, size),
            shape=CFG.scar,
            max_angle=45.0,
            patch_mode=patch_mode,
        )
        _, mask = D.scar(
            image,
            np.random.default_rng(seed),
            shape=CFG.scar,
            max_angle=45.0,
            fills=CFG.fills,
            center_mask=None,
            patch_mode=patch_mode,
        )
        assert abs(mask.sum() - h * w) <= 0.3 * 2 * (h + w) + 1
        if max(h, w) >= 10:  # long enough for a reliable orientation
            m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
            theta = np.degrees(0.5 * np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"]))
            # y points down: a counter-clockwise turn by `angle` gives axis angle -angle.
            expected = -angle if w > h else 90.0 - angle
            assert abs((theta - expected + 90.0) % 180.0 - 90.0) < 8.0, (h, w, angle, theta)
            checked += 1
    assert checked > (10 if patch_mode else 30)


def test_unrotated_scar_is_an_axis_aligned_rectangle():
    image = _noise(2)
    for seed in range(50):
        h, w, _ = D.scar_geometry(
            np.random.default_rng(seed),
            image_hw=(256, 256),
            shape=CFG.scar,
            max_angle=0.0,
            patch_mode=False,
        )
        _, mask = D.scar(
            image,
            np.random.default_rng(seed),
            shape=CFG.scar,
            max_angle=0.0,
            fills=("random",),
            center_mask=None,
        )
        ys, xs = np.nonzero(mask)
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (h, w)
        assert mask.sum() == h * w


# ---- placement --------------------------------------------------------------------------------
def _disc(size: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_sample_center_draws_from_the_mask_only():
    disc = _disc(256, 60, 190, 6)
    rng = np.random.default_rng(5)
    centres = np.array([D.sample_center(rng, disc) for _ in range(DRAWS)])
    assert disc[centres[:, 0], centres[:, 1]].all()
    assert len({tuple(c) for c in centres}) > 50  # spread over the disc, not one pixel
    two = np.zeros((64, 64), bool)
    two[3, 4] = two[50, 60] = True
    picks = [D.sample_center(rng, two) for _ in range(DRAWS)]
    assert abs(np.mean([p == (3, 4) for p in picks]) - 0.5) < 0.12
    empty = np.zeros((64, 48), bool)  # no foreground: anywhere in the image
    picks = np.array([D.sample_center(rng, empty) for _ in range(DRAWS)])
    assert picks[:, 0].max() < 64 and picks[:, 1].max() < 48 and len(np.unique(picks, axis=0)) > 200


def test_place_box_keeps_the_box_inside_the_image():
    rng = np.random.default_rng(6)
    for _ in range(DRAWS):
        bh, bw = (int(v) for v in rng.integers(1, 100, size=2))
        cy, cx = (int(v) for v in rng.integers(0, 128, size=2))
        top, left = D.place_box((cy, cx), box_hw=(bh, bw), image_hw=(128, 128))
        assert 0 <= top <= 128 - bh and 0 <= left <= 128 - bw
        if bh // 2 <= cy < 128 - bh + bh // 2 and bw // 2 <= cx < 128 - bw + bw // 2:
            assert (top + bh // 2, left + bw // 2) == (cy, cx)  # not shifted: centred


@pytest.mark.parametrize("kind", ["big", "scar"])
def test_defect_centre_lies_in_the_object_foreground(kind):
    disc = _disc(256, 80, 170, 8)
    image = _noise(3)
    for seed in range(100):
        _, mask = _run(kind, image, np.random.default_rng(seed), center_mask=disc)
        ys, xs = np.nonzero(mask)
        # The polygon touches every side of its box, so the mask's box centre is the paste centre.
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        assert np.hypot(cy - 80, cx - 170) <= 8 + 2, (seed, cy, cx)


def test_line_is_drawn_near_the_foreground():
    disc = _disc(256, 200, 60, 5)
    image = _noise(4)
    for seed in range(100):
        _, mask = D.line_defect(image, np.random.default_rng(seed), center_mask=disc)
        ys, xs = np.nonzero(mask)
        # The walk is centred on the sampled point; 5 steps of at most 12 % of the side.
        assert np.hypot(ys.mean() - 200, xs.mean() - 60) < 5 + 0.3 * 256


# ---- fills ------------------------------------------------------------------------------------
def _gradient(size: int = 256) -> np.ndarray:
    """Hue changes along x: most regions' mean colour differs from the image mean."""
    x = np.linspace(0, 255, size)[None, :].repeat(size, axis=0)
    return np.stack([x, 255 - x, np.full_like(x, 40)], axis=2).astype(np.uint8)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a + 1.0, b + 1.0
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("kind", ["big", "scar"])
def test_mean_fill_is_the_flat_mean_of_the_covered_region(kind):
    image = _gradient()
    image_mean = image.reshape(-1, 3).mean(0)
    kept = rescaled = 0
    for seed in range(100):
        out, mask = _run(kind, image, np.random.default_rng(seed), fills=("mean",))
        colours = np.unique(out[mask], axis=0)
        assert len(colours) == 1  # flat
        region_mean = image[mask].mean(0)
        if _cosine(region_mean, image_mean) <= D.SIMILAR_COSINE:
            assert np.abs(colours[0] - region_mean).max() <= 0.5 + 1e-9
            kept += 1
        else:  # the brightness rule changed it visibly
            assert abs(colours[0].mean() - region_mean.mean()) >= 20
            rescaled += 1
    assert kept > 30 and rescaled > 0


@pytest.mark.parametrize("kind", ["big", "scar"])
def test_random_fill_is_one_flat_colour(kind):
    image = _noise(5)
    colours = set()
    for seed in range(50):
        out, mask = _run(kind, image, np.random.default_rng(seed), fills=("random",))
        flat = np.unique(out[mask], axis=0)
        assert len(flat) == 1
        colours.add(tuple(flat[0]))
    assert len(colours) > 40


def test_cutpaste_copies_a_block_of_the_source():
    size = 200
    yy, xx = np.mgrid[:size, :size]
    source = np.stack([yy, xx, np.full_like(yy, 255)], axis=2).astype(np.uint8)  # encodes (y, x)
    image = _noise(6, size, base=(200, 30, 30), spread=30)  # red: never similar to the source
    for seed in range(100):
        out, mask = D.big_defect(
            image,
            np.random.default_rng(seed),
            shape=CFG.big,
            fills=("cutpaste",),
            center_mask=None,
            source=source,
        )
        pasted = out[mask].astype(int)
        ys, xs = np.nonzero(mask)
        assert np.all(pasted[:, 2] == 255)
        dy, dx = pasted[:, 0] - ys, pasted[:, 1] - xs
        assert np.ptp(dy) == 0 and np.ptp(dx) == 0  # one rigid copy, no rescaling


def test_cutpaste_from_the_image_itself_moves_content():
    size = 200
    yy, xx = np.mgrid[:size, :size]
    image = np.stack([yy, xx, np.zeros_like(yy)], axis=2).astype(np.uint8)
    moved = 0
    for seed in range(100):
        out, mask = D.big_defect(
            image, np.random.default_rng(seed), shape=CFG.big, fills=("cutpaste",), center_mask=None
        )
        pasted = out[mask].astype(int)
        ys, xs = np.nonzero(mask)
        dy, dx = pasted[:, 0] - ys, pasted[:, 1] - xs
        if np.ptp(dy) == 0 and np.ptp(dx) == 0:  # not rescaled: a rigid copy from the image
            moved += dy[0] != 0 or dx[0] != 0
    assert moved > 50


def test_scar_cutpaste_rotates_source_content():
    image = _noise(7, base=(200, 40, 40), spread=30)
    source = np.zeros_like(image)
    source[..., 2] = 255  # blue
    for seed in range(30):
        out, mask = D.scar(
            image,
            np.random.default_rng(seed),
            shape=CFG.scar,
            max_angle=45.0,
            fills=("cutpaste",),
            center_mask=None,
            source=source,
        )
        assert np.all(out[mask] == (0, 0, 255))


@pytest.mark.parametrize("kind", ["big", "scar"])
@pytest.mark.parametrize("fill", ["mean", "cutpaste"])
@pytest.mark.parametrize("level", [0, 128, 255])
def test_brightness_rule_keeps_defects_visible_on_flat_images(kind, fill, level):
    image = np.full((128, 128, 3), level, np.uint8)
    for seed in range(30):
        out, mask = _run(kind, image, np.random.default_rng(seed), fills=(fill,))
        assert np.all(np.abs(out[mask].astype(int) - level) >= 20)


# ---- purity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["big", "scar", "line"])
@pytest.mark.parametrize("size", [256, 32])
def test_defects_are_pure_deterministic_and_local(kind, size):
    image = _noise(8, size)
    before = image.copy()
    patch = {} if kind == "line" else {"patch_mode": size == 32}
    a, mask_a = _run(kind, image, np.random.default_rng(11), **patch)
    b, mask_b = _run(kind, image, np.random.default_rng(11), **patch)
    c, mask_c = _run(kind, image, np.random.default_rng(12), **patch)
    assert np.array_equal(image, before)  # input untouched
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    assert not (np.array_equal(a, c) and np.array_equal(mask_a, mask_c))
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert mask_a.dtype == bool and mask_a.shape == image.shape[:2] and mask_a.any()
    assert np.array_equal(a[~mask_a], image[~mask_a])  # only masked pixels change


def test_line_is_a_thin_blend_of_black_white_or_silver():
    image = _noise(9)
    used = set()
    for seed in range(60):
        out, mask = D.line_defect(image, np.random.default_rng(seed), center_mask=None)
        assert 10 < mask.sum() < 0.05 * image.shape[0] * image.shape[1]
        src, dst = image[mask].astype(float), out[mask].astype(float)
        fits = []
        for i, colour in enumerate(np.array(D.LINE_COLOURS, dtype=float)):
            d = colour - src
            alpha = np.clip(np.sum((dst - src) * d, 1) / np.maximum(np.sum(d * d, 1), 1e-9), 0, 1)
            residual = np.abs(dst - (src + alpha[:, None] * d)).max()
            fits.append((residual, i, alpha.max()))
        residual, i, strongest = min(fits)
        assert residual <= 1.5 and strongest > 0.5  # out = (1 - α)·image + α·colour
        used.add(i)
    assert used == {0, 1, 2}


def test_bad_arguments_raise():
    image = _noise(10, 64)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="fills"):
        D.big_defect(image, rng, shape=CFG.big, fills=(), center_mask=None)
    with pytest.raises(ValueError, match="unknown fill"):
        D.big_defect(image, rng, shape=CFG.big, fills=("blur",), center_mask=None)
    with pytest.raises(ValueError, match="center_mask"):
        D.scar(
            image,
            rng,
            shape=CFG.scar,
            max_angle=45,
            fills=CFG.fills,
            center_mask=np.ones((32, 32), bool),
        )
    with pytest.raises(ValueError, match="uint8"):
        D.line_defect(image.astype(np.float32), rng, center_mask=None)
