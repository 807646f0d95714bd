"""Bad input files: each is refused by :func:`check_files` naming the file, or converted as documented.

Real files on disk, written the way a broken data set would hold them (zero bytes, cut off,
text with an image suffix, 16-bit, a few pixels, a header claiming billions of pixels, masks of
the wrong size). The study preflight runs the same check before anything launches
(tests/study/test_faults.py).
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssad.data.images import read_image
from ssad.data.mvtec import DatasetError, check_files, load_class


def _png(path: Path, size: int = 16, *, value: int = 120, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), value, dtype))
    return path


def make_class(root: Path, name: str = "bottle", size: int = 16) -> Path:
    """``root/name``: 3 train, 2 good and 2 'crack' test images with masks (MVTec layout)."""
    folder = root / name
    for i in range(3):
        _png(folder / "train" / "good" / f"{i:03d}.png", size, value=100 + i)
    for i in range(2):
        _png(folder / "test" / "good" / f"{i:03d}.png", size, value=90 + i)
        _png(folder / "test" / "crack" / f"{i:03d}.png", size, value=30 + i)
        mask = np.zeros((size, size), np.uint8)
        mask[2:6, 2:6] = 255
        (folder / "ground_truth" / "crack").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "ground_truth" / "crack" / f"{i:03d}_mask.png"), mask)
    return folder


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _zero_byte(folder: Path) -> Path:
    path = folder / "train" / "good" / "001.png"
    path.write_bytes(b"")
    return path


def _truncated(folder: Path) -> Path:
    path = folder / "test" / "crack" / "001.png"
    path.write_bytes(path.read_bytes()[:60])
    return path


def _text_as_png(folder: Path) -> Path:
    path = folder / "train" / "good" / "readme.png"
    path.write_text("these are not pixels")
    return path


def _tiny(folder: Path) -> Path:
    return _png(folder / "test" / "good" / "001.png", 4)


def _huge(folder: Path) -> Path:
    path = folder / "train" / "good" / "002.png"
    _png_header(path, 9000, 9000)  # 81 MP: over the 64 MP limit
    return path


def _bomb(folder: Path) -> Path:
    path = folder / "train" / "good" / "002.png"
    _png_header(path, 100_000, 100_000)  # 10 GP
    return path


def _mask_wrong_size(folder: Path) -> Path:
    path = folder / "ground_truth" / "crack" / "000_mask.png"
    cv2.imwrite(str(path), np.zeros((8, 8), np.uint8))
    return path


def _mask_corrupt(folder: Path) -> Path:
    path = folder / "ground_truth" / "crack" / "001_mask.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return path


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (_zero_byte, "empty image file (0 bytes)"),
        (_truncated, "corrupt or truncated image"),
        (_text_as_png, "not an image file"),
        (_tiny, "below the 8 px minimum"),
        (_huge, "pixel limit"),
        (_bomb, "pixel limit"),
        (_mask_wrong_size, "mask is 8x8 px but its image"),
        (_mask_corrupt, "mask"),
    ],
    ids=["zero-byte", "truncated", "non-image", "tiny", "huge", "bomb", "mask-size", "mask-bad"],
)
def test_bad_files_are_refused_naming_the_file(tmp_path: Path, damage, fragment: str) -> None:
    folder = make_class(tmp_path)
    bad = damage(folder)
    data = load_class(tmp_path, "bottle")  # the layout is fine: only the files are bad
    with pytest.raises(DatasetError) as info:
        check_files(data)
    msg = str(info.value)
    assert str(bad) in msg and fragment in msg, msg


def test_documented_conversions(tmp_path: Path) -> None:
    """Other suffixes are skipped; 16-bit and grayscale are converted; small images upscaled."""
    folder = make_class(tmp_path)
    (folder / "train" / "good" / "notes.txt").write_text("not an image")
    (folder / "train" / "good" / "Thumbs.db").write_bytes(b"\0\1\2")
    deep = _png(folder / "train" / "good" / "003.png", 16, value=40000, dtype=np.uint16)
    gray = folder / "train" / "good" / "004.png"
    cv2.imwrite(str(gray), np.full((16, 16), 77, np.uint8))
    data = load_class(tmp_path, "bottle")
    check_files(data)
    assert [p.name for p in data.train] == ["000.png", "001.png", "002.png", "003.png", "004.png"]
    image = read_image(deep, size=32)
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    assert int(image[0, 0, 0]) == 40000 // 257
    assert read_image(gray).shape == (16, 16, 3)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda root, f: shutil.rmtree(root), "data root not found"),
        (lambda root, f: [p.unlink() for p in (f / "train" / "good").iterdir()], "found 0"),
        (lambda root, f: shutil.rmtree(f / "test"), "missing folder"),
        (lambda root, f: shutil.rmtree(f / "train"), "missing folder"),
        (lambda root, f: (f / "ground_truth" / "crack" / "001_mask.png").unlink(), "mask missing"),
    ],
    ids=["root-missing", "empty-train-good", "no-test-folder", "not-mvtec-shaped", "mask-missing"],
)
def test_bad_layouts_are_refused(tmp_path: Path, damage, fragment: str) -> None:
    root = tmp_path / "data"
    folder = make_class(root)
    damage(root, folder)
    with pytest.raises(DatasetError, match=fragment) as info:
        load_class(root, "bottle")
    assert str(root) in str(info.value)
