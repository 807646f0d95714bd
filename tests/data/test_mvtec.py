"""MVTec AD layout loader on tiny hand-made folders: indexing, layout errors, class kinds, splits."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ssad.data.mvtec import (
    DatasetError,
    Sample,
    class_info,
    fingerprint,
    list_classes,
    load_class,
    split_test,
)

DEFECTS = {"crack": 3, "hole": 2}


def _png(path: Path, value: int = 128, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))


def make_class(
    root: Path,
    name: str = "widget",
    *,
    n_train: int = 3,
    n_good: int = 2,
    defects: dict[str, int] | None = None,
) -> Path:
    """``root/name`` in the MVTec AD layout with flat grey images and square masks."""
    folder = root / name
    for i in range(n_train):
        _png(folder / "train" / "good" / f"{i:03d}.png", 100 + i)
    for i in range(n_good):
        _png(folder / "test" / "good" / f"{i:03d}.png", 90 + i)
    for defect, count in (DEFECTS if defects is None else defects).items():
        for i in range(count):
            _png(folder / "test" / defect / f"{i:03d}.png", 30 + i)
            mask = np.zeros((16, 16), np.uint8)
            mask[4:8, 4:8] = 255
            (folder / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "ground_truth" / defect / f"{i:03d}_mask.png"), mask)
    return folder


def test_load_class_indexes_train_test_and_masks(tmp_path: Path) -> None:
    make_class(tmp_path, "bottle")
    (tmp_path / "bottle" / "train" / "good" / "notes.txt").write_text("not an image")
    data = load_class(tmp_path, "bottle")
    assert data.name == "bottle" and data.root == tmp_path
    assert (data.category, data.placement) == ("object", "fixed")  # MVTec table
    assert [p.name for p in data.train] == ["000.png", "001.png", "002.png"]
    assert len(data.test) == 2 + 3 + 2
    by_defect = Counter(s.defect for s in data.test)
    assert by_defect == {"good": 2, "crack": 3, "hole": 2}
    for s in data.test:
        if s.defect == "good":
            assert s.label == 0 and s.mask is None
        else:
            assert s.label == 1
            assert (
                s.mask
                == tmp_path / "bottle" / "ground_truth" / s.defect / f"{s.path.stem}_mask.png"
            )
            assert s.mask.is_file()


def test_explicit_category_and_placement_override_table(tmp_path: Path) -> None:
    make_class(tmp_path, "bottle")
    data = load_class(tmp_path, "bottle", category="texture", placement="moving")
    assert (data.category, data.placement) == ("texture", "moving")


def test_missing_class_folder_lists_available(tmp_path: Path) -> None:
    make_class(tmp_path, "bottle")
    make_class(tmp_path, "screw")
    with pytest.raises(DatasetError) as err:
        load_class(tmp_path, "bottel")
    msg = str(err.value)
    assert str(tmp_path / "bottel") in msg
    assert "bottle" in msg and "screw" in msg
    assert list_classes(tmp_path) == ["bottle", "screw"]


def test_missing_data_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_class(tmp_path / "nowhere", "bottle")
    with pytest.raises(DatasetError, match="data root not found"):
        list_classes(tmp_path / "nowhere")


def test_missing_train_good(tmp_path: Path) -> None:
    folder = make_class(tmp_path, "bottle")
    shutil.rmtree(folder / "train" / "good")
    with pytest.raises(DatasetError) as err:
        load_class(tmp_path, "bottle")
    assert str(folder / "train" / "good") in str(err.value)


def test_missing_test_folder(tmp_path: Path) -> None:
    folder = make_class(tmp_path, "bottle")
    shutil.rmtree(folder / "test")
    with pytest.raises(DatasetError, match=str(folder / "test")):
        load_class(tmp_path, "bottle")


def test_missing_mask_names_image_and_mask(tmp_path: Path) -> None:
    folder = make_class(tmp_path, "bottle")
    mask = folder / "ground_truth" / "hole" / "001_mask.png"
    mask.unlink()
    with pytest.raises(DatasetError) as err:
        load_class(tmp_path, "bottle")
    msg = str(err.value)
    assert str(folder / "test" / "hole" / "001.png") in msg
    assert str(mask) in msg


def test_test_set_without_defects(tmp_path: Path) -> None:
    folder = make_class(tmp_path, "bottle", defects={})
    with pytest.raises(DatasetError, match="both good and defective") as err:
        load_class(tmp_path, "bottle")
    assert str(folder / "test") in str(err.value)


def test_too_few_training_images(tmp_path: Path) -> None:
    make_class(tmp_path, "bottle", n_train=1)
    with pytest.raises(DatasetError, match="at least 2 training images"):
        load_class(tmp_path, "bottle")


def test_class_info_from_yaml_then_mvtec_table(tmp_path: Path) -> None:
    (tmp_path / "ssad_classes.yaml").write_text(
        yaml.safe_dump(
            {
                "brick": {"category": "texture", "placement": "fixed"},
                "hex_nut": {"category": "object", "placement": "moving"},
                # the file wins over the MVTec table for a name in both
                "bottle": {"category": "object", "placement": "moving"},
            }
        )
    )
    assert class_info(tmp_path, "brick") == ("texture", "fixed")
    assert class_info(tmp_path, "hex_nut") == ("object", "moving")
    assert class_info(tmp_path, "bottle") == ("object", "moving")
    assert class_info(tmp_path, "carpet") == ("texture", "fixed")  # not in the file: table


def test_class_info_mvtec_table() -> None:
    root = Path("/nonexistent-root")
    for name in ("hazelnut", "screw", "metal_nut"):
        assert class_info(root, name) == ("object", "moving")
    for name in ("bottle", "cable", "capsule", "pill", "toothbrush", "transistor", "zipper"):
        assert class_info(root, name) == ("object", "fixed")
    for name in ("carpet", "grid", "leather", "tile", "wood"):
        assert class_info(root, name) == ("texture", "fixed")


def test_class_info_unknown_class(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"data\.category"):
        class_info(tmp_path, "widget")
    make_class(tmp_path, "widget")
    with pytest.raises(DatasetError, match="widget"):
        load_class(tmp_path, "widget")
    data = load_class(tmp_path, "widget", category="object", placement="fixed")
    assert data.category == "object"


def _samples(counts: dict[str, int]) -> list[Sample]:
    out = []
    for defect, n in counts.items():
        for i in range(n):
            label = 0 if defect == "good" else 1
            out.append(Sample(Path(f"/d/{defect}/{i:03d}.png"), label, defect, None))
    return out


SPLIT_COUNTS = {"good": 9, "crack": 5, "hole": 2, "stain": 3, "single": 1}


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.8])
def test_split_test_stratified_disjoint_covering(fraction: float) -> None:
    samples = _samples(SPLIT_COUNTS)
    val, test = split_test(samples, val_fraction=fraction, seed=3)
    assert not set(val) & set(test)
    assert sorted(val + test, key=str) == sorted(samples, key=str)
    nv, nt = Counter(s.defect for s in val), Counter(s.defect for s in test)
    for defect, n in SPLIT_COUNTS.items():
        assert nv[defect] + nt[defect] == n
        if n >= 2:
            assert nv[defect] >= 1 and nt[defect] >= 1, defect
            assert nv[defect] == min(max(round(n * fraction), 1), n - 1)


def test_split_test_deterministic_per_seed() -> None:
    samples = _samples(SPLIT_COUNTS)
    a = split_test(samples, seed=1)
    assert split_test(list(reversed(samples)), seed=1) == a  # input order does not matter
    others = [split_test(samples, seed=s)[0] for s in range(2, 8)]
    assert any({x.path for x in o} != {x.path for x in a[0]} for o in others)


def test_fingerprint_changes_with_files(tmp_path: Path) -> None:
    folder = make_class(tmp_path, "bottle")
    first = fingerprint(load_class(tmp_path, "bottle"))
    assert first == fingerprint(load_class(tmp_path, "bottle"))
    assert len(first) == 12
    # A file that changes size changes the fingerprint.
    big = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "train" / "good" / "001.png"), big)
    second = fingerprint(load_class(tmp_path, "bottle"))
    assert second != first
    # So does an added file.
    _png(folder / "test" / "good" / "009.png")
    assert fingerprint(load_class(tmp_path, "bottle")) not in (first, second)
