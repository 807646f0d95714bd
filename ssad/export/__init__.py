"""Export a detector to one ONNX / OpenVINO graph: uint8 RGB images → (image score, anomaly map).

The graph holds the whole dense scoring path of :func:`ssad.evaluate.score_images`: the
BatchNorm-folded backbone's dense features, the memory bank as a constant with an exact
nearest-neighbour search (matmul + top-k, as anomalib exports PatchCore), the per-position
calibration, the upsampling to image size, the Gaussian smoothing and the image score. An export
folder is self-describing::

    model.onnx      the graph (input ``image`` uint8 (B, S, S, 3) RGB; outputs ``score`` (B,),
                    ``map`` (B, S, S))
    model.xml/.bin  the same graph in OpenVINO's IR (``--format openvino``)
    export.json     class, threshold, input size and preprocessing, bank, ssad version, config,
                    the graph files' SHA-256, and the export-time check against torch
    README.txt      how to run it without ssad

Only ``eval.scoring: dense`` detectors export: windows scoring embeds hundreds of crops per image
and GradCAM needs a backward pass, neither of which belongs in an inspection graph.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssad.detector import Detector, DetectorError
from ssad.export.graph import ScoringGraph, gaussian_kernel
from ssad.memory import MemoryBank, coreset_indices

__all__ = [
    "EXPORT_FORMATS",
    "MAX_GRAPH_BANK",
    "ExportError",
    "ScoringGraph",
    "export_detector",
    "export_for_registry",
    "gaussian_kernel",
    "sha256_file",
]

EXPORT_FORMATS = ("onnx", "openvino")
EXPORT_VERSION = 1
# Bank vectors searched exactly inside the graph. The search costs positions x vectors x dim
# multiply-adds per image (1,024 x 4,096 x 152 = 0.6 G at 256 px): beyond this it is slower than
# FAISS's IVF in ``--backend torch`` and the graph file grows past ~10 MB of bank.
MAX_GRAPH_BANK = 16384
# The coreset an export keeps of a larger bank when asked for none (``--bank-size``): 5% of the
# cpu preset's 61,440 positions kept pixel AUROC to 0.998 of the full bank (docs/deploy.md).
DEFAULT_BANK_SIZE = 4096
METADATA = "export.json"
EXPORT_SUBDIR = "export"  # where promotion puts a detector's export, inside its folder


class ExportError(DetectorError):
    """A detector can't be exported, or an export folder is damaged or doesn't fit (names the
    file)."""


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_bank(det: Detector, bank_size: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The vectors the graph searches: the whole bank, or a greedy coreset of ``bank_size``.

    Raises :class:`ExportError` when the bank is larger than :data:`MAX_GRAPH_BANK` and no
    ``bank_size`` says how much of it to keep.
    """
    vectors = det.bank.vectors
    n, dim = vectors.shape
    if bank_size is None and n > MAX_GRAPH_BANK:
        raise ExportError(
            f"the bank holds {n:,} vectors of size {dim} ({vectors.nbytes / 2**20:.0f} MB); an "
            f"in-graph search over more than {MAX_GRAPH_BANK:,} is too slow and too large. Pass "
            f"--bank-size N (a greedy coreset; {DEFAULT_BANK_SIZE} is the default of promotion) "
            "or serve this detector with --backend torch (FAISS)"
        )
    if bank_size is not None and not 1 <= bank_size <= MAX_GRAPH_BANK:
        raise ExportError(f"--bank-size must be in 1..{MAX_GRAPH_BANK:,}, got {bank_size}")
    info = {"vectors": n, "dim": dim, "coreset": False}
    if bank_size is not None and bank_size < n:
        keep = np.sort(coreset_indices(vectors, bank_size, seed=det.config.train.seed))
        vectors = np.ascontiguousarray(vectors[keep])
        info = {"vectors": bank_size, "dim": dim, "coreset": True, "of": n}
    return vectors, info


def refuse_unexportable(det: Detector, where: str) -> None:
    ev = det.config.eval
    if ev.scoring != "dense":
        how = "GradCAM maps" if det.config.pretext.mode == "image" else "windows (crops)"
        raise ExportError(
            f"{where}: eval.scoring={ev.scoring} scores {how}; only eval.scoring=dense detectors "
            "export (the cpu preset). Serve this one with --backend torch, or retrain with "
            "--preset cpu"
        )


def reference(det: Detector, vectors: np.ndarray) -> Detector:
    """The torch detector that scores exactly as the export: the same bank vectors, searched
    exactly (flat index), with the detector's position statistics."""
    mem = det.config.memory
    bank = MemoryBank(
        vectors.shape[1], size=len(vectors), metric=mem.metric, backend="cpu", index="flat"
    )
    bank.add(vectors)  # already as the bank stores them: normalising unit rows changes nothing
    bank.positions = det.bank.positions
    return Detector(
        model=det.model, bank=bank, config=det.config, threshold=det.threshold, info=det.info
    )


