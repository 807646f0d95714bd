"""One class model end to end: data → training → validation → saved detector → test metrics.

The one path that trains a class, shared by ``ssad train`` and promotion (:func:`train_class`)
and study trials (``ssad.study.tune.trial.run_trial``): :func:`prepare` loads the class, resolves its
config once (:func:`ssad.autoresolve.resolve_class_config`) and splits it; :meth:`ClassRun.train`
trains it; :meth:`ClassRun.detector` builds the detector with the one decision threshold rule
(:mod:`ssad.calibration`). Progress goes through ``on_epoch`` (see :func:`ssad.train.fit`), so
callers add tracking without this module knowing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssad import calibration
from ssad.autoresolve import resolve_class_config
from ssad.config import Config
from ssad.data.images import read_image
from ssad.data.masks import foreground_mask
from ssad.data.mvtec import ClassData, DatasetError, Sample, fingerprint, load_class, split_test
from ssad.data.pretext import synthetic_anomalies
from ssad.detector import Detector
from ssad.evaluate import LabelledImages, Validator, evaluate, load_samples, write_artifacts
from ssad.train import EpochCallback, TrainedModel, fit, resolve_device

__all__ = [
    "ClassRun",
    "detector_info",
    "evaluate_saved",
    "load_data",
    "prepare",
    "splits",
    "train_class",
]


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
        "memory_fill": config.memory.fill,  # as resolved for the class
    }


def load_data(config: Config) -> ClassData:
    d = config.data
    return load_class(d.root, d.class_name, category=d.category, placement=d.placement)


@dataclass
class ClassRun:
    """One class, prepared for training: its resolved config, training data, validation and
    test split, and the validator that scores every validation pass."""

    config: Config
    data: ClassData
    val: LabelledImages
    test: list[Sample]
    validator: Validator
    device: torch.device

    def detector(self, trained: TrainedModel, val_metrics: dict[str, float]) -> Detector:
        """The detector of a trained model, its threshold calibrated on the validation scores."""
        if self.validator.last is None:  # resumed past the last epoch: nothing scored here yet
            self.validator(trained.model, trained.bank)
        threshold = calibration.threshold(self.val.labels, self.validator.last.scores)
        return Detector(
            model=trained.model,
            bank=trained.bank,
            config=self.config,
            threshold=threshold,
            info={**detector_info(self.data, self.config), "val_metrics": val_metrics},
            device=self.device,
        )

    def train(
        self,
        *,
        out_dir: str | Path | None = None,
        on_epoch: EpochCallback | None = None,
        resume: dict | None = None,
        evaluate_test: bool = False,
        artifacts: bool = True,
    ) -> dict[str, Any]:
        """Train and validate; with ``out_dir``, save the detector, its validation artifacts,
        ``metrics.json`` and (``evaluate_test``) the test metrics there (see
        :func:`train_class`)."""
        trained = fit(
            self.config, self.data, validate=self.validator, on_epoch=on_epoch, resume=resume
        )
        val_metrics = trained.history[-1].metrics
        threshold = test_metrics = None
        if out_dir is not None:
            out = Path(out_dir)
            if artifacts and self.validator.last is not None:
                v = self.validator
                write_artifacts(out / "val", v.data, v.last, trained.bank, val_metrics, self.config)
            detector = self.detector(trained, val_metrics)
            detector.save(out)
            threshold = detector.threshold
            if evaluate_test:
                test_metrics = evaluate(
                    trained.model,
                    trained.bank,
                    self.test,
                    self.config,
                    device=self.device,
                    out_dir=out / "test" if artifacts else None,
                )
        result = {
            "class_name": self.data.name,
            "val": val_metrics,
            "test": test_metrics,
            "threshold": threshold,
            "history": [asdict(h) for h in trained.history],
        }
        if out_dir is not None:
            (Path(out_dir) / "metrics.json").write_text(json.dumps(result, indent=2))
        return result


def prepare(config: Config) -> ClassRun:
    """Load the class of ``config``, resolve its config for it (once: what is trained, validated,
    scored and saved) and split its data (:func:`splits`)."""
    loaded = load_data(config)
    config = resolve_class_config(config, loaded)
    data, val, test = splits(config, loaded)
    device = resolve_device(config.train.device)
    return ClassRun(config, data, val, test, Validator(config, val, device=device), device)


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
    The decision threshold is the calibration's (:mod:`ssad.calibration`: the image-level F1-max
    threshold on the validation split).
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return prepare(config).train(
        out_dir=out_dir,
        on_epoch=on_epoch,
        resume=resume,
        evaluate_test=evaluate_test,
        artifacts=artifacts,
    )


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
