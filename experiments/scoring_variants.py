"""What the bank should hold and how to score it, on trained models: validation only.

Trains the ``cpu`` preset per (class, seed) once (``memory.fill: fifo``, so the seed's FIFO bank of
projection-head embeddings is kept) and saves the weights and that bank under ``--models``; then,
from the same weights, scores the validation split with windows against:

- ``fifo-z``: the FIFO bank collected in training (projection-head embeddings z);
- ``final-<feature>``: a bank rebuilt from the final weights over every training window, coreset
  to ``memory.bank_size``, of ``z`` (the head's output), ``fusion`` (the fusion layer's output,
  before the head) or ``pooled_ln`` (pooled layer2/3/4 features, each stage L2-normalised:
  ``memory.feature: backbone``);

each at k 1 and 3 and with the top-k and max-of-smoothed-map image scores. Validation image AUROC
per class (and pixel AUROC) go to ``experiments/results/scoring-variants.json``::

    python -m experiments.scoring_variants --seeds 0 1
    python -m experiments.scoring_variants --table
    python -m experiments.scoring_variants --untrained   # control: the preset's bank, no training
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ssad.bank import build_bank
from ssad.config import load_config
from ssad.data.images import read_image, to_tensor
from ssad.data.synthetic import SYNTHETIC_CLASSES, generate
from ssad.evaluate import evaluate
from ssad.localize import (
    grid_starts,
    image_score_from_map,
    smooth_maps,
    upsample_grid,
    window_embeddings,
)
from ssad.memory import MemoryBank
from ssad.model import SSADNet
from ssad.pipeline import load_data, splits
from ssad.train import build_model, fit

RESULTS = Path(__file__).parent / "results" / "scoring-variants.json"
FEATURES = ("z", "fusion", "pooled_ln")


def _config(root: Path, cls: str, seed: int, **overrides: object):
    """The preset as trained here (FIFO bank of embeddings kept), ``overrides`` on top."""
    return load_config(
        preset="cpu",
        overrides={
            "data.root": str(root),
            "data.class_name": cls,
            "train.seed": seed,
            "train.progress": False,
            "train.val_every": 0,
            "memory.fill": "fifo",
            "memory.feature": "embedding",
            "eval.position_norm": "none",
            **overrides,
        },
    )


def _trained(path: Path, cfg) -> tuple[SSADNet, np.ndarray]:
    if not path.is_file():
        tic = time.process_time()
        tr = fit(cfg, splits(cfg, load_data(cfg))[0])
        state = {"model": tr.model.state_dict(), "bank": torch.from_numpy(tr.bank.vectors)}
        torch.save({**state, "cpu_s": time.process_time() - tic}, path)
    ck = torch.load(path, weights_only=True)
    model = build_model(cfg)
    model.load_state_dict(ck["model"])
    return model.eval(), ck["bank"].numpy()


class _Feature(torch.nn.Module):
    """``describe`` of one feature kind, for ``window_embeddings``: ``z`` and ``pooled_ln`` are
    ``SSADNet.describe``'s ``embedding`` and ``backbone``; ``fusion`` is the fusion layer's output."""

    def __init__(self, model: SSADNet, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def describe(self, x: torch.Tensor, feature: str = "") -> torch.Tensor:
        m = self.model
        if self.kind == "fusion":
            return m.fusion(torch.cat(m.pooled(*m.features(x)), dim=1))
        return m.describe(x, "embedding" if self.kind == "z" else "backbone")


def embed_windows(net: torch.nn.Module, x: np.ndarray, *, patch: int, stride: int) -> np.ndarray:
    """``window_embeddings`` of RGB uint8 images (N, S, S, 3), 16 images at a time: (N * G², D)."""
    return np.concatenate(
        [
            np.asarray(window_embeddings(net, to_tensor(x[i : i + 16]), patch=patch, stride=stride))
            for i in range(0, len(x), 16)
        ]
    )


def run_one(model: SSADNet, fifo: np.ndarray, cfg, seed: int) -> dict[str, list[float]]:
    train, val, _ = splits(cfg, load_data(cfg))
    size, patch, stride = cfg.data.image_size, cfg.pretext.patch_size, cfg.eval.patch_stride
    images = np.stack([read_image(p, size) for p in train.train])
    n, g = len(val.images), len(grid_starts(size, patch, stride))
    gt = val.masks[:, ::2, ::2].ravel()  # pixel AUROC on every other pixel
    out: dict[str, list[float]] = {}

    def score(name: str, vectors: np.ndarray, q: np.ndarray) -> None:
        bank = MemoryBank(vectors.shape[1], size=cfg.memory.bank_size, backend="cpu")
        bank.add(vectors)
        bank.subsample(method="coreset", seed=seed)
        for k in (1, 3):
            grid = bank.score(q, k).reshape(n, g, g)
            maps = smooth_maps(upsample_grid(grid, size=size, patch=patch, stride=stride), 4.0)
            for rule in ("topk", "max"):
                s = image_score_from_map(maps if rule == "max" else grid, mode=rule, topk=10)
                pixel = roc_auc_score(gt, maps[:, ::2, ::2].ravel())
                out[f"{name}|k{k}|{rule}"] = [float(roc_auc_score(val.labels, s)), float(pixel)]

    with torch.no_grad():
        for kind in FEATURES:
            net = _Feature(model, kind)
            q = embed_windows(net, val.images, patch=patch, stride=stride)
            if kind == "z":
                score("fifo-z", fifo, q)
            plain = embed_windows(net, images, patch=patch, stride=stride)
            score(f"final-{kind}", plain, q)
    return out


def untrained(root: Path, classes: list[str]) -> None:
    """Control: the preset's final bank and scoring on the untrained network (seed 0, random
    init, eval mode), per bank feature: what training adds to the descriptor."""
    for cls in classes:
        row = []
        for feature in ("backbone", "embedding"):
            cfg = _config(root, cls, 0, **{"memory.fill": "final", "memory.feature": feature})
            train, val, _ = splits(cfg, load_data(cfg))
            torch.manual_seed(0)
            model = build_model(cfg).eval()
            images = [read_image(p, cfg.data.image_size) for p in train.train]
            cpu = torch.device("cpu")
            m = evaluate(model, build_bank(model, images, cfg, device=cpu), val, cfg, device=cpu)
            row.append(f"{feature} {m['image_auroc']:.3f} / {m['pixel_auroc']:.3f}")
        print(f"| {cls} | " + " | ".join(row) + " |", flush=True)


def sweep(results: Path, args: argparse.Namespace, score) -> None:
    """``score(model, fifo_bank, cfg, seed)`` on the cached model of every (class, seed) in
    ``args`` not yet in ``results`` (training and caching it first), one JSON row each."""
    if not (args.data / "ssad_classes.yaml").is_file():
        generate(args.data, seed=0, size=256)
    args.models.mkdir(parents=True, exist_ok=True)
    runs = json.loads(results.read_text())["runs"] if results.is_file() else []
    done = {(r["class"], r["seed"]) for r in runs}
    for seed in args.seeds:
        for cls in args.classes:
            if (cls, seed) in done:
                continue
            cfg = _config(args.data, cls, seed)
            model, fifo = _trained(args.models / f"{cls}-{seed}.pt", cfg)
            runs.append({"class": cls, "seed": seed, "val": score(model, fifo, cfg, seed)})
            results.write_text(json.dumps({"runs": runs}))
            print(cls, seed, flush=True)


def table() -> str:
    runs = json.loads(RESULTS.read_text())["runs"]
    classes = list(dict.fromkeys(r["class"] for r in runs))
    keys = sorted(set.intersection(*(set(r["val"]) for r in runs)))
    rows = []
    for key in keys:
        per = [np.mean([r["val"][key][0] for r in runs if r["class"] == c]) for c in classes]
        pixel = np.mean([r["val"][key][1] for r in runs])
        rows.append((float(np.mean(per)), key, per, pixel))
    seeds = {c: sorted(r["seed"] for r in runs if r["class"] == c) for c in classes}
    head = "| bank \\| k \\| image score | " + " | ".join(classes) + " | mean | pixel AUROC |"
    lines = [head, "|---|" + "---:|" * (len(classes) + 2)]
    for mean, key, per, pixel in sorted(rows, reverse=True):
        cells = " | ".join(f"{v:.3f}" for v in per)
        lines.append(f"| {key.replace('|', ' · ')} | {cells} | {mean:.3f} | {pixel:.3f} |")
    lines.append(f"\nSeeds per class: {seeds}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", nargs="+", default=list(SYNTHETIC_CLASSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--data", type=Path, default=Path("runs/data/noise/v2"))
    p.add_argument("--models", type=Path, default=Path("runs/explore"))
    p.add_argument("--table", action="store_true", help="print the README table and exit")
    p.add_argument("--untrained", action="store_true", help="the untrained control, then exit")
    args = p.parse_args()
    if args.table:
        print(table())
        return
    if args.untrained:
        untrained(args.data, args.classes)
        return
    sweep(RESULTS, args, run_one)
    print(table())


if __name__ == "__main__":
    main()
