"""Search spaces: the shipped ones load; every bad entry fails naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssad.config import load_config
from ssad.study.spec import SpecError, load_search_space


@pytest.fixture
def tiny_base(study_helpers):
    tiny = study_helpers.TINY_BASE
    return load_config(preset=tiny["preset"], overrides=tiny["overrides"])


# ---- search space errors -------------------------------------------------------------------------


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _space_error(path: Path, *fragments: str, base=None) -> str:
    with pytest.raises(SpecError) as info:
        load_search_space(path, base=base)
    msg = str(info.value)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("train.lr: {type: float, low: 0.1, high: 0.2}", ("train.lr", "not a config key")),
        ("memory.k: {type: int, low: 5, high: 5}", ("memory.k", "low")),
        ("memory.k: {type: int, low: 6, high: 5}", ("memory.k", "low")),
        ("train.phase2_lr: {type: logfloat, low: 0.0, high: 0.1}", ("train.phase2_lr", "low > 0")),
        ("train.phase2_lr: {type: logfloat, low: -1, high: 0.1}", ("train.phase2_lr",)),
        ("memory.k: {type: gaussian, low: 1, high: 5}", ("memory.k", "type")),
        ("memory.k: 3", ("memory.k", "type")),
        ("memory.k: {low: 1, high: 5}", ("memory.k", "type")),  # a forgotten type
        ("eval.image_score: {type: categorical, choices: []}", ("eval.image_score", "choices")),
        ("eval.image_score: {type: categorical}", ("eval.image_score", "choices")),
        ("memory.k: {type: int, low: 1, high: 5, step: 2}", ("memory.k", "step")),
        ("memory.k: {type: int, low: 1, high: five}", ("memory.k", "numeric")),
        ("memory.k: {type: int, low: 1.5, high: 5}", ("memory.k", "integers")),
        ("memory.k: {type: float, low: 1, high: 5}", ("memory.k",)),  # an int key: 2.7 would fail
        ("train.batch_size: {type: int, low: 1, high: 8}", ("train.batch_size",)),
        ("", ("empty",)),
    ],
)
def test_bad_search_space_names_file_and_key(tmp_path: Path, text: str, fragments) -> None:
    _space_error(_space(tmp_path, text), *fragments)


def test_min_above_max_range(tmp_path: Path) -> None:
    path = _space(
        tmp_path,
        "defects.big.area_min: {type: float, low: 0.2, high: 0.3}\n"
        "defects.big.area_max: {type: float, low: 0.1, high: 0.15}\n",
    )
    _space_error(path, "defects.big.area_min", "defects.big.area_max")


def test_overlapping_min_max_ranges_are_fine(tmp_path: Path) -> None:
    path = _space(
        tmp_path,
        "defects.big.area_min: {type: float, low: 0.05, high: 0.2}\n"
        "defects.big.area_max: {type: float, low: 0.1, high: 0.3}\n",
    )
    space = load_search_space(path)
    low, high = space.corners()
    assert low["defects.big.area_max"] >= low["defects.big.area_min"]
    assert high["defects.big.area_max"] >= high["defects.big.area_min"]


@pytest.mark.parametrize("choices", ["[16, 128]", "[128, 16]", "[16, 128, 32]"])
def test_corner_violating_config_validation(tmp_path: Path, tiny_base, choices: str) -> None:
    """patch sizes above the base's image size fail at load, wherever they sit in the list."""
    base = tiny_base
    path = _space(tmp_path, f"pretext.patch_size: {{type: categorical, choices: {choices}}}")
    _space_error(path, "pretext.patch_size", "image_size", base=base)
    load_search_space(
        _space(tmp_path, "pretext.patch_size: {type: categorical, choices: [16, 32]}"), base=base
    )


def test_a_bad_middle_choice_is_caught(tmp_path: Path) -> None:
    path = _space(tmp_path, "eval.image_score: {type: categorical, choices: [max, mean, topk]}")
    _space_error(path, "eval.image_score", "mean")


def test_missing_search_space_file(tmp_path: Path) -> None:
    _space_error(tmp_path / "absent.yaml", "not found")


def test_nested_and_dotted_space_keys(tmp_path: Path) -> None:
    path = _space(
        tmp_path,
        "memory:\n  k: {type: int, low: 1, high: 3}\ntrain.phase2_lr: {type: logfloat, low: 0.001, high: 0.1}\n",
    )
    assert load_search_space(path).keys == ["memory.k", "train.phase2_lr"]


# ---- keys that break honest selection ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "data.split_seed",
        "data.val_fraction",
        "data.holdout_fraction",
        "train.seed",
        "data.class_name",
        "train.progress",
        "train.val_every",
    ],
)
def test_selection_and_trial_keys_cannot_be_searched(tmp_path: Path, key: str) -> None:
    kind = {
        "data.val_fraction": "{type: float, low: 0.3, high: 0.7}",
        "data.holdout_fraction": "{type: float, low: 0.1, high: 0.3}",
        "train.progress": "{type: categorical, choices: [true, false]}",
        "data.class_name": "{type: categorical, choices: [brick, gelcap]}",
    }.get(key, "{type: int, low: 0, high: 3}")
    _space_error(_space(tmp_path, f"{key}: {kind}"), key, "cannot be searched")


@pytest.mark.parametrize(
    "text",
    [
        "data.val_source: {type: categorical, choices: [test_half, synthetic]}",
        "data.root: {type: categorical, choices: [/a, /b]}",
    ],
)
def test_data_choice_cannot_be_searched(tmp_path: Path, text: str) -> None:
    _space_error(_space(tmp_path, text), text.split(":")[0], "cannot be searched")
