"""The scoring protocol and what one scored batch holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ssad.config import Config
from ssad.memory import MemoryBank
from ssad.model import SSADNet

__all__ = ["ScoredBatch", "Scorer"]


@dataclass(frozen=True)
class ScoredBatch:
    """One batch of B images: scores (B,), maps (B, S, S) or None, embeddings (B, D) for t-SNE."""

    scores: np.ndarray
    maps: np.ndarray | None
    embeddings: np.ndarray


class Scorer(Protocol):
    """What a scoring strategy provides (a module-level ``SCORER`` object)."""

    def bank_dim(self, model: SSADNet, config: Config) -> int:
        """Size D of the vectors the bank holds."""
        ...

    def bank_features(self, fast: SSADNet, x: torch.Tensor, config: Config) -> np.ndarray:
        """Bank vectors of normal images x (B, 3, S, S): (B * cells, D), image-major, each
        image's cells row-major on a square grid (one cell per image without a grid)."""
        ...

    def score(
        self,
        model: SSADNet,
        fast: SSADNet,
        bank: MemoryBank,
        x: torch.Tensor,
        config: Config,
        *,
        with_maps: bool,
    ) -> ScoredBatch:
        """Scores of images x (B, 3, S, S); ``fast`` is ``model`` with BatchNorm folded."""
        ...
