"""The signal a study optimises: seed noise, epoch-to-epoch jitter and quality per scoring mode.

One training per (class, seed) serves every variant: training does not depend on the bank, so the
model is trained once with the seed's FIFO bank kept, and each evaluation rebuilds what its variant
needs from the same weights:

- ``fifo``: windows scored against the FIFO bank collected during training (the seed's method);
- ``final``: windows scored against the bank rebuilt from the final weights (``memory.fill: final``);
- ``dense``: dense layer2+layer3 features against a coreset bank of training positions;
- ``shift`` / ``dense_shift``: ``final`` / ``dense`` with each position's score re-centred on
  its own normal level (``eval.position_norm: shift``; results from before it was added lack
  these variants).

``--per-epoch`` validates every epoch: ``before`` = the fifo bank on the old 20-image validation
split (a data set generated with the old test counts), ``after`` = the final bank on the enlarged
validation split (plus its moving average, the ASHA-facing metric). Validation decides; test
metrics are reported. Results go to ``experiments/results/noise-<name>.json``::

    python -m experiments.noise --name demo --classes brick gelcap --seeds 0 1 2 3 4 --per-epoch \
        --set train.phase2_epochs=10 --set train.min_samples=1024
    python -m experiments.noise --name preset --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ssad.bank import build_bank
from ssad.config import load_config, parse_overrides
from ssad.data.images import read_image
from ssad.data.synthetic import SYNTHETIC_CLASSES, generate
from ssad.evaluate import evaluate, load_samples
from ssad.pipeline import load_data, splits
from ssad.study.tune.trial import EMA_DECAY
from ssad.train import bank_fill, fit, position_norm, resolve_device

RESULTS = Path(__file__).parent / "results"
KEYS = ("image_auroc", "pixel_auroc", "aupro")
VARIANTS = {  # name → overrides of the trained config (memory.fill: fifo keeps the FIFO bank)
    "fifo": {},
    "final": {"memory.fill": "final"},
    "dense": {"memory.fill": "final", "eval.scoring": "dense"},
    "shift": {"memory.fill": "final", "eval.position_norm": "shift"},
    "dense_shift": {"memory.fill": "final", "eval.scoring": "dense", "eval.position_norm": "shift"},
}  # eval.position_norm is none unless a variant sets it, whatever the preset's is
LABELS = {  # variant → its README row label
    "fifo": "windows, fifo bank",
    "final": "windows, final bank",
    "dense": "dense, final bank",
    "shift": "windows, final bank, position shift",
    "dense_shift": "dense, final bank, position shift",
}


def _data(root: Path, *, old: bool) -> Path:
    counts = {"n_test_good": 16, "n_test_per_defect": 8} if old else {}
    if not (root / "ssad_classes.yaml").is_file():
        generate(root, seed=0, size=256, **counts)
    return root


def run_one(cls: str, seed: int, *, roots: dict[str, Path], overrides: dict, per_epoch: bool):
    cfg = load_config(
        preset="cpu",
        overrides={
            "data.root": str(roots["new"]),
            "data.class_name": cls,
            "train.seed": seed,
            "train.progress": False,
            "train.val_every": 1 if per_epoch else 0,
            "memory.fill": "fifo",
            "eval.position_norm": "none",
            "eval.tsne": False,
            "eval.heatmaps": 0,
            **overrides,
        },
    )
    device = resolve_device(cfg.train.device)  # train.device: auto → CUDA when torch sees one
    train, val, test = splits(cfg, load_data(cfg))
    test = load_samples(test, cfg.data.image_size)
    old_cfg = cfg.with_overrides({"data.root": str(roots["old"])})
    _, val_old, _ = splits(old_cfg, load_data(old_cfg))
    images = [read_image(p, cfg.data.image_size) for p in train.train]
    curves: dict[str, list[dict]] = {"before": [], "after": []}
    cpu_val = wall_val = 0.0

    def validate(model, fifo_bank) -> dict[str, float]:
        nonlocal cpu_val, wall_val
        tic, wall = time.process_time(), time.perf_counter()
        curves["before"].append(evaluate(model, fifo_bank, val_old, cfg, device=device))
        final_cfg = cfg.with_overrides(VARIANTS["final"])
        bank = build_bank(model, images, final_cfg, device=device)
        curves["after"].append(evaluate(model, bank, val, final_cfg, device=device))
        cpu_val += time.process_time() - tic
        wall_val += time.perf_counter() - wall
        return {}

    tic, wall = time.process_time(), time.perf_counter()
    trained = fit(cfg, train, validate=validate if per_epoch else None)
    cpu_train = time.process_time() - tic - cpu_val
    out = {
        "class": cls,
        "seed": seed,
        "cpu_train_s": cpu_train,
        "wall_train_s": time.perf_counter() - wall - wall_val,
        "curves": {k: [{m: r[m] for m in KEYS} for r in v] for k, v in curves.items()},
    }
    for name, extra in VARIANTS.items():
        vcfg = cfg.with_overrides(extra)
        tic = time.process_time()
        bank = (
            trained.bank
            if name == "fifo"
            else build_bank(trained.model, images, vcfg, device=device)
        )
        cpu_bank = time.process_time() - tic
        res = {"cpu_bank_s": cpu_bank, "bank": len(bank)}
        for split, data in (("val", val), ("test", test)):
            t0, c0 = time.perf_counter(), time.process_time()
            m = evaluate(trained.model, bank, data, vcfg, device=device)
            wall = time.perf_counter() - t0
            res[split] = {k: m[k] for k in KEYS}
            res[f"{split}_images_per_s"] = len(data.images) / wall
            res[f"{split}_cpu_s"] = time.process_time() - c0
        out[name] = res
    return out


def ema(values: list[float], decay: float = EMA_DECAY) -> list[float]:
    out: list[float] = []
    for v in values:
        out.append(v if not out else decay * out[-1] + (1 - decay) * v)
    return out


def summarise(runs: list[dict]) -> dict:
    """Per class: mean ± std over seeds of each variant's metrics; seed std and epoch jitter."""
    summary: dict = {}
    for cls in dict.fromkeys(r["class"] for r in runs):
        rs = [r for r in runs if r["class"] == cls]
        s: dict = {"seeds": len(rs), "cpu_train_s": float(np.mean([r["cpu_train_s"] for r in rs]))}
        for name in (v for v in VARIANTS if v in rs[0]):  # variants the runs have
            for split in ("val", "test"):
                for k in KEYS:
                    vals = [r[name][split][k] for r in rs]
                    s[f"{name}.{split}.{k}"] = (float(np.mean(vals)), float(np.std(vals, ddof=1)))
            s[f"{name}.images_per_s"] = float(np.mean([r[name]["test_images_per_s"] for r in rs]))
        for curve in ("before", "after"):
            series = [[e["image_auroc"] for e in r["curves"][curve]] for r in rs]
            if not series[0]:
                continue
            variants = {curve: series}
            if curve == "after":
                variants["after_ema"] = [ema(x) for x in series]
            for label, xs in variants.items():
                s[f"{label}.seed_std_final"] = float(np.std([x[-1] for x in xs], ddof=1))
                s[f"{label}.epoch_jitter"] = float(np.mean([np.abs(np.diff(x)).mean() for x in xs]))
                s[f"{label}.epoch_jitter_max"] = float(max(np.abs(np.diff(x)).max() for x in xs))
        summary[cls] = s
    return summary


