"""``ssad export``: a run folder or registered model → an ONNX / OpenVINO graph folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["detector_folder", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="a run folder or models:/ URI → ONNX / OpenVINO graph")
    ex.add_argument("model")
    ex.add_argument("--format", nargs="+", choices=["onnx", "openvino"], default=["onnx"])
    ex.add_argument("--out", required=True, type=Path, help="export folder to write")
    ex.add_argument(
        "--bank-size",
        type=int,
        help="keep a greedy coreset of this many bank vectors (needed above 16,384)",
    )
    ex.add_argument("--tracking-uri", help="MLflow store for models:/ URIs")
    ex.set_defaults(func=cmd_export)


def detector_folder(source: str, tracking_uri: str | None) -> str:
    """A detector folder, or a models:/ or runs:/ URI downloaded to one by the MLflow adapter."""
    from ssad.detector import REGISTRY_PREFIXES

    if source.startswith(REGISTRY_PREFIXES):
        from ssad.study.tracking import download_detector

        return str(download_detector(source, tracking_uri=tracking_uri))
    return source


def cmd_export(args: argparse.Namespace) -> int:
    from ssad.detector import Detector
    from ssad.export import export_detector

    folder = detector_folder(args.model, args.tracking_uri)
    out = export_detector(
        Detector.load(folder, device="cpu"),
        args.out,
        formats=tuple(args.format),
        bank_size=args.bank_size,
        source=args.model,
    )
    check = json.loads((out / "export.json").read_text())["check"]
    for fmt in args.format:
        diff = check[fmt]["max_abs_score"]
        print(f"{fmt}: max |score - torch's| {diff:.2g} on {check['images']} images")
    print(f"exported {args.model} → {out} (README.txt there says how to run it)")
    return 0
