"""One way to call a model, whatever form its checkpoint takes: ``fnserve.load_model``.

A version folder holds a SavedModel (TensorFlow's own format, what training exports), a LiteRT
flatbuffer (``model.tflite``: what ``fn optimize --quantize`` makes) or a frozen graph
(``fn optimize --freeze``). ``fnserve-model.json`` says which; without it the folder is a
SavedModel, as every checkpoint before ``fn optimize`` was. The same ``predict.py`` serves each:

    model = fnserve.load_model(checkpoint_dir)
    model.inputs            # {"photo": TensorInfo(dtype=dtype('uint8'), shape=(None, 64, 64, 3))}
    model(photo=photos)     # {"bed": array([...], dtype=float32), ...}: NumPy in, NumPy out

Calls take any batch size and are safe from several threads. TensorFlow is imported only for
a SavedModel or a frozen graph: an image serving a flatbuffer needs only ``ai_edge_litert``.

``recording()`` lists what a function feeds its models (``fn optimize`` calibrates int8 with it):

    >>> with recording() as calls:  # doctest: +SKIP
    ...     served.call(columns)
    >>> calls[0]["photo"].shape  # doctest: +SKIP
    (64, 64, 64, 3)
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.runtime.errors import CheckpointCorrupt, CheckpointError, ModelError
from fnserve.runtime.tf_direct import fastest_call

DESCRIPTOR = "fnserve-model.json"  # says the format of the model in a version folder
FORMATS = ("savedmodel", "litert", "frozen")


class ModelCallError(ModelError):
    """``predict.py`` called its model with inputs it does not take: names them (a bug in the function)."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: np.dtype  # NumPy's dtype of the tensor; strings are ``object``
    shape: tuple[int | None, ...]  # None: any size (the batch dimension, usually)


class _Recording:
    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self.active = True


_recordings: list[_Recording] = []
_recordings_lock = threading.Lock()


@contextlib.contextmanager
def recording() -> Iterator[list[dict[str, np.ndarray]]]:
    """Inside the block, each model that :func:`load_model` loads appends each call's inputs
    (a dict of copies) to the list yielded; models loaded before the block are not recorded."""
    found = _Recording()
    with _recordings_lock:
        _recordings.append(found)
    try:
        yield found.calls
    finally:
        found.active = False
        with _recordings_lock:
            _recordings.remove(found)


