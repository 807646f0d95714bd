"""Two-phase pretext training of one class model, and its memory bank.

Phase 1 trains the fusion layer, projection head and classifier with the backbone frozen (its
BatchNorm statistics too); phase 2 trains the whole network. SGD with momentum, cosine schedule per
phase. The bank is filled by the ``memory.fill`` strategy (:mod:`ssad.fill`: ``final`` rebuilds it
from the current weights before every validation pass and after the last epoch, ``fifo`` collects
it during training); validation scores with exactly the bank that is returned and saved.

:func:`fit` takes a config resolved for its class (:func:`ssad.autoresolve.resolve_class_config`,
which :func:`ssad.pipeline.prepare` calls). Progress goes to a callback ``on_epoch(report,
trained)``; ``trained.checkpoint()`` returns the full training state (a dict of tensors, loadable
with ``weights_only=True``) so a caller can save it and resume with ``fit(..., resume=state)``.
No Ray or MLflow here.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ssad.autoresolve import bank_fill, class_category, position_norm, scheduled_epochs
from ssad.bank import build_bank
from ssad.config import Config
from ssad.data.images import read_image
from ssad.data.masks import class_foreground, foreground_mask
from ssad.data.mvtec import ClassData, list_classes
from ssad.data.pretext import PretextDataset
from ssad.fill import BankFill, make_fill
from ssad.memory import MemoryBank
from ssad.model import SSADNet, load_backbone_weights

__all__ = [
    "EpochReport",
    "TrainedModel",
    "bank_fill",
    "build_model",
    "class_category",
    "fit",
    "make_pretext",
    "position_norm",
    "resolve_device",
    "scheduled_epochs",
]

log = logging.getLogger(__name__)

Validator = Callable[[SSADNet, MemoryBank], dict[str, float]]


@dataclass(frozen=True)
class EpochReport:
    """What one finished epoch reports (``epoch`` counts from 1 over both phases)."""

    epoch: int
    phase: int
    loss: float
    accuracy: float
    lr: float
    seconds: float
    bank_size: int
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics, when evaluated

    def flat(self) -> dict[str, float]:
        out = {k: v for k, v in asdict(self).items() if k != "metrics"}
        out.update({f"val_{k}": v for k, v in self.metrics.items()})
        return out


@dataclass
class TrainedModel:
    """The live model and bank (during training: as of the epoch just finished) and the history."""

    model: SSADNet
    bank: MemoryBank
    history: list[EpochReport]
    checkpoint: Callable[[], dict] = lambda: {}  # full training state for ``fit(resume=...)``


EpochCallback = Callable[[EpochReport, TrainedModel], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but torch sees no CUDA device")
    return torch.device(name)


def build_model(config: Config) -> SSADNet:
    m = config.model
    model = SSADNet(
        backbone=m.backbone,
        num_classes=config.pretext.classes,
        fusion_dim=m.fusion_dim,
        head_dims=m.head_dims,
        embedding_dim=m.embedding_dim,
    )
    load_backbone_weights(model, m.weights)
    return model


def make_pretext(config: Config, data: ClassData) -> PretextDataset:
    """Load the class's normal images once and build its pretext data set."""
    size = config.data.image_size
    images = [read_image(p, size) for p in data.train]
    if data.placement == "fixed":
        # One mask per class when the object does not move (MVTec: all but hazelnut/screw/metal_nut).
        mask = class_foreground(images, category=data.category)
        masks = [mask] * len(images)
    else:
        masks = [foreground_mask(im, category=data.category) for im in images]
    sources = None
    if data.category == "texture" and "cutpaste" in config.defects.fills:
        sources = _other_class_images(data, size)
        if not sources:
            fills = [f for f in config.defects.fills if f != "cutpaste"] or ["mean", "random"]
            log.warning(
                "%s: no other class under %s to cut texture patches from; using fills %s",
                data.name,
                data.root,
                fills,
            )
            config = config.with_overrides({"defects.fills": fills})
    length = max(config.train.min_samples, len(images))
    return PretextDataset(
        images,
        config=config,
        fg_masks=masks,
        sources=sources,
        length=length,
        seed=config.train.seed,
    )


