"""Prometheus metrics of asynchronous calls, on the registry of the process that serves them:
``fnserve_async_*`` on ``fn serve`` and the runtime, ``fnserve_gateway_async_*`` on the gateway."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CallMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str = "fnserve_async"):
        self.registry, self.prefix = registry, prefix

        def counter(name: str, what: str, *labels: str) -> Counter:
            return Counter(f"{prefix}_{name}", what, ["function", *labels], registry=registry)

        def gauge(name: str, what: str) -> Gauge:
            return Gauge(f"{prefix}_{name}", what, ["function"], registry=registry)

        self.queued = gauge("calls_queued", "Calls accepted and waiting to run (as this process knows them)")
        self.running = gauge("calls_running", "Calls running in this process")
        self.accepted = counter("calls_accepted", "Calls accepted (stored, then answered 202)")
        self.refused = counter(
            "calls_refused", "Calls refused: full (429) or storage unavailable (503)", "reason"
        )
        self.completed = counter("calls_completed", "Calls done: the function answered 2xx")
        self.failed = counter("calls_failed", "Calls failed: an error answer, or out of attempts")
        self.retried = counter("calls_retried", "Runs tried again (429/502/503/504 answers, runners gone)")
        self.discarded = counter(
            "calls_discarded", "Runs whose outcome was not recorded: another run of the call finished first"
        )
        self.expired = counter("calls_expired", "Outcomes removed past result_ttl_s")
        self.callbacks = counter("callbacks_delivered", "Callbacks delivered (a 2xx answer)")
        self.callback_failures = counter(
            "callback_failures", "Callbacks recorded as failed after their tries"
        )
        self.callback_retries = counter("callback_retries", "Callback tries that failed and were retried")
