"""Trained model + memory bank + labelled images → scores, maps, metrics and artifacts."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssad.config import Config
from ssad.data.images import read_image, read_mask, to_tensor
from ssad.data.mvtec import Sample
from ssad.memory import MemoryBank
from ssad.metrics import compute_all, roc_points
from ssad.model import SSADNet, for_inference
from ssad.scoring import get_scorer

__all__ = ["LabelledImages", "Scored", "Validator", "evaluate", "load_samples", "score_images"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledImages:
    """Test images in memory: images (N, H, W, 3) uint8, labels (N,), masks (N, H, W) bool."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    names: list[str]


@dataclass(frozen=True)
class Scored:
    """scores (N,) in [0, 1]; maps (N, H, W) anomaly maps; embeddings (N, D) for t-SNE."""

    scores: np.ndarray
    maps: np.ndarray
    embeddings: np.ndarray


def load_samples(samples: Sequence[Sample], size: int) -> LabelledImages:
    images = np.stack([read_image(s.path, size) for s in samples])
    masks = np.stack([read_mask(s.mask, size) for s in samples])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    names = [f"{s.defect}/{s.path.stem}" for s in samples]
    return LabelledImages(images, labels, masks, names)


@torch.no_grad()
def score_images(
    model: SSADNet,
    bank: MemoryBank,
    images: np.ndarray,
    config: Config,
    *,
    device: torch.device,
    with_maps: bool = True,
) -> Scored:
    """Score RGB uint8 images (N, S, S, 3) of the model's input size, ``eval.batch_size`` at a
    time, with the config's scoring strategy (:func:`ssad.scoring.get_scorer`: windows, dense or
    GradCAM)."""
    model.eval()
    fast = for_inference(model)  # BatchNorm folded: the same function, ~2x faster on CPU
    scorer = get_scorer(config)
    scores, maps, embeds = [], [], []
    for i in range(0, len(images), config.eval.batch_size):
        x = to_tensor(images[i : i + config.eval.batch_size]).to(device)
        out = scorer.score(model, fast, bank, x, config, with_maps=with_maps)
        scores.append(out.scores)
        embeds.append(out.embeddings)
        if with_maps:
            maps.append(out.maps)
    size = images.shape[1]
    return Scored(
        scores=np.concatenate(scores).astype(np.float32),
        maps=np.concatenate(maps).astype(np.float32)
        if maps
        else np.zeros((0, size, size), np.float32),
        embeddings=np.concatenate(embeds),
    )


class Validator:
    """Per-epoch validation over fixed labelled images (loaded once): image/pixel AUROC, AUPRO.

    The scores of the latest call stay in ``last`` so the final artifacts need no second pass.
    """

    def __init__(self, config: Config, data: LabelledImages, *, device: torch.device) -> None:
        self.config, self.device, self.data = config, device, data
        self.last: Scored | None = None

    def __call__(self, model: SSADNet, bank: MemoryBank) -> dict[str, float]:
        d = self.data
        self.last = score_images(model, bank, d.images, self.config, device=self.device)
        return compute_all(
            labels=d.labels, scores=self.last.scores, masks=d.masks, maps=self.last.maps
        )


def evaluate(
    model: SSADNet,
    bank: MemoryBank,
    data: LabelledImages | Sequence[Sample],
    config: Config,
    *,
    device: torch.device,
    out_dir: str | Path | None = None,
) -> dict[str, float]:
    """Metrics on labelled images (or samples, loaded here); with ``out_dir`` also metrics.json,
    ROC curves, heatmaps and t-SNE."""
    if not isinstance(data, LabelledImages):
        data = load_samples(data, config.data.image_size)
    scored = score_images(model, bank, data.images, config, device=device)
    metrics = compute_all(
        labels=data.labels, scores=scored.scores, masks=data.masks, maps=scored.maps
    )
    if out_dir is not None:
        write_artifacts(Path(out_dir), data, scored, bank, metrics, config)
    return metrics


def write_artifacts(
    out: Path,
    data: LabelledImages,
    scored: Scored,
    bank: MemoryBank,
    metrics: dict[str, float],
    config: Config,
) -> None:
    from ssad import plots  # matplotlib only when artifacts are asked for

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    np.savez_compressed(
        out / "scores.npz", scores=scored.scores, labels=data.labels, names=np.array(data.names)
    )
    img_fpr, img_tpr = roc_points(data.labels, scored.scores)
    curves = {"image": (img_fpr, img_tpr, metrics["image_auroc"])}
    if data.masks.any():
        pix_fpr, pix_tpr = roc_points(data.masks.ravel(), scored.maps.ravel())
        curves["pixel"] = (pix_fpr, pix_tpr, metrics["pixel_auroc"])
    plots.roc_curve_plot(curves, out / "roc.png", title="ROC")
    if config.eval.heatmaps > 0:
        n = min(config.eval.heatmaps, len(data.names))
        pick = np.unique(np.linspace(0, len(data.names) - 1, n).round().astype(int))
        plots.heatmap_overlays(
            [data.images[i] for i in pick],
            [scored.maps[i] for i in pick],
            [data.masks[i] if data.labels[i] else None for i in pick],
            out / "heatmaps",
            names=[data.names[i] for i in pick],
            scores=[float(scored.scores[i]) for i in pick],
            vmax=float(scored.maps.max()) if scored.maps.size else None,
        )
    if config.eval.tsne:
        groups = {
            "bank": bank.vectors,
            "test good": scored.embeddings[data.labels == 0],
            "test defect": scored.embeddings[data.labels == 1],
        }
        try:
            plots.tsne_plot(groups, out / "tsne.png", seed=config.train.seed)
        except ValueError as exc:  # too few points for t-SNE
            log.warning("t-SNE skipped: %s", exc)
