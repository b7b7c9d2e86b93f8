"""Type hints -> schema: every input kind, the load-time errors, and the described schema."""

import enum
from typing import Annotated, Any, Literal

import numpy as np
import pytest

from fnserve import Field, Image, Tensor
from fnserve.runtime.errors import FunctionError
from fnserve.runtime.schema import InputField, Schema
from fnserve.runtime.types import ImageType, TensorType

WHERE = "/fns/demo/predict.py: function 'demo'"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def schema_of(func: Any, *, has_model: bool = False) -> Schema:
    return Schema.from_function(func, has_model=has_model, where=WHERE)


def only_input(func: Any) -> InputField:
    (field,) = schema_of(func).inputs
    return field


@pytest.mark.parametrize(
    ("hint", "kind", "dtype"),
    [(int, "int", "int64"), (float, "float", "float64"), (str, "str", "object"), (bool, "bool", "bool")],
)
def test_scalar_kinds(hint: type, kind: str, dtype: str) -> None:
    def f(x: hint) -> float:  # type: ignore[valid-type]
        return 0.0

    field = only_input(f)
    assert (field.name, field.kind, field.dtype, field.shape, field.required) == ("x", kind, dtype, (), True)


def test_literal_is_a_category_with_its_choices() -> None:
    def f(season: Literal["winter", "summer"]) -> float:
        return 0.0

    field = only_input(f)
    assert field.kind == "category" and field.choices == ("winter", "summer")


def test_non_string_literal_is_refused() -> None:
    def f(level: Literal[1, 2]) -> float:
        return 0.0

    with pytest.raises(FunctionError, match=r"predict\.py: function 'demo'.*'level'"):
        schema_of(f)


def test_enum_is_a_category_of_its_values_and_its_default_becomes_the_value() -> None:
    def f(color: Color = Color.BLUE) -> float:
        return 0.0

    field = only_input(f)
    assert field.kind == "category" and field.choices == ("red", "blue")
    assert not field.required and field.default == "blue"


def test_tensor_has_dtype_and_shape() -> None:
    def f(v: Tensor[np.float32, 16], m: Tensor[np.uint8, 28, None]) -> float:
        return 0.0

    v, m = schema_of(f).inputs
    assert v.kind == "tensor" and v.tensor == TensorType("float32", (16,)) and v.shape == (16,)
    assert m.dtype == "uint8" and m.shape == (28, None)


def test_bad_tensor_dtype_and_dimension_raise() -> None:
    with pytest.raises(TypeError, match="dtype"):
        Tensor[complex, 3]
    with pytest.raises(TypeError, match="dimensions"):
        Tensor[np.float32, 0]


def test_sized_image_is_uint8_rgb_of_that_size() -> None:
    def f(photo: Image[64, 32]) -> float:
        return 0.0

    field = only_input(f)
    assert field.kind == "image" and field.image == ImageType((64, 32))
    assert field.dtype == "uint8" and field.shape == (64, 32, 3)


def test_unsized_image_has_any_size() -> None:
    def f(photo: Image) -> float:
        return 0.0

    field = only_input(f)
    assert field.kind == "image" and field.shape == (None, None, 3)


def test_image_with_default_is_refused() -> None:
    def f(photo: Image[4, 4] = None) -> float:
        return 0.0

    with pytest.raises(FunctionError, match=r"'photo'.*cannot have a default"):
        schema_of(f)


def test_field_bounds_are_kept_on_numbers() -> None:
    def f(p: Annotated[float, Field(ge=0, le=1, allow_nan=True, description="a share")]) -> float:
        return 0.0

    field = only_input(f)
    assert field.kind == "float" and field.constraint == Field(
        ge=0, le=1, allow_nan=True, description="a share"
    )


def test_field_bounds_on_a_string_are_refused() -> None:
    def f(s: Annotated[str, Field(ge=0)]) -> float:
        return 0.0

    with pytest.raises(FunctionError, match="'s'"):
        schema_of(f)


def test_field_with_inverted_bounds_raises() -> None:
    with pytest.raises(TypeError, match="ge is larger than le"):
        Field(ge=2, le=1)


def test_defaults_make_inputs_optional() -> None:
    def f(x: float, note: str = "none", n: int = 3) -> float:
        return 0.0

    x, note, n = schema_of(f).inputs
    assert x.required and not note.required and not n.required
    assert (note.default, n.default) == ("none", 3)


def test_loader_functions_skip_the_model_parameter() -> None:
    def f(model: Any, x: float) -> float:
        return 0.0

    assert [i.name for i in schema_of(f, has_model=True).inputs] == ["x"]


def test_unsupported_type_names_file_function_and_parameter() -> None:
    def f(x: complex) -> float:
        return 0.0

    with pytest.raises(FunctionError, match=r"^/fns/demo/predict\.py: function 'demo': input 'x' has unsup"):
        schema_of(f)


def test_missing_hint_names_file_function_and_parameter() -> None:
    def f(x) -> float:  # type: ignore[no-untyped-def]
        return 0.0

    with pytest.raises(FunctionError, match=r"^/fns/demo/predict\.py: function 'demo': input 'x' needs a"):
        schema_of(f)


@pytest.mark.parametrize("star", ["args", "kwargs"])
def test_star_parameters_are_refused(star: str) -> None:
    def f_args(x: float, *args: float) -> float:
        return 0.0

    def f_kwargs(x: float, **kwargs: float) -> float:
        return 0.0

    with pytest.raises(FunctionError, match=rf"^/fns/demo/predict\.py: function 'demo'.*\*{star}"):
        schema_of(f_args if star == "args" else f_kwargs)


def test_unresolvable_hint_is_a_function_error() -> None:
    def f(x: "Missing") -> float:  # type: ignore[name-defined]  # noqa: F821
        return 0.0

    with pytest.raises(FunctionError, match="cannot resolve type hints"):
        schema_of(f)


def test_no_inputs_is_refused() -> None:
    with pytest.raises(FunctionError, match="at least one input"):
        schema_of(lambda: 0.0)


def test_unsupported_return_type_is_refused() -> None:
    def f(x: float) -> complex:
        return 0j

    with pytest.raises(FunctionError, match="return type"):
        schema_of(f)


def test_describe_lists_inputs_and_output() -> None:
    def f(
        count: Annotated[int, Field(ge=0, le=100)],
        season: Literal["winter", "summer"],
        vector: Tensor[np.float32, 3],
        photo: Image[4, 4],
        ratio: Annotated[float, Field(allow_nan=True)] = 0.0,
    ) -> dict[str, float]:
        return {}

    assert schema_of(f).describe() == {
        "inputs": [
            {"name": "count", "type": "int", "required": True, "ge": 0, "le": 100},
            {"name": "season", "type": "category", "required": True, "choices": ["winter", "summer"]},
            {"name": "vector", "type": "tensor", "required": True, "dtype": "float32", "shape": [3]},
            {"name": "photo", "type": "image", "required": True, "dtype": "uint8", "shape": [4, 4, 3]},
            {"name": "ratio", "type": "float", "required": False, "default": 0.0, "allow_nan": True},
        ],
        "output": {"type": "dict"},
    }


def test_tensor_output_is_described_with_its_shape() -> None:
    def f(x: float) -> Tensor[np.float32, 2]:
        return np.zeros(2)

    assert schema_of(f).output.describe() == {"type": "tensor", "dtype": "float32", "shape": [2]}
