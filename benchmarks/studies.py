"""Shared harness of the study benchmarks (P4 ``study_overhead``, P5 ``early_stopping``).

A real, small study: ``ssad.study.runner.run_study`` on a throwaway local Ray (its own
``RAY_TMPDIR``, stopped by process id afterwards) and a SQLite MLflow store in a temp dir, on a
64 px synthetic data set. Nothing in ``ssad`` is changed; the harness only observes it from
outside:

- the driver-side MLflow callback (:class:`ssad.study.callbacks.MlflowTrials`): every Tune hook it
  implements is wrapped with a timer (seconds per call, and when each trial started / ended as the
  driver saw it);
- ``Tuner.fit``: wall time and the driver process's CPU seconds during it;
- the trial function (``ssad.study.runner.tune_trainable``, looked up by name when ``run_study``
  builds the trainable) is wrapped by a function that, inside the trial's Ray worker, records its
  own start and end, the worker's peak RSS (``getrusage``), CPU seconds and process start time to a
  JSON file per trial;
- Tune's per-trial ``result.json`` (every epoch's report: ``seconds`` of ``train.fit``'s epoch,
  ``time_total_s``, ``training_iteration``) and the study's leaderboard in MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SPACE",
    "instrumented_study",
    "local_ray",
    "make_data",
    "per_trial",
    "write_spec",
]

# The tests' tiny search space (tests/study/conftest.py): bank k, phase-2 learning rate, score.
SPACE = {
    "memory.k": {"type": "int", "low": 1, "high": 5},
    "train.phase2_lr": {"type": "logfloat", "low": 0.001, "high": 0.1},
    "eval.image_score": {"type": "categorical", "choices": ["max", "topk"]},
}
HOOKS = (
    "setup",
    "on_trial_start",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_error",
    "on_trial_recover",
    "on_experiment_end",
)


def base_overrides(min_samples: int, epochs: tuple[int, int]) -> dict[str, Any]:
    """The tests' tiny trial (64 px, 16 px patches, batch 16) with a chosen length."""
    return {
        "data.image_size": 64,
        "pretext.patch_size": 16,
        "train.phase1_epochs": epochs[0],
        "train.phase2_epochs": epochs[1],
        "train.min_samples": min_samples,
        "train.batch_size": 16,
        "memory.bank_size": 500,
        "eval.tsne": False,
        "eval.heatmaps": 2,
    }


def make_data(root: Path, classes: list[str], *, n_train: int, n_test_good: int, per_defect: int):
    """A 64 px synthetic MVTec-layout data set (``ssad.data.synthetic.generate``, seed 0)."""
    from ssad.data.synthetic import generate

    return generate(
        root,
        classes=classes,
        size=64,
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_per_defect=per_defect,
    )


def write_spec(folder: Path, *, data_root: Path, name: str, **fields: Any) -> Path:
    """A study spec in ``folder`` (SQLite MLflow and Tune storage inside it); ``fields`` override."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    spec: dict[str, Any] = {
        "name": name,
        "classes": ["brick", "gelcap"],
        "data": {"root": str(data_root)},
        "base": {"preset": "cpu", "overrides": {}},
        "search_space": "space.yaml",
        "searcher": {"type": "optuna", "seed": 0},
        "scheduler": {"type": "none"},
        "metric": "val_image_auroc_ema",
        "mode": "max",
        "num_samples": 4,
        "seeds_per_config": 1,
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": 2,
        "max_failures": 0,
        "mlflow": {
            "tracking_uri": f"sqlite:///{(folder / 'mlflow.db').resolve()}",
            "experiment": f"bench-{name}",
        },
        "storage_path": str((folder / "ray").resolve()),
    }
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _psutil():
    """psutil: Ray's bundled copy (``ray/thirdparty_files``, on the path once Ray is imported)."""
    import importlib

    import ray  # noqa: F401

    return importlib.import_module("psutil")


# ---- a throwaway local Ray ----------------------------------------------------------------------
@contextlib.contextmanager
def local_ray(num_cpus: int) -> Iterator[Path]:
    """In-process local Ray with its own temp dir; afterwards its processes are stopped by id."""
    import ray

    psutil = _psutil()
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process")
    tmp = Path(tempfile.mkdtemp(prefix="ssb", dir="/tmp"))  # short: Unix socket path limit
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ADDRESS")}
    os.environ.update(
        RAY_TMPDIR=str(tmp),
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DEDUP_LOGS="0",
    )
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 1024**2,
    )
    try:
        yield tmp
    finally:
        me = psutil.Process()
        procs = me.children(recursive=True)
        ray.shutdown()
        _, left = psutil.wait_procs(procs, timeout=15)
        for proc in left:  # by id, and only what this Ray started (children of this process)
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)


