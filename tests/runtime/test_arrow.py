"""Arrow IPC bodies: decoding every column type to checked columns, encoding outputs, and over HTTP."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image as PILImage

from fnserve.runtime.errors import BadRequest, PayloadTooLarge, ValidationError
from fnserve.runtime.loader import discover
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.protocols import arrow
from tests.runtime.test_columns import PICTURED, SCHEMA

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}


def stream(table: pa.Table | dict[str, Any], *, batches: int = 1) -> bytes:
    table = table if isinstance(table, pa.Table) else pa.table(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=max(1, -(-table.num_rows // batches))):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def read(body: bytes) -> pa.Table:
    return pa.ipc.open_stream(body).read_all()


def png(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(out, format="PNG")
    return out.getvalue()


def demo_table(n: int = 3, **change: Any) -> dict[str, Any]:
    base = {
        "count": pa.array(range(n), pa.int32()),
        "ratio": pa.array([0.5] * n, pa.float32()),
        "flag": pa.array([True] * n),
        "season": pa.array(["summer", "winter", "summer"][:n] * (n // 3 + 1))[:n].dictionary_encode(),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(3 * n, dtype=np.float32)), 3),
    }
    return {**base, **change}


# --- decoding ---------------------------------------------------------------------------------------


def test_every_column_type_decodes_to_the_functions_columns() -> None:
    columns, n = arrow.decode(SCHEMA, stream(demo_table(note=pa.array(["a", None, "c"]))))
    assert n == 3
    assert columns["count"].dtype == np.int64 and columns["count"].tolist() == [0, 1, 2]
    assert columns["ratio"].dtype == np.float64
    assert columns["flag"].tolist() == [True] * 3
    assert columns["season"].dtype == object and columns["season"].tolist() == ["summer", "winter", "summer"]
    assert columns["vector"].dtype == np.float32 and columns["vector"].shape == (3, 3)
    assert columns["note"].tolist() == ["a", "none", "c"]  # a null takes the default
    assert columns["maybe"].tolist() == [0.0] * 3


def test_numbers_are_not_copied() -> None:
    body = stream({"count": pa.array([1, 2], pa.int64()), **demo_table(2, ratio=pa.array([1.0, 2.0]))})
    columns, _ = arrow.decode(SCHEMA, body)
    assert not columns["ratio"].flags.owndata and not columns["ratio"].flags.writeable
    assert not columns["vector"].flags.owndata


def nested(x: np.ndarray, fixed: bool) -> pa.Array:
    """``x`` (n, d1, d2, ...) as nested Arrow lists: fixed-size, or with offsets."""
    array: pa.Array = pa.array(x.reshape(-1))
    for size in reversed(x.shape[1:]):
        if fixed:
            array = pa.FixedSizeListArray.from_arrays(array, size)
        else:
            array = pa.ListArray.from_arrays(pa.array(np.arange(0, len(array) + 1, size), pa.int32()), array)
    return array


@pytest.mark.parametrize("fixed", [True, False])
@pytest.mark.parametrize(("start", "length"), [(0, 6), (2, 3), (5, 1)])
def test_tensors_are_the_rows_in_view_of_a_sliced_column(fixed: bool, start: int, length: int) -> None:
    x = np.arange(6 * 2 * 3, dtype=np.int16).reshape(6, 2, 3)
    got = arrow._list_to_numpy(nested(x, fixed).slice(start, length), "t")
    np.testing.assert_array_equal(got, x[start : start + length])


def test_several_record_batches_make_one_request() -> None:
    columns, n = arrow.decode(SCHEMA, stream(demo_table(9), batches=3))
    assert n == 9 and columns["count"].tolist() == list(range(9))


def test_nested_lists_become_tensors_and_images_decode_from_binary() -> None:
    ids = pa.array([[1, 2], [3, 4]], pa.list_(pa.int64()))
    small = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4], pa.uint8()), 2)
    columns, _ = arrow.decode(
        PICTURED, stream({"photo": pa.array([png(), png()]), "ids": ids, "small": small})
    )
    assert columns["photo"].shape == (2, 4, 6, 3) and columns["ids"].tolist() == [[1, 2], [3, 4]]
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * 4 * 6 * 3, np.uint8)), 3)
    pixels = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pixels, 6), 4)
    columns, _ = arrow.decode(PICTURED, stream({"photo": pixels, "ids": ids, "small": small}))
    assert columns["photo"].shape == (2, 4, 6, 3)  # raw pixels, no decoding
    # Only encoded images send decoding to a worker thread; pixels are taken on the spot.
    assert arrow.has_encoded_images(PICTURED, read(stream({"photo": pa.array([png(), png()]), "ids": ids})))
    assert not arrow.has_encoded_images(PICTURED, read(stream({"photo": pixels, "ids": ids})))
    assert not arrow.has_encoded_images(SCHEMA, read(stream({"count": pa.array([1])})))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": pa.array([1, 200, 3])}, "count[1]: must be <= 100, got 200"),
        ({"count": pa.array([1, None, 3], pa.int64())}, "count[1]: missing required input (int): null"),
        ({"count": pa.array(["1", "2", "3"])}, "count: expected an Arrow column of a number, got string"),
        ({"ratio": pa.array([0.5, float("nan"), 1.0])}, "ratio[1]: expected a finite number, got nan"),
        ({"flag": pa.array([1, 0, 1])}, "flag: expected an Arrow column of bool, got int64"),
        ({"season": pa.array(["winter", "summer", "spring"])}, "season[2]: expected one of winter, summer"),
        (
            {"season": pa.array(["winter", "spring", "x"]).dictionary_encode()},
            "season[1]: expected one of winter, summer, got 'spring'",
        ),
        (
            {"vector": pa.array([[1, 2, 3], [1, 2], [1, 2, 3]], pa.list_(pa.float64()))},
            "vector[1]: tensor rows must all have the same shape",
        ),
        (
            {"vector": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6)), 2)},
            "vector[0]: expected shape [3]",
        ),
        (
            {"vector": pa.array([1.0, 2.0, 3.0])},
            "vector: expected an Arrow column of a list (tensor), got double",
        ),
        ({"colour": pa.array([1, 2, 3])}, "colour: unknown input; expected count"),
        ({"flag": None}, "flag: missing required input (bool)"),
    ],
)
def test_a_bad_column_is_422_naming_the_input_and_row(change: dict[str, Any], message: str) -> None:
    table = {k: v for k, v in demo_table(**change).items() if v is not None}
    with pytest.raises(ValidationError) as info:
        arrow.decode(SCHEMA, stream(table))
    assert info.value.message.startswith(message), info.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty; expected an Arrow IPC stream"),
        (b"not arrow at all", "request body is not a valid Arrow IPC stream"),
        (stream({"x": [1.0]})[:-20], "request body is not a valid Arrow IPC stream"),
    ],
)
def test_bytes_that_are_not_arrow_are_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        arrow.decode(SCHEMA, body)
    assert info.value.message.startswith(message) and info.value.status == 400


def test_row_limits() -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 10000 rows"):
        arrow.decode(SCHEMA, stream({"count": pa.array(np.zeros(10_001, np.int64))}))
    with pytest.raises(ValidationError, match="Arrow body: expected at least one row"):
        arrow.decode(SCHEMA, stream(pa.table({"count": pa.array([], pa.int64())})))


# --- encoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (np.array([0.5, 1.5]), {"prediction": [0.5, 1.5]}),
        (["a", "b"], {"prediction": ["a", "b"]}),
        ({"x": np.array([1, 2]), "y": np.array([0.5, 0.25])}, {"x": [1, 2], "y": [0.5, 0.25]}),
        ([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}], {"x": [1, 2], "y": ["a", "b"]}),
        (np.arange(4, dtype=np.float32).reshape(2, 2), {"prediction": [[0.0, 1.0], [2.0, 3.0]]}),
    ],
)
def test_outputs_become_one_arrow_column_each(result: Any, expected: dict[str, Any]) -> None:
    table = read(arrow.encode(Outputs.of(result, 2, "f")))
    assert table.to_pydict() == expected


def test_the_answer_is_the_stream_pyarrows_writer_makes() -> None:
    outputs = Outputs.of({"x": np.array([1, 2]), "y": ["a", "b"], "t": np.zeros((2, 3), np.float32)}, 2, "f")
    table = pa.table({name: arrow.to_arrow(column) for name, column in arrow.output_columns(outputs).items()})
    assert arrow.encode(outputs) == stream(table)


def test_tensor_outputs_are_fixed_size_lists() -> None:
    table = read(arrow.encode(Outputs.of(np.zeros((2, 3, 4), np.float32), 2, "f")))
    assert table.schema.field("prediction").type == pa.list_(pa.list_(pa.float32(), 4), 3)


@pytest.mark.parametrize(
    ("accept", "default", "arrow_wanted"),
    [
        ("", False, False),
        ("", True, True),
        ("*/*", True, True),
        ("application/json", True, False),
        ("application/vnd.apache.arrow.stream", False, True),
        ("application/json;q=0.5, application/vnd.apache.arrow.stream", False, True),
        ("application/json, application/vnd.apache.arrow.stream;q=0.2", True, False),
        ("application/vnd.apache.arrow.stream;q=0", True, False),
    ],
)
def test_accept_decides_the_answers_format(accept: str, default: bool, arrow_wanted: bool) -> None:
    assert arrow.accepts_arrow(accept, default) is arrow_wanted


# --- over HTTP --------------------------------------------------------------------------------------


def test_arrow_in_arrow_out(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", content=stream({"x": [1.0, 2.5]}), headers=ARROW)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert read(response.content).to_pydict() == {"prediction": [2.0, 5.0]}


def test_arrow_in_json_out_and_json_in_arrow_out(serve: Any) -> None:
    with serve("double") as client:
        as_json = client.post(
            "/function/double", content=stream({"x": [1.0]}), headers={**ARROW, "accept": "application/json"}
        )
        as_arrow = client.post(
            "/function/double", json={"instances": [{"x": 3}]}, headers={"accept": ARROW["content-type"]}
        )
        by_get = client.get("/function/double?x=4", headers={"accept": ARROW["content-type"]})
    assert as_json.json() == {"predictions": [2.0]}
    assert read(as_arrow.content).to_pydict() == {"prediction": [6.0]}
    assert read(by_get.content).to_pydict() == {"prediction": [8.0]}


def test_dict_and_tensor_outputs_over_http(serve: Any) -> None:
    table = demo_table(2, photo=pa.array([png(), png((0, 0, 0))]))
    matrix = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(12, np.float32)), 3)
    with serve("kinds", "scale") as client:
        kinds = client.post("/function/kinds", content=stream(table), headers=ARROW)
        scale = client.post(
            "/function/scale",
            content=gzip.compress(stream({"matrix": pa.FixedSizeListArray.from_arrays(matrix, 2)})),
            headers={**ARROW, "content-encoding": "gzip"},
        )
    assert kinds.status_code == 200, kinds.text
    got = read(kinds.content).to_pydict()
    assert got["photo_mean"] == [20.0, 0.0] and got["batch"] == [2.0, 2.0] and got["summer"] == [1.0, 0.0]
    assert scale.status_code == 200, scale.text
    assert read(scale.content).to_pydict() == {"prediction": [[[2.0] * 3] * 2] * 2}


def test_errors_over_http_are_json(serve: Any) -> None:
    with serve("double") as client:
        bad_bytes = client.post("/function/double", content=b"\x00garbage", headers=ARROW)
        bad_value = client.post("/function/double", content=stream({"x": [1.0, float("inf")]}), headers=ARROW)
        too_many = client.post("/function/double", content=stream({"x": np.zeros(10_001)}), headers=ARROW)
    assert bad_bytes.status_code == 400 and "not a valid Arrow IPC stream" in bad_bytes.json()["error"]
    assert bad_value.status_code == 422 and bad_value.json() == {
        "error": "x[1]: expected a finite number, got inf"
    }
    assert too_many.status_code == 413 and "10000" in too_many.json()["error"]


def test_a_recs_batch_decodes_from_arrow() -> None:
    schema = discover([Path(__file__).resolve().parents[2] / "functions" / "recs"])[0].schema
    n = 256
    body = stream({
        "user_country": pa.array(["NL", "DE"] * (n // 2)).dictionary_encode(),
        "user_language": pa.array(["nl", "de"] * (n // 2)),
        "day_of_week": pa.array(np.full(n, 5, np.int8)),
        "season": pa.array(["winter"] * n).dictionary_encode(),
        "hotel_price": pa.array(np.full(n, 120.0, np.float32)),
        "hotel_id": pa.array(np.arange(n)),
    })  # fmt: skip
    columns, rows = arrow.decode(schema, body)
    assert rows == n and columns["user_country"][:2].tolist() == ["NL", "DE"]
    assert columns["day_of_week"].dtype == np.int64 and columns["hotel_price"].dtype == np.float64


def test_the_readmes_arrow_example_answers_as_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from tests.test_readme import python_block, serve_source, wait_ready

    fare = python_block("# functions/fare/predict.py\nfrom typing")
    with serve_source(tmp_path, "fare", fare) as client:
        wait_ready(client)
        monkeypatch.setattr(httpx, "post", lambda url, **kwargs: client.post(url, **kwargs))
        scope: dict[str, Any] = {}
        exec(python_block("# an Arrow request from Python"), scope)
    assert scope["answer"].status_code == 200
    assert pa.ipc.open_stream(scope["answer"].content).read_all().to_pydict() == {"prediction": [335.0, 26.0]}


@pytest.mark.parametrize(
    "table",
    [
        pa.table({}),
        {"x": pa.array([1.5, None])},
        {"x": pa.array([[1.0]])},
        {"x": pa.array([{"a": 1.0}])},
        {"x": pa.array([b"1"])},
        {"x": pa.array([1, 2], pa.int8()).dictionary_encode()},
        {"x": pa.array(["1"]).dictionary_encode()},
        {"ratio_or_nan": pa.array([1, None], pa.int64()), "count": pa.array([1, 2])},
        {"note": pa.array(["a", None]).dictionary_encode(), "count": pa.array([1, 2])},
        {"vector": pa.array([[1.0, None, 2.0]]), "count": pa.array([1])},
        {"vector": pa.array([[[1.0, 2.0, 3.0]]]), "count": pa.array([1])},
        {"photo": pa.array([b"nope"]), "count": pa.array([1])},
        {"photo": pa.array([[1, 2, 3]], pa.list_(pa.uint8())), "count": pa.array([1])},
        {"season": pa.array([1, 2]), "count": pa.array([1, 2])},
        {"count": pa.array([1.5, 2.0], pa.float16())},
    ],
)
def test_odd_arrow_bodies_never_cause_a_500(serve: Any, table: Any) -> None:
    with serve("double", "kinds") as client:
        for target in ("double", "kinds"):
            response = client.post(f"/function/{target}", content=stream(table), headers=ARROW)
            assert 400 <= response.status_code < 500 or response.status_code == 200, (target, response.text)
            assert response.status_code == 200 or isinstance(response.json()["error"], str)
