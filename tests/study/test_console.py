"""What a study prints: per-class progress without parameter dumps, tables at most 120 wide."""

from __future__ import annotations

import io
import json
import pickle
from types import SimpleNamespace

import pandas as pd
import yaml

from ssad.study.results.report import WIDTH, promotion_text, readable
from ssad.study.tune.progress import ClassProgress


def _trial(cls: str, number: int, **params: object) -> SimpleNamespace:
    config = {"class_name": cls, "trial_number": number, "params": params, "seed": 0}
    return SimpleNamespace(config=config, trial_id=f"t{number}", last_result={})


def test_progress_lines_are_per_class_with_their_own_best() -> None:
    out = io.StringIO()
    progress = ClassProgress("val_auc", "max", trials_per_class=2, max_epochs=3, out=out)
    a, b, g = _trial("brick", 1, lr=0.1), _trial("brick", 2), _trial("gelcap", 1)
    progress.on_trial_result(1, [], a, {"val_auc": 0.9, "epoch": 1})
    progress.on_trial_result(1, [], g, {"val_auc": 0.5, "epoch": 1})
    progress.on_trial_result(2, [], b, {"val_auc": 0.8, "epoch": 1})
    b.last_result = {"training_iteration": 3}
    progress.on_trial_complete(3, [], b)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all(len(line) <= WIDTH for line in lines)
    assert "brick-0001" in lines[0] and "epoch 1/3" in lines[0] and "best 0.9 (brick-0001)" in lines[0]
    assert "gelcap" in lines[1] and "best 0.5 (gelcap-0001)" in lines[1]  # not brick's 0.9
    assert "val_auc 0.8" in lines[2] and "best 0.9 (brick-0001)" in lines[2]
    assert "ended after 3/3 epochs (trial 1/2 of brick done)" in lines[3]
    assert "lr" not in out.getvalue() and "params" not in out.getvalue()
    assert pickle.loads(pickle.dumps(progress)).best == progress.best  # Tune pickles callbacks


def test_min_mode_and_missing_metric() -> None:
    out = io.StringIO()
    progress = ClassProgress("loss", "min", trials_per_class=1, max_epochs=2, out=out)
    progress.on_trial_result(1, [], _trial("brick", 1), {"epoch": 1})  # no metric yet
    progress.on_trial_result(1, [], _trial("brick", 1), {"loss": 0.3, "epoch": 2})
    progress.on_trial_result(1, [], _trial("brick", 2), {"loss": 0.4, "epoch": 2})
    lines = out.getvalue().splitlines()
    assert "best" not in lines[0] and "best 0.3 (brick-0001)" in lines[2]


def test_summary_table_fits_120_columns() -> None:
    config = {f"defects.big.key_number_{i}": 0.123456 * i for i in range(30)}
    board = pd.DataFrame(
        {
            "class": ["brick", "gelcap"],
            "best_val_image_auroc_ema": [0.91, 0.5],
            "trials": [8, 8],
            "finished": [4, 4],
            "stopped": [4, 4],
            "failed": [0, 0],
            "compute_s": [1234.5, 99.0],
            "best_config": [json.dumps(config), json.dumps({})],
        }
    )
    text = readable(board, config_columns={"best_config": {}})
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "…" in text.splitlines()[1] and "(as base)" in text.splitlines()[2]


def test_promotion_text_fits_120_columns() -> None:
    changes = json.dumps({f"memory.some_long_key_{i}": i for i in range(20)})
    report = pd.DataFrame(
        [
            {
                "class": "brick",
                "study_val_image_auroc_ema": 0.95,
                "test_image_auroc": 0.97,
                "test_pixel_auroc": 0.9,
                "test_aupro": 0.8,
                "threshold": 0.1234,
                "model": "models:/ssad-brick@champion",
                "version": 2,
                "config": "promoted/demo/brick.yaml",
                "changed_from_base": changes,
            },
            {"class": "gelcap", "model": "", "error": "RuntimeError: out of memory"},
        ]
    )
    text = promotion_text(report)
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "brick: models:/ssad-brick@champion version 2" in text
    assert "config: promoted/demo/brick.yaml" in text and "memory.some_long_key_0=0" in text
    assert "gelcap: not promoted" in text and "error: RuntimeError: out of memory" in text


def test_best_configs_file_holds_the_full_config(tmp_path) -> None:
    from ssad.config import load_config
    from ssad.study.results.leaderboard import write_best_configs

    base = load_config(preset="scratch")
    spec = SimpleNamespace(
        metric="val_image_auroc", base=base, storage_path=tmp_path, name="s", classes=("brick",)
    )
    board = pd.DataFrame(
        [
            {
                "class": "brick",
                "best_val_image_auroc": 0.9,
                "best_run_id": "abc",
                "best_config": json.dumps({"memory.k": "5", "eval.dense_stages": "[8, 16]"}),
            },
            {"class": "gelcap", "best_val_image_auroc": float("nan"), "best_run_id": "",
             "best_config": "{}"},
        ]
    )
    path = write_best_configs(board, spec)
    assert path == tmp_path / "s" / "best_configs.yaml"
    got = yaml.safe_load(path.read_text())
    assert got["brick"]["changed_from_base"] == {"memory.k": 5}
    assert got["brick"]["config"] == {**base.flat(), "memory.k": 5}
    assert got["gelcap"]["best_val_image_auroc"] is None and got["gelcap"]["run_id"] is None


def test_preset_choices_come_from_the_registry() -> None:
    from ssad.cli import build_parser
    from ssad.presets import PRESETS

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    preset = next(a for a in train._actions if a.dest == "preset")
    assert sorted(preset.choices) == sorted(PRESETS)
