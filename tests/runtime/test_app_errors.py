"""Every error of the HTTP surface: its status, and a JSON body {"error": ...} naming the field."""

from __future__ import annotations

import base64
import gzip
import io
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image as PILImage

JSON = {"content-type": "application/json"}
KINDS_QUERY = "count=3&ratio=0.5&flag=true&season=summer&vector=1,2,3"


def png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


def kinds_instance(**change: Any) -> dict[str, Any]:
    good = {"count": 3, "ratio": 0.5, "flag": True, "season": "summer", "vector": [1, 2, 3]}
    return {**good, "photo": base64.b64encode(png()).decode(), **change}


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    return str(body["error"])


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        (kinds_instance(count="three"), "count: expected an integer, got string 'three'"),
        (kinds_instance(count=101), "count: must be <= 100, got 101"),
        ({k: v for k, v in kinds_instance().items() if k != "season"}, "season: missing required input"),
        (kinds_instance(colour="red"), "colour: unknown input; expected count, ratio, flag"),
        (kinds_instance(vector=[1, 2]), "vector: expected shape [3], got [2]"),
        (kinds_instance(season="spring"), "season: expected one of winter, summer, got 'spring'"),
        (kinds_instance(photo=base64.b64encode(b"no image").decode()), "photo: not a decodable image"),
        (kinds_instance(photo="%%%"), "photo: not valid base64"),
    ],
)
def test_invalid_input_is_422_naming_the_field(serve: Any, instance: dict[str, Any], message: str) -> None:
    with serve("kinds") as client:
        assert error_of(client.post("/function/kinds", json=instance), 422).startswith(message)


