"""The model server as its own process over real HTTP: MLflow's scoring protocol and the V2 protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest

from services.deployer.model_server import BATCHING_HEADER, PID_HEADER, batching_header_value
from tests.deployer.conftest import RunningServer, SavedModel, process_cpu_s

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(iris_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=iris_server.state.url, timeout=10.0) as http:
        yield http


@pytest.fixture(scope="module")
def rows(iris_model: SavedModel) -> pd.DataFrame:
    # Rows from all three classes, so "same predictions" is not satisfied by a constant.
    return iris_model.features.sample(n=24, random_state=7)


@pytest.fixture(scope="module")
def expected(iris_model: SavedModel, rows: pd.DataFrame) -> list[int]:
    predictions = mlflow.pyfunc.load_model(str(iris_model.path)).predict(rows)
    assert len(set(predictions.tolist())) == 3
    return predictions.tolist()


@pytest.mark.parametrize(
    "payload",
    [
        lambda df: {"dataframe_split": df.to_dict(orient="split")},
        lambda df: {"dataframe_records": df.to_dict(orient="records")},
        lambda df: {"instances": df.to_dict(orient="records")},
        lambda df: {"inputs": df.to_dict(orient="list")},
        lambda df: {"dataframe_split": df.to_dict(orient="split"), "params": {}},
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs", "with_params"],
)
def test_invocations_json_formats_match_in_process_predictions(client, rows, expected, payload):
    response = client.post("/invocations", json=payload(rows))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": expected}


def test_invocations_csv_matches_in_process_predictions(client, rows, expected):
    response = client.post(
        "/invocations", content=rows.to_csv(index=False), headers={"content-type": "text/csv; charset=utf-8"}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"features": [[1, 2, 3, 4]]}, "exactly one of the input fields"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1]]}, "inputs": [1]}, "exactly one of the input fields"),
        ({"dataframe_records": [{"sepal length (cm)": 1.0}]}, "missing inputs"),
        # pandas would pad the short row with NaN and the model raise: the request's fault, not the model's.
        ({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2, 3, 4], [1, 2, 3]]}}, "row 1 has 3 values"),
        ({"dataframe_split": {"columns": COLUMNS, "data": [[None, 2, 3, 4]]}}, "'sepal length (cm)' is required"),
        ({"dataframe_records": [dict(zip(COLUMNS, [1, 2, 3, 4], strict=True)), {}]}, "null values (row 1;"),
        ({"inputs": {column: [None] for column in COLUMNS}}, "has null values"),
        ({"dataframe_split": {"columns": COLUMNS, "data": []}}, "no rows to score"),
        ({"instances": []}, "no rows to score"),
        ({"dataframe_split": {"columns": COLUMNS, "data": [["abc", 2, 3, 4]]}}, "could not convert string"),
    ],
    ids=[
        "no-format",
        "two-formats",
        "missing-column",
        "ragged",
        "null",
        "record-missing-key",
        "null-inputs",
        "empty-split",
        "empty-instances",
        "wrong-type",
    ],
)
def test_invocations_bad_input_is_400_with_mlflow_error_body(client, body, fragment):
    response = client.post("/invocations", json=body)

    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"error_code", "message"}
    assert error["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
    assert fragment in error["message"]


def test_invocations_malformed_json_and_unsupported_content_type(client):
    malformed = client.post("/invocations", content=b"{not json", headers={"content-type": "application/json"})
    unsupported = client.post("/invocations", content=b"<x/>", headers={"content-type": "application/xml"})

    assert malformed.status_code == 400
    assert malformed.json()["error_code"] == "BAD_REQUEST"
    assert unsupported.status_code == 415
    assert "application/xml" in unsupported.json()["message"]


def test_a_null_feature_is_400_naming_the_column_and_the_server_keeps_serving(client, rows, expected):
    record = dict.fromkeys(rows.columns, 1.0) | {"sepal length (cm)": None}

    failed = client.post("/invocations", json={"dataframe_records": [record]})
    v2 = client.post(
        "/v2/models/iris/infer",
        json={
            "inputs": [
                {"name": column, "shape": [1], "datatype": "FP64", "data": [record[column]]} for column in rows.columns
            ]
        },
    )
    after = client.post("/invocations", json={"dataframe_split": rows.to_dict(orient="split")})

    assert failed.status_code == 400
    assert failed.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Column 'sepal length (cm)' is required by the model's signature but has null values "
        "(row 0; 1 of 1 rows)",
    }
    assert v2.status_code == 400 and "'sepal length (cm)' is required" in v2.json()["error"]
    assert after.json() == {"predictions": expected}


def test_health_and_version_endpoints(client, iris_server):
    for path in ("/ping", "/health"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers[PID_HEADER] == str(iris_server.state.pid)
    assert client.get("/version").text == mlflow.__version__
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert client.get("/v2/models/iris/versions/3/ready").status_code == 200


def test_v2_metadata_comes_from_the_signature(client, rows):
    metadata = client.get("/v2/models/iris").json()

    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["3"]
    assert metadata["platform"] == "mlflow"
    assert metadata["inputs"] == [{"name": column, "datatype": "FP64", "shape": [-1]} for column in rows.columns]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]


def test_v2_infer_one_tensor_per_column(client, rows, expected):
    request = {
        "id": "req-42",
        "inputs": [
            {"name": column, "shape": [len(rows)], "datatype": "FP64", "data": rows[column].tolist()}
            for column in rows.columns
        ],
    }

    response = client.post("/v2/models/iris/infer", json=request)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "model_name": "iris",
        "model_version": "3",
        "id": "req-42",
        "outputs": [{"name": "predictions", "datatype": "INT64", "shape": [len(rows)], "data": expected}],
    }


def test_v2_infer_one_matrix_tensor_nested_data(client, rows, expected):
    request = {
        "inputs": [
            {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": rows.to_numpy().tolist()}
        ],
        "outputs": [{"name": "predictions"}],
    }

    response = client.post("/v2/models/iris/versions/3/infer", json=request)

    assert response.status_code == 200, response.text
    body = response.json()
    assert "id" not in body
    assert body["outputs"][0]["data"] == expected


@pytest.mark.parametrize(
    ("path", "request_body", "status", "fragment"),
    [
        ("/v2/models/other/infer", {"inputs": []}, 404, "not served here"),
        ("/v2/models/iris/infer", {"inputs": []}, 400, "non-empty list"),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "COMPLEX", "data": [1, 2, 3, 4]}]},
            400,
            "unsupported datatype",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
            400,
            "does not match shape",
        ),
        ("/v2/models/iris/infer", {"inputs": ["x"]}, 400, "each input must be an object"),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}] * 2},
            400,
            "input names must be unique",
        ),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}],
                "outputs": [{"name": "probabilities"}],
            },
            400,
            "unknown requested outputs",
        ),
    ],
)
def test_v2_errors_use_the_protocol_error_body(client, path, request_body, status, fragment):
    response = client.post(path, json=request_body)

    assert response.status_code == status
    assert fragment in response.json()["error"]


def _score_concurrently(url: str, frames: list[pd.DataFrame], headers: dict[str, str], clients: int) -> list:
    async def run() -> list:
        slots = asyncio.Semaphore(clients)
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:

            async def one(frame: pd.DataFrame) -> httpx.Response:
                async with slots:
                    body = {"dataframe_split": frame.to_dict(orient="split")}
                    return await http.post("/invocations", json=body, headers=headers)

            return await asyncio.gather(*(one(frame) for frame in frames))

    return asyncio.run(run())


def test_batching_answers_each_caller_its_own_rows_for_less_cpu(iris_server, iris_model):
    """Eight concurrent clients, each request its own rows: batched, every caller gets the predictions of its
    rows, and the server spends no more CPU per request than unbatched (one model call per batch)."""
    model = mlflow.pyfunc.load_model(str(iris_model.path))
    frames = [iris_model.features.iloc[index % 140 : index % 140 + 1 + index % 2] for index in range(240)]
    spent = {}
    for label, headers in (("unbatched", {}), ("batched", {BATCHING_HEADER: batching_header_value(16, 2)})):
        before = process_cpu_s(iris_server.state.pid)
        responses = _score_concurrently(iris_server.state.url, frames, headers, clients=8)
        spent[label] = process_cpu_s(iris_server.state.pid) - before
        for frame, response in zip(frames, responses, strict=True):
            assert response.status_code == 200, response.text
            assert response.json() == {"predictions": model.predict(frame).tolist()}

    assert spent["batched"] <= spent["unbatched"], spent


def test_a_request_refused_in_a_batch_fails_only_its_caller(iris_server, iris_model):
    good = [iris_model.features.iloc[index : index + 2] for index in range(0, 14, 2)]
    bad = iris_model.features.head(1).astype(object)
    bad.iloc[0, 2] = None
    headers = {BATCHING_HEADER: batching_header_value(8, 50)}

    responses = _score_concurrently(iris_server.state.url, [*good[:3], bad, *good[3:]], headers, clients=8)

    refused = responses.pop(3)
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert [response.status_code for response in responses] == [200] * len(good)