def _other_class_images(data: ClassData, size: int, *, per_class: int = 4) -> list[np.ndarray]:
    """A few normal images of every other class: textures never take a fill from their own class."""
    out = []
    for name in list_classes(data.root):
        if name == data.name:
            continue
        files = sorted((data.root / name / "train" / "good").iterdir())[:per_class]
        out += [read_image(p, size) for p in files]
    return out


def _phase_of(epoch: int, config: Config) -> int:
    return 1 if epoch < config.train.phase1_epochs else 2


def _optimizer(model: SSADNet, config: Config, phase: int, steps: int):
    t = config.train
    if phase == 1:
        params = [
            *model.fusion.parameters(),
            *model.head.parameters(),
            *model.classifier.parameters(),
        ]
        lr, epochs = t.phase1_lr, t.phase1_epochs
    else:
        params, lr, epochs = list(model.parameters()), t.phase2_lr, t.phase2_epochs
    opt = torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    return opt, sched


def _set_phase_mode(model: SSADNet, phase: int) -> None:
    model.train()
    backbone = model.backbone()
    frozen = phase == 1
    for p in backbone.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        backbone.eval()  # BatchNorm running statistics stay as initialised


def _loader(dataset: PretextDataset, config: Config, device: torch.device):
    t = config.train
    generator = torch.Generator().manual_seed(t.seed)
    loader = DataLoader(
        dataset,
        batch_size=min(t.batch_size, len(dataset)),
        shuffle=True,
        drop_last=True,
        num_workers=t.workers,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    return loader, generator


@dataclass
class _Training:
    """The live state of one training: model, bank fill, optimiser, sampler and history."""

    config: Config
    model: SSADNet
    fill: BankFill
    loader: DataLoader
    generator: torch.Generator
    device: torch.device
    history: list[EpochReport] = field(default_factory=list)
    opt: torch.optim.Optimizer | None = None
    sched: torch.optim.lr_scheduler.LRScheduler | None = None

    def new_phase(self, phase: int) -> None:
        """Each phase starts its own SGD + cosine schedule."""
        self.opt, self.sched = _optimizer(self.model, self.config, phase, len(self.loader))

    def restore(self, state: dict) -> int:
        """Continue from :meth:`checkpoint`'s state; returns the epoch to start at."""
        t = self.config.train
        self.model.load_state_dict(state["model"])
        self.fill.resume(state["bank"].numpy())
        self.history = [EpochReport(**h) for h in state["history"]]
        start = int(state["epoch"])
        self.generator.set_state(state["generator"])
        if start < t.phase1_epochs + t.phase2_epochs:
            self.new_phase(_phase_of(start, self.config))
            if state["phase"] == _phase_of(start, self.config):
                self.opt.load_state_dict(state["optimizer"])
                self.sched.load_state_dict(state["scheduler"])
        return start

    def checkpoint(self, epoch: int, phase: int) -> Callable[[], dict]:
        def state() -> dict:
            return {
                "epoch": epoch,
                "phase": phase,
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.opt.state_dict()),  # a snapshot, not live buffers
                "scheduler": self.sched.state_dict(),
                "bank": torch.from_numpy(self.fill.bank.vectors.copy()),
                "history": [asdict(h) for h in self.history],
                "generator": self.generator.get_state(),
            }

        return state

    def run_epoch(self, phase: int, desc: str) -> tuple[float, float]:
        """One pass over the pretext data: (mean loss, accuracy)."""
        t, model, opt, sched = self.config.train, self.model, self.opt, self.sched
        # lr 0: forward passes only (train mode: phase 2 re-estimates BatchNorm statistics)
        learning = (t.phase1_lr if phase == 1 else t.phase2_lr) > 0
        autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16"
        )
        loss_sum = correct = seen = 0
        bar = tqdm(self.loader, desc=desc, leave=False, disable=not t.progress, dynamic_ncols=True)
        for x, y in bar:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast, torch.set_grad_enabled(learning):
                stages = model.features(x)
                z = model.embed_features(*stages)
                logits = model.classify(z)
            loss = F.cross_entropy(logits.float(), y)
            if learning:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            pred = logits.argmax(dim=1)
            self.fill.step(model, z, stages, y, pred)
            loss_sum += loss.item() * len(y)
            correct += (pred == y).sum().item()
            seen += len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        return loss_sum / max(seen, 1), correct / max(seen, 1)


