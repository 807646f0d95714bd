"""Run a detector on a backend: torch (the :class:`~ssad.detector.Detector` itself), or its
export (:mod:`ssad.export`) on onnxruntime or OpenVINO — one interface for ``ssad predict``.

An export is found in the folder given, or in its ``export/`` subfolder (where promotion puts
it). Before any image is scored the folder is checked: ``export.json`` readable, the graph file
present with the SHA-256 recorded at export, the graph's input the size the metadata names, and,
when the export sits in a detector folder, the detector's class and input size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ssad.data.images import prepare_image
from ssad.detector import Detector, DetectorError
from ssad.export import EXPORT_SUBDIR, sha256_file

__all__ = [
    "BACKENDS",
    "ExportRuntime",
    "Predictor",
    "export_folder",
    "load_predictor",
    "open_runtime",
]

BACKENDS = ("torch", "onnx", "openvino")


class Predictor(Protocol):
    """What ``ssad predict`` needs of a backend."""

    threshold: float | None
    size: int

    def predict(
        self, images: Sequence[np.ndarray | str | Path] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def decide(self, scores: np.ndarray) -> np.ndarray: ...


def _fail(path: Path, what: str) -> DetectorError:
    return DetectorError(f"{path}: {what}")


def export_folder(source: str | Path) -> Path:
    """The export folder of ``source``: itself when it holds ``export.json``, else its
    ``export/`` subfolder."""
    folder = Path(source)
    if (folder / "export.json").is_file():
        return folder
    if (folder / EXPORT_SUBDIR / "export.json").is_file():
        return folder / EXPORT_SUBDIR
    raise _fail(
        folder,
        "no export here (export.json, or export/export.json) — write one with "
        f"`ssad export {folder} --format onnx` (promotion attaches one), or use --backend torch",
    )


def read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / "export.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(path, f"not readable export metadata ({type(exc).__name__}: {exc})") from None
    for key in ("ssad_export", "input", "files", "sha256", "threshold"):
        if key not in (meta if isinstance(meta, dict) else {}):
            raise _fail(path, f"not ssad export metadata (no {key!r})")
    return meta


class ExportRuntime:
    """An export's graph on onnxruntime (``onnx``) or OpenVINO (``openvino``), CPU.

    ``run`` takes uint8 RGB images (B, S, S, 3) of the export's size.
    """

    def __init__(self, folder: Path, backend: str, meta: dict[str, Any]) -> None:
        files = dict(meta["files"])
        if backend == "openvino" and "openvino" not in files and "onnx" in files:
            files["openvino"] = files["onnx"]  # OpenVINO reads ONNX graphs as they are
        if backend not in files:
            have = ", ".join(files) or "none"
            raise _fail(
                folder / "export.json",
                f"no {backend} graph in this export (it has: {have}); "
                f"write one with `ssad export … --format {backend}`",
            )
        path = folder / files[backend]
        self.size = int(meta["input"]["shape"][1])
        self._verify(folder, path, meta)
        self.backend, self.path = backend, path
        try:
            self._run = self._onnx(path) if backend == "onnx" else self._openvino(path)
        except DetectorError:
            raise
        except Exception as exc:  # the runtime's own parse errors: many kinds, one meaning
            raise _fail(path, f"not a loadable {backend} graph ({type(exc).__name__})") from None

    @staticmethod
    def _verify(folder: Path, path: Path, meta: dict[str, Any]) -> None:
        """Every graph file present, unchanged since export (SHA-256)."""
        for name, want in meta["sha256"].items():
            f = folder / name
            if not f.is_file():
                raise _fail(f, "missing — the export folder is incomplete")
            if sha256_file(f) != want:
                raise _fail(f, "damaged: its SHA-256 differs from the one export.json recorded")

    def _onnx(self, path: Path):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shape = sess.get_inputs()[0].shape
        self._check_shape(path, shape)
        return lambda x: sess.run(None, {"image": x})

    def _openvino(self, path: Path):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        pshape = model.inputs[0].get_partial_shape()
        self._check_shape(path, [d.get_length() if d.is_static else "batch" for d in pshape])
        # f32 throughout: on CPUs with bf16 units OpenVINO would otherwise round to bf16
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> list[np.ndarray]:
            res = request.infer({0: x})
            return [res[compiled.outputs[0]], res[compiled.outputs[1]]]

        return run

    def _check_shape(self, path: Path, shape: list) -> None:
        dims = [str(d).strip() for d in shape]
        if len(dims) != 4 or dims[1:] != [str(self.size), str(self.size), "3"]:
            raise _fail(
                path,
                f"the graph takes images of shape {shape}, but export.json says "
                f"{self.size}x{self.size}x3 (the folder mixes two exports)",
            )

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(images, dtype=np.uint8)
        score, amap = self._run(x)
        return np.asarray(score, np.float32), np.asarray(amap, np.float32)


def open_runtime(folder: Path, backend: str, meta: dict[str, Any] | None = None) -> ExportRuntime:
    return ExportRuntime(folder, backend, meta or read_metadata(folder))


class ExportedDetector:
    """:class:`~ssad.detector.Detector`'s scoring interface over an export."""

    BATCH = 8  # images per graph call: the (positions x bank) distance matrix stays ~100 MB

    def __init__(self, folder: Path, backend: str) -> None:
        meta = read_metadata(folder)
        self.runtime = open_runtime(folder, backend, meta)
        self.meta, self.size, self.threshold = meta, self.runtime.size, meta["threshold"]
        self.info = {"class_name": meta.get("class_name"), "category": meta.get("category")}

    def predict(self, images) -> tuple[np.ndarray, np.ndarray]:
        batch = np.stack([prepare_image(im, self.size) for im in images])
        parts = [
            self.runtime.run(batch[i : i + self.BATCH]) for i in range(0, len(batch), self.BATCH)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def decide(self, scores: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            raise DetectorError("this export has no decision threshold")
        return np.asarray(scores) >= self.threshold


def _check_fits(folder: Path, export: ExportedDetector) -> None:
    """An export inside a detector folder must be that detector's: class and input size."""
    if folder == export.runtime.path.parent or not (folder / "config.yaml").is_file():
        return
    meta_path = export.runtime.path.parent / "export.json"
    info_path = folder / "detector.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    want = info.get("class_name")
    if want and export.meta.get("class_name") != want:
        raise _fail(
            meta_path,
            f"an export of class {export.meta.get('class_name')!r}, but "
            f"{info_path} is class {want!r}",
        )
    from ssad.config import load_config

    size = load_config(folder / "config.yaml", overrides={"model.weights": "none"}).data.image_size
    if size != export.size:
        raise _fail(
            meta_path,
            f"an export for {export.size} px images, but "
            f"{folder / 'config.yaml'} trains at {size} px",
        )


def load_predictor(source: str | Path, backend: str = "torch") -> Predictor:
    """A detector folder (or export folder, for onnx/openvino) → a predictor on ``backend``."""
    if backend not in BACKENDS:
        raise DetectorError(f"--backend: {' | '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return Detector.load(source)
    folder = Path(source)
    export = ExportedDetector(export_folder(folder), backend)
    _check_fits(folder, export)
    return export
