"""A SavedModel signature called the way TensorFlow itself ends up calling it, minus the Python.

``signature(**tensors)`` binds the keywords to the traced function's structured signature, checks
each tensor against it, chooses between the inference function and a forward/backward pair (for a
gradient tape), flattens the captured variables in, and packs the outputs back into a dict. For a
batch-1 call of recs that Python is ~60% of the call; only the last step, ``execute.execute`` of
the inference function by name with its captures and the eager context's call attributes, runs the
model.

:class:`DirectCall` makes that last step alone, with what the other steps would compute worked out
once at load time and checked against the function's own definition (names and dtypes of its
inputs, the number of its captures and outputs). It takes the public path itself whenever that
path would do something else: outside eager execution, under a gradient tape, in a cancellation
scope. For a function it cannot call exactly this way (control captures, resource or variant
outputs, an attribute this TensorFlow does not have) ``fastest_call`` gives the public call and
logs why: nothing here changes what a model answers, only what it costs.
The private names used are those of TensorFlow 2.21, the version fnserve pins. The tests call tiny
models (numbers, strings, an echo, a frozen graph) both ways and compare every output;
``benchmarks/model_call.py`` does the same for recs and the tagger, bit for bit, before it times
them (recs at batch 1: 0.157 ms instead of 0.366 ms; at 1,024 rows 0.60x the public call's time).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("fnserve.models")

Public = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class _Plan:
    """What the public call would work out on every call, worked out once."""

    function: Any  # the ConcreteFunction: alive, its inference function stays registered by name
    name: str  # of the inference function, as the eager context knows it
    inputs: list[tuple[str, int]]  # (input name, its dtype's enum) in the function's argument order
    captures: list[Any]  # the captured tensors (variables' handles) that follow the inputs
    outputs: list[tuple[str, int]]  # (output name, its index among the flat outputs)


class DirectCall:
    """``call(arrays) -> {output: ndarray}`` for arrays by input name, already of the right dtypes."""

    def __init__(self, plan: _Plan, public: Public) -> None:
        from tensorflow.python.eager import cancellation, context, execute, record
        from tensorflow.python.framework import ops

        self._plan, self._public = plan, public
        self._ctx = context.context()
        self._ctx.ensure_initialized()  # what tf.constant does before it makes an EagerTensor
        self._attrs = tuple(itertools.chain(*self._ctx.function_call_options.as_attrs().items()))
        self._eager_tensor = ops.EagerTensor
        self._execute = execute.execute
        self._recording = record.could_possibly_record
        self._cancellation = cancellation.context

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx, plan = self._ctx, self._plan
        if not ctx.executing_eagerly() or self._recording() or self._cancellation() is not None:
            return self._public(arrays)
        device = ctx.device_name  # the tensors are copies of the arrays (tf.constant's own step)
        tensors = [self._eager_tensor(arrays[name], device, dtype) for name, dtype in plan.inputs]
        flat = self._execute(plan.name, len(plan.outputs), tensors + plan.captures, self._attrs, ctx)
        return {name: flat[at].numpy() for name, at in plan.outputs}


def fastest_call(function: Any, public: Public, where: object, positional: Sequence[str] = ()) -> Public:
    """The :class:`DirectCall` of ``function``, or ``public`` itself when it cannot be one (logged,
    naming ``where``: the model's file or folder)."""
    direct, why = direct_call(function, public, positional)
    if direct is None:
        log.info("%s: called the public way (%s)", where, why)
        return public
    return direct


def direct_call(
    function: Any, public: Public, positional: Sequence[str] = ()
) -> tuple[DirectCall | None, str]:
    """A :class:`DirectCall` of ``function`` (which falls back to ``public`` where it must), or
    None and the reason it cannot be called directly.

    ``function``: a ConcreteFunction taking keyword tensors (a SavedModel's signature), or
    positional ones named by ``positional`` in order (a ``tf.function`` with an input signature).
    """
    try:
        plan, why = _plan(function, positional)
    except (AttributeError, ImportError, TypeError, ValueError) as exc:  # another TensorFlow's internals
        return None, f"{type(exc).__name__}: {exc}"
    return (DirectCall(plan, public), "") if plan is not None else (None, why)


def _plan(function: Any, positional: Sequence[str]) -> tuple[_Plan | None, str]:
    from tensorflow.python.framework import dtypes
    from tensorflow.python.util import nest

    atomic = function._inference_function
    arguments = list(atomic.cached_definition.signature.input_arg)
    captures = list(function.captured_inputs)
    args, kwargs = function.structured_input_signature
    if positional:
        if kwargs or len(args) != len(positional):
            return None, f"inputs that are not {len(positional)} positional tensors"
        names, specs = list(positional), dict(zip(positional, args, strict=True))
    else:
        if args:
            return None, "positional inputs"
        names, specs = [argument.name for argument in arguments[: len(kwargs)]], kwargs
        if sorted(names) != sorted(kwargs):
            return None, f"its arguments {names} are not its inputs {sorted(kwargs)}"
    if len(arguments) != len(specs) + len(captures):
        return None, f"{len(arguments)} arguments, {len(specs)} inputs, {len(captures)} captures"
    if any(arguments[i].type != specs[name].dtype.as_datatype_enum for i, name in enumerate(names)):
        return None, "arguments whose dtypes are not its inputs'"
    if atomic._call_options.control_captures:
        return None, "control captures"
    flat_outputs = atomic.function_type.flat_outputs
    if any(output.dtype in (dtypes.resource, dtypes.variant) for output in flat_outputs):
        return None, "resource or variant outputs"
    order = nest.pack_sequence_as(function.structured_outputs, list(range(len(flat_outputs))))
    if not isinstance(order, dict):
        return None, "outputs that are not a dict"
    inputs = [(name, specs[name].dtype.as_datatype_enum) for name in names]
    return _Plan(function, atomic.name.decode(), inputs, captures, list(order.items())), ""
