"""The detector's CUDA path on a real GPU: training and scoring with ``train.device: auto``.

Checks what the CPU machines cannot: ``auto`` resolves to CUDA, the ``cpu`` preset trains and
scores there in fp32 and with ``train.precision: bf16`` (autocast), with pretext synthesis in
DataLoader workers or in the training process, and the FAISS backend the bank picked. Each run is
:func:`benchmarks.noise.run_one` (train once, then score val and test with the fifo / final /
dense banks), so its numbers sit beside the CPU tables in ``benchmarks/results/noise-*.json``.
Runs go in a fixed order until ``--budget`` seconds are spent; the JSON is rewritten after each::

    python -m benchmarks.gpu --out benchmarks/results/gpu-h200.json [--budget 330]
    python -m benchmarks.gpu --table benchmarks/results/gpu-h200.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import faiss
import torch

from benchmarks.noise import run_one
from ssad.data.synthetic import generate
from ssad.train import resolve_device

# (class, precision, train.workers): the worker comparison first, then a texture and an object
PLAN = [
    ("gravel", "fp32", 0),
    ("gravel", "fp32", 8),
    ("gravel", "bf16", 8),
    ("hex_nut", "fp32", 8),
    ("hex_nut", "bf16", 8),
    ("grass", "fp32", 8),
    ("grass", "bf16", 8),
    ("brick", "fp32", 8),
    ("brick", "bf16", 8),
]


def environment() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpus": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "faiss_gpus": faiss.get_num_gpus(),
        "auto_device": str(resolve_device("auto")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    p.add_argument("--budget", type=float, default=330.0, help="start no run after this many s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", type=Path, help="print the README table of a result file and exit")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    env = environment()
    print(env, flush=True)
    if env["auto_device"] == "cpu":
        raise SystemExit("torch sees no CUDA device: this benchmark is for a GPU machine")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate(root, classes=sorted({c for c, _, _ in PLAN}), seed=0, size=256)
        res = {"environment": env, "generate_s": time.perf_counter() - start, "runs": []}
        for cls, precision, workers in PLAN:
            if time.perf_counter() - start > args.budget:
                break
            torch.cuda.reset_peak_memory_stats()
            overrides = {"train.precision": precision, "train.workers": workers}
            run = run_one(
                cls,
                args.seed,
                roots={"new": root, "old": root},
                overrides=overrides,
                per_epoch=False,
            )
            run.update(
                precision=precision,
                workers=workers,
                peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20,
            )
            res["runs"].append(run)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(res, indent=1))
            print(_row(run), flush=True)
    print(table(res))


def table(res: dict) -> str:
    env = res["environment"]
    lines = [
        f"{env['gpu']}, torch {env['torch']} (CUDA {env['torch_cuda']}), {env['cpus']} CPU "
        f"threads, faiss {env['faiss']} ({env['faiss_gpus']} GPUs), seed {res['runs'][0]['seed']}",
        "",
        "| class | precision | train.workers | train wall s | val image AUROC | test image / "
        "pixel AUROC | AUPRO | windows img/s | dense img/s | peak GPU MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(lines + [_row(r) for r in res["runs"]])


def _row(r: dict) -> str:
    """One run's table row (also the progress line): windows with the final bank, dense."""
    f = r["final"]
    return (
        f"| {r['class']} | {r['precision']} | {r['workers']} | {r['wall_train_s']:.1f} | "
        f"{f['val']['image_auroc']:.3f} | {f['test']['image_auroc']:.3f} / "
        f"{f['test']['pixel_auroc']:.3f} | {f['test']['aupro']:.3f} | "
        f"{f['test_images_per_s']:.0f} | {r['dense']['test_images_per_s']:.0f} | "
        f"{r['peak_gpu_mib']:.0f} |"
    )


if __name__ == "__main__":
    main()
