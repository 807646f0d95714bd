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
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.timing import first_calls, machine_info, pair_row, set_threads, side_by_side
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

Row = dict[str, object]

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


def _predict_fns(folder: Path, images: np.ndarray, out: Path) -> dict[str, Callable[[], object]]:
    """Each runtime's ``predict`` of ``images``, alone and followed by ``ssad predict``'s
    overlays."""
    fns: dict[str, Callable[[], object]] = {}
    for backend in ("torch", "onnx", "openvino"):
        predictor = load_predictor(folder, backend)

        def score(p=predictor):
            return p.predict(images)

        def score_and_draw(p=predictor, b=backend):
            scores, maps = p.predict(images)
            names = [str(i) for i in range(len(images))]
            heatmap_overlays(
                list(images),
                list(maps),
                [None] * len(images),
                out / b,
                names=names,
                scores=[float(s) for s in scores],
            )

        fns[backend] = score
        fns[f"{backend} + overlays"] = score_and_draw
    return fns


def _speed_rows(folder: Path, images: np.ndarray, repeat: int, tmp: Path, equality) -> list[Row]:
    fns = _predict_fns(folder, images, tmp)
    _, first_s = first_calls(fns)  # warm-up: first-call allocations, FAISS's IVF build
    timings = side_by_side(fns, first_s=first_s, repeat=repeat, min_time=0.0)
    rows = []
    for suffix in ("", " + overlays"):
        base = f"torch{suffix}"
        for backend in ("onnx", "openvino"):
            ours = f"{backend}{suffix}"
            rows.append(
                pair_row(
                    f"serving at {images.shape[1]} px: {ours} vs {base}",
                    ours=ours,
                    baseline=base,
                    timings=timings,
                    sizes={
                        "images": len(images),
                        "image_px": images.shape[1],
                        "threads": THREADS,
                        "images_per_s": len(images) / timings[ours].best_s,
                        "torch_images_per_s": len(images) / timings[base].best_s,
                    },
                    equivalent=False,
                    note="the export searches a coreset of the bank, torch FAISS's IVF over "
                    "all of it: quality and equality per class in `classes`",
                    classes=equality,
                )
            )
    return rows


def bench_export(quick: bool) -> list[Row]:
    size = 64 if quick else 256
    classes = list(SYNTHETIC_CLASSES)[:1] if quick else list(SYNTHETIC_CLASSES)
    counts = (8, 4, 2) if quick else (60, 30, 15)
    before = torch.get_num_threads()
    set_threads(THREADS)
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
            equality = []
            for cls in classes:
                folder = _detector(root, cls, tmp / "det" / cls, size)
                equality.append(_class_row(root, cls, folder, size))
                print(f"[export] {json.dumps(equality[-1])}", file=sys.stderr, flush=True)
            images = load_samples(load_class(root, classes[0]).test, size).images[:32]
            return _speed_rows(
                tmp / "det" / classes[0], images, 1 if quick else 3, tmp / "o", equality
            )
    finally:
        set_threads(before)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 px, one class, tiny split")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    rows = bench_export(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))
    for r in rows:
        print(
            f"{r['name']}: x{r['ratio']:.2f} ({r['sizes']['images_per_s']:.1f} vs "
            f"{r['sizes']['torch_images_per_s']:.1f} images/s)"
        )
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
