"""A SavedModel's signature called directly (fnserve.runtime.tf_direct) answers exactly as the
public call does, and steps aside wherever the public call would do something else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fnserve import load_model
from fnserve.optimize.convert import make_variant
from fnserve.runtime.models import FrozenModel, SavedModel
from fnserve.runtime.tf_direct import DirectCall, direct_call, fastest_call
from tests.support.tiny_models import export_scorer, scorer_inputs

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_scorer(tmp_path_factory.mktemp("direct") / "scorer")


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Strings in, a matrix and two columns out (names out of alphabetical order)."""

    class Texts(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="word"),
                tf.TensorSpec([None, 2], tf.int64, name="ab"),
            ]
        )
        def serve(self, word: Any, ab: Any) -> dict[str, Any]:
            return {
                "zlength": tf.strings.length(word),
                "upper": tf.strings.upper(word),
                "sum": tf.reduce_sum(ab, axis=1),
            }

    folder = tmp_path_factory.mktemp("direct") / "texts"
    module = Texts()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def test_the_direct_call_answers_as_the_public_call_at_every_batch_size(scorer: Path) -> None:
    model = load_model(scorer)
    assert isinstance(model, SavedModel) and isinstance(model._call, DirectCall)
    inputs = scorer_inputs(300)
    for rows in (1, 2, 23, 64, 300):
        arrays = model._check({name: value[:rows] for name, value in inputs.items()})
        direct, public = model._call(arrays), model._public(arrays)
        assert set(direct) == set(public) == {"score", "logits"}
        for name in direct:
            assert direct[name].dtype == public[name].dtype
            np.testing.assert_array_equal(direct[name], public[name])


def test_a_frozen_graph_is_called_directly_too(scorer: Path, tmp_path: Path) -> None:
    make_variant(scorer, tmp_path / "frozen", "freeze")
    model = load_model(tmp_path / "frozen")
    assert isinstance(model, FrozenModel) and isinstance(model._call, DirectCall)
    arrays = model._check(scorer_inputs(17))
    direct, public = model._call(arrays), model._public(arrays)
    for name in ("score", "logits"):
        np.testing.assert_array_equal(direct[name], public[name])


def test_strings_and_outputs_by_name(texts: Path) -> None:
    model = load_model(texts)
    assert isinstance(model, SavedModel) and isinstance(model._call, DirectCall)
    got = model(word=np.array(["ab", "", "héllo"], dtype=object), ab=np.array([[1, 2], [3, 4], [5, -5]]))
    assert got["zlength"].tolist() == [2, 0, 6]  # bytes, as the public call counts them
    assert got["upper"].tolist() == [b"AB", b"", "HéLLO".encode()]
    assert got["sum"].tolist() == [3, 7, 0]
    public = model._public(model._check({"word": np.array(["ab"], dtype=object), "ab": np.array([[1, 2]])}))
    assert public["upper"].tolist() == [b"AB"]


def test_an_answer_does_not_share_memory_with_the_inputs(tmp_path: Path) -> None:
    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"same": tf.identity(x)}

    module = Echo()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    model = load_model(tmp_path)
    assert isinstance(model, SavedModel) and isinstance(model._call, DirectCall)
    x = np.ones((4, 64), np.float32)
    answer = model(x=x)["same"]
    x[:] = 7  # the caller reuses its buffer: the answer it already has must not change
    np.testing.assert_array_equal(answer, np.ones((4, 64), np.float32))


def test_under_a_gradient_tape_the_public_call_is_made(scorer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(scorer)
    assert isinstance(model, SavedModel)
    public = model._public
    calls = []

    def counted(arrays: Any) -> dict[str, np.ndarray]:
        calls.append(1)
        return public(arrays)

    assert isinstance(model._call, DirectCall)
    monkeypatch.setattr(model._call, "_public", counted)
    model(**scorer_inputs(4))
    assert calls == []
    with tf.GradientTape():
        model(**scorer_inputs(4))
    assert calls == [1]


def test_a_function_it_cannot_call_exactly_is_called_the_public_way() -> None:
    positional = tf.function(lambda x: x * 2).get_concrete_function(tf.TensorSpec([None], tf.float32))
    found, why = direct_call(positional, lambda arrays: {})
    assert found is None and "positional" in why

    def public(arrays: Any) -> dict[str, np.ndarray]:
        return {}

    assert fastest_call(positional, public, "here") is public
    found, why = direct_call(object(), lambda arrays: {})
    assert found is None and why.startswith("AttributeError")


def test_the_direct_call_keeps_its_function_alive(scorer: Path) -> None:
    import gc

    loaded = tf.saved_model.load(str(scorer))
    signature = loaded.signatures["serving_default"]
    arrays = scorer_inputs(3)
    expected = {k: v.numpy() for k, v in signature(**arrays).items()}
    found, _ = direct_call(signature, lambda arrays: {})
    assert found is not None
    del loaded, signature
    gc.collect()  # the function's name must still be registered with the eager context
    got = found(arrays)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
