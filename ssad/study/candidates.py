"""Promotion's choice: a class's candidate configurations, the seeds that re-check them, the
re-check's winner, and the key that says whether a promotion changed (``ssad.study.promote``)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from ssad.config import Config
from ssad.study.results import stats
from ssad.study.results.leaderboard import comparable
from ssad.study.results.report import short_number
from ssad.study.spec import SpecError, StudySpec

__all__ = ["Candidate", "candidates", "promotion_key", "recheck", "reseed_offsets"]


@dataclass(frozen=True)
class Candidate:
    class_name: str
    config_id: str
    trial_id: str
    value: float  # mean validation metric over the study's seeds
    params: dict[str, Any]
    name: str = ""  # the study trial's name (brick-0007), for people
    recheck: str = ""  # the top-k x seeds re-check: each candidate's mean ± CI, and separability


def candidates(df: pd.DataFrame, spec: StudySpec, cls: str, top_k: int) -> list[Candidate]:
    """The class's top-k configurations by mean validation metric over comparable trials
    (finished ones; see :func:`ssad.study.results.leaderboard.comparable`)."""
    sub = comparable(df[df["class"] == cls], spec.metric)
    if sub.empty:
        raise SpecError(
            f"{spec.path}: class {cls}: the study has no trial with {spec.metric} to promote"
        )
    means = sub.groupby("config_id")[spec.metric].mean()
    means = means.sort_values(ascending=spec.mode == "min")
    out = []
    for cid, value in means.head(top_k).items():
        row = sub[sub["config_id"] == cid].iloc[0]
        params, name = json.loads(row["params"]), str(row.get("trial_name") or "")
        out.append(Candidate(cls, str(cid), str(row["trial_id"]), float(value), params, name))
    return out


def reseed_offsets(spec: StudySpec, seeds: int) -> list[int]:
    """Seed offsets for re-seeding: the ones after the study's ``0..seeds_per_config-1``."""
    return list(range(spec.seeds_per_config, spec.seeds_per_config + seeds))


def promotion_key(
    spec: StudySpec, cands: list[Candidate], seeds: int, final: Config, fingerprint: str
) -> str:
    payload = json.dumps(
        {
            "study": spec.name,
            "candidates": [(c.config_id, c.params) for c in cands],
            "seeds": seeds,
            "final": final.to_dict(),
            "data": fingerprint,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def recheck(
    cands: list[Candidate], scores: dict[str, dict[int, float]], *, mode: str = "max"
) -> tuple[Candidate, str]:
    """The re-check's winner (best mean over the re-seeds) and what a person should know.

    Each candidate's mean ± std and 95 % CI over the same seeds; the winner against the
    runner-up as a paired comparison over those seeds (:func:`ssad.study.results.stats.paired`):
    "separable" when the difference is significant at 0.05, else the pick is within the noise.
    """
    summary = {c.config_id: stats.describe(list(scores[c.config_id].values())) for c in cands}
    ranked = sorted(cands, key=lambda c: summary[c.config_id].mean, reverse=mode == "max")
    best = ranked[0]
    parts = [
        f"{c.name or c.config_id} {short_number(s.mean)} ± {short_number(s.std)} "
        f"[{short_number(s.ci_low)}, {short_number(s.ci_high)}]"
        for c in ranked
        for s in [summary[c.config_id]]
    ]
    text = "; ".join(parts)
    if len(ranked) > 1:
        a, b = scores[best.config_id], scores[ranked[1].config_id]
        seeds = sorted(set(a) & set(b))
        pr = stats.paired([a[s] for s in seeds], [b[s] for s in seeds])
        ok = math.isfinite(pr.p) and pr.p < stats.ALPHA
        p = "–" if not math.isfinite(pr.p) else f"{pr.p:.3g}"
        text += (
            f" — winner {'separable' if ok else 'NOT separable'} from the runner-up "
            f"(diff {pr.diff:+.4f} [{pr.diff_ci_low:+.4f}, {pr.diff_ci_high:+.4f}], "
            f"{pr.test} p={p}, {pr.pairs} seeds)"
        )
    return replace(best, value=summary[best.config_id].mean, recheck=text), text
