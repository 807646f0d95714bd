"""The study record: what a launch fixed (a hash of the resolved spec) and where it logs.

Written as ``<storage_path>/<name>/ssad_study.json`` (inside the Tune experiment folder, so it
moves with it when ``--new`` keeps an old launch aside) before every ``fit``, and the hash is
tagged ``ssad.spec_hash`` on the launch's parent run.

``--resume`` compares the resolved spec with the record and refuses any change, naming the keys
(``Tuner.restore`` takes a new trainable but keeps the searcher, scheduler and callbacks pickled
at launch: trials would train one configuration while MLflow records another). The one change a
resume honours is ``mlflow.tracking_uri``: the driver-side MLflow callback reads the record when
Tune sets it up, so a restored experiment logs to the store named now, not to the pickled one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ssad.config import flatten
from ssad.study.spec import SpecError, StudySpec

__all__ = [
    "RECORD_FILE",
    "changed_keys",
    "check_resume",
    "read_record",
    "spec_fields",
    "write_record",
]

RECORD_FILE = "ssad_study.json"
# Where a study logs, not what it computes: a resume may change these.
MUTABLE = ("mlflow.tracking_uri",)


def spec_fields(spec: StudySpec) -> dict[str, Any]:
    """Every setting of a (preflighted) spec that shapes its trials, as flat, JSON-able keys.

    The base config is listed key by key (``base.train.phase2_lr``), the search space dimension
    by dimension (``search_space.memory.k``), so a refusal can name what changed.
    """
    out: dict[str, Any] = {
        "classes": list(spec.classes),
        "data.root": spec.data_root,
        "data.synthetic_seed": spec.synthetic_seed,
        "searcher.type": spec.searcher,
        "searcher.seed": spec.searcher_seed,
        "scheduler.type": spec.scheduler,
        "scheduler.grace_period": spec.grace_period,
        "scheduler.reduction_factor": spec.reduction_factor,
        "metric": spec.metric,
        "mode": spec.mode,
        "num_samples": spec.num_samples,
        "seeds_per_config": spec.seeds_per_config,
        "resources.cpu": spec.cpu,
        "resources.gpu": spec.gpu,
        "max_concurrent": spec.max_concurrent,
        "max_failures": spec.max_failures,
        "mlflow.experiment": spec.experiment,
        "mlflow.tracking_uri": spec.tracking_uri,
    }
    for key, value in spec.base.flat().items():
        out[f"base.{key}"] = _plain(value)
    for d in spec.space.dims:
        out[f"search_space.{d.key}"] = {
            "type": d.kind,
            **({"choices": _plain(d.choices)} if d.kind == "categorical" else {}),
            **({"low": d.low, "high": d.high} if d.kind != "categorical" else {}),
        }
    if spec.kind == "ablation":  # a resume may not change what a variant means
        out["kind"] = spec.kind
        out["baseline"] = spec.baseline
        out["metrics"] = list(spec.metrics)
        out["alpha"] = spec.alpha
        for name, over in spec.variants.items():
            out[f"variants.{name}"] = _plain(over)
    for key, value in flatten(spec.final.get("overrides", {}) or {}, source="final").items():
        out[f"final.overrides.{key}"] = _plain(value)
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def spec_hash(fields: dict[str, Any]) -> str:
    """Short hash of the fields a resume may not change."""
    fixed = {k: v for k, v in fields.items() if k not in MUTABLE}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys added, removed or changed between two ``spec_fields`` (sorted)."""
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


def write_record(exp_dir: Path, spec: StudySpec, **where: Any) -> dict[str, Any]:
    """Write the record (fields, hash, and ``where``: launch id, parent run, base, ...)."""
    fields = spec_fields(spec)
    record = {
        "study": spec.name,
        "spec_hash": spec_hash(fields),
        "fields": fields,
        "tracking_uri": spec.tracking_uri,
        "experiment": spec.experiment,
        **where,
    }
    exp_dir.mkdir(parents=True, exist_ok=True)
    tmp = exp_dir / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(exp_dir / RECORD_FILE)  # atomic: a killed driver never leaves half a record
    return record


def read_record(exp_dir: Path) -> dict[str, Any] | None:
    path = exp_dir / RECORD_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def check_resume(spec: StudySpec, record: dict[str, Any]) -> list[str]:
    """Refuse a resume whose resolved spec differs from the record; return the honoured changes.

    Raises:
        SpecError: naming every changed key with its old and new value.
    """
    fields = spec_fields(spec)
    changed = changed_keys(record.get("fields", {}), fields)
    fixed = [k for k in changed if k not in MUTABLE]
    if fixed:
        old = record.get("fields", {})
        shown = "; ".join(
            f"{k}: {_show(old.get(k, _MISSING))} -> {_show(fields.get(k, _MISSING))}"
            for k in fixed[:12]
        )
        more = f" (and {len(fixed) - 12} more)" if len(fixed) > 12 else ""
        raise SpecError(
            f"{spec.path}: --resume: the spec changed since study {spec.name!r} was launched "
            f"(spec hash {record.get('spec_hash')} -> {spec_hash(fields)}): {shown}{more}. "
            "Restore those values to resume, or pass --new to start a new launch with them "
            f"(only {', '.join(MUTABLE)} may change on resume)"
        )
    return changed


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


_MISSING = _Missing()


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, _Missing) else json.dumps(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
