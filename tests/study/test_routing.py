"""Per-class routing: one Optuna sampler and one ASHA per class inside one Tune experiment.

No Ray cluster: the searcher and scheduler are driven directly, the scheduler with real
``ray.tune.experiment.Trial`` objects (ASHA never touches its ``tune_controller`` argument).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import optuna
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from ssad.config import load_config
from ssad.study.spec import SearchSpace, load_search_space
from ssad.study.tune.routing import ClassRoutedScheduler, ClassRoutedSearcher, asha_factory
from ssad.study.tune.tune_internals import asha_trial_ids, optuna_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

METRIC = "val_image_auroc"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def space(tmp_path: Path, study_helpers) -> SearchSpace:
    import yaml

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(study_helpers.TINY_SPACE))
    return load_search_space(path)


def make_searcher(space: SearchSpace, **kwargs) -> ClassRoutedSearcher:
    opts = {
        "classes": ["A", "B"],
        "space": space,
        "configs_per_class": 4,
        "seeds_per_config": 1,
        "kind": "optuna",
        "seed": 0,
        "metric": METRIC,
        "mode": "max",
    }
    opts.update(kwargs)
    return ClassRoutedSearcher(**opts)


def completed_values(searcher: ClassRoutedSearcher, cls: str) -> list[float]:
    """The values the class's own Optuna study has been told (complete trials)."""
    study = optuna_study(searcher.subs[cls])
    return [t.value for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]


# ---- searcher --------------------------------------------------------------------------------------


def test_round_robin_then_finished(space: SearchSpace) -> None:
    s = make_searcher(space, configs_per_class=3)
    cfgs = [s.suggest(f"t{i}") for i in range(6)]
    assert [c["class_name"] for c in cfgs] == ["A", "B"] * 3
    assert all(c["seed"] == 0 for c in cfgs)
    assert len({c["config_id"] for c in cfgs}) == 6
    assert set(cfgs[0]["params"]) == set(space.keys)
    assert s.suggest("t6") == Searcher.FINISHED
    assert s.suggest("t7") == Searcher.FINISHED


def test_seed_replicas_share_params_and_tell_the_mean_once(space: SearchSpace) -> None:
    s = make_searcher(space, configs_per_class=2, seeds_per_config=2)
    cfgs = {f"t{i}": s.suggest(f"t{i}") for i in range(8)}
    assert s.suggest("t8") == Searcher.FINISHED
    order = list(cfgs.values())
    assert [c["class_name"] for c in order] == ["A", "A", "B", "B", "A", "A", "B", "B"]
    assert [c["seed"] for c in order] == [0, 1] * 4
    assert [c["trial_number"] for c in order] == [1, 2, 1, 2, 3, 4, 3, 4]  # per class, from 1
    for first, second in zip(order[::2], order[1::2]):
        assert first["params"] == second["params"]
        assert first["config_id"] == second["config_id"]
    assert order[0]["params"] != order[4]["params"]  # another configuration, not a replica

    # A's first configuration: replicas t0 (seed 0) and t1 (seed 1)
    s.on_trial_complete("t0", {METRIC: 0.6})
    assert completed_values(s, "A") == []  # not told before every seed is in
    s.on_trial_complete("t1", {METRIC: 0.8})
    assert completed_values(s, "A") == [pytest.approx(0.7)]
    s.on_trial_complete("t1", {METRIC: 0.8})  # a duplicate completion is not told again
    assert completed_values(s, "A") == [pytest.approx(0.7)]
    # a failed replica: the mean of the others; all replicas failed: an error for Optuna
    s.on_trial_complete("t4", None, error=True)
    s.on_trial_complete("t5", {METRIC: 0.9})
    assert completed_values(s, "A") == [pytest.approx(0.7), pytest.approx(0.9)]
    s.on_trial_complete("t2", None, error=True)
    s.on_trial_complete("t3", {"other": 1.0})
    study_b = optuna_study(s.subs["B"])
    assert study_b.trials[0].state == optuna.trial.TrialState.FAIL
    assert completed_values(s, "B") == []


