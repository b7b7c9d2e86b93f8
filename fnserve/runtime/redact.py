"""Credentials never shown: URLs, messages, mappings and log records with their secrets masked.

A store URL may carry credentials (``s3://KEY:SECRET@bucket/...``, ``https://user:pw@host/...``,
a presigned ``?X-Amz-Signature=...``), and so may store options and environment values. Whatever
shows one to a person (an error, a status, a log line, the CLI, an image label) shows it
through here:

    >>> redact_url("https://reader:hunter22@models.example/recs?versionId=3&X-Amz-Signature=ab12")
    'https://***@models.example/recs?versionId=3&X-Amz-Signature=***'
    >>> redact_text("GET s3://AKIA:wJalr@models/recs failed: wJalr rejected", {"wJalr"})
    'GET s3://***@models/recs failed: *** rejected'
    >>> redact_mapping({"key": "AKIA", "client_kwargs": {"endpoint_url": "http://u:pw@minio:9000"}})
    {'key': '***', 'client_kwargs': {'endpoint_url': 'http://***@minio:9000'}}

Structure is masked wherever it appears (userinfo, secret query parameters, ``token=...``
pairs, ``Authorization`` headers); a secret whose value is known (from the settings) is masked
anywhere in a text, since a storage library may quote it without its URL.
:func:`register_secrets` makes a process hide known values in every log record and in
:func:`scrub`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"
# Known values shorter than this are not hunted in free text: a short one would mask ordinary
# words all over a message (structure, such as a URL's userinfo, is masked whatever its length).
MIN_SECRET_CHARS = 4
# An environment holds many variables fnserve did not choose (XDG_SESSION_CLASS=user, ...):
# only longer values there are taken for secrets.
MIN_ENV_SECRET_CHARS = 8

# A name is secret when, with separators dropped, it contains one of these ...
_SECRET_PARTS = (
    "secret",
    "token",
    "password",
    "passwd",
    "credential",
    "signature",
    "session",
    "privatekey",
    "cookie",
    "authorization",
    "apikey",
    "accesskey",
    "accountkey",
    "connectionstring",
)
# ... or one of its words is one of these, or ends in "key" (access_key, AccountKey, X-Api-Key).
_SECRET_WORDS = {"sig", "pwd", "pass", "auth", "sas", "key"}

_SHELL_DIRECTORIES = frozenset({"PWD", "OLDPWD"})

_URL_RE = re.compile(r"(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"'`]+")
# "KEY:SECRET@bucket" without its scheme, as a library quotes a bucket or host name it rejects.
_BARE_USERINFO_RE = re.compile(r"(?<![\w.%+~:/-])[\w.%+~-]+:[^\s@/'\"<>]+@(?=[\w\[])")
_PAIR_RE = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*)=([^\s&,;'\"<>)\]}]+)")
_HEADER_RE = re.compile(
    r"(?i)\b(proxy-authorization|authorization|cookie|x-api-key)(['\"]?\s*[:=]\s*['\"]?)"
    r"((?:bearer|basic|token|aws4-hmac-sha256)\s+)?+(?!<)([^\s'\",}]+)"
)
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter, option or variable of this name holds a secret.

    >>> [n for n in ("key", "AWS_SECRET_ACCESS_KEY", "X-Amz-Credential", "sig", "endpoint_url", "anon")
    ...  if is_secret_name(n)]
    ['key', 'AWS_SECRET_ACCESS_KEY', 'X-Amz-Credential', 'sig']
    """
    lower = _CAMEL_RE.sub("_", name).lower()
    squashed = re.sub(r"[^a-z0-9]", "", lower)
    if any(part in squashed for part in _SECRET_PARTS):
        return True
    return any(word in _SECRET_WORDS or word.endswith("key") for word in re.split(r"[^a-z0-9]+", lower))


def redact_url(url: str) -> str:
    """``url`` with its userinfo and the values of secret query parameters masked.

    >>> redact_url("s3://KEY:SECRET@bucket/store")
    's3://***@bucket/store'
    >>> redact_url("gs://bucket/recs@latest")  # an @ in the path is not userinfo
    'gs://bucket/recs@latest'
    >>> redact_url("memory://store/recs")
    'memory://store/recs'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, host, tail = _split_authority(rest)
    return f"{scheme}://{MASK + '@' if userinfo else ''}{host}{_redact_query(tail)}"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it redacted (and ``KEY:SECRET@host`` without a scheme), secret
    ``name=value`` pairs and ``Authorization`` values masked, and each of the known ``secrets``
    (as is or percent-encoded) masked."""
    text = _URL_RE.sub(lambda m: redact_url(m.group()), text)
    text = _BARE_USERINFO_RE.sub(MASK + "@", text)
    text = _PAIR_RE.sub(lambda m: f"{m[1]}={MASK}" if is_secret_name(m[1]) else m[0], text)
    text = _HEADER_RE.sub(lambda m: f"{m[1]}{m[2]}{m[3] or ''}{MASK}", text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, MASK)
            encoded = quote(secret, safe="")
            if encoded != secret:
                text = text.replace(encoded, MASK)
    return text


