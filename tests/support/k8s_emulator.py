"""A Kubernetes API server for tests: kmock's KubernetesEmulator over real HTTP on loopback.

No cluster can run here, so this is the one thing the Kubernetes tests fake. The official client
(through ``fnserve.k8s.api``) talks to it over HTTP exactly as it would to a cluster. kmock keeps
objects in memory and merges patches naively; :class:`Emulator` extends it where fnserve relies on
what a real API server does:

* server-side apply creates a missing object (kmock answers 404), and replaces the fields the
  applier sets, keeping ``status`` and a ``spec.replicas`` the apply leaves out (those belong to
  other field managers: the scale subresource, the HPA);
* list and watch honour ``labelSelector`` (``k=v`` and ``k`` — all fnserve uses);
* ``GET .../deployments/NAME/scale`` answers an ``autoscaling/v1`` Scale, as the subresource does;
* ``GET .../pods/NAME/log`` answers the text in :attr:`Emulator.pod_logs`.

Controllers do not run: tests play the endpoint controller by writing EndpointSlices.
:func:`open_cluster` gives the platform tests either this emulator or, when ``KUBECONFIG`` is set,
a fresh namespace of that real cluster, so the same tests run against both.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kmock
import pytest
import urllib3
from kmock._internal import rendering  # the Request type of handler hooks
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from fnserve.k8s.api import K8sApi, K8sError

RESOURCES = {
    "v1/configmaps": "ConfigMap",
    "v1/secrets": "Secret",
    "v1/services": "Service",
    "v1/serviceaccounts": "ServiceAccount",
    "v1/pods": "Pod",
    "apps/v1/deployments": "Deployment",
    "autoscaling/v2/horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
    "rbac.authorization.k8s.io/v1/roles": "Role",
    "rbac.authorization.k8s.io/v1/rolebindings": "RoleBinding",
    "batch/v1/cronjobs": "CronJob",
    "batch/v1/jobs": "Job",
    "discovery.k8s.io/v1/endpointslices": "EndpointSlice",
}
APPLY = "application/apply-patch+yaml"


def matches(obj: dict[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, sep, value = term.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


class Emulator(kmock.KubernetesEmulator):
    pod_logs: dict[str, str]

    async def _handle(self, request: rendering.Request) -> Any:
        apply = APPLY in (request.headers.get("Content-Type") or "")
        if request.action == kmock.action.UPDATE and request.name and not request.subresource and apply:
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key not in self.objects or self.objects[key].deleted:
                    self.objects[key] = copy.deepcopy(request.data)
                else:
                    self.objects[key].create(_applied(self.objects[key].raw, request.data))
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> Any:
        answer = await super()._serve_list(request)
        selector = request.params.get("labelSelector", "")
        return {**answer, "items": [o for o in answer["items"] if matches(o, selector)]}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector", "")
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or matches(event.get("object") or {}, selector):
                yield event

    async def _serve_fetch(self, request: rendering.Request) -> Any:
        if request.subresource == "log":
            return getattr(self, "pod_logs", {}).get(request.name or "", "").encode()
        obj = await super()._serve_fetch(request)
        if request.subresource == "scale":
            replicas = obj.get("spec", {}).get("replicas", 1)
            meta = {"name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace")}
            status = {"replicas": obj.get("status", {}).get("replicas", 0)}
            return {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta,
                    "spec": {"replicas": replicas}, "status": status}  # fmt: skip
        return obj


def _applied(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(new)
    if "status" in old:
        result["status"] = old["status"]
    replicas = old.get("spec", {}).get("replicas")
    if replicas is not None and "replicas" not in result.get("spec", {}):
        result.setdefault("spec", {})["replicas"] = replicas
    return result


@dataclass
class Running:
    emulator: Emulator
    url: str

    def objects(self, kind: str, namespace: str = "ns") -> dict[str, dict[str, Any]]:
        """Every stored object of ``kind`` in ``namespace``, by name (a snapshot)."""
        found = {}
        for (resource, ns, name), obj in list(self.emulator.objects.items()):
            if ns == namespace and not obj.deleted and RESOURCES.get(_key(resource)) == kind:
                found[name] = copy.deepcopy(obj.raw)
        return found


@contextmanager
def running_emulator() -> Iterator[Running]:
    """The emulator on an ephemeral loopback port, served by its own event loop in a thread."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator) as server:
            emulator.pod_logs = {}
            for resource, kind in RESOURCES.items():
                emulator.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=True)
            box.update(running=Running(emulator, str(server.url).rstrip("/")), stop=stop)
            box["loop"] = asyncio.get_running_loop()
            started.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="k8s-emulator", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the Kubernetes emulator did not start")
    try:
        yield box["running"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def _key(resource: Any) -> str:
    group = f"{resource.group}/" if resource.group else ""
    return f"{group}{resource.version}/{resource.plural}"


# --- one API for the platform tests: this emulator, or the cluster KUBECONFIG points at ----------


@dataclass
class Cluster:
    api: K8sApi
    emulator: Running | None  # None: a real cluster (controllers run, nothing is faked)

    @property
    def namespace(self) -> str:
        return self.api.namespace


@contextmanager
def open_cluster(kind: str) -> Iterator[Cluster]:
    """``emulator``: kmock on loopback, namespace ``ns``. ``real``: a fresh namespace in the
    cluster of ``KUBECONFIG``, deleted afterwards; skipped (saying why) when there is none."""
    if kind == "emulator":
        with running_emulator() as running:
            api = K8sApi(client.ApiClient(client.Configuration(host=running.url)), "ns")
            try:
                yield Cluster(api, running)
            finally:
                api.close()
        return
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is not set: the real-cluster run of the Kubernetes tests needs one")
    namespace = f"fnserve-test-{uuid.uuid4().hex[:8]}"
    try:
        api = K8sApi.connect(namespace=namespace)
        core = client.CoreV1Api(api.client)
        labels = {"fnserve.dev/test": "true"}
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=labels)))
    except K8sError as exc:
        pytest.skip(f"KUBECONFIG points at no cluster these tests can use: {exc}")
    except ApiException as exc:
        pytest.skip(
            f"cannot create a test namespace in the KUBECONFIG cluster: HTTP {exc.status} {exc.reason}"
        )
    except urllib3.exceptions.HTTPError as exc:
        pytest.skip(f"KUBECONFIG points at no reachable cluster: {exc}")
    try:
        yield Cluster(api, None)
    finally:
        core.delete_namespace(namespace)
        api.close()
