"""``dense``: one backbone forward per image; every position of the stride-8 feature grid
(``eval.dense_stages``) is scored by kNN against a bank of training positions."""

from __future__ import annotations

import numpy as np
import torch

from ssad.config import Config
from ssad.localize import DENSE_STRIDE, dense_score_grid
from ssad.memory import MemoryBank
from ssad.model import SSADNet
from ssad.scoring.grid import finish_grid


class DenseScorer:
    def bank_dim(self, model: SSADNet, config: Config) -> int:
        return model.local_dim(config.eval.dense_stages)

    def bank_features(self, fast: SSADNet, x: torch.Tensor, config: Config) -> np.ndarray:
        f = fast.local_features(x, config.eval.dense_stages)  # (B, C, h, w): every position
        return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).float().cpu().numpy()

    def score(self, model, fast, bank: MemoryBank, x, config: Config, *, with_maps: bool):
        grid, z = dense_score_grid(
            fast, bank, x, k=config.memory.k, stages=config.eval.dense_stages
        )
        return finish_grid(
            grid,
            z,
            bank,
            config,
            size=x.shape[-1],
            patch=DENSE_STRIDE,
            stride=DENSE_STRIDE,
            with_maps=with_maps,
        )


SCORER = DenseScorer()
