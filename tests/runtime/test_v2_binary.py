"""Triton's Binary Tensor Data extension of the v2 protocol (server/docs/protocol/extension_binary_data.md):
tensors after the JSON header, sized by Inference-Header-Content-Length and binary_data_size."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from tests.runtime.test_v2 import error_of, kinds_inputs, png


def binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    text = orjson.dumps(header)
    return text + b"".join(blobs), {
        "inference-header-content-length": str(len(text)),
        "content-type": "application/octet-stream",
    }


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def split_binary_response(response: Any) -> tuple[dict[str, Any], bytes]:
    size = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:size]), response.content[size:]


def test_binary_inputs_and_outputs(serve: Any) -> None:
    x = np.array([1.0, 2.5, -4.0], dtype="<f4")
    header = {
        "inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_request(header, x.tobytes())
    with serve("double") as client:
        response = client.post("/v2/models/double/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    head, raw = split_binary_response(response)
    (out,) = head["outputs"]
    assert out == {
        "name": "prediction",
        "datatype": "FP64",
        "shape": [3],
        "parameters": {"binary_data_size": 24},
    }
    assert np.frombuffer(raw, "<f8").tolist() == [2.0, 5.0, -8.0]


def test_binary_bytes_for_strings_and_images_mixed_with_json(serve: Any) -> None:
    seasons = length_prefixed(b"summer", b"winter")
    photos = length_prefixed(png(), png((0, 0, 0)))
    inputs = kinds_inputs(2)
    inputs[3] = {
        "name": "season",
        "shape": [2, 1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(seasons)},
    }
    inputs[5] = {
        "name": "photo",
        "shape": [2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(photos)},
    }
    header = {"inputs": inputs, "outputs": [{"name": "photo_mean", "parameters": {"binary_data": True}},
                                            {"name": "summer"}]}  # fmt: skip
    body, headers = binary_request(header, seasons, photos)
    with serve("kinds") as client:
        response = client.post("/v2/models/kinds/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    head, raw = split_binary_response(response)
    photo_mean, summer = head["outputs"]
    assert photo_mean["parameters"] == {"binary_data_size": 16} and np.frombuffer(raw, "<f8").tolist() == [
        20.0,
        0.0,
    ]
    assert summer["data"] == [1.0, 0.0]  # JSON unless asked for binary


def test_uint8_pixels_are_an_image_input(serve: Any) -> None:
    inputs = kinds_inputs(1)
    pixels = np.full((1, 4, 4, 3), 7, np.uint8)
    inputs[5] = {
        "name": "photo",
        "shape": [1, 4, 4, 3],
        "datatype": "UINT8",
        "parameters": {"binary_data_size": 48},
    }
    body, headers = binary_request({"inputs": inputs, "outputs": [{"name": "photo_mean"}]}, pixels.tobytes())
    with serve("kinds") as client:
        response = client.post("/v2/models/kinds/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [7.0]


@pytest.mark.parametrize(
    ("n", "size", "blob", "header_length", "message"),
    [
        (3, 12, b"\x00" * 12, None, "x: binary_data_size 12 does not match shape [3] of FP64 (24 bytes)"),
        (3, 24, b"\x00" * 8, None, "x: binary_data_size 24 is more than the 8 bytes of binary data left"),
        (2, 16, b"\x00" * 20, None, "binary tensor data: 4 bytes more than the inputs declare"),
        (
            2,
            16,
            b"\x00" * 16,
            "99999",
            "Inference-Header-Content-Length '99999' is not a length within the body",
        ),
    ],
)
def test_binary_framing_errors_are_400(
    serve: Any, n: int, size: int, blob: bytes, header_length: str | None, message: str
) -> None:
    tensor = {"name": "x", "shape": [n], "datatype": "FP64", "parameters": {"binary_data_size": size}}
    body, headers = binary_request({"inputs": [tensor]}, blob)
    if header_length is not None:
        headers["inference-header-content-length"] = header_length
    with serve("double") as client:
        response = client.post("/v2/models/double/infer", content=body, headers=headers)
    assert error_of(response, 400) == message
