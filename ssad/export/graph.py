"""The dense scoring path of :func:`ssad.evaluate.score_images` as one torch module, for export:
uint8 RGB images → (image score, anomaly map), the bank inside as a constant."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssad.config import Config
from ssad.detector import DetectorError
from ssad.localize import DENSE_STRIDE, grid_starts, interpolation_matrix
from ssad.model import SSADNet, for_inference

__all__ = ["ScoringGraph", "gaussian_kernel"]


def gaussian_kernel(sigma: float, truncate: float = 3.0) -> np.ndarray:
    """The 1-D kernel of ``scipy.ndimage.gaussian_filter(sigma, truncate)``, normalised."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


class ScoringGraph(nn.Module):
    """The dense scoring path as one module, for export (and as its torch reference).

    Args:
        model: the trained network (its BatchNorm is folded here).
        vectors: bank vectors (N, D) as the bank stores them (unit rows for ``cosine``).
        config: the detector's resolved config (metric, k, calibration, smoothing, image score).
        positions: per-position statistics (2, h, w) for ``eval.position_norm``, or None.
    """

    def __init__(
        self,
        model: SSADNet,
        vectors: np.ndarray,
        config: Config,
        positions: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        ev, mem = config.eval, config.memory
        size = config.data.image_size
        self.model = for_inference(model).eval()
        self.stages = tuple(ev.dense_stages)
        self.metric, self.k = mem.metric, min(mem.k, len(vectors))
        self.norm, self.image_score, self.topk = ev.position_norm, ev.image_score, ev.topk
        bank = torch.as_tensor(np.ascontiguousarray(vectors, dtype=np.float32))
        # L2 distances are translation-invariant: centring bank and queries on the bank's mean
        # keeps |q|^2 + |b|^2 - 2 q.b from cancelling away float32 digits
        centre = bank.mean(0) if self.metric == "l2" else torch.zeros(bank.shape[1])
        bank = bank - centre
        self.register_buffer("centre", centre)
        # L2: |q - b|^2 = |q|^2 + (|b|^2 - 2 q.b); the bracket is one matmul against the
        # bank scaled by -2, plus a constant row, and |q|^2 is added after the search
        scale = -2.0 if self.metric == "l2" else 1.0
        self.register_buffer("bank_t", (scale * bank).t().contiguous())
        self.register_buffer("bank_sq", (bank * bank).sum(1))
        if self.norm != "none":
            if positions is None:
                raise DetectorError(
                    f"eval.position_norm={self.norm}, but the bank has no position statistics"
                )
            mean, std = (torch.as_tensor(p, dtype=torch.float32) for p in positions)
            self.register_buffer("pos_mean", mean)
            self.register_buffer("pos_std", std)
            self.floor = max(0.5 * float(np.median(positions[1])), 1e-12)  # zscore's σ₀
        grid = size // DENSE_STRIDE  # as ssad.localize.upsample_grid places the cells
        starts = (
            np.arange(grid) * DENSE_STRIDE
            if grid * DENSE_STRIDE == size
            else grid_starts(size, DENSE_STRIDE, DENSE_STRIDE)
        )
        centres = starts + (DENSE_STRIDE - 1) / 2.0
        self.register_buffer("upsample", torch.as_tensor(interpolation_matrix(centres, size)))
        self.sigma = float(ev.map_sigma)
        if self.sigma > 0:
            self.register_buffer("kernel", torch.as_tensor(gaussian_kernel(self.sigma)))

    def knn(self, q: torch.Tensor) -> torch.Tensor:
        """Mean distance of each query (B, P, D) to its k nearest bank vectors → (B, P)."""
        if self.metric == "cosine":
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            sim = self._nearest(q @ self.bank_t, largest=True)
            dist = ((1.0 - sim) / 2.0).clamp(0.0, 1.0)
        else:
            q = q - self.centre
            near = self._nearest(q @ self.bank_t + self.bank_sq, largest=False)
            dist = (near + (q * q).sum(-1, keepdim=True)).clamp_min(0.0).sqrt()
        return dist.mean(-1)

    def _nearest(self, values: torch.Tensor, *, largest: bool) -> torch.Tensor:
        """The k best of the last axis (B, P, N) → (B, P, k); a plain min / max for k = 1,
        cheaper than TopK in both runtimes."""
        if self.k == 1:
            return (values.amax if largest else values.amin)(dim=-1, keepdim=True)
        return torch.topk(values, self.k, dim=-1, largest=largest).values

    def calibrate(self, grid: torch.Tensor) -> torch.Tensor:
        """:func:`ssad.localize.normalize_positions` on a (B, h, w) grid."""
        if self.norm == "none":
            return grid
        mean = self.pos_mean
        if self.norm == "shift":
            out = grid - mean + mean.mean()
        else:  # zscore
            std = self.pos_std.clamp_min(self.floor)
            out = mean.mean() + self.pos_std.mean() * (grid - mean) / std
        return out.clamp_min(0.0)

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        """``scipy.ndimage.gaussian_filter(maps, (0, σ, σ), mode="nearest", truncate=3)``."""
        if self.sigma <= 0:
            return maps
        r = (len(self.kernel) - 1) // 2
        x = maps[:, None]
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), self.kernel.view(1, 1, -1, 1))
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), self.kernel.view(1, 1, 1, -1))
        return x[:, 0]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: uint8 RGB (B, S, S, 3) → score (B,), map (B, S, S)."""
        x = image.permute(0, 3, 1, 2).float() / 255.0
        f = self.model.local_features(x, self.stages)  # (B, C, h, w)
        b, c, h, w = f.shape
        grid = self.knn(f.permute(0, 2, 3, 1).reshape(b, h * w, c)).reshape(b, h, w)
        grid = self.calibrate(grid)
        maps = self.smooth(self.upsample @ grid @ self.upsample.t())
        if self.image_score == "max":
            score = maps.flatten(1).amax(dim=1)
        else:
            score = torch.topk(grid.flatten(1), min(self.topk, h * w), dim=1).values.mean(1)
        return score, maps
