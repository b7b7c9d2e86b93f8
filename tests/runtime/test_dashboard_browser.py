"""The dashboard in headless chromium against a real `fn serve` with traffic: what a person sees.

Each test saves a screenshot under its tmp dir and copies it to .bench/results/ (path printed).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fnserve.runtime import dashboard
from tests.support.browser import keep_screenshot, serving_app, wait_for
from tests.support.serving import start_serve, stop

pytestmark = pytest.mark.browser
FNS = Path(__file__).parents[1] / "support" / "fns"


def refreshes(driver: Any) -> int:
    return int(driver.find_element("id", "updated").get_attribute("data-refreshes") or 0)


def test_the_page_shows_functions_numbers_and_charts_of_live_traffic(
    tmp_path: Path, browser: Any, publish_weight: Any
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    publish_weight("3")
    served = start_serve(tmp_path, FNS / "double", FNS / "weighted")
    done = threading.Event()

    def traffic() -> None:  # steady traffic while the page loads and refreshes
        with httpx.Client(base_url=served.url, timeout=10) as client:
            while not done.is_set():
                client.get("/function/double", params={"x": 2})
                client.post("/function/double", json={"instances": [{"x": 1}] * 8})

    sender = threading.Thread(target=traffic, daemon=True)
    try:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            for x in range(50):
                assert client.get("/function/double", params={"x": x}).status_code == 200
            assert client.post("/function/weighted", json={"x": 1}).json() == {"predictions": [3.0]}
            monitor_status = client.get("/monitor").status_code
        sender.start()
        browser.get(f"{served.url}/dashboard")
        wait_for(browser, '[data-function="double"] svg[data-chart="requests_per_s"]')
        first = refreshes(browser)
        WebDriverWait(browser, 15).until(lambda d: refreshes(d) > first)  # it refreshes by itself

        names = [h.text for h in browser.find_elements("css selector", "section.fn > h2")]
        assert names == ["double", "weighted"]
        double = browser.find_element("css selector", '[data-function="double"]')
        cell = lambda box, field: box.find_element("css selector", f'td[data-field="{field}"]').text  # noqa: E731
        assert float(cell(double, "requests_per_s")) > 0
        assert float(cell(double, "p99_ms")) >= float(cell(double, "p50_ms")) > 0
        assert float(cell(double, "mean_batch")) >= 1
        assert cell(double, "error_rate") == "0.0 %"
        weighted = browser.find_element("css selector", '[data-function="weighted"]')
        assert cell(weighted, "version") == "1 (serving)" and cell(weighted, "replicas") == "1"
        for chart in ("requests_per_s", "latency_ms", "mean_batch"):
            svg = double.find_element("css selector", f'svg[data-chart="{chart}"]')
            assert int(svg.get_attribute("data-points")) > 0, chart
            assert svg.find_element("css selector", "path.line").get_attribute("d").startswith("M")
            baseline = float(svg.find_element("css selector", "line.axis").get_attribute("y1"))
            heights = [float(c.get_attribute("cy")) for c in svg.find_elements("css selector", "circle")]
            assert min(heights) < baseline, f"{chart}: every point on the zero line"
        drift = browser.find_element("id", "drift").text
        if monitor_status == 404:
            assert drift == "monitoring not available"
        else:  # once the runtime has /monitor, the page draws it instead
            assert "monitoring not available" not in drift
        keep_screenshot(browser, tmp_path, "dashboard-fn-serve")
    finally:
        done.set()
        if sender.is_alive():
            sender.join(15)
        stop(served)


MONITOR = {
    "functions": {
        "recs": {
            "versions": {
                "3": {
                    "reference": True,
                    "note": None,
                    "window": {"seconds": 300, "count": 5000, "samples": 1200},
                    "features": [
                        {
                            "name": "hotel_price", "role": "input", "type": "numeric",
                            "psi": 0.61, "js": 0.32,
                            "psi_threshold": 0.2, "js_threshold": 0.1, "drifted": True,
                            "bins": ["<50", "50-100", "100-200", ">200"],
                            "reference": [0.3, 0.4, 0.2, 0.1], "live": [0.05, 0.15, 0.4, 0.4],
                            "counts": [60, 180, 480, 480], "missing_share": 0.0, "unknown_share": 0.0,
                        },
                        {
                            "name": "country", "role": "input", "type": "categorical",
                            "psi": 0.01, "js": 0.02,
                            "psi_threshold": 0.2, "js_threshold": 0.1, "drifted": False,
                            "bins": ["de", "fr", "other"],
                            "reference": [0.5, 0.3, 0.2], "live": [0.48, 0.32, 0.2],
                            "counts": [576, 384, 240], "missing_share": 0.0, "unknown_share": 0.01,
                        },
                    ],
                },
                "4": {
                    "reference": False,
                    "note": "no reference",
                    "window": {"seconds": 300, "count": 5000, "samples": 40},
                    "features": [
                        {
                            "name": "score", "role": "output", "type": "numeric", "psi": None, "js": None,
                            "psi_threshold": 0.2, "js_threshold": 0.1, "drifted": False,
                            "bins": ["0-0.5", "0.5-1"], "reference": None, "live": [0.7, 0.3],
                            "counts": [28, 12], "missing_share": 0.0, "unknown_share": 0.0,
                        }
                    ],
                },
            }
        }
    }
}  # fmt: skip


def test_drift_is_drawn_reference_beside_live_per_feature(tmp_path: Path, browser: Any) -> None:
    """A fixture /monitor payload (the runtime's monitor lands separately) beside the real page."""

    async def data(_: Request) -> JSONResponse:
        return JSONResponse({"source": "fixture", "bucket_s": 10, "now": 0, "functions": []})

    async def monitor(_: Request) -> JSONResponse:
        return JSONResponse(MONITOR)

    app = Starlette(routes=[*dashboard.routes(data), Route("/monitor", monitor)])
    with serving_app(app) as url:
        browser.get(f"{url}/dashboard")
        wait_for(browser, '[data-drift="recs@4"]')
        price = browser.find_element("css selector", '[data-drift="recs@3"] [data-feature="hotel_price"]')
        assert "drifted" in price.text and "PSI 0.610" in price.text
        assert price.find_element("css selector", "figcaption").get_attribute("class") == "drifted"
        for kind in ("reference", "live"):
            bars = price.find_elements("css selector", f"svg rect.{kind}")
            assert len(bars) == 4 and all(float(b.get_attribute("height")) > 0 for b in bars)
        country = browser.find_element("css selector", '[data-feature="country"] figcaption')
        assert "drifted" not in country.text and country.get_attribute("class") == ""
        unreferenced = browser.find_element("css selector", '[data-drift="recs@4"]')
        assert "no reference" in unreferenced.text
        assert len(unreferenced.find_elements("css selector", "rect.reference")) == 0
        assert len(unreferenced.find_elements("css selector", "rect.live")) == 2
        keep_screenshot(browser, tmp_path, "dashboard-drift")
