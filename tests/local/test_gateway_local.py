"""The gateway for real over the local platform: `fn serve` replica processes on loopback.

Balancing over two replicas, a replica killed under load with no failed idempotent request, scale
to zero then a burst, a 90/10 split measured, sticky callers, pins, promote and rollback.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fnserve.runtime.store import CheckpointStore
from tests.support.gateways import deployment, running_gateway, until

pytestmark = pytest.mark.slow


def replica_requests(url: str) -> float:
    """Predictions a replica answered, from its own /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(m)
        for m in re.findall(r'^fnserve_requests_total\{function="double",status="200"\} (\S+)', text, re.M)
    )


def test_requests_are_balanced_over_two_replicas(tmp_path: Path) -> None:
    with running_gateway(
        tmp_path, [deployment("double", ("1", "double", 100, "latest"), min_replicas=2)]
    ) as gw:
        version = gw.wait_ready("double", "1", 2)
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            answers = [client.get("/function/double", params={"x": i}) for i in range(200)]
        assert {a.status_code for a in answers} == {200}
        assert (
            answers[21].json() == {"predictions": [42.0]} and answers[0].headers["x-function-version"] == "1"
        )
        served = [replica_requests(r["url"]) for r in version["replicas"]]
    assert sum(served) == 200 and min(served) >= 80  # turns at concurrency 1: close to 100 each


def test_a_replica_killed_under_load_fails_no_idempotent_request(tmp_path: Path) -> None:
    with running_gateway(
        tmp_path, [deployment("double", ("1", "double", 100, "latest"), min_replicas=2)]
    ) as gw:
        version = gw.wait_ready("double", "1", 2)
        statuses: Counter[int] = Counter()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                while not stop.is_set():
                    statuses[client.get("/function/double", params={"x": 1}).status_code] += 1

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(load)
            time.sleep(1.0)
            os.kill(int(version["replicas"][0]["id"]), signal.SIGKILL)
            time.sleep(2.0)
            stop.set()
        assert statuses[200] > 200 and set(statuses) == {200}, statuses
        gw.wait_ready("double", "1", 2)  # the platform replaced it
        assert int(gw.admin("GET", "/status").json()["functions"][0]["versions"][0]["desired"]) == 2


def test_scale_to_zero_after_idle_then_a_burst_of_50_all_succeed(tmp_path: Path) -> None:
    d = deployment(
        "double", ("1", "double", 100, "latest"), min_replicas=0, max_replicas=2, scale_to_zero_after_s=1
    )
    with running_gateway(tmp_path, [d]) as gw:
        assert gw.status("double")["versions"][0]["desired"] == 0  # nothing runs before the first request
        first = httpx.get(f"{gw.url}/function/double", params={"x": 1}, timeout=60)
        assert first.status_code == 200
        until(
            lambda: gw.status("double")["versions"][0]["replicas"] == [], "scale to zero after 1 s idle", 30
        )
        with ThreadPoolExecutor(50) as pool:
            burst = list(
                pool.map(lambda i: httpx.get(f"{gw.url}/function/double?x={i}", timeout=60), range(50))
            )
        assert [r.status_code for r in burst] == [200] * 50
        assert [r.json()["predictions"][0] for r in burst] == [2.0 * i for i in range(50)]
        cold = gw.status("double")["last_cold_start"]
        metrics = httpx.get(f"{gw.url}/metrics").text
    assert set(cold) >= {"version", "total_s", "start_s", "fetch_s", "load_s"}
    assert 0 < cold["start_s"] <= cold["total_s"] < 30
    assert 'fnserve_gateway_cold_starts_total{function="double",version="1"} 2.0' in metrics
    assert 'fnserve_gateway_cold_start_seconds_count{function="double",part="load"} 2.0' in metrics


def publish(project: Path, weights: list[str]) -> None:
    store = CheckpointStore(f"file://{project}/store", cache_dir=project / "publish-cache")
    for weight in weights:
        folder = project / f"weight-{weight}"
        folder.mkdir()
        (folder / "weight.txt").write_text(weight)
        store.publish("weighted", folder)


def two_versions(weight_a: int, **options: str) -> list:  # type: ignore[type-arg]
    d = deployment("weighted", ("a", "weighted", weight_a, "1"), ("b", "weighted", 100 - weight_a, "2"))
    return [dataclasses.replace(d, **options)]


def answered_by(response: httpx.Response) -> str:
    """Which version answered: its header, checked against what its checkpoint computes (x * 1 or x * 10)."""
    version = response.headers["x-function-version"]
    assert response.json() == {"predictions": [{"a": 3.0, "b": 30.0}[version]]}, response.text
    return version


def test_a_90_10_split_is_measured_within_5_points_over_2000_requests(tmp_path: Path) -> None:
    publish(tmp_path, ["1", "10"])
    with running_gateway(tmp_path, two_versions(90)) as gw:
        gw.wait_ready("weighted", "a", 1)
        gw.wait_ready("weighted", "b", 1)

        def batch(n: int) -> Counter[str]:
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                return Counter(answered_by(client.get("/function/weighted?x=3")) for _ in range(n))

        with ThreadPoolExecutor(8) as pool:
            counts = sum(pool.map(batch, [250] * 8), Counter())
    assert sum(counts.values()) == 2000
    assert abs(counts["b"] / 2000 - 0.10) <= 0.05, counts


