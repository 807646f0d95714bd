"""P2, large banks: approximate FAISS indexes (``memory.index: ivf | hnsw``) against the exact one.

A patch-mode bank grows with images × windows: 1e6 vectors is a few hundred MVTec images at
stride 8. The bank here is random but clustered like such a bank (unit vectors around 1000
random centres, per-dimension spread 0.5); queries come from the same clusters. Each index is
built through :class:`ssad.memory.MemoryBank` exactly as scoring builds it; the timed call is
``MemoryBank.knn`` on a batch of queries. Target (issue 11): recall@k >= 0.99 at >= 10× the
exact speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from benchmarks.timing import first_calls, pair_row, side_by_side
from ssad.memory import HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE, MemoryBank, ivf_lists

__all__ = ["bench_large_bank", "clustered_bank", "recall_at_k"]

Row = dict[str, object]


def clustered_bank(
    n: int, queries: int, *, dim: int = 128, centres: int = 1000, spread: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bank (n, dim) and query (queries, dim) unit vectors around the same random centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim), dtype=np.float32)
    out = np.empty((n + queries, dim), dtype=np.float32)
    for start in range(0, n + queries, 1 << 18):  # in chunks: no float64 / double-size temporaries
        part = out[start : start + (1 << 18)]
        part[:] = c[rng.integers(centres, size=len(part))]
        part += spread * rng.standard_normal(part.shape, dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return out[:n], out[n:]


def recall_at_k(ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Share of the exact k nearest neighbours found, averaged over queries."""
    hits = (ids[:, :, None] == exact_ids[:, None, :]).any(axis=1).sum(axis=1)
    return float(hits.mean() / exact_ids.shape[1])


def bench_large_bank(quick: bool) -> list[Row]:
    """IVF and HNSW ``MemoryBank.knn`` vs the exact flat index: recall@k and speed-up."""
    n, n_query, dim, k = (20_000, 200, 128, 3) if quick else (1_000_000, 1000, 128, 3)
    x, q = clustered_bank(n, n_query, dim=dim)
    banks, build_s = {}, {}
    for kind in ("flat", "ivf", "hnsw"):
        tic = time.perf_counter()
        bank = MemoryBank(dim, size=n, backend="cpu", index=kind)
        bank.add(x)
        bank.knn(q[:1], k)  # an approximate index is built at the first search
        build_s[kind], banks[kind] = time.perf_counter() - tic, bank
    names = {"flat": "IndexFlatIP (exact)", "ivf": "IVF", "hnsw": "HNSW"}
    fns: dict[str, Callable[[], object]] = {
        names[kind]: (lambda b=bank: b.knn(q, k)) for kind, bank in banks.items()
    }
    results, first_s = first_calls(fns)
    exact_ids = results[names["flat"]][1]
    timings = side_by_side(fns, first_s=first_s, repeat=3)
    settings = {
        "ivf": f"nlist {ivf_lists(n)}, nprobe {IVF_NPROBE}",
        "hnsw": f"M {HNSW_M}, efSearch {HNSW_EF_SEARCH}",
    }
    base = timings[names["flat"]]
    rows = []
    for kind in ("ivf", "hnsw"):
        t = timings[names[kind]]
        recall = recall_at_k(results[names[kind]][1], exact_ids)
        ours, baseline = f"memory.index={kind} ({settings[kind]})", "memory.index=flat (exact)"
        rows.append(
            pair_row(
                "large bank kNN",
                ours=ours,
                baseline=baseline,
                timings={ours: t, baseline: base},
                sizes={"bank": n, "queries": n_query, "dim": dim, "k": k},
                note=f"approximate: recall@{k} {recall:.4f} vs exact",
                recall_at_k=recall,
                build_s=build_s[kind],
                exact_build_s=build_s["flat"],
                targets={"recall_at_k": 0.99, "speedup": 10.0},
            )
        )
    return rows
