"""``@predict`` marks and checks its options at decoration time; it never wraps or registers."""

from __future__ import annotations

from typing import Any

import pytest

from fnserve import predict
from fnserve.runtime.spec import PredictSpec, spec_of


def _load(checkpoint_dir: str) -> Any:
    return checkpoint_dir


def test_bare_decorator_returns_the_function_unchanged_and_callable() -> None:
    def double(x: float) -> float:
        return x * 2

    marked = predict(double)
    assert marked is double
    assert marked(2.0) == 4.0
    spec = spec_of(marked)
    assert isinstance(spec, PredictSpec)
    assert spec.name == "double" and spec.loader is None and spec.checkpoint is None
    assert spec.version == "latest" and spec.vectorized


def test_called_decorator_returns_the_function_unchanged_and_keeps_its_options() -> None:
    def score(model: float, x: float) -> float:
        """Scores x.

        More text that is not the description."""
        return model * x

    marked = predict(name="scorer", loader=_load, version=3, max_batch_size=8)(score)
    assert marked is score
    assert marked(2.0, 3.0) == 6.0
    spec = spec_of(marked)
    assert spec is not None
    assert (spec.name, spec.checkpoint, spec.version, spec.max_batch_size) == ("scorer", "scorer", "3", 8)
    assert spec.description == "Scores x."


def test_spec_is_frozen() -> None:
    spec = spec_of(predict(name="frozen")(lambda x: x))
    assert spec is not None
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_unmarked_objects_have_no_spec() -> None:
    assert spec_of(len) is None
    assert spec_of(object()) is None


@pytest.mark.parametrize("name", ["Upper", "1starts-with-digit", "has space", "", "a" * 64, "dot.ted"])
def test_bad_function_name_raises_at_decoration(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        predict(name=name)(lambda x: x)


def test_bad_python_name_used_as_function_name_raises_at_decoration() -> None:
    def CamelCase(x: float) -> float:  # not a valid served name: the point of the test
        return x

    with pytest.raises(ValueError, match="CamelCase"):
        predict(CamelCase)


@pytest.mark.parametrize("option", ["max_batch_size", "max_concurrency"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_non_positive_int_limits_raise(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        predict(**{option: value})


@pytest.mark.parametrize("value", [-1, 0, True, "5"])
def test_timeout_must_be_a_positive_number(value: Any) -> None:
    with pytest.raises(ValueError, match=r"timeout_s=\.\.\.\) must be a positive number"):
        predict(timeout_s=value)


def test_max_batch_delay_is_not_an_option() -> None:
    # The batcher has no batch window (an idle model runs a lone request at once), so a delay
    # option would be accepted and ignored; it is refused instead.
    with pytest.raises(TypeError, match="max_batch_delay_ms"):
        predict(max_batch_delay_ms=2.0)  # type: ignore[call-overload]


def test_checkpoint_without_loader_raises() -> None:
    with pytest.raises(TypeError, match="loader"):
        predict(checkpoint="recs")


def test_non_callable_loader_raises() -> None:
    with pytest.raises(TypeError, match="callable"):
        predict(loader="not a function")  # type: ignore[call-overload]


def test_bad_checkpoint_name_raises() -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        predict(loader=_load, checkpoint="../escape")


def test_checkpoint_url_is_accepted_as_is() -> None:
    spec = spec_of(predict(name="remote", loader=_load, checkpoint="s3://bucket/recs")(lambda m, x: x))
    assert spec is not None and spec.checkpoint == "s3://bucket/recs"


@pytest.mark.parametrize("version", ["0", "-1", "v1", "1.5", "newest", 0, "1" * 19])
def test_bad_version_raises(version: Any) -> None:
    with pytest.raises(ValueError, match="version"):
        predict(loader=_load, version=version)


def test_decorating_a_non_callable_raises() -> None:
    with pytest.raises(TypeError, match="decorates functions"):
        predict(name="x")(42)  # type: ignore[arg-type]
