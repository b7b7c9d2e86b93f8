"""``fn monitor``'s table shows each feature's defaulted share, and keeps its verdict whole."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from fnserve.cli.monitor import version_table


def feature(name: str, defaulted: float, drifted: bool) -> dict[str, Any]:
    return {
        "name": name, "role": "input", "type": "numeric", "psi": 0.9 if drifted else 0.01, "js": 0.01,
        "psi_threshold": 0.2, "js_threshold": 0.1, "missing_share": 0.0, "unknown_share": 0.0,
        "defaulted_share": defaulted, "drifted": drifted,
    }  # fmt: skip


def rows(width: int) -> dict[str, str]:
    entry = {
        "window": {"samples": 400, "seconds": 300, "count": 10000},
        "note": None,
        "features": [feature("price", 0.0, True), feature("nights", 0.25, False)],
    }
    console = Console(width=width, record=True)
    console.print(version_table("watched", "1", entry))
    text = console.export_text()
    return {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 2}


def test_the_defaulted_share_has_its_column() -> None:
    found = rows(120)
    assert [c.strip() for c in found["nights"].split("│")[5:8]] == ["0.0%", "0.0%", "25.0%"]
    assert "DRIFTED" in found["price"] and "ok" in found["nights"]


def test_a_narrow_terminal_keeps_the_verdict_whole() -> None:
    assert "DRIFTED" in rows(80)["price"]
