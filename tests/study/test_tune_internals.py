"""Ray Tune's and Optuna's private details that ssad relies on (:mod:`ssad.study.tune.tune_internals`).

Each wrapper runs on the installed libraries' real objects: a real ``OptunaSearch`` over a real
Optuna study, a real ``ASHAScheduler`` with real Tune trials, and (one slow case) a real Tune
experiment and its restore. A Ray or Optuna upgrade that changes one of them fails here, naming
the attribute and the versions, before a study trips over it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from ssad.study.tune import tune_internals as ti
from ssad.study.tune.routing import asha_factory

optuna.logging.set_verbosity(optuna.logging.WARNING)

METRIC = "val_image_auroc"


def changed(what: str) -> str:
    """The failure message: what ssad relies on, and the versions that broke it."""
    return (
        f"{what} changed in {ti.versions()}: adapt ssad/study/tune/tune_internals.py, the one place "
        "that relies on it"
    )


def _space(trial: optuna.Trial) -> None:  # module level: the searcher pickles it by reference
    trial.suggest_float("x", 0.0, 1.0)


def _optuna_search() -> OptunaSearch:
    sampler = optuna.samplers.TPESampler(seed=0)
    return OptunaSearch(_space, metric=METRIC, mode="max", sampler=sampler)


def _states(search: OptunaSearch) -> list[tuple[str, float | None]]:
    return [(t.state.name, t.value) for t in ti.optuna_study(search).trials]


def test_wrappers_fail_loudly_naming_the_attribute_and_versions() -> None:
    with pytest.raises(ti.TuneInternalsError) as info:
        ti.rename_pending(object(), "a", "b")
    msg = str(info.value)
    assert "object._ot_trials" in msg and "ray " in msg and "optuna " in msg, msg


def test_optuna_search_pending_trial_can_be_renamed() -> None:
    """rename_pending: OptunaSearch._ot_trials maps a Tune trial id to its Optuna trial."""
    search = _optuna_search()
    assert isinstance(getattr(search, "_ot_trials", None), dict), changed("OptunaSearch._ot_trials")
    assert isinstance(ti.optuna_study(search), optuna.Study), changed("OptunaSearch._ot_study")
    search.suggest("t1")
    ti.rename_pending(search, "t1", "t1-repeat1")
    search.on_trial_complete("t1-repeat1", {METRIC: 0.5})  # told under the new id
    search.suggest("t1")  # the old id asks Optuna for a new trial
    assert _states(search) == [("COMPLETE", 0.5), ("RUNNING", None)], changed(
        "OptunaSearch._ot_trials (suggest / on_trial_complete by trial id)"
    )
    search.on_trial_complete("t1", {METRIC: 0.7})
    assert _states(search) == [("COMPLETE", 0.5), ("COMPLETE", 0.7)], changed(
        "OptunaSearch._ot_trials"
    )


def _trial(trial_id: str) -> Trial:
    return Trial("ssad_trial", config={"class_name": "A"}, trial_id=trial_id, stub=True)


def _asha() -> ASHAScheduler:
    sched = asha_factory(max_t=4, grace_period=1, reduction_factor=2)()
    sched.set_search_properties(METRIC, "max")
    return sched


def _fed_asha() -> ASHAScheduler:
    sched = _asha()
    trials = [_trial(t) for t in ("a", "b", "c")]
    for t in trials:
        sched.on_trial_add(None, t)
    for t, value in zip(trials, (0.9, 0.8, 0.7), strict=True):
        sched.on_trial_result(None, t, {"training_iteration": 1, METRIC: value})
    return sched


def test_asha_rungs_and_trials() -> None:
    """asha_rungs: ASHA's _brackets and their _rungs; asha_trial_ids: its _trial_info."""
    sched = _fed_asha()
    for name in ("_brackets", "_trial_info"):
        assert hasattr(sched, name), changed(f"ASHAScheduler.{name}")
    assert all(hasattr(b, "_rungs") for b in sched._brackets), changed("ASHA bracket._rungs")
    rungs = ti.asha_rungs(sched)
    assert [m for m, _ in rungs] == [4, 2, 1], changed("ASHA bracket._rungs (milestones)")
    assert dict(rungs)[1] == {"a": 0.9, "b": 0.8, "c": 0.7}, changed("ASHA bracket._rungs")
    assert ti.asha_trial_ids(sched) == {"a", "b", "c"}, changed("ASHAScheduler._trial_info")
    sched.on_trial_remove(None, _trial("b"))
    assert ti.asha_trial_ids(sched) == {"a", "c"}, changed("ASHAScheduler._trial_info")
    assert ti.asha_rungs(FIFOScheduler()) == []