def test_max_is_never_below_its_min(tmp_path: Path) -> None:
    # overlapping ranges, and a min that may exceed the max's highest value
    path = tmp_path / "pairs.yaml"
    path.write_text(
        "defects.big.area_min: {type: float, low: 0.05, high: 0.2}\n"
        "defects.big.area_max: {type: float, low: 0.1, high: 0.15}\n"
        "defects.scar.aspect_high_min: {type: float, low: 1.5, high: 3.0}\n"
        "defects.scar.aspect_high_max: {type: float, low: 2.0, high: 4.0}\n"
        "memory.k: {type: int, low: 1, high: 5}\n"
    )
    space = load_search_space(path)
    assert space.pairs() == {
        "defects.big.area_min": "defects.big.area_max",
        "defects.scar.aspect_high_min": "defects.scar.aspect_high_max",
    }
    s = make_searcher(space, configs_per_class=40)
    rng = random.Random(0)
    for i in range(80):  # past the TPE start-up trials
        cfg = s.suggest(f"t{i}")
        p = cfg["params"]
        assert p["defects.big.area_min"] <= p["defects.big.area_max"] <= 0.15
        assert p["defects.scar.aspect_high_min"] <= p["defects.scar.aspect_high_max"]
        s.on_trial_complete(f"t{i}", {METRIC: rng.random()})
    assert s.suggest("t80") == Searcher.FINISHED


def _categorical_space(tmp_path: Path, choices: dict[str, list]) -> SearchSpace:
    path = tmp_path / "categorical.yaml"
    path.write_text(
        "".join(f"{k}: {{type: categorical, choices: {v}}}\n" for k, v in choices.items())
    )
    return load_search_space(path, base=load_config(preset="seed"))  # windows: both categories


def _run(s: ClassRoutedSearcher, n: int, value) -> list[dict]:
    """Hand out ``n`` trials one at a time, each completed before the next is asked for."""
    cfgs = []
    for i in range(n):
        cfgs.append(s.suggest(f"t{i}"))
        s.on_trial_complete(f"t{i}", {METRIC: value(cfgs[-1]["params"])})
    return cfgs


def test_a_repeated_configuration_is_not_run_again(tmp_path: Path) -> None:
    # the preset search's shape: categorical keys, few configurations per class; TPE re-proposes
    # its best configuration as soon as its start-up trials are done
    space = _categorical_space(
        tmp_path,
        {
            "data.image_size": [96, 128, 160],
            "pretext.patch_size": [24, 32, 48],
            "eval.scoring": ["windows", "dense"],
            "eval.image_score": ["max", "topk"],
        },
    )
    s = make_searcher(space, classes=["A"], configs_per_class=12)
    cfgs = _run(s, 12, lambda p: p["data.image_size"] / 200 + p["pretext.patch_size"] / 100)
    keys = [tuple(sorted(c["params"].items())) for c in cfgs]
    assert len(set(keys)) == 12, keys
    assert s.suggest("t12") == Searcher.FINISHED
    # Optuna was told each repeat's known value: its best is still the best configuration run
    study = optuna_study(s.subs["A"])
    assert study.best_value == max(
        p["data.image_size"] / 200 + p["pretext.patch_size"] / 100
        for p in (c["params"] for c in cfgs)
    )


def test_a_used_up_space_runs_the_repeat(tmp_path: Path) -> None:
    space = _categorical_space(tmp_path, {"eval.image_score": ["max", "topk"]})
    s = make_searcher(space, classes=["A"], configs_per_class=3)
    cfgs = _run(s, 3, lambda p: 0.5)
    assert {c["params"]["eval.image_score"] for c in cfgs} == {"max", "topk"}
    assert len({c["config_id"] for c in cfgs}) == 3  # the third runs, as its own configuration
    assert s.suggest("t3") == Searcher.FINISHED


