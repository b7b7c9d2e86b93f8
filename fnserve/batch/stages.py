"""The two threads a batch job hands work to: one reading ahead of scoring, one writing behind it.

Both talk through bounded queues, so memory holds at most ``depth`` items each; an error in
either thread is raised to the scoring side, in order (reading's where the item would have
been, writing's at the next hand-over); ``close`` stops a thread that is no longer needed.

>>> ahead = ReadAhead(iter(range(5)), depth=2)
>>> written = []
>>> behind = WriteBehind(written.append, depth=2)
>>> for item in ahead:
...     _ = behind.put(item * 10)
>>> behind.close(); ahead.close(); written
[0, 10, 20, 30, 40]
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

END, NOTHING = object(), object()  # markers: the last item was read; no item ready yet
_POLL_S = 0.1  # how often a blocked hand-over checks whether the other side has stopped


class ReadAhead:
    """``items`` iterated in a thread, at most ``depth`` items ahead of the one iterating this."""

    def __init__(self, items: Iterator[Any], depth: int, name: str = "fnserve-batch-read"):
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _run(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
            self._put((True, END))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _put(self, entry: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while (item := self.get()) is not END:
            yield item

    def get(self, block: bool = True) -> Any:
        """The next item; :data:`END` after the last; :data:`NOTHING` if none is read yet and not
        ``block`` (an event loop asks so, to wait in a thread only when it must)."""
        try:
            ok, item = self._queue.get(block)
        except queue.Empty:
            return NOTHING
        if not ok:
            raise item
        if item is END:
            self._queue.put((True, END))  # asked again, still the end
        return item

    def close(self) -> None:
        """Stop reading (the thread ends at its next item) and wait for it."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()


class WriteBehind:
    """``handle(item)`` called in a thread for each ``put`` item, in order, at most ``depth`` behind."""

    def __init__(self, handle: Callable[[Any], None], depth: int, name: str = "fnserve-batch-write"):
        self._handle = handle
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not END:
            if self._error is None:
                try:
                    self._handle(item)
                except BaseException as exc:  # raised to the scoring side at its next put
                    self._error = exc

    def put(self, item: Any, block: bool = True) -> bool:
        """Hand ``item`` over, waiting while ``depth`` are queued (without ``block``: False, not
        handed over, when they are); the writer's error, if it had one."""
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=_POLL_S) if block else self._queue.put_nowait(item)
                return True
            except queue.Full:
                if not block:
                    return False

    def close(self) -> None:
        """Wait for every item to be handled; the writer's error, if it had one."""
        self._queue.put(END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without handling what is still queued."""
        self._error = self._error or RuntimeError("stopped")
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._queue.put(END)
        self._thread.join()
