"""Drift statistics against scipy/numpy computed directly on the raw samples, on fixed-seed data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats
from scipy.spatial import distance

from services.monitor.domain.drift import (
    METHODS,
    ColumnStatus,
    ColumnType,
    DriftOptions,
    build_reference_profile,
    compute_drift_report,
    detect_drift,
)


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def column(reference: pd.DataFrame, current: pd.DataFrame, name: str = "x", **options):
    report = detect_drift(reference, current, DriftOptions(**options))
    return report.columns[name]


def test_small_reference_numerical_uses_exact_ks_p_value():
    reference = rng(1).normal(0, 1, 600)
    current = rng(2).normal(0.2, 1, 500)
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    expected = stats.ks_2samp(reference, current).pvalue
    assert result.method == "ks"
    assert result.threshold == 0.05
    assert result.score == pytest.approx(expected, rel=1e-12)
    assert result.drift is bool(expected <= 0.05)


def test_ks_on_large_samples_uses_the_asymptotic_p_value():
    reference = rng(3).normal(0, 1, 12_000)
    current = rng(4).normal(0.03, 1, 11_000)
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}), method="ks")
    assert result.score == pytest.approx(stats.ks_2samp(reference, current).pvalue, rel=1e-9)


def test_ks_statistic_is_taken_after_ties_like_scipy():
    # Heavy ties across both sides: a CDF read in the middle of a tie group would overstate D.
    reference = rng(5).integers(0, 40, 15_000).astype(float)
    current = rng(6).integers(0, 40, 12_000).astype(float)
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}), method="ks")
    assert result.score == pytest.approx(stats.ks_2samp(reference, current).pvalue, rel=1e-9)


def test_large_reference_numerical_uses_normed_wasserstein():
    reference = rng(7).exponential(2.0, 5_000)
    current = rng(8).exponential(2.3, 4_000)
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    expected = stats.wasserstein_distance(reference, current) / np.std(reference)
    assert result.method == "wasserstein"
    assert result.threshold == 0.1
    assert result.score == pytest.approx(expected, rel=1e-12)
    assert result.drift is bool(expected >= 0.1)


def test_small_reference_categorical_uses_chisquare_with_scaled_expected_counts():
    reference = rng(9).choice(["a", "b", "c"], 800, p=[0.5, 0.3, 0.2])
    current = rng(10).choice(["a", "b", "c"], 300, p=[0.4, 0.35, 0.25])
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    labels = ["a", "b", "c"]
    observed = [np.sum(current == label) for label in labels]
    expected = [np.sum(reference == label) * 300 / 800 for label in labels]
    p_value = stats.chisquare(observed, expected).pvalue
    assert result.method == "chisquare"
    assert result.score == pytest.approx(p_value, rel=1e-12)
    assert result.drift is bool(p_value < 0.05)


def test_large_reference_categorical_uses_jensenshannon_in_natural_log():
    reference = rng(11).choice(["a", "b", "c", "d"], 4_000, p=[0.4, 0.3, 0.2, 0.1])
    current = rng(12).choice(["a", "b", "c", "d"], 3_000, p=[0.25, 0.25, 0.25, 0.25])
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    labels = ["a", "b", "c", "d"]
    expected = distance.jensenshannon(
        [np.mean(reference == label) for label in labels], [np.mean(current == label) for label in labels]
    )
    assert result.method == "jensenshannon"
    assert result.score == pytest.approx(expected, rel=1e-12)
    assert result.drift is True


def test_two_categories_use_the_pooled_two_proportion_z_test():
    reference = rng(13).choice(["no", "yes"], 700, p=[0.7, 0.3])
    current = rng(14).choice(["no", "yes"], 400, p=[0.63, 0.37])
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    # Without continuity correction the 2x2 chi-square test is the two-sided pooled z-test (chi2 = z^2).
    table = [
        [np.sum(reference == "yes"), np.sum(reference == "no")],
        [np.sum(current == "yes"), np.sum(current == "no")],
    ]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert result.method == "z"
    assert result.score == pytest.approx(expected, rel=1e-9)


def test_low_cardinality_numerical_column_is_tested_like_a_categorical_one():
    reference = rng(15).integers(0, 4, 500).astype(float)
    current = rng(16).integers(0, 4, 500).astype(float)
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    assert (result.column_type, result.method) == ("numerical", "chisquare")


def test_psi_on_sturges_bins_of_both_samples_with_epsilon_for_empty_bins():
    reference = rng(17).normal(0, 1, 3_000)
    current = rng(18).normal(1.5, 1, 2_000)
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}), method="psi")
    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    ref_share = np.histogram(reference, edges)[0] / reference.size
    cur_share = np.histogram(current, edges)[0] / current.size
    assert (ref_share == 0).any() or (cur_share == 0).any(), "the data should leave a bin empty"
    for share in (ref_share, cur_share):
        smallest = share[share > 0].min()
        share[share == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
    expected = np.sum((ref_share - cur_share) * np.log(ref_share / cur_share))
    assert result.method == "psi"
    assert result.score == pytest.approx(expected, rel=1e-12)
    assert result.drift is True


def test_kl_divergence_and_hellinger_on_categories():
    reference = rng(19).choice(["a", "b", "c"], 2_000, p=[0.6, 0.3, 0.1])
    current = rng(20).choice(["a", "b", "c"], 2_000, p=[0.5, 0.3, 0.2])
    frames = pd.DataFrame({"x": reference}), pd.DataFrame({"x": current})
    p = np.array([np.mean(reference == label) for label in "abc"])
    q = np.array([np.mean(current == label) for label in "abc"])
    assert column(*frames, method="kl_div").score == pytest.approx(stats.entropy(p, q), rel=1e-12)
    hellinger = np.sqrt(1 - np.sum(np.sqrt(p * q)))
    assert column(*frames, method="hellinger").score == pytest.approx(hellinger, rel=1e-12)


def test_new_category_is_counted_and_makes_chisquare_flag_drift():
    reference = rng(21).choice(["a", "b", "c"], 500)
    current = np.concatenate([rng(22).choice(["a", "b", "c"], 380), np.full(20, "z")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    assert result.method == "chisquare"
    assert result.score == 0.0
    assert result.drift is True
    assert result.new_categories.count == 1
    assert result.new_categories.share == pytest.approx(20 / 400)
    assert result.new_categories.examples == ["z"]


def test_missing_and_infinite_values_are_removed_before_the_test():
    reference = rng(23).normal(0, 1, 700)
    current = rng(24).normal(0.1, 1, 500)
    dirty = current.copy()
    dirty[:50] = np.nan
    dirty[50:60] = np.inf
    dirty[60:65] = -np.inf
    result = column(pd.DataFrame({"x": reference}), pd.DataFrame({"x": dirty}))
    assert result.score == pytest.approx(stats.ks_2samp(reference, current[65:]).pvalue, rel=1e-12)
    assert result.missing_share == pytest.approx(50 / 500)
    assert result.current["missing_count"] == 50
    assert result.current["infinite_count"] == 15
    assert result.current["count"] == 435
    low, median, high = np.quantile(current[65:], [0.25, 0.5, 0.75])
    assert (result.current["p25"], result.current["median"], result.current["p75"]) == pytest.approx(
        (low, median, high), rel=1e-12
    )
    assert result.current["std"] == pytest.approx(np.std(current[65:]), rel=1e-12)


def test_constant_columns_are_tested_without_division_errors():
    reference = pd.DataFrame({"x": np.full(2_000, 3.0), "y": np.full(2_000, 3.0)})
    current = pd.DataFrame({"x": np.full(1_500, 3.0), "y": np.full(1_500, 4.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = detect_drift(reference, current)
        shifted = detect_drift(reference, current, DriftOptions(method="wasserstein")).columns["y"]
    same, moved = report.columns["x"], report.columns["y"]
    assert (same.method, same.score, same.drift) == ("jensenshannon", 0.0, False)
    # Two disjoint point masses: the largest Jensen-Shannon distance, sqrt(ln 2).
    assert moved.score == pytest.approx(np.sqrt(np.log(2)))
    # The reference's standard deviation of 0 is floored at 0.001.
    assert shifted.score == pytest.approx(1.0 / 0.001)


def test_all_missing_columns_are_reported_not_raised():
    reference = pd.DataFrame({"empty": np.full(100, np.nan), "x": rng(25).normal(size=100)})
    current = pd.DataFrame({"empty": np.full(80, np.nan), "x": np.full(80, np.nan)})
    report = detect_drift(reference, current)
    assert report.columns["empty"].status == ColumnStatus.NOT_TESTED
    assert "reference has no usable values" in report.columns["empty"].reason
    assert report.columns["x"].status == ColumnStatus.INSUFFICIENT_DATA
    assert report.columns["x"].missing_share == 1.0
    assert report.status == ColumnStatus.INSUFFICIENT_DATA
    assert (report.dataset_drift, report.number_of_columns) == (False, 0)


def test_an_empty_current_window_gives_insufficient_data():
    reference = pd.DataFrame({"x": rng(26).normal(size=300), "c": rng(27).choice(["a", "b"], 300)})
    report = detect_drift(reference, reference.iloc[:0])
    assert report.status == ColumnStatus.INSUFFICIENT_DATA
    assert {column.status for column in report.columns.values()} == {ColumnStatus.INSUFFICIENT_DATA}
    too_small = compute_drift_report(
        build_reference_profile(reference), reference.iloc[:5], DriftOptions(min_current_values=10)
    )
    assert too_small.status == ColumnStatus.INSUFFICIENT_DATA


def test_column_types_are_inferred_like_evidently_and_can_be_overridden():
    size = 400
    generator = rng(28)
    frame = pd.DataFrame(
        {
            "float": generator.normal(size=size),
            "few_ints": generator.integers(0, 10, size),
            "many_ints": generator.integers(0, 1_000, size),
            "label": generator.choice(["a", "b", "c"], size),
            "text": [f"free text {i}" for i in range(size)],
            "flag": generator.random(size) > 0.5,
            "when": pd.date_range("2026-01-01", periods=size, freq="h"),
        }
    )
    profile = build_reference_profile(frame)
    kinds = {name: column.reference_type for name, column in profile.columns.items()}
    assert kinds == {
        "float": ColumnType.NUMERICAL,
        "few_ints": ColumnType.CATEGORICAL,
        "many_ints": ColumnType.NUMERICAL,
        "label": ColumnType.CATEGORICAL,
        "text": ColumnType.TEXT,
        "flag": ColumnType.CATEGORICAL,
        "when": ColumnType.DATETIME,
    }
    arrow_kinds = {
        name: column.reference_type
        for name, column in build_reference_profile(pa.Table.from_pandas(frame, preserve_index=False)).columns.items()
    }
    assert arrow_kinds == kinds
    overridden = build_reference_profile(frame, column_types={"few_ints": "numerical", "float": "categorical"})
    assert overridden.columns["few_ints"].named_type == ColumnType.NUMERICAL
    assert overridden.columns["float"].named_type == ColumnType.CATEGORICAL
    named = compute_drift_report(overridden, frame).columns
    assert (named["few_ints"].column_type, named["float"].column_type) == ("numerical", "categorical")
    report = compute_drift_report(profile, frame)
    assert {name: column.column_type for name, column in report.columns.items()} == kinds
    assert report.columns["text"].status == ColumnStatus.NOT_TESTED
    assert report.columns["when"].status == ColumnStatus.NOT_TESTED
    assert report.number_of_columns == 5


def test_arrow_and_pandas_inputs_give_the_same_report():
    generator = rng(29)
    reference = pd.DataFrame({"x": generator.normal(size=1_500), "c": generator.choice(list("abcd"), 1_500)})
    current = pd.DataFrame({"x": generator.normal(0.2, size=900), "c": generator.choice(list("abcde"), 900)})
    current.loc[::7, "x"] = np.nan
    from_pandas = detect_drift(reference, current).to_dict()
    from_arrow = detect_drift(pa.Table.from_pandas(reference), pa.Table.from_pandas(current)).to_dict()
    assert from_arrow == from_pandas


def test_per_column_methods_and_thresholds_override_the_defaults():
    generator = rng(30)
    reference = pd.DataFrame({"x": generator.normal(size=500), "y": generator.normal(size=500)})
    current = pd.DataFrame({"x": generator.normal(0.05, size=500), "y": generator.normal(size=500)})
    options = DriftOptions(per_column_method={"x": "wasserstein", "y": "chisquare"}, per_column_threshold={"x": 0.01})
    report = compute_drift_report(build_reference_profile(reference), current, options)
    assert (report.columns["x"].method, report.columns["x"].threshold) == ("wasserstein", 0.01)
    # chi-square is a categorical test in Evidently: on a numerical column it is reported, not run.
    assert report.columns["y"].status == ColumnStatus.NOT_TESTED
    assert "does not apply" in report.columns["y"].reason
    with pytest.raises(ValueError, match="unknown drift method"):
        DriftOptions(method="t-test")


def test_a_score_equal_to_the_threshold_follows_evidentlys_rule_per_method():
    assert METHODS["ks"].is_drift(0.05, 0.05) is True
    assert METHODS["chisquare"].is_drift(0.05, 0.05) is False
    assert METHODS["z"].is_drift(0.05, 0.05) is False
    assert METHODS["wasserstein"].is_drift(0.1, 0.1) is True
    assert METHODS["psi"].is_drift(0.09, 0.1) is False


def nasty_samples() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs of samples where a shortcut in the Wasserstein distance would show: ties within and across the
    sides, rounded values, heavy tails, huge magnitudes, spikes of one value, shifts near the 0.1
    threshold, sizes that do not fill a stretch, and missing and infinite values."""
    generator = rng(40)
    normal = generator.normal(0, 1, 50_000)
    with_gaps = generator.normal(0, 1, 30_001)
    with_gaps[::5] = np.nan
    with_gaps[3::17] = np.inf
    with_gaps[7::19] = -np.inf
    return {
        "one distribution": (generator.normal(0, 1, 40_000), generator.normal(0, 1, 39_999)),
        "same size": (generator.normal(0, 1, 40_000), generator.normal(0, 1, 40_000)),
        "identical": (normal, normal.copy()),
        "subset": (normal, normal[:12_345].copy()),
        "shift near the threshold": (normal, generator.normal(0.1, 1, 45_001)),
        "shift by 1e-12": (normal, normal + 1e-12),
        "rounded": (np.round(generator.normal(50, 10, 30_000)), np.round(generator.normal(51, 10, 20_011))),
        "rounded to 3 places": (np.round(normal, 3), np.round(generator.normal(0.02, 1, 41_000), 3)),
        "seven levels": (generator.choice(np.arange(7.0), 9_000), generator.choice(np.arange(7.0), 9_001)),
        "cauchy": (generator.standard_cauchy(30_000), generator.standard_cauchy(30_017)),
        "huge": (generator.standard_cauchy(20_000) * 1e100, generator.standard_cauchy(20_003) * 1e100),
        "spike of zeros": (
            np.concatenate([np.zeros(20_000), generator.normal(0, 1, 20_000)]),
            np.concatenate([np.zeros(5_000), generator.normal(0, 1, 25_000)]),
        ),
        "signed zeros": (
            np.concatenate([np.full(3_000, -0.0), normal[:5_000]]),
            np.concatenate([np.zeros(2_000), normal[5_000:9_000]]),
        ),
        "big integers": (
            generator.integers(-(2**40), 2**40, 20_000).astype(float),
            generator.integers(-(2**40), 2**40, 20_001).astype(float),
        ),
        "missing and infinite": (with_gaps, generator.normal(0.05, 1, 20_000)),
        "few against many": (generator.normal(0, 1, 3), generator.normal(0, 1, 100_000)),
        "many against one": (generator.normal(0, 1, 100_000), np.array([0.25])),
        "less than a stretch": (generator.normal(0, 1, 255), generator.normal(0.1, 1, 1_000)),
        "one side constant": (normal, np.full(10_000, 0.5)),
        "both constant": (np.full(1_000, 2.0), np.full(1_001, 2.0)),
    }


