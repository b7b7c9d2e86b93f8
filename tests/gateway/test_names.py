"""The gateway refuses exactly the function names the runtime refuses: one rule, the project's.

Before, the gateway took any of ``[A-Za-z0-9][A-Za-z0-9_.-]{0,62}``, so ``fn deploy Recs`` or
``recs.v2`` made a function no runtime would serve under that name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fnserve import predict
from fnserve.gateway import deployments
from fnserve.gateway.deployments import DeployError
from fnserve.project import NAME_RULE
from tests.support.gateways import FNS, running_gateway

# What the old gateway rule accepted and the runtime never did, and names both accept.
REFUSED = ["Recs", "recs.v2", "9lives", "_private", "fare.V2", "a" * 64]
ACCEPTED = ["recs", "fare-v2", "tagger_2", "a" * 63]


def runtime_accepts(name: str) -> bool:
    try:
        predict(name=name)(lambda x: x)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", REFUSED + ACCEPTED)
def test_the_gateway_and_the_runtime_agree_on_a_name(name: str) -> None:
    try:
        deployments.deploy(None, name, image="functions/x")
        gateway_accepts = True
    except DeployError as exc:
        assert exc.status == 422 and NAME_RULE in exc.message
        gateway_accepts = False
    assert gateway_accepts == runtime_accepts(name) == (name in ACCEPTED)


def test_the_admin_api_answers_a_name_the_runtime_refuses_with_422(tmp_path: Path) -> None:
    with running_gateway(tmp_path, []) as gw:
        answer = gw.admin("PUT", "/functions/Double", {"image": str(FNS / "double")})
        listed = gw.admin("GET", "/status").json()["functions"]
    assert answer.status_code == 422
    assert answer.json() == {"error": f"function name 'Double' is not a valid name: {NAME_RULE}"}
    assert listed == []
