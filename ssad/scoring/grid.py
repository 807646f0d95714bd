"""What every grid scorer shares: a score grid (B, h, w) → calibrated, upsampled, smoothed map,
image score and the t-SNE embedding of each image's most anomalous cell."""

from __future__ import annotations

import numpy as np

from ssad.config import Config
from ssad.localize import image_score_from_map, normalize_positions, smooth_maps, upsample_grid
from ssad.memory import MemoryBank
from ssad.scoring.base import ScoredBatch

__all__ = ["finish_grid"]


def finish_grid(
    grid: np.ndarray,
    z: np.ndarray,
    bank: MemoryBank,
    config: Config,
    *,
    size: int,
    patch: int,
    stride: int,
    with_maps: bool,
) -> ScoredBatch:
    """Grid (B, h, w) and cell vectors z (B, h*w, D) → :class:`ScoredBatch`.

    With ``eval.position_norm`` the grid is first calibrated by the bank's per-position
    statistics; maps are smoothed by ``eval.map_sigma``; the image score is the max of the
    smoothed map or the mean of the top-k grid cells (``eval.image_score``).
    """
    ev = config.eval
    if ev.position_norm != "none":
        if bank.positions is None:
            raise ValueError(
                f"eval.position_norm={ev.position_norm}, but the bank has no position "
                "statistics (build it with ssad.bank.build_bank under this config)"
            )
        grid = normalize_positions(grid, bank.positions, ev.position_norm)
    m = smooth_maps(upsample_grid(grid, size=size, patch=patch, stride=stride), ev.map_sigma)
    s = image_score_from_map(
        m if ev.image_score == "max" else grid, mode=ev.image_score, topk=ev.topk
    )
    worst = grid.reshape(len(grid), -1).argmax(axis=1)  # t-SNE: the most anomalous cell
    return ScoredBatch(
        scores=s, maps=m if with_maps else None, embeddings=z[np.arange(len(z)), worst]
    )
