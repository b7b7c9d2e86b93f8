"""The HTTP surface, in-process: predictions by GET and POST, listings, health and metrics.

Error responses are in test_app_errors.py, checkpoint versions in test_app_versions.py.
"""

from __future__ import annotations

import base64
import gzip
import io
import zlib
from typing import Any

import pytest
from PIL import Image as PILImage

KINDS_QUERY = "count=3&ratio=0.5&flag=true&season=summer&vector=1,2,3"


def png(width: int = 4, height: int = 4, color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def kinds_instance(**change: Any) -> dict[str, Any]:
    return {
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "season": "summer",
        "vector": [1, 2, 3],
        "photo": base64.b64encode(png()).decode(),
        **change,
    }


def test_get_with_query_parameters(serve: Any) -> None:
    with serve("double") as client:
        response = client.get("/function/double?x=2.5")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": [5.0]}
    assert "x-model-version" not in response.headers  # no checkpoint, no version


def test_get_fills_defaults_for_scalar_functions(serve: Any) -> None:
    with serve("scalar") as client:
        assert client.get("/function/scalar?word=ab").json() == {"predictions": ["abab"]}
        assert client.get("/function/scalar?word=ab&times=3").json() == {"predictions": ["ababab"]}


def test_post_one_instance(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", json={"x": 4})
    assert response.status_code == 200 and response.json() == {"predictions": [8.0]}


@pytest.mark.parametrize("n", [1, 10_000])
def test_post_a_batch_keeps_the_order(serve: Any, n: int) -> None:
    with serve("double") as client:
        response = client.post("/function/double", json={"instances": [{"x": i} for i in range(n)]})
    assert response.status_code == 200
    assert response.json() == {"predictions": [2.0 * i for i in range(n)]}


def test_every_input_kind_decodes_from_json(serve: Any) -> None:
    with serve("kinds") as client:
        response = client.post(
            "/function/kinds", json={"instances": [kinds_instance(), kinds_instance(count=7, note="hello")]}
        )
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first == {
        "count": 3,
        "ratio": 0.5,
        "flag": 1.0,
        "summer": 1.0,
        "vector_sum": 6.0,
        "photo_mean": 20.0,
        "note_len": 4.0,
        "batch": 2.0,
    }
    assert (second["count"], second["note_len"]) == (7, 5.0)


def test_raw_image_bytes_with_the_other_inputs_as_query_parameters(serve: Any) -> None:
    with serve("kinds") as client:
        response = client.post(
            f"/function/kinds?{KINDS_QUERY}", content=png(9, 7), headers={"content-type": "image/png"}
        )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["photo_mean"] == 20.0 and prediction["vector_sum"] == 6.0 and prediction["count"] == 3


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_json_body(serve: Any, encoding: str) -> None:
    body = b'{"instances": [{"x": 1}, {"x": 2}]}'
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    with serve("double") as client:
        response = client.post(
            "/function/double",
            content=packed,
            headers={"content-type": "application/json", "content-encoding": encoding},
        )
    assert response.status_code == 200 and response.json() == {"predictions": [2.0, 4.0]}


def test_request_id_is_echoed_or_made(serve: Any) -> None:
    with serve("double") as client:
        given = client.get("/function/double?x=1", headers={"x-request-id": "abc-123"})
        made = client.get("/function/double?x=1")
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 16


def test_healthz_is_live_before_models_load(serve: Any) -> None:
    with serve("weighted", wait_ready=False) as client:  # no checkpoint: never ready
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"live": True}
        assert client.get("/v2/health/live").status_code == 200


def test_readyz_when_loaded(serve: Any) -> None:
    with serve("double", "scalar") as client:
        response = client.get("/readyz")
        assert client.get("/v2/health/ready").status_code == 200
    assert response.status_code == 200
    functions = {"double": True, "scalar": True}
    assert response.json() == {"ready": True, "draining": False, "functions": functions}


def test_functions_lists_schemas_and_versions(serve: Any) -> None:
    with serve("double", "scalar") as client:
        response = client.get("/functions")
    assert response.status_code == 200
    double, scalar = response.json()["functions"]
    assert double["name"] == "double" and double["ready"] is True
    assert double["inputs"] == [{"name": "x", "type": "float", "required": True}]
    assert double["output"] == {"type": "float"}
    assert (double["checkpoint"], double["version"], double["available_versions"]) == (None, None, [])
    assert scalar["inputs"][1] == {"name": "times", "type": "int", "required": False, "default": 2}


def test_metrics_are_prometheus_text(serve: Any) -> None:
    with serve("double") as client:
        client.get("/function/double?x=1")
        client.get("/function/double?x=oops")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE fnserve_requests_total counter" in text
    assert 'fnserve_requests_total{function="double",status="200"} 1.0' in text
    assert 'fnserve_requests_total{function="double",status="422"} 1.0' in text
    assert 'fnserve_function_ready{function="double"} 1.0' in text
    assert 'fnserve_instances_total{function="double",version="0"} 1.0' in text  # no checkpoint: 0
