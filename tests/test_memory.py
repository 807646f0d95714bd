"""FIFO memory bank: trimming, the FAISS index mirror, exact kNN cosine scores, persistence."""

from __future__ import annotations

import contextlib
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from ssad.memory import MemoryBank, coreset_indices, make_index


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _index_vectors(bank: MemoryBank) -> np.ndarray:
    """The vectors stored in the bank's (CPU, flat) FAISS index."""
    return faiss.rev_swig_ptr(bank.index.get_xb(), bank.index.ntotal * bank.dim).reshape(
        bank.index.ntotal, bank.dim
    )


def test_fifo_trim_keeps_newest_in_order() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 4)).astype(np.float32) for n in (5, 3, 4)]
    bank = MemoryBank(4, size=6, backend="cpu")
    for b in batches:
        bank.add(b)
    assert len(bank) == 12  # add never drops
    bank.trim()
    assert len(bank) == 6
    np.testing.assert_allclose(bank.vectors, _unit(np.concatenate(batches))[-6:], rtol=1e-6)
    bank.trim()  # idempotent
    assert len(bank) == 6
    small = MemoryBank(4, size=50, backend="cpu")
    small.add(batches[0])
    small.trim()
    assert len(small) == 5  # nothing to drop


def test_add_accepts_torch_and_normalises() -> None:
    bank = MemoryBank(3, size=10, backend="cpu")
    bank.add(torch.tensor([[3.0, 0.0, 4.0]], requires_grad=True))
    bank.add(np.zeros((0, 3), np.float32))  # empty batch is a no-op
    np.testing.assert_allclose(bank.vectors, [[0.6, 0.0, 0.8]], rtol=1e-6)
    with pytest.raises(ValueError, match="bank dim"):
        bank.add(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        bank.add(np.ones(3, np.float32))


def test_index_mirrors_vectors_after_add_and_trim() -> None:
    rng = np.random.default_rng(1)
    bank = MemoryBank(8, size=10, backend="cpu")
    for n in (7, 6, 5):
        bank.add(rng.normal(size=(n, 8)))
        assert bank.index.ntotal == len(bank)
        np.testing.assert_array_equal(_index_vectors(bank), bank.vectors)
        bank.trim()
        assert bank.index.ntotal == len(bank) <= 10
        np.testing.assert_array_equal(_index_vectors(bank), bank.vectors)


def _brute_knn(bank_vecs: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = _unit(q) @ bank_vecs.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def test_knn_equals_brute_force_cosine() -> None:
    rng = np.random.default_rng(2)
    bank = MemoryBank(16, size=100, backend="cpu")
    bank.add(rng.normal(size=(80, 16)) * rng.uniform(0.1, 10, size=(80, 1)))  # any norms
    bank.trim()
    q = rng.normal(size=(25, 16)) * 3
    dist, ids = bank.knn(q, 5)
    ref_sims, ref_ids = _brute_knn(bank.vectors, q, 5)
    assert dist.shape == ids.shape == (25, 5)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, (1 - ref_sims) / 2, atol=1e-5)  # nearest first
    scores = bank.score(torch.from_numpy(q).float(), 5)
    np.testing.assert_allclose(scores, (1 - ref_sims).mean(axis=1) / 2, atol=1e-5)
    assert scores.dtype == np.float32 and scores.shape == (25,)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_l2_bank_keeps_vectors_and_equals_brute_force_euclidean(kind: str) -> None:
    """``metric="l2"``: vectors stored as they are (norms matter), nearest by Euclidean distance,
    the score their mean distance; every index kind agrees with brute force."""
    x, q = _clustered(3000, 16, centres=20, spread=0.5, seed=5, queries=40)
    x = x * np.random.default_rng(6).uniform(0.5, 4.0, size=(len(x), 1)).astype(np.float32)
    bank = MemoryBank(16, size=len(x), metric="l2", backend="cpu", index=kind)
    bank.add(x)
    np.testing.assert_array_equal(bank.vectors, x.astype(np.float32))
    dist, ids = bank.knn(q * 2.0, 3)
    brute = np.linalg.norm((q * 2.0)[:, None, :] - x[None, :, :], axis=2)
    ref_ids = np.argsort(brute, axis=1, kind="stable")[:, :3]
    assert _recall(ids, ref_ids) >= (1.0 if kind == "flat" else 0.97)
    np.testing.assert_allclose(dist, np.take_along_axis(brute, ids, axis=1), rtol=1e-4, atol=1e-4)
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first
    np.testing.assert_allclose(bank.score(q * 2.0, 3), dist.mean(axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match=r"memory\.metric"):
        MemoryBank(16, size=10, metric="manhattan", backend="cpu")  # type: ignore[arg-type]


def test_score_range_and_extremes() -> None:
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(20, 6))
    bank = MemoryBank(6, size=20, backend="cpu")
    bank.add(vecs)
    s = bank.score(rng.normal(size=(50, 6)), 3)
    assert ((s >= 0) & (s <= 1)).all()
    np.testing.assert_allclose(bank.score(vecs[4:5] * 7.0, 1), [0.0], atol=1e-6)
    # the negation of a one-vector bank is maximally anomalous
    one = MemoryBank(6, size=5, backend="cpu")
    one.add(vecs[:1])
    np.testing.assert_allclose(one.score(-vecs[:1], 1), [1.0], atol=1e-6)


def test_score_increases_as_query_rotates_away() -> None:
    a = np.zeros((1, 4), np.float32)
    a[0, 0] = 1
    bank = MemoryBank(4, size=5, backend="cpu")
    bank.add(a)
    angles = np.linspace(0, np.pi, 13)
    q = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles), np.zeros_like(angles)], 1)
    s = bank.score(q.astype(np.float32), 1)
    assert (np.diff(s) > 0).all(), s
    np.testing.assert_allclose(s, (1 - np.cos(angles)) / 2, atol=1e-6)


