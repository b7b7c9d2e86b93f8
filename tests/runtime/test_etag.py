"""GET predictions are cacheable: ETag keyed on function, model version and the normalized query."""

from __future__ import annotations

from typing import Any

import pytest

from fnserve import predict
from tests.runtime.test_app_versions import until


def calls(client: Any, name: str) -> int:
    """Instances the function's batcher has run so far (0 before its first call)."""
    batcher = client.app.state.runtime.batchers.get(name)
    return batcher.batched_instances if batcher is not None else 0


def test_get_answers_carry_a_weak_etag_and_cache_control(serve: Any) -> None:
    with serve("double") as client:
        response = client.get("/function/double?x=2")
    assert response.status_code == 200 and response.json() == {"predictions": [4.0]}
    assert response.headers["etag"].startswith('W/"0-')  # no checkpoint: version 0
    assert response.headers["cache-control"] == "public, max-age=0"
    assert response.headers["vary"] == "Accept"


def test_the_etag_follows_the_normalized_query(serve: Any) -> None:
    with serve("scalar") as client:
        tag = client.get("/function/scalar?word=ab&times=2").headers["etag"]
        assert client.get("/function/scalar?times=2&word=ab").headers["etag"] == tag  # order
        assert client.get("/function/scalar?word=ab&times=2.0").status_code == 422  # not an int
        assert client.get("/function/scalar?word=ab").headers["etag"] == tag  # the default is 2
        assert client.get("/function/scalar?word=ab&times=3").headers["etag"] != tag
        assert client.get("/function/scalar?word=abc&times=2").headers["etag"] != tag


def test_a_matching_if_none_match_is_304_without_running_the_model(serve: Any) -> None:
    with serve("double") as client:
        first = client.get("/function/double?x=2")
        tag = first.headers["etag"]
        ran = calls(client, "double")
        for header in (tag, f'"other", {tag}', tag.removeprefix("W/"), "*"):
            again = client.get("/function/double?x=2.0", headers={"if-none-match": header})
            assert again.status_code == 304, header
            assert again.content == b"" and again.headers["etag"] == tag
            assert again.headers["cache-control"] == "public, max-age=0"
        assert calls(client, "double") == ran
        other = client.get("/function/double?x=3", headers={"if-none-match": tag})
    assert other.status_code == 200 and other.json() == {"predictions": [6.0]}


def test_a_new_model_version_changes_the_etag(serve: Any, publish_weight: Any) -> None:
    publish_weight("2")
    with serve("weighted") as client:
        old = client.get("/function/weighted?x=3")
        assert old.headers["etag"].startswith('W/"1-')
        publish_weight("5")
        until(lambda: client.get("/function/weighted?x=1").headers["x-model-version"] == "2", "version 2")
        new = client.get("/function/weighted?x=3", headers={"if-none-match": old.headers["etag"]})
    assert new.status_code == 200 and new.json() == {"predictions": [15.0]}
    assert new.headers["etag"].startswith('W/"2-') and new.headers["etag"] != old.headers["etag"]


def test_json_and_arrow_answers_have_different_etags(serve: Any) -> None:
    with serve("double") as client:
        as_json = client.get("/function/double?x=2").headers["etag"]
        as_arrow = client.get(
            "/function/double?x=2", headers={"accept": "application/vnd.apache.arrow.stream"}
        ).headers["etag"]
    assert as_json != as_arrow


def test_cache_max_age_comes_from_the_function(serve: Any) -> None:
    with serve("caching") as client:
        cached = client.get("/function/cached?x=1")
        uncached = client.get("/function/uncached?x=1", headers={"if-none-match": "*"})
    assert cached.headers["cache-control"] == "public, max-age=60" and "etag" in cached.headers
    assert uncached.status_code == 200 and uncached.headers["cache-control"] == "no-store"
    assert "etag" not in uncached.headers


def test_post_answers_are_not_tagged(serve: Any) -> None:
    with serve("double") as client:
        response = client.post("/function/double", json={"x": 2})
    assert response.status_code == 200 and "etag" not in response.headers


@pytest.mark.parametrize("bad", [-1, 1.5, True, "60"])
def test_cache_max_age_must_be_a_non_negative_int_or_none(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"cache_max_age_s=\.\.\.\) must be a non-negative int or None"):
        predict(cache_max_age_s=bad)


def test_cache_max_age_defaults_to_zero_and_is_kept_on_the_spec() -> None:
    @predict(cache_max_age_s=30)
    def f(x: float) -> float:
        return x

    @predict
    def g(x: float) -> float:
        return x

    assert f.__fnserve__.cache_max_age_s == 30  # type: ignore[attr-defined]
    assert g.__fnserve__.cache_max_age_s == 0  # type: ignore[attr-defined]
