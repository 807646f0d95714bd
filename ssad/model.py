"""ResNet-18 with pooled layer2/3/4 fusion, a projection head and a pretext classifier.

A pure ``nn.Module``: ``embed(x) -> (B, D)`` and ``classify(z) -> (B, C)``; no training logic here.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

__all__ = ["FEATURES", "LOCAL_DIM", "OnePositionConv2d", "SSADNet", "load_backbone_weights"]

_STAGE_WIDTHS = (128, 256, 512)  # ResNet-18 layer2, layer3, layer4 channels
FEATURES = ("embedding", "backbone")  # what a memory bank holds (``memory.feature``)
LOCAL_DIM = sum(_STAGE_WIDTHS[:2])  # SSADNet.local_features: layer2 + layer3 channels


class OnePositionConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes a convolution with one output position as one matrix product.

    On a 24 px window ResNet-18's layer4 sees a 2×2 map, then 1×1: its 3×3 convolutions have a
    single output position whose window holds the whole (zero-padded) input, so the convolution
    is the linear map by the slice of the kernel that overlaps the input (the other taps only ever
    meet padding). oneDNN computes all nine taps, and its weight gradient on a 1×1 map costs ~9×
    its forward; as ``F.linear`` the same function (equal up to float rounding, gradients of the
    unused taps exactly zero as before) makes a patch-mode training step 1.2–1.3× cheaper and
    ``train.fit`` 1.1× (README, "One-position convolutions"). Parameters, state dict and initialisation are ``nn.Conv2d``'s;
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
    """Backbone → [GAP(layer2), GAP(layer3), GAP(layer4)] → fusion FC → projection head → z.

    Args:
        num_classes: pretext classes (3: normal / big defect / scar; 4 adds 'line'; 2: no scar).
        fusion_dim: width of the fusion layer over the concatenated pooled features (896 → F).
        head_dims: widths of the Linear+BatchNorm+ReLU blocks of the projection head.
        embedding_dim: size D of the embedding stored in the memory bank.
    """

    def __init__(
        self,
        *,
        num_classes: int = 3,
        fusion_dim: int = 512,
        head_dims: tuple[int, ...] = (512, 512),
        embedding_dim: int = 128,
    ) -> None:
        super().__init__()
        r = resnet18(weights=None)
        _one_position_convs(r)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = r.layer1, r.layer2, r.layer3, r.layer4
        self.fusion = nn.Sequential(
            nn.Linear(sum(_STAGE_WIDTHS), fusion_dim, bias=False),
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

    def backbone(self) -> nn.ModuleList:
        """The ImageNet-initialised part (frozen, BatchNorm statistics included, in phase 1)."""
        return nn.ModuleList([self.stem, self.layer1, self.layer2, self.layer3, self.layer4])

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) → layer2 (B, 128, H/8, W/8), layer3 (B, 256, H/16, …), layer4 (B, 512, H/32, …)."""
        l2 = self.layer2(self.layer1(self.stem(x)))
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return l2, l3, l4

    @staticmethod
    def pooled(l2: torch.Tensor, l3: torch.Tensor, l4: torch.Tensor) -> list[torch.Tensor]:
        """Global average pool of each stage: [(B, 128), (B, 256), (B, 512)]."""
        return [F.adaptive_avg_pool2d(f, 1).flatten(1) for f in (l2, l3, l4)]

    def embed_features(self, l2: torch.Tensor, l3: torch.Tensor, l4: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(torch.cat(self.pooled(l2, l3, l4), dim=1)))

    @staticmethod
    def backbone_descriptor(l2: torch.Tensor, l3: torch.Tensor, l4: torch.Tensor) -> torch.Tensor:
        """Pooled layer2/3/4 features, each stage L2-normalised, concatenated: (B, 896).

        The representation before the fusion layer and projection head, which the pretext
        loss shapes most narrowly; normalising each stage gives all three an equal share of
        the cosine similarity (raw layer4 activations would dominate it).
        """
        return torch.cat([F.normalize(p, dim=1) for p in SSADNet.pooled(l2, l3, l4)], dim=1)

    def describe(self, x: torch.Tensor, feature: str = "embedding") -> torch.Tensor:
        """The bank vector of ``memory.feature``: (B, 3, H, W) → ``embed(x)`` (B, D) for
        ``embedding``, :meth:`backbone_descriptor` (B, 896) for ``backbone``."""
        if feature == "backbone":
            return self.backbone_descriptor(*self.features(x))
        if feature != "embedding":
            raise ValueError(f"memory.feature: one of {FEATURES}, got {feature!r}")
        return self.embed(x)

    @staticmethod
    def feature_dim(feature: str, embedding_dim: int) -> int:
        """Size of a bank vector of ``memory.feature``."""
        return sum(_STAGE_WIDTHS) if feature == "backbone" else embedding_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → embedding z (B, D)."""
        return self.embed_features(*self.features(x))

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """Dense local features: (B, 3, H, W) → (B, 384, H/8, W/8), one vector per position.

        layer2 (stride 8) and layer3 (stride 16, bilinearly upsampled to layer2's grid) are
        concatenated and averaged over each position's 3×3 neighbourhood (PatchCore's locally
        aware patch features); layer4 is not computed.
        """
        l2 = self.layer2(self.layer1(self.stem(x)))
        l3 = self.layer3(l2)
        l3 = F.interpolate(l3, size=l2.shape[-2:], mode="bilinear", align_corners=False)
        f = torch.cat([l2, l3], dim=1)
        return F.avg_pool2d(f, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Embedding (B, D) → pretext logits (B, C)."""
        return self.classifier(z)


def load_backbone_weights(model: SSADNet, weights: str) -> None:
    """Initialise the backbone: ``none`` (random), ``imagenet`` (torchvision) or a file.

    A file may hold a torchvision ResNet-18 state dict (``conv1.weight``, ``layer1...``) or a full
    :class:`SSADNet` state dict; it is loaded with ``weights_only=True``.
    """
    if weights == "none":
        return
    if weights == "imagenet":
        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:  # no network / no cached file
            raise RuntimeError(
                f"model.weights=imagenet: could not load torchvision's ImageNet ResNet-18 weights "
                f"({exc}); place them in the torch hub cache or use model.weights=none or a file"
            ) from exc
    else:
        path = Path(weights).expanduser()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RuntimeError(f"model.weights={path}: not a loadable state dict ({exc})") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    if any(k.startswith("stem.") for k in state):
        model.load_state_dict(state, strict=False)
        return
    remap = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    own = model.state_dict()
    loaded = {}
    for key, value in state.items():
        for old, new in remap.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        if key in own and own[key].shape == value.shape:
            loaded[key] = value
    backbone_keys = [k for k in own if k.startswith(("stem.", "layer"))]
    missing = [k for k in backbone_keys if k not in loaded]
    if missing:
        raise RuntimeError(
            f"model.weights={weights}: not a ResNet-18 state dict ({len(missing)} backbone "
            f"tensors missing, e.g. {missing[0]})"
        )
    model.load_state_dict(loaded, strict=False)
