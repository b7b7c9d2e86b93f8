"""Which replicas each version has: its headless Service's EndpointSlices, kept by a watch.

The gateway asks for replicas every control-loop tick and many times a second while a version
wakes from zero; listing from the API server that often would load it for nothing. So one
thread lists fnserve's EndpointSlices once, then watches them, and :meth:`SliceCache.slices`
answers from memory — and a pod turning ready reaches the gateway as soon as the endpoint
controller writes it. A broken watch lists again after a pause.

Endpoint conditions map to the contract: ``terminating`` is *draining* (never send it new
requests); ``ready`` (unset means ready, as the API documents) and not terminating is *ready*.

>>> s = {"metadata": {"name": "fn-recs-v3-x", "labels": {"fnserve.dev/function": "recs",
...      "fnserve.dev/version": "3"}}, "ports": [{"name": "http", "port": 8080}],
...      "endpoints": [{"addresses": ["10.1.0.7"], "conditions": {"ready": True},
...                     "targetRef": {"kind": "Pod", "name": "fn-recs-v3-7d9-abcde"}}]}
>>> [(r.version, r.url, r.ready, r.draining, r.id) for r in replicas_from_slices([s])]
[('3', 'http://10.1.0.7:8080', True, False, 'fn-recs-v3-7d9-abcde')]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from fnserve.gateway.platform import Replica
from fnserve.k8s import names
from fnserve.k8s.api import K8sApi, K8sError, Watch
from fnserve.project import DEFAULT_PORT

log = logging.getLogger("fnserve.k8s")
SELECTOR = {names.MANAGED_LABEL: names.MANAGED_BY, names.VERSION_LABEL: ""}  # "": the label exists


def replicas_from_slices(slices: Iterable[dict[str, Any]]) -> list[Replica]:
    """One :class:`Replica` per pod (a pod listed twice, e.g. IPv4 and IPv6, counts once)."""
    found: dict[str, Replica] = {}
    for item in slices:
        labels = item.get("metadata", {}).get("labels") or {}
        function, version = labels.get(names.FUNCTION_LABEL), labels.get(names.VERSION_LABEL)
        ports = item.get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == "http"), None) or DEFAULT_PORT
        if function is None or version is None:
            continue
        for endpoint in item.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            conditions = endpoint.get("conditions") or {}
            draining = bool(conditions.get("terminating"))
            ready = conditions.get("ready") is not False and not draining
            host = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
            pod = (endpoint.get("targetRef") or {}).get("name") or addresses[0]
            found.setdefault(pod, Replica(function, version, f"http://{host}:{port}", ready, draining, pod))
    return list(found.values())


class SliceCache:
    """fnserve's EndpointSlices in the API's namespace, current to the last watch event."""

    def __init__(self, api: K8sApi, *, watch_timeout_s: int = 300, retry_s: float = 2.0):
        self.api = api
        self.watch_timeout_s = watch_timeout_s
        self.retry_s = retry_s
        self._slices: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._tried = threading.Event()  # the first list answered (or failed)
        self._stop = threading.Event()
        self._error: K8sError | None = None
        self._synced = False
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None

    def slices(self, *, wait_s: float = 10.0) -> list[dict[str, Any]]:
        """The cached slices; the first call starts the watch and waits for the first list."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fnserve-k8s-slices", daemon=True)
                self._thread.start()
        self._tried.wait(wait_s)
        with self._lock:
            if not self._synced:
                raise self._error or K8sError("no answer from the Kubernetes API for EndpointSlices yet")
            return list(self._slices.values())

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            watch, thread = self._watch, self._thread
        if watch is not None:
            watch.close()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except K8sError as exc:
                with self._lock:
                    self._error = exc
                log.warning("EndpointSlices: %s; retrying in %.0f s", exc, self.retry_s)
            except Exception:  # never let the thread die: the gateway would route on stale data
                log.exception("EndpointSlices: unexpected failure; retrying in %.0f s", self.retry_s)
            self._tried.set()
            self._stop.wait(self.retry_s)

    def _follow(self) -> None:
        """List, then apply watch events until the stream ends or needs a fresh list."""
        items, version = self.api.select("EndpointSlice", SELECTOR)
        with self._lock:
            self._slices = {item["metadata"]["name"]: item for item in items}
            self._synced, self._error = True, None
        self._tried.set()
        while not self._stop.is_set():
            watch = self.api.watch("EndpointSlice", SELECTOR, version, timeout_s=self.watch_timeout_s)
            with self._lock:
                self._watch = watch
            if self._stop.is_set():  # close() ran before this watch was visible to it
                watch.close()
            for event in watch:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # typically 410 Gone: the version is too old; list again
                    raise K8sError(f"watch: {obj.get('message', 'error')}", int(obj.get("code") or 0))
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED"):
                    with self._lock:
                        self._slices[obj["metadata"]["name"]] = obj
                elif kind == "DELETED":
                    with self._lock:
                        self._slices.pop(obj["metadata"]["name"], None)
            self._stop.wait(0.2)  # the server ended the stream (its timeout): watch again, gently
