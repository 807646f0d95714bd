"""FAISS indexes of the memory bank (``ssad.memory``): exact (flat, CPU or GPU) and approximate
(IVF, HNSW) ones, for ``memory.metric`` cosine (inner product of unit vectors) or l2.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "HNSW_EF_SEARCH",
    "HNSW_M",
    "IVF_NPROBE",
    "METRICS",
    "IndexKind",
    "Metric",
    "build_approximate",
    "check_backend",
    "faiss_metric",
    "gpu_available",
    "ivf_lists",
    "make_index",
]

IndexKind = Literal["flat", "ivf", "hnsw"]
Metric = Literal["cosine", "l2"]
METRICS = ("cosine", "l2")
# Approximate-index settings, measured on clustered 128-d unit vectors (benchmarks/large_bank.py,
# 2 CPU cores, 1 thread): ivf recall@3 1.000 at 21.9x the exact speed on 1e6 vectors (>= 0.99
# from 2e4 up); hnsw recall@3 1.000 on 2e5 but 0.981 at 9.2x on 1e6 (larger graphs need a larger
# efSearch): ivf is the choice for banks of 1e6 vectors.
IVF_NPROBE = 16  # inverted lists scanned per query (of ivf_lists(n))
HNSW_M = 32  # graph neighbours per node
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 128  # candidate list length per query

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


def _gpu_resources():
    res = faiss.StandardGpuResources()
    res.setTempMemory(64 * 1024 * 1024)  # trials may share a GPU (fractional resources)
    return res


def check_backend(backend: str) -> None:
    if backend == "gpu" and not gpu_available():
        raise RuntimeError(
            "memory.backend=gpu but faiss sees no GPU (install faiss-gpu: pip install .[gpu], "
            "and check CUDA); use memory.backend=auto or cpu"
        )


def faiss_metric(metric: Metric) -> int:
    if metric not in METRICS:
        raise ValueError(f"memory.metric: cosine | l2, got {metric!r}")
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def make_index(
    dim: int,
    *,
    metric: Metric = "cosine",
    backend: Literal["auto", "cpu", "gpu"] = "auto",
    device: int = 0,
):
    """An exact index (inner product for ``cosine``, squared L2 for ``l2``): on the GPU when
    asked/available, on the CPU otherwise.

    ``backend="gpu"`` without a usable GPU raises instead of silently building an empty index.
    """
    check_backend(backend)
    cosine = faiss_metric(metric) == faiss.METRIC_INNER_PRODUCT
    if backend != "cpu" and gpu_available():
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = device
        gpu_index = faiss.GpuIndexFlatIP if cosine else faiss.GpuIndexFlatL2
        return gpu_index(_gpu_resources(), dim, cfg)
    return faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: ~4 sqrt(n), with >= 39 training vectors per list."""
    return max(1, min(round(4 * n**0.5), n // 39))


def build_approximate(
    vectors: np.ndarray,
    kind: Literal["ivf", "hnsw"],
    *,
    metric: Metric = "cosine",
    backend: Literal["auto", "cpu", "gpu"] = "auto",
    device: int = 0,
    seed: int = 0,
):
    """An approximate index over ``vectors`` (N, D) for ``metric``, built (and trained) now.

    ``ivf``: k-means (seeded) on the vectors → :func:`ivf_lists` cells, :data:`IVF_NPROBE` of
    them scanned per query; on the GPU when one is available (``backend`` as in
    :func:`make_index`). ``hnsw``: a graph of :data:`HNSW_M` neighbours per node, searched with
    :data:`HNSW_EF_SEARCH` candidates; FAISS has no GPU HNSW, so ``backend="gpu"`` raises.
    """
    check_backend(backend)
    n, dim = vectors.shape
    fm = faiss_metric(metric)
    if kind == "hnsw":
        if backend == "gpu":
            raise RuntimeError(
                "memory.index=hnsw runs on the CPU only; use memory.index=ivf on GPU"
            )
        index = faiss.IndexHNSWFlat(dim, HNSW_M, fm)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        index.add(vectors)
        return index
    if kind != "ivf":
        raise ValueError(f"memory.index: flat | ivf | hnsw, got {kind!r}")
    nlist = ivf_lists(n)
    quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, fm)
    index.cp.seed = seed
    index.cp.max_points_per_centroid = 64  # k-means on <= 64 * nlist vectors: enough for cells
    index.train(vectors)
    index.add(vectors)
    index.nprobe = min(IVF_NPROBE, nlist)
    if backend != "cpu" and gpu_available():
        index = faiss.index_cpu_to_gpu(_gpu_resources(), device, index)
        index.nprobe = min(IVF_NPROBE, nlist)
    return index
