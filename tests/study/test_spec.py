"""Study specs and search spaces: the shipped files load; every bad input fails naming file + key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ssad.config import ConfigError, load_config
from ssad.study.spec import load_search_space, load_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def spec_file(tmp_path: Path, study_helpers):
    """``spec_file(**spec_keys) -> Path``: a tiny spec (data root need not exist for load_spec)."""

    def make(**fields: Any) -> Path:
        return study_helpers.write_spec(tmp_path, data_root=tmp_path / "data", **fields)

    return make


# ---- the shipped specs and spaces ---------------------------------------------------------------


def test_demo_spec_loads() -> None:
    spec = load_spec(REPO / "studies" / "demo.yaml")
    assert spec.name == "demo"
    assert spec.classes == ("brick", "gelcap")
    assert spec.searcher == "optuna" and spec.scheduler == "asha"
    assert spec.base.model.backbone == "efficientnet_lite0"  # the cpu preset
    assert spec.base.data.image_size == 256
    assert set(spec.base.train.categories) == {"texture", "object"}  # the search decides
    assert spec.max_epochs == 1 + 2  # the space's longest schedule
    assert spec.total_trials() == 2 * spec.num_samples * spec.seeds_per_config
    assert Path(spec.space.source).name == "pretrained.yaml"
    assert spec.storage_path.is_absolute()


@pytest.mark.parametrize(
    ("name", "variants"),
    [
        (
            "ablation_demo",
            ["this-project", "frozen", "train-objects", "cosine", "no-shift", "coreset"],
        ),
        (
            "pretrained_ablation",
            [
                "frozen",
                "seed-recipe",
                "short-finetune",
                "phase1-only",
                "seed-recipe-windows",
                "scratch",
            ],
        ),
        ("pretrained_bn_ablation", ["frozen", "bn-statistics", "short-finetune"]),
    ],
)
def test_ablation_specs_load(name: str, variants: list[str]) -> None:
    spec = load_spec(REPO / "studies" / f"{name}.yaml")
    assert spec.kind == "ablation" and spec.baseline == variants[0]
    assert list(spec.variants) == variants
    assert spec.total_trials() == len(spec.classes) * len(variants) * 3
    assert spec.base.train.val_every == 0  # an ablation validates once, at the end
    if name.startswith("pretrained"):  # the frozen baseline, every class trainable by variants
        assert spec.base.train.phase1_epochs + spec.base.train.phase2_epochs == 0
        assert set(spec.base.train.categories) == {"texture", "object"}


def test_pretrained_ablation_variants_are_the_measured_recipes() -> None:
    spec = load_spec(REPO / "studies" / "pretrained_ablation.yaml")
    t = {name: spec.base.with_overrides(o).train for name, o in spec.variants.items()}
    assert (t["seed-recipe"].phase1_epochs, t["seed-recipe"].phase2_epochs) == (2, 4)
    assert (t["seed-recipe"].phase1_lr, t["seed-recipe"].phase2_lr) == (0.03, 0.01)  # the seed's
    assert (t["short-finetune"].phase1_epochs, t["short-finetune"].phase2_epochs) == (1, 2)
    assert t["short-finetune"].phase2_lr == 0.001 and t["seed-recipe"].batch_size == 32
    bn = load_spec(REPO / "studies" / "pretrained_bn_ablation.yaml")
    got = {n: bn.base.with_overrides(o).train for n, o in bn.variants.items()}
    assert got["bn-statistics"].phase2_lr == 0.0 and got["short-finetune"] == t["short-finetune"]


def test_pretrained_ablation_scratch_variant_is_the_scratch_preset() -> None:
    spec = load_spec(REPO / "studies" / "pretrained_ablation.yaml")
    got = spec.base.with_overrides(spec.variants["scratch"]).flat()
    want = load_config(preset="scratch").flat()
    reporting = {"train.val_every", "eval.heatmaps", "eval.tsne", "data.root"}
    assert {k for k in want if got[k] != want[k]} <= reporting


def test_mvtec_spec_loads() -> None:
    spec = load_spec(REPO / "studies" / "mvtec.yaml")
    assert len(spec.classes) == 15
    assert spec.gpu == 0.25 and spec.cpu == 4.0
    assert spec.tracking_uri.startswith("http://")
    assert spec.base.model.weights == "imagenet"


@pytest.mark.parametrize("name", ["pretrained.yaml", "preset.yaml"])
def test_pretrained_search_spaces_load_over_the_cpu_preset(name: str) -> None:
    base = load_config(preset="cpu")
    space = load_search_space(REPO / "search_spaces" / name, base=base)
    assert "train.phase2_epochs" in space.keys
    for corner in space.corners():
        base.with_overrides(corner)


@pytest.mark.parametrize("name", ["seed.yaml", "wide.yaml"])
def test_shipped_search_spaces_load(name: str) -> None:
    seed = load_config(preset="seed")  # the seed's ranges, around the seed's recipe
    space = load_search_space(REPO / "search_spaces" / name, base=seed)
    assert "memory.k" in space.keys
    # the min/max pairs are recognised (a max is sampled at or above its min)
    assert space.pairs()["defects.big.area_min"] == "defects.big.area_max"
    for corner in space.corners():
        seed.with_overrides(corner)


# ---- spec errors ---------------------------------------------------------------------------------


def _expect(path: Path, *fragments: str, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as info:  # SpecError, or ConfigError from base overrides
        load_spec(path, overrides=overrides)
    msg = str(info.value)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_tiny_spec_is_valid(spec_file) -> None:
    spec = load_spec(spec_file())
    assert spec.max_epochs == 4
    assert spec.space.keys == ["memory.k", "train.phase2_lr", "eval.image_score"]
    assert spec.tracking_uri.startswith("sqlite:////")


def test_unknown_top_level_key(spec_file) -> None:
    _expect(spec_file(num_trials=3), "num_trials")


def test_unknown_key_in_a_section(spec_file) -> None:
    path = spec_file(scheduler={"type": "asha", "grace": 2})
    _expect(path, "scheduler", "grace")


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"searcher": {"type": "random"}}, "searcher.type"),
        ({"scheduler": {"type": "hyperband"}}, "scheduler.type"),
        ({"metric": "val_accuracy"}, "metric"),
        ({"mode": "maximize"}, "mode"),
        ({"num_samples": "many"}, "num_samples"),
        ({"num_samples": 0}, "num_samples"),
        ({"resources": {"cpu": 1, "gpu": 1.5}}, "resources.gpu"),
        ({"scheduler": {"type": "asha", "grace_period": 5}}, "scheduler.grace_period"),
        ({"scheduler": {"type": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor"),
        ({"classes": ["brick", "brick"]}, "classes"),
        ({"classes": []}, "classes"),
        ({"base": {"preset": "gpu"}}, "base.preset"),
        ({"base": {"overrides": {"train.phase3_epochs": 1}}}, "train.phase3_epochs"),
        ({"search_space": "missing.yaml"}, "search_space"),
        ({"final": {"overrides": {"memory.k": 0}}}, "memory.k"),
    ],
)
def test_bad_spec_values_name_file_and_key(spec_file, fields: dict, key: str) -> None:
    _expect(spec_file(**fields), key)


def test_grace_period_up_to_max_epochs_is_fine(spec_file) -> None:
    spec = load_spec(spec_file(scheduler={"type": "asha", "grace_period": 4}))
    assert spec.grace_period == spec.max_epochs == 4


def test_whole_gpus_are_fine(spec_file) -> None:
    assert load_spec(spec_file(resources={"cpu": 2, "gpu": 2})).gpu == 2.0


def test_grid_searcher_with_a_float_dimension(spec_file) -> None:
    msg = _expect(spec_file(searcher={"type": "grid"}), "train.phase2_lr", "grid")
    assert "logfloat" in msg


def test_grid_searcher_counts_grid_points(spec_file) -> None:
    space = {
        "memory.k": {"type": "int", "low": 1, "high": 3},
        "eval.image_score": {"type": "categorical", "choices": ["max", "topk"]},
    }
    spec = load_spec(spec_file(searcher={"type": "grid"}, space=space, seeds_per_config=2))
    assert spec.configs_per_class() == 6
    assert spec.total_trials() == 2 * 6 * 2


def test_set_style_overrides(spec_file) -> None:
    path = spec_file()
    spec = load_spec(
        path,
        overrides={
            "num_samples": 5,
            "scheduler.grace_period": 2,
            "data.root": "/elsewhere",
            "mlflow.experiment": "other",
            "resources.gpu": 0.5,
        },
    )
    assert spec.num_samples == 5 and spec.grace_period == 2
    assert spec.data_root == "/elsewhere"
    assert spec.experiment == "other" and spec.gpu == 0.5
    assert spec.scheduler == "asha"  # untouched keys of an overridden section stay
    assert yaml.safe_load(path.read_text())["num_samples"] == 2  # the file is not modified
    _expect(path, "scheduler.grace_period", overrides={"scheduler.grace_period": 9})
    _expect(path, "bogus", overrides={"bogus": 1})


def test_missing_spec_file(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.yaml", "not found")


# ---- keys that break honest selection, or that a trial would overwrite ------------------------


def test_training_length_is_searchable_down_to_zero_and_sets_asha_max_t(spec_file) -> None:
    """A space may search the epochs of both phases, 0 included; ASHA's max_t is then the
    longest schedule in the space, not the base config's."""
    space = {
        "train.phase1_epochs": {"type": "categorical", "choices": [0, 1]},
        "train.phase2_epochs": {"type": "int", "low": 0, "high": 6},
        "memory.k": {"type": "int", "low": 1, "high": 3},
    }
    base = {"preset": "cpu", "overrides": {"train.phase1_epochs": 1, "train.phase2_epochs": 2}}
    spec = load_spec(spec_file(space=space, base=base))
    assert spec.max_epochs == 1 + 6
    assert {d.key for d in spec.space.dims} >= {"train.phase1_epochs", "train.phase2_epochs"}
    fixed = load_spec(spec_file(base=base))  # not searched: the base config's schedule
    assert fixed.max_epochs == 1 + 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.split_seed", 3),
        ("data.val_fraction", 0.3),
        ("data.val_source", "synthetic"),
        ("data.holdout_fraction", 0.3),
        ("data.root", "/elsewhere"),
        ("train.seed", 7),
        ("data.class_name", "gelcap"),
    ],
)
def test_selection_keys_refused_in_final_overrides(spec_file, key: str, value) -> None:
    _expect(spec_file(final={"overrides": {key: value}}), "final.overrides", key)


@pytest.mark.parametrize(
    ("key", "value"),
    [("train.val_every", 2), ("train.progress", True), ("data.class_name", "brick")],
)
def test_keys_a_trial_overwrites_refused_in_base_overrides(
    spec_file, study_helpers, key: str, value
) -> None:
    base = study_helpers.TINY_BASE
    path = spec_file(base={**base, "overrides": {**base["overrides"], key: value}})
    _expect(path, "base.overrides", key)


def test_no_searched_key_is_overwritten_in_a_trial(spec_file) -> None:
    """Every key a valid space may search reaches the trial's resolved config unchanged."""
    from ssad.study.tune.trial import resolve_trial_config

    spec = load_spec(spec_file())
    for corner in spec.space.corners():
        cfg = resolve_trial_config(spec.base, {"class_name": "brick", "seed": 0, "params": corner})
        flat = cfg.flat()
        for key, value in corner.items():
            assert flat[key] == value, key


def test_final_schedule_overrides_are_fine(spec_file) -> None:
    spec = load_spec(spec_file(final={"overrides": {"train.phase2_epochs": 4, "memory.k": 5}}))
    assert spec.final["overrides"]["train.phase2_epochs"] == 4
