"""Which stages the window descriptor pools, and one more image-score rule: validation only.

Scores the validation split of the models ``scoring_variants.py`` caches (the ``cpu`` preset's
training, ``--models``; trained first where missing) with windows against a final bank (coreset to
``memory.bank_size``, k 1), changing only the window descriptor and the image score:

- descriptor: pooled stages, each L2-normalised and concatenated: ``l234`` (layer2/3/4, the
  preset's ``memory.feature: backbone``), ``l1234`` (layer1 added), ``l123`` (layer4 dropped);
- image score: ``max`` of the smoothed map (the preset's), ``maxmed`` = max minus the map's
  median (the peak over the image's own typical level).

Per (class, seed): validation image AUROC (all defects and per defect type) and pixel AUROC, in
``experiments/results/descriptor-variants.json``::

    python -m experiments.descriptor_variants --seeds 0 1 2
    python -m experiments.descriptor_variants --table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from experiments.scoring_variants import embed_windows, sweep
from ssad.data.images import read_image
from ssad.data.synthetic import SYNTHETIC_CLASSES
from ssad.localize import grid_starts, smooth_maps, upsample_grid
from ssad.memory import MemoryBank
from ssad.model import SSADNet
from ssad.pipeline import load_data, splits

RESULTS = Path(__file__).parent / "results" / "descriptor-variants.json"
STAGES = {"l234": (1, 2, 3), "l1234": (0, 1, 2, 3), "l123": (0, 1, 2)}
WIDTHS = (64, 128, 256, 512)  # layer1..layer4 of ResNet-18


class _Stages(torch.nn.Module):
    """``describe`` for ``window_embeddings``: the raw pooled layer1..layer4 features, concatenated."""

    def __init__(self, model: SSADNet) -> None:
        super().__init__()
        self.model = model

    def describe(self, x: torch.Tensor, feature: str = "") -> torch.Tensor:
        m = self.model
        l1 = m.layer1(m.stem(x))
        l2 = m.layer2(l1)
        l3 = m.layer3(l2)
        return torch.cat(
            [F.adaptive_avg_pool2d(l1, 1).flatten(1), *m.pooled(l2, l3, m.layer4(l3))], 1
        )


def _descriptor(raw: np.ndarray, stages: tuple[int, ...]) -> np.ndarray:
    """The chosen stages of ``raw`` (layer1..layer4 columns), each L2-normalised, concatenated."""
    starts = np.cumsum([0, *WIDTHS])
    cols = [raw[:, starts[s] : starts[s + 1]] for s in stages]
    parts = [c / (np.linalg.norm(c, axis=1, keepdims=True) + 1e-12) for c in cols]
    return np.concatenate(parts, 1).astype(np.float32)


def run_one(model: SSADNet, cfg, seed: int) -> dict:
    train, val, _ = splits(cfg, load_data(cfg))
    size, patch, stride = cfg.data.image_size, cfg.pretext.patch_size, cfg.eval.patch_stride
    images = np.stack([read_image(p, size) for p in train.train])
    net = _Stages(model).eval()

    with torch.no_grad():
        bank_raw, query_raw = (
            embed_windows(net, x, patch=patch, stride=stride) for x in (images, val.images)
        )
    n, g = len(val.images), len(grid_starts(size, patch, stride))
    kinds = np.array([name.split("/")[0] for name in val.names])
    good = kinds == "good"
    gt = val.masks[:, ::2, ::2].ravel()  # pixel AUROC on every other pixel
    out: dict = {}
    for name, stages in STAGES.items():
        bank = MemoryBank(sum(WIDTHS[s] for s in stages), size=cfg.memory.bank_size, backend="cpu")
        bank.add(_descriptor(bank_raw, stages))
        bank.subsample(method="coreset", seed=seed)
        grid = bank.score(_descriptor(query_raw, stages), cfg.memory.k).reshape(n, g, g)
        maps = smooth_maps(upsample_grid(grid, size=size, patch=patch, stride=stride), 4.0)
        flat = maps.reshape(n, -1)
        pixel = float(roc_auc_score(gt, maps[:, ::2, ::2].ravel()))
        for rule, s in (("max", flat.max(1)), ("maxmed", flat.max(1) - np.median(flat, 1))):
            per_kind = {
                k: float(roc_auc_score(~good[good | (kinds == k)], s[good | (kinds == k)]))
                for k in sorted(set(kinds) - {"good"})
            }
            out[f"{name}|{rule}"] = {
                "image": float(roc_auc_score(val.labels, s)),
                "pixel": pixel,
                "kinds": per_kind,
            }
    return out


def table() -> str:
    runs = json.loads(RESULTS.read_text())["runs"]
    classes = list(dict.fromkeys(r["class"] for r in runs))
    keys = list(runs[0]["val"])
    base = keys[0]
    lines = [
        "| descriptor \\| image score | "
        + " | ".join(classes)
        + " | mean ± std over seeds | pixel AUROC | paired vs l234 · max (wins / losses) |",
        "|---|" + "---:|" * (len(classes) + 3),
    ]
    for key in keys:
        per = [np.mean([r["val"][key]["image"] for r in runs if r["class"] == c]) for c in classes]
        diff = np.array([r["val"][key]["image"] - r["val"][base]["image"] for r in runs])
        pixel = np.mean([r["val"][key]["pixel"] for r in runs])
        cells = " | ".join(f"{v:.3f}" for v in per)
        by_seed = [  # the mean over classes of each seed: its spread is the row's ± std
            np.mean([r["val"][key]["image"] for r in runs if r["seed"] == s])
            for s in sorted({r["seed"] for r in runs})
        ]
        lines.append(
            f"| {key.replace('|', ' · ')} | {cells} | {np.mean(per):.3f} ± {np.std(by_seed, ddof=1):.3f} "
            f"| {pixel:.3f} | "
            f"{diff.mean():+.4f} ({(diff > 5e-4).sum()} / {(diff < -5e-4).sum()}) |"
        )
    seeds = {c: sorted(r["seed"] for r in runs if r["class"] == c) for c in classes}
    lines.append(f"\nSeeds per class: {seeds}")
    for cls in classes:  # per defect type, the preset's descriptor and rule
        kinds = next(r for r in runs if r["class"] == cls)["val"][base]["kinds"]
        values = {k: [r["val"][base]["kinds"][k] for r in runs if r["class"] == cls] for k in kinds}
        cells = ", ".join(
            f"{k} {np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" for k, v in values.items()
        )
        lines.append(f"- {cls} (l234 · max, per defect type): {cells}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", nargs="+", default=list(SYNTHETIC_CLASSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data", type=Path, default=Path("runs/data/noise/v2"))
    p.add_argument("--models", type=Path, default=Path("runs/explore"))
    p.add_argument("--table", action="store_true", help="print the README table and exit")
    args = p.parse_args()
    if not args.table:
        sweep(RESULTS, args, lambda model, _fifo, cfg, seed: run_one(model, cfg, seed))
    print(table())


if __name__ == "__main__":
    main()
