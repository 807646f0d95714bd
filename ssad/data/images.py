"""Image reading and tensor conversion shared by every stage.

Images are RGB ``uint8`` arrays of shape (H, W, 3); masks are ``bool`` arrays of shape (H, W).
Grayscale and RGBA files are converted; unreadable files raise :class:`ImageError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "denormalize",
    "read_image",
    "prepare_image",
    "read_mask",
    "resize_square",
    "to_rgb",
    "to_tensor",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image file is missing, corrupt or of an unsupported kind (message names the file)."""


def to_rgb(image: np.ndarray, *, name: str = "<array>") -> np.ndarray:
    """Convert a grayscale (H, W) / (H, W, 1), RGB or RGBA array to RGB uint8 (H, W, 3)."""
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image / 257).astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        # Composite over black so transparent pixels don't carry hidden colour.
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        return (image[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)
    raise ImageError(f"{name}: unsupported image shape {image.shape}")


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), optionally resized to (size, size)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    image = to_rgb(image, name=str(path))
    return np.ascontiguousarray(image if size is None else resize_square(image, size))


def prepare_image(image: np.ndarray | str | Path, size: int) -> np.ndarray:
    """An image file or array of any size and channel layout → RGB uint8 (size, size, 3), as
    every scoring backend takes it."""
    if isinstance(image, (str, Path)):
        return read_image(image, size)
    return resize_square(to_rgb(np.asarray(image)), size)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) to (size, size) with area interpolation; a no-op at that size already."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def read_mask(path: str | Path | None, size: int) -> np.ndarray:
    """Read a ground-truth mask as bool (size, size); ``None`` means an all-normal mask."""
    if path is None:
        return np.zeros((size, size), dtype=bool)
    path = Path(path)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if mask is None:
        raise ImageError(f"{path}: ground-truth mask missing or unreadable")
    if mask.shape != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return mask > 127


def to_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) or (B, H, W, 3) → float tensor (B, 3, H, W) in [0, 1].

    The model normalises its input as its backbone's weights expect (``SSADNet.features_at``).
    """
    batch = np.stack(images) if isinstance(images, list) else images
    if batch.ndim == 3:
        batch = batch[None]
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)


def denormalize(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: (B, 3, H, W) → uint8 (B, H, W, 3)."""
    out = (x.clamp(0, 1) * 255).round().byte()
    return out.permute(0, 2, 3, 1).cpu().numpy()
