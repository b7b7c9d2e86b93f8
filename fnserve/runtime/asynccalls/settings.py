"""The settings of asynchronous invocations: ``[async]`` in ``fn.toml``, ``FNSERVE_ASYNC_*`` variables.

    # fn.toml
    [async]
    queue = "s3://jobs/fnserve"   # where accepted calls are kept; default: beside the checkpoints
    max_queued = 10000            # per function: calls accepted and not finished; more get 429
    result_ttl_s = 86400          # a result is kept this long after it is recorded; then 410, later 404

Every key is also ``FNSERVE_ASYNC_<KEY>`` (``FNSERVE_ASYNC_RESULT_TTL_S=3600``), chosen by the one
precedence rule of :mod:`fnserve.runtime.config`. ``max_queued = 0`` turns asynchronous calls off:
``Prefer: respond-async`` is then ignored (RFC 7240 lets a server ignore a preference) and the call
is answered synchronously.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self

from fnserve.runtime.config import CONFIG_FILE, Layers
from fnserve.runtime.errors import ConfigError
from fnserve.runtime.redact import redact_url

QUEUE_FOLDER = "_async"  # under the store root: no checkpoint can have this name (names start a-z)


@dataclass(frozen=True)
class AsyncSettings:
    queue: str = ""  # fsspec URL of the queue's folder ("": {store}/_async, see queue_in)
    max_queued: int = 10_000  # per function: calls accepted and not finished; past it 429 (0: off)
    concurrency: int = 4  # per function: calls running at once (one at a time while sync calls wait)
    result_ttl_s: float = 86_400.0  # how long a result is kept after it is recorded
    lease_s: float = 10.0  # a running call is another process's to take over this long after its
    #   runner's last sign of life (a runner renews its leases every lease_s / 3)
    max_attempts: int = 5  # runs of one call (retried after 429/502/503/504 or a crash), then failed
    scan_interval_s: float = 5.0  # how often the queue is read for calls this process does not know
    callback_timeout_s: float = 10.0  # longest wait for a callback's answer, per try
    callback_attempts: int = 6  # tries of a callback before it is recorded as failed
    callback_backoff_s: float = 1.0  # first wait between callback tries; doubles each time
    callback_hosts: tuple[str, ...] = ()  # host patterns callbacks may go to (fnmatch); empty: any

    @classmethod
    def from_layers(cls, layers: Layers) -> Self:
        """``[async]`` of ``fn.toml`` under ``FNSERVE_ASYNC_*`` under flags ``async_<key>``."""
        table = layers.table("async")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{CONFIG_FILE}: [async] has no setting {unknown[0]!r}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = getattr(cls, f.name)
            if f.name == "callback_hosts":
                continue
            kind = type(default)
            values[f.name] = layers.pick(
                f"async_{f.name}", default, section="async", toml_key=f.name, kind=kind
            )
        values["callback_hosts"] = _hosts(layers)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """A :class:`ConfigError` naming the first setting out of its range."""
        counts = {"max_queued": 0, "concurrency": 1, "max_attempts": 1, "callback_attempts": 1}
        for name, least in counts.items():
            if getattr(self, name) < least:
                raise ConfigError(f"setting async {name} must be at least {least}, got {getattr(self, name)}")
        for name in ("result_ttl_s", "lease_s", "scan_interval_s", "callback_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"setting async {name} must be positive, got {getattr(self, name)}")
        if self.callback_backoff_s < 0:
            raise ConfigError(
                f"setting async callback_backoff_s must not be negative, got {self.callback_backoff_s}"
            )
        if "://" in self.queue and redact_url(self.queue) != self.queue:
            raise ConfigError(
                f"setting async queue {redact_url(self.queue)!r} carries credentials: give them as the "
                "store's options ([store] options, FNSERVE_STORE_OPTIONS) or the environment instead"
            )

    def queue_in(self, store: str) -> str:
        """The queue's URL: the ``queue`` setting, else ``{store}/_async``."""
        return (self.queue or f"{store.rstrip('/')}/{QUEUE_FOLDER}").rstrip("/")

    @property
    def enabled(self) -> bool:
        return self.max_queued > 0


def _hosts(layers: Layers) -> tuple[str, ...]:
    """``callback_hosts``: a TOML list, or a comma-separated string (flag or environment)."""
    value, where = layers.raw("async_callback_hosts", (), section="async", toml_key="callback_hosts")
    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"setting async callback_hosts ({where}) must be a list of host names, got {value!r}"
        )
    return tuple(host.lower() for host in value)


def settings_of(values: Mapping[str, Any]) -> AsyncSettings:
    """Settings from a plain mapping of ``[async]`` keys, as tests and benchmarks give them.

    >>> settings_of({"max_queued": 5}).max_queued, settings_of({}).queue_in("memory://models/")
    (5, 'memory://models/_async')
    """
    return AsyncSettings.from_layers(Layers({}, {}, {"async": dict(values)}))
