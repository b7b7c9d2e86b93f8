"""The one module that talks to the Docker engine (through the docker SDK).

Builds, imports, pushes and containers go through :class:`DockerEngine`; everything it
returns is plain data, and every failure is an :class:`EngineError` whose message says what
went wrong and what to do, never an SDK traceback. Plans (what to build, which container to
start) are made elsewhere, as data; this adapter only carries them out.

    engine = DockerEngine.connect()
    image_id = engine.build(context_tar, tag="fnserve/recs:3f2a9c1b7d0e", labels={...}, on_output=print)
    container = engine.run(ContainerSpec(image="fnserve/recs:latest", ports={8080: ("127.0.0.1", 0)}))
    engine.host_port(container, 8080)
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from fnserve.runtime.errors import FnError

START_HINT = (
    "start it (as root: `dockerd > /var/log/dockerd.log 2>&1 &`, or `systemctl start docker`), "
    "or run scripts/ensure-docker, which installs docker.io if needed; set DOCKER_HOST for a remote engine"
)
API_VERSION = "1.41"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BUILD_LOG_TAIL = 40
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the legacy builder colours a step's stderr
_BUILDER_CHATTER = (" ---> ", "Removing intermediate container")
_EXITED = re.compile(r"^Exited \((-?\d+)\)")


class EngineError(FnError):
    """The engine could not do what was asked; the message is meant for the user."""

    status = 502  # the engine, a service fnserve depends on, failed


class EngineUnavailable(EngineError):
    pass


class BuildFailed(EngineError):
    """A build step failed: ``step`` is the Dockerfile instruction, ``log`` its last output lines."""

    def __init__(self, step: str, error: str, log: list[str]):
        self.step, self.error, self.log = step, error, log
        shown = "\n".join(f"  | {line}" for line in log[-_BUILD_LOG_TAIL:])
        super().__init__(f"build failed at {step}:\n{shown}\n  {error}".rstrip())


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    size_bytes: int
    labels: Mapping[str, str]
    env: tuple[str, ...]
    user: str
    healthcheck: tuple[str, ...]  # the HEALTHCHECK test, e.g. ("CMD", "python3", "-c", "...")


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    name: str | None = None
    entrypoint: list[str] | None = None  # None: the image's
    command: list[str] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[int, tuple[str, int]] = field(
        default_factory=dict
    )  # container port -> (host ip, port; 0 = any)
    mounts: Mapping[str, tuple[str, str]] = field(
        default_factory=dict
    )  # host path -> (container path, "ro"/"rw")
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # container path -> mount options
    read_only: bool = False  # read-only root file system
    user: str | None = None  # None: the image's
    network: str | None = None  # "host", "none", a network name; None: the default bridge
    cpus: float | None = None
    memory_bytes: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None  # None: the image's
    group_add: tuple[str, ...] = ()  # extra groups of the user (e.g. the Docker socket's gid)
    restart: str | None = None  # restart policy: "unless-stopped", "on-failure"; None: never


@dataclass(frozen=True)
class ContainerInfo:
    """One container as a listing sees it (no inspect per container)."""

    id: str
    name: str
    image: str  # as asked for at creation (a reference or an id)
    labels: Mapping[str, str]
    state: str  # created, running, restarting, exited, dead, ...
    exit_code: int | None  # once it has exited
    addresses: Mapping[str, str]  # network name -> IP address on it
    created: int  # seconds since the epoch


@dataclass(frozen=True)
class ContainerState:
    status: str  # created, running, exited, ...
    exit_code: int | None
    health: str | None  # starting, healthy, unhealthy; None without a HEALTHCHECK


class DockerEngine:
    """A connection to the engine named by DOCKER_HOST (default: the local socket)."""

    def __init__(self, client: Any):
        self._client = client
        self._api = client.api

    @classmethod
    def connect(cls, timeout_s: float = 10.0) -> DockerEngine:
        """Connect, or raise :class:`EngineUnavailable` saying how to start the engine."""
        try:
            import docker
        except ImportError:
            raise EngineUnavailable(
                "the docker SDK is not installed: pip install 'fnserve[deploy]'"
            ) from None
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if host.startswith("unix://"):
            # Probe the socket ourselves: the SDK leaks its socket when the connection is refused.
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(timeout_s)
                    probe.connect(host[len("unix://") :])
            except OSError as exc:
                raise EngineUnavailable(
                    f"the Docker engine is not reachable at {host} ({exc.strerror or exc}): {START_HINT}"
                ) from None
        client = None
        try:
            # A fixed API version: "auto" would ask the engine inside the constructor, and leak
            # the socket when it is not there. 1.41 (Docker 20.10) is spoken by every engine since.
            client = docker.from_env(timeout=int(timeout_s), version=API_VERSION)
            client.ping()
        except Exception as exc:  # the SDK raises DockerException, requests' errors, or OSError
            if client is not None:
                client.close()
            raise EngineUnavailable(
                f"the Docker engine is not reachable ({_reason(exc)}): {START_HINT}"
            ) from None
        return cls(client)

    def close(self) -> None:
        self._client.close()

    # --- images -------------------------------------------------------------------------------

    def image(self, ref: str) -> ImageInfo | None:
        """What the engine knows of ``ref``, or None when there is no such local image."""
        import docker.errors

        try:
            data = self._api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise EngineError(f"cannot inspect image {ref}: {_reason(exc)}") from None
        config = data.get("Config") or {}
        return ImageInfo(
            id=data["Id"],
            tags=tuple(data.get("RepoTags") or ()),
            size_bytes=int(data.get("Size") or 0),
            labels=dict(config.get("Labels") or {}),
            env=tuple(config.get("Env") or ()),
            user=str(config.get("User") or ""),
            healthcheck=tuple((config.get("Healthcheck") or {}).get("Test") or ()),
        )

    def history(self, ref: str) -> list[str]:
        """The ``created_by`` line of every layer of ``ref``, newest first."""
        return [str(entry.get("CreatedBy", "")) for entry in self._call(self._api.history, ref)]

    def save(self, ref: str) -> Iterator[bytes]:
        """``docker save``: the image as a tar stream (layers, config and manifest)."""
        return iter(self._call(self._api.get_image, ref))

    def build(
        self,
        context: IO[bytes],
        *,
        tag: str,
        labels: Mapping[str, str],
        on_output: Callable[[str], None] = lambda line: None,
        network: str | None = None,
    ) -> str:
        """Build from a tar ``context`` holding a Dockerfile; never pulls. Returns the image id.

        Output lines go to ``on_output`` as they come; a failing step raises :class:`BuildFailed`
        with that step and its log.
        """
        step, image_id = "the start of the build", ""
        log: list[str] = []
        stream = self._call(
            self._api.build,
            fileobj=context,
            custom_context=True,
            tag=tag,
            labels=dict(labels),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            network_mode=network,
            use_config_proxy=False,
        )
        try:
            for chunk in stream:
                if "error" in chunk:
                    raise BuildFailed(step, _ANSI.sub("", str(chunk["error"])).strip(), log)
                image_id = (chunk.get("aux") or {}).get("ID", image_id)
                for line in _ANSI.sub("", str(chunk.get("stream", ""))).splitlines():
                    match = _STEP.match(line)
                    if match:
                        step = f"step {match[1]}/{match[2]}: {match[3]}"
                        log = []
                    elif line.strip() and not line.startswith(_BUILDER_CHATTER):
                        log.append(line)
                    if line.strip():
                        on_output(line)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"the build stopped at {step}: {_reason(exc)}") from None
        finally:
            _close(stream)
        if not image_id:
            raise BuildFailed(step, "the engine reported no image id", log)
        return str(image_id)

    def tag(self, image: str, ref: str) -> None:
        repository, _, tag = ref.rpartition(":") if _has_tag(ref) else (ref, "", "latest")
        if not self._call(self._api.tag, image, repository, tag, force=True):
            raise EngineError(f"the engine did not tag {image} as {ref}")

    def push(self, ref: str, on_output: Callable[[str], None] = lambda line: None) -> None:
        """Push ``ref`` (which names its registry) to that registry."""
        repository, _, tag = ref.rpartition(":")
        stream = self._call(self._api.push, repository, tag=tag, stream=True, decode=True)
        try:
            for chunk in stream:
                if "error" in chunk:
                    raise EngineError(f"pushing {ref} failed: {str(chunk['error']).strip()}")
                status = " ".join(str(chunk[k]) for k in ("id", "status", "progress") if chunk.get(k))
                if status:
                    on_output(status)
        finally:
            _close(stream)

    def import_rootfs(self, tar_path: str, ref: str, changes: list[str]) -> str:
        """``docker import``: a root file system tar becomes image ``ref``; returns its id."""
        repository, _, tag = ref.rpartition(":") if _has_tag(ref) else (ref, "", "latest")
        answer = self._call(self._api.import_image_from_file, tar_path, repository, tag, changes)
        for line in str(answer).splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "error" in message:
                raise EngineError(f"importing {tar_path} as {ref} failed: {message['error']}")
        info = self.image(ref)
        if info is None:
            raise EngineError(f"importing {tar_path} as {ref} made no image: {answer}")
        return info.id

    def remove_image(self, ref: str) -> None:
        import docker.errors

        try:
            self._api.remove_image(ref, force=True)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot remove image {ref}: {_reason(exc)}") from None

    # --- containers ---------------------------------------------------------------------------

    def run(self, spec: ContainerSpec) -> str:
        """Create and start a container (detached); returns its id. A missing image is an error."""
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "name": spec.name,
            "entrypoint": spec.entrypoint,
            "command": spec.command,
            "environment": dict(spec.environment),
            "ports": {f"{port}/tcp": bind for port, bind in spec.ports.items()} or None,
            "volumes": {host: {"bind": path, "mode": mode} for host, (path, mode) in spec.mounts.items()},
            "tmpfs": dict(spec.tmpfs),
            "read_only": spec.read_only,
            "network_mode": spec.network,
            "labels": dict(spec.labels),
        }
        if spec.user is not None:
            kwargs["user"] = spec.user
        if spec.cpus is not None:
            kwargs["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.memory_bytes is not None:
            kwargs["mem_limit"] = spec.memory_bytes
        if spec.working_dir is not None:
            kwargs["working_dir"] = spec.working_dir
        if spec.group_add:
            kwargs["group_add"] = list(spec.group_add)
        if spec.restart is not None:
            kwargs["restart_policy"] = {"Name": spec.restart}
        # create + start, never containers.run: that one pulls a missing image.
        container = self._call(self._client.containers.create, **kwargs)
        try:
            self._call(container.start)
        except EngineError:
            self.remove(container.id)
            raise
        return str(container.id)

    def state(self, container: str) -> ContainerState:
        data = self._call(self._api.inspect_container, container)["State"]
        running = data.get("Status") == "running"
        return ContainerState(
            status=str(data.get("Status")),
            exit_code=None if running else int(data.get("ExitCode", -1)),
            health=(data.get("Health") or {}).get("Status"),
        )

    def host_port(self, container: str, port: int) -> int:
        """The host port that ``port`` of a running container is published on."""
        data = self._call(self._api.inspect_container, container)
        bindings = ((data.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
        if not bindings:
            raise EngineError(f"container {container[:12]} publishes no port for {port}/tcp")
        return int(bindings[0]["HostPort"])

    def logs(self, container: str, *, follow: bool = False, tail: int | str = "all") -> Iterator[str]:
        """The container's output (stdout and stderr) as text lines."""
        raw = self._call(self._api.logs, container, stream=True, follow=follow, tail=tail)
        pending = b""
        try:
            for chunk in raw:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        finally:
            _close(raw)

    def wait(self, container: str, timeout_s: float | None = None) -> int:
        """Wait for the container to exit; returns its exit code."""
        result = self._call(self._api.wait, container, timeout=timeout_s)
        return int(result.get("StatusCode", -1))

    def stop(self, container: str, timeout_s: int = 10) -> None:
        import docker.errors

        try:
            self._api.stop(container, timeout=timeout_s)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot stop container {container[:12]}: {_reason(exc)}") from None

    def remove(self, container: str) -> None:
        """Remove a container, running or not; a container already gone is fine."""
        import docker.errors

        try:
            self._api.remove_container(container, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise EngineError(f"cannot remove container {container[:12]}: {_reason(exc)}") from None

    def containers(self, label: str) -> list[str]:
        """Ids of containers (running or not) carrying ``label`` ("key" or "key=value")."""
        found = self._call(self._api.containers, all=True, filters={"label": label})
        return [str(c["Id"]) for c in found]

    def list_containers(
        self, labels: Mapping[str, str] | None = None, name: str | None = None
    ) -> list[ContainerInfo]:
        """Containers (running or not) carrying every one of ``labels`` (and named ``name``)."""
        filters: dict[str, Any] = {"label": [f"{k}={v}" for k, v in (labels or {}).items()]}
        if name is not None:
            filters["name"] = f"^/{re.escape(name)}$"
        return [_container_info(c) for c in self._call(self._api.containers, all=True, filters=filters)]

    def kill(self, container: str, signal: str = "SIGKILL") -> None:
        """Send ``signal`` and return at once; a container gone or not running is fine."""
        import docker.errors

        try:
            self._api.kill(container, signal=signal)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # 409: not running
                raise EngineError(f"cannot signal container {container[:12]}: {_reason(exc)}") from None

    # --- networks -----------------------------------------------------------------------------

    def ensure_network(self, name: str, labels: Mapping[str, str]) -> None:
        """A user-defined bridge network ``name``: created unless it exists."""
        if not self._call(self._api.networks, names=[name]):
            try:
                self._call(self._api.create_network, name, driver="bridge", labels=dict(labels))
            except EngineError as exc:
                if "already exists" not in str(exc):  # made by someone else meanwhile: fine
                    raise

    def remove_network(self, name: str) -> None:
        """Remove network ``name``; one already gone is fine."""
        for network in self._call(self._api.networks, names=[name]):
            if network.get("Name") == name:
                try:
                    self._call(self._api.remove_network, network["Id"])
                except EngineError as exc:
                    if "not found" not in str(exc):
                        raise

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the SDK; its exceptions become EngineErrors that name what failed."""
        import docker.errors

        try:
            return method(*args, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise EngineError(f"no such image: {_reason(exc)}") from None
        except docker.errors.NotFound as exc:
            raise EngineError(f"not found: {_reason(exc)}") from None
        except docker.errors.DockerException as exc:
            raise EngineError(_reason(exc)) from None
        except OSError as exc:  # the connection broke (requests' ConnectionError is an OSError)
            raise EngineUnavailable(f"lost the Docker engine ({_reason(exc)}): {START_HINT}") from None


def _container_info(data: Mapping[str, Any]) -> ContainerInfo:
    exited = _EXITED.match(str(data.get("Status") or ""))
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    return ContainerInfo(
        id=str(data["Id"]),
        name=str((data.get("Names") or ["/"])[0]).lstrip("/"),
        image=str(data.get("Image", "")),
        labels=dict(data.get("Labels") or {}),
        state=str(data.get("State", "")),
        exit_code=int(exited[1]) if exited else None,
        addresses={net: str(info.get("IPAddress") or "") for net, info in networks.items()},
        created=int(data.get("Created") or 0),
    )


def _close(stream: Any) -> None:
    """Close an SDK stream (a generator over a response) so its connection is not left open."""
    close = getattr(stream, "close", None)
    if callable(close):
        close()


def _has_tag(ref: str) -> bool:
    return ":" in ref.rsplit("/", 1)[-1]


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip() or type(exc).__name__