def fit(
    config: Config,
    data: ClassData,
    *,
    validate: Validator | None = None,
    on_epoch: EpochCallback | None = None,
    resume: dict | None = None,
) -> TrainedModel:
    """Train one class model; returns the model (eval mode, on the train device) and its bank.

    ``config`` is resolved for the class (:func:`ssad.autoresolve.resolve_class_config`). With 0
    epochs (``train.phase1_epochs = train.phase2_epochs = 0``) no weight changes: the bank is
    built from the pretrained backbone's features, validated once and reported as epoch 0.
    """
    t = config.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    if t.phase1_epochs + t.phase2_epochs == 0:
        return _frozen(config, data, device=device, validate=validate, on_epoch=on_epoch)
    dataset = make_pretext(config, data)
    loader, generator = _loader(dataset, config, device)
    model = build_model(config).to(device)
    fill = make_fill(config, model, device)
    run = _Training(config, model, fill, loader, generator, device)
    start = run.restore(resume) if resume is not None else 0
    total = t.phase1_epochs + t.phase2_epochs
    for epoch in range(start, total):
        phase = _phase_of(epoch, config)
        if run.opt is None or epoch == t.phase1_epochs:
            run.new_phase(phase)
        _set_phase_mode(model, phase)
        dataset.set_epoch(epoch)
        tic = time.perf_counter()
        loss, accuracy = run.run_epoch(phase, f"{data.name} ep {epoch + 1}/{total} (phase {phase})")
        if not math.isfinite(loss):  # before the bank and validation spend time on it
            raise FloatingPointError(
                f"{data.name}: training diverged at epoch {epoch + 1} (loss {loss})"
            )
        last = epoch == total - 1
        validating = validate is not None and (
            last or (t.val_every > 0 and (epoch + 1) % t.val_every == 0)
        )
        label = f"{data.name} epoch {epoch + 1}"
        fill.end_epoch(model, dataset.images, refresh=validating or last, label=label)
        metrics: dict[str, float] = {}
        if validating:
            model.eval()
            metrics = validate(model, fill.bank)
        report = EpochReport(
            epoch=epoch + 1,
            phase=phase,
            loss=loss,
            accuracy=accuracy,
            lr=run.opt.param_groups[0]["lr"],
            seconds=time.perf_counter() - tic,
            bank_size=len(fill.bank),
            metrics=metrics,
        )
        run.history.append(report)
        if on_epoch is not None:
            state = run.checkpoint(epoch + 1, phase)
            on_epoch(report, TrainedModel(model, fill.bank, run.history, state))
    model.eval()
    return TrainedModel(model=model, bank=fill.bank, history=run.history)


def _frozen(
    config: Config,
    data: ClassData,
    *,
    device: torch.device,
    validate: Validator | None,
    on_epoch: EpochCallback | None,
) -> TrainedModel:
    """0 epochs: the bank of the pretrained backbone's features as they are, validated once and
    reported as epoch 0 (phase 0); no weight, BatchNorm statistic included, changes."""
    tic = time.perf_counter()
    model = build_model(config).to(device).eval()
    images = [read_image(p, config.data.image_size) for p in data.train]
    bank = build_bank(model, images, config, device=device)
    report = EpochReport(
        epoch=0,
        phase=0,
        loss=math.nan,
        accuracy=math.nan,
        lr=0.0,
        seconds=time.perf_counter() - tic,
        bank_size=len(bank),
        metrics=validate(model, bank) if validate is not None else {},
    )
    history = [report]

    def checkpoint() -> dict:  # what fit(resume=...) reads; a frozen model has nothing to resume
        return {
            "epoch": 0,
            "phase": 0,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": {},
            "scheduler": {},
            "bank": torch.zeros(0, bank.dim),
            "history": [asdict(report)],
            "generator": torch.Generator().manual_seed(config.train.seed).get_state(),
        }

    if on_epoch is not None:
        on_epoch(report, TrainedModel(model, bank, history, checkpoint))
    return TrainedModel(model=model, bank=bank, history=history)
