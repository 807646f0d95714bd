"""Two-phase pretext training of one class model, and its memory bank.

Phase 1 trains the fusion layer, projection head and classifier with the backbone frozen (its
BatchNorm statistics too); phase 2 trains the whole network. SGD with momentum, cosine schedule per
phase. The bank (``memory.fill``):

- ``final``: before every validation pass and after the last epoch, the bank is rebuilt from the
  current weights in eval mode over the normal training images (``ssad.bank.build_bank``);
- ``fifo`` (the seed's): each step adds the embeddings of samples that are normal (y = 0) and
  predicted normal (ŷ = 0); at epoch end the bank keeps its newest ``memory.bank_size`` vectors.

Either way, validation scores with exactly the bank that is returned and saved.

Progress goes to a callback ``on_epoch(report, trained)``; ``trained.checkpoint()`` returns the full
training state (a dict of tensors, loadable with ``weights_only=True``) so a caller can save it and
resume with ``fit(..., resume=state)``. No Ray or MLflow here.
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

from ssad.bank import build_bank, fifo_positions
from ssad.config import CATEGORIES, Config
from ssad.data.images import read_image
from ssad.data.masks import class_foreground, foreground_mask
from ssad.data.mvtec import ClassData, class_info, list_classes
from ssad.data.pretext import PretextDataset
from ssad.memory import MemoryBank
from ssad.model import SSADNet, load_backbone_weights

__all__ = [
    "EpochReport",
    "TrainedModel",
    "bank_fill",
    "build_model",
    "class_category",
    "class_config",
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


def bank_fill(config: Config, category: str) -> str:
    """``memory.fill`` resolved for a class: ``auto`` is fifo for textures, final for objects
    (dense scoring needs backbone features, and a model that is not trained collects no FIFO
    bank, so both are always final)."""
    fill = config.memory.fill
    if fill == "auto":
        trained = config.train.phase1_epochs + config.train.phase2_epochs > 0
        texture = category == "texture" and config.eval.scoring == "windows"
        fill = "fifo" if texture and trained else "final"
    return fill


def position_norm(config: Config, category: str, placement: str) -> str:
    """``eval.position_norm`` resolved for a class: ``auto`` is shift for an object that sits in
    the same place in every image, none for textures and moving objects (docs/measurements-scratch.md,
    "The signal")."""
    mode = config.eval.position_norm
    if mode == "auto":
        mode = "shift" if category == "object" and placement == "fixed" else "none"
    return mode


def class_category(config: Config) -> str:
    """``data.category``, or the class's own (``ssad_classes.yaml`` / the MVTec AD table) when
    ``auto``."""
    if config.data.category != "auto":
        return config.data.category
    return class_info(config.data.root, config.data.class_name)[0]


def scheduled_epochs(config: Config, category: str | None = None) -> int:
    """Epochs the class of ``config`` trains: 0 unless ``train.categories`` names its category
    (``category``, or :func:`class_category`, read only when some category is left out)."""
    t = config.train
    total = t.phase1_epochs + t.phase2_epochs
    if set(t.categories) >= set(CATEGORIES):
        return total
    return total if (category or class_category(config)) in t.categories else 0


def class_config(config: Config, data: ClassData) -> Config:
    """``config`` with its per-class choices resolved for ``data``: ``eval.position_norm: auto``,
    and 0 epochs for a category ``train.categories`` does not train. What a class model is
    trained, validated, saved and scored with."""
    overrides: dict[str, object] = {}
    mode = position_norm(config, data.category, data.placement)
    if mode != config.eval.position_norm:
        overrides["eval.position_norm"] = mode
    if (
        scheduled_epochs(config, data.category) == 0
        and config.train.phase1_epochs + config.train.phase2_epochs
    ):
        overrides.update({"train.phase1_epochs": 0, "train.phase2_epochs": 0})
    if not overrides:
        return config
    return config.with_overrides(overrides, source=f"class {data.name}")


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


def fit(
    config: Config,
    data: ClassData,
    *,
    validate: Validator | None = None,
    on_epoch: EpochCallback | None = None,
    resume: dict | None = None,
) -> TrainedModel:
    """Train one class model; returns the model (eval mode, on the train device) and its bank.

    With 0 epochs (``train.phase1_epochs = train.phase2_epochs = 0``) no weight changes: the bank
    is built from the pretrained backbone's features, validated once and reported as epoch 0.
    """
    config = class_config(config, data)
    t = config.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    if t.phase1_epochs + t.phase2_epochs == 0:
        return _frozen(config, data, device=device, validate=validate, on_epoch=on_epoch)
    dataset = make_pretext(config, data)
    batch = min(t.batch_size, len(dataset))
    generator = torch.Generator().manual_seed(t.seed)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=t.workers,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    steps = len(loader)
    model = build_model(config).to(device)
    feature = config.memory.feature
    bank = MemoryBank(
        model.feature_dim(feature),
        size=config.memory.bank_size,
        metric=config.memory.metric,
        backend=config.memory.backend,
        index=config.memory.index,
        device=(device.index or 0) if device.type == "cuda" else 0,
    )
    fifo = bank_fill(config, data.category) == "fifo"
    history: list[EpochReport] = []
    start_epoch = 0
    total = t.phase1_epochs + t.phase2_epochs
    opt = sched = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        if fifo:  # a final bank is rebuilt from the weights, never carried over
            bank.add(resume["bank"].numpy())
        history = [EpochReport(**h) for h in resume["history"]]
        start_epoch = int(resume["epoch"])
        generator.set_state(resume["generator"])
        if start_epoch < total:
            opt, sched = _optimizer(model, config, _phase_of(start_epoch, config), steps)
            if resume["phase"] == _phase_of(start_epoch, config):
                opt.load_state_dict(resume["optimizer"])
                sched.load_state_dict(resume["scheduler"])

    def checkpoint(epoch: int, phase: int) -> Callable[[], dict]:
        def state() -> dict:
            return {
                "epoch": epoch,
                "phase": phase,
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "optimizer": copy.deepcopy(opt.state_dict()),  # a snapshot, not live buffers
                "scheduler": sched.state_dict(),
                "bank": torch.from_numpy(bank.vectors.copy()),
                "history": [asdict(h) for h in history],
                "generator": generator.get_state(),
            }

        return state

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    for epoch in range(start_epoch, total):
        phase = _phase_of(epoch, config)
        if opt is None or epoch == t.phase1_epochs:  # each phase starts its own SGD + cosine
            opt, sched = _optimizer(model, config, phase, steps)
        # lr 0: forward passes only (train mode: phase 2 re-estimates BatchNorm statistics)
        learning = (t.phase1_lr if phase == 1 else t.phase2_lr) > 0
        _set_phase_mode(model, phase)
        dataset.set_epoch(epoch)
        tic = time.perf_counter()
        loss_sum = correct = seen = 0
        normal_z = []
        bar = tqdm(
            loader,
            desc=f"{data.name} ep {epoch + 1}/{total} (phase {phase})",
            leave=False,
            disable=not t.progress,
            dynamic_ncols=True,
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast, torch.set_grad_enabled(learning):
                l2, l3, l4 = model.features(x)
                z = model.embed_features(l2, l3, l4)
                logits = model.classify(z)
            loss = F.cross_entropy(logits.float(), y)
            if learning:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            pred = logits.argmax(dim=1)
            if fifo:  # the seed's bank: normal samples the classifier calls normal
                v = z if feature == "embedding" else model.backbone_descriptor(l2, l3, l4)
                v = v.float()
                bank.add(v[(y == 0) & (pred == 0)].detach())
                normal_z.append(v[y == 0].detach())
            loss_sum += loss.item() * len(y)
            correct += (pred == y).sum().item()
            seen += len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        epoch_loss = loss_sum / max(seen, 1)
        if not math.isfinite(epoch_loss):  # before the bank and validation spend time on it
            raise FloatingPointError(
                f"{data.name}: training diverged at epoch {epoch + 1} (loss {epoch_loss})"
            )
        if fifo and len(bank) == 0:  # the classifier called no normal sample normal
            log.warning(
                "%s epoch %d: no normal sample predicted normal; banking all y=0",
                data.name,
                epoch + 1,
            )
            bank.add(torch.cat(normal_z))
        bank.trim()
        metrics: dict[str, float] = {}
        last = epoch == total - 1
        validating = validate is not None and (
            last or (t.val_every > 0 and (epoch + 1) % t.val_every == 0)
        )
        if not fifo and (validating or last):
            bank = build_bank(model, dataset.images, config, device=device)
        elif config.eval.position_norm != "none" and (validating or last):
            bank.positions = fifo_positions(model, dataset.images, bank, config, device=device)
        if validating:
            model.eval()
            metrics = validate(model, bank)
        report = EpochReport(
            epoch=epoch + 1,
            phase=phase,
            loss=epoch_loss,
            accuracy=correct / max(seen, 1),
            lr=opt.param_groups[0]["lr"],
            seconds=time.perf_counter() - tic,
            bank_size=len(bank),
            metrics=metrics,
        )
        history.append(report)
        if on_epoch is not None:
            on_epoch(report, TrainedModel(model, bank, history, checkpoint(epoch + 1, phase)))
    model.eval()
    return TrainedModel(model=model, bank=bank, history=history)


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