def _check_images(size: int, seed: int, n: int = 4) -> np.ndarray:
    """Smooth random RGB images (B, S, S, 3) for the export-time check."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(n, 8, 8, 3)).astype(np.float32)
    big = F.interpolate(
        torch.as_tensor(low).permute(0, 3, 1, 2),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    )
    return big.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def export_detector(
    det: Detector,
    out_dir: str | Path,
    *,
    formats: tuple[str, ...] = ("onnx",),
    bank_size: int | None = None,
    source: str = "",
) -> Path:
    """Write ``det`` as a self-describing export folder (see the module docstring).

    The graph is checked against the torch detector with the same bank before the folder is
    finished; the largest differences are recorded in ``export.json`` (``check``).
    """
    out = Path(out_dir)
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ExportError(f"--format: {' | '.join(EXPORT_FORMATS)}, got {unknown[0]!r}")
    refuse_unexportable(det, source or "detector")
    vectors, bank_info = export_bank(det, bank_size)
    graph = ScoringGraph(det.model.cpu(), vectors, det.config, det.bank.positions).eval()
    size = det.size
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's notes on shape-dependent Python branches: the input size is fixed
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (dummy,),
            str(onnx_path),
            input_names=["image"],
            output_names=["score", "map"],
            dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}, "map": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    files = {"onnx": onnx_path.name}
    if "openvino" in formats:
        import openvino as ov

        # full precision: save_model halves weights to fp16 by default
        ov.save_model(
            ov.convert_model(str(onnx_path)), str(out / "model.xml"), compress_to_fp16=False
        )
        files["openvino"] = "model.xml"
    hashes = {p.name: sha256_file(p) for p in sorted(out.glob("model.*"))}
    meta = {
        "ssad_export": EXPORT_VERSION,
        "ssad_version": _version(),
        "source": source,
        "class_name": det.info.get("class_name", det.config.data.class_name),
        "category": det.info.get("category"),
        "threshold": det.threshold,
        "input": {
            "name": "image",
            "shape": ["batch", size, size, 3],
            "dtype": "uint8",
            "color": "RGB",
            "resize": f"to {size}x{size} with area interpolation (cv2.INTER_AREA), aspect "
            "ratio not kept; grayscale repeated to 3 channels, RGBA composited over black",
            "normalisation": "inside the graph (x / 255, then the backbone's mean and std)",
        },
        "outputs": {"score": ["batch"], "map": ["batch", size, size]},
        "bank": bank_info | {"metric": det.config.memory.metric, "k": graph.k},
        "files": files,
        "sha256": hashes,
        "config": asdict(det.config),
    }
    meta["check"] = _check(det, vectors, out, meta)
    (out / METADATA).write_text(json.dumps(meta, indent=2, default=str))
    (out / "README.txt").write_text(_readme(meta))
    return out


def _check(det: Detector, vectors: np.ndarray, out: Path, meta: dict[str, Any]) -> dict:
    """Largest |difference| of each runtime's outputs from the torch reference, on smooth
    random images; an export that disagrees by more than 1e-3 relative is not written."""
    from ssad.runtimes import open_runtime

    images = _check_images(det.size, det.config.train.seed)
    want_s, want_m = reference(det, vectors).predict(images)
    report = {"images": len(images)}
    for fmt in meta["files"]:
        got_s, got_m = open_runtime(out, fmt, meta).run(images)
        ds = float(np.abs(got_s - want_s).max())
        dm = float(np.abs(got_m - want_m).max())
        scale = float(np.abs(want_m).max()) or 1.0
        report[fmt] = {"max_abs_score": ds, "max_abs_map": dm, "max_map": scale}
        if dm > 1e-3 * scale:
            raise ExportError(
                f"{out / meta['files'][fmt]}: {fmt} maps differ from torch's by {dm:.3g} "
                f"(maps up to {scale:.3g}); the graph does not reproduce the detector"
            )
    return report


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ssad")
    except PackageNotFoundError:
        return "unknown"


def _readme(meta: dict[str, Any]) -> str:
    size = meta["input"]["shape"][1]
    th = meta["threshold"]
    return f"""ssad export: class {meta["class_name"]}, input {size}x{size} RGB uint8.

Run (no ssad needed; pip install onnxruntime opencv-python-headless numpy):

    import cv2, numpy as np, onnxruntime as ort
    rgb = cv2.cvtColor(cv2.imread("image.png"), cv2.COLOR_BGR2RGB)
    x = cv2.resize(rgb, ({size}, {size}), interpolation=cv2.INTER_AREA)[None]
    score, amap = ort.InferenceSession("model.onnx").run(None, {{"image": x}})
    anomalous = score[0] >= {th}   # the detector's threshold (export.json)

OpenVINO (model.xml, when exported): openvino.Core().compile_model("model.xml", "CPU")(x).
With ssad: ssad predict THIS_FOLDER IMAGES... --backend onnx|openvino --out DIR.
export.json holds the preprocessing, the bank, the training config and the SHA-256 of the graph.
"""


def export_for_registry(folder: str | Path) -> dict[str, str]:
    """Write the ONNX export of the detector in ``folder`` to ``folder/export`` (the registered
    model version carries it); a bank larger than :data:`MAX_GRAPH_BANK` is cut to a coreset of
    :data:`DEFAULT_BANK_SIZE`. Returns the model-version tags that describe it; a detector that
    can't be exported (windows scoring) is registered without one, and the tag says why."""
    folder = Path(folder)
    det = Detector.load(folder, device="cpu")
    try:
        refuse_unexportable(det, str(folder))
    except ExportError as exc:
        return {"ssad.export": f"none: {exc}"}
    n = len(det.bank)
    out = export_detector(
        det,
        folder / EXPORT_SUBDIR,
        formats=("onnx",),
        bank_size=DEFAULT_BANK_SIZE if n > MAX_GRAPH_BANK else None,
        source=str(folder),
    )
    meta = json.loads((out / METADATA).read_text())
    return {
        "ssad.export": f"{EXPORT_SUBDIR}/{meta['files']['onnx']}",
        "ssad.export_bank": f"{meta['bank']['vectors']} of {n} vectors",
        "ssad.export_max_abs_score": f"{meta['check']['onnx']['max_abs_score']:.2g}",
    }
