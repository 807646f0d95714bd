"""Memory bank of normal embeddings with a FAISS kNN cosine anomaly score.

Vectors are L2-normalised, so FAISS inner product = cosine similarity. The index always mirrors the
bank's vectors: ``add`` appends to both, ``trim`` keeps the newest ``size`` and rebuilds it (the
seed's FIFO), ``subsample`` keeps a greedy k-center coreset or a random subset of ``size`` (a bank
built once from the final model, as PatchCore does).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch

__all__ = ["MemoryBank", "coreset_indices", "gpu_available", "make_index"]

log = logging.getLogger(__name__)

try:
    import faiss
except ImportError as exc:  # neither extra installed
    raise ImportError(
        "ssad needs FAISS: pip install 'ssad[cpu]' (faiss-cpu) or 'ssad[gpu]' (faiss-gpu-cu12); "
        "install exactly one of them, both provide the `faiss` package"
    ) from exc


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


def coreset_indices(
    x: np.ndarray, n: int, *, seed: int = 0, proj_dim: int = 128, device: str = "cpu"
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
    feats = feats.to(device)
    chosen = torch.empty(n, dtype=torch.long)
    i = int(torch.randint(m, (1,), generator=gen))
    mind = torch.full((m,), float("inf"), device=device)
    sq = (feats * feats).sum(1)
    for step in range(n):
        chosen[step] = i
        # squared distance of every point to the newest centre: |a|^2 + |c|^2 - 2 a.c
        d = sq + sq[i] - 2.0 * (feats @ feats[i])
        mind = torch.minimum(mind, d)
        i = int(torch.argmax(mind))
    return chosen.numpy()


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

    def subsample(
        self,
        *,
        method: Literal["coreset", "random"] = "coreset",
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        """Keep ``size`` vectors chosen by greedy k-center coreset or uniformly at random."""
        if len(self.vectors) <= self.size:
            return
        if method == "coreset":
            keep = np.sort(coreset_indices(self.vectors, self.size, seed=seed, device=device))
        else:
            keep = np.sort(
                np.random.default_rng(seed).choice(len(self.vectors), self.size, replace=False)
            )
        self.vectors = np.ascontiguousarray(self.vectors[keep])
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