# ---- instrumentation --------------------------------------------------------------------------
def _traced(trace_dir: str, trainable):
    """The trial function, recording (inside the trial's worker) its times and peak RSS."""

    def tune_trainable(trial_config, *, base, metric=None, **hooks):
        import resource

        from ray import tune

        psutil = _psutil()

        start, cpu0 = time.time(), time.process_time()
        record = {
            "pid": os.getpid(),
            "process_started": psutil.Process().create_time(),
            "start": start,
            "trial_id": tune.get_context().get_trial_id(),
            "class_name": trial_config.get("class_name"),
            "rss_at_start_mb": psutil.Process().memory_info().rss / 2**20,
        }
        try:
            return trainable(trial_config, base=base, metric=metric, **hooks)
        finally:
            record.update(
                end=time.time(),
                cpu_s=time.process_time() - cpu0,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
            )
            path = Path(trace_dir) / f"{record['trial_id']}-{record['pid']}.json"
            path.write_text(json.dumps(record))

    return tune_trainable


@contextlib.contextmanager
def _instrumented(trace_dir: Path, *, reuse_actors: bool = True) -> Iterator[dict[str, Any]]:
    """Patch the hooks, ``Tuner.fit`` and the trial function; yields what they record.

    ``reuse_actors``: Tune's ``TuneConfig(reuse_actors=...)``, forced over what ssad passes (True:
    one Ray worker per slot, reused by the next trial; False: a new worker process per trial).
    """
    from ray import cloudpickle, tune

    import ssad.study.runner as runner
    from ssad.study.callbacks import MlflowTrials

    seen: dict[str, Any] = {
        "hooks": defaultdict(list),  # hook → [seconds per call]
        "hooks_cpu": defaultdict(list),  # hook → [CPU seconds of the calling thread per call]
        "trial_start": {},  # trial id → driver time of on_trial_start (first)
        "trial_end": {},  # trial id → driver time of on_trial_complete / on_trial_error
        "fit": {},
    }
    originals = {name: getattr(MlflowTrials, name) for name in HOOKS}

    def timed(name: str, fn):
        @functools.wraps(fn)
        def hook(self, *args, **kwargs):
            tic, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(self, *args, **kwargs)
            finally:
                seen["hooks"][name].append(time.perf_counter() - tic)
                seen["hooks_cpu"][name].append(time.thread_time() - cpu)
                trial = kwargs.get("trial")
                if trial is not None and name == "on_trial_start":
                    seen["trial_start"].setdefault(trial.trial_id, time.time())
                if trial is not None and name in ("on_trial_complete", "on_trial_error"):
                    seen["trial_end"][trial.trial_id] = time.time()

        return hook

    fit = tune.Tuner.fit

    def timed_fit(self, *args, **kwargs):
        # Tune's controller loop (hooks, scheduling, experiment snapshots) runs in this thread;
        # the driver process's other threads are Ray's (gRPC, object store, log monitor)
        wall0, cpu0, loop0 = time.time(), time.process_time(), time.thread_time()
        try:
            return fit(self, *args, **kwargs)
        finally:
            seen["fit"] = {
                "start": wall0,
                "wall_s": time.time() - wall0,
                "driver_cpu_s": time.process_time() - cpu0,
                "driver_loop_cpu_s": time.thread_time() - loop0,
            }

    trainable, tune_config = runner.tune_trainable, tune.TuneConfig
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import us
    for name in HOOKS:
        setattr(MlflowTrials, name, timed(name, originals[name]))
    tune.Tuner.fit = timed_fit
    runner.tune_trainable = _traced(str(trace_dir), trainable)
    tune.TuneConfig = lambda *a, **kw: tune_config(*a, **{**kw, "reuse_actors": reuse_actors})
    try:
        yield seen
    finally:
        tune.TuneConfig = tune_config
        runner.tune_trainable = trainable
        tune.Tuner.fit = fit
        for name, fn in originals.items():
            setattr(MlflowTrials, name, fn)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _ray_system_cpu_s() -> float:
    """CPU seconds of this Ray's own daemons (GCS, raylet, agents, …: not the trial workers)."""
    psutil = _psutil()

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            name = " ".join(proc.cmdline()[:2])
            if "default_worker.py" in name or proc.name().startswith("ray::"):
                continue
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def _tune_results(storage: Path) -> dict[str, list[dict[str, Any]]]:
    """trial id → its reports (one dict per epoch) from Tune's ``result.json`` files."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in storage.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def instrumented_study(spec_path: Path, *, reuse_actors: bool = True) -> dict[str, Any]:
    """Run the study at ``spec_path`` (Ray must be up) with the instrumentation; raw records."""
    from ssad.study.runner import run_study
    from ssad.study.spec import load_spec

    spec = load_spec(spec_path)
    trace_dir = spec_path.parent / "traces"
    trace_dir.mkdir(exist_ok=True)
    with _instrumented(trace_dir, reuse_actors=reuse_actors) as seen:
        tic = time.time()
        out = run_study(spec)
        run_study_s = time.time() - tic
        ray_cpu = _ray_system_cpu_s()
    traces = {}
    for path in trace_dir.glob("*.json"):
        rec = json.loads(path.read_text())
        traces[rec["trial_id"]] = rec
    return {
        "spec": spec,
        "out": out,
        "run_study_s": run_study_s,
        "fit": seen["fit"],
        "hooks": {k: list(v) for k, v in seen["hooks"].items()},
        "hooks_cpu": {k: list(v) for k, v in seen["hooks_cpu"].items()},
        "trial_start": seen["trial_start"],
        "trial_end": seen["trial_end"],
        "traces": traces,
        "results": _tune_results(Path(spec.storage_path) / spec.name),
        "ray_system_cpu_s": ray_cpu,
        "reuse_actors": reuse_actors,
    }


def per_trial(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: epochs, Tune's time_total_s, Σ train.fit epoch seconds, the worker's
    own span and peak RSS, the span the driver saw, the last metric."""
    metric = raw["spec"].metric
    t0 = raw["fit"].get("start", 0.0)
    # the trial's slot start-up: from when its worker could start (process start, the previous
    # trial of a reused worker ending, or Tuner.fit starting) to the trial function's start
    ready: dict[str, float] = {}
    reused: dict[str, bool] = {}
    last_end: dict[int, float] = {}
    for trace in sorted(raw["traces"].values(), key=lambda t: t["start"]):
        since = max(trace["process_started"], t0, last_end.get(trace["pid"], 0.0))
        ready[trace["trial_id"]] = trace["start"] - since
        reused[trace["trial_id"]] = trace["pid"] in last_end
        last_end[trace["pid"]] = trace["end"]
    rows = []
    for trial_id, reports in sorted(raw["results"].items()):
        last = reports[-1]
        trace = raw["traces"].get(trial_id, {})
        start, end = raw["trial_start"].get(trial_id), raw["trial_end"].get(trial_id)
        config = last.get("config") or {}
        rows.append(
            {
                "trial_id": trial_id,
                "trial_number": config.get("trial_number"),
                "params": config.get("params"),
                "class": config.get("class_name") or trace.get("class_name"),
                "epochs": int(last["training_iteration"]),
                "time_total_s": float(last["time_total_s"]),
                "fit_epoch_s": float(sum(r.get("seconds", 0.0) for r in reports)),
                "worker_s": trace["end"] - trace["start"] if trace else None,
                "worker_cpu_s": trace.get("cpu_s"),
                "peak_rss_mb": trace.get("peak_rss_mb"),
                "rss_at_start_mb": trace.get("rss_at_start_mb"),
                "pid": trace.get("pid"),
                "driver_s": end - start if start and end else None,
                "startup_s": ready.get(trial_id),
                "reused_worker": reused.get(trial_id),
                "end_gap_s": end - trace["end"] if end and trace else None,
                # timeline, seconds from the start of Tuner.fit: the worker process started,
                # the driver's on_trial_start, the trial function started / ended, the driver's
                # on_trial_complete
                "timeline": {
                    k: (v - t0 if v is not None else None)
                    for k, v in (
                        ("process", trace.get("process_started")),
                        ("driver_start", start),
                        ("worker_start", trace.get("start")),
                        ("worker_end", trace.get("end")),
                        ("driver_end", end),
                    )
                },
                "metric": last.get(metric),
            }
        )
    return rows
