"""P4, study overhead: driver and tracking time against trial time, parallel efficiency, peak RSS.

A small real study (``run_study``: local Ray, SQLite MLflow in a temp dir, per-class Optuna, no
ASHA) on a 64 px synthetic data set, observed from outside by :mod:`benchmarks.studies`. Reported:

- **tracking share** = seconds the driver spent inside the MLflow callback's hooks (they run on
  Tune's event loop) / Σ trial seconds (Tune's ``time_total_s`` of every trial); target <= 2 %;
- **driver share** = the driver process's CPU seconds during ``Tuner.fit`` (Tune's loop, its
  experiment snapshots, the hooks) / Σ trial seconds; also the Ray daemons' CPU seconds;
- **parallel efficiency** = Σ trial seconds / (wall × max_concurrent); target >= 0.85; and the
  runner's own figure (MLflow run spans, what ``ssad study run`` prints);
- **idle slot share** = (wall × max_concurrent − Σ trial seconds) / Σ trial seconds, and the fixed
  cost per trial it comes from (the span the driver saw minus the trial's own time: actor start,
  imports), so the efficiency of longer trials can be projected;
- **peak RSS per trial** (the trial's Ray worker, ``getrusage`` at the trial's end).

Usage::

    python benchmarks/study_overhead.py [--classes 2] [--trials 4] [--out benchmarks/results/study-overhead.json]
    python benchmarks/run.py --only study
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.studies import (
    base_overrides,
    instrumented_study,
    local_ray,
    make_data,
    per_trial,
    write_spec,
)

__all__ = ["bench_study", "main", "markdown", "measure"]

TARGETS = {"tracking_share": 0.02, "driver_share": 0.02, "parallel_efficiency": 0.85}
CLASSES = ["brick", "gelcap"]
Row = dict[str, Any]


def measure(
    *,
    classes: int = 2,
    trials: int = 4,
    concurrent: int = 2,
    min_samples: int = 256,
    epochs: tuple[int, int] = (1, 3),
    reuse_actors: bool = True,
) -> Row:
    """Run the study once (a fresh local Ray); returns one result row (``kind="study"``)."""
    names = CLASSES[:classes]
    with tempfile.TemporaryDirectory(prefix="ssad-bench-study-") as tmp:
        folder = Path(tmp)
        tic = time.perf_counter()
        data = make_data(folder / "data", names, n_train=8, n_test_good=8, per_defect=4)
        data_s = time.perf_counter() - tic
        spec = write_spec(
            folder / "study",
            data_root=data,
            name="overhead",
            classes=names,
            base={"preset": "cpu", "overrides": base_overrides(min_samples, epochs)},
            num_samples=trials,
            max_concurrent=concurrent,
            scheduler={"type": "none"},
        )
        with local_ray(num_cpus=concurrent):
            raw = instrumented_study(spec, reuse_actors=reuse_actors)
    return summarise(raw, data_s=data_s)


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def summarise(raw: dict[str, Any], *, data_s: float = 0.0) -> Row:
    spec, out, fit = raw["spec"], raw["out"], raw["fit"]
    trials = per_trial(raw)
    wall, conc, n = fit["wall_s"], spec.max_concurrent, max(len(trials), 1)
    trial_s = sum(t["time_total_s"] for t in trials)
    hooks = {k: {"calls": len(v), "total_s": sum(v), "mean_ms": 1e3 * sum(v) / len(v)}
             for k, v in raw["hooks"].items() if v}  # fmt: skip
    hook_s = sum(h["total_s"] for h in hooks.values())
    epochs = sum(t["epochs"] for t in trials)
    rss = [t["peak_rss_mb"] for t in trials if t["peak_rss_mb"] is not None]
    per_trial_hooks = sum(
        hooks.get(k, {}).get("total_s", 0.0) for k in ("on_trial_start", "on_trial_complete")
    )
    reuse = raw["reuse_actors"]
    row: Row = {
        "kind": "study",
        "name": "P4 study overhead",
        "variant": "as ssad runs it (reuse_actors)" if reuse else "a new Ray worker per trial",
        "reuse_actors": reuse,
        "sizes": {
            "classes": len(spec.classes),
            "trials": len(trials),
            "max_concurrent": conc,
            "epochs_per_trial": spec.max_epochs,
            "image_px": spec.base.data.image_size,
            "min_samples": spec.base.train.min_samples,
            "scheduler": spec.scheduler,
            "tracking": "SQLite (MLflow) in a temp dir",
        },
        "wall_s": wall,
        "run_study_s": raw["run_study_s"],
        "after_fit_s": raw["run_study_s"] - wall,  # preflight + leaderboard, dashboard, summary
        "data_generation_s": data_s,
        "trial_seconds": trial_s,
        "fit_epoch_seconds": sum(t["fit_epoch_s"] for t in trials),
        "mean_trial_s": trial_s / n,
        "epochs": epochs,
        "hooks": hooks,
        "tracking_s": hook_s,
        "tracking_share": hook_s / trial_s,
        "driver_cpu_s": fit["driver_cpu_s"],
        "driver_share": fit["driver_cpu_s"] / trial_s,
        "ray_daemons_cpu_s": raw["ray_system_cpu_s"],
        "parallel_efficiency": trial_s / (wall * conc),
        "parallel_efficiency_runner": out["stats"]["parallel_efficiency"],
        "runner_trial_seconds": out["stats"]["trial_seconds"],
        "idle_slot_share": (wall * conc - trial_s) / trial_s,
        "idle_slot_s_per_trial": (wall * conc - trial_s) / n,
        "startup_s_per_trial": _mean([t["startup_s"] for t in trials]),
        "startup_s_new_worker": _mean([t["startup_s"] for t in trials if not t["reused_worker"]]),
        "startup_s_reused_worker": _mean([t["startup_s"] for t in trials if t["reused_worker"]]),
        "driver_cpu_s_per_trial": fit["driver_cpu_s"] / n,
        # Tune's loop thread: its CPU outside the MLflow hooks (scheduling, searcher, snapshots)
        "driver_loop_cpu_s": fit.get("driver_loop_cpu_s"),
        "driver_loop_other_cpu_s": (
            fit["driver_loop_cpu_s"] - sum(sum(v) for v in raw["hooks_cpu"].values())
            if "driver_loop_cpu_s" in fit
            else None
        ),
        "end_gap_s_per_trial": _mean([t["end_gap_s"] for t in trials]),
        "worker_processes": len({t["pid"] for t in trials if t["pid"] is not None}),
        "tracking_s_per_trial": per_trial_hooks / n,  # run creation + closing (artifacts)
        "tracking_s_per_epoch": hooks.get("on_trial_result", {}).get("total_s", 0.0)
        / max(epochs, 1),
        "peak_rss_mb_per_trial": {
            "max": max(rss, default=None),
            "mean": statistics.mean(rss) if rss else None,
            "at_trial_start_mean": _mean([t["rss_at_start_mb"] for t in trials]),
        },
        "trials": trials,
        "errors": out["errors"],
        "targets": TARGETS,
    }
    row["met"] = {
        "tracking_share": row["tracking_share"] <= TARGETS["tracking_share"],
        "driver_share": row["driver_share"] <= TARGETS["driver_share"],
        "parallel_efficiency": row["parallel_efficiency"] >= TARGETS["parallel_efficiency"],
    }
    row["projection"] = project(row)
    return row


def project(row: Row, lengths: tuple[float, ...] = (60.0, 150.0, 600.0)) -> list[dict[str, float]]:
    """Shares for longer trials of the same epoch count, from the measured per-trial costs, for
    many more trials than slots (no tail; a reused worker's first start-up amortised away):
    tracking = (per-trial + epochs × per-epoch hook seconds) / T, driver = CPU of Tune's loop
    outside the hooks per trial / T, efficiency ≈ T / (T + start-up + end gap)."""
    epochs = row["sizes"]["epochs_per_trial"]
    startup = row["startup_s_reused_worker"] if row["reuse_actors"] else None
    if startup is None:
        startup = row["startup_s_new_worker"] or 0.0
    slot = startup + (row["end_gap_s_per_trial"] or 0.0)
    track = row["tracking_s_per_trial"] + epochs * row["tracking_s_per_epoch"]
    other = row.get("driver_loop_other_cpu_s")  # the loop's own work; else all driver CPU
    driver = (row["driver_cpu_s"] if other is None else other) / row["sizes"]["trials"]
    return [
        {
            "trial_s": t,
            "tracking_share": track / t,
            "driver_share": driver / t,
            "parallel_efficiency": t / (t + slot),
        }
        for t in lengths
    ]


def bench_study(quick: bool) -> list[Row]:
    """For ``benchmarks/run.py --only study``: a new worker per trial, then as ssad runs it."""
    kwargs = {"classes": 1, "trials": 2, "min_samples": 64, "epochs": (1, 1)} if quick else {}
    return [measure(reuse_actors=reuse, **kwargs) for reuse in (False, True)]


def _opt(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f} s"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(rows: list[Row]) -> list[str]:
    """One table, a column per variant (same study, same run), and the projection."""
    if not rows:
        return []
    s = rows[0]["sizes"]
    mark = {True: " ✓", False: " ✗"}

    def line(label: str, fn, target: str = "") -> str:
        return f"| {label} | " + " | ".join(fn(r) for r in rows) + f" | {target} |"

    lines = [
        "",
        f"P4 study overhead: {s['classes']} classes × {s['trials'] // s['classes']} trials, "
        f"{s['max_concurrent']} concurrent 1-CPU trials, {s['epochs_per_trial']} epochs of "
        f"{s['min_samples']} samples at {s['image_px']} px, scheduler {s['scheduler']}, "
        f"{s['tracking']}",
        "",
        "| quantity | " + " | ".join(r["variant"] for r in rows) + " | target |",
        "|---|" + "---:|" * len(rows) + "---:|",
        line("Tuner.fit wall / Σ trial time (mean per trial)", lambda r: (
            f"{r['wall_s']:.0f} s / {r['trial_seconds']:.0f} s ({r['mean_trial_s']:.1f} s)")),
        line("tracking: MLflow hooks on the driver / Σ trial time", lambda r: (
            f"{_pct(r['tracking_share'])} ({r['tracking_s']:.1f} s)"
            + mark[r["met"]["tracking_share"]]), "≤ 2 %"),
        line("driver CPU during fit / Σ trial time", lambda r: (
            f"{_pct(r['driver_share'])} ({r['driver_cpu_s']:.1f} s)"
            + mark[r["met"]["driver_share"]]), "≤ 2 %"),
        line("of it: Tune's loop thread (hooks, scheduling, snapshots)",
             lambda r: _opt(r.get("driver_loop_cpu_s"))),
        line("of it: the loop outside the MLflow hooks, per reported epoch", lambda r: (
            "–" if r.get("driver_loop_other_cpu_s") is None
            else f"{1e3 * r['driver_loop_other_cpu_s'] / r['epochs']:.0f} ms")),
        line(f"parallel efficiency Σ trial / (wall × {s['max_concurrent']})", lambda r: (
            f"**{r['parallel_efficiency']:.2f}**" + mark[r["met"]["parallel_efficiency"]]),
             "≥ 0.85"),
        line("the runner's efficiency (MLflow run spans)",
             lambda r: f"{r['parallel_efficiency_runner']:.2f}"),
        line("idle slot time per trial", lambda r: f"{r['idle_slot_s_per_trial']:.1f} s"),
        line("of it: start-up per trial, new / reused worker (imports)", lambda r: (
            f"{_opt(r['startup_s_new_worker'])} / {_opt(r['startup_s_reused_worker'])} "
            f"({r['worker_processes']} worker processes)")),
        line("tracking per trial (run start + close) / per epoch", lambda r: (
            f"{r['tracking_s_per_trial'] * 1e3:.0f} ms / "
            f"{r['tracking_s_per_epoch'] * 1e3:.0f} ms")),
        line("peak RSS per trial's worker, max / mean (at trial start)", lambda r: (
            f"{r['peak_rss_mb_per_trial']['max']:.0f} / {r['peak_rss_mb_per_trial']['mean']:.0f}"
            f" MiB ({r['peak_rss_mb_per_trial']['at_trial_start_mean']:.0f})"), "reported"),
        line("Ray daemons' CPU during the study", lambda r: f"{r['ray_daemons_cpu_s']:.1f} s"),
    ]  # fmt: skip
    lines += [
        "",
        "Projected for longer trials (same epochs; measured per-trial start-up, end gap and "
        "tracking costs; no tail):",
        "",
        "| trial length | "
        + " | ".join(f"{r['variant']}: tracking / driver / efficiency" for r in rows)
        + " |",
        "|---:|" + "---:|" * len(rows),
    ]
    for i, p in enumerate(rows[0]["projection"]):
        cells = [
            f"{_pct(r['projection'][i]['tracking_share'])} / "
            f"{_pct(r['projection'][i]['driver_share'])} / "
            f"{r['projection'][i]['parallel_efficiency']:.2f}"
            for r in rows
        ]
        lines.append(f"| {p['trial_s']:.0f} s | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=2, choices=(1, 2))
    parser.add_argument("--trials", type=int, default=4, help="trials per class")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--min-samples", type=int, default=256, help="samples per epoch")
    parser.add_argument("--epochs", type=int, nargs=2, default=(1, 3), metavar=("P1", "P2"))
    parser.add_argument("--threads", type=int, default=1, help="threads per library (driver)")
    parser.add_argument(
        "--variants",
        choices=("both", "ssad", "new-worker"),
        default="both",
        help="ssad: as run_study runs it (reuse_actors); new-worker: reuse_actors=False; both",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "study-overhead.json"
    )
    args = parser.parse_args(argv)
    from benchmarks.timing import machine_info, set_threads

    set_threads(args.threads)
    info = machine_info()
    rows = []
    for reuse in (False, True) if args.variants == "both" else (args.variants == "ssad",):
        print(f"[study] reuse_actors={reuse} …", file=sys.stderr, flush=True)
        rows.append(
            measure(
                classes=args.classes,
                trials=args.trials,
                concurrent=args.concurrent,
                min_samples=args.min_samples,
                epochs=tuple(args.epochs),
                reuse_actors=reuse,
            )
        )
    info["load_average_after"] = machine_info()["load_average_1_5_15"]
    results = {"machine": info, "study": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = "\n".join(markdown(rows)) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
