"""Per-class search and early stopping inside one Tune experiment.

All classes' trials share the cluster, but AUROC scales differ between classes: a single Optuna
study would learn one class's optimum from another's results, and a single ASHA would stop a hard
class's trials for being "worse" than an easy class's. So the trial config carries its class, and:

* :class:`ClassRoutedSearcher` keeps one Optuna searcher (or grid) per class, hands out trials
  round-robin over classes, replicates each configuration over ``seeds_per_config`` seeds and tells
  the class's sampler the mean over seeds; it implements ``save``/``restore`` so ``Tuner.restore``
  keeps the samplers' state.
* :class:`ClassRoutedScheduler` keeps one ASHA bracket set per class. Tune's experiment snapshot
  leaves schedulers out, so :class:`SchedulerState` (a Tune callback) carries the per-class rung
  records into each snapshot (``callback-states-*.pkl``, next to the searcher state) and back into
  the scheduler on ``Tuner.restore``: a resumed study prunes as the uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from ssad.study.results.report import TRIAL_NUMBER
from ssad.study.spec import SearchSpace
from ssad.study.tune.tune_internals import asha_rungs, dump_state, load_state, rename_pending

__all__ = ["ClassRoutedScheduler", "ClassRoutedSearcher", "SchedulerState", "define_by_run"]

log = logging.getLogger(__name__)


class define_by_run:
    """An Optuna define-by-run space; a ``…_max`` is sampled at or above its ``…_min``."""

    def __init__(self, space: SearchSpace) -> None:
        self.partner_of_max = {hi: lo for lo, hi in space.pairs().items()}
        self.max_high = {
            lo: d.high for d in space.dims for lo, hi in space.pairs().items() if d.key == hi
        }
        self.ordered = sorted(space.dims, key=lambda d: d.key in self.partner_of_max)  # mins first

    def __call__(self, trial: optuna.Trial) -> None:
        for d in self.ordered:
            low, high = d.low, d.high
            if d.key in self.partner_of_max and d.kind != "categorical":
                low = max(d.low, trial.params[self.partner_of_max[d.key]])
            if self.max_high.get(d.key) is not None and d.kind != "categorical":
                high = min(d.high, self.max_high[d.key])  # leave room for the max above the min
            if d.kind == "categorical":
                trial.suggest_categorical(d.key, list(d.choices))
            elif d.kind == "int":
                trial.suggest_int(d.key, math.ceil(low), int(high))
            else:
                trial.suggest_float(d.key, low, high, log=d.kind == "logfloat")


_VARIANT = "\0variant"  # an ablation point's variant name, beside its overrides


class _Grid:
    """Grid 'sampler' with the suggest / on_trial_complete shape of a Tune searcher."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        self.points, self.next = points, 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.next >= len(self.points):
            return None
        self.next += 1
        return dict(self.points[self.next - 1])

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        pass


REPEAT_ASKS = 20  # re-asks of the sampler when it repeats a configuration (_suggest_new)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


