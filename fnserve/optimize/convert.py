"""Variant folders: a published SavedModel quantized to a LiteRT flatbuffer, or frozen.

The converters are the ones TensorFlow maintains: ``tf.lite.TFLiteConverter.from_saved_model``
(the MLIR converter and quantizer, TF 2.21) for the flatbuffers, run by ``ai_edge_litert``'s
interpreter at serving time (``tf.lite.Interpreter`` is deprecated in its favour), and
``convert_variables_to_constants_v2`` plus grappler for a frozen graph.

    >>> settings = make_variant(base, out, "quantize-int8", representative=calls)  # doctest: +SKIP
    >>> settings["quantizer"]  # doctest: +SKIP
    'mlir'

``out_dir`` gets the base folder's files (reference, evaluation data, ...) minus its model, plus
the new model and its ``fnserve-model.json``; the caller publishes it. Nothing else is written.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.optimize import OptimizeError
from fnserve.runtime.errors import CheckpointError
from fnserve.runtime.manifest import MANIFEST_NAME, MARKER_NAME
from fnserve.runtime.models import DESCRIPTOR, TensorInfo, load_model, read_descriptor, write_descriptor

TECHNIQUES = ("quantize-int8", "quantize-float16", "quantize-dynamic", "freeze")
SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "variables", "assets")
CALIBRATION_ROWS = 1000  # of representative data: more barely moves int8 ranges, and costs time
CALIBRATION_BATCH = 50  # rows per calibration step


def make_variant(
    base_dir: Path,
    out_dir: Path,
    technique: str,
    *,
    representative: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Write the variant folder (base files copied, model replaced); return its lineage settings."""
    if technique not in TECHNIQUES:
        raise OptimizeError(f"unknown technique {technique!r}: choose one of {', '.join(TECHNIQUES)}")
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if read_descriptor(base_dir)["format"] != "savedmodel":
        raise OptimizeError(f"{base_dir} is already a variant: optimize the SavedModel it was made from")
    try:
        base = load_model(base_dir)  # checks the serving signature before any conversion
    except CheckpointError as exc:
        raise OptimizeError(exc.message) from None
    if technique == "quantize-int8" and not representative:
        raise OptimizeError(
            "quantize-int8 needs representative inputs (training publishes them) to calibrate"
        )
    batches = list(_calibration_batches(base.inputs, representative)) if representative else []
    with tempfile.TemporaryDirectory(prefix="fnserve-variant-") as scratch:
        work = Path(scratch)
        try:
            if technique == "freeze":
                descriptor, settings = _freeze(base_dir, work, base.inputs, batches)
            else:
                descriptor, settings = _to_litert(base_dir, work, technique, batches)
            write_descriptor(work, descriptor)
            load_model(work)  # what is published must load: fail here, not at serving time
        except CheckpointError as exc:
            raise OptimizeError(f"{technique} made a model that does not load: {exc.message}") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        _copy_base(base_dir, out_dir)
        for path in work.iterdir():
            shutil.move(str(path), out_dir / path.name)
    return settings


def _copy_base(base_dir: Path, out_dir: Path) -> None:
    """Everything but the base model, the manifest and the verification marker."""
    for path in base_dir.iterdir():
        if path.name in (*SAVEDMODEL_FILES, MANIFEST_NAME, MARKER_NAME, DESCRIPTOR):
            continue
        if path.is_dir():
            shutil.copytree(path, out_dir / path.name)
        else:
            shutil.copy2(path, out_dir / path.name)


