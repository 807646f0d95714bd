"""Serving the cpu preset's detector: torch (FAISS IVF bank) vs its ONNX export on onnxruntime
and on OpenVINO, side by side, on 2 threads, at the preset's 256 px.

Per class of the synthetic set (the preset's frozen detector: a bank build, no training): the
export (a greedy coreset of ``DEFAULT_BANK_SIZE`` of the 61,440 bank vectors) is checked against
the torch detector with the same bank (max |Δ score|, max |Δ map|), and its test image / pixel
AUROC is compared with the full-bank torch detector's. On one class, images/s of the three
runtimes, interleaved repeats (best of), scoring alone and scoring + writing the overlays that
``ssad predict`` writes.

    python benchmarks/export_runtimes.py [--quick] [--out benchmarks/results/export-runtimes.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from ssad.config import load_config
from ssad.data.mvtec import load_class
from ssad.data.synthetic import SYNTHETIC_CLASSES, generate
from ssad.detector import Detector
from ssad.evaluate import load_samples
from ssad.export import DEFAULT_BANK_SIZE, export_bank, export_detector, reference
from ssad.metrics import compute_all
from ssad.pipeline import train_class
from ssad.plots import heatmap_overlays
from ssad.runtimes import load_predictor

__all__ = ["bench_export", "main"]

THREADS = 2
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "export-runtimes.json"


def _detector(root: Path, cls: str, out: Path, size: int) -> Path:
    cfg = load_config(
        preset="cpu",
        overrides={
            "data.root": str(root),
            "data.class_name": cls,
            "data.image_size": size,
            "train.phase1_epochs": 0,
            "train.phase2_epochs": 0,
            "train.progress": False,
            "eval.heatmaps": 0,
            "eval.tsne": False,
        },
    )
    train_class(cfg, out_dir=out, artifacts=False)
    return out


def _aurocs(labels, masks, scores, maps) -> dict[str, float]:
    m = compute_all(labels=labels, scores=scores, masks=masks, maps=maps)
    return {"image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"]}


def _class_row(root: Path, cls: str, folder: Path, size: int) -> dict[str, object]:
    det = Detector.load(folder, device="cpu")
    vectors, _ = export_bank(det, DEFAULT_BANK_SIZE)
    export_detector(det, folder / "export", formats=("onnx", "openvino"), bank_size=len(vectors))
    test = load_samples(load_class(root, cls).test, size)
    full_s, full_m = det.predict(test.images)
    ref_s, ref_m = reference(det, vectors).predict(test.images)
    row: dict[str, object] = {
        "class": cls,
        "bank": {"full": len(det.bank), "export": len(vectors)},
        "torch_full_bank": _aurocs(test.labels, test.masks, full_s, full_m),
    }
    for backend in ("onnx", "openvino"):
        s, m = load_predictor(folder, backend).predict(test.images)
        row[backend] = {
            "max_abs_score": float(np.abs(s - ref_s).max()),
            "max_rel_score": float((np.abs(s - ref_s) / np.abs(ref_s).clip(1e-12)).max()),
            "max_abs_map": float(np.abs(m - ref_m).max()),
            **_aurocs(test.labels, test.masks, s, m),
        }
    return row


def _rate(predictor, images: np.ndarray, overlays: Path | None, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        scores, maps = predictor.predict(images)
        if overlays is not None:
            heatmap_overlays(
                list(images),
                list(maps),
                [None] * len(images),
                overlays,
                names=[f"{i}" for i in range(len(images))],
                scores=[float(s) for s in scores],
            )
        best = min(best, time.perf_counter() - tic)
    return len(images) / best


def _throughput(folder: Path, images: np.ndarray, repeats: int, tmp: Path) -> list[dict]:
    runtimes = {b: load_predictor(folder, b) for b in ("torch", "onnx", "openvino")}
    for p in runtimes.values():
        p.predict(images[:8])  # warm-up: first-call allocations, FAISS IVF build
    rows = []
    for overlays in (False, True):
        rates = {b: [] for b in runtimes}
        for _ in range(repeats):  # interleaved, so a slow spell of the machine hits all alike
            for b, p in runtimes.items():
                rates[b].append(_rate(p, images, tmp / b if overlays else None, 1))
        best = {b: max(r) for b, r in rates.items()}
        for b in runtimes:
            rows.append(
                {
                    "runtime": b,
                    "overlays": overlays,
                    "images_per_s": round(best[b], 2),
                    "ratio_to_torch": round(best[b] / best["torch"], 2),
                }
            )
    return rows


def bench_export(quick: bool) -> dict[str, object]:
    size = 64 if quick else 256
    classes = list(SYNTHETIC_CLASSES)[:1] if quick else list(SYNTHETIC_CLASSES)
    counts = (8, 4, 2) if quick else (60, 30, 15)
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with tempfile.TemporaryDirectory(prefix="ssad-bench-export-") as tmp:
            tmp = Path(tmp)
            root = generate(
                tmp / "data",
                classes=classes,
                size=size,
                n_train=counts[0],
                n_test_good=counts[1],
                n_test_per_defect=counts[2],
            )
            rows = []
            for cls in classes:
                folder = _detector(root, cls, tmp / "det" / cls, size)
                rows.append(_class_row(root, cls, folder, size))
                print(f"[export] {cls}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
            images = load_samples(load_class(root, classes[0]).test, size).images[:32]
            speed = _throughput(tmp / "det" / classes[0], images, 1 if quick else 3, tmp / "o")
    finally:
        torch.set_num_threads(before)
    return {
        "quick": quick,
        "threads": THREADS,
        "image_size": size,
        "export_bank": DEFAULT_BANK_SIZE,
        "classes": rows,
        "throughput_class": classes[0],
        "throughput": speed,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 px, one class, tiny split")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    result = bench_export(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for r in result["throughput"]:
        print(
            f"{r['runtime']:>9} overlays={r['overlays']!s:5} {r['images_per_s']:7.2f} img/s "
            f"x{r['ratio_to_torch']:.2f}"
        )
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
