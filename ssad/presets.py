"""Named sets of dotted config overrides (``--preset NAME``, a study's ``base.preset``).

``load_config`` applies a preset over the defaults, before a config file and ``--set``. The
defaults are the ``cpu`` preset's values (the recommended run); ``seed`` is the seed project's
recipe. docs/detector.md ("Presets") and docs/measurements.md hold the measurements behind each
choice.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

# The seed project's recipe: ResNet-18 at 256 px, image-mode pretext task for 10 + 50 epochs,
# GradCAM window scoring against a cosine kNN bank of projection-head embeddings. It sets every key
# whose default differs from the seed's, so it gives the seed's recipe.
SEED: dict[str, Any] = {
    "data.image_size": 256,
    "model.backbone": "resnet18",
    "model.weights": "imagenet",
    "train.phase1_epochs": 10,
    "train.phase2_epochs": 50,
    "train.phase2_lr": 0.01,
    "train.categories": ["texture", "object"],
    "pretext.mode": "image",
    "pretext.patch_size": 32,
    "train.batch_size": 96,
    "train.min_samples": 500,
    "eval.scoring": "windows",
    "memory.fill": "auto",
    "memory.feature": "embedding",
    "memory.metric": "cosine",
    "memory.bank_size": 500,
    "memory.index": "flat",
    "memory.k": 3,
    "eval.image_score": "topk",
    "eval.position_norm": "none",
    "eval.patch_stride": 8,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The recommended CPU detector, which the defaults also hold. An ImageNet EfficientNet-Lite0
    # at 256 px; the pretext task fine-tunes textures for 1 + 2 short epochs (phase 2 at lr 0.001)
    # and leaves objects with the pretrained weights. Scoring: dense kNN on the stride-8 + stride-16
    # stages, Euclidean, against every training position (an approximate IVF index), each
    # position's score re-centred on its normal training score (image borders are covered thinly
    # by the bank), and the image score is the maximum of the smoothed map.
    "cpu": {
        "data.image_size": 256,
        "model.backbone": "efficientnet_lite0",
        "model.weights": "imagenet",
        "train.phase1_epochs": 1,
        "train.phase2_epochs": 2,
        "train.phase2_lr": 0.001,
        "train.categories": ["texture"],
        "pretext.mode": "patch",
        "pretext.patch_size": 64,
        "train.batch_size": 32,
        "train.min_samples": 1024,
        "eval.scoring": "dense",
        "memory.fill": "final",
        "memory.feature": "embedding",
        "memory.metric": "l2",
        "memory.bank_size": 262144,  # all positions of up to 256 training images at 256 px
        "memory.index": "ivf",
        "memory.k": 1,
        "eval.image_score": "max",
        "eval.position_norm": "shift",
        "eval.patch_stride": 8,
    },
    # ResNet-18 from random weights, trained by the 3-way pretext task in about 3 CPU-minutes a
    # class: 128 px, patch mode with 24 px windows, window scoring against a final bank of
    # backbone descriptors (the seed's recipe otherwise).
    "scratch": {
        **SEED,
        "data.image_size": 128,
        "pretext.mode": "patch",
        "pretext.patch_size": 24,
        "model.weights": "none",
        "train.phase1_epochs": 2,
        "train.phase2_epochs": 15,
        "train.batch_size": 64,
        "train.min_samples": 3072,
        "memory.bank_size": 8000,
        "memory.fill": "final",
        "memory.feature": "backbone",
        "memory.k": 1,
        "eval.scoring": "windows",
        "eval.image_score": "max",
        "eval.position_norm": "auto",
        "eval.patch_stride": 8,
    },
    "seed": SEED,
}
