"""The ``k8s`` target: the gateway's :class:`~fnserve.gateway.platform.Platform` on a cluster.

* state: one ConfigMap per function (``fn-<function>``), holding the deployment state and the
  spec its version objects are rendered from; saving it applies every object of the function
  and deletes those of versions no longer in the state;
* replicas: the EndpointSlices of each version's headless Service, kept by a watch
  (:mod:`fnserve.k8s.endpoints`);
* scale: the Deployment's scale subresource, and the HPA's floor (see :mod:`fnserve.k8s.manifests`
  for how the gateway and the HPA share a Deployment without fighting).

Run from a project (``fn deploy``), the spec comes from the project's files and saving also applies
the gateway; run in the cluster (the gateway itself), the spec stored with the state is used —
``publish_spec`` refreshes it when a deploy goes through a running gateway's admin API.

    platform = K8sPlatform(K8sApi.connect(namespace="ml"), specs=lambda name: spec)
    platform.save_state(FunctionDeployment("recs", {"3": VersionDeployment("reg/fnserve/recs:ab12")}))
    platform.scale("recs", "3", 2)
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from typing import Any

from fnserve.gateway.platform import FunctionDeployment, PlatformError, Replica
from fnserve.k8s import names
from fnserve.k8s.api import K8sApi
from fnserve.k8s.endpoints import SliceCache, replicas_from_slices
from fnserve.k8s.gateway import TOKEN_SECRET, GatewaySpec, gateway_objects
from fnserve.k8s.manifests import SPEC_KEY, STATE_KEY, Objects, function_objects
from fnserve.k8s.project import gateway_spec, kubeconfig_path, load_function_spec, load_k8s_settings
from fnserve.k8s.spec import FunctionSpec
from fnserve.project import FUNCTIONS_DIR, ProjectSettings

GATEWAY_MANAGER = "fnserve-gateway"  # field manager of the gateway's own changes (scale, floors)
STATE_SELECTOR = {names.MANAGED_LABEL: names.MANAGED_BY, names.COMPONENT_LABEL: "state"}
VERSION_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")
MAX_LOG_PODS = 5


class K8sPlatform:
    target = "k8s"

    def __init__(
        self,
        api: K8sApi,
        *,
        specs: Callable[[str], FunctionSpec | None] | None = None,
        gateway: GatewaySpec | None = None,
        gateway_token: str = "",
        watch: bool = True,
    ):
        self.api = api
        self.specs = specs  # a function's spec from the project (None: not there); else the stored one
        self.gateway = gateway  # applied with every save, with its token Secret; None: not managed
        self.gateway_token = gateway_token  # "" = a random one, the first time
        self._cache = SliceCache(api) if watch else None

    # --- state ----------------------------------------------------------------------------------

    def load_state(self) -> dict[str, FunctionDeployment]:
        found: dict[str, FunctionDeployment] = {}
        for configmap in self.api.select("ConfigMap", STATE_SELECTOR)[0]:
            name, data = configmap["metadata"]["name"], configmap.get("data") or {}
            if STATE_KEY not in data:
                continue  # a spec published ahead of the function's first deploy
            try:
                deployment = FunctionDeployment.from_dict(json.loads(data[STATE_KEY]))
            except (KeyError, TypeError, ValueError) as exc:
                raise PlatformError(f"ConfigMap {name} holds no valid deployment state: {exc}") from None
            found[deployment.name] = deployment
        return found

    def save_state(self, deployment: FunctionDeployment) -> None:
        """Apply every object of the function (its state ConfigMap last, so the gateway never
        routes to a version whose objects do not exist yet), then remove versions that left."""
        spec = self._spec(deployment.name)
        live = {
            kind: self.api.select(kind, {names.MANAGED_LABEL: names.MANAGED_BY})[0] for kind in VERSION_KINDS
        }
        floors = {
            hpa["metadata"]["labels"].get(names.VERSION_LABEL, ""): int(hpa["spec"].get("minReplicas") or 1)
            for hpa in live["HorizontalPodAutoscaler"]
            if hpa["metadata"]["labels"].get(names.FUNCTION_LABEL) == deployment.name
        }
        try:
            objects = function_objects(spec, deployment, floors=floors)
        except ValueError as exc:
            raise PlatformError(str(exc), status=422) from None
        _check_names(objects, live)
        if self.gateway is not None:
            self._ensure_token()
            objects = gateway_objects(self.gateway) + objects
        for obj in sorted(objects, key=lambda o: o["kind"] == "ConfigMap"):  # stable: order kept
            self.api.apply(obj)
        for kind, items in live.items():
            for item in items:
                labels = item["metadata"]["labels"]
                version = labels.get(names.VERSION_LABEL)
                mine = labels.get(names.FUNCTION_LABEL) == deployment.name
                if mine and version is not None and version not in deployment.versions:
                    self.api.delete(kind, item["metadata"]["name"])
        if spec.schedule is None:
            self._delete_labelled("CronJob", deployment.name)

    def publish_spec(self, function: str) -> None:
        """Store the project's spec of ``function`` with its state (only that key), so a gateway that
        saves the state next (``fn deploy`` through its admin API) renders from the current files."""
        spec = self.specs(function) if self.specs is not None else None
        if spec is None:
            return
        name = names.function_name(function)
        data = {SPEC_KEY: json.dumps(spec.to_dict(), sort_keys=True)}
        if self.api.get("ConfigMap", name) is None:
            meta = {
                "name": name,
                "namespace": spec.namespace,
                "labels": names.function_labels(function, "state"),
            }
            self.api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
        else:  # a merge patch leaves the deployment state alone
            self.api.patch("ConfigMap", name, {"data": data}, manager=names.MANAGED_BY)

    def delete(self, function: str) -> None:
        for kind in (*VERSION_KINDS, "CronJob", "ConfigMap"):
            self._delete_labelled(kind, function)

    # --- replicas -----------------------------------------------------------------------------

    def replicas(self, function: str) -> list[Replica]:
        if self._cache is not None:
            slices = self._cache.slices()
        else:
            slices = self.api.select("EndpointSlice", {names.FUNCTION_LABEL: function})[0]
        return [r for r in replicas_from_slices(slices) if r.function == function]

    def scale(self, function: str, version: str, replicas: int) -> None:
        """0: scale the Deployment to 0 (its HPA goes dormant). n > 0: raise the HPA's floor to n
        first (so the HPA does not undo it), then the Deployment if it has fewer than n."""
        if replicas < 0:
            raise PlatformError(f"cannot scale {function}@{version} to {replicas} replicas", status=422)
        name = names.version_name(function, version)
        if replicas > 0:
            hpa = self.api.get("HorizontalPodAutoscaler", name)
            if hpa is not None:
                floor = min(replicas, int(hpa["spec"]["maxReplicas"]))
                if hpa["spec"].get("minReplicas") != floor:
                    patch = {"spec": {"minReplicas": floor}}
                    self.api.patch("HorizontalPodAutoscaler", name, patch, manager=GATEWAY_MANAGER)
        current = self.api.get_scale(name)
        if current is None and replicas == 0:
            return  # already gone (a removed version whose endpoints linger): nothing to stop
        if current is None:
            message = f"{function}@{version} is not deployed: there is no Deployment {name}"
            raise PlatformError(message, status=404)
        if replicas == 0 or current < replicas:
            self.api.set_scale(name, replicas, manager=GATEWAY_MANAGER)

    def desired(self, function: str, version: str) -> int:
        """0 when scaled to zero, else the floor last asked for (the HPA's minReplicas)."""
        name = names.version_name(function, version)
        current = self.api.get_scale(name)
        if not current:
            return 0
        hpa = self.api.get("HorizontalPodAutoscaler", name)
        return int(hpa["spec"].get("minReplicas") or 1) if hpa else current

    def logs(self, function: str, *, tail: int = 100) -> list[str]:
        pods = self.api.select("Pod", {names.FUNCTION_LABEL: function})[0]
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        lines: list[str] = []
        for pod in pods[-MAX_LOG_PODS:]:
            name = pod["metadata"]["name"]
            version = pod["metadata"].get("labels", {}).get(names.VERSION_LABEL, "?")
            lines += [f"{version}/{name} | {line}" for line in self.api.log(name, tail=tail)]
        return lines[-tail:]

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        self.api.close()

    # --- helpers ------------------------------------------------------------------------------

    def _spec(self, function: str) -> FunctionSpec:
        found = self.specs(function) if self.specs is not None else None
        if found is not None:
            return found
        configmap = self.api.get("ConfigMap", names.function_name(function))
        if configmap is None or SPEC_KEY not in (configmap.get("data") or {}):
            raise PlatformError(
                f"{function} was never deployed to this namespace: run `fn deploy {function} --target k8s` "
                "from its project first",
                status=404,
            )
        try:
            return FunctionSpec.from_dict(json.loads(configmap["data"][SPEC_KEY]))
        except ValueError as exc:
            raise PlatformError(f"ConfigMap {names.function_name(function)}: {exc}") from None

    def _ensure_token(self) -> None:
        """The gateway's admin token Secret, created once; an existing one is never replaced."""
        if self.api.get("Secret", TOKEN_SECRET) is None:
            meta = {"name": TOKEN_SECRET, "namespace": self.api.namespace, "labels": names.gateway_labels()}
            token = self.gateway_token or secrets.token_urlsafe(32)
            self.api.apply(
                {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"token": token}}
            )

    def _delete_labelled(self, kind: str, function: str) -> None:
        selector = {names.MANAGED_LABEL: names.MANAGED_BY, names.FUNCTION_LABEL: function}
        for item in self.api.select(kind, selector)[0]:
            self.api.delete(kind, item["metadata"]["name"])


