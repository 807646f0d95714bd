"""Scale on paper: 15 MVTec classes × 100 trials on one 8-GPU node and on 4 nodes.

Nothing here is measured on a GPU (this machine has none). The per-unit costs are the ones the
benchmarks measured on this machine's CPU (one thread per library), read from their JSON files;
everything else is an **assumption**, named in ``ASSUMPTIONS`` and printed with the table:

- measured (CPU, 1 thread): pure training step per sample in patch mode, phase 1 and 2
  (``benchmarks/results/train-step.json``); pretext synthesis per sample (same file); windows
  scoring per window, kNN over an 8000-vector bank and the map included
  (``benchmarks/results/scoring.json``); worker start-up per trial, MLflow hook seconds per trial
  and per epoch, driver CPU per reported epoch and in-trial seconds per epoch outside
  ``train.fit``'s epoch (checkpoint, artifacts, reporting) (``results/study-overhead.json``: the
  study-overhead measurement, docs/experiments.md); checkpoint size (the model's state and SGD
  momentum);
- the trial: ``studies/mvtec.yaml`` (256 px, patch mode, 32 px windows at stride 8, 10 + 50
  epochs of 500 samples, validation every epoch, ``memory.fill: auto`` — a final bank rebuilt
  over every training window of an object class at every validation — ASHA grace 10 /
  reduction 3, 4 CPUs and 1/4 GPU per trial), with MVTec AD's per-class image counts;
- assumed: the GPU's speed-up over one CPU thread here for this model's work, the node's CPU
  count, a remote MLflow server's cost over SQLite, the shared storage bandwidth, ASHA's compute
  share (synchronous successive halving for the spec's rungs; async ASHA stops fewer).

Usage::

    python -m experiments.scale [--speedup 50] [--out experiments/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

__all__ = ["ASSUMPTIONS", "MVTEC", "estimate", "main", "markdown", "measured"]

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BENCH_RESULTS = REPO / "benchmarks" / "results"  # train-step.json, scoring.json

# MVTec AD (Bergmann et al., CVPR 2019): normal training images and test images per class.
MVTEC = {
    "bottle": (209, 83),
    "cable": (224, 150),
    "capsule": (219, 132),
    "carpet": (280, 117),
    "grid": (264, 78),
    "hazelnut": (391, 110),
    "leather": (245, 124),
    "metal_nut": (220, 115),
    "pill": (267, 167),
    "screw": (320, 160),
    "tile": (230, 117),
    "toothbrush": (60, 42),
    "transistor": (213, 100),
    "wood": (247, 79),
    "zipper": (240, 151),
}
TEXTURES = {"carpet", "grid", "leather", "tile", "wood"}  # memory.fill auto: FIFO bank

ASSUMPTIONS: dict[str, Any] = {
    "trials_per_class": 100,
    "gpu_speedup": 50.0,  # model work (train steps, window forwards + kNN) on one GPU vs 1 thread
    "gpus_per_node": 8,
    "cpus_per_node": 112,  # e.g. a DGX H100: 2 × 56 cores
    "remote_tracking_factor": 3.0,  # MLflow server over HTTP vs the SQLite file measured here
    "storage_gb_per_s": 2.0,  # shared storage write bandwidth for Tune's checkpoints
}


def _load(name: str, folder: Path = BENCH_RESULTS) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise SystemExit(f"{path} missing: run the benchmark that writes it first (README.md)")
    return json.loads(path.read_text())


def measured() -> dict[str, Any]:
    """The per-unit CPU costs from the benchmarks' JSON files."""
    step = next(
        r
        for r in _load("train-step.json")["end_to_end"]
        if r["mode"] == "patch" and r["workers"] == 0
    )
    batch = step["sizes"]["batch"]
    scoring = next(r for r in _load("scoring.json")["pairs"] if r["name"].startswith("scoring"))
    windows_per_image = 13 * 13  # 128 px, 32 px windows, stride 8
    overhead = _load("study-overhead.json", RESULTS)["study"]
    study = next(r for r in overhead if not r["reuse_actors"])
    reused = next(r for r in overhead if r["reuse_actors"])
    return {
        "train_s_per_sample_phase1": step["phase1"]["pure_s_per_step"] / batch,
        "train_s_per_sample_phase2": step["phase2"]["pure_s_per_step"] / batch,
        "synthesis_s_per_sample": step["data_s_per_batch_in_process"] / batch,
        "window_s": 1.0 / (scoring["sizes"]["windows_images_per_s"] * windows_per_image),
        "startup_s_per_trial": study["startup_s_new_worker"],
        "startup_s_per_trial_reused": reused["startup_s_reused_worker"],
        "tracking_s_per_trial": study["tracking_s_per_trial"],
        "tracking_s_per_epoch": study["tracking_s_per_epoch"],
        # Tune's loop outside the hooks (scheduling, searcher, experiment snapshots); older
        # results: the driver process's whole CPU (Ray's threads included: an upper bound)
        "driver_cpu_s_per_epoch": (study.get("driver_loop_other_cpu_s") or study["driver_cpu_s"])
        / study["epochs"],
        "in_trial_s_per_epoch": (study["trial_seconds"] - study["fit_epoch_seconds"])
        / study["epochs"],
        "checkpoint_mb": _checkpoint_mb(),
    }


