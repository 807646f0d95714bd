"""One trial = one class model trained under one configuration; no Ray import here.

``run_trial(config, report, resume=...)`` trains with per-epoch validation, on the one path that
trains a class (:func:`ssad.pipeline.prepare`, :meth:`ssad.pipeline.ClassRun.train`). Each
validation metric is reported raw (``val_image_auroc``) and as an exponential moving average over
the epochs so far (``val_image_auroc_ema``, weight ``EMA_DECAY`` on the past): one noisy epoch does
not decide an ASHA rung. After every epoch it writes a checkpoint folder (training state, resolved
config, validation metrics, ROC curve and heatmaps) and calls ``report(metrics, folder)``; after
the last epoch the folder also holds the saved detector and the t-SNE plot. The Ray adapter turns
``report`` into ``tune.report``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ssad.config import Config
from ssad.evaluate import write_artifacts
from ssad.pipeline import prepare
from ssad.train import EpochReport, TrainedModel

__all__ = [
    "EMA_DECAY",
    "STATE_FILE",
    "Report",
    "ema_metrics",
    "load_state",
    "resolve_trial_config",
    "run_trial",
]

STATE_FILE = "state.pt"
EMA_DECAY = 0.5
EMA_KEYS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
Report = Callable[[dict[str, float], Path], None]


def resolve_trial_config(base: dict | Config, trial: dict) -> Config:
    """Base config + a trial's searched params, class and seed (seed offset from the base seed).

    A search's trial validates every epoch (ASHA compares trials at every rung); an ablation's
    trial (its config names a ``variant``) keeps the base's ``train.val_every``.
    """
    base_cfg = base if isinstance(base, Config) else Config.from_dict(base, source="study base")
    every = base_cfg.train.val_every if "variant" in trial else 1
    return base_cfg.with_overrides(
        {
            **trial["params"],
            "data.class_name": trial["class_name"],
            "train.seed": base_cfg.train.seed + int(trial["seed"]),
            "train.progress": False,
            "train.val_every": every,
        },
        source=f"trial {trial.get('config_id', '?')}",
    )


def ema_metrics(history: list[EpochReport], *, decay: float = EMA_DECAY) -> dict[str, float]:
    """``val_<m>_ema`` of every validation metric: ema = decay * ema + (1 - decay) * value, started
    at the first validated epoch. Computed from the whole history, so a resumed trial continues
    the same average."""
    ema: dict[str, float] = {}
    for rep in history:
        for key in EMA_KEYS:
            if key not in rep.metrics:
                continue
            value, name = rep.metrics[key], f"val_{key}_ema"
            ema[name] = value if name not in ema else decay * ema[name] + (1 - decay) * value
    return ema


def load_state(folder: str | Path) -> dict | None:
    path = Path(folder) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def run_trial(config: Config, report: Report, *, resume: dict | None = None) -> dict[str, float]:
    """Train one class model, reporting validation metrics (prefixed ``val_``) every epoch."""
    run = prepare(config)  # saved, validated and scored as resolved for the class
    config, validator = run.config, run.validator
    total = config.train.phase1_epochs + config.train.phase2_epochs
    final: dict[str, float] = {}

    def on_epoch(rep: EpochReport, trained: TrainedModel) -> None:
        metrics = {**rep.flat(), **ema_metrics(trained.history)}
        with tempfile.TemporaryDirectory(prefix="ssad-ckpt-") as tmp:
            folder = Path(tmp)
            torch.save(trained.checkpoint(), folder / STATE_FILE)
            config.save(folder / "config.yaml")
            (folder / "history.json").write_text(
                json.dumps([h.flat() for h in trained.history], indent=2)
            )
            last = rep.epoch == total
            if validator.last is not None:
                cfg = config if last else config.with_overrides({"eval.tsne": False})
                write_artifacts(
                    folder / "val", validator.data, validator.last, trained.bank, rep.metrics, cfg
                )
            if last:
                run.detector(trained, rep.metrics).save(folder / "detector")
            report(metrics, folder)
        final.clear()
        final.update(metrics)

    run.train(on_epoch=on_epoch, resume=resume)
    return final
