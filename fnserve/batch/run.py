"""The pipeline of a batch job: read, score, write, in input order, memory bounded by a few batches.

    job = prepare(spec, found, store, overwrite=False)         # checked and claimed: nothing scored yet
    summary = job.run(on_progress=show)                         # every part not done before
    summary = job.run(shard=2, shards=4)                        # one index's share (part.index % 4 == 2)

In-process, one loop reads a chunk of rows (whole model batches, up to
:data:`~fnserve.batch.source.READ_ROWS`), validates it at once, calls the model on it batch by
batch and writes the predictions, chunk after chunk: pyarrow reads ahead (and decompresses) in
its own threads and writes without the GIL, so the model is what the loop waits on. Against a
server, requests fly ``concurrency`` at a time on an event loop, while one thread reads ahead
(:class:`~fnserve.batch.stages.ReadAhead`) and one writes behind
(:class:`~fnserve.batch.stages.WriteBehind`). The first error stops the job (parts done stay
done); so does a count of bad rows over ``max_errors``, the parts being written left unmarked,
their bad rows so far kept to look at.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from fnserve.batch import BatchError
from fnserve.batch.job import ERRORS_DIR, JobSpec, Output
from fnserve.batch.parts import PartWriter
from fnserve.batch.rows import Rows, rows_of, unreadable_lines
from fnserve.batch.scoring import LocalScorer, RemoteScorer, Scored
from fnserve.batch.source import PartDone, PartInfo, Piece, Source
from fnserve.batch.stages import END, NOTHING, ReadAhead, WriteBehind
from fnserve.batch.summary import Progress, Summary, Tally, versions_of
from fnserve.runtime.redact import redact_text
from fnserve.runtime.schema import Schema
from fnserve.runtime.server import run as run_loop

PROGRESS_EVERY_S = 0.1  # how often on_progress hears of rows done (and at every finished part)
DEPTH = 4  # batches read ahead of scoring, and written behind it

Prepared = tuple[Piece, Rows | None, pa.Table | None]  # a piece, its rows to score, its rows bad already
Out = tuple[Piece, Scored] | PartDone


@dataclass
class Job:
    """A job checked and claimed by :func:`fnserve.batch.prepare.prepare`; ``run`` scores it."""

    spec: JobSpec
    source: Source
    output: Output
    schema: Schema
    fingerprint: str
    done: dict[str, dict[str, Any]]  # markers of the parts done before this run
    batch_size: int
    scorer: Callable[[], contextlib.AbstractContextManager[LocalScorer | RemoteScorer]]  # loads the model
    columns: list[str]  # the input's columns to read: the inputs it has and the keys
    version: int | None  # the checkpoint version that scores it (the server's, against one)
    total_rows: int | None = None  # None: not known before reading
    read_rows: int | None = None  # rows read, checked and written at a time; None: batch_size

    def run(
        self, shard: int = 0, shards: int = 1, on_progress: Callable[[Progress], None] | None = None
    ) -> Summary:
        """Score the parts of index ``shard`` of ``shards`` not done before; what is done now."""
        if not 0 <= shard < shards:
            raise BatchError(f"index {shard} is not one of the job's {shards} indexes (0 to {shards - 1})")
        try:
            return _Run(self, shard, shards, on_progress).go()
        except OSError as exc:  # the output's storage (the input's is reported by the source)
            said = redact_text(f"{type(exc).__name__}: {exc}", self.output.secrets | self.source.secrets)
            raise BatchError(f"cannot write {self.output.shown}: {said}") from None

    def status(self) -> Summary:
        """What is done now (as markers and the manifest say), scoring nothing: for a job that
        others run (the indexes of a Kubernetes Job)."""
        manifest = self.output.manifest()
        run = _Run(self, 0, 1, None)
        return run._summary(
            manifest if manifest and manifest.get("fingerprint") == self.fingerprint else None
        )


class _Run:
    def __init__(self, job: Job, shard: int, shards: int, on_progress: Callable[[Progress], None] | None):
        self.job, self.shard, self.shards, self.on_progress = job, shard, shards, on_progress
        done = job.done.values()
        self.tally = Tally(sum(m["rows"] for m in done), sum(m["errors"] for m in done), len(job.done))
        self.writers: dict[str, PartWriter] = {}
        self.encoder: Executor | None = None  # in-process: where row groups are encoded (see PartWriter)
        self.started = self.shown_at = time.monotonic()
        self.load_s = 0.0
        inputs = {f.name for f in job.schema.inputs}
        self.drop = frozenset((set(job.spec.keys) | set(job.spec.ignore)) - inputs)
        text = [
            f.name for f in job.schema.inputs if f.kind in ("str", "category") and f.name not in job.spec.keys
        ]
        rows = job.read_rows or job.batch_size
        self.reading = job.source.read(self._wanted, job.columns, rows, job.spec.part_rows, text)

    def _wanted(self, part: PartInfo) -> bool:
        return part.index % self.shards == self.shard and part.name not in self.job.done

    def go(self) -> Summary:
        manifest = self.job.output.manifest()
        if manifest is not None and manifest.get("fingerprint") == self.job.fingerprint:
            return self._summary(manifest)  # complete already: nothing to read, no model to load
        known = self._known_parts()
        if known is not None and not any(self._wanted(p) for p in known):
            self.reading.parts, self.reading.complete = known, True  # this index's share is done
        else:
            loading = time.monotonic()
            with self.job.scorer() as scorer:
                self.started = time.monotonic()
                self.load_s = self.started - loading
                self._pipeline(scorer)
        return self._summary(None)

    def _known_parts(self) -> list[PartInfo] | None:
        """The parts, when they are known without reading the input (Parquet)."""
        if self.job.source.format != "parquet":
            return None
        return [p.info for p in self.job.source.parquet_parts(self.job.spec.part_rows)]

    def _pipeline(self, scorer: LocalScorer | RemoteScorer) -> None:
        try:
            if isinstance(scorer, LocalScorer):
                self._score_here(scorer)
            else:
                self._score_there(scorer)
        finally:
            self._abandon()

    def _abandon(self) -> None:
        """Close the parts being written without their markers (a rerun writes them again)."""
        writers, self.writers = self.writers, {}
        for writer in writers.values():
            writer.abandon()

    def _score_here(self, scorer: LocalScorer) -> None:
        """In-process, in this thread: each chunk read, validated, scored and written in turn.

        pyarrow reads ahead in its own threads, and encodes row groups without the GIL in one of
        ours; Python work in threads beside the model would only contend with it for the GIL
        (measured: a reading and a writing thread made recs' batches ~15% slower than this loop,
        whatever the switch interval; a thread checking the next chunk while the model scores
        this one was no faster, within the machine's noise)."""
        with ThreadPoolExecutor(1, thread_name_prefix="fnserve-batch-encode") as self.encoder:
            try:
                self._score_batches(scorer)
            finally:
                self._abandon()  # while the encoder still takes their last row groups

    def _score_batches(self, scorer: LocalScorer) -> None:
        for item in self.reading:
            if isinstance(item, PartDone):
                self._take(item)
                continue
            rows, bad = self._rows(item)
            checked = scorer.check(rows) if rows is not None else None
            scored = scorer.score(checked) if checked is not None else Scored.nothing(None)
            self._take((item, scored if bad is None else Scored.join([scored, Scored.nothing(bad)])))

    def _score_there(self, scorer: RemoteScorer) -> None:
        """Against a server: one thread reads ahead, one writes behind, requests fly on an event loop
        in this one (its threads wait on sockets and files, rarely holding the GIL)."""
        ahead = ReadAhead(map(self._prepare, self.reading), DEPTH)
        behind = WriteBehind(self._take, DEPTH)
        try:
            run_loop(self._requests(scorer, ahead, behind), _event_loop())
            behind.close()
        finally:
            behind.abort()
            ahead.close()

    def _rows(self, piece: Piece) -> tuple[Rows | None, pa.Table | None]:
        """A piece's rows to score, and those bad already (text that is not of its input's type)."""
        job = self.job
        return rows_of(piece, job.source.format, job.schema, job.spec.keys, self.drop)

    def _prepare(self, item: Piece | PartDone) -> Prepared | PartDone:
        """In the reading thread (against a server): a piece as rows, ready to send."""
        return item if isinstance(item, PartDone) else (item, *self._rows(item))

    async def _requests(self, scorer: RemoteScorer, ahead: ReadAhead, behind: WriteBehind) -> None:
        """``concurrency`` requests in flight; answers handed to the writer in input order."""
        pending: collections.deque[asyncio.Future[Out]] = collections.deque()

        async def score(piece: Piece, rows: Rows | None, bad: pa.Table | None) -> Out:
            scored = await scorer.score(rows) if rows is not None else Scored.nothing(None)
            return piece, (scored if bad is None else Scored.join([scored, Scored.nothing(bad)]))

        async def hand_over() -> None:
            done = await pending.popleft()
            if not behind.put(done, block=False):  # the writer is behind: wait for it off the loop
                await asyncio.to_thread(behind.put, done)

        async def read() -> Any:
            item = ahead.get(block=False)  # read ahead already, mostly: no thread hop
            return await asyncio.to_thread(ahead.get) if item is NOTHING else item

        async with scorer.connected():
            try:
                while (item := await read()) is not END:
                    if isinstance(item, PartDone):
                        done: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
                        done.set_result(item)
                        pending.append(done)
                    else:
                        pending.append(asyncio.ensure_future(score(*item)))
                    while len(pending) > scorer.concurrency:
                        await hand_over()
                while pending:
                    await hand_over()
            finally:
                for future in pending:
                    future.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    def _take(self, item: Out) -> None:
        """In input order: write a batch, or finish a part."""
        job = self.job
        if isinstance(item, PartDone):
            writer = self.writers.pop(item.part.name, None) or self._writer(item.part)
            if item.invalid:
                lines = Scored.nothing(unreadable_lines(item.invalid, job.spec.keys))
                writer.add(lines)
                self.tally.add(0, lines)
            writer.finish(item.part)
            self.tally.parts += 1
            self._report(force=True)
            return
        piece, scored = item
        writer = self.writers.get(piece.part.name) or self._writer(piece.part)
        self.writers[piece.part.name] = writer
        writer.add(scored)
        self.tally.add(_rows_in(piece), scored)
        limit = job.spec.max_errors
        if limit is not None and self.tally.errors + self.tally.errors_before > limit:
            self._report(force=True)  # the progress shown is where it stopped
            raise BatchError(self._too_many(limit))
        self._report()

    def _writer(self, part: PartInfo) -> PartWriter:
        return PartWriter(self.job.output, part, self.job.spec.keys, self.job.fingerprint, self.encoder)

    def _too_many(self, limit: int) -> str:
        total = self.tally.errors + self.tally.errors_before
        first = next(iter(self.tally.examples), None)
        example = f" (the first: row {first[0]}: {first[1]})" if first else ""
        return (
            f"stopped: {total:,} bad rows, more than --max-errors {limit:,}{example}; they are in "
            f"{self.job.output.shown_at(ERRORS_DIR)}/. The parts done so far are kept: fix the input "
            "or raise --max-errors, then run the same command again to go on"
        )

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress is None or (not force and now - self.shown_at < PROGRESS_EVERY_S):
            return
        self.shown_at = now
        t = self.tally
        self.on_progress(
            Progress(
                rows=t.rows_before + t.rows,
                total_rows=self.job.total_rows if self.shards == 1 else None,
                bytes_read=self.reading.bytes_read,
                total_bytes=sum(f.size for f in self.job.source.files),
                errors=t.errors_before + t.errors,
                parts=t.parts_before + t.parts,
                resumed_rows=t.rows_before,
            )
        )

    def _summary(self, manifest: Mapping[str, Any] | None) -> Summary:
        job, t = self.job, self.tally
        seconds = time.monotonic() - self.started
        if manifest is None and self.reading.complete:
            manifest = job.output.join(self.reading.parts, job.fingerprint)
        done = job.output.done(job.fingerprint) if manifest is None else {}
        totals: Mapping[str, Any] = manifest or {
            "rows": sum(m["rows"] for m in done.values()),
            "scored": sum(m["scored"] for m in done.values()),
            "errors": sum(m["errors"] for m in done.values()),
            "versions": versions_of(done.values()),
        }
        return Summary(
            output=job.output.shown,
            errors_at=job.output.shown_at(ERRORS_DIR),
            rows=totals["rows"],
            scored=totals["scored"],
            errors=totals["errors"],
            parts=len(manifest["parts"]) if manifest else len(done),
            resumed_parts=t.parts_before,
            run_rows=t.rows,
            seconds=seconds,
            load_s=self.load_s,
            versions=dict(totals["versions"]),
            complete=manifest is not None,
            examples=t.examples,
        )


def _event_loop() -> str:
    """uvloop where it is installed, as the servers run (its sockets and scheduling cost less)."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def _rows_in(piece: Piece) -> int:
    raw = piece.raw
    return 0 if raw is None else len(raw) if isinstance(raw, list) else int(raw.num_rows)
