"""The gateway's dashboard in headless chromium: with protected predictions it asks for the token."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import keep_screenshot, wait_for
from tests.support.gateways import FAST, TOKEN, deployment, running_gateway

pytestmark = pytest.mark.browser


def test_the_page_asks_for_the_token_and_keeps_it_for_the_session(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    idle = deployment("double", ("1", "double", 70, "latest"), ("2", "double", 30, "latest"), min_replicas=0)
    options = dataclasses.replace(FAST, protect_predictions=True)
    with running_gateway(tmp_path, [idle], options) as gw:
        browser.get(f"{gw.url}/dashboard")
        form = wait_for(browser, "#login:not([hidden])")
        assert browser.find_elements("css selector", "[data-function]") == []
        token = browser.find_element("id", "token")
        token.send_keys("wrong")
        form.find_element("css selector", "button").click()
        WebDriverWait(browser, 10).until(
            lambda d: d.find_element("id", "login-error").text == "that token was refused"
        )
        token.clear()
        token.send_keys(TOKEN)
        form.find_element("css selector", "button").click()
        box = wait_for(browser, '[data-function="double"]')
        assert not form.is_displayed()
        rows = box.find_elements("css selector", "tr[data-version]")
        weights = [r.find_element("css selector", '[data-field="weight"]').text for r in rows]
        replicas = [r.find_element("css selector", '[data-field="replicas"]').text for r in rows]
        assert weights == ["70", "30"] and replicas == ["0/0", "0/0"]
        assert browser.execute_script("return sessionStorage.length") == 1
        keep_screenshot(browser, tmp_path, "dashboard-gateway")


def test_a_rollout_shows_its_stage_and_decisions(tmp_path: Path, browser: Any) -> None:
    from fnserve.gateway import deployments
    from fnserve.gateway.rollout import RolloutPolicy

    policy = RolloutPolicy.from_table(
        {"stages": [{"shadow": True, "requests": 10**6}, {"weight": 20, "requests": 10**6}, {"weight": 100}]},
        where="[rollout]",
    )
    two = deployment("double", ("1", "double", 100, "latest"), ("2", "double", 0, "latest"), min_replicas=0)
    started = deployments.start_rollout(dataclasses.replace(two, policy=policy), "2", 1.0e9, why="test")
    canary = deployments.advance_rollout(started, 1.0e9 + 60, "error_rate 0 (≤ 0.01) over 50 paired answers")
    with running_gateway(tmp_path, [canary]) as gw:
        browser.get(f"{gw.url}/dashboard")
        panel = wait_for(browser, '[data-function="double"] [data-rollout="active"]')
        assert "rollout of v2 (stable v1): stage 2/3, weight 20 for 1000000 requests" in panel.text
        decisions = [li.text for li in panel.find_elements("css selector", "li")]
        assert len(decisions) == 2 and "stage 1 passed (error_rate 0 (≤ 0.01)" in decisions[1]
        keep_screenshot(browser, tmp_path, "dashboard-rollout")
