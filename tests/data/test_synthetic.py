"""Tests of the synthetic MVTec-layout data set generator (small images, few of each)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ssad.data.images import read_image, read_mask
from ssad.data.synthetic import DEFECT_TYPES, SYNTHETIC_CLASSES, generate, make_sample

SIZE = 64
COUNTS = {"n_train": 3, "n_test_good": 2, "n_test_per_defect": 2}
OBJECTS = [name for name, (category, _) in SYNTHETIC_CLASSES.items() if category == "object"]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "data", seed=3, size=SIZE, **COUNTS)


def test_class_mix() -> None:
    categories = [category for category, _ in SYNTHETIC_CLASSES.values()]
    placements = {name: placement for name, (_, placement) in SYNTHETIC_CLASSES.items()}
    assert categories.count("texture") >= 2
    assert categories.count("object") >= 3
    assert set(categories) == {"texture", "object"}
    assert set(placements.values()) == {"fixed", "moving"}
    assert any(placements[name] == "moving" for name in OBJECTS)
    assert set(DEFECT_TYPES) == set(SYNTHETIC_CLASSES)
    for defects in DEFECT_TYPES.values():
        assert 2 <= len(defects) <= 4
        assert "good" not in defects


def test_layout_is_exactly_mvtec(dataset: Path) -> None:
    expected = {"ssad_classes.yaml"}
    for name, defects in DEFECT_TYPES.items():
        expected |= {f"{name}/train/good/{i:03d}.png" for i in range(COUNTS["n_train"])}
        expected |= {f"{name}/test/good/{i:03d}.png" for i in range(COUNTS["n_test_good"])}
        for defect in defects:
            for i in range(COUNTS["n_test_per_defect"]):
                expected |= {f"{name}/test/{defect}/{i:03d}.png"}
                expected |= {f"{name}/ground_truth/{defect}/{i:03d}_mask.png"}
    assert set(_files(dataset)) == expected


def test_class_index_file(dataset: Path) -> None:
    index = yaml.safe_load((dataset / "ssad_classes.yaml").read_text())
    assert index == {
        name: {"category": category, "placement": placement}
        for name, (category, placement) in SYNTHETIC_CLASSES.items()
    }


def test_images_are_readable_rgb_of_the_requested_size(dataset: Path) -> None:
    images = [p for p in dataset.rglob("*.png") if "ground_truth" not in p.parts]
    assert images
    for path in images:
        image = read_image(path)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8


def test_masks_are_binary_nonempty_and_small(dataset: Path) -> None:
    masks = sorted(dataset.rglob("*_mask.png"))
    assert len(masks) == sum(map(len, DEFECT_TYPES.values())) * COUNTS["n_test_per_defect"]
    for path in masks:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.shape == (SIZE, SIZE) and raw.dtype == np.uint8
        assert set(np.unique(raw)) <= {0, 255}
        mask = read_mask(path, SIZE)
        assert 0 < mask.mean() < 0.2, path


def test_good_images_differ_but_look_alike(dataset: Path) -> None:
    for name in SYNTHETIC_CLASSES:
        images = [read_image(p).astype(float) for p in sorted(dataset.glob(f"{name}/train/good/*"))]
        assert not np.array_equal(images[0], images[1])
        means = np.array([image.mean(axis=(0, 1)) for image in images])
        assert np.ptp(means, axis=0).max() < 30, name  # same distribution: similar colours


def test_make_sample_is_what_generate_writes(dataset: Path) -> None:
    for name, defects in DEFECT_TYPES.items():
        sample = make_sample(name, defect=defects[-1], index=1, seed=3, size=SIZE)
        assert np.array_equal(
            sample.image, read_image(dataset / name / "test" / defects[-1] / "001.png")
        )
        truth = read_mask(dataset / name / "ground_truth" / defects[-1] / "001_mask.png", SIZE)
        assert np.array_equal(sample.mask, truth)
        good = make_sample(name, split="train", index=2, seed=3, size=SIZE)
        assert np.array_equal(good.image, read_image(dataset / name / "train/good/002.png"))
        assert not good.mask.any()


def test_same_seed_is_byte_identical_and_subsets_match(dataset: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", seed=3, size=SIZE, **COUNTS)
    assert _files(again) == _files(dataset)
    subset = _files(
        generate(tmp_path / "subset", classes=["hex_nut", "grass"], seed=3, size=SIZE, **COUNTS)
    )
    full = _files(dataset)
    assert all(full[path] == data for path, data in subset.items() if path.endswith(".png"))


def test_different_seeds_differ(dataset: Path, tmp_path: Path) -> None:
    other = _files(generate(tmp_path, seed=4, size=SIZE, **COUNTS))
    full = _files(dataset)
    images = [path for path in other if path.endswith(".png") and "ground_truth" not in path]
    assert all(other[path] != full[path] for path in images)


def test_object_defects_lie_on_the_object() -> None:
    for name, defects in DEFECT_TYPES.items():
        for defect in defects:
            for index in range(3):
                sample = make_sample(name, defect=defect, index=index, size=SIZE)
                assert sample.mask.any()
                assert not (sample.mask & ~sample.foreground).any(), (name, defect, index)
                if name not in OBJECTS:
                    assert sample.foreground.all()


def test_only_the_moving_object_moves() -> None:
    for name in OBJECTS:
        centres = []
        for index in range(6):
            ys, xs = np.nonzero(make_sample(name, split="train", index=index, size=SIZE).foreground)
            centres.append((xs.mean(), ys.mean()))
        spread = np.ptp(np.array(centres), axis=0).max()
        if SYNTHETIC_CLASSES[name][1] == "moving":
            assert spread > 0.1 * SIZE, name
        else:
            assert spread < 0.05 * SIZE, name


def test_unknown_class_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope") as error:
        generate(tmp_path, classes=["brick", "nope"])
    assert all(name in str(error.value) for name in SYNTHETIC_CLASSES)
    assert not any(tmp_path.iterdir())  # nothing written before the check
    with pytest.raises(ValueError, match="nope"):
        make_sample("nope")


def test_bad_options_raise(tmp_path: Path) -> None:
    for options in ({"seed": -1}, {"size": 8}, {"n_train": 0}, {"n_test_per_defect": -1}):
        with pytest.raises(ValueError):
            generate(tmp_path, classes=["brick"], **options)
    with pytest.raises(ValueError, match="scratch"):
        make_sample("brick", defect="scratch")
    with pytest.raises(ValueError, match="train"):
        make_sample("brick", defect="hole", split="train")


def test_regenerating_replaces_own_output_only(tmp_path: Path) -> None:
    small = {"size": 32, "n_test_good": 1, "n_test_per_defect": 1}
    generate(tmp_path, classes=["brick"], n_train=3, **small)
    generate(tmp_path, classes="brick", n_train=1, **small)  # a single name works too
    assert [p.name for p in (tmp_path / "brick/train/good").iterdir()] == ["000.png"]
    generate(tmp_path, classes=["grass"], n_train=1, **small)
    assert set(yaml.safe_load((tmp_path / "ssad_classes.yaml").read_text())) == {"brick", "grass"}
    foreign = tmp_path / "mvtec"
    (foreign / "gravel").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="gravel"):
        generate(foreign, classes=["gravel"], n_train=1, **small)
    assert not any((foreign / "gravel").iterdir())
