"""A preset's quality and cost per class and seed: validation and test metrics, CPU-s, images/s.

For every (class, seed): ``train.fit`` (training, if any, and the bank; no validation inside) is
timed in process CPU seconds, then the validation and test splits are scored with the bank
(``score_images``, maps included; test images/s in wall seconds). Validation decides, test is
reported. Results go to ``experiments/results/preset-<name>.json``::

    python -m experiments.preset_quality --name cpu --seeds 0 1 2            # the cpu preset
    python -m experiments.preset_quality --name seed-recipe --seeds 0 1 2 \\
        --set train.phase1_epochs=2 --set train.phase2_epochs=4
    python -m experiments.preset_quality --table experiments/results/preset-cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ssad.config import load_config, parse_overrides
from ssad.data.synthetic import SYNTHETIC_CLASSES, generate
from ssad.evaluate import load_samples, score_images
from ssad.metrics import compute_all
from ssad.pipeline import load_data, splits
from ssad.train import fit, resolve_device

RESULTS = Path(__file__).parent / "results"
KEYS = ("image_auroc", "pixel_auroc", "aupro")


def run_one(root: Path, cls: str, seed: int, *, preset: str, overrides: dict) -> dict:
    cfg = load_config(
        preset=preset,
        overrides={
            **overrides,
            "data.root": str(root),
            "data.class_name": cls,
            "train.seed": seed,
            "train.progress": False,
        },
    )
    data = load_data(cfg)
    train, val, test = splits(cfg, data)
    device = resolve_device(cfg.train.device)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trained = fit(cfg, train)
    fit_cpu, fit_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = {"class": cls, "seed": seed, "fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall}
    for split, images in (("val", val), ("test", load_samples(test, cfg.data.image_size))):
        tic = time.perf_counter()
        scored = score_images(trained.model, trained.bank, images.images, cfg, device=device)
        seconds = time.perf_counter() - tic
        m = compute_all(
            labels=images.labels, scores=scored.scores, masks=images.masks, maps=scored.maps
        )
        out[split] = {k: m[k] for k in KEYS}
        out[f"{split}_images_per_s"] = len(images.images) / seconds
    return out


def _mean_std(values: list[float], digits: int = 3) -> str:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.{digits}f} ± {std:.{digits}f}"


def table(results: dict) -> str:
    """Per class: mean ± std over seeds of val/test metrics, fit CPU-s and test images/s; the
    last row averages the classes per seed, then gives mean ± std over the seeds."""
    rows = results["runs"]
    lines = [
        "| class | seeds | val image AUROC | test image AUROC | test pixel AUROC | test AUPRO "
        "| fit CPU-s | test images/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fields = {
        "val image": lambda r: r["val"]["image_auroc"],
        "test image": lambda r: r["test"]["image_auroc"],
        "test pixel": lambda r: r["test"]["pixel_auroc"],
        "test aupro": lambda r: r["test"]["aupro"],
        "cpu": lambda r: r["fit_cpu_s"],
        "ips": lambda r: r["test_images_per_s"],
    }
    classes = list(dict.fromkeys(r["class"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    groups = {cls: [[r for r in rows if r["class"] == cls]] for cls in classes}
    groups["mean over classes"] = [[r for r in rows if r["seed"] == s] for s in seeds]
    for name, parts in groups.items():
        if name == "mean over classes":
            v = {
                k: [float(np.mean([f(r) for r in part])) for part in parts]
                for k, f in fields.items()
            }
        else:
            v = {k: [f(r) for r in parts[0]] for k, f in fields.items()}
        lines.append(
            f"| {name} | {len(v['cpu'])} | {_mean_std(v['val image'])} "
            f"| {_mean_std(v['test image'])} | {_mean_std(v['test pixel'])} "
            f"| {_mean_std(v['test aupro'])} | {np.mean(v['cpu']):.0f} | {np.mean(v['ips']):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="cpu")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--classes", nargs="+", default=list(SYNTHETIC_CLASSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data", type=Path, default=Path("runs/data/synthetic-v2-0"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", type=Path, help="print the table of a results file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    if not (args.data / "ssad_classes.yaml").is_file():
        generate(args.data, seed=0)
    overrides = parse_overrides(args.overrides)
    out = RESULTS / f"preset-{args.name}.json"
    results = {
        "preset": args.preset,
        "overrides": overrides,
        "threads": args.threads,
        "machine": {"cpus": torch.get_num_threads()},
        "runs": [],
    }
    for cls in args.classes:
        for seed in args.seeds:
            r = run_one(args.data, cls, seed, preset=args.preset, overrides=overrides)
            results["runs"].append(r)
            print(
                f"{cls} seed {seed}: val {r['val']['image_auroc']:.3f} test "
                + " ".join(f"{k} {r['test'][k]:.3f}" for k in KEYS)
                + f" fit {r['fit_cpu_s']:.0f} CPU-s, {r['test_images_per_s']:.0f} images/s",
                flush=True,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
