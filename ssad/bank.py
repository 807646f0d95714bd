"""The ``memory.fill: final`` bank: eval-mode features of the current weights over normal images.

The seed fills its bank during training with train-mode embeddings of jittered samples, taken from
many past weight states (``ssad.train``: ``memory.fill: fifo``). Here the bank is built in one pass
of the model in eval mode over the normal training images — every window (patch mode), every
image (image mode) or every feature position (dense scoring) — and subsampled to
``memory.bank_size`` by greedy k-center coreset or at random. Scoring a training image's own
windows against this bank reproduces the features it holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ssad.config import Config
from ssad.data.images import to_tensor
from ssad.memory import MemoryBank, distances
from ssad.model import SSADNet, for_inference
from ssad.scoring import get_scorer

__all__ = [
    "build_bank",
    "empty_bank",
    "fifo_positions",
    "leave_one_image_out_scores",
    "normal_features",
    "position_stats",
]


@torch.no_grad()
def normal_features(
    model: SSADNet,
    images: Sequence[np.ndarray],
    config: Config,
    *,
    device: torch.device,
    batch_images: int = 8,
) -> np.ndarray:
    """Eval-mode bank vectors (N, D) of normal RGB uint8 images (S, S, 3) at the model's size:
    the scoring strategy's (:meth:`ssad.scoring.Scorer.bank_features`), image-major.
    """
    fast = for_inference(model)  # eval mode, BatchNorm folded: the same function, faster
    scorer = get_scorer(config)
    images = list(images)
    out = []
    for i in range(0, len(images), batch_images):
        x = to_tensor(np.stack(images[i : i + batch_images])).to(device)
        out.append(scorer.bank_features(fast, x, config))
    return np.concatenate(out)


def empty_bank(dim: int, config: Config, device: torch.device) -> MemoryBank:
    """An empty bank of ``dim``-vectors as ``memory`` configures it, its index on ``device``."""
    m = config.memory
    return MemoryBank(
        dim,
        size=m.bank_size,
        metric=m.metric,
        backend=m.backend,
        index=m.index,
        device=(device.index or 0) if device.type == "cuda" else 0,
    )


def build_bank(
    model: SSADNet, images: Sequence[np.ndarray], config: Config, *, device: torch.device
) -> MemoryBank:
    """The final bank: :func:`normal_features`, subsampled to ``memory.bank_size``; with
    ``eval.position_norm`` also its :func:`position_stats` (``bank.positions``)."""
    feats = normal_features(model, images, config, device=device)
    m = config.memory
    bank = empty_bank(feats.shape[1], config, device)
    bank.add(feats)
    keep = bank.subsample(method=m.subsample, seed=config.train.seed, device=str(device))
    if config.eval.position_norm != "none":
        owners = keep // (len(feats) // len(images))  # the image of each kept vector
        bank.positions = position_stats(bank, feats, owners, n_images=len(images), k=m.k)
    return bank


def leave_one_image_out_scores(
    bank: MemoryBank, feats: np.ndarray, owners: np.ndarray, *, n_images: int, k: int
) -> np.ndarray:
    """Score each training vector against the bank without its own image's vectors: (N,).

    ``feats`` (N, D) are ``n_images`` images' vectors, image-major (N / n_images each); ``owners``
    (M,) is the image of each bank vector. A test window is never in the bank, so a training
    window scored against a bank that holds it (or its overlapping neighbours) would look far
    more normal than any test window; leaving its image out makes the two comparable. The
    ``k + 64`` nearest are searched, own-image ones dropped; rows left with fewer than ``k``
    are searched exactly.
    """
    if n_images < 2:
        raise ValueError("eval.position_norm needs at least 2 normal training images")
    k = min(k, len(bank) - int(np.bincount(owners).max()))  # every image keeps k others
    if k < 1:
        raise ValueError("eval.position_norm: the bank holds vectors of one training image only")
    query_owner = np.arange(len(feats)) // (len(feats) // n_images)
    dist, ids = bank.knn(feats, k + 64)
    dist = np.where(owners[ids] == query_owner[:, None], np.inf, dist)
    top = np.sort(dist, axis=1)[:, :k]
    short = np.flatnonzero(~np.isfinite(top).all(axis=1))
    if len(short):  # more than 64 of the nearest came from the query's own image
        exact = distances(bank.prepare(feats[short]), bank.vectors, bank.metric)
        exact[owners[None, :] == query_owner[short, None]] = np.inf
        top[short] = np.sort(exact, axis=1)[:, :k]
    return top.mean(axis=1).astype(np.float32)


def position_stats(
    bank: MemoryBank, feats: np.ndarray, owners: np.ndarray | None, *, n_images: int, k: int
) -> np.ndarray:
    """Mean and std over the training images of each position's normal score: (2, h, w).

    ``feats`` (N, D): every window (or dense feature position) of ``n_images`` images,
    image-major and row-major on a square h × w grid. ``owners``: the image of each bank vector
    when the bank was built from these images (scores from
    :func:`leave_one_image_out_scores`), or ``None`` when it holds none of them (a FIFO bank
    of training crops: plain kNN scores).
    """
    if owners is None:
        scores = bank.score(feats, k)
    else:
        scores = leave_one_image_out_scores(bank, feats, owners, n_images=n_images, k=k)
    side = math.isqrt(len(feats) // n_images)
    grid = scores.reshape(n_images, side, side)
    return np.stack([grid.mean(axis=0), grid.std(axis=0)]).astype(np.float32)


def fifo_positions(
    model: SSADNet,
    images: Sequence[np.ndarray],
    bank: MemoryBank,
    config: Config,
    *,
    device: torch.device,
) -> np.ndarray:
    """:func:`position_stats` of the normal training images' windows against a FIFO bank, whose
    train-mode vectors of jittered random crops are none of the windows scored."""
    feats = normal_features(model, images, config, device=device)
    return position_stats(bank, feats, None, n_images=len(images), k=config.memory.k)
