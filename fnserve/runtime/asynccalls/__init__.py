"""Asynchronous invocations: ``Prefer: respond-async``, a durable queue in the store, no broker.

A POST to a prediction path that prefers ``respond-async`` is stored and answered 202 with an id;
the call is later replayed through the same route a synchronous request takes, and its outcome
read at ``GET /async/{id}`` or POSTed to its ``Callback-URL``. Runs are at least once, outcomes
exactly once (leases and an exclusive create: :mod:`.queue`). The parts:

* :mod:`.settings` — ``[async]`` of ``fn.toml``, ``FNSERVE_ASYNC_*``;
* :mod:`.records` — ids and what the queue keeps (request, lease, outcome), as plain data;
* :mod:`.storage` — those files through fsspec: durable writes and exclusive creates;
* :mod:`.queue` — accept, claim, run, record; :mod:`.known` — what one process knows of them;
  :mod:`.recovery` — the scans: what others left, expiry; :mod:`.pacing` — how fast;
* :mod:`.callbacks` — delivery with retries; :mod:`.status` — the status document;
  :mod:`.lookup` — where a call's status is found;
* :mod:`.web` — the HTTP side; :mod:`.replay` — a stored call through an ASGI app;
* :mod:`.serve` — the runtime's part (``fn serve``); the gateway's is
  :mod:`fnserve.gateway.async_calls`.

Nothing is imported here: :mod:`fnserve.runtime.settings` reads :mod:`.settings` alone.
"""
