"""Commands on one class model: ``data synth``, ``train``, ``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from ssad.cli.args import add_config_args

__all__ = ["collect_images", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data, train, evaluate and predict commands to ``sub``."""
    data = sub.add_parser("data", help="data set tools").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="generate the synthetic MVTec-layout data set")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--classes", nargs="+")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256)
    synth.add_argument("--n-train", type=int, default=60, help="good training images per class")
    synth.add_argument(
        "--n-test-good",
        type=int,
        default=60,
        help="good test images per class (validation + test halves: larger = less noisy)",
    )
    synth.add_argument(
        "--n-test-per-defect", type=int, default=30, help="test images per defect type"
    )
    synth.set_defaults(func=cmd_data_synth)

    train = sub.add_parser("train", help="train and evaluate one class model")
    train.add_argument("--data", required=True, type=Path, help="MVTec-layout data root")
    train.add_argument("--class", dest="class_name", required=True)
    train.add_argument("--out", required=True, type=Path, help="run folder to write")
    add_config_args(train)
    train.set_defaults(func=cmd_train)


    ev = sub.add_parser("evaluate", help="re-evaluate a saved run folder")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument("--split", choices=["val", "test", "all"], default="test")
    ev.set_defaults(func=cmd_evaluate)


    pr = sub.add_parser("predict", help="score images with a run folder or models:/ URI")
    pr.add_argument("model")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--out", required=True, type=Path)
    pr.add_argument(
        "--tracking-uri",
        help="MLflow store for models:/ URIs (default: $MLFLOW_TRACKING_URI "
        "or sqlite:///runs/mlflow.db)",
    )
    pr.add_argument(
        "--backend",
        choices=["torch", "onnx", "openvino"],
        default="torch",
        help="torch: the detector itself (FAISS bank); onnx / openvino: its export "
        "(the folder's export/, written by ssad export or promotion)",
    )
    pr.set_defaults(func=cmd_predict)


def cmd_data_synth(args: argparse.Namespace) -> int:
    from ssad.data.synthetic import generate

    tic = time.perf_counter()
    root = generate(
        args.out,
        classes=args.classes,
        seed=args.seed,
        size=args.size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_per_defect=args.n_test_per_defect,
    )
    print(f"wrote synthetic MVTec-layout data set to {root} in {time.perf_counter() - tic:.1f}s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ssad.config import load_config
    from ssad.pipeline import train_class

    overrides = [f"data.root={args.data}", f"data.class_name={args.class_name}", *args.overrides]
    config = load_config(args.config, overrides=overrides, preset=args.preset)
    tic = time.perf_counter()

    def on_epoch(report, _checkpoint) -> None:
        val = " ".join(
            f"{k}={v:.3f}" for k, v in report.metrics.items() if k in ("image_auroc", "pixel_auroc")
        )
        print(
            f"  epoch {report.epoch:3d} phase {report.phase} loss {report.loss:.3f} "
            f"acc {report.accuracy:.3f} ({report.seconds:.1f}s) {val}",
            flush=True,
        )

    result = train_class(config, out_dir=args.out, on_epoch=on_epoch)
    minutes = (time.perf_counter() - tic) / 60
    _print_metrics(args.class_name, result["val"], result["test"])
    print(f"trained in {minutes:.1f} min; detector + artifacts in {args.out}")
    print(f"validation metrics only; test split: ssad evaluate {args.out} --split test")
    return 0


def _print_metrics(name: str, val: dict, test: dict | None) -> None:
    keys = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
    print(f"{'class':<12} {'split':<5} " + " ".join(f"{k:>12}" for k in keys))
    for split, m in (("val", val), ("test", test)):
        if m:
            print(
                f"{name:<12} {split:<5} "
                + " ".join(f"{m.get(k, float('nan')):>12.3f}" for k in keys)
            )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ssad.pipeline import evaluate_saved

    metrics = evaluate_saved(args.run_dir, split=args.split)
    print(json.dumps(metrics, indent=2))
    print(f"artifacts in {Path(args.run_dir) / args.split}")
    return 0


def collect_images(items: list[str]) -> list[Path]:
    """Files as given; folders expanded (sorted, recursively) to their image files."""
    from ssad.data.images import IMAGE_SUFFIXES

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ssad.cli.deploy import detector_folder
    from ssad.data.images import ImageError, read_image
    from ssad.plots import heatmap_overlays
    from ssad.runtimes import load_predictor

    det = load_predictor(detector_folder(args.model, args.tracking_uri), args.backend)
    paths = collect_images(args.images)
    images, kept = [], []
    for p in paths:
        try:
            images.append(read_image(p, det.size))
            kept.append(p)
        except ImageError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
    if not kept:
        print("no readable images to score", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    scores, maps = det.predict(np.stack(images))
    rate = len(kept) / (time.perf_counter() - tic)
    decisions = det.decide(scores) if det.threshold is not None else [None] * len(scores)
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "score", "threshold", "anomalous"])
        for p, s, d in zip(kept, scores, decisions):
            w.writerow(
                [
                    str(p),
                    f"{s:.6f}",
                    det.threshold if det.threshold is not None else "",
                    "" if d is None else int(d),
                ]
            )
    names = [_unique_name(p, i) for i, p in enumerate(kept)]
    heatmap_overlays(
        images,
        list(maps),
        [None] * len(images),
        out / "heatmaps",
        names=names,
        scores=[float(s) for s in scores],
        vmax=float(max(maps.max(), det.threshold or 0)),
    )
    print(
        f"scored {len(kept)} images ({rate:.1f} images/s) → {out / 'scores.csv'}, {out / 'heatmaps'}"
    )
    if len(kept) < len(paths):
        print(f"{len(paths) - len(kept)} file(s) skipped (see messages above)")
    return 0


def _unique_name(path: Path, i: int) -> str:
    return f"{i:04d}_{path.stem}"