@pytest.mark.parametrize("case", list(nasty_samples()))
def test_wasserstein_by_stretches_and_by_distinct_values_equals_the_sum_over_every_piece(case):
    """The stretches summed as blocks (and, with ties, the distance over distinct values) give the sum
    over every piece of the quantile functions to 1e-9, and scipy's distance, which Evidently calls."""
    from services.monitor.domain.drift import stats as drift_stats
    from services.monitor.domain.drift.columns import distribution_from_numbers

    reference, current = nasty_samples()[case]
    ref_side, cur_side = distribution_from_numbers(reference), distribution_from_numbers(current)
    sorted_ref, sorted_cur = ref_side.sorted_values(), cur_side.sorted_values()
    n, m = len(sorted_ref), len(sorted_cur)
    every_piece = (
        drift_stats._quantile_pieces(sorted_ref, sorted_cur, n, m, np.arange(1, n + 1), owns_ties=False)
        + drift_stats._quantile_pieces(sorted_cur, sorted_ref, m, n, np.arange(1, m + 1), owns_ties=True)
    ) / (n * m)
    by_stretches = drift_stats.wasserstein_distance(sorted_ref, sorted_cur)
    chosen = drift_stats.wasserstein_of(ref_side, cur_side)
    finite_ref, finite_cur = reference[np.isfinite(reference)], current[np.isfinite(current)]
    expected = stats.wasserstein_distance(finite_ref, finite_cur)
    for distance_value in (by_stretches, chosen):
        assert distance_value == pytest.approx(every_piece, rel=1e-9, abs=1e-300)
        assert distance_value == pytest.approx(expected, rel=1e-9, abs=1e-300)
    report = detect_drift(
        pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}), DriftOptions(method="wasserstein")
    )
    assert report.columns["x"].score == pytest.approx(expected / max(np.std(finite_ref), 0.001), rel=1e-9, abs=1e-300)


