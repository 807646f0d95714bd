"""P1, data-bound? An end-to-end training step against the pure model step on ready tensors.

The end-to-end step is ``train.fit``'s inner loop as it runs: the ``DataLoader`` that ``fit``
builds over the pretext data set (synthesis on the fly: crop, colour jitter, defect, tensor),
``.to(device)``, forward, loss, backward, SGD + cosine step, the FIFO bank update and the
``.item()`` reads. The pure step is the same loop body on batches drawn beforehand (ready
tensors). Both run on the same model, in interleaved blocks of steps (A B, B A, …), for each
phase (1: backbone frozen, 2: all trained) and each ``pretext.mode`` at the ``cpu`` preset's sizes
(its batch; image mode: whole images, patch mode: its patches). The phase set-up (which parameters
train, SGD, cosine schedule) is :func:`phase_setup`, written as ``train.fit`` sets each phase up.

ratio = pure step seconds / end-to-end step seconds (medians) = end-to-end samples/s over pure
samples/s; target (issue P1): >= 0.9. ``train.workers`` is ssad's DataLoader worker count (default
0: synthesis runs in the training process, serially before every step); ``workers=1`` moves it
to one background process (a config change, no code change).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ssad.config import Config, load_config
from ssad.data.pretext import PretextDataset
from ssad.data.synthetic import make_sample
from ssad.memory import MemoryBank
from ssad.train import build_model

__all__ = ["TARGET", "bench_train_step"]

TARGET = 0.9  # end-to-end samples/s >= 0.9 x pure model-step samples/s
Row = dict[str, object]


# smoke-test sizes: a small ResNet-18 from random weights builds in a second
QUICK = {
    "data.image_size": 32,
    "pretext.patch_size": 16,
    "model.backbone": "resnet18",
    "model.weights": "none",
}


def _config(mode: str, batch: int, workers: int, quick: bool = False) -> Config:
    return load_config(
        preset="cpu",
        overrides={
            "pretext.mode": mode,
            "train.batch_size": batch,
            "train.workers": workers,
            **(QUICK if quick else {}),
        },
    )


def phase_setup(model: torch.nn.Module, config: Config, phase: int, steps: int):
    """``train.fit``'s set-up of a phase: phase 1 trains the fusion layer, head and classifier
    on a frozen backbone (BatchNorm statistics included), phase 2 everything; SGD with momentum
    and weight decay, cosine schedule over the phase's steps. Returns (optimizer, scheduler)."""
    t = config.train
    model.train()
    frozen = phase == 1
    for p in model.backbone().parameters():
        p.requires_grad_(not frozen)
    if frozen:
        model.backbone().eval()
    params = [p for p in model.parameters() if p.requires_grad]
    lr, epochs = (t.phase1_lr, t.phase1_epochs) if frozen else (t.phase2_lr, t.phase2_epochs)
    opt = torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    return opt, sched


def brick_pretext(config: Config, length: int) -> PretextDataset:
    """brick (a texture: cut-paste fills from another class, FIFO bank) at the config's size."""
    size = config.data.image_size
    samples = [make_sample("brick", split="train", index=i, size=size) for i in range(8)]
    sources = [make_sample("gravel", split="train", index=i, size=size).image for i in range(4)]
    return PretextDataset(
        [s.image for s in samples],
        config=config,
        fg_masks=[s.foreground for s in samples],
        sources=sources,
        length=length,
        seed=config.train.seed,
    )


def _loader(dataset: PretextDataset, config: Config, device: torch.device) -> DataLoader:
    """The DataLoader exactly as ``train.fit`` builds it."""
    t = config.train
    return DataLoader(
        dataset,
        batch_size=min(t.batch_size, len(dataset)),
        shuffle=True,
        drop_last=True,
        num_workers=t.workers,
        generator=torch.Generator().manual_seed(t.seed),
        pin_memory=device.type == "cuda",
    )


