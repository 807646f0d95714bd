from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from ssad.metrics import (
    aupro,
    compute_all,
    f1_max,
    image_auroc,
    pixel_auroc,
    pro_curve,
    roc_points,
)


def _random_pixels(seed: int, shape=(6, 24, 24), levels: int | None = None):
    """Masks with a few rectangles per image, maps loosely correlated; ``levels`` forces ties."""
    rng = np.random.default_rng(seed)
    masks = np.zeros(shape, dtype=bool)
    for i in range(shape[0] - 1):  # the last image stays normal
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, shape[1] - 4, size=2)
            masks[i, y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
    maps = rng.random(shape) + 0.6 * masks * rng.random(shape)
    if levels is not None:
        maps = np.round(maps * levels) / levels
    return masks, maps


def _brute_force_aupro(masks, maps, fpr_limit):
    """Reference: a Python loop over every distinct threshold, each image labelled on its own."""
    regions = []  # (image index, region mask)
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == k) for k in range(1, n + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions])
        points.append((fpr, pro))
    # Polyline area from 0 to the limit, segment by segment.
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


# ---- image level ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.3
    scores = rng.integers(0, 20, size=200) + labels * rng.integers(0, 5, size=200)  # many ties
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_one_class_is_nan():
    assert math.isnan(image_auroc(np.zeros(5), np.arange(5.0)))
    assert math.isnan(image_auroc(np.ones(5), np.arange(5.0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_max_equals_brute_force_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(150) < 0.4
    scores = np.round(rng.random(150) + 0.5 * labels, 2)  # ties
    best, threshold = f1_max(labels, scores)

    brute = {}
    for t in np.unique(scores):
        pred = scores >= t
        tp = (pred & labels).sum()
        brute[t] = 2 * tp / (pred.sum() + labels.sum())
    assert best == pytest.approx(max(brute.values()), abs=1e-12)
    assert brute[threshold] == pytest.approx(best, abs=1e-12)

    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        sk = np.nan_to_num(2 * precision * recall / (precision + recall))
    assert best == pytest.approx(sk.max(), abs=1e-12)


def test_f1_max_no_positive_is_nan():
    best, threshold = f1_max(np.zeros(4, dtype=bool), np.arange(4.0))
    assert math.isnan(best) and math.isnan(threshold)


def test_f1_max_perfect_separation():
    assert f1_max([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 0.8)
    # The best threshold can be the lowest score (everything predicted anomalous).
    assert f1_max([1, 1, 1], [0.3, 0.1, 0.2]) == (1.0, 0.1)


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="shape"):
        image_auroc(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        f1_max([0, 1], [0.5, np.nan])
    with pytest.raises(ValueError, match="empty"):
        f1_max([], [])


# ---- ROC points ----------------------------------------------------------------------------------
def test_roc_points_match_sklearn_and_thin_out():
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < 0.1
    scores = rng.random(20000) + labels
    fpr, tpr = roc_points(labels, scores, max_points=200_000)
    sk_fpr, sk_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)

    thin_fpr, thin_tpr = roc_points(labels, scores, max_points=300)
    assert 2 < thin_fpr.size <= 300
    assert (thin_fpr[0], thin_tpr[0], thin_fpr[-1], thin_tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(thin_fpr) >= 0) and np.all(np.diff(thin_tpr) >= 0)
    thin_area = np.sum(np.diff(thin_fpr) * (thin_tpr[1:] + thin_tpr[:-1]) / 2)
    assert thin_area == pytest.approx(roc_auc_score(labels, scores), abs=5e-3)


def test_roc_points_one_class_is_empty():
    fpr, tpr = roc_points(np.zeros(5), np.arange(5.0))
    assert fpr.size == tpr.size == 0


# ---- pixel level ---------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [None, 7])
def test_pixel_auroc_matches_sklearn(levels):
    masks, maps = _random_pixels(3, levels=levels)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_without_anomalous_pixel_is_nan():
    assert math.isnan(pixel_auroc(np.zeros((2, 4, 4), bool), np.random.rand(2, 4, 4)))


def test_pro_curve_hand_computed():
    # Image 0: one region {0.9, 0.5} (size 2); image 1: one region {0.7} (size 1); 7 normal pixels.
    masks = np.array([[[1, 1, 0, 0, 0]], [[0, 0, 0, 1, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.8, 0.1, 0.2]], [[0.3, 0.0, 0.4, 0.7, 0.6]]])
    fpr, pro = pro_curve(masks, maps)
    # Descending thresholds 0.9 R1, 0.8 N, 0.7 R2, 0.6 N, 0.5 R1, then 0.4 .. 0.0 all normal.
    np.testing.assert_allclose(
        fpr, [0, 0, 1 / 7, 1 / 7, 2 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 1]
    )
    np.testing.assert_allclose(pro, [0, 0.25, 0.25, 0.75, 0.75, 1, 1, 1, 1, 1, 1])

    # Area: 0.25·(1/7) + 0.75·(1/7) + 1·(limit − 2/7), normalised by the limit.
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(6 / 7)
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx((0.3 - 1 / 7) / 0.3)
    # A limit inside the flat PRO = 0.75 stretch: 0.25/7 + 0.75·(0.2 − 1/7).
    assert aupro(masks, maps, fpr_limit=0.2) == pytest.approx(
        (0.25 / 7 + 0.75 * (0.2 - 1 / 7)) / 0.2
    )


def test_pro_curve_interpolates_a_sloped_segment():
    # Tied scores make one threshold add a normal and a region pixel at once: a sloped segment.
    masks = np.array([[[1, 0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.5, 0.5, 0.2, 0.1]]])
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(pro, [0, 1, 1, 1])
    # Up to 0.3 the curve is the line pro = 3·fpr: area 0.3·0.9/2, normalised by 0.3.
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.45)


def test_regions_use_8_connectivity():
    # Pixel (0, 0) touches the blob {(1, 1), (1, 2)} only diagonally: one region of size 3.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0
    fpr, pro = pro_curve(masks, maps)
    assert (fpr[1], pro[1]) == (0.0, pytest.approx(1 / 3))  # 4-connectivity would give 0.5


def test_regions_do_not_connect_across_images():
    # Image 0 holds a 1-pixel region, image 1 a 3-pixel region at the same place.
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 0, 0] = True
    masks[1, 0, :] = True
    maps = np.zeros((2, 3, 3))
    maps[0, 0, 0] = 1.0
    _, pro = pro_curve(masks, maps)
    assert pro[1] == pytest.approx(0.5)  # merged across images it would be 0.25


@pytest.mark.parametrize(("seed", "levels", "limit"), [(0, None, 0.3), (1, 5, 0.3), (2, 9, 0.05)])
def test_aupro_matches_brute_force(seed, levels, limit):
    masks, maps = _random_pixels(seed, shape=(4, 12, 12), levels=levels)
    expected = _brute_force_aupro(masks, maps, limit)
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, abs=1e-9)


