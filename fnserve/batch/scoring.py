"""Scoring batches of rows: in-process, or by a running server; bad rows set apart from good ones.

:class:`LocalScorer` validates a chunk of rows with the runtime's decoders and calls the function
through its :class:`~fnserve.runtime.function.ServedFunction`, ``batch_size`` rows per call: a
decode has a fixed cost several times its cost per row at a model batch's size, so it is paid
per chunk (:func:`chunk_rows`) rather than per call. :class:`RemoteScorer`
sends the batch to ``fn serve`` or the gateway (Arrow, or JSON instances for JSON lines; answered
in Arrow), several requests in flight, labelling each row with the ``X-Model-Version`` of its answer.

A batch with bad rows is never scored or refused as a whole. :func:`set_apart` finds its bad rows
by the validation error's own row numbers where it names them all, else by halving the batch;
the good rows are then scored together, in one call. A server's 422 is answered the same way
(the rows checked here by the served schema), then, should the server still refuse, by halving
the requests. A reason reads as for a single-row request: ``price: must be >= 0, got -3.0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from fnserve.batch.rows import Rows
from fnserve.batch.source import READ_ROWS
from fnserve.bench.http1 import Connection, encode_request
from fnserve.client.arrow import answer_table
from fnserve.client.core import ClientError, RetryPolicy, check
from fnserve.runtime.errors import FnError, ValidationError
from fnserve.runtime.function import ServedFunction
from fnserve.runtime.outputs import Outputs
from fnserve.runtime.protocols.arrow import output_columns, to_arrow
from fnserve.runtime.schema import Schema

_ROW_LABEL = re.compile(r"instances\[\d+\](?:\.|: )|\[\d+\](?=:)")
VERSION_HEADER = "x-model-version"
USER_AGENT = "fn-batch"


@dataclass(frozen=True)
class Scored:
    """The predictions of a batch's good rows, and its bad rows (for the error output)."""

    ids: np.ndarray  # the scored rows' numbers in the input, in order
    keys: list[pa.Array]
    outputs: dict[str, pa.Array]  # prediction columns by output name
    versions: pa.Array  # int64: the version that scored each row (null: no checkpoint)
    counts: Mapping[str, int]  # rows scored by each version ("none": a function without a checkpoint)
    bad: pa.Table | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    @classmethod
    def nothing(cls, bad: pa.Table | None) -> Scored:
        return cls(np.zeros(0, np.int64), [], {}, pa.array([], pa.int64()), {}, bad)

    @classmethod
    def join(cls, parts: list[Scored]) -> Scored:
        """Parts of one batch (scored apart), in order, as one."""
        scored = [p for p in parts if p.n]
        bads = [p.bad for p in parts if p.bad is not None]
        bad = pa.concat_tables(bads, promote_options="permissive") if bads else None
        if not scored:
            return cls.nothing(bad)
        if len(scored) == 1:
            one = scored[0]
            return cls(one.ids, one.keys, one.outputs, one.versions, one.counts, bad)
        counts: dict[str, int] = {}
        for part in scored:
            for version, count in part.counts.items():
                counts[version] = counts.get(version, 0) + count
        return cls(
            np.concatenate([p.ids for p in scored]),
            [pa.concat_arrays([p.keys[i] for p in scored]) for i in range(len(scored[0].keys))],
            {k: pa.concat_arrays([p.outputs[k] for p in scored]) for k in scored[0].outputs},
            pa.concat_arrays([p.versions for p in scored]),
            counts,
            bad,
        )


def reason(exc: FnError) -> str:
    """What is wrong with one row, worded without its position in the batch it came in."""
    if exc.problems:
        text = "; ".join(str(p) for p in exc.problems)
        if exc.count > len(exc.problems):
            text += f"; and {exc.count - len(exc.problems)} more"
    else:
        text = exc.message
    return plain(text)


def plain(text: str) -> str:
    """``instances[0].price: ...`` and ``price[0]: ...`` -> ``price: ...``.

    >>> plain("instances[3].price: must be >= 0, got -3.0; day[0]: expected int, got 'x'")
    "price: must be >= 0, got -3.0; day: expected int, got 'x'"
    """
    return _ROW_LABEL.sub("", text)


