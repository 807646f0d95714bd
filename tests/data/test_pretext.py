"""The on-the-fly 3-way (or 4-way) pretext data set: labels, shapes, masks, reproducibility."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from ssad.config import Config, load_config
from ssad.data.images import denormalize
from ssad.data.pretext import PretextDataset, color_jitter

SIZE = 64


def _images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (n, 1, 1, 3))
    return list(np.clip(base + rng.integers(-40, 40, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8))


def _config(**overrides: object) -> Config:
    over = {"data.image_size": SIZE, "model.weights": "none", **overrides}
    return load_config(preset="seed", overrides=over)


def _dataset(config: Config, *, length: int = 64, seed: int = 0, sources: bool = False):
    images = _images()
    masks = [np.ones((SIZE, SIZE), bool)] * len(images)
    return PretextDataset(
        images,
        config=config,
        fg_masks=masks,
        sources=_images(2, seed=9) if sources else None,
        length=length,
        seed=seed,
    )


@pytest.mark.parametrize(("classes", "n"), [(2, 600), (3, 900), (4, 1200)])
def test_labels_cover_all_classes_roughly_balanced(classes: int, n: int) -> None:
    ds = _dataset(_config(**{"pretext.classes": classes, "pretext.mode": "patch"}), length=n)
    counts = Counter(ds.sample(i)[1] for i in range(n))
    assert set(counts) == set(range(classes))
    expected = n / classes
    for label in range(classes):  # ±25 % of the expected count (binomial sd is ~5 % here)
        assert abs(counts[label] - expected) < 0.25 * expected, counts


def test_image_mode_shapes() -> None:
    ds = _dataset(_config(**{"pretext.mode": "image"}), length=10)
    assert len(ds) == 10
    for i in range(6):
        x, y = ds[i]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert x.shape == (3, SIZE, SIZE)
        assert y in (0, 1, 2)
        image, label, mask = ds.sample(i)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
        assert label == y


@pytest.mark.parametrize("patch", [16, 32])
def test_patch_mode_shapes(patch: int) -> None:
    ds = _dataset(_config(**{"pretext.mode": "patch", "pretext.patch_size": patch}), sources=True)
    for i in range(8):
        x, _ = ds[i]
        assert x.shape == (3, patch, patch)
        image, _, mask = ds.sample(i)
        assert image.shape == (patch, patch, 3)
        assert mask.shape == (patch, patch)


@pytest.mark.parametrize("mode", ["image", "patch"])
def test_defect_masks_match_labels(mode: str) -> None:
    ds = _dataset(_config(**{"pretext.mode": mode, "pretext.classes": 4}), sources=True)
    seen = set()
    for i in range(80):
        image, y, mask = ds.sample(i)
        seen.add(y)
        if y == 0:
            assert not mask.any(), i
        else:
            assert mask.any(), i
            assert mask.mean() < 0.6, i  # a defect covers part of the image, not all of it
            assert mask.shape == image.shape[:2]
    assert seen == {0, 1, 2, 3}


def test_defect_changes_pixels_inside_mask() -> None:
    cfg = _config(**{"pretext.mode": "image", "pretext.jitter": 0.0, "defects.fills": ["random"]})
    ds = _dataset(cfg)
    checked = 0
    for i in range(40):
        image, y, mask = ds.sample(i)
        original = ds.images[i % len(ds.images)]
        outside = ~mask
        # without jitter, pixels outside the defect mask are untouched
        np.testing.assert_array_equal(image[outside], original[outside])
        if y > 0:
            assert (image[mask] != original[mask]).any()
            checked += 1
    assert checked > 10


def test_same_seed_epoch_index_is_identical_and_epochs_differ() -> None:
    cfg = _config(**{"pretext.mode": "patch"})
    a, b = _dataset(cfg, seed=5), _dataset(cfg, seed=5)
    for i in (0, 3, 17):
        ia, ya, ma = a.sample(i)
        ib, yb, mb = b.sample(i)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
        assert ya == yb
        assert torch.equal(a[i][0], b[i][0])
    first = [a.sample(i)[0] for i in range(8)]
    a.set_epoch(1)
    second = [a.sample(i)[0] for i in range(8)]
    assert sum(not np.array_equal(x, y) for x, y in zip(first, second)) >= 7
    a.set_epoch(0)
    for x, y in zip(first, (a.sample(i)[0] for i in range(8))):
        np.testing.assert_array_equal(x, y)
    other_seed = _dataset(cfg, seed=6)
    assert not all(np.array_equal(x, other_seed.sample(i)[0]) for i, x in enumerate(first))


def test_color_jitter_strength_zero_is_identity() -> None:
    image = _images(1)[0]
    rng = np.random.default_rng(0)
    assert np.array_equal(color_jitter(image, rng, 0.0), image)
    jittered = color_jitter(image, np.random.default_rng(0), 0.3)
    assert jittered.shape == image.shape and jittered.dtype == np.uint8
    assert not np.array_equal(jittered, image)


def test_no_jitter_normal_sample_is_the_image() -> None:
    ds = _dataset(_config(**{"pretext.mode": "image", "pretext.jitter": 0.0}))
    normals = [i for i in range(30) if ds.sample(i)[1] == 0]
    assert normals
    for i in normals:
        image, _, _ = ds.sample(i)
        np.testing.assert_array_equal(image, ds.images[i % len(ds.images)])
        np.testing.assert_array_equal(denormalize(ds[i][0][None])[0], image)


def test_mask_count_must_match_images() -> None:
    with pytest.raises(ValueError, match="foreground mask"):
        PretextDataset(
            _images(2), config=_config(), fg_masks=[np.ones((SIZE, SIZE), bool)], length=4
        )


def test_synthetic_validation_draws_several_defects_per_held_out_image() -> None:
    from ssad.data.pretext import synthetic_anomalies

    rng = np.random.default_rng(0)
    images = [rng.integers(60, 200, (64, 64, 3)).astype(np.uint8) for _ in range(3)]
    masks = [np.ones((64, 64), bool)] * 3
    imgs, labels, gts = synthetic_anomalies(images, masks, seed=5, draws=4)
    assert imgs.shape == (15, 64, 64, 3) and gts.shape == (15, 64, 64)
    assert labels.tolist() == ([0] + [1] * 4) * 3
    assert not gts[labels == 0].any() and all(g.any() for g in gts[labels == 1])
    for i in range(3):  # the normal copy is the held-out image itself; every draw differs
        np.testing.assert_array_equal(imgs[5 * i], images[i])
        draws = imgs[5 * i + 1 : 5 * i + 5]
        assert len({d.tobytes() for d in draws}) == 4
    again = synthetic_anomalies(images, masks, seed=5, draws=4)[0]
    np.testing.assert_array_equal(again, imgs)  # seeded


def test_synthetic_validation_set_does_not_follow_a_trials_defect_settings(make_config) -> None:
    """data.val_source synthetic: two trials whose searched defects.* differ are judged on the
    same validation images (the seed's fixed defect ranges)."""
    from ssad.pipeline import load_data, splits

    cfg = make_config(**{"data.val_source": "synthetic"})
    other = cfg.with_overrides({"defects.big.area_max": 0.3, "defects.scar.area_max": 0.02})
    a = splits(cfg, load_data(cfg))[1]
    b = splits(other, load_data(other))[1]
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
