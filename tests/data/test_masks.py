"""Object foreground masks (ssad.data.masks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ssad.data.masks import class_foreground, foreground_mask

SIZE = 256


def _disc(cy: int = 120, cx: int = 140, r: int = 60) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _flat_disc(disc: np.ndarray, fg: int, bg: int) -> np.ndarray:
    return np.where(disc[..., None], fg, bg).astype(np.uint8).repeat(3, axis=2)


def _photo_disc(disc: np.ndarray, seed: int) -> np.ndarray:
    """A coloured disc on a blotchy, grainy background, both with sensor-like noise."""
    rng = np.random.default_rng(seed)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE, 3)).astype(np.float32), (0, 0), 8)
    background = 70 + 25 * blotches / blotches.std() + rng.normal(0, 12, (SIZE, SIZE, 3))
    foreground = np.array([200, 170, 120]) + rng.normal(0, 12, (SIZE, SIZE, 3))
    return np.clip(np.where(disc[..., None], foreground, background), 0, 255).astype(np.uint8)


def test_texture_is_all_ones():
    image = _photo_disc(_disc(), 0)
    mask = foreground_mask(image, category="texture")
    assert mask.dtype == bool and mask.shape == (SIZE, SIZE) and mask.all()


@pytest.mark.parametrize(("cy", "cx", "r"), [(120, 140, 60), (60, 70, 30), (128, 128, 100)])
@pytest.mark.parametrize(("fg", "bg"), [(220, 30), (40, 200)])
def test_object_mask_is_the_disc(cy, cx, r, fg, bg):
    disc = _disc(cy, cx, r)
    mask = foreground_mask(_flat_disc(disc, fg, bg), category="object")
    assert mask.dtype == bool and mask.shape == (SIZE, SIZE)
    assert _iou(mask, disc) > 0.8


@pytest.mark.parametrize("seed", range(3))
def test_object_mask_on_a_photo_like_background(seed):
    disc = _disc(100 + 10 * seed, 150 - 20 * seed, 50)
    mask = foreground_mask(_photo_disc(disc, seed), category="object")
    assert _iou(mask, disc) > 0.8


def test_object_mask_keeps_the_largest_component():
    big, small = _disc(80, 80, 50), _disc(200, 200, 20)
    mask = foreground_mask(_flat_disc(big | small, 220, 30), category="object")
    assert _iou(mask, big) > 0.8 and not mask[200, 200]


@pytest.mark.parametrize(
    "image",
    [
        np.full((SIZE, SIZE, 3), 90, np.uint8),  # no edges at all
        _flat_disc(_disc(128, 128, 6), 220, 30),  # object under 1 % of the image
    ],
    ids=["flat", "tiny"],
)
def test_degenerate_object_mask_falls_back_to_all_ones(image):
    mask = foreground_mask(image, category="object")
    assert mask.dtype == bool and mask.all()


def test_class_foreground_votes_over_images():
    disc = _disc()
    images = [_photo_disc(disc, seed) for seed in range(4)]
    images.append(np.full((SIZE, SIZE, 3), 90, np.uint8))  # degenerate: doesn't vote
    mask = class_foreground(images, category="object")
    assert mask.dtype == bool and _iou(mask, disc) > 0.8
    # One misplaced object among five is outvoted.
    moved = [_flat_disc(disc, 220, 30)] * 4 + [_flat_disc(_disc(60, 60, 40), 220, 30)]
    assert _iou(class_foreground(moved, category="object"), disc) > 0.8


def test_class_foreground_fallbacks_and_errors():
    flat = np.full((SIZE, SIZE, 3), 90, np.uint8)
    assert class_foreground([flat, flat], category="object").all()
    assert class_foreground([_photo_disc(_disc(), 0)], category="texture").all()
    with pytest.raises(ValueError, match="at least one"):
        class_foreground([], category="object")
    with pytest.raises(ValueError, match="differ in size"):
        class_foreground([flat, flat[:100]], category="object")
    with pytest.raises(ValueError, match="category"):
        foreground_mask(flat, category="fabric")  # type: ignore[arg-type]
