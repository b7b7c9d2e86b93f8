"""The docker target's planners are pure: the environment's credentials come in as a parameter
(the platform reads ``os.environ`` once), so a test, or a gateway, decides what replicas get."""

from __future__ import annotations

from pathlib import Path

import pytest

from fnserve.docker.replicas import replica_access
from fnserve.project import ProjectSettings


def test_replica_credentials_come_from_the_environment_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-os-environ")
    settings = ProjectSettings.from_mapping(tmp_path, {}, {}, {"store": "s3://bucket/store"})
    given = replica_access(settings, {}, "fnserve", {"AWS_ACCESS_KEY_ID": "given", "HOME": "/root"})
    assert given.environment == {"FNSERVE_STORE": "s3://bucket/store", "AWS_ACCESS_KEY_ID": "given"}
    assert "AWS_ACCESS_KEY_ID" not in replica_access(settings, {}, "fnserve", {}).environment
