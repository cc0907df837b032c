"""The model server app in-process (no subprocess): error mapping, type-hinted models, tensor outputs."""

from __future__ import annotations

import warnings

import mlflow.pyfunc
import numpy as np
from fastapi.testclient import TestClient

from services.deployer.model_server.__main__ import show_each_warning_site_once
from services.deployer.model_server.app import create_app


class ExplodingModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("feature store unreachable")


def test_python_model_that_always_raises_gives_500_on_both_protocols(tmp_path):
    path = tmp_path / "exploding"
    mlflow.pyfunc.save_model(str(path), python_model=ExplodingModel(), pip_requirements=[])
    app = create_app(mlflow.pyfunc.load_model(str(path)), name="exploding", version="1")

    with TestClient(app) as http:
        scoring = http.post("/invocations", json={"inputs": {"x": [1.0]}})
        v2 = http.post(
            "/v2/models/exploding/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        )

    assert scoring.status_code == 500
    assert scoring.json() == {
        "error_code": "INTERNAL_ERROR",
        "message": "The model raised an error during prediction: RuntimeError: feature store unreachable",
    }
    assert v2.status_code == 500
    assert "feature store unreachable" in v2.json()["error"]


def test_v2_metadata_without_signature_and_tensor_outputs(tmp_path):
    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return {"doubled": np.asarray(model_input) * 2, "label": np.array(["a"] * len(model_input))}

    path = tmp_path / "doubler"
    mlflow.pyfunc.save_model(str(path), python_model=Doubler(), pip_requirements=[])
    app = create_app(mlflow.pyfunc.load_model(str(path)), name="doubler", version="7")

    with TestClient(app) as http:
        metadata = http.get("/v2/models/doubler").json()
        response = http.post(
            "/v2/models/doubler/infer",
            json={"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}]},
        )

    assert metadata["inputs"] == [] and metadata["outputs"] == []
    assert response.json()["outputs"] == [
        {"name": "doubled", "datatype": "INT32", "shape": [2, 2], "data": [2, 4, 6, 8]},
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "a"]},
    ]


class Greeter(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [f"hello {name}" for name in model_input]


def test_type_hinted_model_gets_the_raw_inputs_like_mlflow_serve(tmp_path):
    path = tmp_path / "greeter"
    mlflow.pyfunc.save_model(str(path), python_model=Greeter(), pip_requirements=[])
    app = create_app(mlflow.pyfunc.load_model(str(path)), name="greeter", version="1")

    with TestClient(app) as http:
        greeted = http.post("/invocations", json={"inputs": ["ada", "alan"]})
        wrong_key = http.post("/invocations", json={"instances": ["ada"]})

    assert greeted.json() == {"predictions": ["hello ada", "hello alan"]}
    assert wrong_key.status_code == 400
    assert "'inputs' key" in wrong_key.json()["message"]


def test_each_warning_site_is_logged_once_however_often_it_fires():
    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        show_each_warning_site_once()
        for request in range(3):
            warnings.warn(f"feature names missing (request {request})", UserWarning, stacklevel=1)
        warnings.warn("another site", UserWarning, stacklevel=1)

    assert shown == ["feature names missing (request 0)", "another site"]
