"""Smoke runs of every benchmark on tiny inputs (their numbers come from full runs), and an import
of every experiment, so that neither rots."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import cv2
import faiss
import pytest
import torch
from threadpoolctl import threadpool_limits

from benchmarks.dense_bank import EXACT
from benchmarks.gpu import why_not
from benchmarks.run import BENCHMARKS, markdown, ratios
from benchmarks.timing import machine_info

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parent.parent / "experiments").glob("*.py")
    if p.stem != "__init__"
)


@pytest.fixture
def one_thread():
    """One thread per library, as ``benchmarks/run.py`` runs by default; restored afterwards."""
    before = (torch.get_num_threads(), faiss.omp_get_max_threads(), cv2.getNumThreads())
    limits = threadpool_limits(limits=1)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    limits.restore_original_limits()
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])
    cv2.setNumThreads(before[2])


def _dense_bank(rows: list[dict]) -> None:
    """Each bank against the exact one, every training position in the exact bank."""
    assert [r["ours"] for r in rows] == [
        "coreset 10 % (flat)",
        "coreset 5 % (flat)",
        "ivf (every position; the preset)",
    ]
    sizes = rows[0]["sizes"]
    positions = sizes["train_images"] * (sizes["image_px"] // 8) ** 2
    for r in rows:
        assert r["baseline"] == EXACT and r["sizes"]["bank"][EXACT] == positions
        assert 0.0 < r["pixel_auroc_ratio"] <= 1.2 and r["sizes"]["images_per_s"] > 0
    assert sizes["bank"][rows[0]["ours"]] == positions // 10


EXTRA_CHECKS = {"dense_bank": _dense_bank}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_on_tiny_inputs_and_reports_ratios(name: str, one_thread) -> None:
    if name == "gpu" and why_not():
        pytest.skip(why_not())
    rows = BENCHMARKS[name](True)
    assert rows, f"{name} returned no result rows"
    for row in rows:
        values = ratios(row)
        assert values and all(math.isfinite(v) and v > 0 for v in values), (name, values)
    EXTRA_CHECKS.get(name, lambda _rows: None)(rows)
    results = {"machine": machine_info(), "quick": True, "pairs": [], "throughput": []}
    results["end_to_end"] = []
    for row in rows:
        results[{"pair": "pairs"}.get(row["kind"], row["kind"])].append(row)
    table = markdown(results)
    assert "QUICK sizes" in table
    if results["pairs"]:
        assert "×" in table


def test_gpu_benchmark_is_skipped_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from benchmarks.gpu import NoGPU, bench_gpu
    from benchmarks.run import run

    with pytest.raises(NoGPU, match="no CUDA"):
        bench_gpu(True)
    assert "no CUDA" in run(quick=True, only=["gpu"])["skipped"]["gpu"]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_imports(name: str) -> None:
    module = importlib.import_module(f"experiments.{name}")
    assert callable(module.main)