def test_k_larger_than_bank_uses_bank_size() -> None:
    rng = np.random.default_rng(4)
    bank = MemoryBank(5, size=10, backend="cpu")
    bank.add(rng.normal(size=(3, 5)))
    q = rng.normal(size=(2, 5))
    dist, ids = bank.knn(q, 10)
    assert dist.shape == ids.shape == (2, 3)
    assert (ids >= 0).all()  # no FAISS -1 padding
    ref_sims = _unit(q) @ bank.vectors.T
    np.testing.assert_allclose(bank.score(q, 10), (1 - ref_sims).mean(axis=1) / 2, atol=1e-5)


def test_empty_bank_raises() -> None:
    bank = MemoryBank(4, size=10, backend="cpu")
    with pytest.raises(RuntimeError, match="empty"):
        bank.score(np.ones((1, 4), np.float32), 3)


def test_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    bank = MemoryBank(8, size=30, backend="cpu")
    bank.add(rng.normal(size=(40, 8)))
    bank.trim()
    path = tmp_path / "bank.npy"
    bank.save(path)
    back = MemoryBank.load(path, size=30, backend="cpu")
    # load re-normalises the (already unit) vectors: equal up to float32 rounding
    np.testing.assert_allclose(back.vectors, bank.vectors, rtol=0, atol=1e-6)
    assert back.size == 30 and back.index.ntotal == 30
    q = rng.normal(size=(6, 8))
    np.testing.assert_allclose(back.score(q, 3), bank.score(q, 3), rtol=0, atol=1e-6)
    # a smaller configured size never silently drops saved vectors
    assert len(MemoryBank.load(path, size=5, backend="cpu")) == 30


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="a GPU is visible to faiss")
def test_gpu_backend_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"memory\.backend=gpu.*faiss-gpu"):
        make_index(8, backend="gpu")
    with pytest.raises(RuntimeError, match=r"memory\.backend=gpu"):
        MemoryBank(8, size=10, backend="gpu")


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="a GPU is visible to faiss")
@pytest.mark.parametrize("backend", ["auto", "cpu"])
def test_auto_backend_is_cpu_flat_ip_here(backend: str) -> None:
    index = make_index(8, backend=backend)
    assert isinstance(index, faiss.IndexFlatIP)
    assert index.d == 8 and index.ntotal == 0
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT


