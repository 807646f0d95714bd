"""Memory bank of normal features with a FAISS kNN anomaly score (cosine or Euclidean).

``memory.metric``: ``cosine`` stores L2-normalised vectors and searches by inner product (= cosine
similarity); a neighbour's distance is (1 - cos) / 2, in [0, 1]. ``l2`` stores the vectors as they
are and searches by Euclidean distance (PatchCore's). The score is the mean distance to the k
nearest bank vectors. The index always mirrors the
bank's vectors: ``add`` appends to both, ``trim`` keeps the newest ``size`` and rebuilds it (the
seed's FIFO), ``subsample`` keeps a greedy k-center coreset or a random subset of ``size`` (a bank
built once from the final model, as PatchCore does).

``memory.index`` picks the FAISS index: ``flat`` (exact, the default), or an approximate one for
large patch-mode banks (``benchmarks``, P2: recall@k >= 0.99 at >= 10x the exact speed on 1e6
vectors): ``ivf`` (inverted lists over a k-means coarse quantizer, trained on the bank itself) or
``hnsw`` (graph, CPU only). An approximate index is built from ``vectors`` in one go when the bank
is next searched after a change (IVF must be trained before vectors are added, and neither index
can drop vectors), so filling, trimming and subsampling cost nothing extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ssad.memory_index import (
    HNSW_EF_SEARCH,
    HNSW_M,
    IVF_NPROBE,
    METRICS,
    IndexKind,
    Metric,
    build_approximate,
    check_backend,
    faiss_metric,
    gpu_available,
    ivf_lists,
    make_index,
)

__all__ = [
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "IVF_NPROBE",
    "METRICS",
    "IndexKind",
    "MemoryBank",
    "as_unit",
    "build_approximate",
    "coreset_indices",
    "distances",
    "gpu_available",
    "ivf_lists",
    "make_index",
    "positions_path",
]

log = logging.getLogger(__name__)


def as_unit(z: torch.Tensor | np.ndarray) -> np.ndarray:
    """Rows (B, D) as float32 numpy, L2-normalised (what the bank stores and searches with)."""
    if isinstance(z, torch.Tensor):
        z = z.detach().float().cpu().numpy()
    z = np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"expected embeddings of shape (B, D), got {z.shape}")
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.maximum(norms, 1e-12)


def distances(q: np.ndarray, vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Exact distances (B, N) of prepared queries to prepared bank vectors (:meth:`MemoryBank.
    prepare`): (1 - cos) / 2 for ``cosine``, Euclidean for ``l2``."""
    if metric == "cosine":
        return np.clip((1.0 - q @ vectors.T) / 2.0, 0.0, 1.0)
    sq = (q * q).sum(1)[:, None] + (vectors * vectors).sum(1)[None, :] - 2.0 * (q @ vectors.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _from_faiss(raw: np.ndarray, metric: Metric) -> np.ndarray:
    """FAISS's search values → distances: inner products (cosine) or squared L2 (l2)."""
    if metric == "cosine":
        return np.clip((1.0 - raw) / 2.0, 0.0, 1.0)
    return np.sqrt(np.maximum(raw, 0.0))


def coreset_indices(
    x: np.ndarray, n: int, *, seed: int = 0, proj_dim: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Greedy k-center coreset: ``n`` row ids of ``x`` (N, D) that cover it (PatchCore).

    Each step adds the point farthest from the points chosen so far, so the largest distance
    from any point to its nearest chosen point shrinks as fast as greedy allows. Distances are
    measured after a fixed Gaussian random projection to ``proj_dim`` dimensions (the
    Johnson-Lindenstrauss step PatchCore uses to make selection cheap); the start is seeded.
    """
    m = len(x)
    if n >= m:
        return np.arange(m)
    gen = torch.Generator().manual_seed(seed)
    feats = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    if feats.shape[1] > proj_dim:
        proj = torch.randn(feats.shape[1], proj_dim, generator=gen) / proj_dim**0.5
        feats = feats @ proj
    feats = feats.to(device).contiguous()
    chosen = torch.empty(n, dtype=torch.long)
    i = int(torch.randint(m, (1,), generator=gen))
    mind = torch.full((m,), float("inf"), device=device)
    sq = (feats * feats).sum(1)
    for step in range(n):
        chosen[step] = i
        # squared distance of every point to the newest centre: |a|^2 + |c|^2 - 2 a.c
        d = torch.addmv(sq, feats, feats[i], alpha=-2.0)
        torch.minimum(mind, d.add_(sq[i]), out=mind)
        i = int(torch.argmax(mind))
    return chosen.numpy()


class MemoryBank:
    """A bank of feature vectors (N, D), N <= ``size`` after each ``trim`` or ``subsample``.

    Args:
        dim: embedding size D.
        size: vectors kept by ``trim`` (the newest ones) or ``subsample``.
        metric: ``cosine`` (vectors stored L2-normalised) or ``l2`` (stored as they are).
        backend: ``auto`` (GPU index when faiss sees a GPU), ``cpu`` or ``gpu``.
        index: ``flat`` (exact; the index mirrors ``vectors`` after every call), ``ivf`` or
            ``hnsw`` (approximate; ``index`` is ``None`` after a change and is rebuilt from
            ``vectors`` by the next search).

    Attributes:
        positions: ``None``, or the per-position statistics of normal scores (2, h, w) that
            ``eval.position_norm`` calibrates a score grid with (mean, std of each window or
            feature position's score over the normal training images); set by
            :func:`ssad.bank.build_bank` (final banks) or :func:`ssad.bank.fifo_positions`,
            saved and loaded with the bank, dropped when the vectors change.
    """

    def __init__(
        self,
        dim: int,
        *,
        size: int,
        metric: Metric = "cosine",
        backend: Literal["auto", "cpu", "gpu"] = "auto",
        device: int = 0,
        index: IndexKind = "flat",
    ) -> None:
        if index not in ("flat", "ivf", "hnsw"):
            raise ValueError(f"memory.index: flat | ivf | hnsw, got {index!r}")
        faiss_metric(metric)
        self.dim, self.size, self.backend, self.device = dim, size, backend, device
        self.kind, self.metric = index, metric
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.positions: np.ndarray | None = None
        if index == "flat":
            self.index = make_index(dim, metric=metric, backend=backend, device=device)
        else:
            check_backend(backend)
            self.index = None  # built from the vectors at the first search

    def __len__(self) -> int:
        return len(self.vectors)

    def prepare(self, z: torch.Tensor | np.ndarray) -> np.ndarray:
        """Vectors (B, D) as the bank stores and searches them: float32 numpy, L2-normalised
        for ``cosine``."""
        if self.metric == "cosine":
            return as_unit(z)
        if isinstance(z, torch.Tensor):
            z = z.detach().float().cpu().numpy()
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2:
            raise ValueError(f"expected embeddings of shape (B, D), got {z.shape}")
        return z

    def add(self, z: torch.Tensor | np.ndarray) -> None:
        """Append vectors (B, D) (L2-normalised first for ``cosine``)."""
        unit = self.prepare(z)
        if unit.shape[1] != self.dim:
            raise ValueError(f"embedding size {unit.shape[1]} != bank dim {self.dim}")
        if len(unit):
            self.vectors = np.concatenate([self.vectors, unit])
            self._changed(added=unit)

    def _changed(self, *, added: np.ndarray | None = None) -> None:
        """Bring the index in step with ``vectors``: the flat one now, an approximate one later.
        Position statistics describe the vectors they were computed with: they are dropped."""
        self.positions = None
        if self.kind != "flat":
            self.index = None
        elif added is not None:
            self.index.add(added)
        else:
            self.index.reset()
            self.index.add(self.vectors)

    def trim(self) -> None:
        """Keep only the newest ``size`` vectors (FIFO) and rebuild the index over them."""
        if len(self.vectors) > self.size:
            self.vectors = np.ascontiguousarray(self.vectors[-self.size :])
            self._changed()

    def subsample(
        self,
        *,
        method: Literal["coreset", "random"] = "coreset",
        seed: int = 0,
        device: str = "cpu",
    ) -> np.ndarray:
        """Keep ``size`` vectors chosen by greedy k-center coreset or uniformly at random.

        Returns the kept rows' ids (ascending) among the vectors before the call.
        """
        if len(self.vectors) <= self.size:
            return np.arange(len(self.vectors))
        if method == "coreset":
            keep = np.sort(coreset_indices(self.vectors, self.size, seed=seed, device=device))
        else:
            keep = np.sort(
                np.random.default_rng(seed).choice(len(self.vectors), self.size, replace=False)
            )
        self.vectors = np.ascontiguousarray(self.vectors[keep])
        self._changed()
        return keep

    def knn(self, q: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (B, k') and bank ids (B, k') of the k' = min(k, N) nearest vectors, nearest
        first; a distance is (1 - cos) / 2 (``cosine``) or Euclidean (``l2``)."""
        if len(self) == 0:
            raise RuntimeError("memory bank is empty: no normal embeddings were collected")
        if self.index is None:  # an approximate index, stale since the last change
            self.index = build_approximate(
                self.vectors,
                self.kind,
                metric=self.metric,
                backend=self.backend,
                device=self.device,
            )
        unit = self.prepare(q)
        raw, ids = self.index.search(unit, min(k, len(self)))
        dist = _from_faiss(raw, self.metric).astype(np.float32)
        short = (ids < 0).any(axis=1)
        if short.any():  # the probed IVF cells held fewer than k vectors: exact for those rows
            exact = distances(unit[short], self.vectors, self.metric)
            top = np.argsort(exact, axis=1, kind="stable")[:, : ids.shape[1]]
            ids[short] = top
            dist[short] = np.take_along_axis(exact, top, axis=1)
        return dist, ids

    def score(self, q: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
        """Anomaly score (B,): the mean distance to the k nearest bank vectors (in [0, 1] for
        ``cosine``)."""
        dist, _ = self.knn(q, k)
        return dist.mean(axis=1).astype(np.float32)

    # ---- persistence (plain arrays: no pickle) --------------------------------------------------
    def save(self, path) -> None:
        """``vectors`` to ``path`` (``.npy``); ``positions``, when set, to :func:`positions_path`."""
        np.save(path, self.vectors)
        if self.positions is not None:
            np.save(positions_path(path), self.positions)

    @classmethod
    def load(
        cls,
        path,
        *,
        size: int,
        metric: Metric = "cosine",
        backend: Literal["auto", "cpu", "gpu"] = "auto",
        device: int = 0,
        index: IndexKind = "flat",
    ):
        vectors = np.load(path, allow_pickle=False)
        bank = cls(
            vectors.shape[1],
            size=max(size, len(vectors)),
            metric=metric,
            backend=backend,
            device=device,
            index=index,
        )
        bank.add(vectors)
        if positions_path(path).is_file():
            try:
                bank.positions = np.load(positions_path(path), allow_pickle=False)
            except Exception as exc:
                raise ValueError(f"{positions_path(path)}: {exc}") from None
        return bank


def positions_path(bank_path) -> Path:
    """Where a bank's per-position statistics live: ``bank.npy`` → ``bank_positions.npy``."""
    path = Path(bank_path)
    return path.with_name(f"{path.stem}_positions.npy")
