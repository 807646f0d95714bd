"""Image reading: formats converted to RGB uint8, resizing, unreadable files, masks, tensors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssad.data.images import (
    ImageError,
    denormalize,
    read_image,
    read_mask,
    to_rgb,
    to_tensor,
)


def _rgb(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_keeps_channel_order(tmp_path: Path) -> None:
    rgb = _rgb()
    path = tmp_path / "rgb.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_png(tmp_path: Path) -> None:
    gray = _rgb()[:, :, 0]
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), gray)
    out = read_image(path)
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_png_is_composited_over_black(tmp_path: Path) -> None:
    rgb = np.full((4, 4, 3), (200, 100, 50), np.uint8)
    alpha = np.array([[0, 255, 128, 64]] * 4, np.uint8)
    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha])
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), bgra)
    out = read_image(path)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    expected = np.round(rgb[None].astype(np.float32) * (alpha[..., None] / 255.0)).astype(np.uint8)
    np.testing.assert_allclose(out.astype(int), expected[0].astype(int), atol=1)
    assert (out[:, 0] == 0).all()  # fully transparent → black
    np.testing.assert_array_equal(out[:, 1], rgb[:, 1])  # opaque → unchanged (and RGB, not BGR)


def test_16bit_png(tmp_path: Path) -> None:
    rgb16 = _rgb().astype(np.uint16) * 257  # full 16-bit range
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _rgb())


def test_16bit_grayscale_png(tmp_path: Path) -> None:
    gray16 = np.array([[0, 65535], [257 * 10, 257 * 200]], np.uint16)
    path = tmp_path / "gray16.png"
    cv2.imwrite(str(path), gray16)
    out = read_image(path)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 1], [[0, 255], [10, 200]])


def test_resize(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), _rgb(40, 30))
    out = read_image(path, size=16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((40, 40, 3), 77, np.uint8))
    np.testing.assert_array_equal(read_image(flat, size=8), np.full((8, 8, 3), 77, np.uint8))


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("corrupt.png", np.random.default_rng(0).bytes(500), "not a readable image"),
        ("empty.png", b"", "not a readable image"),
        ("truncated.png", None, "not a readable image"),
    ],
)
def test_unreadable_files_name_the_file(
    tmp_path: Path, name: str, content: bytes | None, match: str
) -> None:
    path = tmp_path / name
    if content is None:  # a PNG signature with nothing behind it
        _ok, buf = cv2.imencode(".png", _rgb())
        content = buf.tobytes()[:20]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=match) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.png"
    with pytest.raises(ImageError, match="no such image file") as err:
        read_image(path)
    assert str(path) in str(err.value)
    with pytest.raises(ImageError):
        read_image(tmp_path)  # a folder is not an image


def test_to_rgb_rejects_odd_shapes() -> None:
    with pytest.raises(ImageError, match="unsupported image shape"):
        to_rgb(np.zeros((4, 4, 2), np.uint8), name="two.png")
    np.testing.assert_array_equal(to_rgb(np.ones((2, 2), np.float32)), np.full((2, 2, 3), 255))


def test_read_mask_thresholds_and_resizes_nearest(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255
    mask[0, 0] = 100  # below the threshold
    mask[1, 1] = 200  # above it
    path = tmp_path / "m_mask.png"
    cv2.imwrite(str(path), mask)
    same = read_mask(path, 8)
    assert same.dtype == bool and same.shape == (8, 8)
    np.testing.assert_array_equal(same, mask > 127)
    up = read_mask(path, 16)
    assert up.shape == (16, 16)
    np.testing.assert_array_equal(
        up, np.kron(mask > 127, np.ones((2, 2), bool))
    )  # nearest: no blur
    down = read_mask(path, 4)
    assert down.dtype == bool
    assert set(np.unique(down)) <= {False, True}
    assert down[:, 2:].all() and not down[:, :2].any()


def test_read_mask_none_and_missing(tmp_path: Path) -> None:
    none = read_mask(None, 5)
    assert none.shape == (5, 5) and none.dtype == bool and not none.any()
    path = tmp_path / "gone_mask.png"
    with pytest.raises(ImageError) as err:
        read_mask(path, 5)
    assert str(path) in str(err.value)


def test_to_tensor_and_denormalize_round_trip() -> None:
    batch = np.stack([_rgb(8, 8, seed=1), _rgb(8, 8, seed=2)])
    x = to_tensor(batch)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    np.testing.assert_array_equal(denormalize(x), batch)
    # [0, 1], channel by channel (the model normalises for its backbone)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), batch[0, 0, 0] / 255.0, rtol=1e-6)
    single = to_tensor(batch[0])
    assert single.shape == (1, 3, 8, 8)
    assert torch.equal(single[0], x[0])
    assert torch.equal(to_tensor([batch[0], batch[1]]), x)