class Model:
    """A loaded model: ``model(**arrays)`` returns its outputs by name, as NumPy arrays."""

    format: str = ""

    def __init__(self, inputs: Mapping[str, TensorInfo], outputs: Mapping[str, TensorInfo]) -> None:
        self.inputs = dict(inputs)
        self.outputs = dict(outputs)
        with _recordings_lock:
            self._recordings = tuple(_recordings)

    def __call__(self, **arrays: Any) -> dict[str, np.ndarray]:
        checked = self._check(arrays)
        for found in self._recordings:
            if found.active:
                found.calls.append({name: value.copy() for name, value in checked.items()})
        return self._run(checked)

    def __repr__(self) -> str:
        inputs = ", ".join(f"{name}: {info.dtype}{list(info.shape)}" for name, info in self.inputs.items())
        return f"<{self.format} model ({inputs}) -> {sorted(self.outputs)}>"

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _check(self, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The inputs as arrays of the model's dtypes; a :class:`ModelCallError` names every misfit."""
        problems = []
        missing = sorted(set(self.inputs) - set(arrays))
        extra = sorted(set(arrays) - set(self.inputs))
        if missing:
            problems.append(f"missing input(s) {', '.join(missing)}")
        if extra:
            problems.append(
                f"unknown input(s) {', '.join(extra)} (it takes {', '.join(sorted(self.inputs))})"
            )
        checked = {}
        for name, info in self.inputs.items():
            if name not in arrays:
                continue
            value = np.asarray(arrays[name])
            if not _castable(value.dtype, info.dtype):
                problems.append(f"input {name} is {value.dtype}, the model takes {info.dtype}")
            elif not _fits(value.shape, info.shape):
                shape = tuple("?" if d is None else d for d in info.shape)
                problems.append(f"input {name} has shape {value.shape}, the model takes {shape}")
            else:
                checked[name] = np.ascontiguousarray(value, dtype=info.dtype)
        if problems:
            raise ModelCallError(f"{self.format} model called wrongly: {'; '.join(problems)}")
        return checked


def _castable(given: np.dtype, wanted: np.dtype) -> bool:
    if wanted.kind == "O":  # strings: str, bytes or object arrays of them
        return given.kind in "OSU"
    if given.kind in "OSU":
        return False
    return bool(np.can_cast(given, wanted, casting="same_kind"))


def _fits(shape: tuple[int, ...], wanted: tuple[int | None, ...]) -> bool:
    return len(shape) == len(wanted) and all(w is None or w == s for s, w in zip(shape, wanted, strict=True))


def load_model(checkpoint_dir: str | os.PathLike[str]) -> Model:
    """The model in a version folder, whichever format ``fnserve-model.json`` says (SavedModel
    without one). A folder that holds none raises a :class:`~fnserve.runtime.errors.CheckpointError`
    saying what it found.

    >>> model = load_model(checkpoint_dir)  # doctest: +SKIP
    >>> model(photo=np.zeros((2, 64, 64, 3), np.uint8))["bed"].shape  # doctest: +SKIP
    (2,)
    """
    folder = Path(checkpoint_dir)
    descriptor = read_descriptor(folder)
    kind = descriptor["format"]
    if kind == "litert":
        return LiteRTModel(_inside(folder, descriptor.get("path", "model.tflite")), descriptor)
    if kind == "frozen":
        return FrozenModel(_inside(folder, descriptor.get("path", "model.pb")), descriptor)
    return SavedModel(folder)


FRAMEWORKS = {"savedmodel": "tensorflow", "frozen": "tensorflow", "litert": "ai_edge_litert.interpreter"}


def preload(checkpoint_dir: str | os.PathLike[str]) -> float:
    """Import the framework the model in ``checkpoint_dir`` runs on (TensorFlow, or only LiteRT's
    interpreter) and start it, before the model is loaded; seconds it took (0.0: imported already).

    A cold start reports this part apart from the model's load; a standby replica (``python -m
    fnserve.runtime --standby``) pays it before any caller waits. A folder without a model, or a
    framework that fails to import, costs nothing here: the load that follows says why.
    """
    import importlib
    import sys
    import time

    try:
        module = FRAMEWORKS[read_descriptor(Path(checkpoint_dir))["format"]]
    except CheckpointError:
        return 0.0
    if module in sys.modules:
        return 0.0
    started = time.perf_counter()
    with contextlib.suppress(Exception):  # the load that follows reports the framework's own error
        imported = importlib.import_module(module)
        if module == "tensorflow":  # the eager context and its thread pools, made once per process
            imported.constant(0).numpy()
    return time.perf_counter() - started


def read_descriptor(folder: Path) -> dict[str, Any]:
    """``fnserve-model.json`` of ``folder``, or the SavedModel it implies; checked."""
    path = folder / DESCRIPTOR
    if not path.exists():
        if not (folder / "saved_model.pb").exists():
            found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) if folder.is_dir() else ""
            raise CheckpointError(
                f"{folder} holds no model: no {DESCRIPTOR}, no saved_model.pb (found: {found or 'nothing'})"
            )
        return {"format": "savedmodel", "path": "."}
    try:
        descriptor = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointCorrupt(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(descriptor, dict) or descriptor.get("format") not in FORMATS:
        raise CheckpointCorrupt(f"{path}: 'format' must be one of {', '.join(FORMATS)}")
    return descriptor


def write_descriptor(folder: Path, descriptor: Mapping[str, Any]) -> None:
    (folder / DESCRIPTOR).write_text(json.dumps(dict(descriptor), indent=2, sort_keys=True) + "\n")


def _inside(folder: Path, relative: str) -> Path:
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise CheckpointError(f"{folder / DESCRIPTOR}: its model file {relative!r} is not in the folder")
    return path


# --- SavedModel ------------------------------------------------------------------------------


class SavedModel(Model):
    """The ``serving_default`` signature of a SavedModel: one compiled TensorFlow call per batch."""

    format = "savedmodel"

    def __init__(self, folder: Path, signature: str = "serving_default") -> None:
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(folder))
        except Exception as exc:  # TensorFlow raises many kinds for a bad folder
            raise CheckpointCorrupt(f"{folder}: not a loadable SavedModel: {_first_line(exc)}") from None
        if signature not in self._loaded.signatures:
            found = ", ".join(self._loaded.signatures) or "none"
            raise CheckpointError(f"{folder}: the SavedModel has no {signature!r} signature (found: {found})")
        self._function = self._loaded.signatures[signature]
        specs = self._function.structured_input_signature[1]
        outputs = self._function.structured_outputs
        super().__init__(
            {name: _tf_info(spec) for name, spec in specs.items()},
            {name: _tf_info(spec) for name, spec in outputs.items()},
        )
        self._tf = tf
        self._call = fastest_call(self._function, self._public, folder)

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call(arrays)

    def _public(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._function(**{name: self._tf.constant(value) for name, value in arrays.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}


def _tf_info(spec: Any) -> TensorInfo:
    dtype = np.dtype(object) if spec.dtype.name == "string" else np.dtype(spec.dtype.as_numpy_dtype)
    shape = () if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorInfo(dtype, shape)


# --- LiteRT flatbuffer -------------------------------------------------------------------------


class LiteRTModel(Model):
    """A LiteRT flatbuffer's signature, run by ``ai_edge_litert``'s interpreter (no TensorFlow).

    Input tensors are resized only when a call's shapes differ from the previous call's (a resize
    re-plans the interpreter's memory); a lock keeps calls from several threads one at a time, as
    the interpreter's buffers are shared.
    """

    format = "litert"

    def __init__(self, path: Path, descriptor: Mapping[str, Any]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        threads = int(descriptor.get("num_threads") or len(os.sched_getaffinity(0)))
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
            signatures = self._interpreter.get_signature_list()
        except (ValueError, RuntimeError) as exc:
            raise CheckpointCorrupt(f"{path}: not a loadable LiteRT flatbuffer: {_first_line(exc)}") from None
        key = descriptor.get("signature", "serving_default")
        if key not in signatures:
            raise CheckpointError(f"{path}: no {key!r} signature (found: {', '.join(signatures) or 'none'})")
        runner = self._interpreter.get_signature_runner(key)
        input_details = runner.get_input_details()
        output_details = runner.get_output_details()
        self._input_index = {name: detail["index"] for name, detail in input_details.items()}
        self._output_index = {name: detail["index"] for name, detail in output_details.items()}
        self._subgraph = self._interpreter._interpreter.GetSubgraphIndexFromSignature(key)
        self._wrapper = self._interpreter._interpreter  # the signature runner's own handle
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()
        super().__init__(
            {name: _litert_info(detail) for name, detail in input_details.items()},
            {name: _litert_info(detail) for name, detail in output_details.items()},
        )

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wrapper, subgraph = self._wrapper, self._subgraph
        with self._lock:
            resized = False
            for name, value in arrays.items():
                if self._shapes.get(name) != value.shape:
                    shape = np.array(value.shape, dtype=np.int32)
                    wrapper.ResizeInputTensor(self._input_index[name], shape, False, subgraph)
                    self._shapes[name] = value.shape
                    resized = True
            if resized:
                wrapper.AllocateTensors(subgraph)
            for name, value in arrays.items():
                wrapper.SetTensor(self._input_index[name], value, subgraph)
            wrapper.Invoke(subgraph)
            return {name: wrapper.GetTensor(index, subgraph) for name, index in self._output_index.items()}


def _litert_info(detail: Mapping[str, Any]) -> TensorInfo:
    dtype = np.dtype(object) if detail["dtype"] in (np.bytes_, np.str_, object) else np.dtype(detail["dtype"])
    shape = tuple(None if d < 0 else int(d) for d in detail["shape_signature"])
    return TensorInfo(dtype, shape)


# --- frozen graph ---------------------------------------------------------------------------


class FrozenModel(Model):
    """A frozen GraphDef (weights as constants), imported into TensorFlow and pruned to the
    descriptor's inputs and outputs; compiled with XLA when ``jit_compile`` says so."""

    format = "frozen"

    def __init__(self, path: Path, descriptor: Mapping[str, Any]) -> None:
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
            inputs = {name: _spec_info(spec) for name, spec in descriptor["inputs"].items()}
            outputs = {name: _spec_info(spec) for name, spec in descriptor["outputs"].items()}
            wrapped = tf.compat.v1.wrap_function(
                lambda: tf.graph_util.import_graph_def(graph_def, name=""), []
            )
            feeds = [
                wrapped.graph.get_tensor_by_name(descriptor["inputs"][name]["tensor"]) for name in inputs
            ]
            fetches = {
                name: wrapped.graph.get_tensor_by_name(descriptor["outputs"][name]["tensor"])
                for name in outputs
            }
            pruned = wrapped.prune(feeds, fetches)
        except Exception as exc:  # a bad file or descriptor: protobuf, KeyError, TensorFlow's errors
            raise CheckpointCorrupt(f"{path}: not a loadable frozen graph: {_first_line(exc)}") from None
        self._names = list(inputs)
        self._jit = bool(descriptor.get("jit_compile"))
        # Called as one graph function (the pruned function alone runs op by op: ~50% slower at
        # batch 1). XLA compiles once per input shape, so under jit batches are padded to buckets.
        signature = [
            tf.TensorSpec(list(info.shape), feed.dtype)
            for info, feed in zip(inputs.values(), feeds, strict=True)
        ]
        self._function: Callable[..., Any] = tf.function(
            pruned, input_signature=signature, jit_compile=self._jit
        )
        self._graph = wrapped  # keeps the imported graph alive
        self._tf = tf
        super().__init__(inputs, outputs)
        self._call = fastest_call(self._function.get_concrete_function(), self._public, path, self._names)

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(arrays[self._names[0]]) if self._names and arrays[self._names[0]].ndim else 0
        if self._jit and rows and all(v.ndim and len(v) == rows for v in arrays.values()):
            bucket = 1 << (rows - 1).bit_length()  # the next power of two: few shapes to compile
            padded = {n: np.concatenate([v, np.repeat(v[-1:], bucket - rows, 0)]) for n, v in arrays.items()}
            return {name: _unpad(value, rows, bucket) for name, value in self._call(padded).items()}
        return self._call(arrays)

    def _public(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._function(*(self._tf.constant(arrays[name]) for name in self._names))
        return {name: tensor.numpy() for name, tensor in outputs.items()}


def _unpad(value: np.ndarray, rows: int, bucket: int) -> np.ndarray:
    return value[:rows] if value.ndim and len(value) == bucket else value


def _spec_info(spec: Mapping[str, Any]) -> TensorInfo:
    dtype = np.dtype(object) if spec["dtype"] == "string" else np.dtype(spec["dtype"])
    return TensorInfo(dtype, tuple(spec["shape"]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
