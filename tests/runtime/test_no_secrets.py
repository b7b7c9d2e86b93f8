"""A store given with credentials never shows them: not in the log, error bodies, /functions,
/v1 and /v2 model status or /metrics; URLs appear redacted (``http://***@host/...``).

Real storage over loopback: an HTTP server that answers 500 to everything, and moto's S3.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fnserve.project import ProjectSettings
from fnserve.runtime.app import create_app
from fnserve.runtime.loader import discover
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings

FNS = Path(__file__).resolve().parents[1] / "support" / "fns"


def surfaces(client: TestClient) -> dict[str, str]:
    """Everything a caller can read about the (unready) function, by where it came from."""
    return {
        "/functions": client.get("/functions").text,
        "/v1/models/weighted": client.get("/v1/models/weighted").text,
        "/v2/models/weighted/ready": client.get("/v2/models/weighted/ready").text,
        "/metrics": client.get("/metrics").text,
        "/function/weighted": client.get("/function/weighted", params={"x": 1}).text,
        "/v1/models/weighted:predict": client.post(
            "/v1/models/weighted:predict", json={"instances": [{"x": 1}]}
        ).text,
    }


def wait_for_load_error(runtime: Runtime, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        error = runtime.functions["weighted"].last_error
        if error:
            return error
        time.sleep(0.05)
    raise AssertionError("the function never failed to load")


def serve_failing(settings: Settings, caplog: pytest.LogCaptureFixture) -> tuple[str, dict[str, str]]:
    runtime = Runtime(discover([FNS / "weighted"]), settings)
    with caplog.at_level(logging.INFO), TestClient(create_app(runtime)) as client:
        error = wait_for_load_error(runtime)
        shown = surfaces(client)
    shown["log"] = caplog.text
    return error, shown


def test_an_http_store_with_credentials_that_fails(
    tmp_path: Path, failing_http: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"pw-{uuid.uuid4().hex[:12]}"
    signature = f"sig-{uuid.uuid4().hex[:12]}"
    store = f"http://reader:{password}@{failing_http}/store"
    options = {"client_kwargs": {"headers": {"X-Api-Key": signature}}}
    settings = Settings.from_mapping(
        tmp_path, {"store": {"options": options}}, {}, {"store": store, "cache": str(tmp_path / "c")}
    )
    error, shown = serve_failing(settings, caplog)

    assert f"storage at http://***@{failing_http}/store/weighted is unavailable" in error
    for where, text in shown.items():
        assert password not in text, where
        assert signature not in text, where
        assert "reader:" not in text, where
    assert f"http://***@{failing_http}/store" in shown["/functions"]
    assert f"http://***@{failing_http}/store" in shown["/v1/models/weighted"]
    assert f"http://***@{failing_http}/store" in shown["log"]
    assert "fnserve_function_ready" in shown["/metrics"]


def test_a_store_whose_client_refuses_its_settings_is_named_not_a_500(
    tmp_path: Path, failing_http: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp refuses credentials in the URL together with an Authorization header (ValueError)."""
    password, token = f"pw-{uuid.uuid4().hex[:12]}", f"tok-{uuid.uuid4().hex[:12]}"
    store = f"http://reader:{password}@{failing_http}/store"
    options = {"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}}
    settings = Settings.from_mapping(
        tmp_path, {"store": {"options": options}}, {}, {"store": store, "cache": str(tmp_path / "c")}
    )
    error, shown = serve_failing(settings, caplog)

    assert f"storage at http://***@{failing_http}/store/weighted refuses its settings" in error, error
    assert "Cannot combine AUTHORIZATION header" in error
    for where, text in shown.items():
        assert password not in text and token not in text, where
    assert "Traceback" not in shown["log"]


def test_an_s3_store_with_credentials_in_its_url_and_options(
    tmp_path: Path, s3_server: str, s3_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    url_secret = f"wJalr{uuid.uuid4().hex[:12]}"
    option_secret = f"opt-{uuid.uuid4().hex[:12]}"
    store = f"s3://AKIAFAKEKEYID:{url_secret}@models/store"
    options = {
        "client_kwargs": {"endpoint_url": s3_server},
        "key": "testing",
        "secret": option_secret,
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    settings = Settings.from_mapping(
        tmp_path, {"store": {"options": options}}, {}, {"store": store, "cache": str(tmp_path / "c")}
    )
    error, shown = serve_failing(settings, caplog)

    # s3fs takes "AKIAFAKEKEYID:...@models" for a bucket name and botocore quotes it, URL-less
    assert "storage at s3://***@models/store/weighted is unavailable" in error
    assert 'Invalid bucket name "***@models"' in error
    for where, text in shown.items():
        assert url_secret not in text, where
        assert option_secret not in text, where
        assert "AKIAFAKEKEYID" not in text, where
    assert "s3://***@models/store" in shown["/functions"]
    assert "s3://***@models/store" in shown["log"]


def test_settings_show_their_store_redacted(tmp_path: Path) -> None:
    options = {"key": "AKIAFAKEKEYID", "secret": "opt-secret-value", "anon": False}
    settings = ProjectSettings.from_mapping(  # the runtime's fields and the gateway's token
        tmp_path,
        {"store": {"options": options}, "gateway": {"token": "admin-token-value"}},
        {},
        {"store": "s3://AKIAFAKEKEYID:url-secret-value@models/store"},
    )
    shown = repr(settings)
    for secret in ("AKIAFAKEKEYID", "opt-secret-value", "url-secret-value", "admin-token-value"):
        assert secret not in shown
    assert "store='s3://***@models/store'" in shown
    assert "'anon': False" in shown and "port=8080" in shown
    assert settings.secrets() == {
        "AKIAFAKEKEYID",
        "opt-secret-value",
        "url-secret-value",
        "admin-token-value",
    }
    runtime = Settings.from_mapping(tmp_path, {"store": {"options": options}}, {}, {"store": settings.store})
    assert repr(runtime).startswith("Settings(") and "store='s3://***@models/store'" in repr(runtime)
    assert runtime.secrets() == {"AKIAFAKEKEYID", "opt-secret-value", "url-secret-value"}


def test_a_checkpoint_url_with_credentials_in_the_status(tmp_path: Path, failing_http: str) -> None:
    password = f"pw-{uuid.uuid4().hex[:12]}"
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "predict.py").write_text(
        "from fnserve import predict\n\n\n"
        "def load(path):\n    return 1.0\n\n\n"
        f"@predict(loader=load, checkpoint='http://reader:{password}@{failing_http}/ckpt/weighted')\n"
        "def weighted(model: float, x: float) -> float:\n    return x * model\n"
    )
    settings = Settings.from_mapping(tmp_path, {}, {}, {"cache": str(tmp_path / "c")})
    runtime = Runtime(discover([folder]), settings)
    with TestClient(create_app(runtime)) as client:
        wait_for_load_error(runtime)
        described = client.get("/functions").json()["functions"][0]
        shown = surfaces(client)
    assert described["checkpoint"] == f"http://***@{failing_http}/ckpt/weighted"
    assert f"http://***@{failing_http}/ckpt/weighted" in described["error"]
    for where, text in shown.items():
        assert password not in text, where
