"""Answers without the model: the loaded version's lookup table, then the result cache.

Every protocol hands its checked inputs to :meth:`Runtime.predict`; for a function with a table
or a cache, :class:`Shortcuts` looks each row up first, on the event loop (a dict lookup costs
far less than the hop to a model thread and back), and sends only the rows it cannot answer to
the batcher. A request of hits and misses is answered in its own order, every row by one
version: the table answers only for the version it came with, the cache only with what that
version computed, and if a swap lets a newer model compute the misses, the whole request goes
to it instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fnserve.runtime import codec
from fnserve.runtime.cache import CacheConfig, ResultCache
from fnserve.runtime.codec import Columns, Inputs, Rows
from fnserve.runtime.errors import FnError, ModelError, NotFound
from fnserve.runtime.function import LoadedModel, ServedFunction
from fnserve.runtime.loader import FoundFunction
from fnserve.runtime.metrics import LoopCount, LoopCounter, Metrics
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.table import TABLE_FILE, Canonical, Key, LookupTable, TableConfig, merge

log = logging.getLogger("fnserve.lookup")

ModelPredict = Callable[[ServedFunction, Inputs, int, "int | None"], Awaitable[Outputs]]
SHOWN_MISSES = 3  # a strict 404 names this many rows' inputs


@dataclass(slots=True)
class Found:
    """What a lookup found: ``parts`` answer some rows (their positions), ``missing`` are the
    positions left to the model; ``outputs`` is the whole answer when nothing is missing."""

    version: int | None
    keys: list[Key]
    parts: list[tuple[Sequence[int], Outputs]]
    missing: list[int]
    outputs: Outputs | None


@dataclass(slots=True)
class QueryHit:
    """A GET whose query is a row of the loaded version's table (:meth:`Shortcuts.query_hit`):
    its values in the schema's order as :func:`codec.parse_query` makes them, the inputs filled
    with their defaults, and the row, answered by the table (:meth:`Shortcuts.count_hit` counts it)."""

    values: list[Any]
    defaulted: list[str]
    version: int | None
    table: LookupTable
    row: int
    names: tuple[str, ...]

    def rows(self) -> Rows:
        """The instance, as any other GET hands it on (built only when asked: for capture)."""
        instance = dict(zip(self.names, self.values, strict=True))
        return Rows([instance], dict.fromkeys(self.defaulted, 1))


class Shortcuts:
    """One function's lookup tables (by version) and result cache."""

    def __init__(self, found: FoundFunction, metrics: Metrics):
        self.name = found.spec.name
        self.fields = found.schema.inputs
        self.canonical = Canonical(self.fields)
        self.unchecked = codec.UncheckedQuery(self.fields)
        self.schema = found.schema
        self.strict = TableConfig.of_function(found.path).strict  # ConfigError at start, naming the key
        max_bytes = CacheConfig.of_function(found.path).max_bytes
        self.cache = ResultCache(max_bytes) if max_bytes else None
        self._cache_version: int | None = None
        self.tables: dict[int | None, LookupTable] = {}  # replaced whole: read on the loop meanwhile
        self.metrics = metrics
        self._counters: dict[tuple[LoopCounter, int | None], LoopCount] = {}
        self._hit_counts: dict[int | None, tuple[LoopCount, LoopCount]] = {}

    @property
    def active(self) -> bool:
        return bool(self.tables) or self.cache is not None

    def loaded(self, loaded: LoadedModel, serving: LoadedModel | None) -> None:
        """In the load thread, before ``loaded`` is served: read its table, if it has one. The
        table of the version still ``serving`` stays until the swap, then goes with the next load."""
        kept = {v: t for v, t in self.tables.items() if serving is not None and v == serving.version}
        path = Path(loaded.path) / TABLE_FILE if loaded.path else None
        if path is not None and path.is_file():
            try:
                table = LookupTable.read(path, self.schema, loaded.version)
            except FnError as exc:  # served without its table, loudly: the model still answers
                log.error("%s: version %s served without its table: %s", self.name, loaded.version, exc)
            else:
                kept[loaded.version] = table
                log.info(
                    "%s: version %s answers %d rows from its table", self.name, loaded.version, table.rows
                )
        self.tables = kept

    def query_hit(self, version: int | None, query_string: bytes) -> QueryHit | None:
        """A GET's query string straight to its row of the table of ``version`` (the one in
        memory, as the runtime just resolved it), or None (not a row of a checked table, or a
        query :func:`codec.parse_query` would refuse): then the query is parsed and checked as
        any other. A hit skips the checks, not their outcome: every row of a checked table
        passes them, and the values are the ones parse_query makes.
        """
        table = self.tables.get(version)
        if table is None or not table.checked:
            return None
        parsed = self.unchecked(query_string)
        if parsed is None:
            return None
        values, defaulted = parsed
        key = tuple(values)  # the parsed text's types are the key's; a default's may not be (5, 5.0)
        if defaulted and tuple(map(type, key)) != self.canonical.types:
            key = self.canonical.row_key(dict(zip(self.canonical.names, values, strict=True)))
        row = table.index.get(key)
        if row is None:
            return None
        return QueryHit(values, defaulted, version, table, row, self.canonical.names)

    def count_hit(self, hit: QueryHit) -> None:
        """Count a :class:`QueryHit` answered: a table hit and an answered instance."""
        counts = self._hit_counts.get(hit.version)
        if counts is None:
            counts = self._hit_counts[hit.version] = (
                self.metrics.table_hits.labels(self.name, str(hit.version or 0)),
                self.metrics.instances.labels(self.name, str(hit.version or 0)),
            )
        counts[0].inc()
        counts[1].inc()

    def lookup(self, fn: ServedFunction, columns: Inputs, n: int, pinned: int | None = None) -> Found | None:
        """Look every row up, on the loop (no await: nothing is swapped in meanwhile); None when
        there is nothing to look up in. A strict table's miss raises NotFound naming its inputs."""
        loaded = fn.loaded
        version = loaded.version if loaded is not None else None
        if pinned is not None and version != pinned:
            return None  # the model path says it was replaced
        table = self.tables.get(version)
        cache = self.cache
        if table is None and cache is None:
            return None
        if cache is not None and version != self._cache_version:
            cache.keep_only(version)  # a new model: nothing the old one computed is answered
            self._cache_version = version
        if n == 1 and isinstance(columns, Rows):  # the hot path: one instance (a GET)
            keys = [self.canonical.row_key(columns[0])]
        else:
            keys = self.canonical.keys(columns, n)
        if table is not None and n == 1:
            row = table.index.get(keys[0])
            if row is not None:
                self._count(self.metrics.table_hits, version, 1)
                self.metrics.count_instances(self.name, version, 1)
                return Found(version, keys, [], [], table.row(row))
        table_at: list[int] = []
        table_rows: list[int] = []
        cached_at: list[int] = []
        cached: list[Outputs] = []
        missing: list[int] = []
        for i, key in enumerate(keys):
            if table is not None and (row := table.index.get(key)) is not None:
                table_at.append(i)
                table_rows.append(row)
            elif cache is not None and (hit := cache.get(version, key)) is not None:
                cached_at.append(i)
                cached.append(hit)
            else:
                missing.append(i)
        if table is not None:
            self._count(self.metrics.table_hits, version, len(table_at))
            self._count(self.metrics.table_misses, version, len(keys) - len(table_at))
            if missing and self.strict:
                raise NotFound(self._not_found(keys, missing, version))
        if cache is not None:
            self._count(self.metrics.cache_hits, version, len(cached_at))
            self._count(self.metrics.cache_misses, version, len(missing))
        parts: list[tuple[Sequence[int], Outputs]] = []
        if table is not None and table_at:
            parts.append((table_at, table.take(table_rows)))
        if cached_at:
            parts.append((cached_at, Outputs.concat(cached)))
        found = Found(version, keys, parts, missing, None)
        if not missing:
            found.outputs = self._merge(n, found)
            if found.outputs is not None:
                self.metrics.count_instances(self.name, version, n)
        return found

    async def complete(
        self,
        fn: ServedFunction,
        columns: Inputs,
        n: int,
        pinned: int | None,
        found: Found,
        model: ModelPredict,
    ) -> Outputs:
        """The rows :meth:`lookup` did not find, by the model; the request's answer in its order."""
        missing = found.missing
        if not missing:  # found, but its parts would not merge: the model answers all
            return await model(fn, columns, n, pinned)
        part = columns if len(missing) == n else select(columns, missing)
        answer = await model(fn, part, len(missing), pinned)
        if self.cache is not None:
            self._remember(self.cache, [found.keys[i] for i in missing], answer)
        if not found.parts:
            return answer
        if answer.version != found.version:  # swapped in meanwhile: one version answers all
            return await model(fn, columns, n, pinned)
        found.parts.append((missing, answer))
        merged = self._merge(n, found)
        if merged is None:
            return await model(fn, columns, n, pinned)
        self.metrics.count_instances(self.name, found.version, n - len(missing))  # the model counted its own
        return merged

    def _merge(self, n: int, found: Found) -> Outputs | None:
        try:
            return merge(n, found.parts, found.version)
        except ModelError as exc:
            log.error("%s: %s; the model answers the whole request", self.name, exc.message)
            return None

    def _remember(self, cache: ResultCache, keys: list[Key], answer: Outputs) -> None:
        for j, key in enumerate(keys):
            cache.put(answer.version, key, answer.slice(j, j + 1))
        self.metrics.cache_bytes.labels(self.name).set(cache.bytes)

    def _count(self, counter: LoopCounter, version: int | None, n: int) -> None:
        child = self._counters.get((counter, version))
        if child is None:
            child = self._counters[(counter, version)] = counter.labels(self.name, str(version or 0))
        if n:
            child.inc(n)

    def _not_found(self, keys: list[Key], missing: list[int], version: int | None) -> str:
        shown = []
        for i in missing[:SHOWN_MISSES]:
            inputs = ", ".join(f"{f.name}={v!r}" for f, v in zip(self.fields, keys[i], strict=True))
            shown.append(f"instance {i} ({inputs})" if len(keys) > 1 else inputs)
        more = f" and {len(missing) - SHOWN_MISSES} more" if len(missing) > SHOWN_MISSES else ""
        return (
            f"no precomputed answer for {'; '.join(shown)}{more}: the table of {self.name!r} version "
            f"{version} is strict ([table] strict = true), only the inputs it holds are answered"
        )


def select(columns: Inputs, positions: list[int]) -> Inputs:
    """The rows at ``positions`` (the misses the model computes). Defaulted counts stay with the
    whole request only: a share of the rows cannot say which of them were filled."""
    if isinstance(columns, Rows):
        return Rows([columns[i] for i in positions])
    index = np.asarray(positions)
    picked: dict[str, Any] = {
        name: column[index] if isinstance(column, np.ndarray) else [column[i] for i in positions]
        for name, column in columns.items()
    }
    return Columns(picked)
