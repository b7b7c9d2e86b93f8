"""Disconnect watching without a timer or task per request: one sweep per event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from fnserve.runtime.protocols import common
from fnserve.runtime.protocols.common import ClientGone, cancel_on_disconnect


def request_that_disconnects(after_s: float | None) -> Request:
    """A GET whose client goes away ``after_s`` seconds into waiting (never, for None)."""

    async def receive() -> dict[str, Any]:
        if after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(after_s or 0)
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "GET", "path": "/", "headers": []}, receive)


def test_work_of_a_caller_that_went_away_is_cancelled() -> None:
    async def main() -> tuple[BaseException | None, bool]:
        work = asyncio.get_running_loop().create_future()
        with pytest.raises(ClientGone) as info:
            await cancel_on_disconnect(request_that_disconnects(0.01), work)
        return info.value, work.cancelled()

    error, cancelled = asyncio.run(main())
    assert isinstance(error, ClientGone) and "disconnected" in str(error.message)
    assert cancelled  # the queued work is dropped with its caller


def test_fast_answers_start_no_watcher_and_leave_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    original = common._Waiting.watch

    async def counting(self: common._Waiting) -> None:
        started.append(self)
        await original(self)

    monkeypatch.setattr(common._Waiting, "watch", counting)

    async def main() -> tuple[list[int], int]:
        connected = request_that_disconnects(None)
        answers = [await cancel_on_disconnect(connected, asyncio.sleep(0, i)) for i in range(50)]
        await asyncio.sleep(common.WATCH_AFTER_S * 2)  # a sweep would have run by now
        return answers, len(common._Sweep.of(asyncio.get_running_loop()).young)

    answers, still_registered = asyncio.run(main())
    assert answers == list(range(50))
    assert started == [] and still_registered == 0


def test_a_slow_answer_to_a_connected_caller_still_arrives() -> None:
    async def main() -> str:
        return await cancel_on_disconnect(
            request_that_disconnects(None), asyncio.sleep(common.WATCH_AFTER_S * 3, "late")
        )

    assert asyncio.run(main()) == "late"
