"""Ablation statistics: hand-computed values, a simulated null, a clearly worse variant."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ssad.study.promote import Candidate, recheck
from ssad.study.results import stats
from ssad.study.results.ablation import ALL, ablation_table, format_table


def test_describe_matches_hand_computed_t_interval() -> None:
    s = stats.describe([0.8, 0.9, 1.0, math.nan])  # NaN (a failed trial) is dropped
    # mean 0.9, sd 0.1, t(0.975, df=2) = 4.302653: half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert s.n == 3
    assert s.mean == pytest.approx(0.9)
    assert s.std == pytest.approx(0.1)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.9 - 0.248414, 0.9 + 0.248414), abs=1e-6)
    one = stats.describe([0.7])
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high) == (1, 0.7, 0.0, 0.7, 0.7)


def test_paired_t_matches_hand_computed_values() -> None:
    # d = [0.1, 0.05, 0.05, 0]: mean 0.05, sd 0.0408248, se 0.0204124, t = 2.449490 on 3 df
    # two-sided p = 0.091721; t(0.975, 3) = 3.182446 → CI 0.05 ± 0.064961
    pr = stats.paired([0.9, 0.85, 0.95, 0.8], [0.8, 0.8, 0.9, 0.8])
    assert pr.test == "paired t" and pr.pairs == 4
    assert pr.diff == pytest.approx(0.05)
    assert pr.p == pytest.approx(0.091721, abs=1e-6)
    assert (pr.diff_ci_low, pr.diff_ci_high) == pytest.approx(
        (0.05 - 0.064961, 0.05 + 0.064961), abs=1e-6
    )


def test_wilcoxon_from_ten_pairs_exact_p() -> None:
    # 10 positive, distinct differences: the exact two-sided p is 2 / 2^10 = 0.001953125
    base = [0.5] * 10
    pr = stats.paired([0.5 + i / 100 for i in range(1, 11)], base)
    assert pr.test == "wilcoxon"
    assert pr.p == pytest.approx(2 / 1024)


def test_paired_edge_cases() -> None:
    assert stats.paired([0.8, 0.9], [0.8, 0.9]).p == 1.0  # identical: never significant
    assert stats.paired([0.9, 1.0], [0.8, 0.9]).p == 0.0  # every pair moved by +0.1 (± rounding)
    assert math.isnan(stats.paired([0.9], [0.8]).p)  # one pair: no test
    assert stats.paired([0.9, math.nan, 0.7], [0.8, 0.8, 0.6]).pairs == 2
    with pytest.raises(ValueError, match="2 variant values vs 3"):
        stats.paired([0.1, 0.2], [0.1, 0.2, 0.3])


def test_holm_step_down() -> None:
    # sorted 0.01, 0.03, 0.04 → 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = stats.holm([0.2, math.nan, 0.6])  # NaN does not count in the family
    assert out[0] == pytest.approx(0.4) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_verdicts() -> None:
    assert stats.verdict(0.1, 0.01) == "better"
    assert stats.verdict(-0.1, 0.01) == "worse"
    assert stats.verdict(-0.1, 0.01, mode="min") == "better"
    assert stats.verdict(0.1, 0.2) == "no detectable difference"
    assert stats.verdict(0.1, math.nan) == "no detectable difference"


def _values(rng: np.random.Generator, shifts: dict[str, float], classes: int, seeds: int):
    """Per (class, seed) a shared level (class difficulty + seed luck) plus per-run noise."""
    rows = []
    for c in range(classes):
        level = 0.8 + 0.05 * c
        for s in range(seeds):
            luck = rng.normal(0, 0.03)
            for name, shift in shifts.items():
                rows.append(
                    {
                        "variant": name,
                        "class": f"c{c}",
                        "seed": s,
                        "m": level + luck + shift + rng.normal(0, 0.02),
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("classes", "seeds"), [(2, 3), (3, 4)])  # paired t (6), wilcoxon (12)
def test_false_positive_rate_on_a_simulated_null(classes: int, seeds: int) -> None:
    """A variant drawn from the baseline's own distribution is called different at most alpha of
    the time (3000 simulated ablations; 3 binomial standard errors of slack). The simulation
    calls the statistics directly; the first 20 go through the whole table too, which must agree."""
    rng = np.random.default_rng(0)
    sims, hits = 3000, 0
    for i in range(sims):
        if i < 20:
            values = _values(rng, {"base": 0.0, "same": 0.0}, classes, seeds)
            base, same = (values[values["variant"] == v]["m"].to_numpy() for v in ("base", "same"))
        else:  # the same model as _values, in numpy (fast)
            shared = 0.8 + 0.05 * np.repeat(np.arange(classes), seeds)
            shared = shared + rng.normal(0, 0.03, classes * seeds)
            base, same = (shared + rng.normal(0, 0.02, classes * seeds) for _ in range(2))
        pr = stats.paired(same.tolist(), base.tolist())
        verdict = stats.verdict(pr.diff, stats.holm([pr.p])[0])
        hits += verdict != "no detectable difference"
        if i < 20:
            table = ablation_table(values, baseline="base", metrics=["m"])
            row = table[(table["scope"] == ALL) & (table["variant"] == "same")].iloc[0]
            assert (row["verdict"], row["p"]) == pytest.approx((verdict, pr.p))
    rate, alpha = hits / sims, stats.ALPHA
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / sims), rate
    assert rate > 0.01  # the test is not vacuous: it does reject under the null sometimes


def test_identical_variant_never_significant_over_many_seeds() -> None:
    """Bit-identical runs (a variant that changes nothing, seeded) give exactly zero differences."""
    rng = np.random.default_rng(1)
    values = _values(rng, {"base": 0.0}, classes=2, seeds=40)
    twin = values.assign(variant="twin")
    table = ablation_table(pd.concat([values, twin]), baseline="base", metrics=["m"])
    for _, row in table[table["variant"] == "twin"].iterrows():
        assert row["diff"] == 0 and row["p"] == 1.0
        assert row["verdict"] == "no detectable difference"


def test_clearly_worse_and_better_variants_are_called() -> None:
    rng = np.random.default_rng(2)
    shifts = {"base": 0.0, "untrained": -0.25, "better": 0.08, "same": 0.0}
    values = _values(rng, shifts, classes=2, seeds=3)
    table = ablation_table(values, baseline="base", metrics=["m"])
    pooled = table[table["scope"] == ALL].set_index("variant")
    assert pooled.loc["untrained", "verdict"] == "worse"
    assert pooled.loc["better", "verdict"] == "better"
    assert pooled.loc["same", "verdict"] == "no detectable difference"
    assert pooled.loc["base", "verdict"] == "baseline"
    assert pooled.loc["untrained", "diff_ci_high"] < 0 < pooled.loc["better", "diff_ci_low"]
    # Holm: each adjusted p is at least its raw p
    assert (pooled["p_holm"].dropna() >= pooled["p"].dropna()).all()


def test_table_pairs_by_class_and_seed_and_drops_failed_runs() -> None:
    rows = [  # deliberately shuffled; b's (c1, seed 1) failed (NaN)
        ("b", "c1", 0, 0.70),
        ("a", "c0", 1, 0.82),
        ("b", "c0", 0, 0.88),
        ("a", "c1", 1, 0.60),
        ("a", "c0", 0, 0.80),
        ("b", "c1", 1, math.nan),
        ("a", "c1", 0, 0.65),
        ("b", "c0", 1, 0.85),
    ]
    values = pd.DataFrame(rows, columns=["variant", "class", "seed", "m"])
    table = ablation_table(values, baseline="a", metrics=["m"], classes=["c0", "c1"])
    assert list(table["scope"].unique()) == ["c0", "c1", ALL]
    pooled = table[(table["scope"] == ALL)].set_index("variant")
    assert pooled.loc["a", "n"] == 4 and pooled.loc["b", "n"] == 3
    # pairs: c0/s0 +0.08, c0/s1 +0.03, c1/s0 +0.05 → mean 0.05333
    assert pooled.loc["b", "pairs"] == 3
    assert pooled.loc["b", "diff"] == pytest.approx((0.08 + 0.03 + 0.05) / 3)
    c0 = table[(table["scope"] == "c0")].set_index("variant")
    assert c0.loc["b", "diff"] == pytest.approx(0.055) and c0.loc["b", "pairs"] == 2
    text = format_table(table)
    assert "| all | b | 3 |" in text and "paired t" in text
    with pytest.raises(ValueError, match="baseline 'z'"):
        ablation_table(values, baseline="z", metrics=["m"])


def test_promotion_recheck_reports_ci_and_separability() -> None:
    a = Candidate("brick", "c1", "t1", 0.9, {}, name="brick-0001")
    b = Candidate("brick", "c2", "t2", 0.8, {}, name="brick-0002")
    far = {"c1": {1: 0.95, 2: 0.96, 3: 0.94}, "c2": {1: 0.80, 2: 0.82, 3: 0.79}}
    best, text = recheck([a, b], far)
    assert best.config_id == "c1" and best.value == pytest.approx(0.95)
    assert "winner separable" in text and "brick-0001 0.95 ± 0.01" in text
    close = {"c1": {1: 0.90, 2: 0.80, 3: 0.86}, "c2": {1: 0.85, 2: 0.84, 3: 0.84}}
    best, text = recheck([a, b], close)
    assert best.config_id == "c1" and "NOT separable" in text
    assert best.recheck == text
