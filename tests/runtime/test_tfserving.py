"""TensorFlow Serving's REST API, written from tensorflow/serving g3doc/api_rest.md: predict in row and
columnar format, model status and metadata, errors as {"error": ...}."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image as PILImage


def png(color: tuple[int, int, int] = (10, 20, 30)) -> dict[str, str]:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(out, format="PNG")
    return {"b64": base64.b64encode(out.getvalue()).decode()}


def kinds_row(**change: Any) -> dict[str, Any]:
    row = {"count": 3, "ratio": 0.5, "flag": True, "season": "summer", "vector": [1, 2, 3], "photo": png()}
    return {**row, **change}


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) in (["error"], ["error", "problems"]) and isinstance(body["error"], str)
    return str(body["error"])


# --- predict ----------------------------------------------------------------------------------------


def test_the_docs_example_single_input_rows_of_values(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/v1/models/double:predict", json={"instances": [1.0, 2.0, 5.0]})
    assert response.status_code == 200 and response.json() == {"predictions": [2.0, 4.0, 10.0]}


def test_rows_of_objects_and_a_dict_output_give_a_list_of_objects(serve: Any) -> None:
    rows = [kinds_row(), kinds_row(count=7, season="winter", photo=png((0, 0, 0)))]
    with serve("kinds") as client:
        response = client.post(
            "/v1/models/kinds:predict", json={"signature_name": "serving_default", "instances": rows}
        )
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["count"] == 3 and first["summer"] == 1.0 and first["photo_mean"] == 20.0
    assert second["count"] == 7 and second["summer"] == 0.0 and second["photo_mean"] == 0.0


def test_many_rows_take_the_columnar_path(serve: Any) -> None:
    rows = [kinds_row(count=i % 100) for i in range(50)]
    with serve("kinds") as client:
        response = client.post("/v1/models/kinds:predict", json={"instances": rows})
        bad = client.post("/v1/models/kinds:predict", json={"instances": [*rows, kinds_row(count=-1)]})
    assert [p["count"] for p in response.json()["predictions"]] == [i % 100 for i in range(50)]
    assert error_of(bad, 400) == "instances[50].count: must be >= 0, got -1"


def test_columnar_inputs_give_columnar_outputs(serve: Any) -> None:
    inputs = {"count": [1, 2], "ratio": [0.5, 1.5], "flag": [True, False], "season": ["summer", "winter"],
              "vector": [[1, 2, 3], [4, 5, 6]], "photo": [png(), png()]}  # fmt: skip
    with serve("kinds", "double", "scale") as client:
        named = client.post("/v1/models/kinds:predict", json={"inputs": inputs}).json()
        single = client.post("/v1/models/double:predict", json={"inputs": {"x": [1, 2]}}).json()
        bare = client.post("/v1/models/double:predict", json={"inputs": [3, 4]}).json()
        tensor = client.post(
            "/v1/models/scale:predict", json={"inputs": {"matrix": [[[1, 1, 1], [2, 2, 2]]]}}
        )
    assert named["outputs"]["count"] == [1, 2] and named["outputs"]["vector_sum"] == [6.0, 15.0]
    assert single == {"outputs": [2.0, 4.0]} and bare == {"outputs": [6.0, 8.0]}
    assert tensor.json() == {"outputs": [[[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]]]}


def test_versions_in_the_url(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    with serve("weighted", "double") as client:
        pinned = client.post("/v1/models/weighted/versions/1:predict", json={"instances": [3]})
        missing = client.post("/v1/models/weighted/versions/4:predict", json={"instances": [3]})
        unversioned = client.post("/v1/models/double/versions/0:predict", json={"instances": [3]})
    assert pinned.json() == {"predictions": [6.0]} and pinned.headers["x-model-version"] == "1"
    assert error_of(missing, 404) == "Could not find version 4 of servable weighted"
    assert unversioned.json() == {"predictions": [6.0]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1], "request body: expected a JSON object with 'instances' or 'inputs'"),
        ({}, "the request must have either 'instances' (rows) or 'inputs' (columns), not both"),
        ({"instances": [1], "inputs": [1]}, "the request must have either 'instances'"),
        ({"instances": []}, "instances: expected a non-empty list"),
        ({"instances": [1], "signature_name": "classify"}, "signature_name 'classify' not found"),
        ({"instances": [1], "extra": 1}, "unexpected keys in the request: ['extra']"),
        ({"instances": [1, "a"]}, "instances[1]: expected a number, got string 'a'"),
        (
            {"instances": [{"x": 1}, {"y": 2}]},
            "instances[1].y: unknown input; expected x; instances[1].x: missing required input (float)",
        ),
        ({"inputs": {"x": 1}}, "x: expected a list with one value per row"),
        ({"inputs": {"x": [1], "y": [2]}}, "y: unknown input; expected x"),
        ({"inputs": {"x": [1, None]}}, "x[1]: missing required input (float)"),
    ],
)
def test_bad_requests_are_400_in_tf_servings_error_format(serve: Any, body: Any, message: str) -> None:
    with serve("double") as client:
        response = client.post("/v1/models/double:predict", json=body)
    assert error_of(response, 400).startswith(message)


def test_unequal_columns_and_unknown_models_and_verbs(serve: Any) -> None:
    with serve("kinds", "double") as client:
        unequal = client.post("/v1/models/kinds:predict", json={"inputs": {"count": [1, 2], "ratio": [1.0]}})
        unknown = client.post("/v1/models/half:predict", json={"instances": [1.0]})
        classify = client.post("/v1/models/double:classify", json={"examples": [{"x": 1.0}]})
    assert error_of(unequal, 400).startswith("inputs: every input needs the same number of rows")
    assert error_of(unknown, 404).startswith("no function named 'half'")
    assert error_of(classify, 400).startswith("only :predict is served here, not :classify")


def test_binary_text_values_are_decoded(serve: Any) -> None:
    with serve("scalar") as client:
        response = client.post(
            "/v1/models/scalar:predict",
            json={"instances": [{"word": {"b64": base64.b64encode(b"ab").decode()}, "times": 3}]},
        )
    assert response.json() == {"predictions": ["ababab"]}


# --- status and metadata ----------------------------------------------------------------------------


def test_model_status_follows_the_docs_example(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        status = client.get("/v1/models/weighted").json()
        pinned = client.get("/v1/models/weighted/versions/1")
        other = client.get("/v1/models/weighted/versions/3")
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert pinned.json() == status
    assert error_of(other, 404) == "Could not find version 3 of servable weighted"


def test_a_model_still_loading_is_reported_as_such(serve: Any) -> None:
    with serve("weighted", wait_ready=False) as client:
        (entry,) = client.get("/v1/models/weighted").json()["model_version_status"]
    assert entry["state"] == "LOADING" and entry["status"]["error_code"] == "UNAVAILABLE"


def test_metadata_is_the_serving_default_signature(serve: Any) -> None:
    with serve("kinds", "scale") as client:
        kinds = client.get("/v1/models/kinds/metadata").json()
        scale = client.get("/v1/models/scale/versions/0/metadata").json()
    assert kinds["model_spec"] == {"name": "kinds", "signature_name": "", "version": "0"}
    signature = kinds["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["count"] == {
        "dtype": "DT_INT64",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "count",
    }
    assert signature["inputs"]["photo"]["dtype"] == "DT_STRING"
    assert signature["inputs"]["vector"]["tensor_shape"]["dim"][1] == {"size": "3", "name": ""}
    outputs = scale["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert outputs["prediction"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in outputs["prediction"]["tensor_shape"]["dim"]] == ["-1", "2", "3"]


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"instances": null}', b'{"instances": [[1]]}', b'{"instances": [{"b64": 1}]}',
     b'{"inputs": null}', b'{"inputs": {"count": [1], "photo": [{"b64": "%%"}]}}', b'{"inputs": {"x": {}}}',
     b'{"instances": [{"season": {"b64": "%%"}}]}', b'{"instances": [{"note": {"b64": "/w=="}}]}',
     b'{"instances": [{"vector": [[1, 2, 3]]}]}', b'{"signature_name": 3, "instances": [1]}'],
)  # fmt: skip
def test_malformed_requests_never_cause_a_500(serve: Any, body: bytes) -> None:
    with serve("double", "kinds") as client:
        for target in ("double", "kinds"):
            response = client.post(f"/v1/models/{target}:predict", content=body)
            assert 400 <= response.status_code < 500, (target, response.text)
            assert isinstance(response.json()["error"], str)
