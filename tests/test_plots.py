from __future__ import annotations

import cv2
import numpy as np
import pytest

from ssad.plots import heatmap_overlays, overlay, roc_curve_plot, tsne_plot


def _read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a readable image"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _sample(size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 200, size=(size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    mask[20:36, 24:40] = True
    amap = np.zeros((size, size), dtype=np.float32)
    amap[20:36, 24:40] = 1.0
    return image, amap, mask


# ---- ROC -----------------------------------------------------------------------------------------
def test_roc_curve_plot_writes_png(tmp_path):
    fpr = np.linspace(0, 1, 50)
    out = roc_curve_plot(
        {"image": (fpr, np.sqrt(fpr), 0.667), "pixel": (fpr, fpr**0.2, 0.83)},
        tmp_path / "sub" / "roc.png",
        title="bottle",
    )
    assert out == tmp_path / "sub" / "roc.png"
    picture = _read_rgb(out)
    assert picture.shape[:2] == (500, 500)
    assert picture.std() > 10  # not a blank canvas


def test_roc_curve_plot_accepts_empty_curve_and_checks_shapes(tmp_path):
    out = roc_curve_plot(
        {"one class": (np.zeros(0), np.zeros(0), float("nan"))}, tmp_path / "r.png", title="t"
    )
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="differ"):
        roc_curve_plot({"bad": (np.zeros(3), np.zeros(4), 0.5)}, tmp_path / "b.png", title="t")


# ---- overlay -------------------------------------------------------------------------------------
def test_overlay_keeps_shape_and_marks_hot_region():
    image, amap, _ = _sample()
    blended = overlay(image, amap, vmax=1.0)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert not np.array_equal(blended, image)
    hot = blended[22:34, 26:38].astype(float).mean(axis=(0, 1))
    cold = blended[:10, :10].astype(float).mean(axis=(0, 1))
    # Jet: the hot region turns (dark) red, the cold background (dark) blue.
    assert hot[0] > hot[1] + 40 and hot[0] > hot[2] + 40
    assert cold[2] > cold[0] + 40 and cold[2] > cold[1] + 40


def test_overlay_alpha_zero_is_the_image_and_mask_is_outlined():
    image, amap, mask = _sample()
    np.testing.assert_array_equal(overlay(image, amap, vmax=1.0, alpha=0.0), image)
    outlined = overlay(image, amap, vmax=1.0, alpha=0.0, mask=mask)
    changed = np.any(outlined != image, axis=2)
    assert changed.any()
    assert changed[20, 24:40].all()  # the top edge of the GT square
    assert not changed[:15].any() and not changed[28, 28:36].any()  # away from the border
    np.testing.assert_array_equal(outlined[20, 30], [0, 255, 0])


def test_overlay_resizes_small_map_and_validates():
    image, _, _ = _sample()
    small = np.zeros((8, 8), dtype=np.float32)
    small[:4] = 1.0
    blended = overlay(image, small, vmax=1.0)
    assert blended.shape == image.shape
    assert blended[:20, :, 0].mean() > blended[-20:, :, 0].mean()
    with pytest.raises(ValueError, match="vmax"):
        overlay(image, small, vmax=0.0)
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), small, vmax=1.0)


# ---- heatmap files -------------------------------------------------------------------------------
def test_heatmap_overlays_write_one_png_each_with_shared_scale(tmp_path):
    image, amap, mask = _sample()
    images = [image, image, image]
    maps = [amap, 0.5 * amap, amap]
    masks = [mask, mask, None]
    names = ["crack/000.png", "crack/000.png", "good 001"]
    paths = heatmap_overlays(
        images, maps, masks, tmp_path / "heat", names=names, scores=[0.9, 0.4, 0.1]
    )
    assert [p.name for p in paths] == ["crack_000.png", "crack_000_1.png", "good_001.png"]
    pictures = [_read_rgb(p) for p in paths]
    for picture in pictures:
        assert picture.shape[0] > 64 and 128 < picture.shape[1] < 260
    # The shared scale (vmax = 1 from the first map) draws the half-strength map less red.
    first, second = pictures[0], pictures[1]
    top = first.shape[0] - 64
    right = slice(64 + 4 + 26, 64 + 4 + 38)

    def redness(picture):
        patch = picture[top + 22 : top + 34, right].astype(float)
        return (patch[..., 0] - patch[..., 1]).mean()

    assert redness(first) > 40 and redness(second) < redness(first) - 60
    # Same data with an explicit vmax of 0.5: the half map saturates like the full one did.
    (again,) = heatmap_overlays(
        [image], [0.5 * amap], [mask], tmp_path / "v", names=["x"], vmax=0.5
    )
    np.testing.assert_allclose(
        _read_rgb(again)[top + 22 : top + 34, right].astype(float),
        first[top + 22 : top + 34, right].astype(float),
        atol=2,
    )


def test_heatmap_overlays_validate_lengths(tmp_path):
    image, amap, mask = _sample()
    with pytest.raises(ValueError, match="same length"):
        heatmap_overlays([image], [amap, amap], [mask], tmp_path, names=["a"])
    with pytest.raises(ValueError, match="same length"):
        heatmap_overlays([image], [amap], [mask], tmp_path, names=["a"], scores=[0.1, 0.2])


# ---- t-SNE ---------------------------------------------------------------------------------------
def test_tsne_plot_small_groups(tmp_path):
    rng = np.random.default_rng(0)
    groups = {
        "bank": rng.normal(size=(5, 16)),
        "test good": rng.normal(size=(3, 16)),
        "test defect": rng.normal(loc=3.0, size=(2, 16)),
        "empty": np.zeros((0, 16)),
    }
    out = tsne_plot(groups, tmp_path / "tsne.png")
    picture = _read_rgb(out)
    assert picture.shape[:2] == (500, 600) and picture.std() > 5


def test_tsne_plot_subsamples_deterministically(tmp_path):
    rng = np.random.default_rng(1)
    groups = {"bank": rng.normal(size=(300, 64)), "defect": rng.normal(size=(4, 64))}
    first = tsne_plot(groups, tmp_path / "a.png", max_points=60, seed=3)
    second = tsne_plot(groups, tmp_path / "b.png", max_points=60, seed=3)
    assert first.read_bytes() == second.read_bytes()


def test_tsne_plot_rejects_too_few_points_and_mixed_dims(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        tsne_plot({"a": np.zeros((1, 4)), "b": np.ones((1, 4))}, tmp_path / "t.png")
    with pytest.raises(ValueError, match="dimension"):
        tsne_plot({"a": np.zeros((4, 4)), "b": np.ones((4, 5))}, tmp_path / "t.png")
