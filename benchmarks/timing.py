"""Side-by-side timing: every function of a pair is timed in the same rounds, interleaved.

Shared CPUs make single timings noisy, so each function is called ``repeat`` times in rounds
(A B, B A, A B, …: both see the same background load) and the best (minimum) and median per-call
times are kept. The first, untimed-for-results call of every function is a warm-up whose result is
checked; its duration sets how many calls a measurement of a fast function makes (as
``timeit.Timer.autorange`` does) so timer resolution does not matter.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import cv2
import faiss
import torch
from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["Timing", "check", "first_calls", "machine_info", "set_threads", "side_by_side"]


@dataclass(frozen=True)
class Timing:
    """Per-call seconds of one function: best (minimum) and median over ``repeat`` measurements."""

    best_s: float
    median_s: float
    repeat: int
    number: int  # calls per measurement

    def to_dict(self) -> dict[str, float | int]:
        return {
            "best_s": self.best_s,
            "median_s": self.median_s,
            "repeat": self.repeat,
            "number": self.number,
        }


def check(condition: bool, message: str) -> None:
    """Raise (not ``assert``: survives ``python -O``) when two implementations disagree."""
    if not condition:
        raise RuntimeError(f"benchmark precondition failed: {message}")


def first_calls(fns: dict[str, Callable[[], object]]) -> tuple[dict[str, object], dict[str, float]]:
    """Call every function once (warm-up): its result, to check, and its seconds, to calibrate."""
    results, seconds = {}, {}
    for name, fn in fns.items():
        tic = time.perf_counter()
        results[name] = fn()
        seconds[name] = time.perf_counter() - tic
    return results, seconds


def _calls_per_measurement(first_s: float, min_time: float) -> int:
    """1, 2, 4, 8, … calls: enough for one measurement to last ``min_time`` (at most 4096)."""
    number = 1
    while number * first_s < min_time and number < 4096:
        number *= 2
    return number


def side_by_side(
    fns: dict[str, Callable[[], object]],
    *,
    first_s: dict[str, float],
    repeat: int,
    min_time: float = 0.05,
) -> dict[str, Timing]:
    """Time every function ``repeat`` times in interleaved rounds (order reversed every round).

    Args:
        fns: the functions, already called once by :func:`first_calls` (warm-up, result check).
        first_s: seconds of that first call per function: sets the calls per measurement.
        repeat: measurements per function.
        min_time: a measurement of a faster function repeats it until it lasts this long.
    """
    names = list(fns)
    numbers = {name: _calls_per_measurement(first_s[name], min_time) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeat):
            for name in names if r % 2 == 0 else names[::-1]:
                fn, number = fns[name], numbers[name]
                tic = time.perf_counter()
                for _ in range(number):
                    fn()
                samples[name].append((time.perf_counter() - tic) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        name: Timing(min(s), statistics.median(s), repeat, numbers[name])
        for name, s in samples.items()
    }


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch, faiss, OpenCV and every BLAS / OpenMP pool (numpy's too)."""
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    cv2.setNumThreads(n)
    threadpool_limits(limits=n)  # OpenBLAS of numpy, faiss and OpenCV; torch's and faiss's OpenMP


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, object]:
    """What the numbers depend on: CPUs, thread counts, load, library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "load_average_1_5_15": load,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "blas_threads": sorted(
            {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        ),
        "threadpools": [
            f"{p['internal_api']} {p['num_threads']} threads ({os.path.basename(p['filepath'])})"
            for p in threadpool_info()
        ],
        "cuda_available": torch.cuda.is_available(),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": _version("numpy"),
            "scipy": _version("scipy"),
            "faiss": getattr(faiss, "__version__", None),
            "opencv": _version("opencv-python-headless"),
            "ssad": _version("ssad"),
        },
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def pair_row(
    name: str,
    *,
    ours: str,
    baseline: str,
    timings: dict[str, Timing],
    sizes: dict[str, object],
    equivalent: bool = True,
    note: str = "",
    **extra: object,
) -> dict[str, object]:
    """One side-by-side result: ``ours`` and ``baseline`` name entries of ``timings``."""
    o, b = timings[ours], timings[baseline]
    return {
        "kind": "pair",
        "name": name,
        "ours": ours,
        "baseline": baseline,
        "ours_s": o.best_s,
        "baseline_s": b.best_s,
        "ratio": b.best_s / o.best_s,
        "ours_median_s": o.median_s,
        "baseline_median_s": b.median_s,
        "ratio_median": b.median_s / o.median_s,
        "repeat": o.repeat,
        "calls_per_measurement": {"ours": o.number, "baseline": b.number},
        "equivalent": equivalent,
        "sizes": sizes,
        "note": note,
        **extra,
    }
