"""Data drift detection, numerically compatible with Evidently 0.7's `DataDriftPreset`.

Profile the reference once, then compare any current window against the stored profile:

    profile = build_reference_profile(reference_frame)          # pandas DataFrame or pyarrow Table
    blob = profile.to_bytes()                                    # store it
    report = compute_drift_report(ReferenceProfile.from_bytes(blob), current_frame, DriftOptions())
    report.to_dict()                                             # JSON-safe; render_html(report) for a page

Data larger than memory: `bounded_drift_report(ParquetSource(ref), ParquetSource(cur), memory_bytes)` gives
the same report reading a few columns at a time (see `bounded`).
"""

from services.monitor.domain.drift.bounded import (
    ColumnSource,
    GroupProgress,
    ParquetSource,
    TableSource,
    bounded_drift_report,
)
from services.monitor.domain.drift.columns import ColumnType
from services.monitor.domain.drift.engine import DriftOptions, compute_drift_report, detect_drift
from services.monitor.domain.drift.html import render_html
from services.monitor.domain.drift.io import read_table
from services.monitor.domain.drift.profile import (
    ColumnProfile,
    ProfileFormatError,
    ProfileWriter,
    ReferenceProfile,
    build_reference_profile,
)
from services.monitor.domain.drift.report import ColumnDrift, ColumnStatus, DriftReport, NewCategories
from services.monitor.domain.drift.stats import METHODS

__all__ = [
    "METHODS",
    "ColumnDrift",
    "ColumnProfile",
    "ColumnSource",
    "ColumnStatus",
    "ColumnType",
    "DriftOptions",
    "DriftReport",
    "GroupProgress",
    "NewCategories",
    "ParquetSource",
    "ProfileFormatError",
    "ProfileWriter",
    "ReferenceProfile",
    "TableSource",
    "bounded_drift_report",
    "build_reference_profile",
    "compute_drift_report",
    "detect_drift",
    "read_table",
    "render_html",
]
