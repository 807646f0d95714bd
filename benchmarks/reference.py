"""The obvious (naive) implementations that ssad's code is benchmarked against.

Each function computes what its ssad counterpart computes, the straightforward way; the benchmarks
check that results agree before timing. Nothing here is used by the package.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ssad.localize import grid_starts
from ssad.memory import MemoryBank
from ssad.model import SSADNet

__all__ = [
    "aupro_threshold_loop",
    "knn_score_numpy",
    "knn_score_python_loop",
    "patch_score_grid_per_window",
    "upsample_grid_interp",
]


# ---- patch maps ----------------------------------------------------------------------------------
@torch.no_grad()
def patch_score_grid_per_window(
    model: SSADNet, bank: MemoryBank, x: torch.Tensor, *, patch: int, stride: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``patch_score_grid`` with one forward per window: x (B, 3, S, S) → grid (B, G, G), z.

    The kNN scores are computed in one call at the end, so the comparison isolates batching the
    network (scoring per window as well would only slow this baseline further).
    """
    b, _, s, _ = x.shape
    starts = grid_starts(s, patch, stride)
    zs = [
        model.embed(x[i : i + 1, :, top : top + patch, left : left + patch])
        for i in range(b)
        for top in starts
        for left in starts
    ]
    z = torch.cat(zs).float().cpu().numpy()
    g = len(starts)
    return bank.score(z, k).reshape(b, g, g), z.reshape(b, g * g, -1)


# ---- kNN -----------------------------------------------------------------------------------------
def _unit(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def knn_score_python_loop(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Per query: cosine against every unit bank vector (N, D), full sort, mean distance of top k."""
    out = np.empty(len(queries), dtype=np.float32)
    for i, q in enumerate(queries):
        sims = bank @ _unit(q)
        top = np.sort(sims)[::-1][:k]
        out[i] = np.clip((1.0 - top).mean() / 2.0, 0.0, 1.0)
    return out


def knn_score_numpy(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """All queries at once: one (B, N) similarity matmul, ``argpartition`` for the top k."""
    sims = _unit(queries) @ bank.T
    top_ids = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sims, top_ids, axis=1)
    return np.clip((1.0 - top).mean(axis=1) / 2.0, 0.0, 1.0).astype(np.float32)


# ---- map upsampling ------------------------------------------------------------------------------
def upsample_grid_interp(grid: np.ndarray, *, size: int, patch: int, stride: int) -> np.ndarray:
    """``upsample_grid`` with ``np.interp``: along every grid row, then every pixel column.

    Scores sit at window centres; pixels outside the first/last centre take the edge value
    (``np.interp`` clamps), exactly the definition of ``ssad.localize.upsample_grid``.
    """
    centres = grid_starts(size, patch, stride) + (patch - 1) / 2.0
    u = np.arange(size, dtype=np.float64)
    out = np.empty((len(grid), size, size), dtype=np.float32)
    for i, g in enumerate(grid):
        rows = np.stack([np.interp(u, centres, row) for row in g])  # (G, size): x interpolated
        out[i] = np.stack([np.interp(u, centres, col) for col in rows.T], axis=1)  # (size, size)
    return out


# ---- AUPRO ---------------------------------------------------------------------------------------
def aupro_threshold_loop(
    masks: np.ndarray,
    maps: np.ndarray,
    *,
    fpr_limit: float = 0.3,
    num_thresholds: int = 100,
    relabel: bool = True,
) -> float:
    """AUPRO from a loop over ``num_thresholds`` evenly spaced thresholds (public-code style).

    At each threshold t (anomalous when ``map >= t``): binarise all maps, then for every image and
    every 8-connected GT region of it, |region ∩ prediction| / |region|; PRO(t) is their mean and
    FPR(t) the share of normal pixels predicted anomalous. The curve is integrated with
    trapezoids up to ``fpr_limit`` (interpolated there) and divided by ``fpr_limit``.

    Args:
        relabel: label the GT regions again at every threshold, as many public implementations
            do (``label(mask)`` inside the threshold loop); False labels them once, up front.
    """
    masks = np.asarray(masks).astype(bool)
    normal = ~masks
    num_normal = normal.sum()
    eight = np.ones((3, 3), dtype=bool)

    def regions_of(mask: np.ndarray) -> list[tuple[np.ndarray, ...]]:
        labels, n = ndimage.label(mask, structure=eight)
        return [np.nonzero(labels == r) for r in range(1, n + 1)]

    fixed = None if relabel else [regions_of(m) for m in masks]
    fprs, pros = [0.0], [0.0]
    for t in np.linspace(maps.max(), maps.min(), num_thresholds):
        pred = maps >= t
        overlaps = []
        for i, (mask, p) in enumerate(zip(masks, pred)):
            for coords in regions_of(mask) if fixed is None else fixed[i]:
                overlaps.append(p[coords].mean())
        fprs.append(float((pred & normal).sum() / num_normal))
        pros.append(float(np.mean(overlaps)))
    fpr, pro = np.asarray(fprs), np.asarray(pros)
    inside = fpr <= fpr_limit
    xs = np.append(fpr[inside], fpr_limit)
    ys = np.append(pro[inside], np.interp(fpr_limit, fpr, pro))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1])) / 2.0 / fpr_limit)
