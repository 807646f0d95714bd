"""The final bank's position statistics: leave-one-image-out scores and per-position calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssad.bank import leave_one_image_out_scores, position_stats
from ssad.localize import normalize_positions
from ssad.memory import MemoryBank


def _bank(vectors: np.ndarray, size: int) -> tuple[MemoryBank, np.ndarray]:
    bank = MemoryBank(vectors.shape[1], size=size, backend="cpu")
    bank.add(vectors)
    keep = bank.subsample(method="coreset", seed=0)
    return bank, keep


@pytest.mark.parametrize("size", [1000, 150])  # every vector kept / a coreset
def test_leave_one_image_out_scores_equal_brute_force(size: int) -> None:
    rng = np.random.default_rng(0)
    n_images, per_image, k = 6, 49, 3
    # an image's windows are close to each other: its own vectors would be the nearest
    centres = rng.normal(size=(n_images, 1, 16))
    feats = (centres + 0.3 * rng.normal(size=(n_images, per_image, 16))).reshape(-1, 16)
    feats = feats.astype(np.float32)
    bank, keep = _bank(feats, size)
    owners = keep // per_image
    got = leave_one_image_out_scores(bank, feats, owners, n_images=n_images, k=k)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sims = unit @ bank.vectors.T
    sims[owners[None, :] == (np.arange(len(feats)) // per_image)[:, None]] = -np.inf
    want = (1 - np.sort(sims, axis=1)[:, -k:]).mean(axis=1) / 2
    np.testing.assert_allclose(got, want, atol=1e-5)
    # ... and far from the scores against the bank that still holds each window's own image
    assert got.mean() > 3 * bank.score(feats, k).mean()


def test_leave_one_image_out_falls_back_to_exact_search() -> None:
    """More than 64 of a window's nearest bank vectors from its own image: searched exactly."""
    rng = np.random.default_rng(1)
    n_images, per_image = 3, 100
    centres = 10 * rng.normal(size=(n_images, 1, 8))
    feats = (centres + rng.normal(size=(n_images, per_image, 8))).reshape(-1, 8).astype(np.float32)
    bank, keep = _bank(feats, 10_000)
    owners = keep // per_image
    got = leave_one_image_out_scores(bank, feats, owners, n_images=n_images, k=1)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sims = unit @ bank.vectors.T
    sims[owners[None, :] == (np.arange(len(feats)) // per_image)[:, None]] = -np.inf
    np.testing.assert_allclose(got, (1 - sims.max(axis=1)) / 2, atol=1e-5)


def test_position_stats_are_the_per_position_mean_and_std() -> None:
    rng = np.random.default_rng(2)
    n_images, side = 5, 4
    feats = rng.normal(size=(n_images * side * side, 8)).astype(np.float32)
    bank, keep = _bank(feats, 1000)
    owners = keep // (side * side)
    stats = position_stats(bank, feats, owners, n_images=n_images, k=2)
    scores = leave_one_image_out_scores(bank, feats, owners, n_images=n_images, k=2)
    grid = scores.reshape(n_images, side, side)
    assert stats.shape == (2, side, side)
    np.testing.assert_allclose(stats[0], grid.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats[1], grid.std(axis=0), atol=1e-6)


def test_one_training_image_cannot_be_left_out() -> None:
    feats = np.random.default_rng(3).normal(size=(9, 4)).astype(np.float32)
    bank, keep = _bank(feats, 100)
    with pytest.raises(ValueError, match="at least 2 normal training images"):
        position_stats(bank, feats, keep * 0, n_images=1, k=1)


def test_shift_lets_a_defect_outrank_a_position_that_is_always_high() -> None:
    """An edge that scores high in every normal image hides a weaker defect elsewhere; re-centred
    on its own normal level it no longer does."""
    mean = np.full((5, 5), 0.10, np.float32)
    mean[0, 0] = 0.30  # e.g. the object's border: high in every normal image
    std = np.full((5, 5), 0.02, np.float32)
    grid = mean[None].copy()
    grid[0, 3, 3] = 0.25  # a defect: far above its position's normal level, below the edge's
    assert grid[0].argmax() == 0
    for mode in ("shift", "zscore"):
        out = normalize_positions(grid, np.stack([mean, std]), mode)
        assert np.unravel_index(out[0].argmax(), (5, 5)) == (3, 3), mode
        normal = normalize_positions(mean[None], np.stack([mean, std]), mode)[0]
        np.testing.assert_allclose(normal, mean.mean(), atol=1e-6)  # every position at one level
        assert out.min() >= 0 and out.max() <= 1


def test_zscore_divides_by_each_positions_spread_with_a_floor() -> None:
    mean = np.zeros((2, 2), np.float32) + 0.2
    std = np.array([[0.01, 0.04], [0.04, 0.04]], np.float32)  # floor: half the median, 0.02
    grid = (mean + 0.04)[None]  # 0.04 above the mean everywhere
    out = normalize_positions(grid, np.stack([mean, std]), "zscore")[0]
    scale = std.mean()
    np.testing.assert_allclose(out[0, 0], 0.2 + scale * 0.04 / 0.02, atol=1e-6)  # floored
    np.testing.assert_allclose(out[1, 1], 0.2 + scale * 0.04 / 0.04, atol=1e-6)


def test_statistics_must_fit_the_grid() -> None:
    with pytest.raises(ValueError, match="another image size, window or stride"):
        normalize_positions(np.zeros((1, 4, 4)), np.zeros((2, 5, 5)), "shift")


def test_positions_are_dropped_when_the_vectors_change() -> None:
    rng = np.random.default_rng(5)
    bank, _ = _bank(rng.normal(size=(20, 4)).astype(np.float32), 12)
    for change in ("add", "trim", "subsample"):
        bank.add(rng.normal(size=(3, 4)))  # more than bank.size: trim and subsample cut
        bank.positions = np.zeros((2, 2, 2), np.float32)
        getattr(bank, change)(*([rng.normal(size=(3, 4))] if change == "add" else []))
        assert bank.positions is None, change
    bank.positions = np.zeros((2, 2, 2), np.float32)
    bank.trim()  # nothing to cut: the vectors and their statistics stay
    assert bank.positions is not None


def test_positions_are_saved_and_loaded_with_the_bank(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    bank, _ = _bank(rng.normal(size=(20, 4)).astype(np.float32), 100)
    path = tmp_path / "bank.npy"
    bank.save(path)
    assert MemoryBank.load(path, size=100).positions is None  # none set: no file written
    bank.positions = rng.random((2, 3, 3)).astype(np.float32)
    bank.save(path)
    assert (tmp_path / "bank_positions.npy").is_file()
    np.testing.assert_array_equal(MemoryBank.load(path, size=100).positions, bank.positions)
