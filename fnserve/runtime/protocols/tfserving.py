"""TensorFlow Serving's REST API, so that a TF Serving client switches by changing the URL.

* ``POST /v1/models/{name}[/versions/{v}]:predict`` — row format ``{"instances": [...]}`` (objects
  of inputs, or bare values for a function with one input) answered ``{"predictions": [...]}``;
  columnar format ``{"inputs": {name: [one value per row]}}`` (a bare list for one input)
  answered ``{"outputs": ...}``: a list for a single output, an object of lists for a dict.
  Binary values (images) are ``{"b64": "..."}``; ``signature_name`` may be ``serving_default``.
* ``GET /v1/models/{name}[/versions/{v}]`` — model status (``AVAILABLE`` once loaded);
* ``GET /v1/models/{name}[/versions/{v}]/metadata`` — the ``serving_default`` signature.

Errors are ``{"error": "..."}``: 400 for a bad request, 404 for an unknown model or version.
A function without checkpoints reports version 0.

    curl -d '{"instances": [{"distance_km": 900, "cabin": "business"}]}' \\
         http://127.0.0.1:8080/v1/models/fare:predict
    # {"predictions":[335.0]}
"""

from __future__ import annotations

import base64
import functools
import itertools
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fnserve.runtime import columns
from fnserve.runtime.errors import BadRequest, NotFound, Problems
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.http import json_response, parse_json, read_body
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.protocols import arrow
from fnserve.runtime.protocols.common import endpoint, observed, predict, version_header
from fnserve.runtime.protocols.native import off_loop_if_images
from fnserve.runtime.protocols.v2 import bad_request
from fnserve.runtime.schema import InputField, Schema
from fnserve.runtime.service import Runtime

SIGNATURE = "serving_default"
TF_DTYPES = {
    "bool": "DT_BOOL", "uint8": "DT_UINT8", "int8": "DT_INT8", "int16": "DT_INT16", "int32": "DT_INT32",
    "int64": "DT_INT64", "float16": "DT_HALF", "float32": "DT_FLOAT", "float64": "DT_DOUBLE",
}  # fmt: skip


def routes(runtime: Runtime) -> list[Route]:
    def resolve(request: Request) -> tuple[ServedFunction, int | None]:
        """The function and its served version, which a version in the URL must be (0: none)."""
        fn = runtime.function(request.path_params["name"])
        wanted, version = request.path_params.get("version"), _version(fn)
        if wanted is not None and wanted != str(version or 0):
            raise NotFound(f"Could not find version {wanted} of servable {fn.name}")
        return fn, version

    async def status(request: Request) -> Response:
        fn, version = resolve(request)
        state, code = ("AVAILABLE", "OK") if fn.ready else ("LOADING", "UNAVAILABLE")
        outcome = {"error_code": code, "error_message": fn.last_error or ""}
        entry = {"version": str(version or 0), "state": state, "status": outcome}
        return json_response({"model_version_status": [entry]})

    async def metadata(request: Request) -> Response:
        fn, version = resolve(request)
        spec = {"name": fn.name, "signature_name": "", "version": str(version or 0)}
        signature = signature_def(fn.schema)
        return json_response({"model_spec": spec, "metadata": {"signature_def": signature}})

    async def call(request: Request) -> Response:
        verb = request.path_params["verb"]
        if verb != "predict":
            raise BadRequest(f"only :predict is served here, not :{verb} (it needs tf.Example signatures)")
        fn, version = resolve(request)
        pin = f"@{version}" if "version" in request.path_params and version is not None else ""
        fn, _, pinned = runtime.resolve(fn.name + pin)  # loaded (else 503), and still that version
        with observed(runtime, fn.name, request), bad_request():
            payload = parse_json(await read_body(request, runtime.settings.max_body_bytes))
            decode = functools.partial(parse_predict, fn.schema, payload)
            batch, n, row_format = await off_loop_if_images(fn.schema, decode)
            outputs = await predict(request, runtime, fn, batch, n, pinned)
            body = {"predictions": outputs.jsonable()} if row_format else {"outputs": columnar(outputs)}
            return json_response(body, headers=version_header(outputs.version))

    bases = ("/v1/models/{name}", "/v1/models/{name}/versions/{version}")
    return [
        *(Route(base + ":{verb}", endpoint(call), methods=["POST"]) for base in bases),
        *(Route(base + "/metadata", endpoint(metadata)) for base in bases),
        *(Route(base, endpoint(status)) for base in bases),
    ]


def _version(fn: ServedFunction) -> int | None:
    return fn.loaded.version if fn.loaded is not None else None


