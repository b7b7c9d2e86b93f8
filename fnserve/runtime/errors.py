"""fnserve's one error hierarchy: :class:`FnError` is the root of every layer's errors.

The runtime's, the gateway's (``DeployError``, ``PlatformError``), the builds' (``BuildError``,
``EngineError``), the deploy's (``DeployFailed``), training's and the settings' (:class:`ConfigError`)
all derive from it, each class with its HTTP status defined once. One handler in each app turns
them into ``{"error": message}``; the CLI turns them into one-line messages in one place
(:func:`fnserve.cli.common.user_errors`). It lives in the runtime because the runtime imports
nothing outside :mod:`fnserve.runtime`. Load-time errors (bad function file, missing checkpoint) are
``FunctionError``/``CheckpointError`` and name the file, function or checkpoint at fault.

A request with several bad inputs gets one answer naming them all: checks raise a
``ValidationError`` per problem, :class:`Problems` gathers them, and the answer lists the first
:data:`MAX_PROBLEMS` (also as ``"problems"``, one ``{"input", "error"}`` each) and counts the rest:

    >>> problems = Problems()
    >>> for label in ("price", "day"):
    ...     with problems:
    ...         raise ValidationError.at(label, "must be >= 0, got -1")
    >>> problems.error().message
    'price: must be >= 0, got -1; day: must be >= 0, got -1'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

MAX_PROBLEMS = 20  # problems named in one answer; the rest are counted ("and 9980 more")
REASON_CHARS = 300  # of an error message, where it is passed on as why something is not ready


def first_line(message: str, limit: int = REASON_CHARS) -> str:
    """The first non-empty line of ``message``, at most ``limit`` characters: a message fit to
    be passed on (``/readyz``, a gateway's 503) without the traceback or data that may follow.

    >>> first_line("loader of 'recs' failed: OSError: no model.bin\\n  at line 3")
    "loader of 'recs' failed: OSError: no model.bin"
    >>> first_line("x" * 400)[-4:], len(first_line("x" * 400))
    ('x...', 300)
    """
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class Problem:
    """One bad input: where (``price``, ``instances[3].price``, ``price[2]``) and what is wrong."""

    input: str | None  # None: the request as a whole
    error: str
    row: int | None = None  # in a batch: its row, to name a batch's problems row by row

    def __str__(self) -> str:
        return f"{self.input}: {self.error}" if self.input is not None else self.error


class FnError(Exception):
    """Base of every error fnserve raises on purpose; ``status`` is its HTTP status."""

    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        problems: Sequence[Problem] = (),
        count: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.problems = tuple(problems)  # the ones named, at most MAX_PROBLEMS
        self.count = count if count is not None else max(1, len(self.problems))  # all of them

    @classmethod
    def at(cls, label: str, error: str) -> Self:
        """The error ``"{label}: {error}"`` about one input."""
        return cls(f"{label}: {error}", problems=(Problem(label, error),))

    @classmethod
    def of(cls, problems: Sequence[Problem], count: int, *, status: int | None = None) -> Self:
        """One error naming the first :data:`MAX_PROBLEMS` of ``count`` problems."""
        shown = tuple(problems[:MAX_PROBLEMS])
        message = "; ".join(map(str, shown))
        if count > len(shown):
            message += f"; and {count - len(shown)} more"
        return cls(message, status=status, problems=shown, count=count)

    def payload(self) -> dict[str, Any]:
        """The JSON answer: ``{"error": ...}``, with ``"problems"`` when there are several."""
        body: dict[str, Any] = {"error": self.message}
        if self.count > 1:
            body["problems"] = [{"input": p.input, "error": p.error} for p in self.problems]
        return body


class ConfigError(FnError, ValueError):
    """A setting (flag, ``FNSERVE_*`` variable, ``fn.toml``, ``function.toml``) is wrong; the message
    names the setting and where it came from. A ``ValueError`` too, as settings errors always were."""

    status = 500  # the server's own configuration, not the caller's request


class BadRequest(FnError):
    """The request is malformed: undecodable body, wrong content type, bad JSON."""

    status = 400


class ValidationError(FnError):
    """The request decodes but an input is wrong: names the field and what was expected."""

    status = 422


class Problems:
    """Gathers the validation errors of several checks (``with problems: ...`` each), so that
    one answer names every bad input. Other errors pass through at once."""

    __slots__ = ("count", "found", "row")

    def __init__(self) -> None:
        self.found: list[Problem] = []
        self.count = 0
        self.row: int | None = None

    def at_row(self, row: int) -> Problems:
        """``with problems.at_row(3): ...``: what the check raises is about row 3."""
        self.row = row
        return self

    def __enter__(self) -> Problems:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        row, self.row = self.row, None
        if not isinstance(exc, ValidationError):
            return False
        self.add(exc, row)
        return True

    def add(self, exc: FnError, row: int | None = None) -> None:
        found = (exc.problems or (Problem(None, exc.message),))[: MAX_PROBLEMS - len(self.found)]
        self.found.extend(found if row is None else (replace(p, row=row) for p in found))
        self.count += exc.count

    def error(self, status: int | None = None) -> ValidationError:
        """All the problems found as one error (422, or ``status``)."""
        assert self.count, "no problem was found"
        return ValidationError.of(self.found, self.count, status=status)

    def raise_any(self) -> None:
        if self.count:
            raise self.error()


class NotFound(FnError):
    """Unknown function, version or path."""

    status = 404


class PayloadTooLarge(FnError):
    status = 413


class UnsupportedMediaType(FnError):
    status = 415


class Overloaded(FnError):
    """Too much work queued: the caller should retry after a while."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1, status: int = 503):
        super().__init__(message, status=status, headers={"Retry-After": str(retry_after_s)})


class Timeout(FnError):
    status = 504


class NotReady(FnError):
    """The function's model is not loaded (yet): storage down, load failed, still starting."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class VersionChanged(NotReady):
    """A request computed in several model calls met a model swap between them (retry: one model)."""


class FunctionError(FnError):
    """A function file is wrong: bad signature, unknown type, duplicate name. Raised at load time."""


class CheckpointError(FnError):
    """A checkpoint is missing, incomplete or corrupt."""


class CheckpointNotFound(CheckpointError):
    status = 404


class CheckpointCorrupt(CheckpointError):
    """A downloaded file does not match the manifest (or the manifest itself is unreadable)."""


class CheckpointIncomplete(CheckpointCorrupt):
    """The manifest is empty or cut short: caught while written (or copied in), so not published yet."""

    status = 503


class StorageUnavailable(CheckpointError):
    """The store cannot be reached; retrying later may help."""

    status = 503


class ModelError(FnError):
    """The user's model code raised while predicting. Details go to the log, not the caller."""

    status = 500