def _checkpoint_mb() -> float:
    """Model state + SGD momentum of the default SSADNet (what every epoch's checkpoint holds)."""
    from ssad.model import SSADNet

    state = SSADNet().state_dict()
    model = sum(t.numel() * t.element_size() for t in state.values())
    params = sum(p.numel() * p.element_size() for p in SSADNet().parameters())
    return (model + params) / 2**20


def estimate(
    m: dict[str, Any], a: dict[str, Any], spec, *, nodes: int, reuse: bool = True
) -> dict[str, Any]:
    """Expected wall time of the study (``spec``: studies/mvtec.yaml) on ``nodes`` nodes and
    what bounds it: the largest of the slot, GPU, driver and storage times."""
    from experiments.early_stopping import asha_share

    t, ev = spec.base.train, spec.base.eval
    size, patch, stride = spec.base.data.image_size, spec.base.pretext.patch_size, ev.patch_stride
    grid = ((size - patch) // stride + 1) ** 2
    share, rungs = asha_share(spec.max_epochs, spec.grace_period, spec.reduction_factor)
    epochs = spec.max_epochs * share  # per trial, on average
    p1 = min(t.phase1_epochs, epochs)
    s, k = a["gpu_speedup"], a["remote_tracking_factor"]
    workers = t.workers
    per_class = {}
    for name, (n_train, n_test) in MVTEC.items():
        samples = max(t.min_samples, n_train)
        val = round(n_test * spec.base.data.val_fraction)
        windows = (val + (0 if name in TEXTURES else n_train)) * grid
        train_gpu = samples * (
            p1 * m["train_s_per_sample_phase1"] + (epochs - p1) * m["train_s_per_sample_phase2"]
        )
        gpu = (train_gpu + epochs * windows * m["window_s"]) / s
        rebuild = 0 if name in TEXTURES else epochs * n_train * grid * m["window_s"] / s
        synth = epochs * samples * m["synthesis_s_per_sample"]
        # train.workers 0: synthesis runs serially before each step; with DataLoader workers it
        # overlaps the steps (P1: 0.99 of the pure step with one worker and a core to spare)
        steps = train_gpu / s + synth if workers == 0 else max(train_gpu / s, synth / workers)
        cpu_side = epochs * m["in_trial_s_per_epoch"]
        startup = m["startup_s_per_trial_reused" if reuse else "startup_s_per_trial"]
        per_class[name] = {
            "gpu_s": gpu,
            "slot_s": gpu - train_gpu / s + steps + cpu_side + startup,
            "synthesis_s": synth,
            "train_gpu_s": train_gpu / s,
            "bank_rebuild_gpu_s": rebuild,
        }
    trials = a["trials_per_class"] * len(MVTEC)
    per_trial_gpu = sum(c["gpu_s"] for c in per_class.values()) / len(MVTEC)
    per_trial_slot = sum(c["slot_s"] for c in per_class.values()) / len(MVTEC)
    slots = nodes * min(int(a["gpus_per_node"] / spec.gpu), int(a["cpus_per_node"] / spec.cpu))
    bounds = {
        "slots (trial processes)": trials * per_trial_slot / slots,
        "GPU": trials * per_trial_gpu / (nodes * a["gpus_per_node"]),
        "driver + tracking": trials
        * (
            k * m["tracking_s_per_trial"]
            + epochs * (k * m["tracking_s_per_epoch"] + m["driver_cpu_s_per_epoch"])
        ),
        "checkpoint storage": trials * epochs * m["checkpoint_mb"] / 1024 / a["storage_gb_per_s"],
    }
    wall = max(bounds.values())
    train_gpu = sum(c["train_gpu_s"] for c in per_class.values()) / len(MVTEC)
    synth = sum(c["synthesis_s"] for c in per_class.values()) / len(MVTEC)
    rebuild = sum(c["bank_rebuild_gpu_s"] for c in per_class.values()) / len(MVTEC)
    return {
        "nodes": nodes,
        "reuse_actors": reuse,
        "trials": trials,
        "concurrent_trials": slots,
        "asha_share": share,
        "asha_rungs": rungs,
        "epochs_per_trial": epochs,
        "per_trial_gpu_s": per_trial_gpu,
        "per_trial_slot_s": per_trial_slot,
        "train_step_gpu_s_per_trial": train_gpu,
        "synthesis_s_per_trial": synth,
        "train_workers": workers,
        "bank_rebuild_share_of_gpu": rebuild / per_trial_gpu,
        "bounds_s": bounds,
        "wall_s": wall,
        "bottleneck": max(bounds, key=bounds.get),
        "utilisation": {k2: v / wall for k2, v in bounds.items()},
    }


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def markdown(out: dict[str, Any]) -> str:
    m, a = out["measured"], out["assumptions"]
    lines = [
        "| setup | concurrent trials | slot-bound | GPU-bound | driver + tracking busy "
        "| checkpoint writes | expected wall | bottleneck |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in out["estimates"]:
        b = e["bounds_s"]
        label = f"{e['nodes']} node{'s' if e['nodes'] > 1 else ''} × {a['gpus_per_node']} GPUs"
        if e.get("speedup") != a["gpu_speedup"]:
            label += f", GPU speed-up {e['speedup']:.0f}×"
        if not e["reuse_actors"]:
            label += ", a new Ray worker per trial"
        if e.get("tracking_factor") != a["remote_tracking_factor"]:
            label += f", tracking {e['tracking_factor']:.0f}× SQLite's cost"
        lines.append(
            f"| {label} | {e['concurrent_trials']} | {_h(b['slots (trial processes)'])} "
            f"| {_h(b['GPU'])} | {_h(b['driver + tracking'])} | {_h(b['checkpoint storage'])} "
            f"| **{_h(e['wall_s'])}** | {e['bottleneck']} |"
        )
    e = out["estimates"][0]
    lines += [
        "",
        f"Per trial (mean over classes, ASHA share {e['asha_share']:.2f} → "
        f"{e['epochs_per_trial']:.0f} of 60 epochs): GPU work {e['per_trial_gpu_s']:.0f} s "
        f"(training steps {e['train_step_gpu_s_per_trial']:.1f} s; rebuilding the final bank "
        f"over every training window at every validation "
        f"{100 * e['bank_rebuild_share_of_gpu']:.0f} %; the rest validation windows), pretext "
        f"synthesis on the CPU {e['synthesis_s_per_trial']:.1f} s, "
        f"slot time {e['per_trial_slot_s']:.0f} s. Measured inputs (CPU, 1 thread): training "
        f"{1e3 * m['train_s_per_sample_phase1']:.2f} / {1e3 * m['train_s_per_sample_phase2']:.2f} "
        f"ms per sample (phase 1 / 2), synthesis {1e3 * m['synthesis_s_per_sample']:.2f} ms per "
        f"sample, windows scoring {1e3 * m['window_s']:.2f} ms per window, worker start-up "
        f"{m['startup_s_per_trial']:.1f} s per trial ({m['startup_s_per_trial_reused']:.1f} s "
        f"reused), tracking {1e3 * m['tracking_s_per_trial']:.0f} ms per trial + "
        f"{1e3 * m['tracking_s_per_epoch']:.0f} ms per epoch, driver CPU "
        f"{1e3 * m['driver_cpu_s_per_epoch']:.0f} ms per epoch, in-trial checkpoint/artifacts "
        f"{m['in_trial_s_per_epoch']:.2f} s per epoch, checkpoint {m['checkpoint_mb']:.0f} MB. "
        f"Assumed: GPU speed-up {a['gpu_speedup']:.0f}× over one thread, {a['cpus_per_node']} "
        f"CPUs per node, remote MLflow {a['remote_tracking_factor']:.0f}× SQLite's cost, "
        f"{a['storage_gb_per_s']:.0f} GB/s shared storage. The spec's train.workers: "
        f"{e['train_workers']} (synthesis {'serial with the steps' if e['train_workers'] == 0 else 'overlapping the steps'}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speedup", type=float, default=ASSUMPTIONS["gpu_speedup"])
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    from ssad.study.spec import load_spec

    m = measured()
    a = {**ASSUMPTIONS, "gpu_speedup": args.speedup}
    spec = load_spec(REPO / "studies" / "mvtec.yaml")
    estimates = []
    k = a["remote_tracking_factor"]
    for speedup, nodes, reuse, tracking in (
        (args.speedup, 1, True, k),
        (args.speedup, 4, True, k),
        (args.speedup, 4, False, k),
        (args.speedup, 4, True, 1.0),
        (args.speedup / 2.5, 1, True, k),
        (args.speedup / 2.5, 4, True, k),
    ):
        assumed = {**a, "gpu_speedup": speedup, "remote_tracking_factor": tracking}
        e = estimate(m, assumed, spec, nodes=nodes, reuse=reuse)
        e.update(speedup=speedup, tracking_factor=tracking)
        estimates.append(e)
    out = {"measured": m, "assumptions": a, "estimates": estimates}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    text = markdown(out)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
