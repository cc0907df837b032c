"""The MLflow scoring protocol (`POST /invocations`), as `mlflow models serve` speaks it.

Request bodies are parsed with MLflow's own parsing helpers so that column dtypes follow the model's
signature exactly as they do under `mlflow models serve`; framing, error mapping and serialisation are ours
(orjson). Errors answer MLflow's `{"error_code", "message"}` body: 400 for input that is invalid whatever the
model (unparsable, ragged, empty, nulls the signature forbids, wrong types), and a 500 rather than MLflow's 400
when the model raises on valid input, so a gateway can tell a broken version from a broken request.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema
from mlflow.utils.proto_json_utils import dataframe_from_parsed_json, parse_tf_serving_input

from services.deployer.model_server.validation import input_problem

INPUT_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = (CONTENT_TYPE_JSON, CONTENT_TYPE_CSV, CONTENT_TYPE_PARQUET)

REQUIRED_INPUT_FORMAT = f"The input must be a JSON dictionary with exactly one of the input fields {set(INPUT_FORMATS)}"


@dataclass
class ScoringError(Exception):
    """A request that cannot be scored; rendered as MLflow's `{"error_code", "message"}` body."""

    status_code: int
    error_code: str
    message: str

    def to_json(self) -> bytes:
        return orjson.dumps({"error_code": self.error_code, "message": self.message})


@dataclass(frozen=True)
class ScoringRequest:
    data: Any
    params: dict[str, Any] | None


def parse_request(
    body: bytes, content_type: str | None, input_schema: Schema | None, *, typed_inputs: bool = False
) -> ScoringRequest:
    """`typed_inputs`: the model's signature comes from Python type hints, so MLflow hands the model the raw
    `inputs` value and lets the type hints validate it, rather than building a DataFrame."""
    mime_type, charset, unknown_parameters = _split_content_type(content_type)
    if charset != "utf-8":
        raise ScoringError(415, "UNSUPPORTED_MEDIA_TYPE", "The scoring server only supports UTF-8")
    if unknown_parameters:
        raise ScoringError(
            415, "UNSUPPORTED_MEDIA_TYPE", f"Unrecognized content type parameters: {', '.join(unknown_parameters)}."
        )
    if mime_type == CONTENT_TYPE_JSON:
        return _parse_json(body, input_schema, typed_inputs)
    if mime_type == CONTENT_TYPE_CSV:
        return ScoringRequest(_parse_csv(body, input_schema), None)
    if mime_type == CONTENT_TYPE_PARQUET:
        return ScoringRequest(_parse_parquet(body), None)
    raise ScoringError(
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        f"This predictor only supports the following content types: {list(CONTENT_TYPES)}. Got '{content_type}'.",
    )


def check_input(request: ScoringRequest, input_schema: Schema | None) -> None:
    """Refuse input that is invalid whatever the model (see validation.py): the caller's error, a 400."""
    problem = input_problem(request.data, input_schema)
    if problem is not None:
        raise ScoringError(400, "INVALID_PARAMETER_VALUE", problem)


def predict(model: PyFuncModel, request: ScoringRequest) -> Any:
    """Run the model on checked input; MLflow's own errors (schema enforcement) are the caller's fault, and
    anything else the model raises is the model's failure: a 500."""
    try:
        return model.predict(request.data, params=request.params)
    except MlflowException as exc:
        raise ScoringError(exc.get_http_status_code(), exc.error_code, exc.message) from exc
    except Exception as exc:
        raise ScoringError(
            500, "INTERNAL_ERROR", f"The model raised an error during prediction: {type(exc).__name__}: {exc}"
        ) from exc


def predictions_response(predictions: Any) -> bytes:
    return orjson.dumps({"predictions": to_jsonable(predictions)}, option=orjson.OPT_SERIALIZE_NUMPY)


def to_jsonable(value: Any) -> Any:
    """Shape predictions the way MLflow does (frames as records), leaving numeric arrays to orjson."""
    if isinstance(value, np.ndarray):
        # orjson serialises only C-contiguous arrays of native numeric dtypes itself.
        if value.dtype.kind in "biuf" and value.flags.c_contiguous:
            return value
        return value.tolist()
    if isinstance(value, pd.DataFrame):
        return value.to_dict(orient="records")
    if isinstance(value, pd.Series):
        return value.tolist()
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    return value


