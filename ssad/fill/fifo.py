"""``fifo`` (the seed's): each training step adds the embeddings (``memory.feature``) of samples
that are normal (y = 0) and predicted normal (ŷ = 0); at epoch end the bank keeps its newest
``memory.bank_size`` vectors. With ``eval.position_norm`` the bank's position statistics are the
training images' plain window scores against it (:func:`ssad.bank.fifo_positions`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ssad.bank import empty_bank, fifo_positions
from ssad.config import Config
from ssad.model import SSADNet

log = logging.getLogger(__name__)


class FifoFill:
    def __init__(self, config: Config, model: SSADNet, device: torch.device) -> None:
        self.config, self.device = config, device
        self.bank = empty_bank(model.feature_dim(config.memory.feature), config, device)
        self._normal: list[torch.Tensor] = []  # this epoch's y = 0 vectors, the fallback

    def resume(self, vectors: np.ndarray) -> None:
        self.bank.add(vectors)

    def step(self, model, z, stages, y, pred) -> None:
        v = z if self.config.memory.feature == "embedding" else model.backbone_descriptor(*stages)
        v = v.float()
        self.bank.add(v[(y == 0) & (pred == 0)].detach())
        self._normal.append(v[y == 0].detach())

    def end_epoch(
        self, model: SSADNet, images: Sequence[np.ndarray], *, refresh: bool, label: str
    ) -> None:
        if len(self.bank) == 0:  # the classifier called no normal sample normal
            log.warning("%s: no normal sample predicted normal; banking all y=0", label)
            self.bank.add(torch.cat(self._normal))
        self._normal = []
        self.bank.trim()
        if refresh and self.config.eval.position_norm != "none":
            self.bank.positions = fifo_positions(
                model, images, self.bank, self.config, device=self.device
            )
