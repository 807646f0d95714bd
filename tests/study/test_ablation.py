"""Ablation studies: the spec kind, and a real tiny ablation on local Ray recorded in MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from ssad.cli import main
from ssad.study.results.ablation import ALL
from ssad.study.spec import SpecError, load_spec
from ssad.study.tune.runner import run_study

CLASSES = ("brick", "gelcap")  # tests/study/conftest.py's tiny data set


@pytest.fixture
def ablation(study_data: Path, study_helpers):
    """``ablation(folder, name=..., **spec_keys) -> Path``: a tiny ablation spec on the tiny data."""

    def make(folder: Path, **fields: Any) -> Path:
        return write_ablation(folder, study_data, study_helpers.TINY_BASE, **fields)

    return make


def write_ablation(
    folder: Path, data_root: Path, base: dict, name: str = "abl", **fields: Any
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "kind": "ablation",
        "name": name,
        "classes": list(CLASSES),
        "data": {"root": str(data_root)},
        "base": base,
        "baseline": "baseline",
        "variants": {
            "twin": {},  # the base config again: seeded runs are identical, so no difference
            "short": {"train.phase2_epochs": 1, "memory.fill": "final"},
        },
        "seeds": 2,
        "metric": "val_image_auroc",
        "metrics": ["val_image_auroc", "val_pixel_auroc"],
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": 2,
        "max_failures": 0,
        "mlflow": {
            "tracking_uri": f"sqlite:///{(folder / 'mlflow.db').resolve()}",
            "experiment": f"ssad-{name}",
        },
        "storage_path": str((folder / "ray").resolve()),
    }
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_ablation_spec_loads_variants_baseline_first(tmp_path: Path, ablation) -> None:
    spec = load_spec(ablation(tmp_path))
    assert spec.kind == "ablation" and spec.searcher == "ablation" and spec.scheduler == "none"
    assert list(spec.variants) == ["baseline", "twin", "short"]  # the baseline added, first
    assert spec.variants["baseline"] == {} and spec.seeds_per_config == 2
    assert spec.total_trials() == 3 * 2 * len(CLASSES)
    assert spec.variant_epochs(spec.variants["short"]) == 2 and spec.max_epochs == 4
    assert spec.base.train.val_every == 0  # an ablation validates its final models only
    base = spec.raw["base"]
    path = ablation(tmp_path, name="b3")
    raw = yaml.safe_load(path.read_text())
    raw["base"] = {**base, "overrides": {**base["overrides"], "train.val_every": 2}}
    path.write_text(yaml.safe_dump(raw))
    every = load_spec(path)
    assert every.base.train.val_every == 2  # unless the spec asks for curves
    assert {d.key for d in spec.space.dims} == {"train.phase2_epochs", "memory.fill"}
    named = load_spec(
        ablation(tmp_path, baseline="twin", name="b2")
    )  # a named variant as the baseline
    assert next(iter(named.variants)) == "twin" and "baseline" not in named.variants


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_samples": 4}, r"\['num_samples'\] belong to kind search"),
        (
            {"variants": {"x": {"data.split_seed": 3}}},
            r"variants.x: data.split_seed: a variant cannot set it",
        ),
        ({"variants": {"x": {"memory.nope": 3}}}, r"memory.nope"),
        ({"variants": {"x": {"memory.fill": "sometimes"}}}, r"memory.fill"),
        ({"variants": {"a/b": {}}}, r"variants.a/b: 'a/b': use letters"),
        ({"variants": {}}, r"variants: expected a mapping"),
        ({"variants": {"baseline": {}}}, r"at least one variant besides 'baseline'"),
        ({"metric": "val_aupro"}, r"metric: 'val_aupro' must be one of metrics"),
        ({"alpha": 1.5}, r"alpha: must be in \(0, 1\)"),
        ({"kind": "sweep"}, r"kind: search \| ablation"),
    ],
)
def test_ablation_spec_errors_name_the_key(
    tmp_path: Path, ablation, fields: dict, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(ablation(tmp_path, **fields))


def test_search_spec_refuses_ablation_keys(tmp_path: Path, make_spec) -> None:
    with pytest.raises(SpecError, match=r"\['variants'\] belong to kind ablation"):
        load_spec(make_spec(tmp_path, variants={"x": {}}))


@pytest.mark.slow
def test_tiny_ablation_end_to_end(tmp_path: Path, ablation, local_ray, capsys) -> None:
    path = ablation(tmp_path, classes=["gelcap"])  # 3 variants x 2 seeds: 6 tiny trials
    spec = load_spec(path)
    out = run_study(spec)
    assert out["errors"] == 0
    client = MlflowClient(spec.tracking_uri)
    runs = client.search_runs([out["experiment_id"]], "tags.`ssad.role` = 'trial'", max_results=100)
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted(
        f"gelcap-{v}-s{s}" for v in ("baseline", "twin", "short") for s in (0, 1)
    )
    for run in runs:
        tags = run.data.tags
        assert tags["ssad.variant"] == run.info.run_name.split("-")[1]
        assert tags["ssad.status"] == "finished"  # the short variant by its own schedule
        epochs = int(run.data.metrics["training_iteration"])
        assert epochs == (2 if tags["ssad.variant"] == "short" else 4)
    # each slot's Ray worker runs trial after trial (reuse_actors: no new process importing torch
    # per trial), and a reused worker changes no result (the twin below is bit-identical)
    results = (spec.storage_path / spec.name).glob("*/result.json")
    pids = {json.loads(line)["pid"] for f in results for line in f.read_text().splitlines()}
    assert 1 <= len(pids) <= spec.max_concurrent < len(runs), pids

    table = out["ablation"]
    pooled = table[(table["scope"] == ALL) & (table["metric"] == "val_pixel_auroc")]
    pooled = pooled.set_index("variant")
    assert list(pooled.index) == ["baseline", "twin", "short"]
    assert pooled.loc["baseline", "n"] == 2 and pooled.loc["short", "pairs"] == 2
    # seeded CPU runs are bit-identical, also as Ray trials: the twin differs by exactly nothing
    assert pooled.loc["twin", "diff"] == 0.0 and pooled.loc["twin", "p"] == 1.0
    assert pooled.loc["twin", "verdict"] == "no detectable difference"
    assert pooled.loc["short", "verdict"] in ("better", "worse", "no detectable difference")
    assert math.isfinite(pooled.loc["short", "p"])

    parent = client.get_run(out["parent_run_id"])
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")}
    assert arts == {"ablation/ablation.csv", "ablation/ablation.md"}
    assert parent.data.metrics["twin.val_image_auroc.diff"] == 0.0
    assert "short.val_pixel_auroc.p_holm" in parent.data.metrics
    assert parent.data.params["baseline"] == "baseline"
    dashboards = {a.path for a in client.list_artifacts(parent.info.run_id, "dashboards")}
    assert any(p.endswith(".html") for p in dashboards), dashboards

    capsys.readouterr()
    assert main(["study", "show", str(path), "--metric", "val_pixel_auroc"]) == 0
    shown = capsys.readouterr().out
    assert "| all | twin | 2 |" in shown and "no detectable difference" in shown
    assert "val_image_auroc:" not in shown  # --metric: that one only
    # the study against itself: each class's best configuration, paired with itself
    assert main(["study", "compare", str(path), str(path), "--metric", "val_pixel_auroc"]) == 0
    compared = capsys.readouterr().out
    assert "| all | B:abl |" in compared and "+0.0000" in compared
    assert main(["study", "compare", str(path), str(path), "--metric", "nope"]) == 2