def _split_content_type(content_type: str | None) -> tuple[str | None, str, list[str]]:
    if content_type is None:
        return None, "utf-8", []
    mime_type, *pairs = (part.strip() for part in content_type.split(";"))
    parameters = {key.strip().lower(): value.strip() for key, _, value in (p.partition("=") for p in pairs)}
    charset = parameters.pop("charset", "utf-8").lower()
    return mime_type.lower(), charset, sorted(parameters)


def _parse_json(body: bytes, input_schema: Schema | None, typed_inputs: bool) -> ScoringRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ScoringError(
            400, "BAD_REQUEST", f"Ensure that input is a valid JSON formatted string. Error: '{exc}'"
        ) from exc
    if not isinstance(document, dict):
        raise ScoringError(400, "BAD_REQUEST", f"{REQUIRED_INPUT_FORMAT}. Received {type(document).__name__}.")
    params = document.get("params")
    if params is not None and not isinstance(params, dict):
        raise ScoringError(400, "BAD_REQUEST", "'params' must be a JSON object.")
    if typed_inputs:
        if "inputs" not in document:
            raise ScoringError(
                400,
                "INVALID_PARAMETER_VALUE",
                "Request payload must be a dictionary with 'inputs' key when the model contains a valid "
                f"type hint. Found keys in payload: {list(document)}.",
            )
        return ScoringRequest(document["inputs"], params)
    formats = [key for key in INPUT_FORMATS if key in document]
    if len(formats) != 1:
        raise ScoringError(
            400,
            "BAD_REQUEST",
            f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(document)}.",
        )
    input_format = formats[0]
    if input_format == "dataframe_split":
        _check_split_rows(document[input_format])
    try:
        if input_format in ("instances", "inputs"):
            data = parse_tf_serving_input(document, schema=input_schema)
        else:
            data = dataframe_from_parsed_json(
                document[input_format],
                pandas_orient=input_format.removeprefix("dataframe_"),
                schema=input_schema,
            )
    except MlflowException as exc:
        raise ScoringError(400, exc.error_code, exc.message) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise ScoringError(400, "BAD_REQUEST", f"Failed to parse '{input_format}': {exc}") from exc
    return ScoringRequest(data, params)


def _check_split_rows(split: Any) -> None:
    """Every row as long as `columns`: pandas would pad a short row with NaN and the model see a null."""
    if (
        not isinstance(split, dict)
        or not isinstance(split.get("columns"), list)
        or not isinstance(split.get("data"), list)
    ):
        return  # MLflow's parser reports the malformed document
    width = len(split["columns"])
    for index, row in enumerate(split["data"]):
        if isinstance(row, list) and len(row) != width:
            raise ScoringError(
                400,
                "BAD_REQUEST",
                "Invalid input. Provided dataframe_split field is not a valid dataframe representation in "
                f"'split' format. Error: 'row {index} has {len(row)} values for {width} columns'",
            )


def _parse_csv(body: bytes, input_schema: Schema | None) -> pd.DataFrame:
    try:
        text = body.decode("utf-8")
        if input_schema is None or input_schema.is_tensor_spec():
            return pd.read_csv(io.StringIO(text))
        dtypes = dict(zip(input_schema.input_names(), input_schema.pandas_types(), strict=True))
        return pd.read_csv(io.StringIO(text), dtype=dtypes)
    except Exception as exc:  # pandas raises a zoo of types for malformed CSV
        raise ScoringError(
            400,
            "BAD_REQUEST",
            "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid CSV-formatted "
            f"Pandas DataFrame produced using the `pandas.DataFrame.to_csv()` method. Error: '{exc}'",
        ) from exc


def _parse_parquet(body: bytes) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # pyarrow's errors vary by the kind of corruption
        raise ScoringError(
            400, "BAD_REQUEST", f"Failed to parse input as a Parquet Pandas DataFrame. Error: '{exc}'"
        ) from exc
