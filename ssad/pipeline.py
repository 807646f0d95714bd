"""One class model end to end: data → training → validation → saved detector → test metrics.

The single entry point shared by ``ssad train``, study trials and promotion; progress goes through
``on_epoch`` (see :func:`ssad.train.fit`), so callers add tracking without this module knowing.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ssad.config import Config
from ssad.data.mvtec import ClassData, fingerprint, load_class, split_test
from ssad.detector import Detector
from ssad.evaluate import Validator, evaluate, write_artifacts
from ssad.train import EpochCallback, fit, resolve_device

__all__ = ["evaluate_saved", "load_data", "train_class"]


def load_data(config: Config) -> ClassData:
    d = config.data
    return load_class(d.root, d.class_name, category=d.category, placement=d.placement)


def train_class(
    config: Config,
    *,
    out_dir: str | Path,
    on_epoch: EpochCallback | None = None,
    resume: dict | None = None,
    evaluate_test: bool = True,
    artifacts: bool = True,
) -> dict[str, Any]:
    """Train, validate and save one class model under ``out_dir``.

    Returns ``{"val": metrics, "test": metrics | None, "threshold": float, "history": [...]}``.
    The decision threshold is the image-level F1-max threshold on the validation split.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(config)
    val, test = split_test(
        data.test, val_fraction=config.data.val_fraction, seed=config.data.split_seed
    )
    device = resolve_device(config.train.device)
    validator = Validator(config, val, device=device)
    trained = fit(config, data, validate=validator, on_epoch=on_epoch, resume=resume)
    val_metrics = trained.history[-1].metrics
    if artifacts and validator.last is not None:
        write_artifacts(
            out / "val", validator.data, validator.last, trained.bank, val_metrics, config
        )
    threshold = float(val_metrics["image_threshold"])
    info = {
        "class_name": data.name,
        "category": data.category,
        "placement": data.placement,
        "dataset_fingerprint": fingerprint(data),
        "val_metrics": val_metrics,
    }
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
    val, test = split_test(
        data.test, val_fraction=det.config.data.val_fraction, seed=det.config.data.split_seed
    )
    samples = {"val": val, "test": test, "all": list(data.test)}[split]
    return evaluate(
        det.model,
        det.bank,
        samples,
        det.config,
        device=det.device,
        out_dir=Path(run_dir) / split if artifacts else None,
    )
