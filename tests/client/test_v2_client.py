"""An existing v2 client, unmodified, against `fn serve`: Triton's ``tritonclient.http`` (a dev dependency)
over loopback, with its defaults (binary tensors both ways) and with JSON tensors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.support.serving import start_serve, stop

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    served = start_serve(tmp_path_factory.mktemp("v2"), FNS / "double", FNS / "kinds", FNS / "scale")
    triton = httpclient.InferenceServerClient(served.url.removeprefix("http://"))
    yield triton
    triton.close()
    stop(served)


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(out, format="PNG")
    return out.getvalue()


def tensor(name: str, array: np.ndarray, datatype: str, *, binary: bool = True) -> Any:
    infer_input = httpclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("double") and not client.is_model_ready("double", "3")
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("scale")
    assert meta["inputs"][0] == {"name": "matrix", "datatype": "FP32", "shape": [-1, 2, 3]}


@pytest.mark.parametrize("binary", [True, False])
def test_infer_with_the_clients_defaults_and_with_json(client: Any, binary: bool) -> None:
    x = tensor("x", np.array([[1.0], [2.5]], dtype=np.float32), "FP32", binary=binary)
    wanted = [httpclient.InferRequestedOutput("prediction", binary_data=binary)]
    result = client.infer("double", [x], outputs=wanted, request_id="r1")
    assert result.as_numpy("prediction").tolist() == [2.0, 5.0]
    assert result.get_response()["id"] == "r1"


def test_tensors_keep_their_shape(client: Any) -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    result = client.infer("scale", [tensor("matrix", matrix, "FP32")])
    assert result.as_numpy("prediction").reshape(2, 2, 3).tolist() == (matrix * 2).tolist()


def test_strings_images_and_dict_outputs(client: Any) -> None:
    inputs = [
        tensor("count", np.array([3, 4]), "INT64"),
        tensor("ratio", np.array([0.5, 1.0]), "FP64"),
        tensor("flag", np.array([True, False]), "BOOL"),
        tensor("season", np.array([b"summer", b"winter"], dtype=object), "BYTES"),
        tensor("vector", np.ones((2, 3), np.float32), "FP32", binary=False),
        tensor("photo", np.array([png((10, 20, 30)), png((0, 0, 0))], dtype=object), "BYTES"),
        tensor("note", np.array(["héllo", "x"], dtype=object), "BYTES"),
    ]
    result = client.infer("kinds", inputs)
    assert result.as_numpy("photo_mean").tolist() == [20.0, 0.0]
    assert result.as_numpy("summer").tolist() == [1.0, 0.0]
    assert result.as_numpy("count").tolist() == [3, 4]
    assert result.as_numpy("note_len").tolist() == [5.0, 1.0]


def test_errors_reach_the_client_with_their_status_and_message(client: Any) -> None:
    wrong = tensor("x", np.array([b"a"], dtype=object), "BYTES")
    with pytest.raises(InferenceServerException) as info:
        client.infer("double", [wrong])
    assert (
        info.value.status() == "400" and "x: datatype BYTES does not suit this input" in info.value.message()
    )
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [tensor("x", np.array([1.0]), "FP64")])
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException) as info:
        client.infer("double", [tensor("x", np.array([1.0, np.inf]), "FP64")])
    assert info.value.message() == "x[1]: expected a finite number, got inf"
