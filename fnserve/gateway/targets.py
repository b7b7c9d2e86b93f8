"""Deploy targets by name: ``platform_for("local", settings)`` -> a :class:`Platform`.

A target is a module with ``create_platform(settings) -> Platform``, imported only when asked
for (the Kubernetes and Docker clients are optional dependencies). To add one, implement the
protocol in ``fnserve/gateway/platform.py`` and name its module here.

>>> sorted(TARGETS)
['docker', 'k8s', 'local']
"""

from __future__ import annotations

import importlib

from fnserve.gateway.platform import Platform, PlatformError
from fnserve.project import ProjectSettings

TARGETS = {
    "local": "fnserve.local.platform",  # `fn serve` processes on this machine
    "docker": "fnserve.docker.platform",  # containers on the local Docker engine
    "k8s": "fnserve.k8s.platform",  # Deployments on a Kubernetes cluster
}


def platform_for(target: str, settings: ProjectSettings) -> Platform:
    """The platform of a target; a :class:`PlatformError` says what is missing."""
    module_name = TARGETS.get(target)
    if module_name is None:
        raise PlatformError(f"unknown target {target!r}; choose one of {', '.join(sorted(TARGETS))}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise PlatformError(f"target {target!r} is not available in this version of fnserve") from None
        raise PlatformError(f"target {target!r} needs {exc.name!r}: pip install 'fnserve[deploy]'") from None
    create = getattr(module, "create_platform", None)
    if create is None:
        raise PlatformError(f"target {target!r} is not available yet ({module_name} has no create_platform)")
    platform: Platform = create(settings)
    return platform
