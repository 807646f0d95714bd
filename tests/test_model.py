"""SSADNet shapes, the backbone/head split, and backbone weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from ssad.model import OnePositionConv2d, SSADNet, load_backbone_weights


def _net(**kw) -> SSADNet:
    torch.manual_seed(0)
    kw.setdefault("fusion_dim", 32)
    kw.setdefault("head_dims", (24, 16))
    kw.setdefault("embedding_dim", 8)
    return SSADNet(**kw)


@pytest.mark.parametrize("classes", [3, 4])
def test_embed_and_classify_shapes(classes: int) -> None:
    net = _net(num_classes=classes).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        z = net.embed(x)
        logits = net.classify(z)
        l2, l3, l4 = net.features(torch.randn(1, 3, 64, 64))
    assert z.shape == (2, 8)
    assert logits.shape == (2, classes)
    assert l2.shape == (1, 128, 8, 8) and l3.shape == (1, 256, 4, 4) and l4.shape == (1, 512, 2, 2)


def test_backbone_descriptor_gives_each_stage_an_equal_unit_share() -> None:
    net = _net().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        d = net.describe(x, "backbone")
        l2, l3, l4 = net.features(x)
        assert torch.equal(net.describe(x, "embedding"), net.embed(x))
    assert d.shape == (3, 896) and SSADNet.feature_dim("backbone", 8) == 896
    assert SSADNet.feature_dim("embedding", 8) == 8
    for part, stage in zip(d.split([128, 256, 512], dim=1), (l2, l3, l4)):
        torch.testing.assert_close(part.norm(dim=1), torch.ones(3))
        pooled = stage.mean(dim=(2, 3))  # the stage's pooled features, only rescaled
        torch.testing.assert_close(part * pooled.norm(dim=1, keepdim=True), pooled)
    with pytest.raises(ValueError, match=r"memory\.feature"):
        net.describe(x, "pixels")


def test_head_widths() -> None:
    net = _net(fusion_dim=20, head_dims=(12,), embedding_dim=6)
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 12), (12, 6)]
    assert net.fusion[0].in_features == 128 + 256 + 512


def test_backbone_is_stem_and_layers_not_head() -> None:
    net = _net()
    backbone = {id(p) for p in net.backbone().parameters()}
    expected = set()
    for part in (net.stem, net.layer1, net.layer2, net.layer3, net.layer4):
        expected |= {id(p) for p in part.parameters()}
    assert backbone == expected
    for part in (net.fusion, net.head, net.classifier):
        assert not backbone & {id(p) for p in part.parameters()}
    # everything is either backbone or head
    assert len(backbone) + sum(
        len(list(m.parameters())) for m in (net.fusion, net.head, net.classifier)
    ) == len(list(net.parameters()))
    # BatchNorm running stats of the stem belong to the backbone's buffers
    assert any(b is net.stem[1].running_mean for b in net.backbone().buffers())


def test_weights_none_leaves_initialisation() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    load_backbone_weights(net, "none")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_torchvision_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(123)
    ref = resnet18(weights=None)
    with torch.no_grad():
        ref.bn1.running_mean.uniform_(-1, 1)
    path = tmp_path / "resnet18.pt"
    torch.save(ref.state_dict(), path)
    net = _net()
    head_before = {k: v.clone() for k, v in net.head.state_dict().items()}
    assert not torch.equal(net.stem[0].weight, ref.conv1.weight)
    load_backbone_weights(net, str(path))
    assert torch.equal(net.stem[0].weight, ref.conv1.weight)
    assert torch.equal(net.stem[1].running_mean, ref.bn1.running_mean)
    assert torch.equal(net.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    assert torch.equal(net.layer4[0].downsample[0].weight, ref.layer4[0].downsample[0].weight)
    for k, v in net.head.state_dict().items():
        assert torch.equal(v, head_before[k]), k  # the head is not touched (ref.fc is ignored)


def test_wrapped_state_dict_file(tmp_path: Path) -> None:
    ref = resnet18(weights=None)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": ref.state_dict()}, path)
    net = _net()
    load_backbone_weights(net, str(path))
    assert torch.equal(net.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)


def test_full_ssadnet_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(7)
    trained = SSADNet(fusion_dim=32, head_dims=(24, 16), embedding_dim=8)
    path = tmp_path / "ssad.pt"
    torch.save(trained.state_dict(), path)
    net = _net()
    assert not torch.equal(net.layer2[0].conv1.weight, trained.layer2[0].conv1.weight)
    load_backbone_weights(net, str(path))
    for k, v in trained.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


@pytest.mark.parametrize("content", ["garbage", "not_resnet"])
def test_bad_file_raises_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / f"{content}.pt"
    if content == "garbage":
        path.write_bytes(b"this is not a torch file")
    else:
        torch.save({"linear.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(RuntimeError) as err:
        load_backbone_weights(_net(), str(path))
    assert str(path) in str(err.value)


def _imagenet_cached() -> bool:
    from torchvision.models import ResNet18_Weights

    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


@pytest.mark.skipif(_imagenet_cached(), reason="torchvision's ImageNet weights are cached here")
def test_imagenet_without_network_is_a_helpful_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make sure no download can succeed, even on a machine with network access.
    import torch.hub

    def offline(*_args, **_kwargs):
        raise ConnectionError("network disabled for this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as err:
        load_backbone_weights(_net(), "imagenet")
    msg = str(err.value)
    assert "model.weights=imagenet" in msg
    assert "model.weights=none" in msg


@pytest.mark.parametrize(
    ("channels", "size", "stride", "padding", "fast"),
    [
        ((16, 24), 1, 1, 1, True),  # layer4 on a 24 px window: 1×1 in, 1×1 out
        ((16, 24), 2, 2, 1, True),  # layer4's first conv: 2×2 in, one window over all of it
        ((16, 24), 2, 1, 1, False),  # 2×2 out: four positions, the plain convolution
        ((16, 24), 3, 2, 1, False),  # 3×3 in, stride 2: 2×2 out
        ((16, 24), 1, 1, 0, False),  # 1×1 in, no padding: no output position at all
    ],
)
def test_one_position_conv_is_the_convolution(channels, size, stride, padding, fast) -> None:
    """Output and both gradients equal ``F.conv2d``'s (float64), on and off the fast path."""
    torch.manual_seed(0)
    cin, cout = channels
    conv = OnePositionConv2d(cin, cout, 3, stride=stride, padding=padding, bias=True).double()
    x = torch.randn(5, cin, size, size, dtype=torch.float64, requires_grad=True)
    assert conv._one_position(x) is fast
    if not fast and size == 1 and padding == 0:
        with pytest.raises(RuntimeError):
            conv(x)
        return
    out = conv(x)
    ref = F.conv2d(x, conv.weight, conv.bias, stride, padding)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), g)
    want = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_every_backbone_conv_takes_the_one_position_path_where_it_applies() -> None:
    """All backbone convolutions are OnePositionConv2d (state dict keys as torchvision's), and on
    a 24 px window exactly layer4's 3×3 convolutions (4 of the backbone's 20) use the fast path."""
    net = _net().eval()
    convs = [m for m in net.backbone().modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is OnePositionConv2d for m in convs)
    ref = resnet18()
    for name in ("layer1", "layer2", "layer3", "layer4"):
        assert getattr(net, name).state_dict().keys() == getattr(ref, name).state_dict().keys()
    taken = []
    for m in convs:
        m.register_forward_hook(lambda mod, inp, out: taken.append(mod._one_position(inp[0])))
    with torch.no_grad():
        net.features(torch.randn(2, 3, 24, 24))
    assert sum(taken) == 4 and len(taken) == 20
