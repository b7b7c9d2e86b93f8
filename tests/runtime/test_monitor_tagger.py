"""tagger, trained for real (1,500 photos) and served by a real ``fn serve``: photos like
its training set stay below every input threshold (its held-out tag scores, the outputs'
reference, are too few to hold 600 photos to); darkened ones (pixels times 0.4) move ``photo.mean``
over its threshold, and the tag scores move with them."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.monitoring import load_module
from tests.support.serving import start_serve, stop

ROOT = Path(__file__).resolve().parents[2]
TAGGER = ROOT / "functions" / "tagger"


def train_module() -> ModuleType:
    return load_module(TAGGER / "train.py", "tagger_train_for_tests")


def instances(photos: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for photo in photos:
        png = io.BytesIO()
        Image.fromarray(photo).save(png, format="PNG")  # lossless: the server sees these pixels
        out.append({"photo": {"b64": base64.b64encode(png.getvalue()).decode()}})
    return out


def send(url: str, photos: np.ndarray) -> None:
    rows = instances(photos)
    for start in range(0, len(rows), 50):
        answer = httpx.post(
            f"{url}/function/tagger", json={"instances": rows[start : start + 50]}, timeout=60
        )
        assert answer.status_code == 200, answer.text


def found(url: str) -> dict[str, dict[str, Any]]:
    doc = httpx.get(f"{url}/monitor/tagger", timeout=10).json()
    (entry,) = doc["functions"]["tagger"]["versions"].values()
    assert entry["reference"] is True, entry["note"]
    return {f["name"]: f for f in entry["features"]}


@pytest.mark.slow
def test_darkened_photos_drift_on_their_mean_and_move_the_scores(tmp_path: Path) -> None:
    env = {**os.environ, "FNSERVE_STORE": f"file://{tmp_path}/store", "FNSERVE_PROJECT": str(tmp_path)}
    env["PYTHONPATH"] = str(ROOT)
    trained = subprocess.run(
        [sys.executable, str(TAGGER / "train.py"), "--photos", "1500"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    folder = tmp_path / "functions" / "tagger"
    shutil.copytree(TAGGER, folder)
    (folder / "function.toml").write_text("[monitor]\nwindow_count = 600\n")
    photos, _ = train_module().generate_photos(1800, seed=23)  # other photos of the same scenes
    served = start_serve(tmp_path, folder)
    try:
        send(served.url, photos[:600])
        calm = found(served.url)
        assert {"photo.mean", "photo.std"} <= set(calm)
        inputs = {n: f for n, f in calm.items() if f["role"] == "input"}
        assert not any(f["drifted"] for f in inputs.values()), {
            n: (f["psi"], f["js"]) for n, f in calm.items()
        }

        dark = (photos[600:] * 0.4).astype(np.uint8)
        send(served.url, dark)  # twice the window: only darkened photos are left in it
        shifted = found(served.url)
    finally:
        stop(served)
    mean = shifted["photo.mean"]
    assert mean["drifted"] and mean["psi"] > mean["psi_threshold"], mean
    tags = [n for n, f in shifted.items() if f["role"] == "output"]
    assert tags and any(shifted[t]["psi"] > max(calm[t]["psi"], shifted[t]["psi_threshold"]) for t in tags), {
        t: (calm[t]["psi"], shifted[t]["psi"]) for t in tags
    }
