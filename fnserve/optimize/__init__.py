"""``fn optimize``: variants of a published version (quantized, frozen), measured before published."""

from __future__ import annotations

from fnserve.runtime.errors import FnError


class OptimizeError(FnError):
    """A variant cannot be made, measured or published; the message says why and what to do."""

    status = 422
