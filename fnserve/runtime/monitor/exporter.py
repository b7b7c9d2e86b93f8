"""Drift on ``/metrics``: computed from the live windows when Prometheus scrapes, not per batch.

fnserve_drift_score{function="recs",version="3",feature="hotel_price",kind="psi"} 0.012
fnserve_drift_threshold{function="recs",version="3",feature="hotel_price",kind="psi"} 0.2
fnserve_monitor_window_samples{function="recs",version="3"} 812
fnserve_monitor_window_seconds{function="recs",version="3"} 300
fnserve_monitor_window_limit{function="recs",version="3"} 10000

An alerting rule can compare a score with its threshold: ``fnserve_drift_score > on(function,
version, feature, kind) fnserve_drift_threshold``.
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
        scores, thresholds, samples, seconds, limit = families = self._families()
        for function, entry in self.monitor.describe()["functions"].items():
            for version, profile in entry["versions"].items():
                window = profile["window"]
                samples.add_metric([function, version], window["samples"])
                seconds.add_metric([function, version], window["seconds"])
                limit.add_metric([function, version], window["count"])
                for feature in profile["features"]:
                    for kind in ("psi", "js"):
                        labels = [function, version, feature["name"], kind]
                        thresholds.add_metric(labels, feature[f"{kind}_threshold"])
                        if feature[kind] is not None:
                            scores.add_metric(labels, feature[kind])
        yield from families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        feature = ["function", "version", "feature", "kind"]
        version = ["function", "version"]
        return (
            GaugeMetricFamily(
                "fnserve_drift_score",
                "Drift of a feature's live distribution from the training reference (kind: psi or js)",
                labels=feature,
            ),
            GaugeMetricFamily(
                "fnserve_drift_threshold", "The drift score over which a feature is drifted", labels=feature
            ),
            GaugeMetricFamily(
                "fnserve_monitor_window_samples", "Instances in the live monitoring window", labels=version
            ),
            GaugeMetricFamily(
                "fnserve_monitor_window_seconds", "The live window's length in time", labels=version
            ),
            GaugeMetricFamily(
                "fnserve_monitor_window_limit", "The most instances the live window holds", labels=version
            ),
        )
