"""Model quality from logged predictions joined with the ground truth that arrived for them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.monitor.domain import reference


def labelled(window: pa.Table, prediction_column: str, truth: pa.Table) -> tuple[pa.Array, pa.Array]:
    """(prediction, truth) for the window's requests that have a label."""
    predictions = window.select([reference.REQUEST_ID, prediction_column]).filter(
        pc.is_valid(window.column(reference.REQUEST_ID))
    )
    joined = predictions.join(truth, reference.REQUEST_ID, join_type="inner")
    joined = joined.filter(pc.is_valid(joined.column(prediction_column)))
    return joined.column(prediction_column).combine_chunks(), joined.column("truth").combine_chunks()


def classification_metrics(predicted: pa.Array, truth: pa.Array) -> dict[str, float]:
    """Accuracy and macro-averaged F1 (every class seen in either column counts equally)."""
    predicted_labels = np.asarray(pc.cast(predicted, pa.string()).to_numpy(zero_copy_only=False), dtype=str)
    true_labels = np.asarray(truth.to_numpy(zero_copy_only=False), dtype=str)
    classes, codes = np.unique(np.concatenate([predicted_labels, true_labels]), return_inverse=True)
    predicted_codes, true_codes = codes[: len(predicted_labels)], codes[len(predicted_labels) :]
    hits = predicted_codes == true_codes
    true_positive = np.bincount(true_codes[hits], minlength=len(classes))
    predicted_count = np.bincount(predicted_codes, minlength=len(classes))
    actual_count = np.bincount(true_codes, minlength=len(classes))
    denominator = predicted_count + actual_count
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros(len(classes)), where=denominator > 0)
    return {"accuracy": float(hits.mean()), "f1": float(f1.mean())}


def regression_metrics(predicted: pa.Array, truth: pa.Array) -> dict[str, float] | None:
    """RMSE and MAE; None when the labels are not numbers."""
    try:
        true_values = pc.cast(truth, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None
    errors = pc.cast(predicted, pa.float64()).to_numpy(zero_copy_only=False) - true_values
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors)))}


def evaluate(config: dict[str, Any], window: pa.Table, prediction_column: str, truth: pa.Table) -> dict[str, Any]:
    """The quality section of a report: metrics, and which thresholds they break."""
    predicted, true = labelled(window, prediction_column, truth)
    section: dict[str, Any] = {"task": config["task"], "rows": len(predicted), "metrics": None, "violations": {}}
    if len(predicted) < config["min_rows"]:
        section["status"] = "insufficient_data"
        return section
    metrics = (
        classification_metrics(predicted, true)
        if config["task"] == "classification"
        else regression_metrics(predicted, true)
    )
    if metrics is None:
        section["status"] = "not_tested"
        section["reason"] = "ground truth values are not numbers"
        return section
    section["status"] = "ok"
    section["metrics"] = metrics
    for metric, bound in config["thresholds"].items():
        value = metrics[metric]
        if bound.get("min") is not None and value < bound["min"]:
            section["violations"][metric] = {"value": value, "min": bound["min"]}
        elif bound.get("max") is not None and value > bound["max"]:
            section["violations"][metric] = {"value": value, "max": bound["max"]}
    return section
