"""``[monitor]`` of a function's ``function.toml``: windows and thresholds of its drift scores.

    # functions/recs/function.toml
    [monitor]
    enabled = true          # live profiles and drift scores (default on)
    window_s = 300          # the live window spans at most this many seconds ...
    window_count = 10000    # ... and at most this many instances (the newest)
    min_samples = 100       # fewer instances in the window: scores shown, never "drifted"
    psi_threshold = 0.2     # a feature drifted when its PSI is above this ...
    js_threshold = 0.1      # ... or its Jensen-Shannon distance is above this

Keys starting with ``capture_`` belong to payload capture and are left to it; any other unknown
key, or a value of the wrong type, is an error at start naming the file and the key.

>>> MonitorConfig.from_table({"window_s": 60, "capture_rate": 0.1}, where="f.toml").window_s
60.0
>>> MonitorConfig.from_table({"psi_treshold": 0.3}, where="f.toml")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
fnserve.runtime.errors.ConfigError: f.toml: [monitor] has unknown key 'psi_treshold'; known: enabled, ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnserve.runtime.config import function_section
from fnserve.runtime.errors import ConfigError

SECTION = "monitor"
FOREIGN_PREFIX = "capture_"  # payload capture's keys, in the same section


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = True  # profile live traffic and score drift
    window_s: float = 300.0  # longest span of the live window, seconds
    window_count: int = 10_000  # most instances in the live window
    min_samples: int = 100  # a feature is "drifted" only with at least this many live instances
    psi_threshold: float = 0.2  # population stability index above this: drifted
    js_threshold: float = 0.1  # Jensen-Shannon distance above this: drifted

    @classmethod
    def from_table(cls, table: Any, *, where: str) -> MonitorConfig:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [{SECTION}] must be a table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key.startswith(FOREIGN_PREFIX):
                continue
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ConfigError(f"{where}: [{SECTION}] has unknown key {key!r}; known: {known}")
            values[key] = _checked(key, value, fields[key].default, where)
        return cls(**values)

    @classmethod
    def of_function(cls, predict_file: Path) -> MonitorConfig:
        """The ``[monitor]`` section of the ``function.toml`` beside ``predict_file`` (defaults without)."""
        table, where = function_section(predict_file, SECTION)
        return cls.from_table(table, where=where.removesuffix(f": [{SECTION}]"))


def _checked(key: str, value: Any, default: Any, where: str) -> Any:
    problem = f"{where}: [{SECTION}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{problem} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{problem} must be a number, got {value!r}")
    if isinstance(default, int) and not isinstance(value, int):
        raise ConfigError(f"{problem} must be a whole number, got {value!r}")
    if value < 0 or (value == 0 and key != "min_samples"):
        raise ConfigError(f"{problem} must be positive, got {value!r}")
    return type(default)(value)
