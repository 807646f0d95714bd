"""Smoke runs of the benchmarks that back a README target (their numbers come from full runs)."""

from __future__ import annotations

import pytest

from benchmarks.dense_bank import EXACT, bench_dense_bank
from benchmarks.run import markdown
from benchmarks.timing import machine_info

pytestmark = pytest.mark.slow


def test_dense_bank_benchmark_compares_each_bank_with_the_exact_one() -> None:
    rows = bench_dense_bank(quick=True)
    assert [r["ours"] for r in rows] == [
        "coreset 10 % (flat)",
        "coreset 5 % (flat)",
        "ivf (every position; the preset)",
    ]
    for r in rows:
        assert r["baseline"] == EXACT and r["ratio"] > 0
        bank = r["sizes"]["bank"]
        assert bank[EXACT] == 12 * 32 * 32  # every training position of the quick run
        assert 0.0 < r["pixel_auroc_ratio"] <= 1.2 and r["sizes"]["images_per_s"] > 0
    assert rows[0]["sizes"]["bank"][rows[0]["ours"]] == 12 * 32 * 32 // 10
    table = markdown(
        {
            "machine": machine_info(),
            "quick": True,
            "pairs": rows,
            "throughput": [],
        }
    )
    assert "of exact" in table and "images/s" in table
