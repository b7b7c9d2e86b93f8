"""Drift on ``/metrics``: computed from the live windows when Prometheus scrapes, not per batch.

fnserve_drift_score{function="recs",version="3",feature="hotel_price",kind="psi"} 0.012
fnserve_monitor_window_samples{function="recs",version="3"} 812
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fnserve.runtime.monitor.core import Monitor


class DriftCollector(Collector):
    def __init__(self, monitor: Monitor):
        self.monitor = monitor

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        scores, samples = self._families()
        for function, entry in self.monitor.describe()["functions"].items():
            for version, profile in entry["versions"].items():
                samples.add_metric([function, version], profile["window"]["samples"])
                for feature in profile["features"]:
                    for kind in ("psi", "js"):
                        if feature[kind] is not None:
                            scores.add_metric([function, version, feature["name"], kind], feature[kind])
        yield scores
        yield samples

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "fnserve_drift_score",
                "Drift of a feature's live distribution from the training reference (kind: psi or js)",
                labels=["function", "version", "feature", "kind"],
            ),
            GaugeMetricFamily(
                "fnserve_monitor_window_samples",
                "Instances in the live monitoring window",
                labels=["function", "version"],
            ),
        )