def _pm(stat: tuple[float, float]) -> str:
    mean, std = stat
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"  # one seed: no spread


def overall(runs: list[dict]) -> dict:
    """Test metrics over all classes: per seed the mean over classes, then mean and std over the
    seeds, and the mean CPU-seconds of training per class; ``auto`` = ``memory.fill: auto``'s
    choice per class (fifo for textures, final for objects), ``position_auto`` = the final bank
    with ``eval.position_norm: auto``'s choice (shift for objects in a fixed place), the others
    one variant everywhere."""
    seeds = sorted({r["seed"] for r in runs})
    classes = list(dict.fromkeys(r["class"] for r in runs))
    # the rules train.py applies for auto (whatever the preset sets), under windows scoring
    auto = load_config(
        preset="scratch",
        overrides={"memory.fill": "auto", "eval.scoring": "windows", "eval.position_norm": "auto"},
    )
    rules = {"auto": {c: bank_fill(auto, SYNTHETIC_CLASSES[c][0]) for c in classes}}
    if "shift" in runs[0]:
        rules["position_auto"] = {
            c: "shift" if position_norm(auto, *SYNTHETIC_CLASSES[c]) == "shift" else "final"
            for c in classes
        }
    out = {}
    for label in (*rules, *(v for v in VARIANTS if v in runs[0])):
        chosen = rules.get(label, dict.fromkeys(classes, label))
        per_seed = {k: [] for k in KEYS}
        for seed in seeds:
            rs = [r for r in runs if r["seed"] == seed]
            if len(rs) != len(classes):
                continue  # a seed not run for every class
            for k in KEYS:
                per_seed[k].append(np.mean([r[chosen[r["class"]]]["test"][k] for r in rs]))
        out[label] = {
            k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"))
            for k, v in per_seed.items()
        }
    out["cpu_train_s"] = float(np.mean([r["cpu_train_s"] for r in runs]))
    return out


