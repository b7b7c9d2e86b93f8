"""Deployment state changes by value: deploy, scale, split, promote, rollback; the JSON form."""

from __future__ import annotations

import pytest

from fnserve.gateway import deployments as d
from fnserve.gateway.platform import FunctionDeployment, Scaling, VersionDeployment
from fnserve.gateway.routing import parse_path


def base() -> FunctionDeployment:
    return d.deploy(None, "recs", image="functions/recs")


def test_a_new_function_gets_version_1_at_full_weight() -> None:
    dep = base()
    assert dep.versions == {"1": VersionDeployment("functions/recs", 100, "latest")}
    assert dep.scaling == Scaling() and dep.previous_weights is None


def test_a_new_version_is_dark_unless_given_a_weight() -> None:
    dark = d.deploy(base(), "recs", version="2", image="functions/recs", checkpoint_version="7")
    assert dark.weights() == {"1": 100, "2": 0} and dark.versions["2"].checkpoint_version == "7"
    canary = d.deploy(base(), "recs", version="2", image="functions/recs", weight=10)
    assert canary.weights() == {"1": 90, "2": 10} and canary.previous_weights == {"1": 100}


def test_deploy_without_a_version_updates_the_only_one() -> None:
    dep = d.deploy(base(), "recs", checkpoint_version="4", scaling={"min_replicas": 0}, sticky_key="user")
    assert dep.versions["1"].checkpoint_version == "4"
    assert dep.scaling.min_replicas == 0 and dep.sticky_key == "user"


@pytest.mark.parametrize(
    ("current", "kwargs", "message"),
    [
        (None, {}, "needs an image"),
        (None, {"image": "x", "version": "a b"}, "version label"),
        (None, {"image": "x", "checkpoint_version": "new"}, "a number or 'latest'"),
        (None, {"image": "x", "scaling": {"min_replicas": 3, "max_replicas": 2}}, "min .3. <= max .2."),
        (None, {"image": "x", "scaling": {"replicas": 3}}, "unknown scaling"),
    ],
)
def test_bad_deploys_are_refused_with_the_reason(current: None, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(d.DeployError, match=message):
        d.deploy(current, "recs", **kwargs)


def test_bad_names_and_ambiguous_versions_are_refused() -> None:
    with pytest.raises(d.DeployError, match="function name"):
        d.deploy(None, "re/cs", image="x")
    two = d.deploy(base(), "recs", version="2", image="x")
    with pytest.raises(d.DeployError, match="name the one to change"):
        d.deploy(two, "recs", checkpoint_version="3")


def test_split_promote_and_rollback() -> None:
    two = d.deploy(base(), "recs", version="2", image="x")
    split = d.split(two, {"1": 90, "2": 10})
    assert split.weights() == {"1": 90, "2": 10} and split.previous_weights == {"1": 100, "2": 0}
    promoted = d.promote(split, "2")
    assert promoted.weights() == {"1": 0, "2": 100}
    back = d.rollback(promoted)
    assert back.weights() == {"1": 90, "2": 10}
    assert d.rollback(back).weights() == {"1": 0, "2": 100}  # a second rollback undoes the first


def test_split_errors() -> None:
    two = d.deploy(base(), "recs", version="2", image="x")
    with pytest.raises(d.DeployError, match="no version '3'"):
        d.split(two, {"3": 100})
    with pytest.raises(d.DeployError, match="add up to 100"):
        d.split(two, {"1": 50, "2": 20})
    with pytest.raises(d.DeployError, match="no earlier split") as caught:
        d.rollback(base())
    assert caught.value.status == 409


def test_the_json_form_round_trips_and_is_checked() -> None:
    dep = d.split(d.deploy(base(), "recs", version="2", image="x", sticky_key="user"), {"1": 50, "2": 50})
    assert FunctionDeployment.from_dict(dep.to_dict()) == dep
    for bad in [
        [],
        {"name": "f"},
        {"name": "f", "versions": {"1": {"image": "x", "weight": 300}}},
        {"name": "f", "versions": {"1": {"image": "x", "colour": "red"}}},
        {"name": "f", "versions": {"1": {"image": "x"}}, "scaling": {"min_replicas": "2"}},
    ]:
        with pytest.raises(ValueError):
            FunctionDeployment.from_dict(bad)


@pytest.mark.parametrize(
    ("path", "parsed"),
    [
        ("/function/recs", ("recs", None, "/function/recs")),
        ("/function/recs@4", ("recs", "4", "/function/recs")),
        ("/v2/models/recs", ("recs", None, "/v2/models/recs")),
        ("/v2/models/recs/ready", ("recs", None, "/v2/models/recs/ready")),
        ("/v2/models/recs/infer", ("recs", None, "/v2/models/recs/infer")),
        ("/v2/models/recs/versions/4/infer", ("recs", "4", "/v2/models/recs/infer")),
        ("/v1/models/recs:predict", ("recs", None, "/v1/models/recs:predict")),
        ("/v1/models/recs/versions/4:predict", ("recs", "4", "/v1/models/recs:predict")),
        ("/v1/models/recs/metadata", ("recs", None, "/v1/models/recs/metadata")),
        ("/v1/models/recs", ("recs", None, "/v1/models/recs")),
        ("/function/", None),
        ("/function/a/b", None),
        ("/v2/models/recs/explain", None),
        ("/v2/models/recs/versions//infer", None),
        ("/v1/models/recs:delete", None),
        ("/v2/health/ready", None),
        ("/functions", None),
    ],
)
def test_prediction_paths(path: str, parsed: tuple[str, str | None, str] | None) -> None:
    assert parse_path(path) == parsed


def test_the_sticky_key_comes_from_a_header_or_else_a_query_parameter() -> None:
    from fnserve.gateway.routing import FunctionRoute, FunctionStats

    route = FunctionRoute(d.deploy(None, "recs", image="x", sticky_key="User"), {}, FunctionStats())
    assert route.sticky_key([(b"user", b"ann")], b"user=bob") == "ann"
    assert route.sticky_key([(b"accept", b"*/*")], b"a=1&User=bob") == "bob"
    assert route.sticky_key([], b"") is None
    assert FunctionRoute(base(), {}, FunctionStats()).sticky_key([(b"user", b"ann")], b"") is None


def test_forwarded_headers_drop_hop_by_hop_ones_and_add_the_request_id() -> None:
    from types import SimpleNamespace

    from fnserve.gateway.proxy import Proxy
    from fnserve.gateway.service import GatewayOptions

    proxy = Proxy(SimpleNamespace(options=GatewayOptions(token="t", protect_predictions=True)))  # type: ignore[arg-type]
    scope = {
        "client": ("10.0.0.9", 5000),
        "headers": [
            (b"host", b"gw"), (b"connection", b"keep-alive, x-secret"), (b"x-secret", b"1"),
            (b"transfer-encoding", b"chunked"), (b"authorization", b"Bearer t"), (b"accept", b"*/*"),
            (b"x-forwarded-for", b"1.2.3.4"), (b"x-request-id", b"theirs"), (b"content-length", b"9"),
        ],
    }  # fmt: skip
    assert proxy._forwarded_headers(scope, b"abc") == [
        (b"accept", b"*/*"),
        (b"x-request-id", b"abc"),
        (b"x-forwarded-for", b"1.2.3.4, 10.0.0.9"),
    ]
