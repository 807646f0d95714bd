"""Evaluation artifacts as PNG files: ROC curves, heatmap overlays, t-SNE of embeddings.

Matplotlib runs on the non-interactive "Agg" backend (set at import; no display needed) and is used
only for the two charts; heatmap overlays are composed with OpenCV, which is fast enough to write
hundreds of them. Every function creates the parent folder, writes its PNG(s) and returns the path.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # headless; must run before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

__all__ = ["heatmap_overlays", "overlay", "roc_curve_plot", "tsne_plot"]

_CONTOUR_RGB = (0, 255, 0)  # ground-truth outline
_TEXT_RGB = (255, 255, 255)
_BACKGROUND_RGB = (32, 32, 32)
_GAP = 4  # pixels between panels


# ---- ROC -----------------------------------------------------------------------------------------
def roc_curve_plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], out: Path, *, title: str
) -> Path:
    """Draw several ROC curves in one figure with the chance diagonal.

    Args:
        curves: name -> ``(fpr, tpr, auroc)``; fpr/tpr (P,) as from
            :func:`ssad.metrics.roc_points`. An empty curve (one-class data) only gets a legend
            entry with AUROC "n/a".
        out: PNG path to write.
        title: figure title.

    Returns:
        ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.0, 5.0), dpi=100)
    try:
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
        for name, (fpr, tpr, auroc) in curves.items():
            fpr, tpr = np.asarray(fpr), np.asarray(tpr)
            if fpr.shape != tpr.shape:
                raise ValueError(f"curve {name!r}: fpr {fpr.shape} and tpr {tpr.shape} differ")
            value = "n/a" if auroc is None or math.isnan(auroc) else f"{auroc:.3f}"
            ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUROC {value})")
        ax.set(
            xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate"
        )
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


# ---- heatmaps ------------------------------------------------------------------------------------
def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB (H, W, 3), got {image.shape}")
    return image


def _fit(array: np.ndarray, shape: tuple[int, int], *, nearest: bool) -> np.ndarray:
    """Resize a (h, w) map or mask to ``shape`` = (H, W) if it differs."""
    if array.shape == shape:
        return array
    if array.ndim != 2:
        raise ValueError(f"map/mask must be (H, W), got {array.shape}")
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


