"""Run every benchmark once, side by side: JSON + markdown results and a printed table.

Every benchmark compares two or more variants in one process and reports their ratios; the test
suite smoke-runs each one with ``quick`` sizes (tests/test_benchmarks.py). Usage::

    python -m benchmarks.run [--quick] [--threads N] [--only knn aupro] [--out benchmarks/results.json]
    python benchmarks/run.py --quick

``--threads`` defaults to 1: on a shared 2-core machine two threads per library oversubscribe the
cores and small ops become 10-100× slower and erratic (see README.md); ``--threads 0`` keeps the
libraries' defaults.

Ratios are baseline seconds / our seconds (best of N per call): > 1 means ssad's version is faster.
The markdown table is also written next to the JSON file (``results.md``).

``train_step`` (P1: end-to-end step / pure step, ~2 min) and ``large_bank`` (P2, ~9 min) have
their own rows. ``gpu`` needs CUDA: without it, it is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cases import BENCHMARKS, Row
from benchmarks.gpu import NoGPU
from benchmarks.timing import machine_info, set_threads

__all__ = ["BENCHMARKS", "main", "markdown", "ratios", "run"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def run(
    *, quick: bool, only: list[str] | None = None, threads: int | None = None
) -> dict[str, object]:
    """All (or the ``only`` named) benchmarks in one process; returns the JSON-ready results."""
    names = only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if threads is not None:
        set_threads(threads)
    info = machine_info()
    rows: list[Row] = []
    wall: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in names:
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        try:
            rows += BENCHMARKS[name](quick)
        except NoGPU as exc:
            skipped[name] = str(exc)
            print(f"[bench] {name} skipped: {exc}", file=sys.stderr, flush=True)
            continue
        wall[name] = time.perf_counter() - tic
        print(f"[bench] {name} done in {wall[name]:.1f} s", file=sys.stderr, flush=True)
    return {
        "machine": info,
        "quick": quick,
        "timing": "seconds per call: best (minimum) and median of interleaved repeats",
        "ratio": "baseline_s / ours_s (best of N); > 1 means ours is faster",
        "wall_s": wall,
        "skipped": skipped,
        "pairs": [r for r in rows if r["kind"] == "pair"],
        "throughput": [r for r in rows if r["kind"] == "throughput"],
        "end_to_end": [r for r in rows if r["kind"] == "end_to_end"],
    }


def ratios(row: Row) -> list[float]:
    """The ratios a result row reports: baseline / ours for a pair, data / training samples/s
    for pretext throughput, pure / end-to-end step for P1."""
    keys = {
        "pair": ("ratio", "ratio_median"),
        "throughput": ("data_over_train_phase1", "data_over_train_phase2"),
        "end_to_end": ("ratio_phase1", "ratio_phase2", "ratio_schedule"),
    }[row["kind"]]
    return [float(row[k]) for k in keys]


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def _sizes(sizes: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items() if k != "model")


def markdown(results: dict[str, object]) -> str:
    """Tables: implementation pairs (with ratios), data-vs-training throughput and the P1
    end-to-end step (those present), and the benchmarks skipped."""
    m = results["machine"]
    lines = [
        f"Machine: {m['processor']}, {m['cpu_usable']} usable of {m['cpu_count']} CPUs, "
        f"threads torch/faiss/OpenCV/BLAS {m['torch_threads']}/{m['faiss_omp_threads']}/"
        f"{m['opencv_threads']}/{','.join(map(str, m['blas_threads']))}, "
        f"load average {m['load_average_1_5_15']}; torch {m['versions']['torch']}, "
        f"numpy {m['versions']['numpy']}, faiss {m['versions']['faiss']}"
        + (" — QUICK sizes (smoke test)" if results["quick"] else ""),
    ]
    lines += _pair_lines(results["pairs"])
    lines += _throughput_lines(results["throughput"])
    lines += _end_to_end_lines(results.get("end_to_end", []))
    for name, why in results.get("skipped", {}).items():
        lines += ["", f"Skipped {name}: {why}."]
    lines += [
        "",
        "Ratio = baseline time / our time (best of N, median in brackets); > 1: ours is faster. "
        "'not equivalent' rows compute a different map (speed reference only). Data / train > 1: "
        "generating a batch is faster than training on it. P1 ratio = pure model step time / "
        "end-to-end step time (synthesis + DataLoader + the same step; medians of interleaved "
        "blocks); serial prediction = pure / (pure + data s/batch in process). "
        "Shared CPUs: timings are noisy.",
    ]
    return "\n".join(lines) + "\n"


def _pair_lines(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "| benchmark | ours | baseline | sizes | baseline | ours | ratio best (median) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        baseline = r["baseline"] if r["equivalent"] else f"{r['baseline']} *(not equivalent)*"
        if "ours_value" in r:
            baseline += f" (AUPRO {r['baseline_value']:.4f} vs ours {r['ours_value']:.4f})"
        ours = r["ours"]
        if "pixel_auroc_ratio" in r:  # another bank: its speed and quality against the exact one
            ours += (
                f" ({r['sizes']['images_per_s']:.0f} images/s vs "
                f"{r['sizes']['exact_images_per_s']:.0f}; pixel AUROC {r['pixel_auroc']:.4f} = "
                f"{r['pixel_auroc_ratio']:.4f} of exact, image AUROC {r['image_auroc']:.3f} = "
                f"{r['image_auroc_ratio']:.3f} of exact)"
            )
        if "recall_at_k" in r:  # an approximate method: how much of the exact answer it finds
            ours += (
                f" (recall@{r['sizes']['k']} {r['recall_at_k']:.4f}, built in {r['build_s']:.0f} s)"
            )
        lines.append(
            f"| {r['name']} | {ours} | {baseline} | {_sizes(r['sizes'])} "
            f"| {_seconds(r['baseline_s'])} | {_seconds(r['ours_s'])} "
            f"| **{r['ratio']:.1f}×** ({r['ratio_median']:.1f}×) |"
        )
    return lines


def _throughput_lines(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "| pretext data (DataLoader, workers=0) | sizes | data samples/s "
        "| ms/sample: defect + to_tensor | train samples/s phase 1 / phase 2 "
        "| data / train phase 1 / phase 2 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        split = r["data_ms_per_sample_split"]
        lines.append(
            f"| {r['name']} | {_sizes(r['sizes'])} | {r['data_samples_per_s']:.0f} "
            f"| {split['defect_ms']:.2f} + {split['to_tensor_ms']:.2f} "
            f"| {r['train_phase1_samples_per_s']:.0f} / {r['train_phase2_samples_per_s']:.0f} "
            f"| {r['data_over_train_phase1']:.1f}× / {r['data_over_train_phase2']:.1f}× |"
        )
    return lines


def _end_to_end_lines(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "| P1 training step (cpu preset model, brick) | train.workers | sizes "
        "| data s/batch in process | phase 1: end-to-end / pure samples/s "
        "| phase 2: end-to-end / pure samples/s | ratio phase 1 / phase 2 (target ≥ 0.9) "
        "| serial prediction phase 1 / phase 2 | ratio over the preset's schedule |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p1, p2 = r["phase1"], r["phase2"]
        sizes = {k: v for k, v in r["sizes"].items() if k != "model"}
        lines.append(
            f"| {r['name']} | {r['workers']} | {_sizes(sizes)} "
            f"| {_seconds(r['data_s_per_batch_in_process'])} "
            f"| {p1['end_to_end_samples_per_s']:.0f} / {p1['pure_samples_per_s']:.0f} "
            f"| {p2['end_to_end_samples_per_s']:.0f} / {p2['pure_samples_per_s']:.0f} "
            f"| **{p1['ratio']:.2f}** / **{p2['ratio']:.2f}** {'✓' if r['met'] else '✗'} "
            f"| {p1['serial_prediction']:.2f} / {p2['serial_prediction']:.2f} "
            f"| {r['ratio_schedule']:.2f} ({r['schedule_epochs']['phase1']} + "
            f"{r['schedule_epochs']['phase2']} epochs) |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for torch, faiss, OpenCV and BLAS (default 1: stable on shared CPUs; "
        "0: the libraries' own defaults, usually one per core)",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"subset of {list(BENCHMARKS)}")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, only=args.only, threads=args.threads or None)
    table = markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"results: {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
