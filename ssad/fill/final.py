"""``final``: before every validation pass and after the last epoch, the bank is rebuilt from the
current weights in eval mode over the normal training images (:func:`ssad.bank.build_bank`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ssad.bank import build_bank, empty_bank
from ssad.config import Config
from ssad.model import SSADNet


class FinalFill:
    def __init__(self, config: Config, model: SSADNet, device: torch.device) -> None:
        self.config, self.device = config, device
        self.bank = empty_bank(model.feature_dim(config.memory.feature), config, device)

    def resume(self, vectors: np.ndarray) -> None:
        """Nothing to carry over: a final bank is rebuilt from the weights."""

    def step(self, model, z, stages, y, pred) -> None:
        """A final bank collects nothing during training."""

    def end_epoch(
        self, model: SSADNet, images: Sequence[np.ndarray], *, refresh: bool, label: str
    ) -> None:
        if refresh:
            self.bank = build_bank(model, images, self.config, device=self.device)
