"""``windows`` (patch mode): every ``pretext.patch_size`` window at ``eval.patch_stride`` is
embedded (``memory.feature``) and scored by kNN; the window grid is the map."""

from __future__ import annotations

import numpy as np
import torch

from ssad.config import Config
from ssad.localize import patch_score_grid, window_embeddings
from ssad.memory import MemoryBank
from ssad.model import SSADNet
from ssad.scoring.grid import finish_grid


class WindowScorer:
    def bank_dim(self, model: SSADNet, config: Config) -> int:
        return model.feature_dim(config.memory.feature)

    def bank_features(self, fast: SSADNet, x: torch.Tensor, config: Config) -> np.ndarray:
        return window_embeddings(
            fast,
            x,
            patch=config.pretext.patch_size,
            stride=config.eval.patch_stride,
            feature=config.memory.feature,
        )

    def score(self, model, fast, bank: MemoryBank, x, config: Config, *, with_maps: bool):
        patch, stride = config.pretext.patch_size, config.eval.patch_stride
        grid, z = patch_score_grid(
            fast,
            bank,
            x,
            patch=patch,
            stride=stride,
            k=config.memory.k,
            feature=config.memory.feature,
        )
        size = x.shape[-1]
        return finish_grid(
            grid, z, bank, config, size=size, patch=patch, stride=stride, with_maps=with_maps
        )


SCORER = WindowScorer()
