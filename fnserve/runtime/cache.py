"""The result cache: answers the model gave, kept in memory, bounded in bytes, per version.

Off by default; on with ``max_bytes`` in the function's ``function.toml``:

    # functions/recs/function.toml
    [cache]
    max_bytes = 50_000_000   # keys and answers together; the least recently used go first

An entry is keyed by the version of the model that computed it and the row's canonical inputs
(:func:`fnserve.runtime.table.canonical_keys`), so an answer is only ever given for the version
that computed it; a new version's load drops the others' entries. The bytes counted are those
Python holds for each entry: the key tuple and its values, the answer's own copy of its row
(never a view keeping a whole batch alive) and the dictionary slot.

>>> cache = ResultCache(max_bytes=10_000)
>>> cache.put(3, ("NL", 5), Outputs(1, np.array([0.25]), None, 3))
>>> cache.get(3, ("NL", 5)).predictions(), cache.get(4, ("NL", 5))
([0.25], None)
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.runtime.config import function_section
from fnserve.runtime.errors import ConfigError
from fnserve.runtime.outputs import Outputs

SECTION = "cache"
ENTRY_OVERHEAD_BYTES = 100  # an OrderedDict slot: hash table entry plus its linked-list node


@dataclass(frozen=True)
class CacheConfig:
    """``[cache]`` of a function's ``function.toml``."""

    max_bytes: int = 0  # 0: no cache

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, where: str) -> CacheConfig:
        for key in table:
            if key != "max_bytes":
                raise ConfigError(f"{where} has unknown key {key!r}; known: max_bytes")
        value = table.get("max_bytes", 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where} max_bytes must be a whole number of bytes >= 0, got {value!r}")
        return cls(value)

    @classmethod
    def of_function(cls, predict_file: Path) -> CacheConfig:
        table, where = function_section(predict_file, SECTION)
        return cls.from_table(table, where=where)


class ResultCache:
    """LRU over (version, inputs) -> one row's :class:`Outputs`; never above ``max_bytes``.

    Used on the event loop only (lookups before a request goes to the batcher, stores when its
    answer is back), so it needs no lock.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: collections.OrderedDict[tuple[Any, ...], tuple[Outputs, int]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, version: int | None, key: tuple[Any, ...]) -> Outputs | None:
        entry = self._entries.get((version, key))
        if entry is None:
            return None
        self._entries.move_to_end((version, key))
        return entry[0]

    def put(self, version: int | None, key: tuple[Any, ...], row: Outputs) -> None:
        """Keep ``row`` (one instance's outputs, computed by ``version``); evict to stay in bounds."""
        full = (version, key)
        row = _owned(row)
        size = sizeof(full) + sizeof(row) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return  # larger than the whole cache: never kept
        old = self._entries.pop(full, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[full] = (row, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def keep_only(self, version: int | None) -> None:
        """Drop every entry of another version (a new model is served)."""
        for full in [k for k in self._entries if k[0] != version]:
            self.bytes -= self._entries.pop(full)[1]


def _owned(row: Outputs) -> Outputs:
    """A row whose columns are its own: a slice of a batch's array would keep the whole batch."""
    if row.named is not None:
        named = {k: _copy(v) for k, v in row.named.items()}
        return Outputs(row.n, None, named, row.version)
    return Outputs(row.n, _copy(row.value), None, row.version)


def _copy(column: Any) -> Any:
    return column.copy() if isinstance(column, np.ndarray) else list(column)


def sizeof(value: Any) -> int:
    """Bytes Python holds for ``value`` and what it refers to (arrays with their data)."""
    if isinstance(value, np.ndarray):
        return sys.getsizeof(value) + (0 if value.base is None else value.nbytes)
    if isinstance(value, Outputs):
        return sys.getsizeof(value) + sizeof(value.value) + sizeof(value.named)
    if isinstance(value, Mapping):
        return sys.getsizeof(value) + sum(sizeof(k) + sizeof(v) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return sys.getsizeof(value) + sum(sizeof(v) for v in value)
    return sys.getsizeof(value)
