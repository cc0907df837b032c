"""The Open Inference Protocol (KServe V2): tensors in, tensors out, metadata from the MLflow signature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from services.deployer.model_server.validation import input_problem

_NUMPY_BY_DATATYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_BY_KIND_AND_SIZE = {
    (dtype.kind, dtype.itemsize): name for name, dtype in _NUMPY_BY_DATATYPE.items() if name != "BYTES"
}
# What an unnamed single output (most sklearn models) is called in metadata and in responses alike.
DEFAULT_OUTPUT_NAME = "predictions"


@dataclass
class InferenceError(Exception):
    """Rendered as the protocol's `{"error": message}` body."""

    status_code: int
    message: str

    def to_json(self) -> bytes:
        return orjson.dumps({"error": self.message})


def datatype_of(dtype: np.dtype) -> str:
    return _DATATYPE_BY_KIND_AND_SIZE.get((dtype.kind, dtype.itemsize), "BYTES")


def model_metadata(name: str, version: str, signature: ModelSignature | None) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": "mlflow",
        "inputs": _tensor_metadata(signature.inputs if signature else None, "input"),
        "outputs": _tensor_metadata(signature.outputs if signature else None, "output"),
    }


def decode_inputs(request: dict[str, Any], input_schema: Schema | None) -> Any:
    """Turn the request's named tensors into what the pyfunc model takes.

    A column-based signature gets a DataFrame (one tensor per column, or one 2-D tensor whose width is the
    number of columns); otherwise one tensor becomes an ndarray and several a dict of ndarrays.
    """
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferenceError(400, "'inputs' must be a non-empty list of tensors")
    arrays = dict(_decode_tensor(tensor) for tensor in inputs)
    if len(arrays) != len(inputs):
        raise InferenceError(400, "input names must be unique")
    if input_schema is None or input_schema.is_tensor_spec():
        return next(iter(arrays.values())) if len(arrays) == 1 else arrays
    columns = input_schema.input_names()
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        if name not in columns and array.ndim == 2 and array.shape[1] == len(columns):
            return pd.DataFrame(array, columns=columns)
    return pd.DataFrame({name: _as_column(array) for name, array in arrays.items()})


def encode_outputs(predictions: Any, requested: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    outputs = [_encode_tensor(name, array) for name, array in _named_arrays(predictions)]
    if not requested:
        return outputs
    wanted = {output.get("name") for output in requested}
    unknown = wanted - {output["name"] for output in outputs}
    if unknown:
        raise InferenceError(400, f"unknown requested outputs: {sorted(map(str, unknown))}")
    return [output for output in outputs if output["name"] in wanted]


def infer(model: PyFuncModel, name: str, version: str, request: dict[str, Any]) -> bytes:
    input_schema = model.metadata.get_input_schema()
    model_input = decode_inputs(request, input_schema)
    problem = input_problem(model_input, input_schema)
    if problem is not None:
        raise InferenceError(400, problem)
    params = request.get("parameters")
    try:
        predictions = model.predict(model_input, params=params if isinstance(params, dict) else None)
    except MlflowException as exc:
        raise InferenceError(exc.get_http_status_code(), exc.message) from exc
    except Exception as exc:
        raise InferenceError(500, f"The model raised an error during prediction: {type(exc).__name__}: {exc}") from exc
    response: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "outputs": encode_outputs(predictions, request.get("outputs")),
    }
    if "id" in request:
        response["id"] = request["id"]
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)


def _tensor_metadata(schema: Schema | None, prefix: str) -> list[dict[str, Any]]:
    if schema is None:
        return []
    if schema.is_tensor_spec():
        specs = [(spec.name, spec.type, list(spec.shape)) for spec in schema.inputs]
    else:
        # Columns are 1-D tensors of unknown length; complex column types (arrays, objects) travel as BYTES.
        specs = [(spec.name, _column_numpy_type(spec.type), [-1]) for spec in schema.inputs]
    if len(specs) == 1 and specs[0][0] is None and prefix == "output":
        specs = [(DEFAULT_OUTPUT_NAME, specs[0][1], specs[0][2])]
    return [
        {
            "name": name if name is not None else f"{prefix}-{index}",
            "datatype": datatype_of(dtype),
            "shape": shape,
        }
        for index, (name, dtype, shape) in enumerate(specs)
    ]


def _column_numpy_type(column_type: Any) -> np.dtype:
    to_numpy = getattr(column_type, "to_numpy", None)
    return np.dtype(to_numpy()) if to_numpy else np.dtype(object)


def _decode_tensor(tensor: Any) -> tuple[str, np.ndarray]:
    if not isinstance(tensor, dict):
        raise InferenceError(400, "each input must be an object with name, shape, datatype and data")
    name, shape, datatype, data = (tensor.get(key) for key in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not name:
        raise InferenceError(400, "each input needs a non-empty 'name'")
    if not isinstance(shape, list) or not all(isinstance(dim, int) and dim >= 0 for dim in shape):
        raise InferenceError(400, f"input '{name}': 'shape' must be a list of non-negative integers")
    dtype = _NUMPY_BY_DATATYPE.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InferenceError(
            400,
            f"input '{name}': unsupported datatype {datatype!r}; expected one of {list(_NUMPY_BY_DATATYPE)}",
        )
    if not isinstance(data, list):
        raise InferenceError(400, f"input '{name}': 'data' must be a list")
    try:
        # The protocol allows flat or nested row-major data; reshape checks the element count either way.
        return name, np.asarray(data, dtype=dtype).reshape(shape)
    except (ValueError, TypeError) as exc:
        raise InferenceError(400, f"input '{name}': data does not match shape {shape} / {datatype}: {exc}") from exc


def _as_column(array: np.ndarray) -> Any:
    if array.ndim == 1:
        return array
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    return list(array)


def _named_arrays(predictions: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(predictions, pd.DataFrame):
        return [(str(column), predictions[column].to_numpy()) for column in predictions.columns]
    if isinstance(predictions, pd.Series):
        return [
            (
                str(predictions.name) if predictions.name is not None else DEFAULT_OUTPUT_NAME,
                predictions.to_numpy(),
            )
        ]
    if isinstance(predictions, dict):
        return [(str(key), np.asarray(value)) for key, value in predictions.items()]
    return [(DEFAULT_OUTPUT_NAME, np.asarray(predictions))]


def _encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = datatype_of(array.dtype)
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data: Any = [item.decode() if isinstance(item, bytes) else str(item) for item in flat.tolist()]
    else:
        # orjson serialises contiguous numeric arrays directly, far faster than tolist().
        data = np.ascontiguousarray(flat)
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
