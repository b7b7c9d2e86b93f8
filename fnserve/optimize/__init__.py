"""``fn optimize``: faster variants of a published version (quantized, frozen), measured before
they are published. :mod:`fnserve.optimize.convert` makes the variant folders."""

from __future__ import annotations

from fnserve.runtime.errors import FnError


class OptimizeError(FnError):
    """A variant cannot be made (an op the converter lacks, no serving signature, calibration data
    that does not fit the model); the message says why. Nothing is published."""

    status = 422
