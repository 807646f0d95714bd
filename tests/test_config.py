"""Config: YAML round-trip, dotted overrides, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ssad.config import PRESETS, Config, ConfigError, load_config, parse_overrides


def _write(tmp_path: Path, data: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_round_trip_through_yaml(tmp_path: Path) -> None:
    default = Config()
    path = tmp_path / "config.yaml"
    default.save(path)
    assert load_config(path) == default
    assert yaml.safe_load(default.to_yaml()) == default.to_dict()


def test_non_default_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(
        preset="seed",
        overrides={
            "defects.fills": ["mean"],
            "model.head_dims": [256, 64],
            "train.phase1_lr": 0.5,
            "pretext.mode": "patch",
            "train.progress": False,
        },
    )
    path = tmp_path / "config.yaml"
    cfg.save(path)
    back = load_config(path)
    assert back == cfg
    assert back.defects.fills == ("mean",)
    assert back.model.head_dims == (256, 64)


def test_flat_keys_are_dotted() -> None:
    flat = Config().flat()
    assert flat["defects.big.area_max"] == 0.1
    assert flat["train.phase2_epochs"] == PRESETS["cpu"]["train.phase2_epochs"]
    assert Config.from_dict(flat) == Config()


def test_parse_overrides_reads_yaml_values() -> None:
    got = parse_overrides(
        [
            "train.seed=3",
            "train.phase1_lr=0.5",
            "train.progress=false",
            "defects.fills=[mean, random]",
            "data.root=/data/mvtec",
            "train.weight_decay=5e-4",
        ]
    )
    assert got["train.seed"] == 3 and isinstance(got["train.seed"], int)
    assert got["train.phase1_lr"] == 0.5
    assert got["train.progress"] is False
    assert got["defects.fills"] == ["mean", "random"]
    assert got["data.root"] == "/data/mvtec"
    cfg = load_config(overrides=["train.seed=3", "train.weight_decay=5e-4", "eval.tsne=no"])
    assert cfg.train.seed == 3
    assert cfg.train.weight_decay == pytest.approx(5e-4)  # YAML 1.1 reads 5e-4 as a string
    assert cfg.eval.tsne is False


def test_set_overrides_apply_after_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train": {"seed": 1, "batch_size": 8}, "memory.k": 5})
    cfg = load_config(path, overrides=["train.seed=7", "defects.big.area_max=0.2"])
    assert cfg.train.seed == 7  # --set wins over the file
    assert cfg.train.batch_size == 8
    assert cfg.memory.k == 5  # dotted keys in a file work too
    assert cfg.defects.big.area_max == 0.2


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        parse_overrides(["train.seed"])


def test_unknown_key_names_file_and_suggests(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train": {"phase2_epoch": 3}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "train.phase2_epoch" in msg
    assert "did you mean train.phase2_epochs" in msg


def test_unknown_section(tmp_path: Path) -> None:
    path = _write(tmp_path, {"trainer": {"seed": 1}})
    with pytest.raises(ConfigError, match=r"cfg\.yaml: trainer\.seed: unknown key"):
        load_config(path)


def test_unknown_override_key_names_set() -> None:
    with pytest.raises(ConfigError, match=r"--set: memory\.bank: unknown key"):
        load_config(overrides=["memory.bank=3"])


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("train.phase2_epochs", "ten", "expected an integer"),
        ("train.batch_size", 3.5, "expected an integer"),
        ("train.phase1_lr", True, "expected a number"),
        ("train.progress", "yes please", "expected true/false"),
        ("pretext.mode", "tiles", "expected one of"),
        ("memory.feature", "pixels", "expected one of"),
        ("data.root", 3, "expected a string"),
    ],
)
def test_wrong_type_names_file_and_key(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    path = _write(tmp_path, {key: value})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}: ")
    assert expected in msg


def test_zero_epochs_is_a_valid_frozen_configuration() -> None:
    """No training at all: the pretrained backbone's features, densely or by windows."""
    for scoring in (
        {"eval.scoring": "dense"},
        {"pretext.mode": "patch", "memory.feature": "backbone"},
    ):
        zero = {"train.phase1_epochs": 0, "train.phase2_epochs": 0, **scoring}
        cfg = load_config(preset="seed", overrides=zero)
        assert cfg.train.phase1_epochs + cfg.train.phase2_epochs == 0


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        (
            {"defects.big.area_min": 0.2, "defects.big.area_max": 0.1},
            "defects.big.area_min",
            "exceeds",
        ),
        ({"defects.scar.patch_area_min": 0.05}, "defects.scar.patch_area_min", "exceeds"),
        ({"defects.big.area_max": 1.5}, "defects.big.area_min", "(0, 1)"),
        ({"defects.scar.area_min": 0.0}, "defects.scar.area_min", "(0, 1)"),
        ({"defects.big.aspect_low_max": 1.2}, "defects.big.aspect_low_max", "may not contain 1"),
        (
            {"defects.scar.aspect_high_min": 0.8},
            "defects.scar.aspect_high_min",
            "may not contain 1",
        ),
        ({"data.image_size": 64, "pretext.patch_size": 96}, "pretext.patch_size", "image_size=64"),
        ({"model.weights": "/no/such/weights.pt"}, "model.weights", "/no/such/weights.pt"),
        ({"defects.fills": ["mean", "blur"]}, "defects.fills", "cutpaste/mean/random"),
        ({"memory.k": 10, "memory.bank_size": 5}, "memory.bank_size", "memory.k=10"),
        ({"train.phase1_epochs": -1}, "train.phase1_epochs", ">= 0"),
        ({"train.phase1_epochs": 0, "train.phase2_epochs": 0}, "memory.feature", "untrained"),
        (
            {"train.phase1_epochs": 0, "train.phase2_epochs": 0, "memory.fill": "fifo"},
            "memory.fill",
            "during training",
        ),
        ({"model.backbone": "no_such_net"}, "model.backbone", "not a timm model name"),
        ({"memory.metric": "manhattan"}, "memory.metric", "'cosine', 'l2'"),
        ({"train.categories": ["cloth"]}, "train.categories", "texture and/or object"),
        ({"train.categories": ["object"]}, "memory.feature", "untrained"),  # textures: 0 epochs
        ({"memory.fill": "fifo", "eval.scoring": "dense"}, "memory.fill", "memory.fill=final"),
        (
            {"eval.position_norm": "zscore", "pretext.mode": "image"},
            "eval.position_norm",
            "no positions",
        ),
        ({"eval.position_norm": "median"}, "eval.position_norm", "'none', 'shift', 'zscore'"),
        ({"eval.map_sigma": -2.0}, "eval.map_sigma", ">= 0"),
        ({"data.val_draws": 0}, "data.val_draws", ">= 1"),
        ({"memory.subsample": "kmeans"}, "memory.subsample", "coreset"),
        ({"memory.index": "annoy"}, "memory.index", "'flat', 'ivf', 'hnsw'"),
        ({"train.precision": "fp16"}, "train.precision", "'fp32', 'bf16'"),
        ({"memory.index": "hnsw", "memory.backend": "gpu"}, "memory.index", "no GPU HNSW"),
    ],
)
def test_bad_ranges_name_file_and_key(
    tmp_path: Path, overrides: dict, key: str, expected: str
) -> None:
    path = _write(tmp_path, overrides)
    with pytest.raises(ConfigError) as err:
        load_config(path, preset="seed")  # windows scoring of both categories: every check
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}: "), msg
    assert expected in msg


