"""Two-phase training on the tiny synthetic set: phases, frozen backbone, banks, resume, seeding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssad.autoresolve import resolve_class_config
from ssad.bank import normal_features, position_stats
from ssad.data.images import read_image, to_tensor
from ssad.detector import Detector, DetectorError
from ssad.evaluate import evaluate, score_images
from ssad.localize import window_embeddings
from ssad.pipeline import load_data, splits, train_class
from ssad.train import EpochReport, TrainedModel, build_model, fit


def _resolved(cfg):
    """The config as a class model trains with it (fit takes it resolved for its class)."""
    return resolve_class_config(cfg, load_data(cfg))


def _backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_phase1_freezes_backbone_weights_and_batchnorm_stats(make_config, tmp_path: Path) -> None:
    # Start from a known full state dict, so "unchanged" has something exact to compare with.
    init_cfg = make_config()
    torch.manual_seed(11)
    init = build_model(init_cfg)
    with torch.no_grad():  # non-default BatchNorm statistics: a reset would show as well
        for m in init.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path / "init.pt"
    torch.save(init.state_dict(), path)
    start = _snapshot(init)

    cfg = _resolved(make_config(**{"model.weights": str(path)}))
    after: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch(report: EpochReport, trained: TrainedModel) -> None:
        after[report.phase] = _snapshot(trained.model)

    fit(cfg, load_data(cfg), on_epoch=on_epoch)
    p1, p2 = after[1], after[2]
    backbone_keys = list(_backbone_state(start))
    assert any("running_mean" in k for k in backbone_keys)
    assert any("num_batches_tracked" in k for k in backbone_keys)
    for k in backbone_keys:  # parameters and BatchNorm buffers, stem and layer1..4
        assert torch.equal(p1[k], start[k]), f"phase 1 changed backbone tensor {k}"
    head_keys = [k for k in start if k.startswith(("fusion.", "head.", "classifier."))]
    for prefix in ("fusion.", "head.", "classifier."):
        changed = [
            k for k in head_keys if k.startswith(prefix) and not torch.equal(p1[k], start[k])
        ]
        assert changed, f"phase 1 did not train {prefix}"
    # phase 2 trains the backbone too (weights and BatchNorm statistics)
    assert not torch.equal(p2["encoder.conv1.weight"], p1["encoder.conv1.weight"])
    assert not torch.equal(
        p2["encoder.layer4.1.bn2.running_var"], p1["encoder.layer4.1.bn2.running_var"]
    )


def test_fifo_bank_is_capped_and_saved_detector_holds_the_trained_bank(
    make_config, tmp_path: Path
) -> None:
    cap = 12
    cfg = make_config(**{"memory.bank_size": cap, "memory.fill": "fifo"})
    final: dict[str, object] = {}
    sizes: list[int] = []

    def on_epoch(report: EpochReport, trained: TrainedModel) -> None:
        sizes.append(len(trained.bank))
        assert report.bank_size == len(trained.bank) <= cap
        assert trained.bank.index.ntotal == len(trained.bank)
        final["bank"] = trained.bank.vectors.copy()
        final["model"] = _snapshot(trained.model)

    out = tmp_path / "run"
    result = train_class(cfg, out_dir=out, on_epoch=on_epoch, evaluate_test=True)
    assert sizes and max(sizes) == cap  # more normal embeddings than fit: FIFO trimmed them
    saved = np.load(out / "bank.npy")
    np.testing.assert_array_equal(saved, final["bank"])  # the bank built in training, as is
    state = torch.load(out / "model.pt", weights_only=True)
    for k, v in final["model"].items():
        assert torch.equal(state[k], v), k
    det = Detector.load(out, device="cpu")
    np.testing.assert_allclose(det.bank.vectors, final["bank"], rtol=0, atol=1e-6)
    assert len(det.bank) == len(final["bank"])
    assert det.threshold == pytest.approx(result["threshold"])
    assert det.info["class_name"] == "brick"
    for name in ("config.yaml", "detector.json", "metrics.json", "val/roc.png", "test/roc.png"):
        assert (out / name).is_file(), name
    assert result["val"] and result["test"]
    assert 0.0 <= result["test"]["image_auroc"] <= 1.0


@pytest.mark.parametrize("subsample", ["coreset", "random"])
def test_final_bank_is_the_saved_models_eval_embeddings_of_the_training_windows(
    make_config, tmp_path: Path, subsample: str
) -> None:
    cap = 30
    cfg = make_config(
        **{"memory.bank_size": cap, "memory.subsample": subsample, "memory.fill": "final"}
    )
    validated: list[np.ndarray] = []

    def validate(model, bank) -> dict[str, float]:
        assert not model.training  # the bank and the scores come from eval mode
        validated.append(bank.vectors.copy())
        return {}

    data, _, _ = splits(cfg, load_data(cfg))
    trained = fit(cfg, data, validate=validate)
    assert len(validated) == 2  # val_every 1: one bank per validation pass, rebuilt each time
    assert not np.array_equal(validated[0], validated[1])
    np.testing.assert_array_equal(trained.bank.vectors, validated[-1])  # validated = returned
    out = tmp_path / "run"
    train_class(cfg, out_dir=out, artifacts=False, evaluate_test=False)
    det = Detector.load(out, device="cpu")
    assert det.info["memory_fill"] == "final"
    # Re-embed every window of every training image with the saved model, in eval mode.
    images = np.stack([read_image(p, cfg.data.image_size) for p in data.train])
    z = window_embeddings(
        det.model, to_tensor(images), patch=cfg.pretext.patch_size, stride=cfg.eval.patch_stride
    )
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    assert len(z) > cap and len(det.bank) == cap  # subsampled to memory.bank_size
    best = (det.bank.vectors @ z.T).max(axis=1)  # each bank vector's closest re-embedded window
    np.testing.assert_allclose(best, 1.0, atol=1e-5)
    # ... and no bank vector is a train-mode embedding of a jittered view: a FIFO bank is not
    fifo = Detector.load(
        _train(make_config(**{"memory.fill": "fifo"}), tmp_path / "f"), device="cpu"
    )
    assert (fifo.bank.vectors @ z.T).max(axis=1).min() < 0.999


def test_backbone_feature_banks_hold_the_pooled_stage_features(make_config, tmp_path: Path) -> None:
    """memory.feature=backbone: a final bank is the saved model's backbone descriptors of the
    training windows; a FIFO bank collects them during training; a bank of the wrong size for
    the saved config is refused, naming the file."""
    cfg = make_config(**{"memory.fill": "final", "memory.feature": "backbone", "memory.k": 1})
    out = _train(cfg, tmp_path / "final")
    det = Detector.load(out, device="cpu")
    assert det.bank.vectors.shape[1] == 896
    data, _, _ = splits(cfg, load_data(cfg))
    images = np.stack([read_image(p, cfg.data.image_size) for p in data.train])
    z = window_embeddings(
        det.model,
        to_tensor(images),
        patch=cfg.pretext.patch_size,
        stride=cfg.eval.patch_stride,
        feature="backbone",
    )
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose((det.bank.vectors @ z.T).max(axis=1), 1.0, atol=1e-5)
    scores, maps = det.predict(images[:2])
    assert scores.shape == (2,) and maps.shape == (2, *images.shape[1:3])
    fifo = Detector.load(
        _train(cfg.with_overrides({"memory.fill": "fifo"}), tmp_path / "fifo"), device="cpu"
    )
    assert fifo.bank.vectors.shape[1] == 896 and len(fifo.bank) > 0
    text = (out / "config.yaml").read_text().replace("feature: backbone", "feature: embedding")
    (out / "config.yaml").write_text(text)
    with pytest.raises(DetectorError, match=r"bank\.npy.*size 896.*memory\.feature=embedding"):
        Detector.load(out, device="cpu")


def _train(cfg, out: Path) -> Path:
    train_class(cfg, out_dir=out, artifacts=False, evaluate_test=False)
    return out


def test_seeded_run_is_bit_identical_on_cpu(make_config, tmp_path: Path) -> None:
    cfg = make_config(**{"eval.scoring": "dense", "memory.bank_size": 50})
    runs = [_train(cfg, tmp_path / name) for name in ("a", "b")]
    a, b = (torch.load(r / "model.pt", weights_only=True) for r in runs)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    np.testing.assert_array_equal(np.load(runs[0] / "bank.npy"), np.load(runs[1] / "bank.npy"))
    dense_bank = Detector.load(runs[0], device="cpu").bank  # a dense bank loads
    assert dense_bank.dim == 128 + 256  # ResNet-18 layer2 + layer3
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in runs)
    assert ma["val"] == mb["val"] and ma["history"][-1]["loss"] == mb["history"][-1]["loss"]
    other = _train(cfg.with_overrides({"train.seed": 1}), tmp_path / "c")
    assert not torch.equal(
        torch.load(other / "model.pt", weights_only=True)["head.0.weight"], a["head.0.weight"]
    )


@pytest.mark.parametrize(("phase1", "phase2", "stop_after"), [(1, 1, 1), (1, 2, 2)])
def test_resume_gives_the_same_weights(
    make_config, tmp_path: Path, phase1: int, phase2: int, stop_after: int
) -> None:
    cfg = _resolved(
        make_config(**{"train.phase1_epochs": phase1, "train.phase2_epochs": phase2})
    )
    data = load_data(cfg)
    path = tmp_path / "state.pt"

    def save_state(report: EpochReport, trained: TrainedModel) -> None:
        if report.epoch == stop_after:  # what a trial does: write the state to disk
            torch.save(trained.checkpoint(), path)

    straight = fit(cfg, data, on_epoch=save_state)
    # one report per epoch, phase 1 epochs first
    assert [r.epoch for r in straight.history] == list(range(1, phase1 + phase2 + 1))
    assert [r.phase for r in straight.history] == [1] * phase1 + [2] * phase2
    for r in straight.history:
        assert np.isfinite(r.loss) and r.loss > 0
        assert 0.0 <= r.accuracy <= 1.0 and r.seconds > 0
        assert r.metrics == {}  # no validator given
    assert not straight.model.training  # returned in eval mode
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == stop_after
    resumed = fit(cfg, data, resume=state)
    assert [r.epoch for r in resumed.history] == list(range(1, phase1 + phase2 + 1))
    assert [r.loss for r in resumed.history[:stop_after]] == [
        r.loss for r in straight.history[:stop_after]
    ]
    for r_straight, r_resumed in zip(straight.history[stop_after:], resumed.history[stop_after:]):
        assert r_resumed.loss == pytest.approx(r_straight.loss, rel=1e-5)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    np.testing.assert_allclose(resumed.bank.vectors, straight.bank.vectors, atol=1e-5)


def test_bf16_training_is_seeded_keeps_fp32_weights_and_banks(make_config) -> None:
    # train.precision=bf16: autocast forward passes, weights and the FIFO bank stay fp32, a seed
    # still fixes the run, and the run differs from fp32's (autocast is really on).
    cfg = make_config(**{"memory.fill": "fifo", "train.phase1_epochs": 1, "train.phase2_epochs": 1})
    data = load_data(cfg)
    bf16 = cfg.with_overrides({"train.precision": "bf16"})
    a, b = fit(bf16, data), fit(bf16, data)
    fp32 = fit(cfg, data)
    for k, v in a.model.state_dict().items():
        assert v.dtype in (torch.float32, torch.int64), k
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.bank.vectors.dtype == np.float32 and len(a.bank) > 0
    np.testing.assert_array_equal(a.bank.vectors, b.bank.vectors)
    assert all(np.isfinite(r.loss) for r in a.history)
    assert a.history[-1].loss != fp32.history[-1].loss
    assert not torch.equal(
        a.model.state_dict()["head.0.weight"], fp32.model.state_dict()["head.0.weight"]
    )


@pytest.mark.parametrize("scoring", ["windows", "dense"])
def test_position_statistics_are_the_saved_models_and_validation_scores_with_them(
    make_config, tmp_path: Path, scoring: str
) -> None:
    """eval.position_norm: the saved statistics are the saved model's training windows (or
    positions) scored against the saved bank without their own image; the detector reproduces
    the validation metrics training reported; without the file it refuses to load."""
    cfg = make_config(
        class_name="gelcap",
        **{
            "memory.fill": "final",
            "memory.bank_size": 60,
            "eval.position_norm": "shift",
            "eval.scoring": scoring,
        },
    )
    out = tmp_path / "run"
    result = train_class(cfg, out_dir=out, artifacts=False, evaluate_test=False)
    det = Detector.load(out, device="cpu")
    data, val, _ = splits(cfg, load_data(cfg))
    images = [read_image(p, cfg.data.image_size) for p in data.train]
    feats = normal_features(det.model, images, cfg, device=torch.device("cpu"))
    per_image = len(feats) // len(images)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    owners = np.array([int(np.argmax(unit @ v)) // per_image for v in det.bank.vectors])
    want = position_stats(det.bank, feats, owners, n_images=len(images), k=cfg.memory.k)
    side = 3 if scoring == "windows" else 8  # 64 px: 32 px windows at 0, 16, 32 / dense stride 8
    assert det.bank.positions.shape == want.shape == (2, side, side)
    np.testing.assert_allclose(det.bank.positions, want, atol=1e-6)
    scores, _ = det.predict(val.images)
    raw = det.config.with_overrides({"eval.position_norm": "none"})
    assert not np.allclose(
        scores,
        score_images(det.model, det.bank, val.images, raw, device=torch.device("cpu")).scores,
    )
    reproduced = evaluate(det.model, det.bank, val, det.config, device=torch.device("cpu"))
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert reproduced[key] == pytest.approx(result["val"][key], abs=1e-4), key
    (out / "bank_positions.npy").unlink()
    with pytest.raises(DetectorError, match=r"bank_positions\.npy: missing.*position_norm=shift"):
        Detector.load(out, device="cpu")


def test_fifo_bank_position_statistics_are_plain_scores_of_the_training_windows(
    make_config, tmp_path: Path
) -> None:
    """A FIFO bank holds train-mode vectors of jittered crops, none of the training windows, so
    its position statistics are the windows' plain kNN scores against the saved bank."""
    cfg = make_config(**{"memory.fill": "fifo", "eval.position_norm": "zscore"})
    det = Detector.load(_train(cfg, tmp_path / "run"), device="cpu")
    data, _, _ = splits(cfg, load_data(cfg))
    images = [read_image(p, cfg.data.image_size) for p in data.train]
    feats = normal_features(det.model, images, cfg, device=torch.device("cpu"))
    scores = det.bank.score(feats, cfg.memory.k).reshape(len(images), 3, 3)
    np.testing.assert_allclose(det.bank.positions[0], scores.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(det.bank.positions[1], scores.std(axis=0), atol=1e-6)


def test_zero_epochs_changes_no_weight_and_saves_a_working_detector(
    make_config, tmp_path: Path
) -> None:
    """The frozen baseline: 0 epochs of training leave every backbone tensor (BatchNorm
    statistics included) byte-identical to the ImageNet weights; the bank is built from those
    features, validated once (epoch 0), and the saved detector loads and scores."""
    from ssad import backbones

    cfg = make_config(
        "gelcap",
        **{
            "model.backbone": "efficientnet_lite0",
            "model.weights": "imagenet",
            "train.phase1_epochs": 0,
            "train.phase2_epochs": 0,
            "eval.scoring": "dense",
            "memory.fill": "final",
            "memory.metric": "l2",
            "memory.bank_size": 300,
            "eval.position_norm": "shift",
        },
    )
    reports: list[EpochReport] = []
    trained = fit(cfg, load_data(cfg), on_epoch=lambda rep, _t: reports.append(rep))
    packaged = backbones.imagenet_state("efficientnet_lite0")
    encoder = trained.model.encoder.state_dict()
    assert any("running_var" in k for k in encoder)
    for key, value in encoder.items():
        assert torch.equal(value, packaged[key]), key
    assert [(r.epoch, r.phase) for r in reports] == [(0, 0)]
    assert np.isnan(reports[0].loss) and reports[0].bank_size == len(trained.bank) == 300
    assert trained.bank.metric == "l2" and trained.bank.positions is not None

    result = train_class(cfg, out_dir=tmp_path / "frozen", artifacts=False)
    assert [h["epoch"] for h in result["history"]] == [0]
    det = Detector.load(tmp_path / "frozen", device="cpu")
    for key, value in det.model.encoder.state_dict().items():
        assert torch.equal(value, packaged[key]), key
    data = load_data(cfg)
    _, val, _ = splits(cfg, data)
    scores, maps = det.predict(list(val.images))
    again = score_images(det.model, det.bank, val.images, det.config, device=torch.device("cpu"))
    np.testing.assert_allclose(scores, again.scores, rtol=1e-6)
    assert maps.shape == (len(val.images), 64, 64) and (scores >= 0).all()


def test_phase2_lr_zero_moves_no_weight_but_re_estimates_batchnorm_statistics(
    make_config, tmp_path: Path
) -> None:
    """``train.phase2_lr: 0``: phase 2's forward passes in train mode update the backbone's
    BatchNorm running statistics; no parameter changes (the BatchNorm-only control of the
    pretrained ablation)."""
    torch.manual_seed(3)
    init = tmp_path / "init.pt"
    torch.save(build_model(make_config()).state_dict(), init)
    cfg = make_config(
        "gelcap",
        **{
            "model.weights": str(init),
            "train.phase1_epochs": 0,
            "train.phase2_epochs": 1,
            "train.phase2_lr": 0.0,
            "memory.fill": "final",
        },
    )
    start = _snapshot(build_model(cfg))
    trained = fit(cfg, load_data(cfg))
    after = _snapshot(trained.model)
    params = {name for name, _ in trained.model.named_parameters()}
    for key, value in start.items():
        if key in params:
            assert torch.equal(after[key], value), key
    stats = [k for k in start if k.startswith("encoder.") and k.endswith("running_mean")]
    assert stats and all(not torch.equal(after[k], start[k]) for k in stats)