def _max_nn_distance(full: np.ndarray, chosen: np.ndarray) -> float:
    """The covering radius: the largest distance from a point of ``full`` to its nearest chosen one."""
    d = np.sqrt(((full[:, None, :] - chosen[None, :, :]) ** 2).sum(-1))
    return float(d.min(axis=1).max())


@pytest.mark.parametrize("dim", [8, 300])  # 300 > 128: selection runs on a random projection
def test_coreset_covers_the_set_better_than_random(dim: int) -> None:
    rng = np.random.default_rng(0)
    # clustered data with a few far outliers: random subsampling misses the rare points
    centres = rng.normal(size=(5, dim)) * 4
    x = np.concatenate(
        [
            centres[rng.integers(5, size=1500)] + rng.normal(size=(1500, dim)),
            rng.normal(size=(20, dim)) * 12,
        ]
    ).astype(np.float32)
    n = 60
    ids = coreset_indices(x, n, seed=0)
    assert len(ids) == n == len(np.unique(ids))
    core = _max_nn_distance(x, x[ids])
    randoms = [
        _max_nn_distance(x, x[np.random.default_rng(s).choice(len(x), n, replace=False)])
        for s in range(5)
    ]
    assert core < min(randoms), (core, randoms)
    np.testing.assert_array_equal(ids, coreset_indices(x, n, seed=0))  # seeded
    np.testing.assert_array_equal(coreset_indices(x[:10], 50), np.arange(10))  # n >= N: all


@pytest.mark.parametrize("method", ["coreset", "random"])
def test_subsample_keeps_bank_vectors_and_index_in_step(method: str) -> None:
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(200, 6)).astype(np.float32))
    bank = MemoryBank(6, size=25, backend="cpu")
    bank.add(x)
    bank.subsample(method=method, seed=3)
    assert len(bank) == 25 == bank.index.ntotal
    np.testing.assert_allclose(_index_vectors(bank), bank.vectors)
    # every kept vector is one of the originals
    assert np.allclose((bank.vectors @ x.T).max(axis=1), 1.0, atol=1e-6)
    small = MemoryBank(6, size=500, backend="cpu")
    small.add(x)
    small.subsample(method=method)
    np.testing.assert_allclose(small.vectors, x, rtol=0, atol=1e-6)  # nothing to drop: order kept


def test_install_check_faiss_matches_the_hardware() -> None:
    """One FAISS build is installed; on a CUDA machine it must be the GPU build (the gpu extra)."""
    from importlib.metadata import PackageNotFoundError, version

    installed = []
    for dist in ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu"):
        with contextlib.suppress(PackageNotFoundError):
            installed.append((dist, version(dist)))
    assert len(installed) == 1, f"exactly one FAISS distribution must be installed: {installed}"
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the GPU half of the install check needs one")
    assert installed[0][0] != "faiss-cpu", "CUDA machine with faiss-cpu: pip install '.[gpu]'"
    assert hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


