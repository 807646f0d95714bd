"""Study fixtures: a tiny data set, tiny spec files, free ports, Ray process hygiene, MLflow server,
headless Chromium.

Every Ray instance a test starts gets its own short ``RAY_TMPDIR``: its sessions, sockets and
``ray_current_cluster`` file stay out of ``/tmp/ray``, so other Ray users on the machine never
auto-connect to it and it never auto-connects to theirs. Its processes are found by id-bearing
marks only (the inherited variable, the temp dir on the command line, the process groups the
test started, and their descendants) and stopped by id: ``ray stop`` would stop every Ray
instance of the user on the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CLASSES = ("brick", "gelcap")
MAX_EPOCHS = 4  # phase1 1 + phase2 3

# A real trial in a few seconds on one CPU core: 64 px, 16 px patches, 4 epochs of 4 steps.
TINY_BASE = {
    "preset": "scratch",  # the platform under test, not the detector: a real trial in seconds
    "overrides": {
        "data.image_size": 64,
        "pretext.patch_size": 16,
        "train.phase1_epochs": 1,
        "train.phase2_epochs": 3,
        "train.min_samples": 64,
        "train.batch_size": 16,
        "memory.bank_size": 500,
        "eval.tsne": False,
        "eval.heatmaps": 2,
    },
}

TINY_SPACE = {
    "memory.k": {"type": "int", "low": 1, "high": 5},
    "train.phase2_lr": {"type": "logfloat", "low": 0.001, "high": 0.1},
    "eval.image_score": {"type": "categorical", "choices": ["max", "topk"]},
}


# ---- data and specs -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def study_data(tiny_root: Path) -> Path:
    """brick (texture) + gelcap (object), 64 px, 8 train / 4 good + 2 per defect test images
    (the session's tiny data set from tests/conftest.py)."""
    return tiny_root


def write_spec(
    folder: Path,
    *,
    data_root: Path,
    name: str = "tiny",
    tracking_uri: str | None = None,
    space: dict[str, Any] | None = None,
    **fields: Any,
) -> Path:
    """Write ``folder/space.yaml`` and ``folder/<name>.yaml``; ``fields`` override spec keys.

    Storage and tracking default to absolute paths inside ``folder`` (SQLite at ``mlflow.db``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(space or TINY_SPACE, sort_keys=False))
    spec: dict[str, Any] = {
        "name": name,
        "classes": list(CLASSES),
        "data": {"root": str(data_root)},
        "base": TINY_BASE,
        "search_space": "space.yaml",
        "searcher": {"type": "optuna", "seed": 0},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "metric": "val_image_auroc_ema",  # the moving average, as the shipped specs use
        "mode": "max",
        "num_samples": 2,
        "seeds_per_config": 1,
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": 2,
        "max_failures": 0,
        "mlflow": {
            "tracking_uri": tracking_uri or f"sqlite:///{(folder / 'mlflow.db').resolve()}",
            "experiment": f"ssad-{name}",
        },
        "storage_path": str((folder / "ray").resolve()),
    }
    spec.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def make_spec(study_data: Path):
    """``make_spec(folder, name=..., tracking_uri=..., **spec_keys) -> Path`` on the tiny data."""

    def make(folder: Path, **kwargs: Any) -> Path:
        return write_spec(folder, data_root=study_data, **kwargs)

    return make


# ---- ports, processes, Ray ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Proc = tuple[int, int]  # (pid, start time in clock ticks): an id that survives pid reuse


def _proc_table() -> dict[int, tuple[int, int, int, bytes, bytes]]:
    """pid → (parent, process group, start time, environ, cmdline) of live, non-zombie processes."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z":
                continue
            env, cmd = (entry / "environ").read_bytes(), (entry / "cmdline").read_bytes()
            table[int(entry.name)] = (int(stat[1]), int(stat[2]), int(stat[19]), env, cmd)
        except (OSError, IndexError, ValueError):
            continue
    return table


def ray_processes(
    ray_tmpdir: str | Path, pgids: set[int] | frozenset[int] = frozenset()
) -> list[Proc]:
    """Live processes of one test's Ray instance, found by id-bearing marks only.

    A process belongs to it when it inherited ``RAY_TMPDIR=ray_tmpdir``, names the temp dir on
    its command line, is in one of ``pgids``, or descends from such a process (Ray workers and
    agents retitle themselves, overwriting environ and command line, and workers get their own
    process group, but they stay children of their raylet).
    """
    marker = f"RAY_TMPDIR={ray_tmpdir}".encode() + b"\0"
    folder = str(ray_tmpdir).encode()
    table = _proc_table()
    table.pop(os.getpid(), None)
    found = {
        pid
        for pid, (_ppid, pgid, _start, env, cmd) in table.items()
        if pgid in pgids or marker in env + b"\0" or folder in cmd
    }
    grew = True
    while grew:
        more = {pid for pid, row in table.items() if row[0] in found} - found
        found |= more
        grew = bool(more)
    return sorted((pid, table[pid][2]) for pid in found)


def process_tree(pgids: set[int] | frozenset[int]) -> list[Proc]:
    """Live processes in the process groups ``pgids`` and their descendants.

    One ``ray start`` started with its own process group is one node: its raylet, agents and
    log monitor keep that group, its Ray workers (own groups) stay children of the raylet.
    """
    table = _proc_table()
    table.pop(os.getpid(), None)
    found = {pid for pid, row in table.items() if row[1] in pgids}
    grew = True
    while grew:
        more = {pid for pid, row in table.items() if row[0] in found} - found
        found |= more
        grew = bool(more)
    return sorted((pid, table[pid][2]) for pid in found)


def alive(procs: list[Proc] | set[Proc]) -> list[Proc]:
    table = _proc_table()
    return sorted(p for p in procs if p[0] in table and table[p[0]][2] == p[1])


def kill_procs(procs: list[Proc] | set[Proc], sig: int = signal.SIGKILL) -> None:
    for pid, _start in alive(procs):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(procs: list[Proc] | set[Proc], timeout: float) -> list[Proc]:
    """Wait until none of ``procs`` is alive; returns the ones still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = alive(procs)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def ray_env(ray_tmpdir: str | Path, **extra: str) -> dict[str, str]:
    """Environment for a Ray process or driver of one test (token auth off, own temp dir)."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="disabled",
        RAY_TMPDIR=str(ray_tmpdir),
        RAY_DEDUP_LOGS="0",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


class RaySandbox:
    """One test's Ray processes: a private short ``RAY_TMPDIR`` and the process groups started.

    Unix socket paths under the temp dir must stay below ~107 characters, hence ``/tmp/ssr*``.
    Every process seen once is remembered, so an orphan that lost its marks is still stopped.
    """

    def __init__(self) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="ssr", dir="/tmp"))
        self.pgids: set[int] = set()
        self.seen: set[Proc] = set()

    def env(self, **extra: str) -> dict[str, str]:
        return ray_env(self.tmpdir, **extra)

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``args`` in its own process group (remembered for teardown)."""
        kwargs.setdefault("env", self.env())
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.pgids.add(proc.pid)
        return proc

    def processes(self) -> list[Proc]:
        now = ray_processes(self.tmpdir, self.pgids)
        self.seen.update(now)
        return now

    def stop(self, grace: float = 10) -> list[Proc]:
        """SIGTERM every process of this sandbox, SIGKILL what is left after ``grace`` seconds.

        Returns the processes that needed SIGKILL.
        """
        procs = alive(self.seen | set(self.processes()))
        kill_procs(procs, signal.SIGTERM)
        left = wait_gone(procs, grace)
        kill_procs(left)
        wait_gone(left, 10)
        return left


@pytest.fixture
def ray_sandbox() -> Iterator[RaySandbox]:
    """A :class:`RaySandbox`; teardown stops, by id, whatever of it is still alive."""
    box = RaySandbox()
    try:
        yield box
    finally:
        box.stop()
        shutil.rmtree(box.tmpdir, ignore_errors=True)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Path]:
    """An in-process local Ray (2 CPUs, no dashboard) for ``run_study``; shut down afterwards."""
    import ray

    if ray.is_initialized():  # left over by a test that let run_study start Ray in-process
        ray.shutdown()
    path = Path(tempfile.mkdtemp(prefix="ssr", dir="/tmp"))
    env = {
        "RAY_AUTH_MODE": "disabled",
        "RAY_TMPDIR": str(path),
        "RAY_DEDUP_LOGS": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=100 * 1024**2,
        )
        try:
            yield path
        finally:
            procs = ray_processes(path)
            ray.shutdown()
            kill_procs(wait_gone(procs, 15))
            shutil.rmtree(path, ignore_errors=True)


# ---- MLflow tracking server ---------------------------------------------------------------------
def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} was up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not up after {timeout}s")
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL, the process group of ``proc`` (started with start_new_session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def start_mlflow_server(
    *, port: int, backend_store: str, artifacts: Path, log: Any = subprocess.DEVNULL
) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:port (served artifacts, one worker) in its own process group."""
    return subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend_store,
            "--artifacts-destination",
            str(artifacts),
            "--workers",
            "1",
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite store, served artifacts) on a free 127.0.0.1 port."""
    port = free_port()
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 (closed in teardown)
    proc = start_mlflow_server(
        port=port,
        backend_store=f"sqlite:///{folder / 'server.db'}",
        artifacts=folder / "artifacts",
        log=log,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", 120, proc)
        yield uri
    finally:
        stop_group(proc)
        log.close()


# ---- headless browser ---------------------------------------------------------------------------
SCREENSHOTS = REPO / "runs" / "ci-artifacts" / "screenshots"  # runs/ is gitignored; CI keeps it
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_binary() -> str | None:
    """The first of ``chromium``, ``chromium-browser`` on PATH, or None."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


