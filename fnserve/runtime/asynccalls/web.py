"""The HTTP side of asynchronous calls, the same on ``fn serve`` and on the gateway.

* ``POST`` to a prediction path with ``Prefer: respond-async`` (RFC 7240): the call is stored, then
  answered ``202 Accepted`` with ``Location: /async/{id}``, ``Preference-Applied: respond-async``
  and ``{"id": ..., "status": "pending", "status_url": ...}``. A ``Callback-URL`` header asks for the
  outcome to be POSTed there. A preference on another method is ignored (answered at once), as RFC
  7240 allows: a GET is safe, and a call is a resource made by a POST.
* ``GET /async/{id}``: the status document (:mod:`fnserve.runtime.asynccalls.status`); 404 for an
  unknown id, 410 Gone for an outcome past ``result_ttl_s`` (then 404 once as long again has passed).
* ``GET /async/{id}/result``: the outcome as the synchronous call would have answered it (status,
  content type, version header, body); 202 with the status document while it is not finished.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from fnserve.runtime.asynccalls.callbacks import HEADER, check_callback
from fnserve.runtime.asynccalls.queue import CallQueue
from fnserve.runtime.asynccalls.records import CallRequest, new_id, stored_headers
from fnserve.runtime.asynccalls.status import status_url
from fnserve.runtime.http import json_response, read_body

POLL_AFTER_S = "1"  # Retry-After on a 202: when a poll may find the call further on


def prefers_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header holds ``respond-async`` (among other preferences, any case).

    >>> prefers_async("respond-async"), prefers_async("return=minimal, Respond-Async; x=1")
    (True, True)
    >>> prefers_async(None), prefers_async("respond-asyncx"), prefers_async("wait=5")
    (False, False, False)
    """
    if not prefer:
        return False
    for preference in prefer.split(","):
        token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if token == "respond-async":
            return True
    return False


async def accept(queue: CallQueue, request: Request, function: str, max_body_bytes: int) -> Response:
    """Store the call of ``function`` that ``request`` makes, then answer 202 with its id."""
    callback = request.headers.get(HEADER)
    if callback is not None:
        callback = check_callback(callback.strip(), queue.settings.callback_hosts)
    body = await read_body(request, max_body_bytes)  # 413, 415 and broken bodies now, not later
    now = time.time()
    call = CallRequest(
        new_id(function, now),
        request.method,
        request.scope["path"],
        request.scope["query_string"].decode("latin-1"),
        stored_headers(request.scope["headers"]),
        body,
        now,
        callback,
    )
    await queue.accept(call)
    url = status_url(call.id)
    headers = {"Location": url, "Preference-Applied": "respond-async", "Retry-After": POLL_AFTER_S}
    return json_response(
        {"id": call.id, "function": function, "status": "pending", "status_url": url}, 202, headers
    )


async def status(queue: CallQueue, request: Request) -> Response:
    return json_response(await queue.describe(request.path_params["call_id"]))


async def result(queue: CallQueue, request: Request) -> Response:
    found = await queue.outcome(request.path_params["call_id"])
    if isinstance(found, dict):  # not finished yet
        return json_response(found, 202, {"Retry-After": POLL_AFTER_S})
    return Response(found.body, found.http_status, headers=dict(found.headers))