def test_standard_deviation_in_blocks_is_numpys():
    from services.monitor.domain.drift.columns import MOMENT_BLOCK, distribution_from_numbers

    for size in (1, 7, MOMENT_BLOCK, MOMENT_BLOCK * 3 + 5):
        values = rng(size).lognormal(3, 1, size)
        side = distribution_from_numbers(values)
        assert side.std == pytest.approx(np.std(values), rel=1e-12, abs=1e-300)
        assert side.mean == pytest.approx(np.mean(values), rel=1e-12)


def test_values_read_are_sorted_in_place_only_when_they_are_a_copy():
    from services.monitor.domain.drift.columns import column_values

    values = rng(41).normal(0, 1, 10_000)
    kept = values.copy()
    frame = pd.DataFrame({"x": values})
    column_values(frame, "x")
    assert np.array_equal(frame["x"].to_numpy(), kept)
    # One Arrow chunk is viewed in place (read-only), several are joined into a copy: the same result.
    table = pa.table({"x": values})
    whole = column_values(table, "x")
    chunked = column_values(pa.Table.from_batches(table.to_batches(max_chunksize=999)), "x")
    assert whole is not None and chunked is not None
    assert np.array_equal(table.column("x").to_numpy(), kept)
    assert np.array_equal(whole.values, chunked.values) and np.array_equal(whole.counts, chunked.counts)
    assert np.array_equal(whole.values, np.sort(kept))