def test_aupro_perfect_inverse_and_random():
    masks = np.zeros((10, 40, 40), dtype=bool)
    masks[:, 3::10, 3::10] = True  # 160 regions of 4×4 pixels
    masks = ndimage.binary_dilation(masks, structure=np.ones((1, 4, 4)), origin=(0, -1, -1))
    rng = np.random.default_rng(4)
    perfect = masks + 0.1 * rng.random(masks.shape)  # every anomalous pixel above every normal one
    assert aupro(masks, perfect) == pytest.approx(1.0)
    assert aupro(masks, -perfect) == pytest.approx(0.0)
    random_value = aupro(masks, rng.random(masks.shape))
    assert 0.0 <= random_value < 0.3  # chance level is about fpr_limit / 2 = 0.15
    assert random_value == pytest.approx(0.15, abs=0.03)


@pytest.mark.parametrize("seed", range(5))
def test_aupro_in_unit_interval(seed):
    masks, maps = _random_pixels(seed, levels=3 if seed % 2 else None)
    for limit in (0.01, 0.3, 1.0):
        assert 0.0 <= aupro(masks, maps, fpr_limit=limit) <= 1.0


def test_aupro_nan_and_errors():
    assert math.isnan(aupro(np.zeros((2, 5, 5), bool), np.random.rand(2, 5, 5)))
    assert math.isnan(aupro(np.ones((1, 5, 5), bool), np.random.rand(1, 5, 5)))  # no normal pixel
    masks, maps = _random_pixels(0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            aupro(masks, maps, fpr_limit=bad)
    with pytest.raises(ValueError, match="shape"):
        aupro(masks, maps[:, :-1])


# ---- compute_all ---------------------------------------------------------------------------------
def test_compute_all_agrees_with_the_single_metrics():
    masks, maps = _random_pixels(5, levels=11)
    labels = masks.any(axis=(1, 2))
    scores = maps.max(axis=(1, 2))
    result = compute_all(labels=labels, scores=scores, masks=masks, maps=maps)
    assert set(result) == {
        "image_auroc",
        "image_f1_max",
        "image_threshold",
        "pixel_auroc",
        "pixel_f1_max",
        "aupro",
    }
    assert result["image_auroc"] == image_auroc(labels, scores)
    assert (result["image_f1_max"], result["image_threshold"]) == f1_max(labels, scores)
    assert result["pixel_auroc"] == pytest.approx(pixel_auroc(masks, maps), abs=1e-12)
    assert result["pixel_f1_max"] == pytest.approx(f1_max(masks, maps)[0], abs=1e-12)
    assert result["aupro"] == pytest.approx(aupro(masks, maps), abs=1e-12)
    assert all(isinstance(v, float) for v in result.values())


def test_compute_all_image_only_and_degenerate():
    result = compute_all(labels=np.zeros(3), scores=np.arange(3.0))
    assert set(result) == {"image_auroc", "image_f1_max", "image_threshold"}
    assert all(math.isnan(v) for v in result.values())

    normal = compute_all(
        labels=np.zeros(2), scores=np.zeros(2), masks=np.zeros((2, 3, 3)), maps=np.ones((2, 3, 3))
    )
    assert math.isnan(normal["pixel_auroc"]) and math.isnan(normal["aupro"])
    with pytest.raises(ValueError, match="together"):
        compute_all(labels=np.zeros(2), scores=np.zeros(2), masks=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="labels"):
        compute_all(
            labels=np.zeros(3),
            scores=np.zeros(3),
            masks=np.zeros((2, 3, 3)),
            maps=np.zeros((2, 3, 3)),
        )
