"""The ``memory.fill: final`` bank: eval-mode features of the current weights over normal images.

The seed fills its bank during training with train-mode embeddings of jittered samples, taken from
many past weight states (``ssad.train``: ``memory.fill: fifo``). Here the bank is built in one pass
of the model in eval mode over the normal training images — every window (patch mode), every
image (image mode) or every feature position (dense scoring), optionally over colour-jittered
views too — and subsampled to ``memory.bank_size`` by greedy k-center coreset or at random. Scoring
a training image's own windows against this bank reproduces the features it holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ssad.config import Config
from ssad.data.images import to_tensor
from ssad.data.pretext import color_jitter
from ssad.localize import window_embeddings
from ssad.memory import MemoryBank
from ssad.model import SSADNet

__all__ = ["build_bank", "normal_features"]


@torch.no_grad()
def normal_features(
    model: SSADNet,
    images: Sequence[np.ndarray],
    config: Config,
    *,
    device: torch.device,
    batch_images: int = 16,
) -> np.ndarray:
    """Eval-mode bank vectors (N, D) of normal RGB uint8 images (S, S, 3) at the model's size.

    Each image contributes its plain view and ``memory.views`` colour-jittered views (seeded by
    ``train.seed``), the same jitter the pretext's normal class sees.
    """
    was_training = model.training
    model.eval()
    rng = np.random.default_rng([config.train.seed, 104729])
    views = [*images]
    for _ in range(config.memory.views):
        views += [color_jitter(im, rng, config.pretext.jitter) for im in images]
    out = []
    for i in range(0, len(views), batch_images):
        x = to_tensor(np.stack(views[i : i + batch_images])).to(device)
        if config.eval.scoring == "dense":
            f = model.local_features(x)  # (B, C, h, w) → every position
            out.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).float().cpu().numpy())
        elif config.pretext.mode == "patch":
            out.append(
                window_embeddings(
                    model,
                    x,
                    patch=config.pretext.patch_size,
                    stride=config.eval.patch_stride,
                    feature=config.memory.feature,
                )
            )
        else:
            out.append(model.describe(x, config.memory.feature).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)


def build_bank(
    model: SSADNet, images: Sequence[np.ndarray], config: Config, *, device: torch.device
) -> MemoryBank:
    """The final bank: :func:`normal_features`, subsampled to ``memory.bank_size``."""
    feats = normal_features(model, images, config, device=device)
    m = config.memory
    bank = MemoryBank(
        feats.shape[1],
        size=m.bank_size,
        backend=m.backend,
        index=m.index,
        device=(device.index or 0) if device.type == "cuda" else 0,
    )
    bank.add(feats)
    bank.subsample(method=m.subsample, seed=config.train.seed, device=str(device))
    return bank
