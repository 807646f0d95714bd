"""A timm backbone with pooled stride-8/16/32 fusion, a projection head and a pretext classifier.

A pure ``nn.Module``: ``embed(x) -> (B, D)``, ``classify(z) -> (B, C)`` and the dense
``local_features(x, strides) -> (B, C, H/8, W/8)``; no training logic here. Inputs are RGB in
[0, 1]; the model normalises them as its backbone's ImageNet weights expect.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssad import backbones

__all__ = [
    "DENSE_STRIDES",
    "FEATURES",
    "OnePositionConv2d",
    "SSADNet",
    "for_inference",
    "load_backbone_weights",
    "upgrade_state_dict",
]

log = logging.getLogger(__name__)

FEATURES = ("embedding", "backbone")  # what a memory bank holds (``memory.feature``)
DENSE_STRIDES = (8, 16)  # the stages of a dense feature by default (PatchCore's layer2 + layer3)
DENSE_GRID = 8  # the stride of the dense feature grid


class OnePositionConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes a convolution with one output position as one matrix product.

    On a 24 px window ResNet-18's layer4 sees a 2×2 map, then 1×1: its 3×3 convolutions have a
    single output position whose window holds the whole (zero-padded) input, so the convolution
    is the linear map by the slice of the kernel that overlaps the input (the other taps only ever
    meet padding). oneDNN computes all nine taps, and its weight gradient on a 1×1 map costs ~9×
    its forward; as ``F.linear`` the same function (equal up to float rounding, gradients of the
    unused taps exactly zero as before) makes a patch-mode training step 1.2–1.3× cheaper and
    ``train.fit`` 1.1× (docs/measurements-scratch.md, "One-position convolutions"). Parameters, state dict and initialisation are ``nn.Conv2d``'s;
    every other shape takes ``nn.Conv2d.forward``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.padding, str) or not self._one_position(x):
            return super().forward(x)
        n, c, h, w = x.shape
        ph, pw = self.padding
        kernel = self.weight[:, :, ph : ph + h, pw : pw + w].reshape(self.out_channels, c * h * w)
        return F.linear(x.reshape(n, c * h * w), kernel, self.bias).view(n, -1, 1, 1)

    def _one_position(self, x: torch.Tensor) -> bool:
        plain = self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
        if x.dim() != 4 or not plain:
            return False
        h, w = x.shape[-2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        covers = h + ph <= kh and w + pw <= kw  # the window at (0, 0) holds every input pixel
        return covers and (h + 2 * ph - kh) // sh == 0 and (w + 2 * pw - kw) // sw == 0


def _one_position_convs(module: nn.Module) -> None:
    """Make every plain ``nn.Conv2d`` below ``module`` a :class:`OnePositionConv2d`, in place (the
    modules and their parameters stay; no initialisation runs again)."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = OnePositionConv2d


