"""Open Inference Protocol (KServe v2) REST, with the Binary Tensor Data extension.

Existing v2 clients (Triton's ``tritonclient.http``, KServe's, MLServer's) work unmodified:

* ``GET /v2`` — server metadata; ``GET /v2/health/live``, ``/v2/health/ready`` — 200 or 400,
  empty bodies, as the spec says;
* ``GET /v2/models/{name}[/versions/{v}]`` — model metadata: inputs and outputs with v2
  datatypes, -1 for the batch dimension;
* ``GET /v2/models/{name}[/versions/{v}]/ready`` — 200 when loaded (and that version), else 400;
* ``POST /v2/models/{name}[/versions/{v}]/infer`` — one tensor per input, ``shape[0]`` rows.

A function's inputs are the model's inputs (strings and encoded images are ``BYTES``; in JSON
an image is base64 text). A dict output gives one output tensor per key; any other output is
one tensor named ``prediction``. Errors are ``{"error": ...}`` with 400 (bad request), 404
(unknown model or version) or 503 (not loaded yet).

    curl -X POST http://127.0.0.1:8080/v2/models/fare/infer -d '{"inputs": [
        {"name": "distance_km", "shape": [1], "datatype": "FP64", "data": [900]},
        {"name": "cabin", "shape": [1], "datatype": "BYTES", "data": ["business"]}]}'
    # {"model_name":"fare","outputs":[{"name":"prediction","datatype":"FP64","shape":[1],"data":[335.0]}]}
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve import __version__
from fnserve.runtime import columns, rules
from fnserve.runtime.errors import BadRequest, NotFound, Problems, ValidationError
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.http import JSON_TYPE, json_response, parse_json, read_body
from fnserve.runtime.protocols import arrow
from fnserve.runtime.protocols.common import endpoint, observed, predict, version_header
from fnserve.runtime.protocols.native import off_loop_if_images
from fnserve.runtime.protocols.v2tensors import (
    DTYPES,
    column,
    input_metadata,
    output_metadata,
    output_tensor,
    tensor_metadata,
)
from fnserve.runtime.schema import Schema
from fnserve.runtime.service import Runtime

SERVER_METADATA = {"name": "fnserve", "version": __version__, "extensions": ["binary_tensor_data"]}
PLATFORM = "fnserve_python"
HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = (*DTYPES, "BYTES")


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    columns: dict[str, Any]
    n: int
    outputs: list[tuple[str, bool]] | None  # requested (name, as binary); None: all
    binary_outputs: bool  # the request-wide default for outputs (binary_data_output)


def routes(runtime: Runtime) -> list[Route]:
    seen: dict[str, tuple[int | None, list[dict[str, Any]]]] = {}  # outputs observed, per version

    async def server_metadata(_: Request) -> Response:
        return json_response(SERVER_METADATA)

    async def live(_: Request) -> Response:
        return Response(status_code=200)

    async def ready(_: Request) -> Response:
        return Response(status_code=200 if runtime.ready else 400)

    async def model_ready(request: Request) -> Response:
        fn = runtime.function(request.path_params["name"])
        loaded, wanted = fn.loaded, request.path_params.get("version")
        ok = loaded is not None and (wanted is None or wanted == str(loaded.version))
        return Response(status_code=200 if ok else 400)

    async def model_metadata(request: Request) -> Response:
        fn = runtime.function(request.path_params["name"])
        loaded, wanted = fn.loaded, request.path_params.get("version")
        version = loaded.version if loaded is not None else None
        if wanted is not None and wanted != str(version):
            raise NotFound(f"version {wanted!r} of {fn.name!r} is not served here")
        learned = seen[fn.name][1] if fn.name in seen and seen[fn.name][0] == version else None
        return json_response(metadata(fn, learned))

    async def infer(request: Request) -> Response:
        name, wanted = request.path_params["name"], request.path_params.get("version")
        fn, _, pinned = runtime.resolve(f"{name}@{wanted}" if wanted else name)
        with observed(runtime, fn.name, request), bad_request():
            body = await read_body(request, runtime.settings.max_body_bytes)
            header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
            payload = parse_json(header)
            decode = functools.partial(parse_infer, fn.schema, payload, binary)
            parsed = await off_loop_if_images(fn.schema, decode)
            outputs = await predict(request, runtime, fn, parsed.columns, parsed.n, pinned)
            version = outputs.version  # the model that computed them, not the one seen on arrival
            produced = arrow.output_columns(outputs)
            if fn.name not in seen or seen[fn.name][0] != version:
                seen[fn.name] = (version, [tensor_metadata(k, column) for k, column in produced.items()])
            return encode(fn.name, version, parsed, produced)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2", endpoint(server_metadata)),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        *(Route(f"{base}/ready", endpoint(model_ready)) for base in (model, versioned)),
        *(Route(base, endpoint(model_metadata)) for base in (model, versioned)),
        *(Route(f"{base}/infer", endpoint(infer), methods=["POST"]) for base in (model, versioned)),
    ]


@contextlib.contextmanager
def bad_request() -> Iterator[None]:
    """The spec answers invalid inputs with 400 (fnserve's own protocol says 422)."""
    try:
        yield
    except ValidationError as exc:
        raise BadRequest(exc.message, problems=exc.problems, count=exc.count) from None


def metadata(fn: ServedFunction, outputs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Model metadata. A dict output's keys come from the model: listed once it has answered."""
    loaded = fn.loaded
    spec = fn.schema.output
    if outputs is None:
        outputs = [] if spec.kind == "dict" else [output_metadata(spec, arrow.PREDICTION)]
    out: dict[str, Any] = {"name": fn.name}
    if loaded is not None and loaded.version is not None:
        out["versions"] = [str(loaded.version)]
    out.update(platform=PLATFORM, inputs=[input_metadata(f) for f in fn.schema.inputs], outputs=outputs)
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tensor data after it (Binary Tensor Data extension)."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.isdigit() or int(header_length) > len(body):
        raise BadRequest(f"{HEADER_LENGTH} {header_length!r} is not a length within the body")
    split = int(header_length)
    view = memoryview(body)
    return bytes(view[:split]), view[split:]


def parse_infer(schema: Schema, payload: Any, binary: memoryview) -> InferRequest:
    """An inference request object to checked columns (400 naming every bad, unknown or missing
    input on a problem; a malformed request is refused at its first fault)."""
    if not isinstance(payload, dict):
        raise BadRequest("request body: expected an inference request object")
    request_id, parameters = payload.get("id"), _parameters(payload, "request")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id: expected a string")
    tensors = payload.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest("inputs: expected a non-empty list of input tensors")
    given: dict[str, Any] = {}
    rows: int | None = None
    offset = 0
    problems = Problems()
    for i, tensor in enumerate(tensors):
        name, shape, size = _check_tensor(i, tensor)
        start, offset = offset, offset + size  # where the next input's binary data starts
        with problems:
            field = schema.field(name)
            if field is None:
                raise ValidationError.at(name, rules.unknown(schema))
            if name in given:
                raise ValidationError.at(name, "given more than once")
            given[name] = None  # refused below if its data is
            if rows is not None and shape[0] != rows:
                raise ValidationError.at(name, f"batch size {shape[0]} differs from the other inputs' {rows}")
            rows = shape[0]
            columns.check_rows(rows, name)
            given[name] = column(field, tensor, binary[start:])[0]
    with problems:
        checked = columns.complete(schema, given, rows or 0)
    problems.raise_any()
    if offset != len(binary):
        raise BadRequest(f"binary tensor data: {len(binary) - offset} bytes more than the inputs declare")
    assert rows is not None
    return InferRequest(
        request_id,
        checked,
        rows,
        _requested_outputs(payload),
        parameters.get("binary_data_output") is True,
    )


def _check_tensor(i: int, tensor: Any) -> tuple[str, list[int], int]:
    """A request input's name, shape and binary data size (0: its data is in the JSON)."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise BadRequest(f"inputs[{i}]: expected an object with name, shape, datatype and data")
    name, shape, datatype = tensor["name"], tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not shape or not all(_is_count(d) for d in shape):
        raise BadRequest(f"{name}: shape must be a list of non-negative integers, batch size first")
    if datatype not in DATATYPES:
        raise BadRequest(f"{name}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    size = _parameters(tensor, name).get("binary_data_size")
    if size is not None and not _is_count(size):
        raise BadRequest(f"{name}: binary_data_size must be a non-negative integer")
    return name, shape, size or 0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = obj.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: parameters must be an object")
    return parameters


def _requested_outputs(payload: dict[str, Any]) -> list[tuple[str, bool]] | None:
    wanted = payload.get("outputs")
    if wanted is None:
        return None
    if not isinstance(wanted, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise BadRequest("outputs: expected a list of objects with a name")
    default = _parameters(payload, "request").get("binary_data_output") is True
    return [(o["name"], _parameters(o, o["name"]).get("binary_data", default) is True) for o in wanted]


def encode(
    name: str, version: int | None, request: InferRequest, produced: dict[str, np.ndarray]
) -> Response:
    """The inference response: JSON, or JSON followed by binary tensor data."""
    wanted = request.outputs or [(key, request.binary_outputs) for key in produced]
    tensors, blobs = [], []
    for key, binary in wanted:
        if key not in produced:
            raise BadRequest(f"outputs: {key!r} is not an output of {name!r}; it has {', '.join(produced)}")
        tensor, raw = output_tensor(key, produced[key], binary)
        tensors.append(tensor)
        if raw or binary:
            blobs.append(raw)
    body: dict[str, Any] = {"model_name": name}
    if version is not None:
        body["model_version"] = str(version)
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = tensors
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = version_header(version) or {}
    if not blobs:
        return Response(header, headers=headers, media_type=JSON_TYPE)
    headers[HEADER_LENGTH] = str(len(header))
    return Response(b"".join([header, *blobs]), headers=headers, media_type="application/octet-stream")