def _jet(values: np.ndarray, *, vmin: float, vmax: float) -> np.ndarray:
    """Map (H, W) values to RGB uint8 (H, W, 3) with the jet colormap on [vmin, vmax]."""
    scaled = np.clip((values.astype(np.float32) - vmin) / (vmax - vmin), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _draw_contour(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Outline the ground-truth regions of ``mask`` on a copy of ``image`` (H, W, 3)."""
    image = image.copy()
    if mask is None or not np.any(mask):
        return image
    mask = _fit((np.asarray(mask) != 0).astype(np.uint8), image.shape[:2], nearest=True)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(image.shape[:2]) / 256))
    cv2.drawContours(image, contours, -1, _CONTOUR_RGB, thickness)
    return image


def overlay(
    image: np.ndarray,
    amap: np.ndarray,
    *,
    vmax: float,
    vmin: float = 0.0,
    mask: np.ndarray | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a jet-coloured anomaly map onto an image, optionally outlining the ground truth.

    Args:
        image: (H, W, 3) RGB uint8 (grayscale (H, W) is accepted).
        amap: (h, w) anomaly map; resized bilinearly to (H, W) if it differs.
        vmax: map value drawn as the hottest colour (share it across images to compare them).
        vmin: map value drawn as the coldest colour.
        mask: optional (h, w) ground truth (nonzero = anomalous), outlined in green.
        alpha: weight of the heatmap in the blend, in [0, 1].

    Returns:
        (H, W, 3) RGB uint8 blended image.
    """
    if not vmax > vmin:
        raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = _check_image(image)
    amap = _fit(np.asarray(amap, dtype=np.float32), image.shape[:2], nearest=False)
    heat = _jet(amap, vmin=vmin, vmax=vmax)
    blended = cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)
    return _draw_contour(blended, mask)


def _safe_names(names: list[str]) -> list[str]:
    """File stems from free-form names ("crack/000.png" -> "crack_000"), made unique."""
    stems: list[str] = []
    seen: set[str] = set()
    for name in names:
        stem = re.sub(r"\.(png|jpe?g|bmp|tiff?|webp)$", "", str(name), flags=re.IGNORECASE)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-") or "image"
        unique, k = stem, 1
        while unique in seen:
            unique, k = f"{stem}_{k}", k + 1
        seen.add(unique)
        stems.append(unique)
    return stems


def _put_text_fitted(canvas: np.ndarray, text: str, origin_y: int, max_width: int) -> None:
    """Write ``text`` at the left of row ``origin_y``, shrinking the font until it fits."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    while scale > 0.3 and cv2.getTextSize(text, font, scale, 1)[0][0] > max_width:
        scale -= 0.05
    cv2.putText(canvas, text, (_GAP, origin_y), font, scale, _TEXT_RGB, 1, cv2.LINE_AA)


def _colorbar(height: int, *, vmin: float, vmax: float) -> np.ndarray:
    """A vertical (height, 48, 3) jet scale, hot at the top, labelled with vmax and vmin."""
    ramp = np.linspace(vmax, vmin, height, dtype=np.float32)[:, None].repeat(12, axis=1)
    bar = np.full((height, 48, 3), _BACKGROUND_RGB, dtype=np.uint8)
    bar[:, :12] = _jet(ramp, vmin=vmin, vmax=vmax)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(bar, f"{vmax:.2g}", (14, 10), font, 0.3, _TEXT_RGB, 1, cv2.LINE_AA)
    cv2.putText(bar, f"{vmin:.2g}", (14, height - 2), font, 0.3, _TEXT_RGB, 1, cv2.LINE_AA)
    return bar


def heatmap_overlays(
    images: list[np.ndarray],
    maps: list[np.ndarray],
    masks: list[np.ndarray | None],
    out_dir: Path,
    *,
    names: list[str],
    scores: list[float] | None = None,
    vmax: float | None = None,
) -> list[Path]:
    """Write one PNG per image: [image + GT outline | heatmap overlay + GT outline | colour scale].

    All maps share one colour scale, 0..``vmax``, so heat is comparable across images.

    Args:
        images: N RGB uint8 images (H_i, W_i, 3).
        maps: N anomaly maps (h_i, w_i), resized to their image if needed.
        masks: N ground-truth masks (nonzero = anomalous) or ``None`` (no outline drawn).
        out_dir: folder to write into (created).
        names: N names shown in the title and sanitised into unique file names.
        scores: optional N image scores shown in the title.
        vmax: top of the colour scale; default: the maximum over all maps.

    Returns:
        The N written PNG paths, in input order.
    """
    n = len(images)
    if not (len(maps) == len(masks) == len(names) == n) or (
        scores is not None and len(scores) != n
    ):
        raise ValueError(
            f"images ({n}), maps ({len(maps)}), masks ({len(masks)}), names ({len(names)})"
            + ("" if scores is None else f" and scores ({len(scores)})")
            + " must have the same length"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if vmax is None:
        vmax = max((float(np.max(m)) for m in maps if np.size(m)), default=1.0)
        vmax = vmax if vmax > 0 else 1.0  # all-zero maps: any positive scale shows them as cold
    paths = []
    for i, stem in enumerate(_safe_names(names)):
        image = _check_image(images[i])
        height, width = image.shape[:2]
        left = _draw_contour(image, masks[i])
        right = overlay(image, maps[i], vmax=vmax, mask=masks[i])
        title_h = 22
        canvas = np.full(
            (title_h + height, 2 * width + 48 + 2 * _GAP, 3), _BACKGROUND_RGB, dtype=np.uint8
        )
        canvas[title_h:, :width] = left
        canvas[title_h:, width + _GAP : 2 * width + _GAP] = right
        canvas[title_h:, 2 * width + 2 * _GAP :] = _colorbar(height, vmin=0.0, vmax=vmax)
        title = str(names[i]) if scores is None else f"{names[i]}  score {scores[i]:.3f}"
        _put_text_fitted(canvas, title, 15, canvas.shape[1] - 2 * _GAP)
        path = out_dir / f"{stem}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write the PNG")
        paths.append(path)
    return paths


# ---- t-SNE ---------------------------------------------------------------------------------------
def _subsample(groups: dict[str, np.ndarray], max_points: int, seed: int) -> dict[str, np.ndarray]:
    """Keep about ``max_points`` rows in total, proportionally; no non-empty group vanishes."""
    total = sum(len(g) for g in groups.values())
    if total <= max_points:
        return groups
    rng = np.random.default_rng(seed)
    kept = {}
    for name, g in groups.items():
        quota = min(len(g), max(1 if len(g) else 0, len(g) * max_points // total))
        kept[name] = g[np.sort(rng.choice(len(g), size=quota, replace=False))]
    return kept


def tsne_plot(
    groups: dict[str, np.ndarray], out: Path, *, seed: int = 0, max_points: int = 1000
) -> Path:
    """2-D t-SNE scatter of embedding groups (e.g. memory bank vs. good vs. defective test images).

    Args:
        groups: name -> (N_i, D) embeddings; all groups share D. Empty groups are skipped.
        out: PNG path to write.
        seed: seed of the subsample, the PCA and t-SNE (same input -> same picture).
        max_points: about how many points to embed in total, split proportionally over the groups
            (every non-empty group keeps at least one).

    Returns:
        ``out``.

    Raises:
        ValueError: fewer than 3 points in total, or groups of different dimension.
    """
    arrays = {name: np.asarray(g, dtype=np.float64) for name, g in groups.items()}
    for name, g in arrays.items():
        if g.ndim != 2:
            raise ValueError(f"group {name!r}: embeddings must be (N, D), got {g.shape}")
    arrays = {name: g for name, g in arrays.items() if len(g)}
    if len({g.shape[1] for g in arrays.values()}) > 1:
        dims = {name: g.shape[1] for name, g in arrays.items()}
        raise ValueError(f"groups differ in embedding dimension: {dims}")
    arrays = _subsample(arrays, max_points, seed)
    n = sum(len(g) for g in arrays.values())
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points in total, got {n}")
    x = np.concatenate(list(arrays.values()))
    if x.shape[1] > 50 and n > 50:
        # Standard t-SNE preprocessing: PCA to 50 dimensions (faster, less noise).
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    tsne = TSNE(
        n_components=2,
        perplexity=float(min(30, n - 1)),
        init="pca" if x.shape[1] >= 2 else "random",
        random_state=seed,
    )
    xy = tsne.fit_transform(x)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.0, 5.0), dpi=100)
    try:
        start = 0
        for name, g in arrays.items():
            part = xy[start : start + len(g)]
            start += len(g)
            ax.scatter(part[:, 0], part[:, 1], s=8, alpha=0.7, label=f"{name} ({len(g)})")
        ax.set_title(f"t-SNE of embeddings ({n} points)")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=8, markerscale=2)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
