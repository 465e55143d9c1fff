"""Student's t quantile (no scipy) and the prompt-clustered 95% interval."""

from __future__ import annotations

import math

import pytest

from dsharp.intervals import cluster_ci95, t_quantile

# Student's t 0.975 quantiles as printed in tables (to 3 decimals) ...
TABLE = {2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042, 53: 2.006}
# ... and to 7 significant digits (R: qt(0.975, df))
PRECISE = {
    1: 12.7062047,
    3: 3.1824463,
    4: 2.7764451,
    19: 2.0930241,
    100: 1.9839715,
    1000: 1.9623391,
}


@pytest.mark.parametrize("df", sorted(TABLE))
def test_t_quantile_matches_the_tables(df: int):
    assert t_quantile(0.975, df) == pytest.approx(TABLE[df], abs=1e-3)


@pytest.mark.parametrize("df", sorted(PRECISE))
def test_t_quantile_is_accurate(df: int):
    assert t_quantile(0.975, df) == pytest.approx(PRECISE[df], abs=1e-6)


def test_t_quantile_tends_to_the_normal_and_takes_other_levels():
    assert t_quantile(0.975, 10**6) == pytest.approx(1.959966, abs=1e-6)
    assert t_quantile(0.995, 3) == pytest.approx(5.8409093, abs=1e-6)
    assert t_quantile(0.95, 2) == pytest.approx(2.9199856, abs=1e-6)
    for bad_p, bad_df, why in (
        (0.975, 0, "degrees of freedom must be a whole number >= 1, not 0"),
        (0.975, 2.5, "degrees of freedom must be a whole number >= 1, not 2.5"),
        (0.4, 3, r"p must be in \(0.5, 1\), not 0.4"),
        (1.0, 3, r"p must be in \(0.5, 1\), not 1.0"),
    ):
        with pytest.raises(ValueError, match=f"^t_quantile: {why}$"):
            t_quantile(bad_p, bad_df)


def test_one_value_per_cluster_is_the_t_interval_of_the_mean():
    values = [0.1, 0.4, 0.35, 0.9]
    mean = sum(values) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    expected = t_quantile(0.975, 3) * std / 2
    assert cluster_ci95(values, ["a", "b", "c", "d"]) == pytest.approx(expected)


def test_clusters_of_equal_size_give_the_interval_of_their_means():
    values = [0.0, 0.2, 1.0, 0.8, 0.5, 0.5]  # prompts a, b, c with two seeds each
    means = [0.1, 0.9, 0.5]
    std = math.sqrt(sum((m - 0.5) ** 2 for m in means) / 2)
    expected = t_quantile(0.975, 2) * std / math.sqrt(3)
    assert cluster_ci95(values, ["a", "a", "b", "b", "c", "c"]) == pytest.approx(expected)


def test_fewer_than_two_clusters_give_no_interval():
    assert math.isnan(cluster_ci95([], []))
    assert math.isnan(cluster_ci95([0.5], ["a"]))
    assert math.isnan(cluster_ci95([0.5, 0.7, 0.1], ["a", "a", "a"]))


def test_t2i_compbench_category_interval_is_over_prompts():
    """T2I-CompBench scores 10 seeds per prompt: its per-category ci95 is over prompts."""
    from dsharp.bench.t2i_compbench import _summarise_category

    rows = [
        {"index": i, "scores": scores, "parts": {"blip": scores, "clip": [None, None]}}
        for i, scores in enumerate([[0.0, 0.2], [1.0, 0.8], [0.4, float("nan")]])
    ]
    for row in rows:
        row["detail"] = [{"parts": ["blip"]}]
    summary = _summarise_category("complex", rows)
    values = [0.0, 0.2, 1.0, 0.8, 0.4]
    expected = cluster_ci95(values, [0, 0, 1, 1, 2])
    assert summary["n"] == 5 and summary["n_prompts"] == 3
    assert summary["ci95"] == pytest.approx(expected)
    assert summary["parts"]["blip"]["ci95"] == pytest.approx(expected)
    assert summary["parts"]["clip"]["n"] == 0 and math.isnan(summary["parts"]["clip"]["ci95"])
