"""Scoring strategies: how a class model turns images into bank vectors, scores and maps.

A strategy is a :class:`Scorer`; :data:`SCORERS` registers one per name. The strategy of a config
is :func:`scorer_name`: ``eval.scoring``, except that ``windows`` scores a model trained on whole
images (``pretext.mode: image``) by its image embedding with GradCAM maps (``gradcam``). Adding a
scoring mode is one module here with a ``SCORER`` and one line in :data:`SCORERS`.

The same strategy fills a final bank (:meth:`Scorer.bank_features`, ``ssad.bank``), scores images
(:meth:`Scorer.score`, ``ssad.evaluate.score_images``) and sizes the bank a saved detector must
hold (:meth:`Scorer.bank_dim`, ``ssad.detector``).
"""

from __future__ import annotations

from ssad.config import Config
from ssad.scoring import dense, gradcam, windows
from ssad.scoring.base import ScoredBatch, Scorer

__all__ = ["SCORERS", "ScoredBatch", "Scorer", "get_scorer", "scorer_name"]


SCORERS: dict[str, Scorer] = {
    "windows": windows.SCORER,
    "dense": dense.SCORER,
    "gradcam": gradcam.SCORER,
}


def scorer_name(config: Config) -> str:
    """The registered strategy a config scores with."""
    if config.eval.scoring == "windows" and config.pretext.mode == "image":
        return "gradcam"
    return config.eval.scoring


def get_scorer(config: Config) -> Scorer:
    name = scorer_name(config)
    if name not in SCORERS:
        raise ValueError(f"eval.scoring: {name!r} is not a registered scorer ({sorted(SCORERS)})")
    return SCORERS[name]
