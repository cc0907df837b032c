"""Columns whose type differs between the reference and the current window, for the comparison with
Evidently 0.7 (`evidently_expected.json`, written by `generate_evidently_expected.py`).

Plain numpy/pandas, so the generator can import it from Evidently's own venv.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROWS = 5_000  # above 1,000 reference rows: the distance tests (Wasserstein, Jensen-Shannon)
SMALL_ROWS = 800  # up to 1,000: the p-value tests (K-S, chi-square, z)


def _ints(generator: np.random.Generator, distinct: int, rows: int) -> np.ndarray:
    return generator.integers(0, distinct, rows).astype(np.int64)


def _labels(values: np.ndarray) -> pd.Series:
    return pd.Series([str(value) for value in values], dtype=object)


def build_cases() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """One column `x` per case: name -> (reference, current)."""
    generator = np.random.default_rng(2303)
    cases: dict[str, tuple[pd.Series, pd.Series]] = {}
    for rows, suffix in ((ROWS, ""), (SMALL_ROWS, "_small")):
        # int64 with 8 vs 15 distinct values: Evidently's limit for a categorical int is 10.
        cases[f"ints_few_to_many{suffix}"] = (_ints(generator, 8, rows), _ints(generator, 15, rows))
        cases[f"ints_many_to_few{suffix}"] = (_ints(generator, 15, rows), _ints(generator, 8, rows))
        # Floats are numerical whatever their count; with <= 5 distinct values over both windows the
        # default test is a categorical one all the same.
        few = np.array([0.5, 1.5, 2.5, 3.5])
        many = np.linspace(0.0, 4.0, 15)
        cases[f"floats_few{suffix}"] = (generator.choice(few, rows), generator.choice(few[:3], rows) + 1.0)
        cases[f"floats_few_to_many{suffix}"] = (generator.choice(few, rows), generator.choice(many, rows))
        cases[f"floats_many_to_few{suffix}"] = (generator.choice(many, rows), generator.choice(few, rows))
        # Strings that look like numbers stay labels (compared as text, never as numbers).
        cases[f"numeric_strings_few_to_many{suffix}"] = (
            _labels(_ints(generator, 8, rows)),
            _labels(_ints(generator, 15, rows)),
        )
        cases[f"numeric_strings_many_to_few{suffix}"] = (
            _labels(_ints(generator, 15, rows)),
            _labels(_ints(generator, 8, rows)),
        )
        # Text in the reference (more than half the values distinct), categorical in the current window.
        cases[f"text_to_categorical{suffix}"] = (
            _labels(generator.integers(0, rows * 4, rows)),
            _labels(_ints(generator, 9, rows)),
        )
        cases[f"booleans{suffix}"] = (generator.random(rows) < 0.5, generator.random(rows) < 0.56)
        # A reference int column with missing values is float64 in pandas (numerical); a current window
        # without missing values is int64 with few values (categorical).
        reference = _ints(generator, 6, rows).astype(np.float64)
        reference[generator.random(rows) < 0.05] = np.nan
        cases[f"float_with_missing_to_few_ints{suffix}"] = (reference, _ints(generator, 6, rows))
    return {name: (pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur})) for name, (ref, cur) in cases.items()}
