"""``@predict``: marks a function as servable. It registers nothing.

The decorator checks its options at once, attaches a frozen :class:`PredictSpec` as
``fn.__fnserve__`` and returns the function unchanged, so the user's file stays plain,
importable, testable Python. The runtime discovers marked functions by scanning a loaded
module (:mod:`fnserve.runtime.loader`).

    def load(checkpoint_dir):                 # gets the local, verified checkpoint folder
        return tf.saved_model.load(checkpoint_dir)

    @predict(loader=load, max_batch_size=512)
    def recs(model, user_country: str, hotel_price: float) -> float:
        ...                                   # columns in, one prediction per row out
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

# The one rule for function (and checkpoint) names: they become URL paths (/function/<name>),
# store folders, image names (fnserve/<name>) and Kubernetes labels. The gateway, `fn new` and the
# deploy targets check names with check_name too, so none accepts a name the runtime refuses.
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
NAME_RULE = "use 1-63 lowercase letters, digits, '-' or '_', starting with a letter"
ATTR = "__fnserve__"


@dataclass(frozen=True)
class PredictSpec:
    """Everything ``@predict`` knows about one function; read by the runtime."""

    name: str  # served as /function/{name}
    loader: Callable[[str], Any] | None  # checkpoint dir -> model; the model is the 1st argument
    checkpoint: str | None  # name in the store, or a full fsspec URL of the versions' folder
    version: str  # "latest" or a published version number
    vectorized: bool  # True: columns in, batch out; False: called once per instance
    max_batch_size: int  # most instances in one model call
    max_concurrency: int  # model calls in flight at once
    latency_target_ms: float | None  # cap batches so a request's queue wait + call stays under this
    max_queue: int  # most instances waiting for a model call before requests are refused (429)
    timeout_s: float  # per-request deadline
    description: str
    cache_max_age_s: int | None = 0  # GET answers' Cache-Control max-age; None: not cacheable


def check_name(kind: str, value: str) -> str:
    """``value`` if it follows :data:`NAME_RE`, else a ``ValueError`` saying the rule.

    >>> check_name("function name", "recs-v2")
    'recs-v2'
    >>> check_name("function name", "Recs.v2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: function name 'Recs.v2' is not a valid name: use 1-63 lowercase letters, digits, ...
    """
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not a valid name: {NAME_RULE}")
    return value


def check_version(value: str) -> str:
    if value != "latest" and not (value.isdigit() and len(value) <= 18 and int(value) > 0):
        raise ValueError(f"version {value!r} must be 'latest' or a positive integer")
    return value


@overload
def predict(fn: F, /) -> F: ...
@overload
def predict(
    *,
    name: str | None = None,
    loader: Callable[[str], Any] | None = None,
    checkpoint: str | None = None,
    version: str | int = "latest",
    vectorized: bool = True,
    max_batch_size: int = 256,
    max_concurrency: int = 1,
    timeout_s: float = 30.0,
    latency_target_ms: float | None = None,
    max_queue: int = 4096,
    description: str = "",
    cache_max_age_s: int | None = 0,
) -> Callable[[F], F]: ...
def predict(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    loader: Callable[[str], Any] | None = None,
    checkpoint: str | None = None,
    version: str | int = "latest",
    vectorized: bool = True,
    max_batch_size: int = 256,
    max_concurrency: int = 1,
    timeout_s: float = 30.0,
    latency_target_ms: float | None = None,
    max_queue: int = 4096,
    description: str = "",
    cache_max_age_s: int | None = 0,
) -> Any:
    """Mark ``fn`` as a prediction function; usable bare (``@predict``) or called.

    ``loader`` receives the local directory of the function's checkpoint and returns the
    model, which is passed as the function's first argument. ``checkpoint`` defaults to
    the function's name in the project's store. With ``vectorized=False`` the function
    takes one instance (scalars) and returns one prediction; the runtime still batches.
    ``cache_max_age_s`` is how long HTTP caches may keep a GET prediction (``Cache-Control:
    max-age``; it is revalidated by ``ETag`` after that); ``None`` makes predictions uncacheable,
    for functions whose answer is not determined by their inputs and model version alone.
    """
    if loader is not None and not callable(loader):
        raise TypeError(f"@predict(loader=...) must be callable, got {loader!r}")
    if checkpoint is not None and loader is None:
        raise TypeError("@predict(checkpoint=...) needs a loader= to turn the checkpoint into a model")
    if checkpoint is not None and "://" not in checkpoint:
        check_name("checkpoint", checkpoint)
    version_text = check_version(str(version))
    int_options = (
        ("max_batch_size", max_batch_size),
        ("max_concurrency", max_concurrency),
        ("max_queue", max_queue),
    )
    for option, value in int_options:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"@predict({option}=...) must be a positive int, got {value!r}")
    if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or timeout_s <= 0:
        raise ValueError(f"@predict(timeout_s=...) must be a positive number, got {timeout_s!r}")
    if latency_target_ms is not None and (
        not isinstance(latency_target_ms, (int, float))
        or isinstance(latency_target_ms, bool)
        or latency_target_ms <= 0
    ):
        raise ValueError(
            f"@predict(latency_target_ms=...) must be a positive number, got {latency_target_ms!r}"
        )

    if cache_max_age_s is not None and (
        not isinstance(cache_max_age_s, int) or isinstance(cache_max_age_s, bool) or cache_max_age_s < 0
    ):
        raise ValueError(
            f"@predict(cache_max_age_s=...) must be a non-negative int or None, got {cache_max_age_s!r}"
        )

    def mark(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@predict decorates functions, got {func!r}")
        served = check_name("function name", name if name is not None else func.__name__)
        spec = PredictSpec(
            name=served,
            loader=loader,
            checkpoint=(checkpoint or served) if loader is not None else None,
            version=version_text,
            vectorized=vectorized,
            max_batch_size=max_batch_size,
            max_concurrency=max_concurrency,
            latency_target_ms=None if latency_target_ms is None else float(latency_target_ms),
            max_queue=max_queue,
            timeout_s=float(timeout_s),
            description=description or (func.__doc__ or "").strip().split("\n")[0],
            cache_max_age_s=cache_max_age_s,
        )
        setattr(func, ATTR, spec)
        return func

    return mark(fn) if fn is not None else mark


def spec_of(obj: Any) -> PredictSpec | None:
    """The spec attached by ``@predict``, or None for an unmarked object."""
    spec = getattr(obj, ATTR, None)
    return spec if isinstance(spec, PredictSpec) else None
