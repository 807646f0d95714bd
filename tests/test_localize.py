"""Patch grids, their upsampling (no half-patch shift), batched patch scores, GradCAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssad.data.images import to_tensor
from ssad.localize import (
    gradcam,
    grid_starts,
    image_score_from_map,
    interpolation_matrix,
    patch_score_grid,
    upsample_grid,
)
from ssad.memory import MemoryBank
from ssad.model import SSADNet


@pytest.mark.parametrize(
    ("size", "patch", "stride"),
    [(128, 32, 8), (100, 32, 24), (64, 32, 16), (32, 32, 8), (70, 16, 9)],
)
def test_grid_starts_cover_the_image(size: int, patch: int, stride: int) -> None:
    starts = grid_starts(size, patch, stride)
    assert starts[0] == 0
    assert starts[-1] + patch == size  # the last window touches the border
    steps = np.diff(starts)
    assert (steps[:-1] == stride).all()  # the stride is respected ...
    if len(steps):
        assert 0 < steps[-1] <= stride  # ... except the last step, which may be shorter
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered.all()


def test_grid_starts_regular_case() -> None:
    np.testing.assert_array_equal(grid_starts(128, 32, 8), np.arange(0, 97, 8))
    with pytest.raises(ValueError, match="exceeds"):
        grid_starts(16, 32, 8)


def test_interpolation_matrix_rows_sum_to_one() -> None:
    centres = grid_starts(128, 32, 8) + 15.5
    m = interpolation_matrix(centres, 128)
    assert m.shape == (128, len(centres))
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    assert (m >= 0).all()
    # at a centre that falls on a pixel the weight is exactly one-hot
    m2 = interpolation_matrix(np.array([3.0, 7.0, 11.0]), 16)
    np.testing.assert_array_equal(m2[7], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(m2[5], [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(m2[0], [1.0, 0.0, 0.0])  # clamped outside the first centre
    np.testing.assert_array_equal(m2[15], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(interpolation_matrix(np.array([4.0]), 6), np.ones((6, 1)))


@pytest.mark.parametrize(("iy", "ix"), [(5, 7), (2, 10), (6, 6)])
def test_single_hot_cell_peaks_at_its_window_centre(iy: int, ix: int) -> None:
    size, patch, stride = 128, 32, 8
    starts = grid_starts(size, patch, stride)
    grid = np.zeros((1, len(starts), len(starts)), np.float32)
    grid[0, iy, ix] = 1.0
    up = upsample_grid(grid, size=size, patch=patch, stride=stride)[0]
    assert up.shape == (size, size)
    # The window covers pixels s..s+31, so its centre lies between pixels s+15 and s+16: the
    # peak is the 2×2 block there, and the map is mirror-symmetric about s + 15.5.
    ty, tx = starts[iy] + 15, starts[ix] + 15
    peak = up.max()
    block = up[ty : ty + 2, tx : tx + 2]
    np.testing.assert_allclose(block, peak, rtol=1e-6)
    rows, cols = np.nonzero(up >= peak - 1e-6)
    assert set(rows) == {ty, ty + 1} and set(cols) == {tx, tx + 1}
    ys, xs = np.mgrid[0:size, 0:size]
    cy, cx = (up * ys).sum() / up.sum(), (up * xs).sum() / up.sum()
    assert cy == pytest.approx(starts[iy] + 15.5, abs=1e-3)
    assert cx == pytest.approx(starts[ix] + 15.5, abs=1e-3)
    # the score stays inside its own window (support within one stride of the centre)
    support_rows = np.nonzero(up.max(axis=1) > 0)[0]
    assert support_rows.min() >= starts[iy] + 15.5 - stride
    assert support_rows.max() <= starts[iy] + 15.5 + stride


def test_odd_patch_peaks_on_the_centre_pixel() -> None:
    size, patch, stride = 64, 15, 7
    starts = grid_starts(size, patch, stride)
    grid = np.zeros((1, len(starts), len(starts)), np.float32)
    grid[0, 3, 4] = 1.0
    up = upsample_grid(grid, size=size, patch=patch, stride=stride)[0]
    assert np.unravel_index(up.argmax(), up.shape) == (starts[3] + 7, starts[4] + 7)
    assert up.max() == pytest.approx(1.0)


def test_upsample_constant_grid_is_constant() -> None:
    grid = np.full((2, 13, 13), 0.37, np.float32)
    up = upsample_grid(grid, size=128, patch=32, stride=8)
    assert up.shape == (2, 128, 128)
    np.testing.assert_allclose(up, 0.37, atol=1e-6)


def _tiny_net() -> SSADNet:
    torch.manual_seed(0)
    net = SSADNet(fusion_dim=32, head_dims=(32,), embedding_dim=16)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 3, yy * 2, (xx + yy)], -1)[None] % 256  # not symmetric in x and y
    noise = rng.integers(-60, 60, (n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_patch_score_grid_equals_per_window_scoring() -> None:
    net = _tiny_net()
    patch, stride, size, k = 32, 16, 64, 3
    bank = MemoryBank(16, size=100, backend="cpu")
    with torch.no_grad():
        bank.add(net.embed(to_tensor(_images(12, patch, seed=1))))
    x = to_tensor(_images(2, size, seed=2))
    grid, z = patch_score_grid(net, bank, x, patch=patch, stride=stride, k=k, batch_size=4)
    starts = grid_starts(size, patch, stride)
    g = len(starts)
    assert grid.shape == (2, g, g) and z.shape == (2, g * g, 16)
    assert grid.std() > 0.1 * grid.mean() > 0  # the windows really score differently
    expected = np.zeros_like(grid)
    with torch.no_grad():
        for b in range(2):
            for iy, top in enumerate(starts):
                for ix, left in enumerate(starts):
                    win = x[b : b + 1, :, top : top + patch, left : left + patch]
                    zz = net.embed(win)
                    expected[b, iy, ix] = bank.score(zz, k)[0]
                    np.testing.assert_allclose(z[b, iy * g + ix], zz[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(grid, expected, atol=1e-5)
    assert not net.training


def test_image_score_from_map() -> None:
    grid = np.array([[[0.1, 0.9], [0.3, 0.5]], [[0.2, 0.2], [0.2, 0.4]]], np.float32)
    np.testing.assert_allclose(image_score_from_map(grid, mode="max", topk=2), [0.9, 0.4])
    np.testing.assert_allclose(image_score_from_map(grid, mode="topk", topk=2), [0.7, 0.3])
    np.testing.assert_allclose(
        image_score_from_map(grid, mode="topk", topk=99), grid.mean(axis=(1, 2))
    )


@pytest.mark.parametrize("train_mode", [True, False])
def test_gradcam_range_mode_and_parameters(train_mode: bool) -> None:
    net = _tiny_net()
    net.train(train_mode)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = to_tensor(_images(3, 64, seed=3))
    maps = gradcam(net, x)
    assert maps.shape == (3, 64, 64)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
    assert net.training is train_mode
    for name, v in net.state_dict().items():  # parameters and BatchNorm statistics untouched
        assert torch.equal(v, before[name]), name
    assert all(p.grad is None for p in net.parameters())


class _LocalColourNet(torch.nn.Module):
    """A stand-in feature extractor whose features are exactly local (colour statistics).

    It has SSADNet's scoring interface (``describe`` per window, ``local_features`` at stride 8), so
    the test checks the placement of scores (grids, centres, upsampling, smoothing), not what a
    network happens to learn.
    """

    def describe(self, x: torch.Tensor, feature: str = "embedding") -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), torch.ones(len(x), 1)], dim=1)

    def local_features(self, x: torch.Tensor, strides=(8, 16)) -> torch.Tensor:
        mean = torch.nn.functional.avg_pool2d(x, 8)
        sq = torch.nn.functional.avg_pool2d(x * x, 8)
        std = (sq - mean * mean).clamp_min(0).sqrt()
        return torch.cat([mean, std, torch.ones_like(mean[:, :1])], dim=1)


@pytest.mark.parametrize("centre", [(20, 44), (44, 20), (36, 36), (12, 52)])
def test_dense_and_window_maps_share_shape_and_registration(make_config, centre) -> None:
    """A pasted defect peaks at the same place in the dense map and in the window map."""
    from ssad.bank import build_bank
    from ssad.evaluate import score_images

    size, half = 64, 4
    rng = np.random.default_rng(3)
    images = rng.integers(90, 160, (7, size, size, 3)).astype(np.uint8)
    normals, test = images[:6], images[6:]
    cy, cx = centre
    test[0, cy - half : cy + half, cx - half : cx + half] = (250, 20, 200)  # the defect
    net = _LocalColourNet()
    peaks, shapes = [], []
    for scoring, patch, stride in (("dense", 16, 8), ("windows", 8, 4)):
        cfg = make_config(
            **{
                "eval.scoring": scoring,
                "pretext.patch_size": patch,
                "eval.patch_stride": stride,
                "eval.map_sigma": 2.0,
                "memory.bank_size": 10_000,
            }
        )
        bank = build_bank(net, list(normals), cfg, device=torch.device("cpu"))
        scored = score_images(net, bank, test, cfg, device=torch.device("cpu"))
        shapes.append(scored.maps.shape)
        peaks.append(np.unravel_index(scored.maps[0].argmax(), scored.maps[0].shape))
    assert shapes == [(1, size, size)] * 2
    for py, px in peaks:  # within half a feature cell of the defect's centre
        assert abs(py - (cy - 0.5)) <= 4 and abs(px - (cx - 0.5)) <= 4, (peaks, centre)