class Browser:
    """Headless Chromium from the command line: one fresh profile and process group per call."""

    def __init__(self, binary: str, *, window: tuple[int, int] = (1400, 1000)) -> None:
        self.binary, self.window = binary, window

    def _run(self, target: str | Path, extra: list[str], budget_ms: int, timeout: float) -> str:
        url = target.resolve().as_uri() if isinstance(target, Path) else target
        with tempfile.TemporaryDirectory(prefix="ssad-chromium-") as profile:
            proc = subprocess.Popen(
                [
                    self.binary,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",  # no state (localStorage) from an earlier call
                    f"--window-size={self.window[0]},{self.window[1]}",
                    f"--virtual-time-budget={budget_ms}",
                    *extra,
                    url,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_group(proc, timeout=5)
                raise TimeoutError(f"chromium on {url}: no result after {timeout}s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"chromium on {url} exited with {proc.returncode}: {err[-2000:]}")
        return out

    def dump_dom(self, target: str | Path, *, budget_ms: int = 15000, timeout: float = 60) -> str:
        """The DOM of a URL (or a local file) after ``budget_ms`` of virtual time, as HTML."""
        return self._run(target, ["--dump-dom"], budget_ms, timeout)

    def screenshot(
        self, target: str | Path, out_png: Path, *, budget_ms: int = 15000, timeout: float = 60
    ) -> Path:
        """A PNG of a URL (or a local file) at the window size, after ``budget_ms`` virtual time."""
        self.capture(target, out_png, budget_ms=budget_ms, timeout=timeout)
        return out_png

    def capture(
        self, target: str | Path, out_png: Path, *, budget_ms: int = 15000, timeout: float = 60
    ) -> str:
        """Both at once, of the same page load: writes the PNG, returns the DOM."""
        out_png.parent.mkdir(parents=True, exist_ok=True)
        out_png.unlink(missing_ok=True)
        dom = self._run(
            target, ["--dump-dom", f"--screenshot={out_png.resolve()}"], budget_ms, timeout
        )
        if not out_png.is_file():
            raise RuntimeError(f"chromium wrote no screenshot of {target} to {out_png}")
        return dom


@pytest.fixture(scope="session")
def browser() -> Browser:
    """Headless Chromium (:class:`Browser`: ``dump_dom(url)``, ``screenshot(url, png)``).

    Skips when none is installed (Debian: ``apt-get install chromium``; .ci/run installs it).
    """
    binary = chromium_binary()
    if binary is None:
        pytest.skip(
            f"no Chromium ({' or '.join(CHROMIUM_NAMES)}) on PATH: apt-get install chromium"
        )
    return Browser(binary)


def ray_nodes(box: RaySandbox, address: str) -> list[dict[str, Any]]:
    """The live nodes of the Ray cluster at ``address``, asked from a fresh driver process:
    ``{"id": node id, "cpus": its CPUs, "head": whether it is the head}``, sorted by id."""
    code = (
        "import json, ray\n"
        f"ray.init(address={address!r}, log_to_driver=False)\n"
        "print(json.dumps(sorted(({'id': n['NodeID'], 'cpus': n['Resources'].get('CPU', 0.0),"
        " 'head': 'node:__internal_head__' in n['Resources']} for n in ray.nodes()"
        " if n['Alive']), key=lambda n: n['id'])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=box.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def study_helpers() -> SimpleNamespace:
    """The helpers and constants above, for test modules (tests/ is not a package)."""
    return SimpleNamespace(
        REPO=REPO,
        VENV_BIN=VENV_BIN,
        CLASSES=CLASSES,
        MAX_EPOCHS=MAX_EPOCHS,
        TINY_BASE=TINY_BASE,
        TINY_SPACE=TINY_SPACE,
        write_spec=write_spec,
        free_port=free_port,
        start_mlflow_server=start_mlflow_server,
        ray_processes=ray_processes,
        process_tree=process_tree,
        kill_procs=kill_procs,
        alive=alive,
        RaySandbox=RaySandbox,
        wait_gone=wait_gone,
        ray_env=ray_env,
        wait_http=wait_http,
        stop_group=stop_group,
        ray_nodes=ray_nodes,
        SCREENSHOTS=SCREENSHOTS,
    )
