"""Anomaly maps: window kNN maps (patch mode), dense feature kNN maps, GradCAM (image mode).

Window maps: the image is cut into ``patch``×``patch`` windows with stride ``stride`` (the last
window touches the border), all windows are embedded in batches, each window's kNN score is placed
at the window's centre and the grid is bilinearly interpolated to image size — no half-patch shift.
Dense maps: one forward per image; every position of the stride-8 feature grid is scored against a
bank of training positions and placed at the centre of its 8×8 cell.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ssad.memory import MemoryBank
from ssad.model import DENSE_STRIDES, SSADNet

__all__ = [
    "dense_score_grid",
    "gradcam",
    "grid_starts",
    "image_score_from_map",
    "interpolation_matrix",
    "normalize_positions",
    "patch_score_grid",
    "smooth_maps",
    "upsample_grid",
    "window_embeddings",
]

DENSE_STRIDE = 8  # SSADNet.local_features: the finest stage's stride (ResNet-18's layer2)
DENSE_FORWARD_BATCH = 8  # images per backbone forward: ~1.4x faster on CPU than 64 at 256 px


def grid_starts(size: int, patch: int, stride: int) -> np.ndarray:
    """Top/left offsets of the windows along one axis; the last window ends at ``size``."""
    if patch > size:
        raise ValueError(f"patch size {patch} exceeds image size {size}")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.asarray(starts)


def interpolation_matrix(centres: np.ndarray, size: int) -> np.ndarray:
    """(size, G) weights that linearly interpolate values at ``centres`` onto pixel centres 0..size-1.

    Pixels outside the first/last centre take the edge value (clamped), so a score is never moved
    away from the window it belongs to.
    """
    u = np.arange(size, dtype=np.float64)
    g = len(centres)
    w = np.zeros((size, g), dtype=np.float32)
    if g == 1:
        w[:, 0] = 1.0
        return w
    pos = np.interp(u, centres, np.arange(g, dtype=np.float64))  # fractional grid index
    lo = np.clip(np.floor(pos).astype(int), 0, g - 2)
    frac = (pos - lo).astype(np.float32)
    w[np.arange(size), lo] = 1.0 - frac
    w[np.arange(size), lo + 1] = frac
    return w


def upsample_grid(grid: np.ndarray, *, size: int, patch: int, stride: int) -> np.ndarray:
    """Score grid (B, G, G) → pixel map (B, size, size), each score at its window's centre.

    Window grids use the windows' offsets (``grid_starts``); a dense grid of ``G = size / stride``
    cells is the special case ``patch == stride`` (cells tile the image).
    """
    if patch == stride and grid.shape[-1] * stride == size:
        starts = np.arange(grid.shape[-1]) * stride
    else:
        starts = grid_starts(size, patch, stride)
    centres = starts + (patch - 1) / 2.0  # centre of pixels s..s+p-1
    m = interpolation_matrix(centres, size)
    return m @ grid.astype(np.float32) @ m.T  # (H, G) @ (B, G, G) @ (G, W), batched matmul


def smooth_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (sigma in pixels) of each map (B, H, W); sigma 0 returns them as is."""
    if sigma <= 0:
        return maps
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(maps, sigma=(0, sigma, sigma), mode="nearest", truncate=3.0)


@torch.no_grad()
def patch_score_grid(
    model: SSADNet,
    bank: MemoryBank,
    x: torch.Tensor,
    *,
    patch: int,
    stride: int,
    k: int,
    batch_size: int = 256,
    feature: str = "embedding",
) -> tuple[np.ndarray, np.ndarray]:
    """kNN score of every window: x (B, 3, S, S) → grid (B, G, G) and bank vectors (B, G*G, D)
    of ``feature`` (``SSADNet.describe``).

    Windows are cut with ``unfold`` and embedded ``batch_size`` at a time (never one forward per
    window).
    """
    b = len(x)
    g = len(grid_starts(x.shape[-1], patch, stride))
    z = window_embeddings(
        model, x, patch=patch, stride=stride, batch_size=batch_size, feature=feature
    )
    scores = bank.score(z, k).reshape(b, g, g)
    return scores, z.reshape(b, g * g, -1)


