"""``fn monitor NAME``: a table per version against a real ``fn serve``, drifted features in bold red."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from click.testing import CliRunner
from rich.console import Console

from fnserve.cli.main import cli
from fnserve.cli.monitor import version_table
from tests.support.monitoring import WATCHED, publish_watched, traffic
from tests.support.serving import start_serve, stop


def test_monitor_shows_each_feature_and_marks_the_shifted_one(tmp_path: Path) -> None:
    folder = tmp_path / "functions" / "watched"
    shutil.copytree(WATCHED, folder)
    publish_watched(f"file://{tmp_path}/store", tmp_path)
    served = start_serve(tmp_path, folder)
    try:
        rows = traffic(600, seed=8, price_factor=2.0)
        for start in range(0, len(rows), 100):
            httpx.post(f"{served.url}/function/watched", json={"instances": rows[start : start + 100]})
        result = CliRunner().invoke(cli, ["monitor", "watched", "--url", served.url], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
        assert "watched v1: 600 instances (last 300 s, at most 10000)" in result.output
        assert "DRIFTED" in lines["price"] and "ok" in lines["city"] and "ok" in lines["nights"]

        missing = CliRunner().invoke(cli, ["monitor", "nope", "--url", served.url])
        assert missing.exit_code == 1 and "no function named 'nope'" in missing.output
    finally:
        stop(served)


def test_drifted_rows_are_bold_red_and_a_missing_reference_is_said() -> None:
    feature = {"name": "price", "role": "input", "type": "numeric", "psi": 0.9, "js": 0.4}
    feature |= {"psi_threshold": 0.2, "js_threshold": 0.1, "drifted": True}
    feature |= {"missing_share": 0.0, "unknown_share": 0.25}
    window = {"seconds": 300, "count": 10000, "samples": 800}
    entry = {"reference": True, "note": None, "window": window, "features": [feature]}
    console = Console(record=True, force_terminal=True, width=150)
    console.print(version_table("recs", "3", entry))
    assert "\x1b[1;31m" in console.export_text(styles=True)  # bold red
    text = Console(record=True, width=150)
    text.print(
        version_table("recs", "2", {**entry, "reference": False, "note": "no reference", "features": []})
    )
    assert "recs v2: 800 instances (last 300 s, at most 10000) — no reference" in text.export_text()
