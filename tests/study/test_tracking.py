"""The one writer of trial runs (the Tune callback's and ``ssad study sync``'s): its rule for a
run already closed, and that writing the same ended trial twice, from either path, changes
nothing. A real SQLite MLflow store and a real Tune checkpoint; no Ray cluster."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ssad.config import load_config
from ssad.study.tracking import StudyTracker, TrialRunWriter, already_closed


@pytest.mark.parametrize(
    ("closed", "closing", "expected"),
    [
        (None, {"ssad.status": "finished"}, False),  # open
        ({"ssad.status": "finished"}, {"ssad.status": "finished"}, True),
        ({"ssad.status": "finished"}, {"ssad.status": "stopped"}, True),  # a replay: final
        ({"ssad.status": "stopped"}, {"ssad.status": "failed", "ssad.error": "x"}, True),
        ({"ssad.status": "failed", "ssad.error": "x", "ssad.failures": "1"},
         {"ssad.status": "failed", "ssad.error": "x", "ssad.failures": "1"}, True),  # same
        ({"ssad.status": "failed", "ssad.error": "x", "ssad.failures": "1"},
         {"ssad.status": "failed", "ssad.error": "y", "ssad.failures": "2"}, False),  # anew
        ({"ssad.status": "failed", "ssad.error": "x", "ssad.checkpoint": "/a/c1"},
         {"ssad.status": "failed", "ssad.error": "x", "ssad.checkpoint": "/b/c1"}, True),
        ({"ssad.status": "failed", "ssad.error": "x"}, {"ssad.status": "finished"}, False),
    ],
)  # fmt: skip
def test_the_rule_for_a_run_already_closed(closed, closing, expected) -> None:
    assert already_closed(closed, closing) is expected


def _trial(tmp_path: Path, *, error: str | None = None) -> SimpleNamespace:
    from ray.tune import Checkpoint

    ckpt = tmp_path / "checkpoint_000002"
    (ckpt / "detector").mkdir(parents=True, exist_ok=True)
    (ckpt / "state.pt").write_bytes(b"training state")  # Tune keeps it: not logged
    (ckpt / "detector" / "model.pt").write_bytes(b"weights")  # Tune keeps it: not logged
    (ckpt / "detector" / "config.yaml").write_text("k: 1\n")
    (ckpt / "roc.png").write_bytes(b"png")
    error_file = None
    if error is not None:
        error_file = tmp_path / "error.txt"
        error_file.write_text(error)
    return SimpleNamespace(
        trial_id="t1",
        config={"class_name": "brick", "config_id": "c1", "seed": 0, "params": {"memory.k": 3}},
        checkpoint=Checkpoint.from_directory(str(ckpt)),
        run_metadata=SimpleNamespace(num_failures=1 if error else 0),
        error_file=str(error_file) if error_file else None,
        get_error=lambda: None,
    )


def _writer(tracker: StudyTracker, parent: str) -> TrialRunWriter:
    epochs = {"train.phase1_epochs": 1, "train.phase2_epochs": 1}
    base = load_config(preset="seed", overrides=epochs)
    return TrialRunWriter(tracker, parent, base.to_dict(), {"brick": "fp"}, "sha")


def _snapshot(tracker: StudyTracker) -> tuple:
    (run,) = tracker.trial_runs()
    run_id = run.info.run_id
    history = tuple(tracker.metric_history(run_id, "loss"))
    return (run.info.status, run.info.end_time, run.data.tags, run.data.params, history,
            tracker.artifact_files(run_id))  # fmt: skip


@pytest.fixture
def tracker(tmp_path: Path) -> tuple[StudyTracker, str]:
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "s")
    tracker.start_launch()
    return tracker, tracker.launch_parent_id()


def test_writing_an_ended_trial_twice_changes_nothing(tmp_path: Path, tracker) -> None:
    """The callback's path (epoch by epoch, then close), then the same again in a new driver
    session, then sync's path (fill from Tune's results, then close): one run, written once."""
    tracker, parent = tracker
    trial = _trial(tmp_path)
    rows = [{"training_iteration": s, "loss": 1.0 / s, "timestamp": 1e9 + s} for s in (1, 2)]

    callback = _writer(tracker, parent)
    for row in rows:
        assert callback.log_epoch(trial, row)
    status = callback.closing_status(trial, 2)
    assert status == "finished"
    assert callback.close(trial, status) == 2  # detector/config.yaml, roc.png
    first = _snapshot(tracker)
    assert first[0] == "FINISHED" and first[2]["ssad.status"] == "finished"
    assert set(first[5]) == {"detector/config.yaml", "roc.png"}
    assert first[2]["ssad.checkpoint"] == str(trial.checkpoint.path)

    again = _writer(tracker, parent)  # a new driver session replays the trial
    tracker._steps.clear()
    for row in rows:
        assert not again.log_epoch(trial, row)
    assert again.close(trial, status) is None
    assert _snapshot(tracker) == first

    sync = _writer(tracker, parent)
    tracker._steps.clear()
    (run,) = tracker.trial_runs()
    assert sync.fill(trial, run, rows) == (0, 0)
    assert sync.close(trial, status, end_time=int(2e12)) is None
    assert _snapshot(tracker) == first


def test_a_failed_run_is_closed_again_only_by_another_closing(tmp_path: Path, tracker) -> None:
    """Closed as failed: the same failure written again changes nothing; the trial, resumed,
    finishing closes it again (artifacts replaced, status finished)."""
    tracker, parent = tracker
    failed = _trial(tmp_path, error="Traceback: boom")
    writer = _writer(tracker, parent)
    writer.log_epoch(failed, {"training_iteration": 1, "loss": 1.0})
    assert writer.close(failed, "failed") == 3  # detector/config.yaml, roc.png, error.txt
    first = _snapshot(tracker)
    assert first[0] == "FAILED" and first[2]["ssad.error"] == "Traceback: boom"
    assert first[2]["ssad.failures"] == "1" and "error.txt" in first[5]
    assert _writer(tracker, parent).close(failed, "failed") is None
    assert _snapshot(tracker) == first

    resumed = _trial(tmp_path)
    resumed.run_metadata.num_failures = 1
    writer = _writer(tracker, parent)
    writer.log_epoch(resumed, {"training_iteration": 2, "loss": 0.5})
    assert writer.close(resumed, "finished") == 2  # replaced: every file uploaded again
    status, _, tags, *_ = _snapshot(tracker)
    assert (status, tags["ssad.status"]) == ("FINISHED", "finished")
    assert _writer(tracker, parent).close(resumed, "finished") is None