def redact_mapping(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """A copy of store options or an environment to show: secret-named values masked, URLs in
    the others redacted, nested mappings and lists alike."""
    return {
        key: MASK if is_secret_name(str(key)) and value not in (None, "") else _redact_value(value)
        for key, value in mapping.items()
    }


def redact_data(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of JSON-like data (Kubernetes objects, a status) with every string in it through
    :func:`redact_text`; keys and structure stay as they are, so the copy still parses.

    >>> redact_data({"env": [{"name": "FNSERVE_STORE", "value": "s3://K:S@models"}]})
    {'env': [{'name': 'FNSERVE_STORE', 'value': 's3://***@models'}]}
    """
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {key: redact_data(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item, secrets) for item in value]
    return value


def secret_values(
    *urls: str, options: Mapping[Any, Any] | None = None, environ: Mapping[str, str] | None = None
) -> frozenset[str]:
    """The known secret values in ``urls`` (passwords, signatures), store ``options`` (values of
    secret-named keys, secrets of URLs in the others) and ``environ``: what a text must not show.

    >>> sorted(secret_values("https://u:pw42@host/?sig=abcd", options={"secret": "s3cr3t"}))
    ['abcd', 'pw42', 's3cr3t']
    """
    found: set[str] = set()
    for url in urls:
        found |= _url_secrets(url)
    for key, value in (options or {}).items():
        found |= _value_secrets(value, secret=is_secret_name(str(key)))
    for key, value in (environ or {}).items():
        if key in _SHELL_DIRECTORIES:
            continue  # "pwd" names a password elsewhere; the shell's PWD is the working directory
        if is_secret_name(key) and len(value) >= MIN_ENV_SECRET_CHARS:
            found.add(value)
        else:
            found |= _value_secrets(value, secret=False)
    return frozenset(s for s in found if len(s) >= MIN_SECRET_CHARS)


# --- this process: the secrets its settings hold, hidden from its logs -----------------------------

_registered: tuple[str, ...] = ()
_registry_lock = threading.Lock()
_log_scrubber_installed = False


def register_secrets(secrets: Iterable[str]) -> None:
    """From now on hide ``secrets`` in this process's log records (every logger, every handler)
    and in :func:`scrub`. The runtime and the CLI call it with their settings' secrets."""
    global _registered, _log_scrubber_installed
    with _registry_lock:
        merged = set(_registered) | {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        _registered = tuple(sorted(merged, key=len, reverse=True))
        if not _log_scrubber_installed:
            _install_log_scrubber()
            _log_scrubber_installed = True


def scrub(text: str) -> str:
    """:func:`redact_text` with every secret this process registered."""
    return redact_text(text, _registered)


def _install_log_scrubber() -> None:
    # A record factory sees every record before any handler does, whichever logger made it and
    # whichever handlers (the CLI's, Hypercorn's, pytest's) are attached later; a filter on one
    # logger or handler would miss the rest.
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub_record(record)
        return record

    logging.setLogRecordFactory(factory)


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        return  # a bad format string: logging reports it itself when the record is handled
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        # Formatted now, once: a traceback quotes exception texts, which may hold a store URL.
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


# --- pieces -------------------------------------------------------------------------------------------


def _split_authority(rest: str) -> tuple[str | None, str, str]:
    """What follows a URL's ``scheme://``, as (userinfo or None, host[:port], path?query#fragment)."""
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        at = authority.rindex("@")
        return authority[:at], authority[at + 1 :], tail
    _, colon, after = authority.rpartition(":")
    if colon and not after.isdigit() and not authority.startswith("[") and "@" in tail:
        # "s3://KEY:abc/def@bucket": a colon that starts no port, so a secret with a raw "/"
        # (AWS secret keys have them) that fsspec would misread; it is hidden all the same.
        at = end + tail.index("@")
        rest_after = rest[at + 1 :]
        host_end = min((i for i in map(rest_after.find, "/?#") if i >= 0), default=len(rest_after))
        return rest[:at], rest_after[:host_end], rest_after[host_end:]
    return None, authority, tail


def _redact_query(tail: str) -> str:
    path, question, rest = tail.partition("?")
    if not question:
        return tail
    query, hash_, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        parts.append(f"{name}={MASK}" if equals and value and is_secret_name(unquote(name)) else part)
    return f"{path}?{'&'.join(parts)}{hash_}{fragment}"


def _url_secrets(url: str) -> set[str]:
    found: set[str] = set()
    _, sep, rest = url.partition("://")
    if not sep:
        return found
    userinfo, _, tail = _split_authority(rest)
    _, colon, password = (userinfo or "").partition(":")
    if colon and password:
        found |= {password, unquote(password)}
    query = tail.partition("?")[2].partition("#")[0]
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        if value and is_secret_name(unquote(name)):
            found |= {value, unquote(value)}
    return found


def _value_secrets(value: Any, *, secret: bool) -> set[str]:
    if isinstance(value, str):
        found = {value} if secret else set()
        for url in _URL_RE.findall(value):
            found |= _url_secrets(url)
        return found
    if isinstance(value, Mapping):
        parts = (_value_secrets(v, secret=secret or is_secret_name(str(k))) for k, v in value.items())
        return set[str]().union(*parts)
    if isinstance(value, (list, tuple)):
        return set[str]().union(*(_value_secrets(v, secret=secret) for v in value))
    return set()


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value