@torch.no_grad()
def window_embeddings(
    model: SSADNet,
    x: torch.Tensor,
    *,
    patch: int,
    stride: int,
    batch_size: int = 256,
    feature: str = "embedding",
) -> np.ndarray:
    """Bank vectors (``SSADNet.describe``) of every window: x (B, 3, S, S) → (B * G * G, D),
    image-major, row-major.

    Windows are gathered at the grid offsets (the irregular last offset → index, not unfold)
    and embedded ``batch_size`` at a time (never one forward per window).
    """
    b, c, s, _ = x.shape
    starts = torch.as_tensor(grid_starts(s, patch, stride), device=x.device)
    g = len(starts)
    idx = starts[:, None] + torch.arange(patch, device=x.device)[None, :]  # (G, p)
    rows = x[:, :, idx]  # (B, 3, G, p, S)
    win = rows[:, :, :, :, idx]  # (B, 3, G, p, G, p)
    win = win.permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, c, patch, patch)
    zs = [model.describe(win[i : i + batch_size], feature) for i in range(0, len(win), batch_size)]
    return torch.cat(zs).float().cpu().numpy()


@torch.no_grad()
def dense_score_grid(
    model: SSADNet,
    bank: MemoryBank,
    x: torch.Tensor,
    *,
    k: int,
    stages: tuple[int, ...] = DENSE_STRIDES,
) -> tuple[np.ndarray, np.ndarray]:
    """kNN score of every feature position: x (B, 3, S, S) → grid (B, h, w), features (B, h*w, C).

    One forward per image (``SSADNet.local_features``, stride 8; ``DENSE_FORWARD_BATCH`` images
    at a time), then one batched kNN query for all B * h * w positions.
    """
    f = torch.cat(
        [model.local_features(part, stages) for part in x.split(DENSE_FORWARD_BATCH)]
    )  # (B, C, h, w)
    b, c, h, w = f.shape
    z = f.permute(0, 2, 3, 1).reshape(b * h * w, c).float().cpu().numpy()
    return bank.score(z, k).reshape(b, h, w), z.reshape(b, h * w, c)


def normalize_positions(
    grid: np.ndarray, positions: np.ndarray, mode: Literal["shift", "zscore"]
) -> np.ndarray:
    """Calibrate a score grid (B, h, w) by its positions' normal statistics (2, h, w) → (B, h, w).

    ``positions`` holds, per position, the mean μ and std σ of the normal training images' scores
    (:func:`ssad.bank.position_stats`). ``shift``: s − μ + mean(μ), every position re-centred on
    the class's overall normal score; ``zscore``: mean(μ) + mean(σ) · (s − μ) / max(σ, σ₀), with
    σ₀ half the median σ so a position that happened to vary little is not blown up. Both keep
    the scale of the raw scores; the result is clipped at 0 (a distance).
    """
    if positions.shape != (2, *grid.shape[1:]):
        raise ValueError(
            f"position statistics of shape {positions.shape} do not fit score grids of shape "
            f"{grid.shape[1:]} (the bank was built for another image size, window or stride)"
        )
    mean, std = positions
    if mode == "shift":
        out = grid - mean + mean.mean()
    elif mode == "zscore":
        floor = 0.5 * float(np.median(std))
        out = mean.mean() + std.mean() * (grid - mean) / np.maximum(std, max(floor, 1e-12))
    else:
        raise ValueError(f"eval.position_norm: shift | zscore, got {mode!r}")
    return np.maximum(out, 0.0).astype(np.float32)


def image_score_from_map(
    grid: np.ndarray, *, mode: Literal["max", "topk"], topk: int
) -> np.ndarray:
    """Image score (B,) from patch scores (B, ...): the max or the mean of the top-k."""
    flat = grid.reshape(len(grid), -1)
    if mode == "max":
        return flat.max(axis=1)
    k = min(topk, flat.shape[1])
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def gradcam(model: SSADNet, x: torch.Tensor) -> np.ndarray:
    """GradCAM on layer4 for the 'defective' evidence: x (B, 3, H, W) → maps (B, H, W) in [0, 1].

    The target is ``logsumexp(defect logits) - normal logit`` (log-odds of any defect class).
    Each map is normalised by its own maximum; callers scale it by the image score so maps stay
    comparable across images.
    """
    was_training = model.training
    model.eval()
    x = x.detach().requires_grad_(False)
    with torch.enable_grad():
        l2, l3, l4 = model.features(x)
        l4 = l4.detach().requires_grad_(True)
        logits = model.classify(model.embed_features(l2, l3, l4))
        target = torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]
        (grad,) = torch.autograd.grad(target.sum(), l4)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # channel importance α_c
    cam = F.relu((weights * l4).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    model.train(was_training)
    return cam.detach().cpu().numpy()
