"""``gradcam`` (``eval.scoring: windows`` in image mode): the kNN score of the image embedding;
the map is GradCAM's evidence for "defective", scaled by that score."""

from __future__ import annotations

import numpy as np
import torch

from ssad.config import Config
from ssad.localize import gradcam, smooth_maps
from ssad.memory import MemoryBank
from ssad.model import SSADNet
from ssad.scoring.base import ScoredBatch


class GradCAMScorer:
    def bank_dim(self, model: SSADNet, config: Config) -> int:
        return model.feature_dim(config.memory.feature)

    def bank_features(self, fast: SSADNet, x: torch.Tensor, config: Config) -> np.ndarray:
        return fast.describe(x, config.memory.feature).float().cpu().numpy()

    def score(self, model, fast, bank: MemoryBank, x, config: Config, *, with_maps: bool):
        z = fast.describe(x, config.memory.feature)
        s = bank.score(z, config.memory.k)
        maps = None
        if with_maps:
            maps = smooth_maps(gradcam(model, x) * s[:, None, None], config.eval.map_sigma)
        return ScoredBatch(scores=s, maps=maps, embeddings=z.float().cpu().numpy())


SCORER = GradCAMScorer()