def set_apart(rows: Rows, schema: Schema) -> tuple[Rows | None, Any, dict[int, str]]:
    """The good rows and their checked columns (None, None: there are none), and the bad rows'
    positions with their reasons. A problem of the batch as a whole (no row at fault) is raised."""
    bad: dict[int, str] = {}
    positions = list(range(rows.n))
    current = rows
    while True:
        try:
            columns, _ = current.decode(schema)
            return current, columns, bad
        except ValidationError as exc:
            found = _named_rows(exc) or _halving(current, schema)
            if not found:
                raise  # each half passes on its own: the batch as a whole is refused
        bad.update({positions[p]: text for p, text in found.items()})
        positions = [p for i, p in enumerate(positions) if i not in found]
        if not positions:
            return None, None, bad
        current = rows.take(positions)


def _named_rows(exc: ValidationError) -> dict[int, str] | None:
    """The bad rows, when the error names every problem (not one beyond MAX_PROBLEMS) and each one's row."""
    if not exc.problems or exc.count > len(exc.problems) or any(p.row is None for p in exc.problems):
        return None
    found: dict[int, list[str]] = {}
    for problem in exc.problems:
        found.setdefault(int(problem.row or 0), []).append(str(problem))
    return {row: plain("; ".join(texts)) for row, texts in found.items()}


def _halving(rows: Rows, schema: Schema) -> dict[int, str]:
    """The bad rows of a batch that fails, by validating its halves apart (recursively)."""
    if rows.n == 1:
        try:
            rows.decode(schema)
        except ValidationError as exc:
            return {0: reason(exc)}
        return {}
    found, middle = {}, rows.n // 2
    for start, stop in ((0, middle), (middle, rows.n)):
        half = rows.take(range(start, stop))
        try:
            half.decode(schema)
        except ValidationError:
            found.update({start + p: text for p, text in _halving(half, schema).items()})
    return found


@dataclass(frozen=True)
class Checked:
    """A batch validated for the model: its good rows' checked columns, its bad rows described."""

    rows: Rows | None  # None: no row is good
    columns: Any  # the good rows' checked input columns, as the function receives them
    bad: pa.Table | None


class LocalScorer:
    """The function in this process: its model loaded by the runtime's own ServedFunction.
    ``check`` validates rows as a request's columns are; ``score`` calls the function on them,
    ``batch_size`` rows at a time."""

    def __init__(self, served: ServedFunction, batch_size: int):
        self.served, self.schema, self.batch_size = served, served.schema, batch_size

    def check(self, rows: Rows) -> Checked:
        good, columns, found = set_apart(rows, self.schema)
        bad = rows.bad(sorted(found), [found[p] for p in sorted(found)]) if found else None
        return Checked(good, columns, bad)

    def score(self, checked: Checked) -> Scored:
        good = checked.rows
        if good is None:
            return Scored.nothing(checked.bad)
        n, size = good.n, self.batch_size
        calls = [
            self.served.call({k: v[at : at + size] for k, v in checked.columns.items()}, min(size, n - at))
            for at in range(0, n, size)
        ]
        outputs = Outputs.concat(calls)  # one model: nothing swaps it while a job runs (concat would say so)
        named = {name: to_arrow(column) for name, column in output_columns(outputs).items()}
        return Scored(good.ids, good.key_columns(), named, *_versions(outputs.version, n), checked.bad)


