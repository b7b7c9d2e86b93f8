"""Call functions served by ``fn serve``, a container or the gateway (the paths are the same).

    >>> from fnserve import Client
    >>> with Client("http://127.0.0.1:8080") as client:                       # doctest: +SKIP
    ...     client.predict("recs", user_country="NL", hotel_id=4711, ...)   # GET with query parameters
    ...     client.predict_batch("recs", rows)                     # one POST {"instances": rows}
    ...     client.predict_many("recs", rows, batch_size=256, concurrency=8)  # chunks, in parallel
    ...     client.predict_bytes("tagger", open("photo.jpg", "rb").read(), "image/jpeg")
    ...     call_id = client.submit("recs", rows)    # asynchronous: the id once the call is stored
    ...     client.result(call_id, timeout_s=60)     # its predictions, once it has run

:class:`Client` blocks (threads for :meth:`Client.predict_many`); :class:`AsyncClient` has the same
methods as coroutines. Answers 429/503 are retried after the server's ``Retry-After`` (bounded);
other errors raise :class:`ClientError` carrying the status and the server's message.
"""

from fnserve.client.aio import AsyncClient
from fnserve.client.core import ClientError, RetryPolicy
from fnserve.client.sync import Client

__all__ = ["AsyncClient", "Client", "ClientError", "RetryPolicy"]
