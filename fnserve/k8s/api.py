"""The one module that talks to the Kubernetes API, through the official ``kubernetes`` client.

Objects go in and come out as plain dicts in the API's own shape. Every object is applied with
server-side apply (field manager ``fnserve``, conflicts forced: fnserve owns what it renders);
replica counts change through the scale subresource. A failure is a :class:`K8sError` whose
message says what was attempted and what the server (or the network) answered — never a client
traceback.

    api = K8sApi.connect(namespace="ml")          # kubeconfig, or the pod's service account
    api.apply(deployment)                         # create or update, server-side
    api.set_scale("fn-recs-v3", 2)
    items, version = api.select("EndpointSlice", {"fnserve.dev/function": "recs"})
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from fnserve.gateway.platform import PlatformError
from fnserve.k8s.project import kubeconfig_path

FIELD_MANAGER = "fnserve"
APPLY = "application/apply-patch+yaml"  # JSON is YAML: the client sends the dict as JSON
MERGE = "application/merge-patch+json"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# kind -> (API path, plural, apiVersion); every kind fnserve uses is namespaced.
KINDS: dict[str, tuple[str, str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps", "v1"),
    "Secret": ("/api/v1", "secrets", "v1"),
    "Service": ("/api/v1", "services", "v1"),
    "ServiceAccount": ("/api/v1", "serviceaccounts", "v1"),
    "Pod": ("/api/v1", "pods", "v1"),
    "Deployment": ("/apis/apps/v1", "deployments", "apps/v1"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", "autoscaling/v2"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", "policy/v1"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", "rbac.authorization.k8s.io/v1"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", "rbac.authorization.k8s.io/v1"),
    "CronJob": ("/apis/batch/v1", "cronjobs", "batch/v1"),
    "Job": ("/apis/batch/v1", "jobs", "batch/v1"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", "discovery.k8s.io/v1"),
}


class K8sError(PlatformError):
    """The API refused or could not be reached. ``api_status`` is the API server's HTTP status
    (0: no answer); ``status`` stays the platform's 502 for the gateway's admin API."""

    def __init__(self, message: str, api_status: int = 0):
        super().__init__(message)
        self.api_status = api_status


class K8sApi:
    def __init__(self, api_client: client.ApiClient, namespace: str, *, timeout_s: float = 30.0):
        self.client = api_client
        self.namespace = namespace
        self.timeout_s = timeout_s

    @classmethod
    def connect(
        cls, *, namespace: str = "", context: str = "", environ: Mapping[str, str] | None = None
    ) -> K8sApi:
        """From the kubeconfig if there is one, else in a pod from its service account."""
        environ = os.environ if environ is None else environ
        kubeconfig = kubeconfig_path(environ)
        try:
            if kubeconfig is None and environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                found = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.is_file() else ""
                return cls(client.ApiClient(configuration), namespace or found or "default")
            if kubeconfig is None:
                raise K8sError("no Kubernetes cluster: set KUBECONFIG (or create ~/.kube/config)")
            contexts, active = config.list_kube_config_contexts(config_file=str(kubeconfig))
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if chosen is None:
                known = ", ".join(c["name"] for c in contexts)
                raise K8sError(f"{kubeconfig} has no context {context!r} (it has: {known})")
            api_client = config.new_client_from_config(
                config_file=str(kubeconfig), context=chosen["name"], persist_config=False
            )
        except (ConfigException, OSError, yaml.YAMLError) as exc:
            raise K8sError(f"cannot use the Kubernetes configuration {kubeconfig or ''}: {exc}") from None
        return cls(api_client, namespace or chosen["context"].get("namespace") or "default")

    def close(self) -> None:
        self.client.close()

    # --- objects ------------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update ``obj`` with server-side apply; returns the object as stored."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        if KINDS[kind][2] != obj["apiVersion"]:
            raise K8sError(
                f"{kind} {name}: fnserve applies {kind} as {KINDS[kind][2]}, not {obj['apiVersion']}"
            )
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        return self._json("PATCH", self._path(kind, name), f"apply {kind} {name}", query, obj, APPLY)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self._json("GET", self._path(kind, name), f"read {kind} {name}")
        except K8sError as exc:
            if exc.api_status == 404:
                return None
            raise

    def select(self, kind: str, selector: Mapping[str, str]) -> tuple[list[dict[str, Any]], str]:
        """The objects whose labels match ``selector``, and the list's resourceVersion."""
        query = [("labelSelector", _selector(selector))]
        answer = self._json("GET", self._path(kind), f"list {KINDS[kind][1]}", query)
        return answer.get("items") or [], answer.get("metadata", {}).get("resourceVersion", "")

    def patch(self, kind: str, name: str, patch: Mapping[str, Any], *, manager: str) -> dict[str, Any]:
        """A JSON merge patch of a few fields, owned by ``manager`` (e.g. the gateway's floor)."""
        query = [("fieldManager", manager)]
        return self._json("PATCH", self._path(kind, name), f"patch {kind} {name}", query, patch, MERGE)

    def delete(self, kind: str, name: str) -> bool:
        """Delete (dependents in the background); False if it was not there."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self._json("DELETE", self._path(kind, name), f"delete {kind} {name}", body=body)
        except K8sError as exc:
            if exc.api_status == 404:
                return False
            raise
        return True

    def get_scale(self, deployment: str) -> int | None:
        """``spec.replicas`` through the scale subresource; None if there is no such Deployment."""
        path = self._path("Deployment", deployment) + "/scale"
        try:
            scale = self._json("GET", path, f"read the scale of Deployment {deployment}")
        except K8sError as exc:
            if exc.api_status == 404:
                return None
            raise
        return int(scale.get("spec", {}).get("replicas") or 0)

    def set_scale(self, deployment: str, replicas: int, *, manager: str = FIELD_MANAGER) -> None:
        path = self._path("Deployment", deployment) + "/scale"
        what = f"scale Deployment {deployment} to {replicas}"
        self._json("PATCH", path, what, [("fieldManager", manager)], {"spec": {"replicas": replicas}}, MERGE)

    def log(self, pod: str, *, tail: int) -> list[str]:
        query = [("tailLines", str(tail))]
        response = self._call("GET", self._path("Pod", pod) + "/log", f"read the log of pod {pod}", query)
        return response.data.decode("utf-8", "replace").splitlines()

    def watch(
        self, kind: str, selector: Mapping[str, str], resource_version: str, *, timeout_s: int
    ) -> Watch:
        """Changes after ``resource_version``; the server ends the stream after ``timeout_s``."""
        query = [
            ("watch", "true"),
            ("labelSelector", _selector(selector)),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        what = f"watch {KINDS[kind][1]}"
        return Watch(self._call("GET", self._path(kind), what, query, stream=True, read_s=timeout_s + 30))

    # --- the wire -----------------------------------------------------------------------------

    def _path(self, kind: str, name: str = "") -> str:
        prefix, plural, _ = KINDS[kind]
        path = f"{prefix}/namespaces/{quote(self.namespace)}/{plural}"
        return f"{path}/{quote(name)}" if name else path

    def _json(
        self,
        method: str,
        path: str,
        what: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = self._call(method, path, what, query, body, content_type).data
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise K8sError(f"{what}: the API answered something that is not JSON: {data[:200]!r}") from None
        return answer if isinstance(answer, dict) else {}

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        *,
        stream: bool = False,
        read_s: float | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            request = self.client.param_serialize(
                method=method,
                resource_path=path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.client.call_api(*request, _request_timeout=(5.0, read_s or self.timeout_s))
        except ApiException as exc:  # TLS and other failures before any HTTP answer
            raise K8sError(f"{what}: {exc.reason or exc}", exc.status or 0) from None
        except urllib3.exceptions.HTTPError as exc:
            host = self.client.configuration.host
            raise K8sError(f"{what}: cannot reach the Kubernetes API at {host}: {_reason(exc)}") from None
        if not stream or not 200 <= response.status < 300:
            response.read()
        if not 200 <= response.status < 300:
            raise K8sError(
                _refusal(what, response.status, response.data or b"", self.namespace), response.status
            )
        return response


class Watch:
    """One watch request's events (dicts with ``type`` and ``object``); ``close`` ends it from any
    thread, the iteration then stops."""

    def __init__(self, response: Any):
        self._raw = response.response  # the urllib3 response, read as it streams

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buffer = b""
        try:
            for chunk in self._raw.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError):
            return  # closed, timed out or cut: the caller lists again or re-watches
        finally:
            self._raw.close()  # a half-read stream is never reused: close its connection
            self._raw.release_conn()

    def close(self) -> None:
        """Wake a reader blocked in another thread: its iteration ends."""
        with contextlib.suppress(ValueError, RuntimeError, OSError):  # already finished
            self._raw.shutdown()


def _selector(labels: Mapping[str, str]) -> str:
    """``{"a": "1", "b": ""}`` -> ``a=1,b``: an empty value asks only that the label exists."""
    return ",".join(f"{k}={v}" if v else k for k, v in labels.items())


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1]


def _refusal(what: str, status: int, data: bytes, namespace: str) -> str:
    try:
        message = json.loads(data).get("message") or ""
    except (ValueError, AttributeError):
        message = data[:200].decode("utf-8", "replace")
    message = message.split("\n", 1)[0] or f"HTTP {status}"
    hint = {
        401: " — the cluster did not accept your credentials; check your kubeconfig",
        403: f" — your account lacks the permission in namespace {namespace!r}",
    }.get(status, "")
    return f"{what}: {message} (HTTP {status}){hint}"