def chunk_rows(schema: Schema, batch_size: int) -> int:
    """Rows validated at once in-process: whole model batches, up to READ_ROWS (a few hundred
    kilobytes of numbers or text). A function of images takes one batch at a time: decoded, its
    pixels are many times the bytes read, and decoding them costs per image, not per call."""
    if any(field.kind == "image" for field in schema.inputs):
        return batch_size
    return batch_size * max(1, READ_ROWS // batch_size)


class RemoteScorer:
    """A running ``fn serve`` or gateway at ``url``: ``target`` is ``name`` or ``name@version``;
    ``concurrency`` requests in flight, each on its own keep-alive connection.

    The connections are :mod:`fnserve.bench.http1`'s lean ones (an httpx request costs the client
    several times the server's work at these rates); their answers are read by the client's own
    rules: :func:`~fnserve.client.core.check` for errors, its :class:`~fnserve.client.core.RetryPolicy`
    for overloaded answers (429/503, after ``Retry-After``), :func:`~fnserve.client.arrow.read_answer`
    for the predictions. They live in the event loop that scores (``async with scorer.connected():``).
    """

    def __init__(self, url: str, target: str, schema: Schema, concurrency: int, *, timeout_s: float = 60.0):
        self.url, self.target, self.schema, self.concurrency = url.rstrip("/"), target, schema, concurrency
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(
            retries=10, max_wait_s=120.0
        )  # a long job rides out a busy or restarting server
        self._idle: asyncio.Queue[Connection] | None = None

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[RemoteScorer]:
        self._idle = asyncio.Queue()
        connections = [Connection(self.url, self.timeout_s) for _ in range(self.concurrency)]
        for connection in connections:
            self._idle.put_nowait(connection)
        try:
            yield self
        finally:
            for connection in connections:
                connection.close()
            self._idle = None

    async def score(self, rows: Rows) -> Scored:
        try:
            return await self._send(rows)
        except ClientError as exc:
            if exc.status != 422:
                raise
        good, _, found = await asyncio.to_thread(set_apart, rows, self.schema)
        bad = rows.bad(sorted(found), [found[p] for p in sorted(found)]) if found else None
        if good is None:
            return Scored.nothing(bad)
        scored = await self._halving(good) if not found else await self._score_or_halve(good)
        return Scored.join([scored, Scored.nothing(bad)])

    async def _score_or_halve(self, rows: Rows) -> Scored:
        try:
            return await self._send(rows)
        except ClientError as exc:
            if exc.status != 422:
                raise
            return await self._halving(rows)

    async def _halving(self, rows: Rows) -> Scored:
        """The server refuses rows these checks pass (another fnserve, another rule): ask it row
        range by row range, halving the ranges it refuses down to single rows."""
        if rows.n == 1:
            try:
                return await self._send(rows)
            except ClientError as exc:
                if exc.status != 422:
                    raise
                return Scored.nothing(rows.bad([0], [plain(str(exc).split(": ", 1)[-1])]))
        middle = rows.n // 2
        halves = [rows.take(range(0, middle)), rows.take(range(middle, rows.n))]
        return Scored.join([await self._score_or_halve(half) for half in halves])

    async def _send(self, rows: Rows) -> Scored:
        call = rows.call(self.target)
        headers, body = await self._exchange(encode_request(self.url, call, agent=USER_AGENT))
        table = answer_table(headers.get("content-type", ""), body, call.expected)
        header = headers.get(VERSION_HEADER, "")
        version = int(header) if header.isdigit() else None
        outputs = {name: table.column(name).combine_chunks() for name in table.column_names}
        return Scored(rows.ids, rows.key_columns(), outputs, *_versions(version, rows.n))

    async def _exchange(self, raw: bytes) -> tuple[dict[str, str], bytes]:
        """One request on an idle connection, retried while the server is overloaded; the answer's
        headers and body. An error answer is a ClientError with the server's message, worded as
        the client words it (:func:`~fnserve.client.core.check`)."""
        assert self._idle is not None, "score inside `async with scorer.connected():`"
        connection = await self._idle.get()
        try:
            waited = 0.0
            for attempt in itertools.count():
                status, headers, body = await connection.exchange(raw)
                wait = self.retry.wait_s(status, headers.get("retry-after"), attempt, waited)
                if wait is None:
                    if status >= 400:  # the client's own reading of an error answer
                        check(httpx.Response(status, headers=headers, content=body), attempt + 1)
                    return headers, body
                await asyncio.sleep(wait)
                waited += wait
        finally:
            self._idle.put_nowait(connection)
        raise AssertionError("unreachable")


def _versions(version: int | None, n: int) -> tuple[pa.Array, dict[str, int]]:
    """The version column of ``n`` rows one model answered, and its count."""
    return _version_column(version, n), {"none" if version is None else str(version): n}


@functools.lru_cache(maxsize=16)
def _version_column(version: int | None, n: int) -> pa.Array:
    """Made once per version and batch size: Arrow arrays are immutable, every batch shares it."""
    return pa.nulls(n, pa.int64()) if version is None else pa.array(np.full(n, version, np.int64))