def test_removed_memory_views_loads_off_and_refuses_on(tmp_path: Path) -> None:
    """A config.yaml saved before memory.views was removed holds ``views: 0``: it still loads."""
    old = Config().to_dict()
    old["memory"]["views"] = 0
    assert load_config(_write(tmp_path, old)) == Config()
    path = _write(tmp_path, {"memory": {"views": 1}}, name="on.yaml")
    with pytest.raises(ConfigError, match=r"memory\.views: removed") as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    assert "memory.views" not in Config().flat()


def test_default_aspect_intervals_are_valid_at_one() -> None:
    # The seed's big defect: [0.3, 1) ∪ (1, 3.3] — 1.0 is the open end of both intervals.
    big = Config().defects.big
    assert big.aspect_low_max == 1.0 and big.aspect_high_min == 1.0
    Config().validate()


def test_existing_weights_file_is_accepted(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert load_config(overrides={"model.weights": str(weights)}).model.weights == str(weights)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'gpu'.*cpu"):
        load_config(preset="gpu")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_apply_and_validate(name: str) -> None:
    cfg = load_config(preset=name)
    for key, value in PRESETS[name].items():
        assert cfg.flat()[key] == value, key


def test_cpu_preset_is_frozen_pretrained_and_file_wins(tmp_path: Path) -> None:
    cfg = load_config(preset="cpu")
    assert cfg.model.weights == "imagenet" and cfg.model.backbone == "efficientnet_lite0"
    assert load_config(preset="scratch").model.weights == "none"
    path = _write(tmp_path, {"train": {"phase2_epochs": 3}})
    cfg = load_config(path, preset="cpu", overrides=["train.batch_size=8"])
    assert cfg.train.phase2_epochs == 3
    assert cfg.train.batch_size == 8
    assert cfg.data.image_size == PRESETS["cpu"]["data.image_size"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "3\n"])
def test_non_mapping_top_level(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"{path.name}: top level must be a mapping"):
        load_config(path)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "train: {seed: [1\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == Config()


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.train.seed = 3  # type: ignore[misc]


def test_defaults_are_the_cpu_preset_and_seed_covers_every_preset_key() -> None:
    """The defaults are the recommended run (``cpu``); ``preset seed`` gives the seed's recipe
    whatever the defaults are: it sets every key any other preset sets."""
    assert load_config(preset="cpu") == Config()
    seed = load_config(preset="seed")
    assert seed != Config()
    assert (seed.model.backbone, seed.pretext.mode, seed.eval.scoring) == (
        "resnet18",
        "image",
        "windows",
    )
    assert (seed.train.phase1_epochs, seed.train.phase2_epochs, seed.memory.k) == (10, 50, 3)
    others = {k for name, over in PRESETS.items() if name != "seed" for k in over}
    assert others <= set(PRESETS["seed"])


def test_presets_are_importable_from_config_and_presets() -> None:
    from ssad import presets

    assert presets.PRESETS is PRESETS
