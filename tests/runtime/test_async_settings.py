"""``[async]`` settings: read by the one precedence rule, each bad value named with where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from fnserve.runtime.errors import ConfigError
from fnserve.runtime.settings import Settings


def settings(tmp_path: Path, config: dict[str, object], environ: dict[str, str] | None = None) -> Settings:
    return Settings.from_mapping(tmp_path, config, environ or {}, {})


def test_defaults_put_the_queue_beside_the_checkpoints(tmp_path: Path) -> None:
    found = settings(tmp_path, {"store": {"root": "s3://models/store"}}).async_calls
    assert found.queue == "" and found.queue_in("s3://models/store") == "s3://models/store/_async"
    assert (found.max_queued, found.concurrency, found.result_ttl_s, found.lease_s) == (
        10_000,
        4,
        86_400.0,
        10.0,
    )
    assert found.enabled and found.callback_hosts == ()


def test_the_environment_wins_over_fn_toml(tmp_path: Path) -> None:
    config = {"async": {"result_ttl_s": 60, "max_queued": 5, "callback_hosts": ["*.corp.example"]}}
    environ = {"FNSERVE_ASYNC_RESULT_TTL_S": "3600", "FNSERVE_ASYNC_CALLBACK_HOSTS": "a.example, B.example"}
    found = settings(tmp_path, config, environ).async_calls
    assert found.result_ttl_s == 3600.0 and found.max_queued == 5
    assert found.callback_hosts == ("a.example", "b.example")
    assert settings(tmp_path, {"async": {"max_queued": 0}}).async_calls.enabled is False


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        ({"async": {"colour": "red"}}, {}, "fn.toml: [async] has no setting 'colour'"),
        (
            {},
            {"FNSERVE_ASYNC_MAX_QUEUED": "lots"},
            "setting async_max_queued (FNSERVE_ASYNC_MAX_QUEUED) must be int",
        ),
        ({"async": {"concurrency": 0}}, {}, "setting async concurrency must be at least 1, got 0"),
        ({"async": {"result_ttl_s": -1}}, {}, "setting async result_ttl_s must be positive, got -1.0"),
        ({"async": {"callback_hosts": "x"}}, {"FNSERVE_ASYNC_CALLBACK_HOSTS": ""}, None),
        (
            {"async": {"callback_hosts": [1]}},
            {},
            "setting async callback_hosts (fn.toml [async] callback_hosts)",
        ),
        (
            {"async": {"queue": "s3://KEY:SECRET@jobs/q"}},
            {},
            "setting async queue 's3://***@jobs/q' carries credentials",
        ),
        ({"async": "on"}, {}, "fn.toml: [async] must be a table"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, config: dict[str, object], environ: dict[str, str], message: str | None
) -> None:
    if message is None:  # a string is a list of one (comma-separated), as from the environment
        assert settings(tmp_path, config, environ).async_calls.callback_hosts == ("x",)
        return
    with pytest.raises(ConfigError) as refused:
        settings(tmp_path, config, environ)
    assert refused.value.message.startswith(message), refused.value.message
    assert "SECRET" not in refused.value.message