def test_save_restore_continues_identically(space: SearchSpace, tmp_path: Path) -> None:
    s = make_searcher(space, configs_per_class=8, seeds_per_config=2)
    rng = random.Random(1)
    for i in range(10):  # mid-way: a replica pending, some configs told, some running
        s.suggest(f"t{i}")
    for i in range(7):
        s.on_trial_complete(f"t{i}", {METRIC: rng.random()})
    ckpt = tmp_path / "searcher.pkl"
    s.save(str(ckpt))
    twin = copy.deepcopy(s)
    fresh = make_searcher(space, configs_per_class=8, seeds_per_config=2, seed=99)
    fresh.restore(str(ckpt))

    for i in range(7, 10):  # the running ones finish in both
        value = rng.random()
        twin.on_trial_complete(f"t{i}", {METRIC: value})
        fresh.on_trial_complete(f"t{i}", {METRIC: value})
    for i in range(10, 33):
        a, b = twin.suggest(f"t{i}"), fresh.suggest(f"t{i}")
        assert a == b, i  # trial numbers included: the restored searcher keeps counting
        if a != Searcher.FINISHED:
            value = rng.random()
            twin.on_trial_complete(f"t{i}", {METRIC: value})
            fresh.on_trial_complete(f"t{i}", {METRIC: value})
    assert twin.suggest("t99") == fresh.suggest("t99") == Searcher.FINISHED
    for cls in ("A", "B"):
        assert completed_values(twin, cls) == completed_values(fresh, cls)


def test_grid_per_class(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        "memory.k: {type: int, low: 1, high: 2}\n"
        "eval.image_score: {type: categorical, choices: [max, topk]}\n"
    )
    space = load_search_space(path)
    s = make_searcher(space, kind="grid", configs_per_class=len(space.grid()))
    cfgs = [s.suggest(f"t{i}") for i in range(8)]
    assert s.suggest("t8") == Searcher.FINISHED
    for cls in ("A", "B"):
        points = [c["params"] for c in cfgs if c["class_name"] == cls]
        assert points == space.grid()


def test_each_class_sampler_sees_only_its_own_results(space: SearchSpace) -> None:
    """DESIGN: a single Optuna study would learn one class's optimum from another's results."""
    s = make_searcher(space, configs_per_class=6)
    rng = random.Random(2)
    told: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(12):
        cfg = s.suggest(f"t{i}")
        value = (0.99 if cfg["class_name"] == "A" else 0.6) + rng.uniform(-0.005, 0.005)
        told[cfg["class_name"]].append(value)
        s.on_trial_complete(f"t{i}", {METRIC: value})
    for cls in ("A", "B"):
        assert completed_values(s, cls) == pytest.approx(told[cls])
    assert all(v > 0.98 for v in completed_values(s, "A"))
    assert all(v < 0.61 for v in completed_values(s, "B"))
    assert optuna_study(s.subs["A"]) is not optuna_study(s.subs["B"])


# ---- scheduler ------------------------------------------------------------------------------------


def _trial(trial_id: str, cls: str) -> Trial:
    return Trial("ssad_trial", config={"class_name": cls}, trial_id=trial_id, stub=True)


# (trial, class, iteration, value): the easy class A near 0.99, the hard class B near 0.6;
# b1 is B's best trial, b2 its worse one.
STREAM = [
    ("a1", "A", 1, 0.99),
    ("a2", "A", 1, 0.985),
    ("b1", "B", 1, 0.62),
    ("b2", "B", 1, 0.55),
    ("a3", "A", 1, 0.995),
    ("a1", "A", 2, 0.992),
    ("b1", "B", 2, 0.64),
    ("a3", "A", 2, 0.991),
]


def _feed(scheduler: TrialScheduler, trials: dict[str, Trial]) -> dict[tuple[str, int], str]:
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    decisions = {}
    stopped: set[str] = set()
    for tid, _cls, it, value in STREAM:
        if tid in stopped:
            continue
        result = {"training_iteration": it, METRIC: value}
        action = scheduler.on_trial_result(None, trials[tid], result)
        decisions[(tid, it)] = action
        if action == TrialScheduler.STOP:
            stopped.add(tid)
            scheduler.on_trial_complete(None, trials[tid], result)
    return decisions


def _asha() -> TrialScheduler:
    return asha_factory(max_t=4, grace_period=1, reduction_factor=2)()


