"""One class model end to end: data → training → validation → saved detector → test metrics.

The single entry point shared by ``ssad train``, study trials and promotion; progress goes through
``on_epoch`` (see :func:`ssad.train.fit`), so callers add tracking without this module knowing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ssad.config import Config
from ssad.data.images import read_image
from ssad.data.masks import foreground_mask
from ssad.data.mvtec import ClassData, DatasetError, Sample, fingerprint, load_class, split_test
from ssad.data.pretext import synthetic_anomalies
from ssad.detector import Detector
from ssad.evaluate import LabelledImages, Validator, evaluate, load_samples, write_artifacts
from ssad.train import EpochCallback, bank_fill, class_config, fit, resolve_device

__all__ = ["detector_info", "evaluate_saved", "load_data", "splits", "train_class"]


def splits(config: Config, data: ClassData) -> tuple[ClassData, LabelledImages, list[Sample]]:
    """(training data, validation images, test samples) for ``data.val_source``.

    ``test_half``: validation is a fixed, stratified half of the test split, test the other half.
    ``synthetic``: a ``holdout_fraction`` of the normal training images is held out; each, as it is
    and with ``val_draws`` synthetic defects, is the validation set; the real test split stays
    unseen.
    """
    d = config.data
    if d.val_source == "test_half":
        val, test = split_test(data.test, val_fraction=d.val_fraction, seed=d.split_seed)
        return data, load_samples(val, d.image_size), test
    n = len(data.train)
    rng = np.random.default_rng(d.split_seed)
    held = set(rng.permutation(n)[: max(2, round(n * d.holdout_fraction))].tolist())
    if n - len(held) < 2:
        raise DatasetError(
            f"{data.root / data.name}: too few training images to hold out a validation set"
        )
    keep = tuple(p for i, p in enumerate(data.train) if i not in held)
    images = [read_image(data.train[i], d.image_size) for i in sorted(held)]
    masks = [foreground_mask(im, category=data.category) for im in images]
    imgs, labels, gts = synthetic_anomalies(images, masks, seed=d.split_seed, draws=d.val_draws)
    names = [f"{'synthetic' if y else 'good'}/{i:03d}" for i, y in enumerate(labels)]
    return replace(data, train=keep), LabelledImages(imgs, labels, gts, names), list(data.test)


def detector_info(data: ClassData, config: Config) -> dict[str, str]:
    """What a saved detector records about its data and bank (detector.json)."""
    return {
        "class_name": data.name,
        "category": data.category,
        "placement": data.placement,
        "dataset_fingerprint": fingerprint(data),
        "memory_fill": bank_fill(config, data.category),  # memory.fill as resolved for the class
    }


def load_data(config: Config) -> ClassData:
    d = config.data
    return load_class(d.root, d.class_name, category=d.category, placement=d.placement)


def train_class(
    config: Config,
    *,
    out_dir: str | Path,
    on_epoch: EpochCallback | None = None,
    resume: dict | None = None,
    evaluate_test: bool = False,
    artifacts: bool = True,
) -> dict[str, Any]:
    """Train, validate and save one class model under ``out_dir``.

    The test split is read only when ``evaluate_test`` is set (promotion does; ``ssad train``
    reports validation metrics, and ``ssad evaluate --split test`` reads the test split later).
    Returns ``{"val": metrics, "test": metrics | None, "threshold": float, "history": [...]}``.
    The decision threshold is the image-level F1-max threshold on the validation split.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_data(config)
    config = class_config(config, loaded)  # saved, validated and scored as resolved
    data, val, test = splits(config, loaded)
    device = resolve_device(config.train.device)
    validator = Validator(config, val, device=device)
    trained = fit(config, data, validate=validator, on_epoch=on_epoch, resume=resume)
    val_metrics = trained.history[-1].metrics
    if artifacts and validator.last is not None:
        write_artifacts(
            out / "val", validator.data, validator.last, trained.bank, val_metrics, config
        )
    threshold = float(val_metrics["image_threshold"])
    info = {**detector_info(data, config), "val_metrics": val_metrics}
    detector = Detector(
        model=trained.model,
        bank=trained.bank,
        config=config,
        threshold=threshold,
        info=info,
        device=device,
    )
    detector.save(out)
    test_metrics = None
    if evaluate_test:
        test_metrics = evaluate(
            trained.model,
            trained.bank,
            test,
            config,
            device=device,
            out_dir=out / "test" if artifacts else None,
        )
    result = {
        "class_name": data.name,
        "val": val_metrics,
        "test": test_metrics,
        "threshold": threshold,
        "history": [asdict(h) for h in trained.history],
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def evaluate_saved(
    run_dir: str | Path, *, split: str = "test", artifacts: bool = True
) -> dict[str, float]:
    """Re-evaluate a saved detector folder on its class's val or test split."""
    det = Detector.load(run_dir)
    data = load_data(det.config)
    _, val, test = splits(det.config, data)
    chosen = {"val": val, "test": test, "all": list(data.test)}[split]
    return evaluate(
        det.model,
        det.bank,
        chosen,
        det.config,
        device=det.device,
        out_dir=Path(run_dir) / split if artifacts else None,
    )