def test_invalid_instance_in_a_batch_is_named_with_its_index(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", json={"instances": [{"x": 1}, {"x": 2}, {"x": "a"}]})
    assert error_of(response, 422).startswith("instances[2].x: expected a number")


@pytest.mark.parametrize(
    ("payload", "message"),
    [({"instances": []}, "instances: expected a non-empty list"),
     ({"instances": {"x": 1}}, "instances: expected a non-empty list"),
     ({"instances": [{"x": 1}], "extra": 1}, "unexpected keys beside 'instances': ['extra']"),
     ({"instances": [{"x": 1}, 3]}, "instances[1]: expected a JSON object of inputs, got number 3"),
     ([1, 2], "body: expected a JSON object")],
)  # fmt: skip
def test_malformed_batches_are_422(serve: Any, payload: Any, message: str) -> None:
    with serve("double") as client:
        assert error_of(client.post("/function/double", json=payload), 422).startswith(message)


@pytest.mark.parametrize(
    ("query", "message"),
    [("x=nan", "x: expected a finite number, got nan"), ("x=abc", "x: expected a number, got 'abc'"),
     ("", "x: missing required input"), ("x=1&y=2", "y: unknown parameter; expected x"),
     ("x=1&x=2", "x: given more than once")],
)  # fmt: skip
def test_invalid_query_is_422_naming_the_parameter(serve: Any, query: str, message: str) -> None:
    with serve("double") as client:
        assert error_of(client.get(f"/function/double?{query}"), 422).startswith(message)


def test_nan_is_accepted_where_the_function_allows_it(serve: Any) -> None:
    query = f"{KINDS_QUERY}&ratio_or_nan=nan"
    with serve("kinds") as client:
        response = client.post(
            f"/function/kinds?{query}", content=png(), headers={"content-type": "image/png"}
        )
    assert response.status_code == 200, response.text


def test_undecodable_raw_image_is_422_naming_the_field(serve: Any) -> None:
    with serve("kinds") as client:
        response = client.post(
            f"/function/kinds?{KINDS_QUERY}", content=b"GIF89a broken", headers={"content-type": "image/gif"}
        )
    assert error_of(response, 422).startswith("photo: not a decodable image")


def test_raw_image_for_a_function_without_an_image_is_415(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double?x=1", content=png(), headers={"content-type": "image/png"})
    assert "does not take one image" in error_of(response, 415)


def test_batch_over_10000_instances_is_413(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", json={"instances": [{"x": 1}] * 10_001})
    assert error_of(response, 413) == "instances: 10001 instances is over the limit of 10000"


def test_body_over_the_limit_with_content_length_is_413(serve: Any) -> None:
    body = b'{"x": 1}' + b" " * 200
    with serve("double", max_body_bytes=100) as client:
        response = client.post("/function/double", content=body, headers=JSON)
    assert error_of(response, 413) == f"request body of {len(body)} bytes is over the limit of 100 bytes"


def test_streamed_body_over_the_limit_is_413(serve: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"x": 1'
        for _ in range(10):
            yield b" " * 50
        yield b"}"

    with serve("double", max_body_bytes=100) as client:
        response = client.post("/function/double", content=chunks(), headers=JSON)
    assert response.request.headers["transfer-encoding"] == "chunked"  # no Content-Length was sent
    assert error_of(response, 413) == "request body is over the limit of 100 bytes"


def test_streamed_body_within_the_limit_works(serve: Any) -> None:
    with serve("double", max_body_bytes=100) as client:
        response = client.post("/function/double", content=iter([b'{"x"', b": 3}"]), headers=JSON)
    assert response.status_code == 200 and response.json() == {"predictions": [6.0]}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_body_that_inflates_over_the_limit_is_413(serve: Any, encoding: str) -> None:
    body = b'{"x": 1' + b" " * 100_000 + b"}"
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    assert len(packed) < 1000
    with serve("double", max_body_bytes=1000) as client:
        response = client.post(
            "/function/double", content=packed, headers={**JSON, "content-encoding": encoding}
        )
    assert error_of(response, 413) == "inflated request body is over the limit of 1000 bytes"


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"this is not gzip", "request body is not valid gzip data"),
     (gzip.compress(b'{"x": 1}')[:-12], "request body is truncated gzip data")],
)  # fmt: skip
def test_bad_gzip_is_400(serve: Any, body: bytes, message: str) -> None:
    with serve("double") as client:
        response = client.post("/function/double", content=body, headers={**JSON, "content-encoding": "gzip"})
    assert error_of(response, 400) == message


def test_unknown_content_encoding_is_415(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", content=b"{}", headers={**JSON, "content-encoding": "br"})
    assert "Content-Encoding 'br' is not supported" in error_of(response, 415)


def test_urlencoded_form_is_415(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", data={"x": "1"})
    assert error_of(response, 415).startswith("form bodies are not accepted")


def test_multipart_form_is_415(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", files={"x": ("x.txt", b"1")})
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert error_of(response, 415).startswith("form bodies are not accepted")


def test_text_plain_is_415(serve: Any) -> None:
    with serve("double") as client:
        response = client.post(
            "/function/double", content=b'{"x": 1}', headers={"content-type": "text/plain"}
        )
    assert error_of(response, 415).startswith("Content-Type 'text/plain' is not accepted")


@pytest.mark.parametrize(("body", "message"), [(b"{not json", "request body is not valid JSON"),
                                              (b"", "request body is empty; expected JSON")])  # fmt: skip
def test_invalid_json_is_400(serve: Any, body: bytes, message: str) -> None:
    with serve("double") as client:
        assert error_of(client.post("/function/double", content=body, headers=JSON), 400).startswith(message)


def test_unknown_function_is_404(serve: Any) -> None:
    with serve("double") as client:
        response = client.get("/function/triple?x=1")
    assert error_of(response, 404) == "no function named 'triple'; see GET /functions"


def test_unknown_route_is_404_json(serve: Any) -> None:
    with serve("double") as client:
        assert error_of(client.get("/nowhere"), 404) == "no route for GET /nowhere"


def test_wrong_method_is_405_json(serve: Any) -> None:
    with serve("double") as client:
        assert "method DELETE is not allowed" in error_of(client.delete("/function/double"), 405)


def test_user_function_raising_is_500_without_details_but_with_a_request_id(serve: Any) -> None:
    with serve("broken") as client:
        assert client.get("/function/broken?x=1").status_code == 200
        response = client.get("/function/broken?x=-1")
    message = error_of(response, 500)
    request_id = response.headers["x-request-id"]
    assert message == f"function 'broken' failed: RuntimeError (request id {request_id})"
    assert "secret" not in response.text and "Traceback" not in response.text and "/home" not in response.text


def test_a_failing_batch_fails_every_instance_in_it(serve: Any) -> None:
    with serve("broken") as client:
        response = client.post("/function/broken", json={"instances": [{"x": 1}, {"x": -1}]})
    assert "failed: RuntimeError" in error_of(response, 500)


def test_output_that_cannot_be_serialized_is_a_json_500_with_a_request_id(serve: Any, tmp_path: Any) -> None:
    folder = tmp_path / "unjson"
    folder.mkdir()
    (folder / "predict.py").write_text(
        "from fnserve import predict\n\n\n"
        "@predict\ndef unjson(x: float) -> list:\n    return [{1} for _ in x]  # a set: not JSON\n"
    )
    with serve(str(folder)) as client:
        response = client.get("/function/unjson?x=1")
        metrics = client.get("/metrics").text
    assert error_of(response, 500) == f"internal error (request id {response.headers['x-request-id']})"
    assert 'fnserve_requests_total{function="unjson",status="500"} 1.0' in metrics
