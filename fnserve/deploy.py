"""``fn deploy`` as a library call: resolve the target, prepare it, then tell the gateway.

    shown = deploy(settings, "recs", target=None, image=None, scaling={"min_replicas": 0}, on_output=print)
    text = dry_run(settings, "recs", output="yaml")          # the Kubernetes objects, applied nowhere

Preparing is the part that differs by target: ``local`` needs nothing (the function folder is the
"image"), ``docker`` builds the function's image when its sources changed and starts the gateway
container, ``k8s`` builds and pushes the image a cluster pulls and stores the function's spec in
the cluster. The change itself then goes through :mod:`fnserve.gateway.control` like every other
command's, so it takes effect for the next request.

Every failure is a :class:`DeployFailed` (an :class:`~fnserve.runtime.errors.FnError`) saying
what to do; the CLI prints it, nothing here prints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from fnserve.gateway.control import connect, running_target
from fnserve.project import ConfigError, Layers, ProjectSettings
from fnserve.runtime.errors import FnError
from fnserve.runtime.redact import MASK, redact_data

Output = Callable[[str], None]

DRY_RUN_NOTE = (
    "# fn deploy {name} --target k8s --dry-run: nothing was applied. On a real deploy, fnserve also\n"
    "# creates the Secret {secret} (the gateway's admin token) once; it is never printed.\n"
    "# Credentials in the store's URL or options are printed as {mask}; keep them in the Secret\n"
    "# named by [k8s] secret (AWS_SECRET_ACCESS_KEY, ...) rather than in fn.toml.\n"
)


class DeployFailed(FnError):
    """A deploy that could not be prepared or carried out; the message says what to do."""

    status = 400


def deploy(
    settings: ProjectSettings,
    name: str,
    *,
    target: str | None,
    image: str | None,
    scaling: Mapping[str, Any],
    on_output: Output,
    **options: Any,
) -> dict[str, Any]:
    """Deploy ``name`` (or add/change a version of it) on ``target``; returns the function's status.

    ``options``: ``version``, ``checkpoint_version``, ``weight``, ``sticky_key`` as
    :func:`fnserve.gateway.deployments.deploy` takes them."""
    check_schedule(settings, name)  # before any build: a malformed [train] schedule fails the deploy
    target = resolve_target(settings, target or running_target(settings))
    if target == "k8s":
        image = image or cluster_image(settings, name, on_output)
        publish_spec(settings, name)
    elif target == "docker":
        image = prepare_docker(settings, name, image, on_output)
    ctl = connect(settings, target)
    known = {f["name"] for f in ctl.status()["functions"]}
    if image is None and ctl.target == "local" and name not in known:
        image = f"functions/{name}"
    policy = rollout_policy(settings, name, options.pop("rollout", None), options.pop("rollout_stages", None))
    if policy and not options.get("checkpoint_version"):  # a numbered stable: new checkpoints are candidates
        newest = _newest_checkpoint(settings, name)
        if newest is not None:
            options["checkpoint_version"] = str(newest)
    shown = ctl.deploy(name, image=image, scaling=dict(scaling), policy=policy, **options)
    on_output(f"deployed {name} through {ctl.via}")
    return shown


def rollout_policy(
    settings: ProjectSettings, name: str, enabled: bool | None, stages: str | None
) -> dict[str, Any] | bool | None:
    """The policy ``fn deploy`` sends: ``[rollout]`` of the function's ``function.toml`` (checked
    here, so a malformed one fails the deploy naming the key), with ``--rollout-stages`` in place of
    its stages; ``--no-rollout`` (``enabled=False``) removes it; None when there is none to send.

    ``stages``: ``"shadow:200,10:200,50:200,100"`` — ``shadow`` or a weight, each with the
    requests its window needs (the last, 100, is the promotion)."""
    from fnserve.gateway.rollout import SECTION, RolloutPolicy
    from fnserve.runtime.config import function_section

    if enabled is False:
        if stages:
            raise DeployFailed("--no-rollout and --rollout-stages contradict each other: give one")
        return False
    table, where = function_section(settings.project_dir / "functions" / name / "predict.py", SECTION)
    if not table and not stages and not enabled:
        return None
    policy = dict(table)
    if stages:
        policy["stages"] = _stages_flag(stages)
        where = f"--rollout-stages {stages!r} with {where}"
    try:
        return RolloutPolicy.from_table(policy, where=where).to_dict()
    except ConfigError as exc:
        raise DeployFailed(exc.message) from None


def _stages_flag(text: str) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for part in (p.strip() for p in text.split(",")):
        kind, _, requests = part.partition(":")
        stage: dict[str, Any] = {"shadow": True} if kind == "shadow" else {}
        if kind != "shadow":
            if not kind.isdigit():
                raise DeployFailed(
                    f"--rollout-stages: {part!r} is not 'shadow[:N]' or 'WEIGHT[:N]' "
                    "(e.g. shadow:200,10:200,100)"
                )
            stage["weight"] = int(kind)
        if requests:
            if not requests.isdigit():
                raise DeployFailed(f"--rollout-stages: {part!r}: the requests after ':' must be a number")
            stage["requests"] = int(requests)
        stages.append(stage)
    return stages


def _newest_checkpoint(settings: ProjectSettings, name: str) -> int | None:
    from fnserve.runtime.store import CheckpointStore

    store = CheckpointStore(
        settings.store, storage_options=settings.storage_options, cache_dir=settings.cache_dir
    )
    try:
        return store.latest(name)
    except FnError:
        return None  # the store is not reachable from here: the version follows latest


def check_schedule(settings: ProjectSettings, name: str) -> None:
    """``[train]`` of the function's ``function.toml``, checked as the CronJob and the gateway's
    scheduler read it: a malformed schedule is a :class:`DeployFailed` naming the key and what was
    expected."""
    from fnserve.gateway.schedule import scheduled_training

    try:
        scheduled_training(settings.project_dir, name)
    except ValueError as exc:  # a ScheduleError (a ConfigError), or a name that breaks the rule
        raise DeployFailed(str(exc)) from None


def resolve_target(
    settings: ProjectSettings, target: str | None, environ: Mapping[str, str] | None = None
) -> str:
    """``target`` (``--target`` or a running gateway's), else the configured one
    (``FNSERVE_GATEWAY_TARGET``, ``[gateway] target``), else ``k8s`` when a kubeconfig is present
    (``KUBECONFIG`` or ``~/.kube/config``), else local.

    No ``--target`` and a running gateway: its target wins over the configured default (a
    ``fn deploy --target docker`` earlier must not make the next plain ``fn deploy`` fail)."""
    from fnserve.k8s.project import kubeconfig_path

    environ = os.environ if environ is None else environ
    if target:
        return target
    try:
        layers = Layers.read(settings.project_dir, environ)
        configured = layers.source("gateway_target", section="gateway", toml_key="target") != "default"
    except ConfigError:  # settings were read already; a file changed since then does not decide this
        configured = False
    if configured:
        return settings.gateway_target
    return "k8s" if kubeconfig_path(environ) else settings.gateway_target


def prepare_docker(settings: ProjectSettings, name: str, image: str | None, on_output: Output) -> str:
    """The image ``name`` deploys on the docker target (``image``, else the function's current build,
    built if missing), with the gateway container running in front; returns the image reference."""
    from fnserve.docker.gateway_container import start_gateway
    from fnserve.docker_engine import DockerEngine, EngineError
    from fnserve.images import BuildError
    from fnserve.images.builds import ensure_image

    try:
        engine = DockerEngine.connect()
        try:
            if image is None:
                image = ensure_image(settings, name, engine, on_output).plan.image
            elif engine.image(image) is None:
                raise DeployFailed(
                    f"image {image} is not in the local Docker engine: build it (fn build {name}) or "
                    "name one that `docker images` lists"
                )
            start_gateway(settings, engine, on_output)
        finally:
            engine.close()
    except (BuildError, EngineError) as exc:
        raise DeployFailed(str(exc)) from None
    return image


def cluster_image(settings: ProjectSettings, name: str, on_output: Output) -> str:
    """The function's image for a cluster: built if its sources changed (the Docker engine), pushed
    to ``[build] registry`` when one is set; returns the reference the pods will pull."""
    from fnserve.docker_engine import DockerEngine, EngineError
    from fnserve.images import BuildError
    from fnserve.images.builds import ensure_image, push_image

    try:
        engine = DockerEngine.connect()
        plan = ensure_image(settings, name, engine, on_output).plan
        if not settings.registry:
            on_output(
                f"no [build] registry is set: the cluster's nodes must already have {plan.image} "
                "(e.g. `kind load docker-image` or `minikube image load`), or pass --image"
            )
            return plan.image
        push_image(plan, engine, settings.registry, on_output=on_output)
    except (BuildError, EngineError) as exc:
        raise DeployFailed(f"{exc}\n(or pass --image with an image the cluster can pull)") from None
    return plan.remote(settings.registry)[0]


def publish_spec(settings: ProjectSettings, name: str) -> None:
    """Store the function's spec (resources, store, ...) from this project in the cluster, so that a
    running gateway that applies the deploy renders it from these files."""
    from fnserve.k8s.platform import create_platform

    platform = create_platform(settings)
    try:
        platform.publish_spec(name)
    finally:
        platform.close()


def dry_run(settings: ProjectSettings, name: str, *, output: str = "yaml", **deploy: Any) -> str:
    """Every object ``fn deploy NAME --target k8s`` would apply, without contacting the cluster:
    the function as a first deploy (its one version takes all traffic) and the gateway.

    ``deploy``: the options of :func:`fnserve.gateway.deployments.deploy` (``image`` defaults to
    ``fnserve/NAME:latest``, in the registry when one is set)."""
    from fnserve.gateway import deployments
    from fnserve.k8s import project
    from fnserve.k8s.gateway import TOKEN_SECRET

    if deploy.get("image") is None:
        repository = f"fnserve/{name}:latest"
        deploy["image"] = f"{settings.registry}/{repository}" if settings.registry else repository
    try:
        k8s = project.load_k8s_settings(settings.project_dir, os.environ, {})
        namespace = project.resolve_namespace(k8s, os.environ)
        spec = project.load_function_spec(settings, k8s, namespace, name)
        deployment = deployments.deploy(None, name, **deploy)
        objects = project.render(spec, deployment, project.gateway_spec(settings, k8s, namespace))
    except ValueError as exc:  # settings, function.toml, names; DeployError is an FnError and passes
        raise DeployFailed(str(exc)) from None
    objects = redact_data(objects, settings.secrets())  # printed, so the store's credentials are not
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"
    return DRY_RUN_NOTE.format(name=name, secret=TOKEN_SECRET, mask=MASK) + project.to_yaml(objects)


def build_gateway_image(
    settings: ProjectSettings, *, force: bool, push: bool, on_output: Output
) -> list[str]:
    """``fn build --gateway``: the gateway's image, for the docker target and for clusters; returns
    the lines that describe the result (the image, its tags, size, and what was pushed)."""
    from fnserve import __version__
    from fnserve.docker.gateway_container import ensure_gateway_image
    from fnserve.docker_engine import DockerEngine
    from fnserve.images.builds import push_image

    engine = DockerEngine.connect()
    try:
        result = ensure_gateway_image(settings, engine, on_output, force=force)
        how = "unchanged, reused" if result.reused else f"built in {result.seconds:.1f} s"
        plan = result.plan
        size = result.image.size_bytes / 2**20
        lines = [f"{plan.image}  {plan.repository}:{__version__}  {plan.latest}  {size:.0f} MiB  ({how})"]
        pushed = push_image(plan, engine, settings.registry, on_output=on_output) if push else []
        return lines + [f"pushed {ref}" for ref in pushed]
    finally:
        engine.close()