def _check_names(objects: Objects, live: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse to take over an object another function (or version) owns under the same name."""
    owners = {
        (kind, item["metadata"]["name"]): _owner(item["metadata"].get("labels") or {})
        for kind, items in live.items()
        for item in items
    }
    for obj in objects:
        owner = owners.get((obj["kind"], obj["metadata"]["name"]))
        if owner is not None and owner != _owner(obj["metadata"]["labels"]):
            raise PlatformError(
                f"{obj['kind']} {obj['metadata']['name']} already belongs to {owner[0]}@{owner[1]}: "
                "rename the function or the version",
                status=409,
            )


def _owner(labels: dict[str, str]) -> tuple[str | None, str | None]:
    return labels.get(names.FUNCTION_LABEL), labels.get(names.VERSION_LABEL)


def create_platform(settings: ProjectSettings) -> K8sPlatform:
    """The ``k8s`` target's entry point (:mod:`fnserve.gateway.targets`)."""
    try:
        k8s = load_k8s_settings(settings.project_dir, os.environ, {})
    except ValueError as exc:
        raise PlatformError(str(exc)) from None
    api = K8sApi.connect(namespace=k8s.namespace, context=k8s.context)
    if kubeconfig_path(os.environ) is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return K8sPlatform(api)  # the gateway in its pod: specs are the stored ones

    def specs(name: str) -> FunctionSpec | None:
        if not (settings.project_dir / FUNCTIONS_DIR / name).is_dir():
            return None  # not this project's: the stored spec serves (fn split from elsewhere)
        try:
            return load_function_spec(settings, k8s, api.namespace, name)
        except ValueError as exc:
            raise PlatformError(str(exc), status=422) from None

    gateway = gateway_spec(settings, k8s, api.namespace)
    return K8sPlatform(api, specs=specs, gateway=gateway, gateway_token=settings.gateway_token)
