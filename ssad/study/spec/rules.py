"""What a study spec may not do: keys that break honest selection, and paths that escape.

Pure functions returning the reason a key or path is refused (``None`` when it is fine); the
spec loader (:mod:`ssad.study.spec`) turns a reason into an error naming the file and key.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "SELECTION_KEYS",
    "TRIAL_KEYS",
    "ablation_refusal",
    "base_override_refusal",
    "final_override_refusal",
    "name_refusal",
    "path_refusal",
    "search_refusal",
]

# Keys that decide which images a trial is judged on: searching them (or changing them for the
# final model) would select on a different validation split per configuration, not on quality.
# defects.* is not among them: with data.val_source synthetic the validation defects are drawn
# with fixed ranges (ssad.data.pretext.synthetic_anomalies uses DefectsConfig()), never with the
# trial's own, so a search over the pretext task's defects is judged on the same images.
SELECTION_KEYS = {
    "data.root": "the data set is the study's (data.root), not a searched value",
    "data.split_seed": "it changes which test images are validation images",
    "data.val_fraction": "it changes which test images are validation images",
    "data.val_source": "it changes what the validation metric measures",
    "data.holdout_fraction": "it changes which train images are validation images",
    "data.val_draws": "it changes which synthetic defects the validation images carry",
    "train.seed": "seeds are the study's seeds_per_config (promotion re-seeds with --seeds)",
}
# Keys every trial sets itself (ssad.study.tune.trial.resolve_trial_config): a searched or base value
# would be silently overwritten.
TRIAL_KEYS = {
    "data.class_name": "each trial's class comes from the spec's classes",
    "train.progress": "trials never draw progress bars",
    "train.val_every": "ASHA compares trials at every epoch, so every trial validates each epoch",
}
# Study and class names become folder names (storage_path/<name>, promoted/<name>/<class>.yaml).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def search_refusal(key: str) -> str | None:
    """Why ``key`` cannot be searched: dishonest selection, or overwritten by every trial.

    Training length (``train.phase1_epochs``, ``train.phase2_epochs``, down to 0) may be
    searched: ASHA's max_t is the longest schedule in the space (``StudySpec.max_epochs``), a
    trial that ends its own shorter schedule finishes (it is not stopped), and finished trials
    compete on their final validation metric whatever their length.
    """
    why = SELECTION_KEYS.get(key) or TRIAL_KEYS.get(key)
    return f"cannot be searched: {why}" if why else None


def ablation_refusal(key: str) -> str | None:
    """Why an ablation variant cannot set ``key``: its trials must be judged on the same images
    with the same seeds (schedules may differ: an ablation has no early stopping)."""
    why = SELECTION_KEYS.get(key) or TRIAL_KEYS.get(key)
    return f"a variant cannot set it: {why}" if why else None


def base_override_refusal(key: str) -> str | None:
    """Why ``key`` cannot be a base override: every trial overwrites it."""
    return f"set by every trial: {TRIAL_KEYS[key]}" if key in TRIAL_KEYS else None


def final_override_refusal(key: str) -> str | None:
    """Why the final model cannot change ``key``: it was selected on the study's data and class."""
    why = SELECTION_KEYS.get(key) or (TRIAL_KEYS[key] if key == "data.class_name" else None)
    return f"the final model must keep it: {why}" if why else None


def name_refusal(name: str) -> str | None:
    """Why ``name`` cannot name a study or class folder."""
    if SAFE_NAME.fullmatch(name) and ".." not in name:
        return None
    return (
        f"{name!r}: use letters, digits, '.', '_' and '-' only (it names folders under "
        "storage_path and promoted/), without '..'"
    )


def path_refusal(path: str) -> str | None:
    """Why an output path from a spec is refused: a ``..`` climbs out of where it points."""
    return f"{path!r}: '..' is not allowed" if ".." in Path(path).parts else None
