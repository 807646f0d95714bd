"""A damaged detector folder is refused in one line naming the file, by the API and the CLI."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssad.cli import main
from ssad.config import ConfigError
from ssad.detector import Detector, DetectorError
from ssad.pipeline import train_class


@pytest.fixture(scope="module")
def saved(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import tiny_config

    cfg = tiny_config(tiny_root, "gelcap", **{"train.phase2_epochs": 0, "train.phase1_epochs": 1})
    out = tmp_path_factory.mktemp("det") / "detector"
    train_class(cfg, out_dir=out, artifacts=False)
    return out


def _truncate(folder: Path) -> None:
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])


def _pickled_object(folder: Path) -> None:
    (folder / "model.pt").write_bytes(pickle.dumps({"weights": Path("x")}))


def _garbage_bank(folder: Path) -> None:
    (folder / "bank.npy").write_bytes(b"not a numpy file " * 64)


def _pickled_bank(folder: Path) -> None:
    np.save(folder / "bank.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _broken_yaml(folder: Path) -> None:
    with (folder / "config.yaml").open("a") as f:
        f.write("\n  extra: [unclosed\n")


def _other_model(folder: Path) -> None:
    import torch

    torch.save({"layer.weight": torch.zeros(2, 2)}, folder / "model.pt")


DAMAGE = {
    "model.pt truncated": ("model.pt", _truncate, DetectorError),
    "model.pt a pickled object": ("model.pt", _pickled_object, DetectorError),
    "model.pt another model's": ("model.pt", _other_model, DetectorError),
    "bank.npy garbage": ("bank.npy", _garbage_bank, DetectorError),
    "bank.npy pickled": ("bank.npy", _pickled_bank, DetectorError),
    "config.yaml broken": ("config.yaml", _broken_yaml, ConfigError),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_detector_is_refused_in_one_line_naming_the_file(
    saved: Path, tmp_path: Path, case: str, capsys
) -> None:
    name, damage, error = DAMAGE[case]
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    Detector.load(folder, device="cpu")  # intact, it loads
    damage(folder)
    with pytest.raises(error) as err:
        Detector.load(folder, device="cpu")
    msg = str(err.value)
    assert msg.startswith(str(folder / name)), msg
    assert "\n" not in msg
    capsys.readouterr()
    assert main(["predict", str(folder), str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err_text = capsys.readouterr().err.strip()
    assert err_text.startswith(f"error: {folder / name}") and "Traceback" not in err_text
