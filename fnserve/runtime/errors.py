"""The runtime's one error hierarchy.

Every error a request can meet carries its HTTP status; one handler in the app turns it
into ``{"error": message}``. Load-time errors (bad function file, missing checkpoint) are
``FunctionError``/``CheckpointError`` and name the file, function or checkpoint at fault.
"""

from __future__ import annotations


class FnError(Exception):
    """Base of every error the runtime raises on purpose."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(FnError):
    """The request is malformed: undecodable body, wrong content type, bad JSON."""

    status = 400


class ValidationError(FnError):
    """The request decodes but an input is wrong: names the field and what was expected."""

    status = 422


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


class StorageUnavailable(CheckpointError):
    """The store cannot be reached; retrying later may help."""

    status = 503


class ModelError(FnError):
    """The user's model code raised while predicting. Details go to the log, not the caller."""

    status = 500