def _asha_for(metric: str) -> TrialScheduler:
    """The same ASHA, standalone (metric and mode set as Tune would)."""
    sched = _asha()
    sched.set_search_properties(metric, "max")
    return sched


def test_per_class_asha_keeps_the_hard_class_best_trial() -> None:
    """DESIGN: two classes with different metric scales must both keep their best trials."""
    trials = {tid: _trial(tid, cls) for tid, cls, _, _ in STREAM}
    routed = ClassRoutedScheduler(_asha, metric=METRIC, mode="max")
    got = _feed(routed, trials)
    assert got[("b1", 1)] == TrialScheduler.CONTINUE  # B's best survives its rung...
    assert got[("b1", 2)] == TrialScheduler.CONTINUE
    assert got[("b2", 1)] == TrialScheduler.STOP  # ...and B's worse trial is still pruned
    assert got[("a2", 1)] == TrialScheduler.STOP  # A is pruned among A's own trials
    assert got[("a3", 1)] == got[("a1", 2)] == TrialScheduler.CONTINUE
    assert got[("a3", 2)] == TrialScheduler.STOP
    assert set(routed.per_class) == {"A", "B"}
    assert routed.per_class["A"] is not routed.per_class["B"]
    assert "A:" in routed.debug_string() and "B:" in routed.debug_string()

    # the same stream through one global ASHA stops B's best trial for being "worse" than A's
    glob = _asha_for(METRIC)
    got_global = _feed(glob, {tid: _trial(tid, cls) for tid, cls, _, _ in STREAM})
    assert got_global[("b1", 1)] == TrialScheduler.STOP


def test_per_class_asha_decides_like_asha_alone_within_a_class() -> None:
    trials = {tid: _trial(tid, cls) for tid, cls, _, _ in STREAM}
    routed = _feed(ClassRoutedScheduler(_asha, metric=METRIC, mode="max"), trials)
    only_a = _asha_for(METRIC)
    for t in (trials["a1"], trials["a2"], trials["a3"]):
        only_a.on_trial_add(None, t)
    for tid, cls, it, value in STREAM:
        if cls == "A" and (tid, it) in routed:
            got = only_a.on_trial_result(
                None, trials[tid], {"training_iteration": it, METRIC: value}
            )
            assert got == routed[(tid, it)], (tid, it)


def test_last_epoch_stops_and_remove_is_routed() -> None:
    routed = ClassRoutedScheduler(_asha, metric=METRIC, mode="min")
    t = _trial("x1", "B")
    routed.on_trial_add(None, t)
    assert routed.on_trial_result(None, t, {"training_iteration": 1, METRIC: 0.3}) == "CONTINUE"
    assert routed.on_trial_result(None, t, {"training_iteration": 4, METRIC: 0.3}) == "STOP"
    routed.on_trial_remove(None, t)
    assert "x1" not in asha_trial_ids(routed.per_class["B"])


def test_ablation_hands_out_every_variant_class_and_seed_once(
    space: SearchSpace, tmp_path: Path
) -> None:
    variants = {"base": {}, "fifo": {"memory.fill": "fifo"}, "k5": {"memory.k": 5}}
    opts = {"kind": "ablation", "variants": variants, "configs_per_class": 3, "seeds_per_config": 2}
    s = make_searcher(space, **opts)
    cfgs = [s.suggest(f"t{i}") for i in range(5)]
    ckpt = tmp_path / "searcher.pkl"
    s.save(str(ckpt))  # a resume mid-way continues where it stopped
    fresh = make_searcher(space, **opts)
    fresh.restore(str(ckpt))
    cfgs += [fresh.suggest(f"t{i}") for i in range(5, 12)]
    assert fresh.suggest("t12") == Searcher.FINISHED
    got = sorted((c["variant"], c["class_name"], c["seed"]) for c in cfgs)
    assert got == sorted((v, c, s) for v in variants for c in ("A", "B") for s in (0, 1))
    for c in cfgs:
        assert c["params"] == variants[c["variant"]]  # the overrides, without the name
    assert [c["variant"] for c in cfgs if c["class_name"] == "A"][:2] == ["base", "base"]
