"""``[monitor]`` of function.toml: defaults, its keys, and a malformed section stopping the start."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fnserve.runtime.errors import ConfigError
from fnserve.runtime.loader import discover
from fnserve.runtime.main import main
from fnserve.runtime.monitor import MonitorConfig
from fnserve.runtime.service import Runtime
from fnserve.runtime.settings import Settings
from tests.support.monitoring import WATCHED


def function_with(tmp_path: Path, toml: str) -> Path:
    folder = tmp_path / "functions" / "watched"
    shutil.copytree(WATCHED, folder)
    (folder / "function.toml").write_text(toml)
    return folder


def test_defaults_without_a_section_and_the_keys_it_takes(tmp_path: Path) -> None:
    assert MonitorConfig.of_function(tmp_path / "predict.py") == MonitorConfig()
    folder = function_with(tmp_path, "[monitor]\nwindow_s = 60\nwindow_count = 500\npsi_threshold = 0.3\n")
    config = MonitorConfig.of_function(folder / "predict.py")
    assert (config.window_s, config.window_count, config.psi_threshold, config.js_threshold) == (
        60,
        500,
        0.3,
        0.1,
    )


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[monitor]\npsi_treshold = 0.3\n", "[monitor] has unknown key 'psi_treshold'"),
        ('[monitor]\nwindow_s = "5m"\n', "[monitor] window_s must be a number, got '5m'"),
        ("[monitor]\nwindow_count = 10.5\n", "[monitor] window_count must be a whole number"),
        ("[monitor]\nenabled = 1\n", "[monitor] enabled must be true or false"),
        ("[monitor]\njs_threshold = -1\n", "[monitor] js_threshold must be positive"),
        ("monitor = 3\n", "[monitor] must be a table"),
    ],
)
def test_a_malformed_section_stops_the_start_naming_the_key(tmp_path: Path, toml: str, named: str) -> None:
    folder = function_with(tmp_path, toml)
    settings = Settings.from_mapping(tmp_path, {}, {}, {"store": f"file://{tmp_path}/store"})
    with pytest.raises(ConfigError) as caught:
        Runtime(discover([folder]), settings)
    assert named in caught.value.message and str(folder / "function.toml") in caught.value.message


def test_the_entry_point_exits_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = function_with(tmp_path, "[monitor]\nwindow = 60\ncapture_rate = 0.1\n")
    status = main([str(folder), "--port", "0"], {"FNSERVE_STORE": f"file://{tmp_path}/store"})
    assert status == 2
    assert "[monitor] has unknown key 'window'" in capsys.readouterr().err


def test_capture_keys_are_left_to_payload_capture(tmp_path: Path) -> None:
    folder = function_with(tmp_path, "[monitor]\ncapture_rate = 0.25\ncapture_anything = 'x'\n")
    assert MonitorConfig.of_function(folder / "predict.py") == MonitorConfig()