def markdown(name: str) -> str:
    """README tables from ``results/noise-<name>.json``."""
    data = json.loads((RESULTS / f"noise-{name}.json").read_text())
    every = overall(data["runs"])
    summary, lines = data["summary"], []
    head = "| class | seeds | scoring | val image AUROC | test image AUROC | test pixel AUROC | test AUPRO | images/s |"
    lines += [head, "|---|---:|---|---:|---:|---:|---:|---:|"]
    order = list(SYNTHETIC_CLASSES)
    summary = {c: summary[c] for c in sorted(summary, key=order.index)}
    for cls, s in summary.items():
        for v, label in LABELS.items():
            if f"{v}.images_per_s" not in s:
                continue
            lines.append(
                f"| {cls} | {s['seeds']} | {label} | {_pm(s[f'{v}.val.image_auroc'])} | "
                + " | ".join(_pm(s[f"{v}.test.{k}"]) for k in KEYS)
                + f" | {s[f'{v}.images_per_s']:.0f} |"
            )
    lines += [
        "",
        "| over all classes (test; mean over classes, ± std over seeds) | image AUROC | pixel AUROC | AUPRO |",
        "|---|---:|---:|---:|",
    ]
    everywhere = {v: w if v.startswith("dense") else f"{w} everywhere" for v, w in LABELS.items()}
    for label, what in (
        ("auto", "windows, memory.fill auto (fifo textures, final objects)"),
        ("position_auto", "windows, final bank, eval.position_norm auto (shift fixed objects)"),
        *everywhere.items(),
    ):
        if label not in every:
            continue
        lines.append(f"| {what} | " + " | ".join(_pm(every[label][k]) for k in KEYS) + " |")
    lines.append(f"\nTraining: {every['cpu_train_s']:.0f} CPU-s per class (mean over runs).")
    if any("before.seed_std_final" in s for s in summary.values()):
        lines += [
            "",
            "| class | seeds | val image AUROC | seed std (final epoch) | mean abs epoch-to-epoch change | largest change |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for cls, s in summary.items():
            for label, what in (
                ("before", "fifo bank, old split (20 images)"),
                ("after", "final bank, enlarged split (75 images)"),
                ("after_ema", f"the same, moving average ({EMA_DECAY})"),
            ):
                std = s[f"{label}.seed_std_final"]
                lines.append(
                    f"| {cls} | {s['seeds']} | {what} | {'n/a' if np.isnan(std) else f'{std:.3f}'} | "
                    f"{s[f'{label}.epoch_jitter']:.3f} | {s[f'{label}.epoch_jitter_max']:.3f} |"
                )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--classes", nargs="+", default=list(SYNTHETIC_CLASSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--per-epoch", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--data", type=Path, default=Path("runs/data/noise"))
    p.add_argument("--table", action="store_true", help="print the README tables and exit")
    args = p.parse_args()
    if args.table:
        print(markdown(args.name))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    roots = {
        "new": _data(args.data / "v2", old=False),
        "old": _data(args.data / "v1", old=True),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"noise-{args.name}.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    done = {(r["class"], r["seed"]) for r in runs}
    overrides = parse_overrides(args.overrides)
    for seed in args.seeds:  # every class once before the next seed
        for cls in args.classes:
            if (cls, seed) in done:
                continue
            tic = time.perf_counter()
            runs.append(
                run_one(cls, seed, roots=roots, overrides=overrides, per_epoch=args.per_epoch)
            )
            r = runs[-1]
            print(
                f"{cls} seed {seed}: "
                + " ".join(f"{n} val {r[n]['val']['image_auroc']:.3f}" for n in VARIANTS)
                + f" ({time.perf_counter() - tic:.0f}s)",
                flush=True,
            )
            path.write_text(
                json.dumps({"overrides": overrides, "runs": runs, "summary": summarise(runs)})
            )
    print(json.dumps(summarise(runs), indent=1))


if __name__ == "__main__":
    main()
