"""A function's input/output schema, read from its type hints.

The schema is the single description of a function's interface: it drives query-string
parsing, JSON decoding, validation and its error messages, and the metadata served by
``GET /functions`` and the Open Inference Protocol.
"""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from fnserve.runtime.errors import FunctionError
from fnserve.runtime.types import ANY_IMAGE, Field, Image, ImageType, TensorType

Kind = Literal["int", "float", "str", "bool", "category", "tensor", "image"]
OutputKind = Literal["int", "float", "str", "bool", "tensor", "dict", "any"]

_SCALARS: dict[Any, Kind] = {int: "int", float: "float", str: "str", bool: "bool"}
_NO_DEFAULT = inspect.Parameter.empty


@dataclass(frozen=True)
class InputField:
    """One input of a function, as the runtime validates it."""

    name: str
    kind: Kind
    required: bool
    default: Any = None
    choices: tuple[str, ...] = ()  # the allowed values of a category
    tensor: TensorType | None = None
    image: ImageType | None = None
    constraint: Field | None = None

    @property
    def dtype(self) -> str:
        """Numpy dtype of this input's column."""
        if self.tensor is not None:
            return self.tensor.dtype
        return {"int": "int64", "float": "float64", "bool": "bool", "image": "uint8"}.get(self.kind, "object")

    @property
    def shape(self) -> tuple[int | None, ...]:
        """Shape of one instance (without the batch axis)."""
        if self.tensor is not None:
            return self.tensor.shape
        if self.image is not None:
            return (*self.image.size, 3) if self.image.size else (None, None, 3)
        return ()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.kind, "required": self.required}
        if not self.required:
            out["default"] = self.default
        if self.choices:
            out["choices"] = list(self.choices)
        if self.kind in ("tensor", "image"):
            out["dtype"], out["shape"] = self.dtype, list(self.shape)
        if self.constraint is not None:
            c = self.constraint
            out.update({k: v for k, v in (("ge", c.ge), ("le", c.le)) if v is not None})
            if c.allow_nan:
                out["allow_nan"] = True
            if c.description:
                out["description"] = c.description
        return out


@dataclass(frozen=True)
class OutputSpec:
    kind: OutputKind
    tensor: TensorType | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.tensor is not None:
            out["dtype"], out["shape"] = self.tensor.dtype, list(self.tensor.shape)
        return out


@dataclass(frozen=True)
class Schema:
    inputs: tuple[InputField, ...]
    output: OutputSpec

    def field(self, name: str) -> InputField | None:
        return self._by_name.get(name)

    @functools.cached_property
    def _by_name(self) -> dict[str, InputField]:
        # Looked up for every query parameter and JSON key of every request: a dict, not a scan.
        return {f.name: f for f in self.inputs}

    def describe(self) -> dict[str, Any]:
        return {"inputs": [f.describe() for f in self.inputs], "output": self.output.describe()}

    @classmethod
    def from_function(cls, func: Callable[..., Any], *, has_model: bool, where: str) -> Schema:
        """Read the schema from ``func``'s signature; ``FunctionError`` names ``where`` on a problem."""
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception as exc:  # a NameError in a string annotation, typically
            raise FunctionError(f"{where}: cannot resolve type hints: {exc}") from None
        params = list(inspect.signature(func).parameters.values())
        if has_model:
            if not params or params[0].kind not in (
                params[0].POSITIONAL_ONLY,
                params[0].POSITIONAL_OR_KEYWORD,
            ):
                raise FunctionError(f"{where}: with a loader, the first parameter must receive the model")
            params = params[1:]
        fields = []
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise FunctionError(f"{where}: *args/**kwargs cannot be inputs; name each input ({param})")
            if param.name not in hints:
                raise FunctionError(f"{where}: input {param.name!r} needs a type hint (int, float, str, ...)")
            fields.append(_input_field(param, hints[param.name], where))
        if not fields:
            raise FunctionError(f"{where}: a prediction function needs at least one input")
        return cls(tuple(fields), _output_spec(hints.get("return", Any), where))


def _input_field(param: inspect.Parameter, hint: Any, where: str) -> InputField:
    required = param.default is _NO_DEFAULT
    default = None if required else param.default
    base, extras = _split_annotated(hint)
    constraint = next((e for e in extras if isinstance(e, Field)), None)
    tensor = next((e for e in extras if isinstance(e, TensorType)), None)
    image = next((e for e in extras if isinstance(e, ImageType)), None)
    base_field = InputField(param.name, "str", required, default, constraint=constraint)
    if tensor is not None:
        return replace(base_field, kind="tensor", tensor=tensor)
    if image is not None or base is Image:
        if not required:
            raise FunctionError(f"{where}: image input {param.name!r} cannot have a default")
        return replace(base_field, kind="image", image=image or ANY_IMAGE)
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if not all(isinstance(c, str) for c in choices):
            raise FunctionError(f"{where}: Literal choices of {param.name!r} must all be strings")
        return replace(base_field, kind="category", choices=tuple(choices))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        choices = tuple(str(m.value) for m in base)
        default = default.value if isinstance(default, enum.Enum) else default
        return replace(base_field, kind="category", choices=choices, default=default)
    if base in _SCALARS:
        if constraint is not None and base not in (int, float):
            raise FunctionError(
                f"{where}: Field(...) bounds apply to int and float inputs, not {param.name!r}"
            )
        return replace(base_field, kind=_SCALARS[base])
    raise FunctionError(
        f"{where}: input {param.name!r} has unsupported type {hint!r}; expected int, float, str, bool, "
        "Literal[...], an Enum, Tensor[dtype, *shape] or Image[height, width]"
    )


def _output_spec(hint: Any, where: str) -> OutputSpec:
    base, extras = _split_annotated(hint)
    tensor = next((e for e in extras if isinstance(e, TensorType)), None)
    if tensor is not None:
        return OutputSpec("tensor", tensor)
    if base in _SCALARS:
        return OutputSpec(_SCALARS[base])  # type: ignore[arg-type]
    if base is Any or base is inspect.Signature.empty or base is np.ndarray:
        return OutputSpec("any")
    if typing.get_origin(base) is dict or base is dict:
        return OutputSpec("dict")
    if typing.get_origin(base) is list or base is list:
        return OutputSpec("any")
    raise FunctionError(f"{where}: unsupported return type {hint!r}; expected a scalar, dict, list or Tensor")


def _split_annotated(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return base, tuple(extras)
    return hint, ()
