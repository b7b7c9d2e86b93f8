"""The status document of a call: what ``GET /async/{id}`` answers and a callback receives.

    {"id": "recs.0190...", "function": "recs", "status": "done",
     "accepted_at": 1765000000.1, "started_at": 1765000000.2, "finished_at": 1765000000.3,
     "attempts": 1, "http_status": 200, "version": "3",
     "result": {"predictions": [0.93]},          # the JSON the synchronous call would have answered
     "expires_at": 1765086400.3, "result_url": "/async/recs.0190.../result",
     "callback": {"status": "delivered", "attempts": 1}}

``status`` is ``pending`` (accepted, waiting to run), ``running``, ``done`` (the function answered
2xx) or ``failed`` (it answered an error: ``http_status`` and ``error`` say which, ``result`` holds
the error body as the synchronous call would have had it). ``result`` is left out when the answer
is not JSON (an Arrow stream): ``result_url`` answers it as it is, status, headers and body.
No document holds the callback URL.
"""

from __future__ import annotations

from typing import Any

import orjson

from fnserve.runtime.asynccalls.records import Outcome, parse_id


def status_url(call_id: str) -> str:
    return f"/async/{call_id}"


def accepted_at(call_id: str) -> float:
    """When a call was accepted, read back from its id (to the millisecond).

    >>> accepted_at("recs.0000000005dc0a1b2c3d4e5f60718293")
    1.5
    """
    return int(parse_id(call_id)[1][:12], 16) / 1000


def pending_document(
    call_id: str, status: str, started_at: float | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """The document of a call not finished: ``pending``, or ``running`` (run number ``attempt``)."""
    doc: dict[str, Any] = {
        "id": call_id,
        "function": parse_id(call_id)[0],
        "status": status,
        "accepted_at": accepted_at(call_id),
    }
    if started_at is not None:
        doc["started_at"] = started_at
    if attempt is not None:
        doc["attempts"] = attempt
    return doc


def document(
    outcome: Outcome,
    result_ttl_s: float,
    callback: tuple[str, bytes] | None,
    *,
    for_callback: bool = False,
) -> dict[str, Any]:
    """The document of a finished call; ``callback``: the state noted for its callback, if any."""
    doc: dict[str, Any] = {
        "id": outcome.id,
        "function": parse_id(outcome.id)[0],
        "status": outcome.status,
        "accepted_at": outcome.accepted_at,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "attempts": outcome.attempts,
        "http_status": outcome.http_status,
    }
    version = outcome.header("x-model-version") or outcome.header("x-function-version")
    if version is not None:
        doc["version"] = version
    if outcome.error is not None:
        doc["error"] = outcome.error
    body = outcome.json_body()
    if body is not None:
        doc["result"] = body
    doc["expires_at"] = outcome.finished_at + result_ttl_s
    doc["result_url"] = f"{status_url(outcome.id)}/result"
    if outcome.callback and not for_callback:
        doc["callback"] = _callback(callback)
    return doc


def _callback(noted: tuple[str, bytes] | None) -> dict[str, Any]:
    if noted is None:
        return {"status": "pending"}
    state, detail = noted
    shown: dict[str, Any] = {"status": state}
    try:
        extra = orjson.loads(detail) if detail else {}
    except orjson.JSONDecodeError:
        extra = {}
    if isinstance(extra, dict):
        shown.update({k: v for k, v in extra.items() if k in ("attempts", "error")})
    return shown
