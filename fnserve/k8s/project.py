"""The Kubernetes side of a project, read from files only (no cluster needed): the ``[k8s]``
table of ``fn.toml``, each function's ``function.toml``, and the kubeconfig's namespace.

    k8s = load_k8s_settings(settings.project_dir, os.environ, {"namespace": "ml"})
    spec = load_function_spec(settings, k8s, resolve_namespace(k8s, os.environ), "recs")
    print(to_yaml(render(spec, deployment, GatewaySpec(spec.namespace))))    # fn deploy --dry-run

>>> load_k8s_settings(Path("/nonexistent"), {"FNSERVE_K8S_NAMESPACE": "ml"}, {}).namespace
'ml'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fnserve.gateway.platform import FunctionDeployment
from fnserve.k8s.gateway import GatewaySpec, gateway_objects
from fnserve.k8s.manifests import Objects, function_objects
from fnserve.k8s.spec import FunctionSpec, K8sSettings, function_spec, is_local
from fnserve.project import FUNCTION_FILE, Layers, ProjectSettings, function_dir, read_toml


def load_k8s_settings(
    project_dir: Path, environ: Mapping[str, str], overrides: Mapping[str, Any]
) -> K8sSettings:
    """``[k8s]`` of the project's fn.toml, under ``FNSERVE_K8S_*`` and flags (a ``ConfigError``,
    which is a ``ValueError``, if bad)."""
    return K8sSettings.from_layers(Layers.read(project_dir, environ, overrides))


def load_function_spec(
    settings: ProjectSettings, k8s: K8sSettings, namespace: str, name: str
) -> FunctionSpec:
    """The spec of ``functions/<name>/`` (its ``function.toml`` is optional)."""
    folder = function_dir(settings.project_dir, name)
    if not folder.is_dir():
        raise ValueError(f"no function {name!r}: expected the folder {folder}")
    return function_spec(settings, k8s, namespace, name, read_toml(folder / FUNCTION_FILE))


def kubeconfig_path(environ: Mapping[str, str]) -> Path | None:
    """The kubeconfig ``fn`` would use (``KUBECONFIG``'s first file, else ``~/.kube/config``)."""
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    path = Path(listed[0]) if listed else Path(environ.get("HOME") or "~") / ".kube" / "config"
    path = path.expanduser()
    return path if path.is_file() else None


def resolve_namespace(k8s: K8sSettings, environ: Mapping[str, str]) -> str:
    """The configured namespace, else the kubeconfig context's (read locally), else ``default``."""
    if k8s.namespace:
        return k8s.namespace
    path = kubeconfig_path(environ)
    try:
        import yaml

        kubeconfig = yaml.safe_load(path.read_text()) if path else None
    except (ImportError, OSError, ValueError):
        kubeconfig = None
    if not isinstance(kubeconfig, dict):
        return "default"
    wanted = k8s.context or kubeconfig.get("current-context")
    for entry in kubeconfig.get("contexts") or []:
        if isinstance(entry, dict) and entry.get("name") == wanted:
            return str((entry.get("context") or {}).get("namespace") or "default")
    return "default"


def gateway_spec(settings: ProjectSettings, k8s: K8sSettings, namespace: str) -> GatewaySpec:
    reachable = not is_local(settings.store)  # a store only this machine has: no rollouts from it
    options = json.dumps(dict(settings.storage_options), sort_keys=True) if settings.storage_options else None
    return GatewaySpec(
        namespace=namespace,
        image=k8s.gateway_image,
        service_type=k8s.gateway_service_type,
        auth=settings.gateway_auth,
        image_pull_policy=k8s.image_pull_policy,
        store=settings.store if reachable else None,
        store_options=options if reachable else None,
        secret=k8s.secret or None,
    )


def render(spec: FunctionSpec, deployment: FunctionDeployment, gateway: GatewaySpec | None) -> Objects:
    """Every object ``fn deploy`` applies for one function, gateway first, in apply order."""
    return (gateway_objects(gateway) if gateway else []) + function_objects(spec, deployment)


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, as ``kubectl apply -f -`` reads it."""
    try:
        import yaml  # PyYAML comes with the kubernetes client (the deploy extra)
    except ImportError:  # JSON is YAML too
        import json

        return "".join("---\n" + json.dumps(o, indent=2) + "\n" for o in objects)

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a dict used twice is written twice, never as an &anchor

    return "".join("---\n" + yaml.dump(dict(o), Dumper=Dumper, sort_keys=False) for o in objects)
