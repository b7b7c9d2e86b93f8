"""``fnserve.Client``: call functions served by ``fn serve``, a container or the gateway.

    >>> from fnserve import Client
    >>> with Client("http://127.0.0.1:8080") as client:              # doctest: +SKIP
    ...     client.predict("recs", user_country="NL", hotel_id=4711)  # GET with query parameters
    ...     client.predict_batch("recs", [{"user_country": "NL", ...}, ...])
    ...     client.predict_bytes("tagger", open("photo.jpg", "rb").read(), "image/jpeg")

Answers 429/503 are retried after the server's ``Retry-After`` (bounded); other errors raise
:class:`ClientError` carrying the status and the server's message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

RETRY_STATUSES = (429, 503)


class ClientError(Exception):
    """The server answered with an error (``status``), or could not be reached (status 0)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class Client:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        timeout_s: float = 60.0,
        retries: int = 3,
        headers: Mapping[str, str] | None = None,
    ):
        self.url = url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=dict(headers or {}))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def predict(self, function: str, **inputs: Any) -> Any:
        """One prediction from scalar inputs, sent as query parameters."""
        params = {k: _query_value(v) for k, v in inputs.items()}
        return self._request("GET", f"/function/{function}", params=params)["predictions"][0]

    def predict_batch(self, function: str, instances: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One prediction per instance, in order, in one request."""
        body = orjson.dumps({"instances": list(instances)}, option=orjson.OPT_SERIALIZE_NUMPY)
        answer = self._request(
            "POST", f"/function/{function}", content=body, headers={"content-type": "application/json"}
        )
        return list(answer["predictions"])

    def predict_bytes(self, function: str, data: bytes, content_type: str, **params: Any) -> Any:
        """One prediction from a raw body (an image), other inputs as query parameters."""
        answer = self._request(
            "POST",
            f"/function/{function}",
            content=data,
            headers={"content-type": content_type},
            params={k: _query_value(v) for k, v in params.items()},
        )
        return answer["predictions"][0]

    def functions(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/functions")["functions"])

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ClientError(f"cannot reach {self.url}: {exc}") from None
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(_retry_after(response, attempt))
                continue
            return _decode(response)
        raise AssertionError("unreachable")


def _retry_after(response: httpx.Response, attempt: int) -> float:
    header = response.headers.get("retry-after", "")
    wait = float(header) if header.replace(".", "", 1).isdigit() else 0.2 * 2**attempt
    return min(wait, 30.0)


def _decode(response: httpx.Response) -> Any:
    try:
        body = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        body = {"error": response.text[:200]}
    if response.status_code >= 400:
        message = body.get("error") if isinstance(body, dict) else None
        raise ClientError(
            f"{response.status_code}: {message or response.reason_phrase}", response.status_code
        )
    return body


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
