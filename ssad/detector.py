"""Detector: the API users embed — load a trained class model, score images.

A saved detector is a folder::

    config.yaml     resolved config (``ssad train --config`` accepts it as is)
    model.pt        state dict (loaded with ``torch.load(weights_only=True)``)
    bank.npy        memory bank vectors (N, D), the bank built during training
    bank_positions.npy  per-position normal-score statistics (2, h, w), with eval.position_norm
    detector.json   class, category, placement, decision threshold
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssad.config import Config, load_config
from ssad.data.images import prepare_image
from ssad.evaluate import score_images
from ssad.memory import MemoryBank, positions_path
from ssad.model import SSADNet, for_inference, upgrade_state_dict
from ssad.scoring import get_scorer
from ssad.train import build_model, resolve_device

__all__ = ["Detector", "DetectorError"]

REGISTRY_PREFIXES = ("models:/", "runs:/")


class DetectorError(ValueError):
    """A detector folder is missing, incomplete or damaged (names the file)."""


def _read(path: Path, what: str, load: Callable[[], Any]) -> Any:
    """``load()``, or a one-line :class:`DetectorError` naming ``path`` and what is wrong."""
    try:
        return load()
    except DetectorError:
        raise
    except Exception as exc:  # torch, numpy and pickle errors: many kinds, all meaning "damaged"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DetectorError(
            f"{path}: {what} — damaged or not ssad's ({type(exc).__name__}: {detail[:200]})"
        ) from None


class Detector:
    """A trained class model with its memory bank.

    Args:
        model: the trained network.
        bank: memory bank of normal embeddings.
        config: the resolved config the model was trained with.
        threshold: image-score decision threshold (chosen on the validation split), or None.
        info: free-form metadata (class name, category, placement, metrics).
    """

    def __init__(
        self,
        *,
        model: SSADNet,
        bank: MemoryBank,
        config: Config,
        threshold: float | None = None,
        info: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._scorer: SSADNet | None = None  # the BatchNorm-folded copy, made at first predict
        self.bank, self.config, self.threshold = bank, config, threshold
        self.info = dict(info or {})

    @property
    def size(self) -> int:
        return self.config.data.image_size

    # ---- scoring -----------------------------------------------------------------------------
    def predict(
        self, images: Sequence[np.ndarray | str | Path] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score images (RGB arrays of any size, or file paths) → scores (N,), maps (N, S, S).

        Grayscale and RGBA inputs are converted; images are resized to the model's input size.
        """
        batch = np.stack([prepare_image(im, self.size) for im in images])
        if self._scorer is None:
            self._scorer = for_inference(self.model)
        scored = score_images(self._scorer, self.bank, batch, self.config, device=self.device)
        return scored.scores, scored.maps

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """True where a score exceeds the threshold (raises when the detector has none)."""
        if self.threshold is None:
            raise DetectorError(
                "this detector has no decision threshold (train it with a validation split)"
            )
        return np.asarray(scores) >= self.threshold

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.config.save(out / "config.yaml")
        torch.save(
            {k: v.detach().cpu() for k, v in self.model.state_dict().items()}, out / "model.pt"
        )
        self.bank.save(out / "bank.npy")
        meta = {**self.info, "threshold": self.threshold}
        (out / "detector.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, source: str | Path, *, device: str = "auto") -> Detector:
        """Load from a detector folder, or a model URI such as ``models:/ssad-bottle@champion``.

        URIs are resolved to a folder by the resolver a store adapter registered in
        :mod:`ssad.resolve` (``import ssad.study.tracking`` registers MLflow's ``models:/`` and
        ``runs:/``); the core itself never imports the study layer or MLflow.
        """
        if str(source).startswith(REGISTRY_PREFIXES):
            from ssad.resolve import resolve_uri

            source = resolve_uri(str(source))
        folder = Path(source)
        for name in ("config.yaml", "model.pt", "bank.npy"):
            if not (folder / name).is_file():
                raise DetectorError(f"{folder / name}: missing — not a saved ssad detector folder")
        # Weights are in model.pt: don't require the original backbone weights file to exist.
        config = load_config(folder / "config.yaml", overrides={"model.weights": "none"})
        torch_device = resolve_device(device)
        model = build_model(config)
        state = _read(
            folder / "model.pt",
            "not a readable state dict",
            lambda: torch.load(folder / "model.pt", map_location="cpu", weights_only=True),
        )
        _read(
            folder / "model.pt",
            f"not the weights of this config's model (model.backbone={config.model.backbone})",
            lambda: model.load_state_dict(upgrade_state_dict(state)),
        )
        bank = _read(
            folder / "bank.npy",
            "not a bank of vectors (a float array (N, D) in .npy format)",
            lambda: MemoryBank.load(
                folder / "bank.npy",
                size=config.memory.bank_size,
                metric=config.memory.metric,
                backend=config.memory.backend,
                device=(torch_device.index or 0) if torch_device.type == "cuda" else 0,
                index=config.memory.index,
            ),
        )
        want = get_scorer(config).bank_dim(model, config)
        if bank.dim != want:
            raise DetectorError(
                f"{folder / 'bank.npy'}: vectors of size {bank.dim}, but config.yaml "
                f"(memory.feature={config.memory.feature}, eval.scoring={config.eval.scoring}) "
                f"scores vectors of size {want}"
            )
        positions = positions_path(folder / "bank.npy")
        if config.eval.position_norm != "none" and bank.positions is None:
            raise DetectorError(
                f"{positions}: missing — config.yaml sets eval.position_norm="
                f"{config.eval.position_norm}, which scores with the bank's position statistics"
            )
        meta_path = folder / "detector.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        threshold = meta.pop("threshold", None)
        return cls(
            model=model,
            bank=bank,
            config=config,
            threshold=threshold,
            info=meta,
            device=torch_device,
        )
