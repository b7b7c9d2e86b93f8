"""The dashboard on `fn serve`, in-process: the page and its assets, and the figures it draws."""

from __future__ import annotations

from typing import Any

from fnserve.runtime.dashboard.series import BUCKETS, LATENCY_EDGES_S, RecentStats, quantile_ms


def test_the_page_and_its_assets_come_from_the_package(serve: Any) -> None:
    with serve("double") as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/dashboard/app.js" in page.text and "http" not in page.text.replace("http://www.w3", "")
        script = client.get("/dashboard/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert "/dashboard/data" in script.text and "/monitor" in script.text
        # Air-gapped: nothing is fetched from elsewhere (the one URL is SVG's namespace name).
        assert script.text.replace("http://www.w3.org/2000/svg", "").count("http") == 0
        assert client.get("/dashboard/style.css").headers["content-type"].startswith("text/css")
        assert client.get("/dashboard/nope.js").status_code == 404


def test_data_counts_requests_errors_and_batches_per_function_and_version(
    serve: Any, publish_weight: Any
) -> None:
    publish_weight("2")
    with serve("double", "weighted") as client:
        for x in range(5):
            assert client.post("/function/double", json={"x": x}).status_code == 200
        assert client.post("/function/double", json={"instances": [{"x": 1}] * 4}).status_code == 200
        assert client.post("/function/double", json={"x": "not a number"}).status_code == 422
        data = client.get("/dashboard/data").json()
    assert data["source"] == "fn serve" and data["bucket_s"] == 10
    by_name = {f["name"]: f for f in data["functions"]}
    assert set(by_name) == {"double", "weighted"}
    (double,) = by_name["double"]["versions"]
    assert double["serving"] and double["ready"] == 1 and double["version"] == "-"
    minute = double["last_minute"]
    assert minute["requests"] == 7 and minute["rejected"] == 1 and minute["errors"] == 0
    assert minute["batches"] == 6 and minute["max_batch"] == 4 and minute["requests_per_s"] > 0
    assert minute["p50_ms"] is not None and minute["p99_ms"] >= minute["p50_ms"]
    assert len(double["points"]) == BUCKETS and sum(p["requests"] for p in double["points"]) == 7
    (weighted,) = by_name["weighted"]["versions"]
    assert weighted["version"] == "1" and weighted["last_minute"]["requests"] == 0


def test_buckets_older_than_the_window_are_cleared_not_summed() -> None:
    stats = RecentStats()
    stats.request("f", "1", 0.01, 200, now=0.0)
    stats.request("f", "1", 0.01, 503, now=BUCKETS * 10.0)  # the same ring slot, 5 minutes later
    points = stats.snapshot(now=BUCKETS * 10.0)["f"]["1"]["points"]
    assert sum(p["requests"] for p in points) == 1 and points[-1]["errors"] == 1
    assert stats.snapshot(now=BUCKETS * 10.0)["f"]["1"]["last_minute"]["error_rate"] == 1.0


def test_quantiles_come_from_the_latency_edges() -> None:
    counts = [0] * (len(LATENCY_EDGES_S) + 1)
    counts[10], counts[20] = 98, 2
    assert quantile_ms(counts, 0.5) == round(LATENCY_EDGES_S[10] * 1000, 3)
    assert quantile_ms(counts, 0.99) == round(LATENCY_EDGES_S[20] * 1000, 3)
    assert quantile_ms([0] * 3, 0.5) is None


def test_a_rate_counts_only_the_time_a_series_has_existed() -> None:
    stats = RecentStats()
    for i in range(100):
        stats.request("f", "1", 0.001, 200, now=1000.0 + i * 0.04)  # 100 requests in 4 s
    figures = stats.snapshot(now=1004.0)["f"]["1"]
    assert figures["last_minute"]["requests_per_s"] == 25.0  # not 100 over the whole minute
    assert figures["points"][-1]["requests_per_s"] == 25.0  # not over the whole 10 s bucket
