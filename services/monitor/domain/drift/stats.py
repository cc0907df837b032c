"""Drift statistics on `Distribution`s, numerically equal to Evidently 0.7's stattests.

Each function mirrors one module of `evidently/legacy/calculations/stattests/`; comments point at the
places where the arithmetic has to follow Evidently's exactly for scores to agree. Nothing here loops
over rows: both sides are already sorted distinct values with counts, so histograms and CDFs are
`searchsorted` calls and cumulative sums, and the Wasserstein distance is block sums over stretches of
the quantile functions (integer arithmetic on the quantile grid only where they may cross), or over the
distinct values when there are few of them.

scipy is imported only inside the tests that need it (scipy.stats alone costs ~60 MB of resident memory,
and the default tests above 1000 reference rows, Wasserstein and Jensen-Shannon, need none of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.monitor.domain.drift.columns import ColumnType, Distribution

# scipy's ks_2samp(method="auto") computes the exact p-value up to this sample size, asymptotic above.
KS_EXACT_MAX_SIZE = 10_000
# Steps of the quantile functions handled at once by the Wasserstein distance.
QUANTILE_BLOCK = 1 << 16
# Reference values per stretch of the Wasserstein integral (see `wasserstein_distance`).
STRETCH_STEPS = 256
# With at least this many rows per distinct value (both sides), the Wasserstein distance is taken over the
# distinct values instead of the rows.
TIED_ROWS_PER_VALUE = 8


@dataclass(frozen=True)
class Method:
    name: str
    default_threshold: float
    column_types: frozenset[ColumnType]
    # p-value tests flag drift when the score is small, distances when it is large.
    is_p_value: bool
    # Whether a score equal to the threshold is drift: Evidently's K-S and distances say yes,
    # chi-square and z no.
    drift_at_threshold: bool
    score: Callable[[Distribution, Distribution, ColumnType], float]

    def is_drift(self, score: float, threshold: float) -> bool:
        if score == threshold:
            return self.drift_at_threshold
        return score < threshold if self.is_p_value else score > threshold


def ks_p_value(reference: Distribution, current: Distribution, _: ColumnType) -> float:
    from scipy import stats

    if max(reference.size, current.size) <= KS_EXACT_MAX_SIZE:
        # Small samples: scipy's exact p-value, on the samples rebuilt from the counts (cheap at this size).
        return float(stats.ks_2samp(reference.sorted_values(), current.sorted_values()).pvalue)
    merged, ref_cum, cur_cum = _merged_cdf_counts(reference, current)
    # The CDFs are only evaluated at the last copy of a value shared by both sides, as searchsorted does.
    last_of_value = np.append(merged[1:] != merged[:-1], True)
    differences = (ref_cum / reference.size - cur_cum / current.size)[last_of_value]
    statistic = max(float(np.clip(-differences.min(), 0, 1)), float(differences.max()))
    larger, smaller = sorted([float(reference.size), float(current.size)], reverse=True)
    effective_size = larger * smaller / (larger + smaller)
    return float(np.clip(stats.kstwo.sf(statistic, np.round(effective_size)), 0, 1))


def wasserstein_normed(reference: Distribution, current: Distribution, _: ColumnType) -> float:
    return wasserstein_of(reference, current) / max(float(reference.std or 0.0), 0.001)


def wasserstein_of(reference: Distribution, current: Distribution) -> float:
    """W1 of two sides: over the distinct values when there are few of them for the rows (ties), else on
    the sorted samples."""
    if (reference.distinct + current.distinct) * TIED_ROWS_PER_VALUE <= reference.size + current.size:
        return _wasserstein_of_counts(reference, current)
    return wasserstein_distance(reference.sorted_values(), current.sorted_values())


def _wasserstein_of_counts(reference: Distribution, current: Distribution) -> float:
    """scipy's `_cdf_distance`: |F - G| between consecutive values of both sides, times the gap; the
    CDF differences as integers on the scale n*m, so exact."""
    merged, ref_cum, cur_cum = _merged_cdf_counts(reference, current)
    n, m = reference.size, current.size
    differences = np.abs(ref_cum[:-1] * m - cur_cum[:-1] * n)
    return float(np.sum(differences * np.diff(merged))) / (n * m)


def wasserstein_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """W1 of two sorted samples as the integral of |F^-1(t) - G^-1(t)| over t in [0, 1].

    On the integer scale n*m the quantile functions step at i*m and j*n. The integral is cut into
    stretches of `STRETCH_STEPS` reference values. Where the two quantile functions cannot cross within
    a stretch (the largest value of one side in it is at most the smallest of the other: both are
    sorted, so these are the values at the stretch's ends), |F^-1 - G^-1| integrates to the difference
    of the two sides' integrals, which are sums of a block of values (the current side's first and last
    value counted for the part of their step inside the stretch). Only the stretches where they may
    cross are summed piece by piece (`_quantile_pieces`); for two samples of one distribution that is a
    few percent of the values, for shifted ones almost none. scipy merges and sorts both samples; this
    makes two passes of block sums over them.
    """
    if len(reference) < len(current):
        # The distance is symmetric. Stretches over the larger sample hold at most one more step of the
        # other than of their own, which bounds the arrays of steps summed piece by piece.
        reference, current = current, reference
    n, m = len(reference), len(current)
    # Stretch c holds reference values bounds[c] to bounds[c + 1] - 1 and ends at step ends[c + 1].
    bounds = np.append(np.arange(0, n, STRETCH_STEPS, dtype=np.int64), n)
    ends = bounds * m
    # The current steps completed at each stretch end, and how far the next current value reaches into
    # the stretch after it.
    completed = ends // n
    into = ends - completed * n
    first_current = current[np.minimum(completed, m - 1)]
    ref_integrals = m * np.add.reduceat(reference, bounds[:-1])
    cur_integrals = n * _block_sums(current, completed) - into[:-1] * first_current[:-1] + into[1:] * first_current[1:]
    # The current value in force at each stretch's end: the next one only if it has begun.
    last_current = current[np.minimum(completed[1:] - (into[1:] == 0), m - 1)]
    apart = (reference[bounds[1:] - 1] <= first_current[:-1]) | (reference[bounds[:-1]] >= last_current)
    total = float(np.sum(np.abs(ref_integrals[apart] - cur_integrals[apart])))
    crossing = np.flatnonzero(~apart)
    for first in range(0, len(crossing), QUANTILE_BLOCK // STRETCH_STEPS):
        stretches = crossing[first : first + QUANTILE_BLOCK // STRETCH_STEPS]
        # The pieces of these stretches: those ending at their reference steps, and at their current steps.
        ref_steps = _concatenated_ranges(bounds[stretches] + 1, bounds[stretches + 1] + 1)
        cur_steps = _concatenated_ranges(completed[stretches] + 1, completed[stretches + 1] + 1)
        total += _quantile_pieces(reference, current, n, m, ref_steps, owns_ties=False)
        total += _quantile_pieces(current, reference, m, n, cur_steps, owns_ties=True)
    return total / (n * m)


def _block_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The sum of values[bounds[c]:bounds[c + 1]] for each c (0 for an empty block); bounds ascending,
    the last one len(values)."""
    sums = np.zeros(len(bounds) - 1)
    filled = np.flatnonzero(bounds[1:] > bounds[:-1])
    if len(filled):
        # Each sum runs to the next start given, which is the end of its block: the blocks between are empty.
        sums[filled] = np.add.reduceat(values, bounds[filled])
    return sums