class SSADNet(nn.Module):
    """Backbone → [GAP(stride 8), GAP(stride 16), GAP(stride 32)] → fusion FC → head → z.

    The three pooled stages are ResNet-18's layer2/3/4 (the seed's) or the stages at the same
    strides of another timm backbone (``ssad.backbones``).

    Args:
        backbone: ``resnet18``, ``efficientnet_lite0`` or a timm model name.
        num_classes: pretext classes (3: normal / big defect / scar; 4 adds 'line'; 2: no scar).
        fusion_dim: width of the fusion layer over the concatenated pooled features.
        head_dims: widths of the Linear+BatchNorm+ReLU blocks of the projection head.
        embedding_dim: size D of the embedding stored in the memory bank.
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        num_classes: int = 3,
        fusion_dim: int = 512,
        head_dims: tuple[int, ...] = (512, 512),
        embedding_dim: int = 128,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.encoder, self._stage_index, mean, std = backbones.create(backbone)
        _one_position_convs(self.encoder)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        info = list(self.encoder.feature_info)
        self.stage_dims = {s: int(info[i]["num_chs"]) for s, i in self._stage_index.items()}
        pooled = sum(self.stage_dims[s] for s in backbones.STRIDES)
        self.fusion = nn.Sequential(
            nn.Linear(pooled, fusion_dim, bias=False),
            nn.BatchNorm1d(fusion_dim),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        width = fusion_dim
        for d in head_dims:
            blocks += [nn.Linear(width, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
            width = d
        blocks.append(nn.Linear(width, embedding_dim))
        self.head = nn.Sequential(*blocks)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim
        # NHWC convolutions: 1.6x faster dense scoring on the CPU (oneDNN), as fast to train
        self.encoder.to(memory_format=torch.channels_last)

    def backbone(self) -> nn.Module:
        """The ImageNet-initialised part (frozen, BatchNorm statistics included, in phase 1)."""
        return self.encoder

    def features_at(self, x: torch.Tensor, strides: Sequence[int]) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] → the backbone's stage outputs at ``strides`` (B, C_s, H/s, W/s),
        computed no deeper than the deepest stride asked for."""
        unknown = [s for s in strides if s not in self._stage_index]
        if unknown:
            raise ValueError(
                f"{self.backbone_name} has no stage at stride {unknown} (has {sorted(self._stage_index)})"
            )
        x = ((x - self.pixel_mean) / self.pixel_std).contiguous(memory_format=torch.channels_last)
        idx = [self._stage_index[s] for s in strides]
        order = sorted(set(idx))
        out = self.encoder.forward_intermediates(
            x, indices=order, intermediates_only=True, stop_early=True
        )
        by_index = dict(zip(order, out))
        return [by_index[i] for i in idx]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) → the stride-8, 16 and 32 stages (ResNet-18: layer2, layer3, layer4)."""
        f8, f16, f32 = self.features_at(x, backbones.STRIDES)
        return f8, f16, f32

    @staticmethod
    def pooled(*stages: torch.Tensor) -> list[torch.Tensor]:
        """Global average pool of each stage: [(B, C_8), (B, C_16), (B, C_32)]."""
        return [F.adaptive_avg_pool2d(f, 1).flatten(1) for f in stages]

    def embed_features(self, *stages: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(torch.cat(self.pooled(*stages), dim=1)))

    @staticmethod
    def backbone_descriptor(*stages: torch.Tensor) -> torch.Tensor:
        """Pooled stride-8/16/32 features, each stage L2-normalised, concatenated: (B, ΣC).

        The representation before the fusion layer and projection head, which the pretext
        loss shapes most narrowly; normalising each stage gives all three an equal share of
        the cosine similarity (raw deep activations would dominate it).
        """
        return torch.cat([F.normalize(p, dim=1) for p in SSADNet.pooled(*stages)], dim=1)

    def describe(self, x: torch.Tensor, feature: str = "embedding") -> torch.Tensor:
        """The bank vector of ``memory.feature``: (B, 3, H, W) → ``embed(x)`` (B, D) for
        ``embedding``, :meth:`backbone_descriptor` (B, ΣC) for ``backbone``."""
        if feature == "backbone":
            return self.backbone_descriptor(*self.features(x))
        if feature != "embedding":
            raise ValueError(f"memory.feature: one of {FEATURES}, got {feature!r}")
        return self.embed(x)

    def feature_dim(self, feature: str) -> int:
        """Size of a bank vector of ``memory.feature`` (windows and image-mode scoring)."""
        if feature == "backbone":
            return sum(self.stage_dims[s] for s in backbones.STRIDES)
        return self.embedding_dim

    def local_dim(self, strides: Sequence[int] = DENSE_STRIDES) -> int:
        """Size of a dense feature vector of :meth:`local_features`."""
        return sum(self.stage_dims[s] for s in strides)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → embedding z (B, D)."""
        return self.embed_features(*self.features(x))

    def local_features(
        self, x: torch.Tensor, strides: Sequence[int] = DENSE_STRIDES
    ) -> torch.Tensor:
        """Dense local features: (B, 3, H, W) → (B, ΣC, H/8, W/8), one vector per position of the
        stride-8 grid.

        The stages at ``strides`` (``eval.dense_stages``; default stride 8 and 16: ResNet-18's
        layer2 and layer3) are brought to the stride-8 grid — a finer stage averaged over each
        cell, a coarser one bilinearly upsampled — concatenated and averaged over each
        position's 3×3 neighbourhood (PatchCore's locally aware patch features); deeper stages
        are not computed.
        """
        stages = self.features_at(x, strides)
        size = (x.shape[-2] // DENSE_GRID, x.shape[-1] // DENSE_GRID)
        on_grid = []
        for s, f in zip(strides, stages):
            if s < DENSE_GRID:
                f = F.avg_pool2d(f, kernel_size=DENSE_GRID // s)
            elif s > DENSE_GRID:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            on_grid.append(f)
        f = torch.cat(on_grid, dim=1)
        return F.avg_pool2d(f, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Embedding (B, D) → pretext logits (B, C)."""
        return self.classifier(z)


def _fold_pairs(module: nn.Module) -> int:
    """Fold each BatchNorm2d into the convolution registered just before it, in place.

    timm registers a block's convolution and the normalisation that follows it side by side
    (``conv_pw``/``bn1``, ``conv1``/``bn1``, ``downsample.0``/``downsample.1``); a norm with its
    activation (timm's ``BatchNormAct2d``) keeps the activation. Returns the pairs folded.
    """
    folded = 0
    for parent in list(module.modules()):
        kids = list(parent.named_children())
        for (_, conv), (name, bn) in itertools.pairwise(kids):
            if not (
                isinstance(conv, nn.Conv2d)
                and type(bn).__name__ in ("BatchNorm2d", "BatchNormAct2d")
                and conv.out_channels == bn.num_features
                and bn.track_running_stats
            ):
                continue
            with torch.no_grad():
                scale = bn.running_var.add(bn.eps).rsqrt()
                if bn.weight is not None:
                    scale = scale * bn.weight
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                bias = (bias - bn.running_mean) * scale
                if bn.bias is not None:
                    bias = bias + bn.bias
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias)
            tail = [
                m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None
            ]
            setattr(parent, name, nn.Sequential(*tail) if tail else nn.Identity())
            folded += 1
    return folded


@torch.no_grad()
def for_inference(model: SSADNet) -> SSADNet:
    """An eval-mode copy of ``model`` whose backbone BatchNorms are folded into the convolutions
    before them: the same function (checked on a random image; the model itself is returned
    when the check fails), about 2× faster on the CPU, where oneDNN runs each normalisation as
    a separate pass. Weights are copied: later training of ``model`` does not reach the copy."""
    if not isinstance(model, SSADNet) or getattr(model, "folded", False):
        return model  # a stand-in with the same methods (tests), or a copy folded already
    fast = copy.deepcopy(model).eval()
    fast.folded = True  # scoring it again needs no second copy (Detector keeps one)
    if _fold_pairs(fast.encoder) == 0:
        return fast
    x = torch.rand(2, 3, 64, 64, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    want, got = model.features(x), fast.features(x)
    model.train(was_training)
    for a, b in zip(want, got):
        if not torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()) + 1e-5):
            log.warning(
                "%s: folding BatchNorm into convolutions changed its output; scoring unfolded",
                model.backbone_name,
            )
            return model
    return fast


_LEGACY = {"stem.0.": "encoder.conv1.", "stem.1.": "encoder.bn1.", "layer": "encoder.layer"}


def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An :class:`SSADNet` state dict of ssad 0.1 (torchvision ResNet-18 as ``stem.0``,
    ``stem.1``, ``layer1`` … ``layer4``) in today's names (``encoder.conv1`` …); others as they
    are."""
    if not any(k.startswith("stem.") for k in state):
        return state
    out = {}
    for key, value in state.items():
        for old, new in _LEGACY.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def _as_model_state(model: SSADNet, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` in the model's names: an :class:`SSADNet` state dict as it is (ssad 0.1's too:
    :func:`upgrade_state_dict`), a plain backbone one (timm's or torchvision's names) under
    ``encoder.``; keys of no tensor of that shape are dropped."""
    own = model.state_dict()
    out = {}
    for key, value in upgrade_state_dict(state).items():
        for name in (key, f"encoder.{key}"):
            if name in own and own[name].shape == value.shape:
                out[name] = value
                break
    return out


def load_backbone_weights(model: SSADNet, weights: str) -> None:
    """Initialise the backbone: ``none`` (random), ``imagenet`` or a state-dict file.

    ``imagenet`` loads :func:`ssad.backbones.imagenet_state` (EfficientNet-Lite0's ship with ssad;
    the others come from a cache or the network). A file may hold the backbone's state dict in
    timm's or torchvision's names (ResNet-18), EfficientNet-PyTorch's (EfficientNet-Lite0), or a
    full :class:`SSADNet` state dict; it is loaded with ``weights_only=True``. Every backbone
    tensor must be found, or nothing is loaded and the error names the file.
    """
    if weights == "none":
        return
    if weights == "imagenet":
        state = backbones.imagenet_state(model.backbone_name)
    else:
        state = backbones.read_state_file(weights)
    loaded = _as_model_state(model, state)
    wanted = [k for k in model.state_dict() if k.startswith("encoder.")]
    missing = [k for k in wanted if k not in loaded]
    if missing:
        raise backbones.BackboneError(
            f"model.weights={weights}: not a {model.backbone_name} state dict ({len(missing)} of "
            f"{len(wanted)} backbone tensors missing or of another shape, e.g. {missing[0]})"
        )
    model.load_state_dict(loaded, strict=False)
