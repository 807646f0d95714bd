"""Which launch of a study a run belongs to: a first launch, a resume, or a new launch.

A study's records live in two places: Tune's folder (``storage_path/<name>``: checkpoints, searcher
state) and MLflow (a parent run per launch, tagged ``ssad.launch_id``, and its trial runs). A
launch over a study that already has either is refused unless the user says what they mean:

- ``--resume`` continues the newest launch (its Tune folder and its parent run), after checking
  that the resolved spec is the one the launch recorded (:mod:`ssad.study.record`): any change
  but the tracking URI is refused, naming the keys;
- ``--new`` starts a new launch: the old Tune folder is kept beside the new one
  (``<name>.launch-<old id>``), a new parent run gets a new launch id, and readers (leaderboard,
  promotion) see only the new launch's trials. Old runs stay in MLflow, never mixed in.

The driver holds a launch's state in one :class:`Launch` (Tune folder, launch id, parent run,
whether Tune state is restored) and writes it into the study record before every ``fit``; the
Tune callback and ``ssad study sync`` read it back from there, never from elsewhere. State that
Tune must snapshot with its trials stays in Tune's folder, next to them: the searcher's
(``searcher-state-*.pkl``) and the per-class ASHA rungs (``callback-states-*.pkl``,
:class:`ssad.study.tune.routing.SchedulerState`). Runs of trials a killed driver left unrecorded
are retired at a session's first Tune step (``StudyTracker.retire_lost``, relying on Tune's
ordering: :mod:`ssad.study.tune.tune_internals`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssad.study.record import check_resume, read_record, write_record
from ssad.study.spec import SpecError, StudySpec
from ssad.study.tracking import TAG_LAUNCH, StudyTracker

__all__ = ["Launch", "archive_folder", "open_launch", "prepare_launch"]

log = logging.getLogger(__name__)


@dataclass
class Launch:
    """One launch of a study as the driver knows it; the single source of its state."""

    exp_dir: Path  # Tune's experiment folder (storage_path / name), the record inside it
    launch_id: str | None  # MLflow tag ssad.launch_id; None until the parent run makes one
    restorable: bool  # Tune state to restore (--resume, or a relaunch of a killed first launch)
    parent_id: str | None = None  # the launch's MLflow parent run, once opened

    def open_parent(self, tracker: StudyTracker, *, params: dict[str, Any], artifacts) -> str:
        """The launch's parent run (reused on resume, else created with params and artifacts)."""
        self.parent_id = tracker.parent_run(params=params, artifacts=artifacts)
        self.launch_id = tracker.current_launch()
        return self.parent_id

    def write_record(
        self, spec: StudySpec, tracker: StudyTracker, *, base: dict[str, Any], prints: dict
    ) -> dict[str, Any]:
        """Where and what the Tune callback logs, read by it when Tune sets it up: a restored
        experiment logs to the tracking store named now (a resume may change only that). The
        spec's hash is tagged on the parent run."""
        record = write_record(
            self.exp_dir,
            spec,
            launch_id=self.launch_id,
            parent_id=self.parent_id,
            base=base,
            prints=prints,
            max_t=spec.max_epochs,
        )
        tracker.set_tags(self.parent_id, {"ssad.spec_hash": record["spec_hash"]})
        return record


def open_launch(
    spec: StudySpec, tracker: StudyTracker, *, resume: bool = False, new: bool = False
) -> Launch:
    """Decide the launch (:func:`prepare_launch`, same refusals) and gather its state."""
    from ray import tune

    launch_id = prepare_launch(spec, tracker, resume=resume, new=new)
    if launch_id:
        log.info("study %s: launch %s", spec.name, launch_id)
    exp_dir = spec.storage_path / spec.name
    restorable = exp_dir.exists() and tune.Tuner.can_restore(str(exp_dir))
    return Launch(exp_dir=exp_dir, launch_id=launch_id, restorable=restorable)


def prepare_launch(
    spec: StudySpec, tracker: StudyTracker, *, resume: bool = False, new: bool = False
) -> str | None:
    """Decide the launch before anything runs; returns its launch id (``None``: not made yet).

    Raises:
        SpecError: a fresh launch over an existing study, a resume without Tune state over
            earlier MLflow runs or with a changed spec, or both flags; the message says which
            flag to pass. ``--resume`` of a study that has neither Tune state nor MLflow runs is
            its first launch, so a re-runnable command (``make demo``) can always pass it.
    """
    if resume and new:
        raise SpecError(f"{spec.path}: --resume and --new exclude each other")
    exp_dir = spec.storage_path / spec.name
    parents = tracker.parents()
    launch = parents[-1].data.tags.get(TAG_LAUNCH) if parents else None
    if new:
        if exp_dir.exists():
            kept = archive_folder(exp_dir, launch)
            log.info("new launch: the previous launch's Tune folder is kept in %s", kept)
        launch = tracker.start_launch()
        log.info("study %s: new launch %s", spec.name, launch)
        return launch
    if resume and not exp_dir.exists() and not parents:
        return None  # nothing to resume and nothing to mix with: the first launch (make demo)
    if resume:
        if not exp_dir.exists():
            raise SpecError(
                f"{spec.path}: --resume: study {spec.name!r} has no Tune state in {exp_dir} to "
                "resume; pass --new to start a new launch (earlier runs stay in MLflow, apart)"
            )
        record = read_record(exp_dir)
        if record is not None:
            changed = check_resume(spec, record)  # raises on anything but the tracking URI
            if changed:
                log.warning(
                    "study %s: resuming with %s changed (%s -> %s): new records go there",
                    spec.name,
                    ", ".join(changed),
                    record.get("tracking_uri"),
                    spec.tracking_uri,
                )
            launch = record.get("launch_id") or launch  # the launch, also in a new store
        tracker.launch_id = launch
        return launch
    if exp_dir.exists() or parents:
        where = [str(exp_dir)] if exp_dir.exists() else []
        if parents:
            where.append(
                f"MLflow parent run {parents[-1].info.run_id} (launch {launch or 'without id'}) "
                f"in {tracker.tracking_uri}, experiment {tracker.experiment}"
            )
        raise SpecError(
            f"{spec.path}: study {spec.name!r} already exists ({'; '.join(where)}): pass "
            "--resume to continue it, or --new to start a new launch (the old runs stay in "
            "MLflow under their own launch id and are never mixed with the new ones)"
        )
    return None


def archive_folder(folder: Path, launch: str | None) -> Path:
    """Move a previous launch's Tune folder aside (``<name>.launch-<id>``), never overwriting."""
    stem = f"{folder.name}.launch-{launch or time.strftime('%Y%m%d-%H%M%S')}"
    target = folder.with_name(stem)
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{stem}-{n}")
    folder.rename(target)
    return target