# ---- approximate indexes (memory.index: ivf | hnsw) ---------------------------------------------
def _clustered(
    n: int, dim: int, *, centres: int, spread: float, seed: int, queries: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` bank and ``queries`` query unit vectors around the same random centres (patch-mode
    banks are clustered like this)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim), dtype=np.float32)
    x = c[rng.integers(centres, size=n + queries)]
    x = x + spread * rng.standard_normal(x.shape, dtype=np.float32)
    return _unit(x[:n]), _unit(x[n:])


def _recall(ids: np.ndarray, ref_ids: np.ndarray) -> float:
    """Share of the exact k nearest found (recall@k), averaged over queries."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, ref_ids)]))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_on_clustered_bank(kind: str) -> None:
    x, q = _clustered(20000, 32, centres=100, spread=0.5, seed=0, queries=300)
    exact = MemoryBank(32, size=len(x), backend="cpu")
    exact.add(x)
    bank = MemoryBank(32, size=len(x), backend="cpu", index=kind)
    bank.add(x)
    assert bank.index is None  # built at the first search, from the vectors
    dist, ids = bank.knn(q, 3)
    ref_ids = exact.knn(q, 3)[1]
    assert _recall(ids, ref_ids) >= 0.99
    assert bank.index.ntotal == len(x)
    if kind == "ivf":
        assert isinstance(bank.index, faiss.IndexIVFFlat) and bank.index.nlist > 100
    else:
        assert isinstance(bank.index, faiss.IndexHNSWFlat)
    # the distances returned are the true cosine distances of the ids returned
    cos = np.einsum("bd,bkd->bk", _unit(q), x[ids])
    np.testing.assert_allclose(dist, (1 - cos) / 2, atol=1e-5)
    np.testing.assert_allclose(bank.score(q, 3), exact.score(q, 3), atol=5e-3)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_follows_trim_and_subsample(kind: str) -> None:
    x, q = _clustered(3000, 16, centres=20, spread=0.5, seed=1, queries=100)
    bank = MemoryBank(16, size=1200, backend="cpu", index=kind)
    for part in np.split(x, 3):
        bank.add(part)
        bank.knn(q, 3)  # searched while filling: the index catches up with every add
        assert bank.index.ntotal == len(bank)
    bank.trim()
    assert bank.index is None and len(bank) == 1200
    ids = bank.knn(q, 3)[1]
    assert bank.index.ntotal == 1200
    assert _recall(ids, _brute_knn(bank.vectors, q, 3)[1]) >= 0.99  # ids index the kept vectors
    bank.size = 300
    bank.subsample(method="random", seed=0)
    dist, ids = bank.knn(q, 3)
    ref_ids = _brute_knn(bank.vectors, q, 3)[1]
    assert bank.index.ntotal == 300 and _recall(ids, ref_ids) >= 0.99
    cos = np.einsum("bd,bkd->bk", _unit(q), bank.vectors[ids])
    np.testing.assert_allclose(dist, (1 - cos) / 2, atol=1e-5)


def test_ivf_never_pads_results() -> None:
    """Probed cells holding fewer than k vectors: those queries fall back to exact search."""
    x, q = _clustered(2000, 8, centres=4, spread=0.3, seed=3, queries=20)
    bank = MemoryBank(8, size=2000, backend="cpu", index="ivf")
    bank.add(x)
    dist, ids = bank.knn(q, 1000)
    assert (bank.index.search(q, 1000)[1] < 0).any()  # the raw IVF search does pad here
    assert (ids >= 0).all() and np.isfinite(dist).all()
    ref_sims, _ = _brute_knn(bank.vectors, q, 1000)
    np.testing.assert_allclose(dist, (1 - ref_sims) / 2, atol=1e-5)


def test_index_kind_is_checked() -> None:
    with pytest.raises(ValueError, match=r"flat \| ivf \| hnsw"):
        MemoryBank(8, size=10, backend="cpu", index="annoy")  # type: ignore[arg-type]


def test_load_with_approximate_index(tmp_path: Path) -> None:
    x, _ = _clustered(500, 8, centres=5, spread=0.4, seed=4)
    bank = MemoryBank(8, size=500, backend="cpu")
    bank.add(x)
    bank.save(tmp_path / "bank.npy")
    back = MemoryBank.load(tmp_path / "bank.npy", size=500, backend="cpu", index="hnsw")
    q = x[:30]
    np.testing.assert_allclose(back.score(q, 3), bank.score(q, 3), atol=1e-4)
