"""Study integrity: launches never mix, and nothing a spec names escapes the study's folders.

Real MLflow stores (SQLite) and, for the end-to-end case, a real local Ray: a study launched
again over an existing one is refused until ``--resume`` or ``--new`` says what is meant, and a
new launch's leaderboard and promotion see only its own trial runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from ssad.cli import main
from ssad.study.launch import prepare_launch
from ssad.study.leaderboard import leaderboard, trials_frame
from ssad.study.spec import SpecError, load_spec
from ssad.study.tracking import TAG_LAUNCH, StudyTracker


def _tracker(spec) -> StudyTracker:
    return StudyTracker(spec.tracking_uri, spec.experiment, spec.name)


def _fake_launch(spec, trial_ids: list[str]) -> str:
    """What a finished launch leaves in MLflow: a parent run and its trial runs."""
    tracker = _tracker(spec)
    parent = tracker.parent_run(params={"space": "old.yaml"}, artifacts=[])
    for tid in trial_ids:
        run = tracker.trial_run(
            parent_id=parent, trial_id=tid, params={"memory.k": 3}, tags={"ssad.class": "brick"}
        )
        tracker.log_step(run, {"val_image_auroc": 0.9}, 1)
        tracker.finish(run, status="finished")
    return tracker.current_launch()


# ---- launch decisions (real SQLite MLflow, no Ray) ---------------------------------------------


def test_first_launch_needs_no_flag(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    assert prepare_launch(spec, _tracker(spec)) is None


def test_relaunch_is_refused_even_after_removing_the_tune_folder(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    _fake_launch(spec, ["t1", "t2"])
    exp_dir = spec.storage_path / spec.name
    exp_dir.mkdir(parents=True)
    for remove in (True, False):  # with the Tune folder, then without it (the old advice)
        with pytest.raises(SpecError) as info:
            prepare_launch(spec, _tracker(spec))
        msg = str(info.value)
        assert "--resume" in msg and "--new" in msg and str(spec.path) in msg
        if remove:
            exp_dir.rmdir()


def test_resume_without_tune_state_and_both_flags_are_refused(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    _fake_launch(spec, ["t1"])
    with pytest.raises(SpecError, match="--new"):
        prepare_launch(spec, _tracker(spec), resume=True)
    with pytest.raises(SpecError, match="exclude"):
        prepare_launch(spec, _tracker(spec), resume=True, new=True)


def test_new_launch_keeps_old_runs_apart(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    old = _fake_launch(spec, ["t1", "t2", "t3"])
    exp_dir = spec.storage_path / spec.name
    exp_dir.mkdir(parents=True)
    (exp_dir / "marker").write_text("old launch")

    tracker = _tracker(spec)
    new = prepare_launch(spec, tracker, new=True)
    assert new and new != old
    assert not exp_dir.exists()  # the old Tune folder is kept aside, not reused
    assert (spec.storage_path / f"{spec.name}.launch-{old}" / "marker").is_file()
    parent = tracker.parent_run(params={"space": "new.yaml"}, artifacts=[])
    run = tracker.trial_run(parent_id=parent, trial_id="t1", params={}, tags={})
    assert run not in {r.info.run_id for r in _old_runs(spec, old)}  # same trial id, new run

    # a reader (study show, promote) sees the newest launch only
    reader = _tracker(spec)
    assert reader.current_launch() == new
    assert [r.info.run_id for r in reader.trial_runs()] == [run]
    assert reader.launch_parent_id() == parent
    client = MlflowClient(spec.tracking_uri)
    assert client.get_run(parent).data.params["space"] == "new.yaml"
    assert len(_old_runs(spec, old)) == 3  # the old launch's runs are still there, untouched
    # and the old launch stays readable on its own
    by_id = StudyTracker(spec.tracking_uri, spec.experiment, spec.name, launch_id=old)
    assert len(by_id.trial_runs()) == 3


def _old_runs(spec, launch: str) -> list:
    client = MlflowClient(spec.tracking_uri)
    exp = client.get_experiment_by_name(spec.experiment)
    return client.search_runs(
        [exp.experiment_id], f"tags.`{TAG_LAUNCH}` = '{launch}' and tags.`ssad.role` = 'trial'"
    )


# ---- the reproduction, end to end (real Ray + MLflow) ------------------------------------


@pytest.mark.slow
def test_relaunch_over_a_finished_study(local_ray, make_spec, tmp_path: Path, capsys) -> None:
    """Run, re-run (refused, with and without the Tune folder), --new: nothing mixes."""
    import shutil

    path = make_spec(tmp_path / "s", name="relaunch", num_samples=2)
    assert main(["study", "run", str(path)]) == 0
    spec = load_spec(path)
    first = _tracker(spec).current_launch()
    assert first and len(_tracker(spec).trial_runs()) == 4

    capsys.readouterr()
    assert main(["study", "run", str(path), "--set", "num_samples=1"]) == 2
    assert "--new" in capsys.readouterr().err
    shutil.rmtree(spec.storage_path / spec.name)  # what the runner used to advise
    assert main(["study", "run", str(path), "--set", "num_samples=1"]) == 2
    assert "--resume" in capsys.readouterr().err

    assert main(["study", "run", str(path), "--new", "--set", "num_samples=1"]) == 0
    tracker = _tracker(spec)
    second = tracker.current_launch()
    assert second != first
    runs = tracker.trial_runs()
    assert len(runs) == 2  # one configuration per class: the 4 old trials are not counted
    parent = tracker.launch_parent_id()
    for run in runs:
        assert run.data.tags[TAG_LAUNCH] == second
        assert run.data.tags["mlflow.parentRunId"] == parent
    board, stats = leaderboard(tracker, spec)
    assert stats["trials"] == 2 and list(board["trials"]) == [1, 1]
    assert set(trials_frame(tracker, spec)["run_id"]) == {r.info.run_id for r in runs}
    assert len(_old_runs(spec, first)) == 4
    capsys.readouterr()
    assert main(["study", "show", str(path)]) == 0
    assert "trials: 2 " in capsys.readouterr().out