class _Trainer:
    """One model + optimizer + FIFO bank; ``step(x, y)`` is ``train.fit``'s loop body."""

    def __init__(self, config: Config, device: torch.device, steps_per_epoch: int) -> None:
        torch.manual_seed(config.train.seed)
        self.config, self.device, self.steps = config, device, steps_per_epoch
        self.model = build_model(config).to(device)
        self.bank = MemoryBank(
            config.model.embedding_dim, size=config.memory.bank_size, backend="cpu", index="flat"
        )
        self.phase(1)

    def phase(self, phase: int) -> None:
        self.opt, self.sched = phase_setup(self.model, self.config, phase, self.steps)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        z = self.model.embed(x)
        logits = self.model.classify(z)
        loss = F.cross_entropy(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        pred = logits.argmax(dim=1)
        self.bank.add(z[(y == 0) & (pred == 0)].detach())  # brick: memory.fill auto = fifo
        loss.item()  # fit's host syncs: the running loss and accuracy
        (pred == y).sum().item()
        if len(self.bank) > 4 * self.config.memory.bank_size:
            self.bank.trim()  # fit trims at epoch end; keep this long loop's bank bounded too


def _timed_block(step: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        tic = time.perf_counter()
        step()
        out.append(time.perf_counter() - tic)
    return out


def _measure(
    mode: str, workers: int, *, batch: int, rounds: int, block: int, ready: int, quick: bool
) -> dict[str, object]:
    """Interleaved blocks of end-to-end and pure steps, per phase; medians per step."""
    device = torch.device("cpu")
    config = _config(mode, batch, workers, quick)
    steps_needed = 2 * rounds * block + ready + 4  # both phases, warm-ups, ready batches
    dataset = brick_pretext(config, length=batch * steps_needed * 2)
    loader = _loader(dataset, config, device)
    batches: Iterator = iter(loader)
    tic = time.perf_counter()
    first = next(batches)  # worker start-up (workers > 0) is paid once per epoch
    first_batch_s = time.perf_counter() - tic
    fixed = [first] + [next(batches) for _ in range(ready - 1)]  # the pure step's ready tensors
    trainer = _Trainer(config, device, steps_per_epoch=len(loader))
    k = 0

    def end_to_end() -> None:
        x, y = next(batches)
        trainer.step(x, y)

    def pure() -> None:
        nonlocal k
        x, y = fixed[k % len(fixed)]
        k += 1
        trainer.step(x, y)

    out: dict[str, object] = {"first_batch_s": first_batch_s}
    for phase in (1, 2):
        trainer.phase(phase)
        pure()  # warm-up (allocations, autograd graph of this phase)
        end_to_end()
        samples: dict[str, list[float]] = {"end_to_end": [], "pure": []}
        for r in range(rounds):
            order = ("end_to_end", "pure") if r % 2 == 0 else ("pure", "end_to_end")
            for name in order:
                samples[name] += _timed_block(end_to_end if name == "end_to_end" else pure, block)
        e2e, pure_s = statistics.median(samples["end_to_end"]), statistics.median(samples["pure"])
        out[f"phase{phase}"] = {
            "end_to_end_s_per_step": e2e,
            "pure_s_per_step": pure_s,
            "end_to_end_samples_per_s": batch / e2e,
            "pure_samples_per_s": batch / pure_s,
            "ratio": pure_s / e2e,
            "ratio_sum": sum(samples["pure"]) / sum(samples["end_to_end"]),
            "steps_each": len(samples["pure"]),
        }
    return out


def _data_seconds_per_batch(mode: str, batch: int, n: int, quick: bool) -> float:
    """Seconds to synthesise one batch in the training process (workers=0), median of ``n``."""
    config = _config(mode, batch, 0, quick)
    it = iter(_loader(brick_pretext(config, length=batch * (n + 1)), config, torch.device("cpu")))
    next(it)
    times = []
    for _ in range(n):
        tic = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


def bench_train_step(quick: bool) -> list[Row]:
    """P1 rows: per pretext mode and ``train.workers`` (0: ssad's default, 1: the fix)."""
    preset = load_config(preset="cpu").train
    batch = 8 if quick else preset.batch_size
    epochs = (preset.phase1_epochs, preset.phase2_epochs)
    rows = []
    for mode in ("image", "patch"):
        cfg = _config(mode, batch, 0, quick)
        heavy = mode == "image" and not quick  # whole-image steps take seconds each on 2 cores
        rounds, block = (3, 2) if heavy else (4, 4) if not quick else (2, 1)
        data_s = _data_seconds_per_batch(mode, batch, 3 if quick else 8, quick)
        for workers in (0, 1):
            m = _measure(
                mode, workers, batch=batch, rounds=rounds, block=block, ready=4, quick=quick
            )
            phases = {p: m[f"phase{p}"] for p in (1, 2)}
            for p in phases.values():  # what serial synthesis predicts: pure / (pure + data)
                p["serial_prediction"] = p["pure_s_per_step"] / (p["pure_s_per_step"] + data_s)
            # the whole cpu-preset schedule: phase-1 and phase-2 epochs weighted by their steps
            e1, e2 = epochs
            schedule = (e1 * phases[1]["pure_s_per_step"] + e2 * phases[2]["pure_s_per_step"]) / (
                e1 * phases[1]["end_to_end_s_per_step"] + e2 * phases[2]["end_to_end_s_per_step"]
            )
            rows.append(
                {
                    "kind": "end_to_end",
                    "name": f"P1 training step, {mode} mode",
                    "mode": mode,
                    "workers": workers,
                    "sizes": {
                        "batch": batch,
                        "input_px": cfg.data.image_size
                        if mode == "image"
                        else cfg.pretext.patch_size,
                        "class": "brick",
                        "model": f"cpu preset SSADNet ({cfg.model.backbone})",
                    },
                    "data_s_per_batch_in_process": data_s,
                    "first_batch_s": m["first_batch_s"],
                    "phase1": phases[1],
                    "phase2": phases[2],
                    "ratio_phase1": phases[1]["ratio"],
                    "ratio_phase2": phases[2]["ratio"],
                    "ratio_schedule": schedule,
                    "schedule_epochs": {"phase1": e1, "phase2": e2},
                    "target": TARGET,
                    "met": all(p["ratio"] >= TARGET for p in phases.values()),
                }
            )
    return rows
