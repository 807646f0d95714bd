"""Bank fill strategies: how training fills the memory bank the class model is validated and saved
with (``memory.fill``, resolved per class by :mod:`ssad.autoresolve`).

A strategy is a :class:`BankFill`, made per training by its registered factory in :data:`FILLS`
(``factory(config, model, device)``); ``fill.bank`` is the bank as of the last call. Adding a fill
is one module here and one line in :data:`FILLS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from ssad.config import Config
from ssad.fill import fifo, final
from ssad.memory import MemoryBank
from ssad.model import SSADNet

__all__ = ["FILLS", "BankFill", "make_fill"]


class BankFill(Protocol):
    bank: MemoryBank

    def resume(self, vectors: np.ndarray) -> None:
        """Continue from a checkpoint's bank vectors (N, D)."""
        ...

    def step(
        self,
        model: SSADNet,
        z: torch.Tensor,
        stages: tuple[torch.Tensor, ...],
        y: torch.Tensor,
        pred: torch.Tensor,
    ) -> None:
        """One training step's embeddings z (B, D), backbone stages, labels and predictions."""
        ...

    def end_epoch(
        self, model: SSADNet, images: Sequence[np.ndarray], *, refresh: bool, label: str
    ) -> None:
        """After an epoch's steps; ``refresh``: the bank is validated or returned next, so it
        must be complete (position statistics included) for the current weights."""
        ...


FILLS: dict[str, Callable[[Config, SSADNet, torch.device], BankFill]] = {
    "final": final.FinalFill,
    "fifo": fifo.FifoFill,
}


def make_fill(config: Config, model: SSADNet, device: torch.device) -> BankFill:
    name = config.memory.fill
    if name not in FILLS:
        raise ValueError(
            f"memory.fill: {name!r} is not a registered fill ({sorted(FILLS)}); a class's "
            "config is resolved first (ssad.autoresolve.resolve_class_config)"
        )
    return FILLS[name](config, model, device)
