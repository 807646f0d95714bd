"""FIFO memory bank of normal embeddings with a FAISS kNN cosine anomaly score.

Vectors are L2-normalised, so FAISS inner product = cosine similarity. The index always mirrors the
bank's vectors: ``add`` appends to both, ``trim`` keeps the newest ``size`` and rebuilds it.
"""

from __future__ import annotations

import logging
from typing import Literal

import faiss
import numpy as np
import torch

__all__ = ["MemoryBank", "gpu_available", "make_index"]

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def make_index(dim: int, *, backend: Literal["auto", "cpu", "gpu"] = "auto", device: int = 0):
    """An exact inner-product index: on the GPU when asked/available, on the CPU otherwise.

    ``backend="gpu"`` without a usable GPU raises instead of silently building an empty index.
    """
    if backend == "gpu" and not gpu_available():
        raise RuntimeError(
            "memory.backend=gpu but faiss sees no GPU (install faiss-gpu: pip install .[gpu], "
            "and check CUDA); use memory.backend=auto or cpu"
        )
    if backend != "cpu" and gpu_available():
        res = faiss.StandardGpuResources()
        res.setTempMemory(64 * 1024 * 1024)  # trials may share a GPU (fractional resources)
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = device
        return faiss.GpuIndexFlatIP(res, dim, cfg)
    return faiss.IndexFlatIP(dim)


def _as_unit(z: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().float().cpu().numpy()
    z = np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"expected embeddings of shape (B, D), got {z.shape}")
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.maximum(norms, 1e-12)


class MemoryBank:
    """FIFO bank of unit-norm embeddings (N, D), N <= ``size`` after each ``trim``.

    Args:
        dim: embedding size D.
        size: vectors kept by ``trim`` (the newest ones).
        backend: ``auto`` (GPU index when faiss sees a GPU), ``cpu`` or ``gpu``.
    """

    def __init__(
        self,
        dim: int,
        *,
        size: int,
        backend: Literal["auto", "cpu", "gpu"] = "auto",
        device: int = 0,
    ) -> None:
        self.dim, self.size, self.backend, self.device = dim, size, backend, device
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.index = make_index(dim, backend=backend, device=device)

    def __len__(self) -> int:
        return len(self.vectors)

    def add(self, z: torch.Tensor | np.ndarray) -> None:
        """Append embeddings (B, D); they are L2-normalised first."""
        unit = _as_unit(z)
        if unit.shape[1] != self.dim:
            raise ValueError(f"embedding size {unit.shape[1]} != bank dim {self.dim}")
        if len(unit):
            self.vectors = np.concatenate([self.vectors, unit])
            self.index.add(unit)

    def trim(self) -> None:
        """Keep only the newest ``size`` vectors (FIFO) and rebuild the index over them."""
        if len(self.vectors) > self.size:
            self.vectors = np.ascontiguousarray(self.vectors[-self.size :])
            self.index.reset()
            self.index.add(self.vectors)

    def knn(self, q: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities (B, k') and bank ids (B, k') of the k' = min(k, N) nearest vectors."""
        if len(self) == 0:
            raise RuntimeError("memory bank is empty: no normal embeddings were collected")
        sims, ids = self.index.search(_as_unit(q), min(k, len(self)))
        return sims, ids

    def score(self, q: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
        """Anomaly score (B,) in [0, 1]: mean cosine distance to the k nearest bank vectors / 2."""
        sims, _ = self.knn(q, k)
        return np.clip((1.0 - sims).mean(axis=1) / 2.0, 0.0, 1.0).astype(np.float32)

    # ---- persistence (plain arrays: no pickle) --------------------------------------------------
    def save(self, path) -> None:
        np.save(path, self.vectors)

    @classmethod
    def load(
        cls, path, *, size: int, backend: Literal["auto", "cpu", "gpu"] = "auto", device: int = 0
    ):
        vectors = np.load(path, allow_pickle=False)
        bank = cls(vectors.shape[1], size=max(size, len(vectors)), backend=backend, device=device)
        bank.add(vectors)
        return bank
