"""The README's tour works as written: its code is run and its shown answers are checked."""

from __future__ import annotations

import re
import time
from pathlib import Path

from starlette.testclient import TestClient

from fnserve.runtime.app import create_app
from fnserve.runtime.loader import discover
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def python_block(starting_with: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    return next(b for b in blocks if b.startswith(starting_with))


def serve_source(tmp_path: Path, name: str, source: str) -> TestClient:
    folder = tmp_path / "functions" / name
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(source)
    settings = Settings.from_mapping(tmp_path, {}, {}, {"store": "memory://readme"})
    return TestClient(create_app(Runtime(discover([folder]), settings)))


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_tour_function_answers_as_the_readme_shows(tmp_path: Path) -> None:
    with serve_source(tmp_path, "fare", python_block("# functions/fare/predict.py\nfrom typing")) as client:
        wait_ready(client)
        assert client.get("/function/fare?distance_km=900&cabin=business").json() == {"predictions": [335.0]}
        batch = {
            "instances": [{"distance_km": 900, "cabin": "business"}, {"distance_km": 50, "cabin": "economy"}]
        }
        assert client.post("/function/fare", json=batch).json() == {"predictions": [335.0, 26.0]}
        bad = client.get("/function/fare?distance_km=-3&cabin=first")
        assert bad.status_code == 422
        assert bad.json() == {
            "error": "distance_km: must be >= 0, got -3.0; "
            "cabin: expected one of economy, business, got 'first'",
            "problems": [
                {"input": "distance_km", "error": "must be >= 0, got -3.0"},
                {"input": "cabin", "error": "expected one of economy, business, got 'first'"},
            ],
        }


def test_scalar_example_from_readme(tmp_path: Path) -> None:
    source = "from fnserve import predict\n\n" + python_block("@predict(vectorized=False)")
    with serve_source(tmp_path, "greet", source) as client:
        wait_ready(client)
        answer = client.post(
            "/function/greet", json={"instances": [{"name": "Ann"}, {"name": "Bo", "times": 2}]}
        )
        assert answer.json() == {"predictions": ["hello Ann! ", "hello Bo! hello Bo! "]}
