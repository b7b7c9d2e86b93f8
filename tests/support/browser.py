"""Headless chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.

    driver = start_browser()      # BrowserUnavailable, saying why, when there is none
    driver.get(url); ...; driver.quit()

No browser download: Selenium is pointed at the system's chromedriver and chromium, so the tests
run air-gapped. ``scripts/ensure-browser`` installs both where it can (root + apt).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("FNSERVE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FNSERVE_CHROMEDRIVER", "/usr/bin/chromedriver")


class BrowserUnavailable(Exception):
    pass


def start_browser(width: int = 1280, height: int = 1400) -> Any:
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable("the selenium package is not installed (pip install selenium)") from None
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.exists(path) or shutil.which(path)):
            raise BrowserUnavailable(f"no {path}: install Debian's {package} (scripts/ensure-browser)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)  # no sandbox: the tests run as root in CI containers
    options.add_argument(f"--window-size={width},{height}")
    try:
        return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except WebDriverException as exc:
        raise BrowserUnavailable(f"chromium did not start headless: {exc.msg}") from None


@contextlib.contextmanager
def serving_app(app: Any) -> Iterator[str]:
    """A small ASGI app on real Hypercorn (loopback, ephemeral port) in a thread: its base URL."""
    from hypercorn.asyncio import serve

    from fnserve.runtime.server import bind_socket, hypercorn_config

    sock = bind_socket("127.0.0.1", 0)
    box: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        started.set()
        await serve(app, hypercorn_config(sock, 1.0), shutdown_trigger=box["stop"].wait)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        sock.close()


def keep_screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """Save a PNG of the page in the test's tmp dir and copy it to .bench/results/ (printed)."""
    shot = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(shot)), "chromium did not save a screenshot"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kept = Path(__file__).resolve().parents[2] / ".bench" / "results" / shot.name
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, kept)
    print(f"dashboard screenshot: {kept}")
    return kept


def wait_for(driver: Any, css: str, timeout_s: float = 20) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(seen.presence_of_element_located((By.CSS_SELECTOR, css)))
