"""Open Inference Protocol v2 REST, written from the spec (kserve docs/predict-api/v2/required_api.md)
(the Binary Tensor Data extension is in test_v2_binary.py, an official client in test_v2_client.py)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image as PILImage


def png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(out, format="PNG")
    return out.getvalue()


def kinds_inputs(n: int = 2) -> list[dict[str, Any]]:
    photo = base64.b64encode(png()).decode()
    return [
        {"name": "count", "shape": [n], "datatype": "INT64", "data": list(range(n))},
        {"name": "ratio", "shape": [n, 1], "datatype": "FP32", "data": [[0.5]] * n},
        {"name": "flag", "shape": [n], "datatype": "BOOL", "data": [True] * n},
        {"name": "season", "shape": [n], "datatype": "BYTES", "data": ["summer"] * n},
        {"name": "vector", "shape": [n, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0] * n},
        {"name": "photo", "shape": [n], "datatype": "BYTES", "data": [photo] * n},
    ]


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) in (["error"], ["error", "problems"]) and isinstance(body["error"], str)
    return str(body["error"])


# --- health and metadata ----------------------------------------------------------------------------


def test_server_metadata_and_health(serve: Any) -> None:
    with serve("double") as client:
        meta = client.get("/v2")
        live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")
    assert meta.json() == {"name": "fnserve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert (live.status_code, live.content) == (200, b"")  # the HTTP status is the answer, no body
    assert (ready.status_code, ready.content) == (200, b"")


def test_not_ready_is_4xx(serve: Any) -> None:
    with serve("weighted", wait_ready=False) as client:  # no checkpoint: never ready
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 400
        assert client.get("/v2/models/weighted/ready").status_code == 400
        infer = client.post("/v2/models/weighted/infer", json={"inputs": []})
    assert infer.status_code == 503 and "not ready" in infer.json()["error"]


def test_model_ready_by_name_and_version(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        assert client.get("/v2/models/weighted/ready").status_code == 200
        assert client.get("/v2/models/weighted/versions/1/ready").status_code == 200
        assert client.get("/v2/models/weighted/versions/7/ready").status_code == 400
        assert error_of(client.get("/v2/models/nope/ready"), 404).startswith("no function named 'nope'")
        meta = client.get("/v2/models/weighted/versions/1").json()
        assert error_of(client.get("/v2/models/weighted/versions/7"), 404).startswith("version '7'")
    assert meta["name"] == "weighted" and meta["versions"] == ["1"]


def test_model_metadata_lists_inputs_and_outputs_with_v2_datatypes(serve: Any) -> None:
    with serve("kinds", "scale") as client:
        kinds = client.get("/v2/models/kinds").json()
        scale = client.get("/v2/models/scale").json()
        assert kinds["outputs"] == []  # a dict's keys come from the model...
        client.post("/v2/models/kinds/infer", json={"inputs": kinds_inputs(1)})
        answered = client.get("/v2/models/kinds").json()  # ...and are listed once it has answered
    assert kinds["platform"] == "fnserve_python" and "versions" not in kinds
    assert kinds["inputs"] == [
        {"name": "count", "datatype": "INT64", "shape": [-1]},
        {"name": "ratio", "datatype": "FP64", "shape": [-1]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1]},
        {"name": "season", "datatype": "BYTES", "shape": [-1]},
        {"name": "vector", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "photo", "datatype": "BYTES", "shape": [-1], "parameters": {"content_type": "image"}},
        {"name": "note", "datatype": "BYTES", "shape": [-1]},
        {"name": "ratio_or_nan", "datatype": "FP64", "shape": [-1]},
    ]
    assert {"name": "photo_mean", "datatype": "FP64", "shape": [-1]} in answered["outputs"]
    assert len(answered["outputs"]) == 8
    assert scale["inputs"][0] == {"name": "matrix", "datatype": "FP32", "shape": [-1, 2, 3]}
    assert scale["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1, 2, 3]}]


# --- inference in JSON ------------------------------------------------------------------------------


def test_the_specs_example_shape_of_request_and_response(serve: Any) -> None:
    request = {
        "id": "42",
        "parameters": {"custom": "ignored", "priority": 1},
        "inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2.5, 3]}],
        "outputs": [{"name": "prediction"}],
    }
    with serve("double") as client:
        response = client.post("/v2/models/double/infer", json=request)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {
        "model_name": "double",
        "id": "42",
        "outputs": [{"name": "prediction", "datatype": "FP64", "shape": [3], "data": [2.0, 5.0, 6.0]}],
    }


def test_tensor_data_may_be_flat_or_nested(serve: Any) -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    with serve("scale") as client:
        answers = [
            client.post(
                "/v2/models/scale/infer",
                json={"inputs": [{"name": "matrix", "shape": [2, 2, 3], "datatype": "FP32", "data": data}]},
            ).json()
            for data in (matrix.reshape(-1).tolist(), matrix.tolist())
        ]
    for answer in answers:
        (out,) = answer["outputs"]
        assert out["shape"] == [2, 2, 3] and out["datatype"] == "FP32"
        assert out["data"] == (matrix * 2).reshape(-1).tolist()


def test_every_input_kind_and_one_output_per_dict_key(serve: Any) -> None:
    with serve("kinds") as client:
        response = client.post("/v2/models/kinds/infer", json={"inputs": kinds_inputs(2)})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["count"] == {"name": "count", "datatype": "INT64", "shape": [2], "data": [0, 1]}
    assert outputs["photo_mean"]["data"] == [20.0, 20.0] and outputs["summer"]["data"] == [1.0, 1.0]
    assert outputs["vector_sum"]["datatype"] == "FP32" and outputs["note_len"]["data"] == [4.0, 4.0]


def test_requested_outputs_are_a_subset_in_the_requested_order(serve: Any) -> None:
    wanted = [{"name": "batch"}, {"name": "count"}]
    with serve("kinds") as client:
        response = client.post("/v2/models/kinds/infer", json={"inputs": kinds_inputs(), "outputs": wanted})
        unknown = client.post(
            "/v2/models/kinds/infer", json={"inputs": kinds_inputs(), "outputs": [{"name": "nope"}]}
        )
    assert [o["name"] for o in response.json()["outputs"]] == ["batch", "count"]
    assert error_of(unknown, 400).startswith("outputs: 'nope' is not an output of 'kinds'")


def test_a_pinned_version_answers_with_model_version(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [3]}]}
    with serve("weighted") as client:
        pinned = client.post("/v2/models/weighted/versions/1/infer", json=body)
        other = client.post("/v2/models/weighted/versions/9/infer", json=body)
    assert pinned.json()["model_version"] == "1" and pinned.json()["outputs"][0]["data"] == [6.0]
    assert "version '9' of 'weighted' is not served here" in error_of(other, 404)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "request body: expected an inference request object"),
        ({"inputs": []}, "inputs: expected a non-empty list of input tensors"),
        ({"id": 42, "inputs": []}, "id: expected a string"),
        (
            {"inputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [1]}]},
            "y: unknown input; expected x; x: missing required input (float)",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}]},
            "x: datatype 'FP128' is not",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["1"]}]},
            "x: datatype BYTES does not suit this input; expected a numeric datatype",
        ),
        (
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1]}]},
            "x: shape [2] needs 2 values, got 1",
        ),
        (
            {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP64", "data": [1]}]},
            "x: shape must be a list of",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]},
            "x: expected shape [batch] or [batch, 1], got [1, 2]",
        ),
        (
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, None]}]},
            "x: data must be numbers",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": ["a"]}]},
            "x: data must be numbers",
        ),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64"}]}, "x: no data"),
        (
            {"inputs": [{"name": "x", "shape": [0], "datatype": "FP64", "data": []}]},
            "x: expected at least one row",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], "outputs": "all"},
            "outputs: expected a list of objects with a name",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_input(serve: Any, body: Any, message: str) -> None:
    with serve("double") as client:
        response = client.post(
            "/v2/models/double/infer", content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        )
    assert error_of(response, 400).startswith(message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"name": "count", "shape": [2], "datatype": "INT64", "data": [1, 101]},
            "count[1]: must be <= 100, got 101",
        ),
        (
            {"name": "season", "shape": [2], "datatype": "BYTES", "data": ["summer", "spring"]},
            "season[1]: expected one of winter, summer, got 'spring'",
        ),
        (
            {"name": "flag", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            "flag: datatype INT64 does not suit this input; expected BOOL",
        ),
        (
            {"name": "vector", "shape": [2, 4], "datatype": "FP32", "data": [0] * 8},
            "vector[0]: expected shape [3], got [4]",
        ),
        (
            {"name": "photo", "shape": [2], "datatype": "BYTES", "data": ["aGk=", "%%"]},
            "photo[0]: not a decodable image (expected JPEG, PNG, GIF, BMP or WebP); "
            "photo[1]: not valid base64",
        ),
        (
            {"name": "count", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
            "count: batch size 3 differs from the other inputs' 2",
        ),
    ],
)
def test_invalid_values_name_the_input_and_row(serve: Any, change: dict[str, Any], message: str) -> None:
    inputs = [change if t["name"] == change["name"] else t for t in kinds_inputs(2)]
    if change["name"] == "count":  # give it last, so the batch size to compare with is known
        inputs = [*inputs[1:], inputs[0]]
    with serve("kinds") as client:
        response = client.post("/v2/models/kinds/infer", json={"inputs": inputs})
    assert error_of(response, 400).startswith(message)


def test_missing_required_input_and_malformed_json(serve: Any) -> None:
    with serve("kinds", "double") as client:
        missing = client.post("/v2/models/kinds/infer", json={"inputs": kinds_inputs(1)[1:]})
        broken = client.post("/v2/models/double/infer", content=b"{not json")
        unknown = client.post("/v2/models/nope/infer", json={"inputs": []})
    assert error_of(missing, 400) == "count: missing required input (int)"
    assert error_of(broken, 400).startswith("request body is not valid JSON")
    assert error_of(unknown, 404).startswith("no function named 'nope'")


def test_the_readmes_v2_example_answers_as_shown(tmp_path: Path) -> None:
    from tests.test_readme import README, python_block, serve_source, wait_ready

    example = README[README.index("curl -X POST http://127.0.0.1:8080/v2/models/fare/infer") :]
    request = example[example.index("-d '") + 4 : example.index("'\n")]
    shown = example[example.index("# {") + 2 : example.index("\n", example.index("# {"))]
    with serve_source(tmp_path, "fare", python_block("# functions/fare/predict.py\nfrom typing")) as client:
        wait_ready(client)
        response = client.post("/v2/models/fare/infer", content=request)
    assert response.status_code == 200 and response.json() == orjson.loads(shown)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b'{"inputs": null}',
        b'{"inputs": [null]}',
        b'{"inputs": [{"name": 1}]}',
        b'{"inputs": [{"name": "x", "shape": "1", "datatype": "FP64", "data": [1]}]}',
        b'{"inputs": [{"name": "x", "shape": [1, 1099511627776], "datatype": "FP64", "data": [1]}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": {"a": 1}}]}',
        b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [[1, [2]]]}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1], "parameters": 3}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], "parameters": []}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], "outputs": [{}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", '
        b'"parameters": {"binary_data_size": -1}}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", '
        b'"parameters": {"binary_data_size": 8}}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1e400]}]}',
    ],
)
def test_malformed_requests_never_cause_a_500(serve: Any, body: bytes) -> None:
    with serve("double", "kinds") as client:
        for target in ("double", "kinds"):
            response = client.post(f"/v2/models/{target}/infer", content=body)
            assert 400 <= response.status_code < 500, (target, response.text)
            assert isinstance(response.json()["error"], str)