def _concatenated_ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) without the loop."""
    lengths = stops - starts
    kept = lengths > 0
    starts, lengths = starts[kept], lengths[kept]
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    increments = np.ones(int(ends[-1]), dtype=np.int64)
    increments[0] = starts[0]
    # At each range's first position, jump from the previous range's last value to its start.
    increments[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    return np.cumsum(increments)


def _quantile_pieces(own: np.ndarray, other: np.ndarray, n: int, m: int, steps: np.ndarray, owns_ties: bool) -> float:
    """Sum over the pieces that end at `own`'s steps k*m, k in `steps` (1-based), of |own - other| times
    the piece length.

    Where both samples step at the same point the piece is counted once, on the side that `owns_ties`.
    """
    total = 0.0
    for first in range(0, len(steps), QUANTILE_BLOCK):
        own_index = steps[first : first + QUANTILE_BLOCK]
        ends = own_index * m
        # The other sample's value on the piece: its number of steps strictly before this step.
        other_index = (ends - 1) // n
        # The piece starts at the previous step of either sample.
        other_previous = (other_index if owns_ties else ends // n) * n
        lengths = ends - np.maximum(ends - m, other_previous)
        gaps = np.abs(own[own_index - 1] - other[other_index])
        total += float(np.sum(gaps * lengths))
    return total


def chisquare_p_value(reference: Distribution, current: Distribution, _: ColumnType) -> float:
    ref_counts, cur_counts = _aligned_counts(reference, current)
    expected = ref_counts * (current.size / reference.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        # scipy.stats.chisquare's arithmetic; a category absent from the reference has expected count 0:
        # statistic inf, p-value 0.
        statistic = float(np.sum((cur_counts - expected) ** 2 / expected))
    return chi2_tail(statistic, len(expected) - 1)


def chi2_tail(statistic: float, degrees: int) -> float:
    """`scipy.stats.chi2.sf`, from the special function it calls."""
    from scipy.special import chdtrc

    return float(chdtrc(degrees, statistic))


def z_p_value(reference: Distribution, current: Distribution, _: ColumnType) -> float:
    if reference.distinct == 1 and current.distinct == 1 and reference.values[0] == current.values[0]:
        return 1.0
    ref_counts, cur_counts = _aligned_counts(reference, current)
    # Evidently codes the smallest category as 0 and every other one as 1.
    ref_size, cur_size = reference.size, current.size
    ref_share = float(ref_size - ref_counts[0]) / ref_size
    cur_share = float(cur_size - cur_counts[0]) / cur_size
    pooled = float(ref_share * ref_size + cur_share * cur_size) / (ref_size + cur_size)
    z = (ref_share - cur_share) / np.sqrt(pooled * (1 - pooled) * (1.0 / ref_size + 1.0 / cur_size))
    from scipy.special import ndtr  # what scipy.stats.norm.cdf evaluates

    return float(2 * (1 - ndtr(np.abs(z))))


def jensenshannon_distance(reference: Distribution, current: Distribution, column_type: ColumnType) -> float:
    ref_share, cur_share = binned_shares(reference, current, column_type, fill_zeroes=False)
    # scipy.spatial.distance.jensenshannon's arithmetic (natural log).
    ref_share = ref_share / np.sum(ref_share)
    cur_share = cur_share / np.sum(cur_share)
    middle = (ref_share + cur_share) / 2.0
    divergence = float(np.sum(relative_entropy(ref_share, middle)) + np.sum(relative_entropy(cur_share, middle)))
    return math.sqrt(divergence / 2.0)


def psi(reference: Distribution, current: Distribution, column_type: ColumnType) -> float:
    ref_share, cur_share = binned_shares(reference, current, column_type, fill_zeroes=True)
    return float(np.sum((ref_share - cur_share) * np.log(ref_share / cur_share)))


def kl_divergence(reference: Distribution, current: Distribution, column_type: ColumnType) -> float:
    ref_share, cur_share = binned_shares(reference, current, column_type, fill_zeroes=True)
    # scipy.stats.entropy(pk, qk): both normalized, then the sum of the relative entropies.
    return float(np.sum(relative_entropy(ref_share / np.sum(ref_share), cur_share / np.sum(cur_share))))


def relative_entropy(shares: np.ndarray, others: np.ndarray) -> np.ndarray:
    """`scipy.special.rel_entr`: x log(x / y), 0 where x is 0, inf where only y is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = shares * np.log(shares / others)
    terms[shares == 0] = 0.0
    terms[(shares > 0) & (others == 0)] = np.inf
    return terms