def _calibration_batches(
    inputs: Mapping[str, TensorInfo], representative: Sequence[Mapping[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """Equal batches of at most :data:`CALIBRATION_BATCH` rows in the model's dtypes, ≤
    CALIBRATION_ROWS in all; an :class:`OptimizeError` names the inputs that do not fit the model."""
    checked = []
    for number, sample in enumerate(representative):
        missing, extra = sorted(set(inputs) - set(sample)), sorted(set(sample) - set(inputs))
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += (
            [f"unknown {', '.join(extra)} (the model takes {', '.join(sorted(inputs))})"] if extra else []
        )
        arrays = {}
        for name, info in inputs.items():
            if name not in sample:
                continue
            value = np.asarray(sample[name])
            wrong_kind = (value.dtype.kind in "OSU") != (info.dtype == object)
            if wrong_kind or value.ndim != len(info.shape):
                shape = ["?" if d is None else d for d in info.shape]
                problems.append(
                    f"{name} is {value.dtype}{list(value.shape)}, the model takes {info.dtype}{shape}"
                )
                continue
            arrays[name] = value if info.dtype == object else value.astype(info.dtype)
        rows = {len(value) for value in arrays.values()}
        if len(rows) > 1:
            problems.append(f"its inputs have different row counts {sorted(rows)}")
        if problems:
            raise OptimizeError(
                f"representative data does not match the model: sample {number}: {'; '.join(problems)}"
            )
        checked.append(arrays)
    # One size for every batch: the calibrator resizes the model's inputs when a batch's size
    # changes and then fails to prepare ops joining several inputs (PACK), so the samples are
    # joined and cut into equal batches (a remainder smaller than one batch is left out).
    joined = {}
    for name in inputs:
        shapes = sorted({arrays[name].shape[1:] for arrays in checked})
        if len(shapes) > 1:
            raise OptimizeError(
                f"representative data does not match the model: {name} rows come shaped {shapes}"
            )
        joined[name] = np.concatenate([arrays[name] for arrays in checked])[:CALIBRATION_ROWS]
    total = len(next(iter(joined.values())))
    size = min(CALIBRATION_BATCH, total)
    for start in range(0, total - size + 1, size) if size else ():
        yield {name: value[start : start + size] for name, value in joined.items()}


# --- LiteRT ----------------------------------------------------------------------------------


def _to_litert(
    base_dir: Path, work: Path, technique: str, batches: list[dict[str, np.ndarray]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    import tensorflow as tf

    def converter() -> Any:
        made = tf.lite.TFLiteConverter.from_saved_model(str(base_dir), signature_keys=["serving_default"])
        made.optimizations = [tf.lite.Optimize.DEFAULT]
        if technique == "quantize-float16":
            made.target_spec.supported_types = [tf.float16]
        if technique == "quantize-int8":
            # Full integer: every op int8 (an op without an int8 kernel fails the conversion);
            # inputs and outputs stay float so the same predict.py feeds every variant.
            made.representative_dataset = lambda: iter(batches)
            made.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return made

    settings: dict[str, Any] = {"converter": "tf.lite.TFLiteConverter.from_saved_model", "io": "float"}
    if technique == "quantize-int8":
        settings.update(calibration_rows=sum(len(next(iter(b.values()))) for b in batches), quantizer="mlir")
    try:
        flatbuffer = _convert(converter(), technique)
    except OptimizeError as refused:
        if technique != "quantize-int8":
            raise
        # The MLIR quantizer refuses ops whose output must share its input's scale but was
        # calibrated apart (the tagger's label columns, sliced from one score tensor, when the
        # calibration photos never score some label high); the older calibrator inserts
        # requantize ops instead. It has no int8 CAST (uint8 photos to float): that op, and any
        # other without an int8 kernel, stays float, so the settings say so.
        legacy = converter()
        legacy.experimental_new_quantizer = False
        legacy.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        try:
            flatbuffer = _convert(legacy, technique)
        except OptimizeError:
            raise refused from None
        settings.update(quantizer="legacy", float_fallback=True, mlir_quantizer_refused=refused.message)
    (work / "model.tflite").write_bytes(flatbuffer)
    return {"format": "litert", "path": "model.tflite", "signature": "serving_default"}, settings


def _convert(converter: Any, technique: str) -> bytes:
    """The flatbuffer; an :class:`OptimizeError` with the converter's reason when it fails.

    The converter often raises with an empty message and logs the reason (``error: 'tfl.xyz'
    op ...``) from C++ to the process's stderr, so stderr is captured around the call, passed
    on unchanged, and its error lines become the message.
    """
    with _captured_stderr() as captured, warnings.catch_warnings():
        # int8 calibration runs the deprecated tf.lite.Interpreter inside the converter itself
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        try:
            return bytes(converter.convert())
        except Exception as exc:  # ConverterError, RuntimeError, ValueError ...
            failure = exc
    reason = _reason(failure, captured.read())
    raise OptimizeError(f"{technique} cannot convert this model: {reason}") from None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Any]:
    """File descriptor 2 into a temporary file for the block (C++ logs bypass ``sys.stderr``)."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        text = io.StringIO()
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            logged = sink.read().decode(errors="replace")
            sys.stderr.write(logged)  # nothing the converter said is lost
            text.write(logged)
            text.seek(0)


def _reason(exc: BaseException, logged: str) -> str:
    """The first error the converter reported: the ops it lacks, else its first ``error:`` line."""
    said = str(exc).strip()
    text = f"{said}\n{logged}"
    lacking = sorted(set(re.findall(r"'([\w.]+)' op is neither a custom op nor a flex op", text)))
    if lacking:
        return f"unsupported op(s) {', '.join(lacking)}: not among LiteRT's built-in ops"
    lines = [line.strip() for line in text.splitlines()]
    errors = [line for line in lines if "error:" in line and "loc(" in line] or [
        line for line in lines if "error" in line.lower()
    ]
    found = errors[0] if errors else said or type(exc).__name__
    return (found.split("error:", 1)[-1].strip() if "error:" in found else found)[:500]


# --- frozen graph ----------------------------------------------------------------------------


def _freeze(
    base_dir: Path, work: Path, inputs: Mapping[str, TensorInfo], batches: list[dict[str, np.ndarray]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Variables folded into constants, then grappler's inference passes; XLA kept if faster here."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    loaded = tf.saved_model.load(str(base_dir))  # kept: the signature refers to its variables
    function = loaded.signatures["serving_default"]
    try:
        frozen = convert_variables_to_constants_v2(function)
    except Exception as exc:  # e.g. hash tables or other resources that cannot become constants
        raise OptimizeError(
            f"freeze cannot fold this model's variables: {type(exc).__name__}: {exc}"
        ) from None
    names = [name for name in function._arg_keywords if name in inputs]  # the signature's order
    placeholders = dict(zip(names, frozen.inputs, strict=False))
    # The frozen function returns a flat list: a dict's values in sorted key order (tf.nest's).
    outputs = dict(zip(sorted(function.structured_outputs), frozen.outputs, strict=True))
    graph_def = frozen.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops.update(node.op for function_def in graph_def.library.function for node in function_def.node_def)
    tables = sorted(op for op in ops if "HashTable" in op or op.startswith("LookupTable"))
    if tables:  # a table is state, not a constant: its lookups fail once the graph is imported
        raise OptimizeError(
            f"freeze cannot fold lookup tables ({', '.join(tables)}): look ids up outside the model"
        )
    graph_def = _grappler(frozen.graph, [tensor.name for tensor in outputs.values()])
    (work / "model.pb").write_bytes(graph_def.SerializeToString())

    def spec(tensor: Any, info: TensorInfo) -> dict[str, Any]:
        return {
            "tensor": tensor.name,
            "dtype": "string" if info.dtype == object else info.dtype.name,
            "shape": list(info.shape),
        }

    output_infos = load_model(base_dir).outputs
    descriptor: dict[str, Any] = {
        "format": "frozen",
        "path": "model.pb",
        "inputs": {name: spec(placeholders[name], inputs[name]) for name in names},
        "outputs": {name: spec(tensor, output_infos[name]) for name, tensor in outputs.items()},
        "jit_compile": False,
    }
    write_descriptor(work, descriptor)
    sample = batches[0] if batches else _zeros(inputs, 32)
    plain = _time_calls(work, descriptor, False, sample)
    compiled = _time_calls(work, descriptor, True, sample)
    assert plain is not None, "the frozen graph ran when it was checked"
    # XLA only where it is faster at both batch sizes on this CPU; else grappler's graph alone.
    jit = compiled is not None and all(c < p for c, p in zip(compiled, plain, strict=True))
    descriptor["jit_compile"] = jit
    settings = {
        "converter": "convert_variables_to_constants_v2 + grappler",
        "grappler": list(GRAPPLER_PASSES),
        "jit_compile": jit,
        "jit_measured_s": {  # per call at batch 1 and at the sample's batch, without and with XLA
            "without": plain,
            "with": compiled,
        },
    }
    return descriptor, settings


GRAPPLER_PASSES = ("pruning", "constfold", "arithmetic", "dependency", "debug_stripper")


def _grappler(graph: Any, fetches: list[str]) -> Any:
    """``graph`` pruned to ``fetches`` and constant-folded by grappler (as the LiteRT converter does)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    meta = tf.compat.v1.train.export_meta_graph(graph_def=graph.as_graph_def(), graph=graph)
    fetch = meta_graph_pb2.CollectionDef()
    fetch.node_list.value.extend(fetches)
    meta.collection_def["train_op"].CopyFrom(fetch)  # what grappler must keep
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.optimizers.extend(GRAPPLER_PASSES)
    config.graph_options.rewrite_options.meta_optimizer_iterations = 2  # rewriter_config ONE=1, TWO=2
    return tf_optimizer.OptimizeGraph(config, meta)


def _zeros(inputs: Mapping[str, TensorInfo], rows: int) -> dict[str, np.ndarray]:
    def shape(info: TensorInfo) -> tuple[int, ...]:
        return tuple(rows if i == 0 and d is None else (d or 1) for i, d in enumerate(info.shape))

    return {
        name: np.full(shape(info), "", dtype=object)
        if info.dtype == object
        else np.zeros(shape(info), info.dtype)
        for name, info in inputs.items()
    }


def _time_calls(
    folder: Path, descriptor: dict[str, Any], jit: bool, sample: dict[str, np.ndarray]
) -> list[float] | None:
    """Median seconds per call at batch 1 and at the sample's batch; None when XLA cannot compile it."""
    from fnserve.runtime.models import FrozenModel

    model = FrozenModel(folder / "model.pb", {**descriptor, "jit_compile": jit})
    medians = []
    for arrays in ({name: value[:1] for name, value in sample.items()}, sample):
        try:
            model(**arrays)  # XLA compiles on the first call of a shape
        except Exception:
            return None
        times = []
        for _ in range(15):
            started = time.perf_counter()
            model(**arrays)
            times.append(time.perf_counter() - started)
        medians.append(float(np.median(times)))
    return medians