def test_searcher_and_asha_state_pickle_whole(tmp_path: Path) -> None:
    """dump_state / load_state of OptunaSearch objects (the routed searcher's save), and ASHA
    objects pickled in Tune's callback snapshot: the state survives, and the restored objects
    go on where the originals were."""
    search = _optuna_search()
    search.suggest("t1")
    search.on_trial_complete("t1", {METRIC: 0.4})
    search.suggest("t2")  # pending across the save
    path = tmp_path / "state.pkl"
    ti.dump_state(path, {"sub": search, "n": 2})
    back = ti.load_state(path)
    assert back["n"] == 2
    restored = back["sub"]
    assert _states(restored) == _states(search), changed("pickling OptunaSearch")
    restored.on_trial_complete("t2", {METRIC: 0.6})
    assert restored.suggest("t3") is not None
    assert [s for s, _ in _states(restored)] == ["COMPLETE", "COMPLETE", "RUNNING"], changed(
        "pickling OptunaSearch (a pending trial told after restore)"
    )

    sched = _fed_asha()
    twin = pickle.loads(pickle.dumps({"per_class": {"A": sched}}))["per_class"]["A"]
    assert ti.asha_rungs(twin) == ti.asha_rungs(sched), changed("pickling ASHAScheduler")
    decide = {"training_iteration": 1, METRIC: 0.1}
    for s in (sched, twin):
        s.on_trial_add(None, _trial("d"))
    assert twin.on_trial_result(None, _trial("d"), decide) == sched.on_trial_result(
        None, _trial("d"), decide
    ), changed("pickling ASHAScheduler (decisions after restore)")


# ---- Tune's ordering: callbacks first, then the searcher (retire_lost relies on it) --------------
@pytest.mark.slow
def test_first_step_sees_the_snapshot_before_the_searcher_is_asked(
    local_ray, tmp_path: Path
) -> None:
    """At a driver session's first on_step_begin Tune holds exactly its snapshot's trials and
    has not asked the searcher yet: in a new experiment (none) and after Tuner.restore (all).

    Tune pickles the searcher and the callback into its snapshot, so they record into files.
    """
    import json

    from ray import tune
    from ray.tune.search import Searcher

    asked, steps = tmp_path / "asked.txt", tmp_path / "first_steps.jsonl"

    class Counting(Searcher):
        def __init__(self, log: Path) -> None:
            super().__init__(metric="score", mode="max")
            self.log, self.handed = log, 0

        def suggest(self, trial_id: str):
            with open(self.log, "a") as f:
                f.write(trial_id + "\n")
            if self.handed >= 2:
                return Searcher.FINISHED
            self.handed += 1
            return {"i": self.handed}

        def on_trial_complete(self, trial_id, result=None, error=False) -> None:
            pass

        def save(self, checkpoint_path: str) -> None:
            ti.dump_state(checkpoint_path, {"handed": self.handed})

        def restore(self, checkpoint_path: str) -> None:
            self.handed = ti.load_state(checkpoint_path)["handed"]

    class FirstStep(tune.Callback):
        def __init__(self, log: Path, asked: Path) -> None:
            self.log, self.asked, self.seen = log, asked, False

        def setup(self, **info) -> None:
            self.seen = False

        def on_step_begin(self, iteration, trials, **info) -> None:
            if not self.seen:
                self.seen = True
                n = len(self.asked.read_text().splitlines()) if self.asked.exists() else 0
                with open(self.log, "a") as f:
                    f.write(json.dumps([sorted(ti.snapshot_trial_ids(trials)), n]) + "\n")

    marker = tmp_path / "fail"
    marker.write_text("")

    def trainable(config: dict) -> None:
        if config["i"] == 2 and marker.exists():
            raise RuntimeError("first session: trial 2 fails")
        tune.report({"score": float(config["i"])})

    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=Counting(asked), num_samples=2, max_concurrent_trials=1
        ),
        run_config=tune.RunConfig(
            name="order",
            storage_path=str(tmp_path / "tune"),
            callbacks=[FirstStep(steps, asked)],
            verbose=0,
        ),
    )
    results = tuner.fit()
    first = sorted(r.path for r in results)
    assert len(first) == 2
    marker.unlink()
    asked_before = len(asked.read_text().splitlines())
    restored = tune.Tuner.restore(
        str(tmp_path / "tune" / "order"), trainable=trainable, resume_errored=True
    )
    again = restored.fit()
    assert sorted(r.path for r in again) == first and not again.errors
    (new_ids, new_asked), (old_ids, old_asked) = (
        json.loads(line) for line in steps.read_text().splitlines()
    )
    assert (new_ids, new_asked) == ([], 0), changed("Tune's step order (new experiment)")
    assert len(old_ids) == 2, changed(f"Tuner.restore's trials at the first step ({old_ids})")
    assert old_asked == asked_before, changed("Tune's step order (restored experiment)")