class ClassRoutedSearcher(Searcher):
    """Round-robin over classes; per class an Optuna TPE searcher (seeded), a grid, or an
    ablation's variants (each trial config then also carries ``"variant": name``).

    Trial configs look like ``{"class_name": c, "seed": s, "config_id": id, "params": {...},
    "trial_number": n}``; ``n`` counts the class's trials from 1 in the order they are handed out
    (seed replicas included) and names the trial (:func:`ssad.study.results.report.trial_name`).
    """

    def __init__(
        self,
        *,
        classes: list[str],
        space: SearchSpace,
        configs_per_class: int,
        seeds_per_config: int,
        kind: str,
        seed: int,
        metric: str,
        mode: str,
        variants: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.classes = list(classes)
        self.configs_per_class, self.seeds_per_config = configs_per_class, seeds_per_config
        self.subs: dict[str, Any] = {}
        for i, c in enumerate(self.classes):
            if kind == "ablation":  # every variant, in the spec's order (baseline first)
                self.subs[c] = _Grid([{_VARIANT: n, **o} for n, o in (variants or {}).items()])
            elif kind == "grid":
                self.subs[c] = _Grid(space.grid())
            else:
                sampler = optuna.samplers.TPESampler(
                    seed=seed + i, n_startup_trials=max(2, configs_per_class // 3)
                )
                self.subs[c] = OptunaSearch(
                    define_by_run(space), metric=metric, mode=mode, sampler=sampler
                )
        self.suggested = dict.fromkeys(self.classes, 0)  # configurations handed out per class
        self.numbered = dict.fromkeys(self.classes, 0)  # trials handed out per class
        self.pending: list[dict[str, Any]] = []  # seed replicas waiting to be handed out
        self.trials: dict[str, dict[str, Any]] = {}  # trial id → its config
        self.results: dict[str, dict[str, float | None]] = {}  # config id → trial id → metric
        self.told: set[str] = set()

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec
    ) -> bool:
        return True  # metric/mode are fixed at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.pending:
            cfg = self.pending.pop(0)
        else:
            open_classes = [c for c in self.classes if self.suggested[c] < self.configs_per_class]
            if not open_classes:
                return Searcher.FINISHED
            cls = min(open_classes, key=lambda c: (self.suggested[c], self.classes.index(c)))
            params = self._suggest_new(cls, trial_id)
            if params is None:  # grid exhausted early
                self.suggested[cls] = self.configs_per_class
                return self.suggest(trial_id)
            self.suggested[cls] += 1
            config_id = trial_id
            self.results[config_id] = {}
            extra = {"variant": params.pop(_VARIANT)} if _VARIANT in params else {}
            replicas = [
                {"class_name": cls, "seed": s, "config_id": config_id, "params": params, **extra}
                for s in range(self.seeds_per_config)
            ]
            cfg, self.pending = replicas[0], self.pending + replicas[1:]
        cls = cfg["class_name"]
        self.numbered[cls] = self.numbered.get(cls, 0) + 1
        cfg = {**cfg, TRIAL_NUMBER: self.numbered[cls]}
        self.trials[trial_id] = cfg
        self.results[cfg["config_id"]][trial_id] = None
        return cfg

    def _suggest_new(self, cls: str, trial_id: str) -> dict[str, Any] | None:
        """The class's next configuration, never one it already has (Optuna kind).

        TPE with few trials over categorical keys re-proposes its best configuration as is (the
        preset search ran 4 of its first 19 trials twice, results identical digit for digit: a
        seeded configuration is deterministic). A repeat costs a whole trial and tells Optuna
        nothing, so it is answered at once: told the value the earlier trial got (or a failure
        while that one still runs), and the sampler asked again, up to ``REPEAT_ASKS`` times;
        after that (a small space used up) the repeat is run.
        """
        sub = self.subs[cls]
        params = sub.suggest(trial_id)
        if not isinstance(sub, OptunaSearch):
            return params
        seen = {
            _key(c["params"]): c["config_id"]
            for c in self.trials.values()
            if c["class_name"] == cls
        }
        for ask in range(1, REPEAT_ASKS + 1):
            earlier = seen.get(_key(params))
            if earlier is None:
                break
            repeat = f"{trial_id}-repeat{ask}"
            rename_pending(sub, trial_id, repeat)
            self._tell(sub, repeat, list(self.results[earlier].values()))
            params = sub.suggest(trial_id)
        return params

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        cfg = self.trials.get(trial_id)
        if cfg is None:
            return
        cid = cfg["config_id"]
        value = None if error or not result else result.get(self.metric)
        self.results[cid][trial_id] = math.nan if value is None else float(value)
        done = self.results[cid]
        if (
            cid in self.told
            or len(done) < self.seeds_per_config
            or any(v is None for v in done.values())
        ):
            return
        self.told.add(cid)
        self._tell(self.subs[cfg["class_name"]], cid, list(done.values()))

    def _tell(self, sub: Any, key: str, values: list[float | None]) -> None:
        """Tell a class's sampler one configuration's value: the mean over its seeds that
        finished, or a failure when none did or some still run (``None``)."""
        finite = [v for v in values if v is not None and not math.isnan(v)]
        if finite and None not in values:
            sub.on_trial_complete(key, {self.metric: sum(finite) / len(finite)})
        else:
            sub.on_trial_complete(key, None, error=True)

    # Tuner.restore silently loses a searcher's state without these.
    def save(self, checkpoint_path: str) -> None:
        dump_state(checkpoint_path, self.__dict__)  # the per-class OptunaSearch objects whole

    def restore(self, checkpoint_path: str) -> None:
        state = load_state(checkpoint_path)
        state.setdefault("numbered", dict.fromkeys(self.classes, 0))  # saved before numbering
        self.__dict__.update(state)


class ClassRoutedScheduler(FIFOScheduler):
    """One ASHA per class, created on the class's first trial; trials run in FIFO order."""

    def __init__(self, make: Callable[[], TrialScheduler], *, metric: str, mode: str) -> None:
        super().__init__()
        self._make = make
        self._metric, self._mode = metric, mode
        self.per_class: dict[str, TrialScheduler] = {}

    def _for(self, trial) -> TrialScheduler:
        cls = trial.config.get("class_name", "?")
        if cls not in self.per_class:
            sched = self._make()
            sched.set_search_properties(self._metric, self._mode)
            self.per_class[cls] = sched
        return self.per_class[cls]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._for(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._for(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._for(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._for(trial).on_trial_remove(tune_controller, trial)

    # Tune snapshots a searcher, never a scheduler: SchedulerState carries these through resumes.
    def get_state(self) -> dict[str, Any]:
        """The per-class schedulers (ASHA: brackets, rung records, trial → bracket), picklable."""
        return {"per_class": self.per_class}

    def set_state(self, state: dict[str, Any]) -> None:
        self.per_class = dict(state["per_class"])

    def rung_records(self) -> dict[str, list[tuple[int, dict[str, float]]]]:
        """class → [(milestone, {trial id: metric at that milestone})] of every ASHA bracket."""
        return {cls: asha_rungs(sched) for cls, sched in sorted(self.per_class.items())}

    def debug_string(self) -> str:
        return "Per-class ASHA: " + "; ".join(
            f"{c}: {s.debug_string()}" for c, s in sorted(self.per_class.items())
        )


class SchedulerState(Callback):
    """Puts a scheduler's state into Tune's experiment snapshots and back on restore.

    Tune saves and restores callback states with every snapshot (``callback-states-*.pkl``);
    ``Tuner.restore`` unpickles the scheduler and this callback together (``tuner.pkl``), so the
    reference below is the restored scheduler, and :meth:`set_state` runs before the restored
    trials are queued again.
    """

    def __init__(self, scheduler: ClassRoutedScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        return {"scheduler": self.scheduler.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.set_state(state["scheduler"])


def asha_factory(
    *, max_t: int, grace_period: int, reduction_factor: int
) -> Callable[[], TrialScheduler]:
    def make() -> TrialScheduler:
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )

    return make
