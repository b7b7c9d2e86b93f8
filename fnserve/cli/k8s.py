"""The Kubernetes side of ``fn deploy``: which target is the default, the image a cluster runs, and
``--dry-run -o yaml``. Applying goes through the ``k8s`` platform like every other target.

``fn deploy`` (:mod:`fnserve.cli.deploy`) calls these; nothing here registers a command.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from typing import Any

import click

from fnserve.cli.common import console
from fnserve.runtime.errors import FnError
from fnserve.runtime.settings import Settings

DRY_RUN_NOTE = (
    "# fn deploy {name} --target k8s --dry-run: nothing was applied. On a real deploy, fnserve also\n"
    "# creates the Secret {secret} (the gateway's admin token) once; it is never printed.\n"
)


def resolve_target(settings: Settings, target: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--target``, else the configured one (``FNSERVE_GATEWAY_TARGET``, ``[gateway] target``),
    else ``k8s`` when a kubeconfig is present (``KUBECONFIG`` or ``~/.kube/config``), else local."""
    from fnserve.k8s.project import kubeconfig_path

    environ = os.environ if environ is None else environ
    if target:
        return target
    if environ.get("FNSERVE_GATEWAY_TARGET") or _configured_target(settings):
        return settings.gateway_target
    return "k8s" if kubeconfig_path(environ) else settings.gateway_target


def cluster_image(settings: Settings, name: str) -> str:
    """The function's image for a cluster: built if its sources changed (the Docker engine), pushed
    to ``[build] registry`` when one is set; returns the reference the pods will pull."""
    from fnserve.build import BuildError
    from fnserve.build.images import push_image
    from fnserve.build.workflows import ensure_image
    from fnserve.cli.build import show
    from fnserve.docker_engine import DockerEngine, EngineError

    try:
        engine = DockerEngine.connect()
        plan = ensure_image(settings, name, engine, show).plan
        if not settings.registry:
            console.print(
                f"no [build] registry is set: the cluster's nodes must already have {plan.image} "
                "(e.g. `kind load docker-image` or `minikube image load`), or pass --image"
            )
            return plan.image
        push_image(plan, engine, settings.registry, on_output=show)
    except (BuildError, EngineError) as exc:
        raise click.ClickException(f"{exc}\n(or pass --image with an image the cluster can pull)") from None
    return plan.remote(settings.registry)[0]


def publish_spec(settings: Settings, name: str) -> None:
    """Store the function's spec (resources, store, ...) from this project in the cluster, so that a
    running gateway that applies the deploy renders it from these files."""
    from fnserve.k8s.platform import create_platform

    platform = create_platform(settings)
    try:
        platform.publish_spec(name)
    finally:
        platform.close()


def dry_run(settings: Settings, name: str, *, output: str = "yaml", **deploy: Any) -> str:
    """Every object ``fn deploy NAME --target k8s`` would apply, without contacting the cluster:
    the function as a first deploy (its one version takes all traffic) and the gateway.

    ``deploy``: the options of :func:`fnserve.gateway.deployments.deploy` (``image`` defaults to
    ``fnserve/NAME:latest``, in the registry when one is set)."""
    from fnserve.gateway import deployments
    from fnserve.k8s import project

    if deploy.get("image") is None:
        repository = f"fnserve/{name}:latest"
        deploy["image"] = f"{settings.registry}/{repository}" if settings.registry else repository
    try:
        k8s = project.load_k8s_settings(settings.project_dir, os.environ, {})
        namespace = project.resolve_namespace(k8s, os.environ)
        spec = project.load_function_spec(settings, k8s, namespace, name)
        deployment = deployments.deploy(None, name, **deploy)
        objects = project.render(spec, deployment, project.gateway_spec(settings, k8s, namespace))
    except (ValueError, FnError) as exc:  # settings, function.toml, names; DeployError is an FnError
        raise click.ClickException(str(exc)) from None
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"
    from fnserve.k8s.gateway import TOKEN_SECRET

    return DRY_RUN_NOTE.format(name=name, secret=TOKEN_SECRET) + project.to_yaml(objects)


def _configured_target(settings: Settings) -> bool:
    path = settings.project_dir / "fn.toml"
    try:
        table = tomllib.loads(path.read_text()).get("gateway", {}) if path.is_file() else {}
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return isinstance(table, dict) and "target" in table
