"""The benchmarks: each builds its inputs, checks ours against the naive version, then times both.

Every ``bench_*`` function takes ``quick`` (small sizes for a smoke test) and returns result rows:
pair rows (``kind="pair"``: baseline_s, ours_s, ratio = baseline / ours) and throughput rows
(``kind="throughput"``: samples per second). Seconds are per call, best of ``repeat``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks import reference as ref
from benchmarks.convs import bench_convs
from benchmarks.dense_bank import bench_dense_bank
from benchmarks.export_runtimes import bench_export
from benchmarks.gpu import bench_gpu
from benchmarks.large_bank import bench_large_bank
from benchmarks.precision import bench_precision
from benchmarks.scoring import bench_scoring
from benchmarks.timing import check, first_calls, pair_row, side_by_side
from benchmarks.train_step import QUICK, bench_train_step, brick_pretext
from ssad.config import load_config
from ssad.data.images import to_tensor
from ssad.data.pretext import PretextDataset
from ssad.localize import grid_starts, patch_score_grid, upsample_grid
from ssad.memory import MemoryBank
from ssad.metrics import aupro
from ssad.model import SSADNet

__all__ = ["BENCHMARKS"]

Row = dict[str, object]


# ---- 1. patch map scoring ------------------------------------------------------------------------
def bench_patch_map(quick: bool) -> list[Row]:
    """Batched windows (``patch_score_grid``) vs one ``model.embed`` per window."""
    size, batch, patch, stride, k = (64, 1, 32, 8, 3) if quick else (128, 4, 32, 8, 3)
    torch.manual_seed(0)
    model = SSADNet(fusion_dim=64, head_dims=(64,), embedding_dim=32).eval()
    x = torch.randn(batch, 3, size, size)
    bank = MemoryBank(32, size=512, backend="cpu")
    with torch.no_grad():
        bank.add(model.embed(torch.randn(256, 3, patch, patch)))

    def ours():
        return patch_score_grid(model, bank, x, patch=patch, stride=stride, k=k)

    def naive():
        return ref.patch_score_grid_per_window(model, bank, x, patch=patch, stride=stride, k=k)

    fns = {"patch_score_grid (batched)": ours, "one forward per window": naive}
    results, first_s = first_calls(fns)
    (s_ours, z_ours), (s_naive, z_naive) = results.values()
    check(s_ours.shape == s_naive.shape, f"grid shapes {s_ours.shape} vs {s_naive.shape}")
    check(np.allclose(s_ours, s_naive, rtol=1e-4, atol=1e-5), "window scores differ")
    check(np.allclose(z_ours, z_naive, rtol=1e-3, atol=1e-4), "window embeddings differ")
    check(float(s_ours.std()) > 0, "degenerate test: all window scores are equal")
    timings = side_by_side(fns, first_s=first_s, repeat=3)  # the loop takes seconds per call
    g = len(grid_starts(size, patch, stride))
    sizes = {
        "images": batch,
        "image_px": size,
        "patch": patch,
        "stride": stride,
        "windows": batch * g * g,
        "k": k,
        "model": "SSADNet(fusion_dim=64, head_dims=(64,), embedding_dim=32), random, eval",
    }
    return [
        pair_row(
            "patch map scoring",
            ours="patch_score_grid (batched)",
            baseline="one forward per window",
            timings=timings,
            sizes=sizes,
            note="baseline scores all windows in one bank.score call: only batching is compared",
            max_abs_score_diff=float(np.abs(s_ours - s_naive).max()),
        )
    ]


# ---- 2. kNN --------------------------------------------------------------------------------------
def bench_knn(quick: bool) -> list[Row]:
    """``MemoryBank.score`` (FAISS IndexFlatIP) vs a Python loop and a vectorised numpy version."""
    n_bank, n_query, dim, k = (2000, 200, 128, 3) if quick else (8000, 2000, 128, 3)
    rng = np.random.default_rng(0)
    bank = MemoryBank(dim, size=n_bank, backend="cpu")
    bank.add(rng.standard_normal((n_bank, dim), dtype=np.float32))
    queries = rng.standard_normal((n_query, dim), dtype=np.float32)
    unit_bank = bank.vectors  # already unit-norm: normalising the bank is index building, untimed

    fns: dict[str, Callable[[], np.ndarray]] = {
        "MemoryBank.score (faiss)": lambda: bank.score(queries, k),
        "python loop + sort": lambda: ref.knn_score_python_loop(unit_bank, queries, k),
        "numpy matmul + argpartition": lambda: ref.knn_score_numpy(unit_bank, queries, k),
    }
    results, first_s = first_calls(fns)
    ours = results["MemoryBank.score (faiss)"]
    for name, r in results.items():
        check(np.allclose(ours, r, atol=1e-5), f"kNN scores of {name!r} differ from ours")
    timings = side_by_side(fns, first_s=first_s, repeat=3)
    sizes = {"bank": n_bank, "queries": n_query, "dim": dim, "k": k}
    return [
        pair_row(
            "kNN score",
            ours="MemoryBank.score (faiss)",
            baseline=baseline,
            timings=timings,
            sizes=sizes,
        )
        for baseline in ("python loop + sort", "numpy matmul + argpartition")
    ]


# ---- 3. map upsampling ---------------------------------------------------------------------------
def bench_upsample(quick: bool) -> list[Row]:
    """``upsample_grid`` vs np.interp per row/column (same result) and plain resizes (not same)."""
    size, batch, patch, stride = (64, 8, 32, 8) if quick else (128, 64, 32, 8)
    g = len(grid_starts(size, patch, stride))
    grid = np.random.default_rng(0).random((batch, g, g), dtype=np.float32)
    sizes = {"images": batch, "grid": g, "image_px": size, "patch": patch, "stride": stride}

    def ours():
        return upsample_grid(grid, size=size, patch=patch, stride=stride)

    def interp():
        return ref.upsample_grid_interp(grid, size=size, patch=patch, stride=stride)

    def cv2_resize():
        return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in grid])

    def torch_interpolate():
        t = torch.from_numpy(grid)[:, None]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0]

    fns = {
        "upsample_grid": ours,
        "np.interp rows then columns": interp,
        "cv2.resize per image": cv2_resize,
        "F.interpolate (batched)": torch_interpolate,
    }
    results, first_s = first_calls(fns)
    out = results["upsample_grid"]
    check(
        np.allclose(out, results["np.interp rows then columns"], atol=1e-5),
        "upsample_grid differs from the np.interp reference",
    )
    timings = side_by_side(fns, first_s=first_s, repeat=5 if quick else 9)
    rows = [
        pair_row(
            "map upsampling",
            ours="upsample_grid",
            baseline="np.interp rows then columns",
            timings=timings,
            sizes=sizes,
        )
    ]
    for name in ("cv2.resize per image", "F.interpolate (batched)"):
        diff = float(np.abs(np.asarray(results[name]) - out).max())
        rows.append(
            pair_row(
                "map upsampling",
                ours="upsample_grid",
                baseline=name,
                timings=timings,
                sizes=sizes,
                equivalent=False,
                note=f"not equivalent (no window-centre placement; max |diff| {diff:.3f}): "
                "speed reference only",
                max_abs_diff=diff,
            )
        )
    return rows


# ---- 4. AUPRO ------------------------------------------------------------------------------------
def _masks_and_maps(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Half the images get 1–3 elliptic defects; maps = smooth noise, raised inside the defects."""
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for m in masks[: n // 2]:
        for _ in range(int(rng.integers(1, 4))):
            centre = tuple(int(c) for c in rng.integers(size // 8, size - size // 8, size=2))
            axes = tuple(int(a) for a in rng.integers(2, size // 6, size=2))
            cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    noise = rng.standard_normal((n, size, size)).astype(np.float32)
    maps = np.stack([cv2.GaussianBlur(z, (0, 0), 2.0) for z in noise])
    maps += masks * rng.uniform(0.1, 0.6, size=(n, 1, 1)).astype(np.float32)
    return masks.astype(bool), maps


def bench_aupro(quick: bool) -> list[Row]:
    """Exact ``metrics.aupro`` (one sort) vs 100-threshold loops over labelled GT regions."""
    n, size, steps = (10, 64, 100) if quick else (50, 128, 100)
    masks, maps = _masks_and_maps(n, size, np.random.default_rng(0))
    fns = {
        "metrics.aupro (exact)": lambda: aupro(masks, maps),
        "100-threshold loop, relabel each threshold": lambda: ref.aupro_threshold_loop(
            masks, maps, num_thresholds=steps, relabel=True
        ),
        "100-threshold loop, labels computed once": lambda: ref.aupro_threshold_loop(
            masks, maps, num_thresholds=steps, relabel=False
        ),
    }
    values, first_s = first_calls(fns)
    ours = values["metrics.aupro (exact)"]
    for name, v in values.items():
        # The loop's curve is a coarser polyline through points of the exact curve.
        check(abs(v - ours) < 0.02, f"AUPRO of {name!r} ({v:.4f}) far from ours ({ours:.4f})")
    timings = side_by_side(fns, first_s=first_s, repeat=3 if quick else 5)
    sizes = {"images": n, "image_px": size, "anomalous_images": n // 2, "thresholds_loop": steps}
    return [
        pair_row(
            "AUPRO",
            ours="metrics.aupro (exact)",
            baseline=name,
            timings=timings,
            sizes=sizes,
            note="values differ slightly: the loop samples the PRO curve at 100 thresholds only",
            ours_value=ours,
            baseline_value=values[name],
        )
        for name in list(fns)[1:]
    ]


# ---- 5. pretext generation vs training throughput ------------------------------------------------
def _pretext_dataset(mode: str, batch: int, length: int, quick: bool) -> PretextDataset:
    overrides = {"pretext.mode": mode, "train.batch_size": batch, **(QUICK if quick else {})}
    return brick_pretext(load_config(preset="cpu", overrides=overrides), length)  # seed 0


def _loader_seconds_per_batch(dataset: PretextDataset, batch: int, batches: int) -> float:
    """Median seconds per batch of a ``workers=0`` DataLoader (as ``train.fit`` builds it)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=0)
    times, it = [], iter(loader)
    next(it)  # warm-up
    for _ in range(batches):
        tic = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


def _split_seconds_per_sample(dataset: PretextDataset, n: int) -> dict[str, float]:
    """Where a sample's time goes: ``sample`` (crop, jitter, defect) vs ``to_tensor``."""
    tic = time.perf_counter()
    images = [dataset.sample(i)[0] for i in range(n)]
    mid = time.perf_counter()
    for image in images:
        to_tensor(image)
    end = time.perf_counter()
    return {"defect_ms": (mid - tic) / n * 1e3, "to_tensor_ms": (end - mid) / n * 1e3}


def _train_step_seconds(x: torch.Tensor, y: torch.Tensor, *, phase: int, steps: int) -> float:
    """Median seconds of one SGD step (forward, loss, backward, update) as in ``train.fit``."""
    torch.manual_seed(0)
    model = SSADNet()  # ResNet-18 from random weights: the cost of a step, not its learning
    model.train()
    if phase == 1:  # frozen backbone, BatchNorm statistics included
        for p in model.backbone().parameters():
            p.requires_grad_(False)
        model.backbone().eval()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        tic = time.perf_counter()
        loss = F.cross_entropy(model.classify(model.embed(xb)), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - tic

    step(x[:4], y[:4])  # warm-up on a slice: whole-image steps take seconds on 2 cores
    return float(np.median([step(x, y) for _ in range(steps)]))


def bench_pretext(quick: bool) -> list[Row]:
    """Pretext samples/s (DataLoader, workers=0) next to training samples/s at the same batch."""
    batch = 8 if quick else load_config(preset="cpu").train.batch_size
    rows = []
    for mode in ("image", "patch"):
        dataset = _pretext_dataset(mode, batch, length=batch * 8, quick=quick)
        data_s = _loader_seconds_per_batch(dataset, batch, batches=2 if quick else 3)
        split = _split_seconds_per_sample(dataset, batch)
        x, y = next(iter(DataLoader(dataset, batch_size=batch, num_workers=0)))
        heavy = mode == "image"  # whole-image steps take seconds on 2 cores
        train = {
            phase: _train_step_seconds(x, y, phase=phase, steps=1 if heavy else 3)
            for phase in (1, 2)
        }
        data_rate = batch / data_s
        rows.append(
            {
                "kind": "throughput",
                "name": f"pretext generation, {mode} mode",
                "sizes": {"batch": batch, "input_px": int(x.shape[-1]), "class": "brick"},
                "data_samples_per_s": data_rate,
                "data_s_per_batch": data_s,
                "data_ms_per_sample_split": split,
                "train_phase1_samples_per_s": batch / train[1],
                "train_phase2_samples_per_s": batch / train[2],
                # > 1: generation outpaces training (no bottleneck with workers=0)
                "data_over_train_phase1": data_rate / (batch / train[1]),
                "data_over_train_phase2": data_rate / (batch / train[2]),
                "data_share_of_step_phase1": data_s / (data_s + train[1]),
                "data_share_of_step_phase2": data_s / (data_s + train[2]),
            }
        )
    return rows


BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "patch_map": bench_patch_map,
    "knn": bench_knn,
    "upsample": bench_upsample,
    "aupro": bench_aupro,
    "pretext": bench_pretext,
    "train_step": bench_train_step,  # P1: end-to-end training step vs the pure step
    "large_bank": bench_large_bank,  # P2: IVF / HNSW vs the exact index (~9 min)
    "scoring": bench_scoring,
    "dense_bank": bench_dense_bank,  # the cpu preset's dense scoring: IVF / coresets vs exact
    "precision": bench_precision,  # bf16 autocast vs fp32 training
    "convs": bench_convs,  # one-position linear vs nn.Conv2d in layer4
    "export": bench_export,  # torch vs its ONNX export on onnxruntime / OpenVINO
    "gpu": bench_gpu,  # CUDA only: skipped elsewhere (benchmarks.gpu.why_not)
}