def parse_predict(schema: Schema, payload: Any) -> tuple[dict[str, Any], int, bool]:
    """A predict request to checked columns, their row count, and whether it was in row format."""
    if not isinstance(payload, dict):
        raise BadRequest("request body: expected a JSON object with 'instances' or 'inputs'")
    signature = payload.get("signature_name", SIGNATURE)
    if signature not in (SIGNATURE, ""):
        raise BadRequest(f"signature_name {signature!r} not found; this model has {SIGNATURE!r}")
    extra = set(payload) - {"signature_name", "instances", "inputs"}
    if extra:
        raise BadRequest(f"unexpected keys in the request: {sorted(extra)}")
    if ("instances" in payload) == ("inputs" in payload):
        raise BadRequest("the request must have either 'instances' (rows) or 'inputs' (columns), not both")
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise BadRequest("instances: expected a non-empty list")
        columns.check_rows(len(instances), "instances")
        sole = schema.inputs[0] if len(schema.inputs) == 1 else None
        if sole is not None and not all(_is_inputs_object(v) for v in instances):
            return {sole.name: _column(sole, instances, "instances[{row}]")}, len(instances), True
        return (*columns.from_instances(schema, _decode_b64_text(schema, instances)), True)
    inputs = payload["inputs"]
    if not isinstance(inputs, dict):
        if len(schema.inputs) != 1:
            raise BadRequest("inputs: expected an object of input name to values (the model has several)")
        inputs = {schema.inputs[0].name: inputs}
    sizes = {name: len(values) if isinstance(values, list) else -1 for name, values in inputs.items()}
    for name, size in sizes.items():
        if size < 0:
            raise BadRequest(f"{name}: expected a list with one value per row")
    n = next(iter(sizes.values()), 0)
    if any(size != n for size in sizes.values()):
        raise BadRequest(f"inputs: every input needs the same number of rows, got {sizes}")
    columns.check_rows(n, "inputs")
    given: dict[str, Any] = {}
    problems = Problems()
    for name, values in inputs.items():
        field = schema.field(name)
        given[name] = None  # complete() names an unknown one
        if field is not None:
            with problems:
                given[name] = _column(field, values, name)
    with problems:
        checked = columns.complete(schema, given, n)
    problems.raise_any()
    return checked, n, False


def _is_inputs_object(value: Any) -> bool:
    return isinstance(value, dict) and set(value) != {"b64"}


def _column(field: InputField, values: list[Any], label: str) -> Any:
    """TF's binary strings arrive as ``{"b64": ...}``; for text inputs they are decoded here."""
    if field.kind in ("str", "category") and dict in set(map(type, values)):
        values = [
            _b64_text(v, columns.at(label, i)) if isinstance(v, dict) else v for i, v in enumerate(values)
        ]
    return columns.from_json(field, values, label)


def _decode_b64_text(schema: Schema, instances: list[Any]) -> list[Any]:
    """Rows whose text inputs hold ``{"b64": ...}`` get them decoded; other rows pass untouched."""
    if set(map(type, instances)) != {dict}:
        return instances  # from_instances names the culprit
    for field in schema.inputs:
        if field.kind in ("str", "category"):
            values = list(map(dict.get, instances, itertools.repeat(field.name)))
            if dict in set(map(type, values)):
                label = f"instances[{{row}}].{field.name}"
                decoded = _column_values(values, label)
                instances = [{**inst, field.name: v} for inst, v in zip(instances, decoded, strict=True)]
    return instances


def _column_values(values: list[Any], label: str) -> list[Any]:
    return [_b64_text(v, columns.at(label, i)) if isinstance(v, dict) else v for i, v in enumerate(values)]


def _b64_text(value: dict[str, Any], label: str) -> Any:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        return value  # from_json names it as the wrong type
    try:
        return base64.b64decode(value["b64"], validate=True).decode()
    except ValueError:
        raise BadRequest(f"{label}: not valid base64-encoded UTF-8 text") from None


def columnar(outputs: Outputs) -> Any:
    """``outputs`` of a columnar answer: one list for a single output, else an object of lists."""
    produced = {name: _json_column(column) for name, column in arrow.output_columns(outputs).items()}
    return produced[arrow.PREDICTION] if outputs.named is None and arrow.PREDICTION in produced else produced


def _json_column(column: np.ndarray) -> Any:
    if column.dtype.kind in "biuf":
        return column  # orjson writes numpy arrays itself
    return [{"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v for v in column.tolist()]


def signature_def(schema: Schema) -> dict[str, Any]:
    """The function's interface as TF Serving's ``GetModelMetadata`` signature map."""
    inputs = {}
    for f in schema.inputs:
        numeric = f.kind in ("int", "float", "bool", "tensor")  # the rest are strings or encoded images
        inputs[f.name] = _tensor_info(f.name, f.dtype if numeric else "string", f.shape if numeric else ())
    output = schema.output
    outputs = {}
    if output.tensor is not None:
        outputs[arrow.PREDICTION] = _tensor_info(arrow.PREDICTION, output.tensor.dtype, output.tensor.shape)
    elif output.kind != "dict":  # a dict's keys come from the model; they are not known in advance
        dtype = {"int": "int64", "float": "float64", "bool": "bool"}.get(output.kind, "string")
        outputs[arrow.PREDICTION] = _tensor_info(arrow.PREDICTION, dtype, ())
    method = {"inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict"}
    return {"signature_def": {SIGNATURE: method}}


def _tensor_info(name: str, dtype: str, shape: tuple[int | None, ...]) -> dict[str, Any]:
    dims = [{"size": "-1", "name": ""}, *({"size": str(d or -1), "name": ""} for d in shape)]
    return {
        "dtype": TF_DTYPES.get(dtype, "DT_STRING"),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": name,
    }
