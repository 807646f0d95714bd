"""The self-supervised pretext data set: every sample is drawn on the fly.

y = 0 normal (colour jitter only), y = 1 big convex-polygon defect, y = 2 thin rotated scar and,
with ``pretext.classes: 4``, y = 3 a thin smoothed 'line'; ``pretext.classes: 2`` drops the scar
(an ablation). Colour jitter is applied to every sample before the defect, so jitter itself
carries no label information. In patch mode a random ``patch_size`` crop is taken first and the
patch-mode area ranges apply.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ssad.config import Config, DefectsConfig
from ssad.data.defects import big_defect, line_defect, scar
from ssad.data.images import to_tensor

__all__ = ["PretextDataset", "color_jitter", "synthetic_anomalies"]


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast, saturation (factors in [1-s, 1+s]) and hue (±s/2 turn)."""
    if strength <= 0:
        return image
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    hue = rng.uniform(-strength / 2, strength / 2)
    x = image.astype(np.float32) * b
    x = (x - x.mean()) * c + x.mean()
    hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue * 180.0) % 180.0  # OpenCV hue range is [0, 180)
    hsv[..., 1] = np.clip(hsv[..., 1] * s, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


class PretextDataset(Dataset):
    """Pretext samples over one class's normal training images.

    Args:
        images: normal RGB uint8 images (H, W, 3), already at ``data.image_size``.
        config: the class model's config (defects, pretext).
        fg_masks: foreground mask (H, W) per image (the same array repeated for fixed objects);
            paste centres are drawn from it.
        sources: images of *other* classes for texture cut-paste fills (None: the image itself).
        length: samples per epoch (the train list repeated to at least ``train.min_samples``).
        seed: base seed; sample ``i`` of epoch ``e`` is reproducible from ``(seed, e, i)``.

    Returns per item: ``x`` (3, S, S) normalised float tensor and the label ``y`` (int).
    """

    def __init__(
        self,
        images: list[np.ndarray],
        *,
        config: Config,
        fg_masks: list[np.ndarray],
        sources: list[np.ndarray] | None = None,
        length: int,
        seed: int = 0,
    ) -> None:
        if len(images) != len(fg_masks):
            raise ValueError("one foreground mask per image is required")
        self.images, self.fg_masks, self.sources = images, fg_masks, sources or None
        self.cfg, self.length, self.seed, self.epoch = config, length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """(image, label, defect mask) for one index: the numpy form used by tests and plots."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        i = index % len(self.images)
        image, fg = self.images[i], self.fg_masks[i]
        pre, dcfg = self.cfg.pretext, self.cfg.defects
        patch_mode = pre.mode == "patch"
        if patch_mode:
            image, fg = _random_crop(image, fg, rng, pre.patch_size)
        source = None
        if self.sources is not None:
            source = self.sources[int(rng.integers(len(self.sources)))]
            if patch_mode:
                source = _random_crop(source, None, rng, pre.patch_size)[0]
        image = color_jitter(image, rng, pre.jitter)
        y = int(rng.integers(pre.classes))
        if y == 0:
            return image, 0, np.zeros(image.shape[:2], dtype=bool)
        if y == 1:
            out, mask = big_defect(
                image,
                rng,
                shape=dcfg.big,
                fills=dcfg.fills,
                center_mask=fg,
                source=source,
                patch_mode=patch_mode,
            )
        elif y == 2:
            out, mask = scar(
                image,
                rng,
                shape=dcfg.scar,
                max_angle=dcfg.scar_angle,
                fills=dcfg.fills,
                center_mask=fg,
                source=source,
                patch_mode=patch_mode,
            )
        else:
            out, mask = line_defect(image, rng, center_mask=fg)
        return out, y, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, y, _ = self.sample(index)
        return to_tensor(image)[0], y


def _random_crop(
    image: np.ndarray, fg: np.ndarray | None, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """A uniform random size×size crop (background included: test-time patch maps cover it too).

    The foreground crop becomes all ones when the crop misses the object.
    """
    h, w = image.shape[:2]
    top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    crop = image[top : top + size, left : left + size]
    if fg is None:
        return crop, None
    fcrop = fg[top : top + size, left : left + size]
    return crop, fcrop if fcrop.any() else np.ones_like(fcrop)


def synthetic_anomalies(
    images: list[np.ndarray],
    fg_masks: list[np.ndarray],
    *,
    seed: int,
    draws: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A labelled validation set from held-out normal images only: each image once as it is
    (label 0) and ``draws`` times with a big defect or a scar (alternating, image-mode ranges,
    label 1), each draw from its own seeded generator.

    The defect ranges are the seed's fixed defaults (``DefectsConfig()``): a study's validation
    set must not depend on the trial's own (searched) ``defects.*``, or a search over them
    would change what it is judged on.

    Returns images (N + N * draws, H, W, 3) uint8, labels, masks (…, H, W) bool.
    """
    d = DefectsConfig()
    out_images, labels, masks = [], [], []
    for i, (image, fg) in enumerate(zip(images, fg_masks)):
        out_images.append(image)
        labels.append(0)
        masks.append(np.zeros(image.shape[:2], dtype=bool))
        for j in range(draws):
            rng = np.random.default_rng([seed, 7919, i, j])
            if (i + j) % 2 == 0:
                defect, mask = big_defect(image, rng, shape=d.big, fills=d.fills, center_mask=fg)
            else:
                defect, mask = scar(
                    image, rng, shape=d.scar, max_angle=d.scar_angle, fills=d.fills, center_mask=fg
                )
            out_images.append(defect)
            labels.append(1)
            masks.append(mask)
    return np.stack(out_images), np.array(labels, dtype=np.int64), np.stack(masks)