def hellinger_distance(reference: Distribution, current: Distribution, column_type: ColumnType) -> float:
    if column_type == ColumnType.CATEGORICAL:
        ref_counts, cur_counts = _aligned_counts(reference, current)
        overlap = float(np.sum(np.sqrt((ref_counts / reference.size) * (cur_counts / current.size))))
    else:
        # Evidently bins the *distinct* values of both sides here (not the rows), and uses densities.
        distinct = combined_distinct(reference, current)
        edges = sturges_edges(
            min(reference.values[0], current.values[0]),
            max(reference.values[-1], current.values[-1]),
            distinct,
            integer_dtype=reference.integer_dtype and current.integer_dtype,
        )
        widths = np.diff(edges)
        ref_density = histogram(reference, edges) / widths / reference.size
        cur_density = histogram(current, edges) / widths / current.size
        bin_width = (edges.max() - edges.min()) / (len(edges) - 1)
        overlap = float(np.sum(np.sqrt(ref_density * cur_density))) * bin_width
    return math.sqrt(1 - float(np.clip(overlap, 0, 1)))


def binned_shares(
    reference: Distribution, current: Distribution, column_type: ColumnType, fill_zeroes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's `get_binned_data`: Sturges bins on both sides for numerical columns with more than
    20 distinct reference values, one bucket per value otherwise; empty buckets get a small epsilon."""
    if column_type == ColumnType.NUMERICAL and reference.distinct > 20:
        edges = sturges_edges(
            min(reference.values[0], current.values[0]),
            max(reference.values[-1], current.values[-1]),
            reference.size + current.size,
            integer_dtype=reference.integer_dtype and current.integer_dtype,
        )
        ref_share = histogram(reference, edges) / reference.size
        cur_share = histogram(current, edges) / current.size
    else:
        ref_counts, cur_counts = _aligned_counts(reference, current)
        ref_share = ref_counts / reference.size
        cur_share = cur_counts / current.size
    if fill_zeroes:
        ref_share = _fill_zeroes(ref_share)
        cur_share = _fill_zeroes(cur_share)
    return ref_share, cur_share


def _fill_zeroes(shares: np.ndarray) -> np.ndarray:
    smallest = shares[shares != 0].min()
    return np.where(shares == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001, shares)


def sturges_edges(low: float, high: float, size: int, integer_dtype: bool) -> np.ndarray:
    """`np.histogram_bin_edges(data, bins="sturges")` from the data's min, max and size alone."""
    first, last = float(low), float(high)
    spread = last - first
    if first == last:
        first, last = first - 0.5, last + 0.5
    width = spread / (np.log2(size) + 1.0)
    if width:
        if integer_dtype and width < 1:
            width = 1
        bin_count = int(np.ceil((last - first) / width))
    else:
        bin_count = 1
    return np.linspace(first, last, bin_count + 1)


def histogram(distribution: Distribution, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(data, edges)[0]`: half-open bins, the last one closed."""
    bounds = np.append(
        np.searchsorted(distribution.values, edges[:-1], side="left"),
        np.searchsorted(distribution.values, edges[-1], side="right"),
    )
    return np.diff(distribution.count_before(bounds))


def _merged_cdf_counts(reference: Distribution, current: Distribution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sides' values merged in order, with the cumulative counts of each side at every position.

    A merge by searchsorted instead of sorting the concatenation: the reference is sorted once in its
    profile, the current once when read.
    """
    ref_len, cur_len = reference.distinct, current.distinct
    # Where equal values meet, the current one goes after the reference one.
    cur_positions = np.searchsorted(reference.values, current.values, side="right") + np.arange(cur_len)
    from_current = np.zeros(ref_len + cur_len, dtype=bool)
    from_current[cur_positions] = True
    merged = np.empty(ref_len + cur_len, dtype=np.float64)
    merged[cur_positions] = current.values
    merged[~from_current] = reference.values
    ref_steps = np.zeros(ref_len + cur_len, dtype=np.int64)
    ref_steps[~from_current] = reference.counts
    cur_steps = np.zeros(ref_len + cur_len, dtype=np.int64)
    cur_steps[cur_positions] = current.counts
    return merged, np.cumsum(ref_steps), np.cumsum(cur_steps)


def _comparable(reference: Distribution, current: Distribution) -> tuple[np.ndarray, np.ndarray]:
    # Labels meet numbers only when the two sides were read with different types: compare as text.
    if reference.values.dtype.kind == current.values.dtype.kind:
        return reference.values, current.values
    return _as_labels(reference.values), _as_labels(current.values)


def _as_labels(values: np.ndarray) -> np.ndarray:
    return values if values.dtype.kind == "U" else values.astype(np.str_)


def union_counts(reference: Distribution, current: Distribution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted union of both sides' values, with each side's count of every value (0 if absent)."""
    ref_values, cur_values = _comparable(reference, current)
    keys = np.union1d(ref_values, cur_values)
    ref_counts = np.zeros(len(keys), dtype=np.int64)
    ref_counts[np.searchsorted(keys, ref_values)] = reference.counts
    cur_counts = np.zeros(len(keys), dtype=np.int64)
    cur_counts[np.searchsorted(keys, cur_values)] = current.counts
    return keys, ref_counts, cur_counts


def _aligned_counts(reference: Distribution, current: Distribution) -> tuple[np.ndarray, np.ndarray]:
    _, ref_counts, cur_counts = union_counts(reference, current)
    return ref_counts, cur_counts


def combined_distinct(reference: Distribution, current: Distribution) -> int:
    """Distinct values over both sides (Evidently's `pd.concat([ref, cur]).nunique()`)."""
    ref_values, cur_values = _comparable(reference, current)
    positions = np.searchsorted(ref_values, cur_values)
    inside = positions < len(ref_values)
    shared = int(np.count_nonzero(ref_values[positions[inside]] == cur_values[inside]))
    return reference.distinct + current.distinct - shared


_NUMERICAL = frozenset({ColumnType.NUMERICAL})
_CATEGORICAL = frozenset({ColumnType.CATEGORICAL})
_BOTH = _NUMERICAL | _CATEGORICAL
KS = Method("ks", 0.05, _NUMERICAL, is_p_value=True, drift_at_threshold=True, score=ks_p_value)
WASSERSTEIN = Method(
    "wasserstein", 0.1, _NUMERICAL, is_p_value=False, drift_at_threshold=True, score=wasserstein_normed
)
CHISQUARE = Method("chisquare", 0.05, _CATEGORICAL, is_p_value=True, drift_at_threshold=False, score=chisquare_p_value)
Z = Method("z", 0.05, _CATEGORICAL, is_p_value=True, drift_at_threshold=False, score=z_p_value)
JENSENSHANNON = Method(
    "jensenshannon", 0.1, _BOTH, is_p_value=False, drift_at_threshold=True, score=jensenshannon_distance
)
PSI = Method("psi", 0.1, _BOTH, is_p_value=False, drift_at_threshold=True, score=psi)
HELLINGER = Method("hellinger", 0.1, _BOTH, is_p_value=False, drift_at_threshold=True, score=hellinger_distance)
KL_DIV = Method("kl_div", 0.1, _BOTH, is_p_value=False, drift_at_threshold=True, score=kl_divergence)

METHODS: dict[str, Method] = {
    method.name: method for method in (KS, WASSERSTEIN, CHISQUARE, Z, JENSENSHANNON, PSI, HELLINGER, KL_DIV)
}

# Up to this many reference values the default tests are p-value tests, above it distances.
DEFAULT_SMALL_REFERENCE = 1000


def default_method(column_type: ColumnType, reference: Distribution, current: Distribution) -> Method:
    """Evidently's `_get_default_stattest`.

    A named test must suit the column type, but the automatic choice gives chi-square and z to
    low-cardinality numerical columns too, as Evidently does.
    """
    # Only whether there are more than 5 distinct values matters: skip the union for large columns.
    many_values = reference.distinct > 5 or current.distinct > 5 or combined_distinct(reference, current) > 5
    if reference.size <= DEFAULT_SMALL_REFERENCE:
        if column_type == ColumnType.NUMERICAL and many_values:
            return KS
        return CHISQUARE if combined_distinct(reference, current) > 2 else Z
    if column_type == ColumnType.NUMERICAL and many_values:
        return WASSERSTEIN
    return JENSENSHANNON