def test_sticky_callers_pins_promote_and_rollback(tmp_path: Path) -> None:
    publish(tmp_path, ["1", "10"])
    with running_gateway(tmp_path, two_versions(50, sticky_key="user")) as gw:
        gw.wait_ready("weighted", "a", 1)
        gw.wait_ready("weighted", "b", 1)
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            seen = {
                user: {
                    answered_by(client.get("/function/weighted?x=3", headers={"user": user}))
                    for _ in range(4)
                }
                for user in (f"user-{i}" for i in range(40))
            }
            assert all(len(versions) == 1 for versions in seen.values())  # one caller, one version
            assert {v for (v,) in seen.values()} == {"a", "b"}
            assert {
                answered_by(client.get("/function/weighted@b?x=3", headers={"user": "user-1"}))
                for _ in range(5)
            } == {"b"}

            assert gw.admin("POST", "/functions/weighted/promote", {"version": "b"}).status_code == 200
            assert answered_by(client.get("/function/weighted?x=3")) == "b"  # the very next request
            assert gw.admin("POST", "/functions/weighted/split", {"weights": {"a": 100}}).status_code == 200
            assert answered_by(client.get("/function/weighted?x=3")) == "a"
            assert gw.admin("POST", "/functions/weighted/rollback").status_code == 200
            assert answered_by(client.get("/function/weighted?x=3")) == "b"
            assert answered_by(client.get("/function/weighted@a?x=3")) == "a"  # pinned: bypasses the split


def test_bodies_and_headers_pass_through(tmp_path: Path) -> None:
    with running_gateway(tmp_path, [deployment("double", ("1", "double", 100, "latest"))]) as gw:
        gw.wait_ready("double", "1", 1)
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            batch = client.post("/function/double", json={"instances": [{"x": 1}, {"x": 2.5}]})
            sent = {"Content-Type": "application/json", "Content-Encoding": "gzip", "X-Request-ID": "r1"}
            zipped = client.post("/function/double", content=gzip.compress(b'{"x": 4}'), headers=sent)
            invalid = client.get("/function/double?x=many")
    assert batch.json() == {"predictions": [2.0, 5.0]}
    assert zipped.json() == {"predictions": [8.0]}
    assert zipped.headers.get_list("x-request-id") == ["r1"]  # the caller's id, once
    assert invalid.status_code == 422 and "x" in invalid.json()["error"]  # the replica's own answer


def test_load_scales_a_version_up_and_calm_scales_it_back_down(tmp_path: Path) -> None:
    d = deployment(
        "slow", ("1", "slow", 100, "latest"), min_replicas=1, max_replicas=2, target_in_flight=1,
        stable_window_s=2, panic_window_s=1,
    )  # fmt: skip
    with running_gateway(tmp_path, [d]) as gw:
        gw.wait_ready("slow", "1", 1)
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                while not stop.is_set():
                    assert client.get("/function/slow?seconds=0.2").status_code == 200

        with ThreadPoolExecutor(6) as pool:
            running = [pool.submit(load) for _ in range(6)]
            gw.wait_ready("slow", "1", 2, timeout_s=30)  # 6 in flight for a target of 1: the most, 2
            stop.set()
        [r.result() for r in running]
        until(lambda: gw.status("slow")["versions"][0]["desired"] == 1, "scale down after a calm window", 30)


def test_a_version_changed_in_place_is_replaced_rolling_with_no_failed_request(
    tmp_path: Path, publish_weight: object
) -> None:
    """`fn deploy recs --checkpoint-version 2` on a running version (or a rollout pinning it):
    the replica started for checkpoint 1 serves until its successor for checkpoint 2 is ready."""
    from tests.support.probe import prober

    first, second = publish_weight("2.0"), publish_weight("3.0")  # type: ignore[operator]
    with running_gateway(
        tmp_path, [deployment("weighted", ("1", "weighted", 100, str(first)), min_replicas=1)]
    ) as gw:
        gw.wait_ready("weighted", "1", 1)
        before = {r["id"] for r in gw.status("weighted")["versions"][0]["replicas"]}
        with prober(gw.url, threads=3) as answers:
            until(lambda: len(answers) > 20, "the prober's first answers")
            changed = gw.admin("PUT", "/functions/weighted", {"checkpoint_version": str(second)})
            assert changed.status_code == 200, changed.text
            until(lambda: [a.value for a in answers[-10:]] == [3.0] * 10, "answers from checkpoint 2", 60)

            def replicas() -> set[str]:
                return {r["id"] for r in gw.status("weighted")["versions"][0]["replicas"]}

            until(lambda: replicas() and before.isdisjoint(replicas()), "the old process gone", 30)
    assert answers and all(a.status == 200 for a in answers)
    assert {a.value for a in answers} == {2.0, 3.0}
