"""Training data from a database: a table or a query at a PostgreSQL or MySQL URL, read as Arrow.

A database URL names its server and database as its client library does, and what to read as
one query parameter, ``table`` or ``query`` (percent-encoded: ``%20`` or a space, ``%26`` for
``&``, ``%23`` for ``#``; a ``+`` stays a plus)::

    postgresql://db.example:5432/analytics?table=bookings
    postgresql://db.example/analytics?table=sales.bookings&sslmode=require     # schema.table
    postgresql://db.example/analytics?query=SELECT%20*%20FROM%20bookings%20WHERE%20year%20=%202025
    mysql://trainer@db.example:3306/shop?table=bookings

A table name is taken exactly as written (``schema.table`` or ``table``; case-sensitive, any
characters) and quoted as an identifier, never pasted into SQL; other query parameters go to the
client library (``sslmode``, ``connect_timeout``, ...). PostgreSQL is read through the Arrow
project's ADBC driver (``adbc-driver-postgresql``, on libpq), MySQL through ``connectorx``
(``pip install 'fnserve[mysql]'``): rows arrive as Arrow columns, no Python objects per value.

Credentials: a password may be written in the URL, but the way meant for them is the environment,
in the variables each database's own client reads: ``PGUSER`` and ``PGPASSWORD`` for PostgreSQL
(libpq also finds ``~/.pgpass`` / ``PGPASSFILE``), ``MYSQL_PWD`` for MySQL (the user in the URL).
Those variables (:data:`CREDENTIAL_VARIABLES`) are what a training container is given and what
a Kubernetes training Secret holds. Whatever shows a source shows :attr:`DatabaseSource.shown`,
the URL without its credentials, and every error names the source so:

>>> source = DatabaseSource.parse("postgresql://trainer:s3cret@db:5432/analytics?table=sales.bookings")
>>> source.kind, source.shown
('postgresql', 'postgresql://***@db:5432/analytics?table=sales.bookings')
>>> source.select(["hotel_id", "booked"])
'SELECT "hotel_id", "booked" FROM "sales"."bookings"'
>>> DatabaseSource.parse('postgresql://db/analytics?table=x"; DROP TABLE bookings; --').select()
'SELECT * FROM "x""; DROP TABLE bookings; --"'
"""

from __future__ import annotations

import importlib
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from fnserve.runtime.errors import FnError
from fnserve.runtime.redact import redact_text, redact_url

SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql"}
# The environment variables that carry a database's credentials when its URL does not: the ones
# its own client reads. Passed to training containers; the keys of a Kubernetes training Secret.
CREDENTIAL_VARIABLES = {"postgresql": ("PGUSER", "PGPASSWORD"), "mysql": ("MYSQL_PWD",)}
_PASSWORD_VARIABLE = {"postgresql": "PGPASSWORD", "mysql": "MYSQL_PWD"}
# The client library each database is read with: its module, its distribution, how to install it.
DRIVERS = {
    "postgresql": ("adbc_driver_postgresql.dbapi", "adbc-driver-postgresql", "adbc-driver-postgresql"),
    "mysql": ("connectorx", "connectorx", "fnserve[mysql]"),
}
CONNECT_TIMEOUT_S = 10  # a server that does not answer fails the read this soon, not after TCP's minutes
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
_OWN_PARAMETERS = ("table", "query")


class DataSourceError(FnError):
    """Training data cannot be read: the message names the source (without credentials) and why."""

    status = 400


def is_database_url(url: str | None) -> bool:
    """Whether ``url`` names a database (``postgresql://``, ``postgres://``, ``mysql://``).

    >>> is_database_url("postgres://db/shop?table=t"), is_database_url("s3://bucket/bookings.parquet")
    (True, False)
    """
    return bool(url) and urlsplit(str(url)).scheme.lower() in SCHEMES


def credentials(url: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The credential variables of ``url``'s database that ``environ`` sets: what a training
    process elsewhere (a container) needs to be given.

    >>> credentials("postgresql://db/shop?table=t", {"PGPASSWORD": "pw", "MYSQL_PWD": "x", "HOME": "/"})
    {'PGPASSWORD': 'pw'}
    """
    kind = SCHEMES[urlsplit(url).scheme.lower()]
    return {name: environ[name] for name in CREDENTIAL_VARIABLES[kind] if environ.get(name)}


@dataclass(frozen=True)
class DatabaseSource:
    url: str  # as given: may hold a password, so it is never shown (``shown`` is)
    kind: str  # "postgresql" or "mysql"
    table: tuple[str, ...] | None  # ("schema", "name") or ("name",), as written; None for a query
    query: str | None  # the SQL of a query source

    @classmethod
    def parse(cls, url: str) -> DatabaseSource:
        """The source a database URL names; a malformed one is refused naming what is expected."""
        parts = urlsplit(url)
        kind = SCHEMES.get(parts.scheme.lower())
        shown = redact_url(url)
        if kind is None:
            raise DataSourceError(f"{shown}: not a database URL (postgresql://, postgres:// or mysql://)")
        if parts.fragment:
            raise DataSourceError(f"{shown}: a '#' starts a URL fragment; write it as %23 in a query")
        own: dict[str, str] = {}
        for name, value in _parameters(parts.query):
            if name in _OWN_PARAMETERS:
                if name in own:
                    raise DataSourceError(f"{shown}: {name}= is given twice")
                own[name] = unquote(value)
        if len(own) != 1:
            raise DataSourceError(
                f"{shown}: name what to read, a table (?table=NAME or ?table=SCHEMA.NAME) or a query "
                "(?query=SELECT...), one of the two"
            )
        if "query" in own:
            query = own["query"].strip().rstrip(";").strip()
            if not query:
                raise DataSourceError(f"{shown}: query= is empty")
            return cls(url, kind, None, query)
        names = tuple(own["table"].split("."))
        if not 1 <= len(names) <= 2 or not all(names) or "\0" in own["table"]:
            raise DataSourceError(
                f"{shown}: table= must be NAME or SCHEMA.NAME, got {own['table']!r} "
                "(for other names, read them with query=)"
            )
        return cls(url, kind, names, None)

    @property
    def shown(self) -> str:
        """The URL as it may be shown: its userinfo and secret parameters masked."""
        return redact_url(self.url)

    @property
    def what(self) -> str:
        """``table "sales"."bookings"`` or ``the query``: what an error says was read."""
        return f"table {self._name()}" if self.table else "the query"

    @property
    def has_password(self) -> bool:
        """Whether the URL itself carries a password (in its userinfo or a ``password=`` parameter)."""
        parts = urlsplit(self.url)
        return parts.password is not None or any(name == "password" for name, _ in _parameters(parts.query))

    @property
    def on_loopback(self) -> bool:
        """Whether the server is this machine's loopback (a container or a pod sees itself there)."""
        host = urlsplit(self.url).hostname or ""
        return host in ("localhost", "::1") or host.startswith("127.")

    def select(self, columns: Sequence[str] | None = None, *, limit: int | None = None) -> str:
        """The SQL that reads this source: the table's ``columns`` (all: None), or the query;
        ``limit`` rows at most. Identifiers are quoted, never pasted.

        >>> DatabaseSource.parse("mysql://u@db/shop?table=bookings").select(["id"], limit=1)
        'SELECT `id` FROM `bookings` LIMIT 1'
        >>> DatabaseSource.parse("postgresql://db/shop?query=SELECT%201%20AS%20x;").select(limit=1)
        'SELECT * FROM (SELECT 1 AS x) AS fnserve_source LIMIT 1'
        """
        if self.table is None:
            assert self.query is not None
            sql = self.query if limit is None else f"SELECT * FROM ({self.query}) AS fnserve_source"
        else:
            picked = ", ".join(map(self._quote, columns)) if columns else "*"
            sql = f"SELECT {picked} FROM {self._name()}"
        return sql if limit is None else f"{sql} LIMIT {int(limit)}"

    def connection(self, environ: Mapping[str, str]) -> str:
        """The URL the client library connects with: without ``table``/``query``, with the
        credentials of ``environ`` where the URL has none, and a connect timeout. Never shown.

        >>> source = DatabaseSource.parse("postgresql://db/shop?table=t&sslmode=require")
        >>> source.connection({"PGUSER": "trainer", "PGPASSWORD": "p@ss"})
        'postgresql://db/shop?sslmode=require&connect_timeout=10&user=trainer&password=p%40ss'
        >>> DatabaseSource.parse("mysql://trainer@db/shop?table=t").connection({"MYSQL_PWD": "p@ss"})
        'mysql://trainer:p%40ss@db/shop'
        """
        parts = urlsplit(self.url)
        kept = [(name, value) for name, value in _parameters(parts.query) if name not in _OWN_PARAMETERS]
        netloc = parts.netloc
        if self.kind == "postgresql":
            present = {name for name, _ in kept}
            extra = {"connect_timeout": str(CONNECT_TIMEOUT_S)}
            if parts.username is None and environ.get("PGUSER"):
                extra["user"] = environ["PGUSER"]
            if parts.password is None and environ.get("PGPASSWORD"):
                extra["password"] = environ["PGPASSWORD"]
            kept += [(name, quote(value, safe="")) for name, value in extra.items() if name not in present]
        elif parts.password is None and environ.get("MYSQL_PWD"):
            user = parts.username or ""
            host = netloc.rpartition("@")[2]
            netloc = f"{user}:{quote(environ['MYSQL_PWD'], safe='')}@{host}"
        query = "&".join(f"{name}={value}" if value else name for name, value in kept)
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

    def secrets(self, environ: Mapping[str, str]) -> set[str]:
        """The passwords this read uses (from the URL and ``environ``): what no message may show."""
        found = {environ.get(_PASSWORD_VARIABLE[self.kind], "")}
        parts = urlsplit(self.url)
        if parts.password:
            found |= {parts.password, unquote(parts.password)}
        found |= {unquote(v) for name, v in _parameters(parts.query) if name == "password" and v}
        return {secret for secret in found if secret}

    def _name(self) -> str:
        assert self.table is not None
        return ".".join(map(self._quote, self.table))

    def _quote(self, identifier: str) -> str:
        if "\0" in identifier:
            raise DataSourceError(f"{self.shown}: a name holds a NUL character: {identifier!r}")
        mark = "`" if self.kind == "mysql" else '"'
        return mark + identifier.replace(mark, mark * 2) + mark


def read_table(url: str, environ: Mapping[str, str], columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of the table or query at ``url`` as one Arrow table; ``columns`` picks (and orders)
    columns. Numeric (decimal) columns arrive as float64, other database-specific types as their
    plain Arrow storage (JSON as strings, UUIDs as 16 bytes). An empty result is an error: a
    training run on no rows would publish a model of nothing.

    >>> read_table("postgresql://trainer@db/analytics?table=bookings", {"PGPASSWORD": "..."}, ["hotel_id"])
    ... # doctest: +SKIP
    pyarrow.Table
    hotel_id: int64
    ----
    hotel_id: [[991,12,4004]]
    """
    source = DatabaseSource.parse(url)
    table = _fetch(source, environ, source.select(columns if source.table else None))
    if columns is not None and source.query is not None:
        missing = [name for name in columns if name not in table.column_names]
        if missing:
            raise DataSourceError(
                f"{source.shown}: the query's result has no column {', '.join(map(repr, missing))} "
                f"(it has {', '.join(table.column_names)})"
            )
        table = table.select(list(columns))
    if table.num_rows == 0:
        raise DataSourceError(f"{source.shown}: {source.what} has no rows to train on")
    return table


def check_readable(url: str, environ: Mapping[str, str]) -> None:
    """Read one row of ``url``'s source, so that an unreachable server, a refused password, an
    unknown table or an empty result is an error before training starts, not after."""
    source = DatabaseSource.parse(url)
    if _fetch(source, environ, source.select(limit=1)).num_rows == 0:
        raise DataSourceError(f"{source.shown}: {source.what} has no rows to train on")


# --- the client libraries -----------------------------------------------------------------------------


def _fetch(source: DatabaseSource, environ: Mapping[str, str], sql: str) -> pa.Table:
    module, distribution, install = DRIVERS[source.kind]
    try:
        driver = importlib.import_module(module)
    except ImportError:
        raise DataSourceError(
            f"{source.shown}: reading {source.kind} needs {distribution}: pip install '{install}' "
            "(for training in the function's image, add it to the function's requirements.txt)"
        ) from None
    secrets = source.secrets(environ)
    try:
        if source.kind == "postgresql":
            table = _read_postgresql(driver, source.connection(environ), sql)
        else:
            _check_reachable(source)
            table = _read_mysql(driver, source.connection(environ), sql)
    except DataSourceError:
        raise
    except Exception as exc:  # the driver's own errors: said in a line, credentials masked
        problem = (_postgresql_problem if source.kind == "postgresql" else _mysql_problem)(source, exc)
        raise DataSourceError(f"{source.shown}: {redact_text(problem, secrets)}") from None
    return _plain_types(table)


def _read_postgresql(driver: Any, uri: str, sql: str) -> pa.Table:
    # Not autocommit: the read runs in a transaction that is rolled back when the connection closes.
    with driver.connect(uri) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetch_arrow_table()


def _read_mysql(driver: Any, uri: str, sql: str) -> pa.Table:
    return driver.read_sql(uri, sql, return_type="arrow")


def _check_reachable(source: DatabaseSource) -> None:
    # connectorx waits 30 s in its connection pool for a server that is not there; a TCP connect
    # says so at once.
    parts = urlsplit(source.url)
    host, port = parts.hostname or "localhost", parts.port or _DEFAULT_PORTS[source.kind]
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise DataSourceError(
            f"{source.shown}: cannot reach the server at {host}:{port}: {exc.strerror or exc}"
        ) from None


def _postgresql_problem(source: DatabaseSource, exc: Exception) -> str:
    message = str(exc)
    detail = _detail(message)
    state = getattr(exc, "sqlstate", None) or ""
    if "Failed to connect" in message or state.startswith("08"):
        if "authentication failed" in detail or "no password supplied" in detail:
            return f"{detail} (give the password in PGPASSWORD, or ~/.pgpass)"
        if "does not exist" in detail:  # FATAL: database "x" does not exist
            return detail
        return f"cannot reach the server: {detail}"
    if state == "42P01":  # undefined_table
        if source.table:
            return f"no {source.what} ({detail}; names are taken exactly as written, case included)"
        return f"the query reads a table that does not exist: {detail}"
    if state == "42703" and source.table:  # undefined_column
        return f"{detail} in {source.what}"
    if state == "42601":
        return f"the query is not valid SQL: {detail}"
    if state == "42501":
        return f"permission denied: {detail}"
    return detail


def _mysql_problem(source: DatabaseSource, exc: Exception) -> str:
    detail = _detail(str(exc))
    if "Access denied" in detail or "1045" in detail:
        return f"authentication failed: {detail} (give the password in MYSQL_PWD)"
    if "1146" in detail and source.table:
        return f"no {source.what} ({detail})"
    if "timed out waiting for connection" in detail or "refused" in detail:
        return f"cannot reach the server: {detail}"
    return detail


def _detail(message: str) -> str:
    """The server's own words from a driver's message: what follows ``FATAL:``/``ERROR:`` (else the
    whole first line), one line, whitespace squeezed; the query the driver echoes is left out."""
    first = message.strip().splitlines()[0] if message.strip() else "(no message)"
    for marker in ("FATAL:", "ERROR:"):
        if marker in message:
            first = message.split(marker, 1)[1].strip().splitlines()[0]
            break
    else:
        # ADBC's status and the step: "IO: [libpq] Failed to connect: connection to server ..."
        first = re.sub(r"^[A-Z_]+: (\[\w+\] )?(Failed to connect: )?", "", first)
    return " ".join(first.split()) or "(no message)"


def _plain_types(table: pa.Table) -> pa.Table:
    """Plain Arrow types, as a Parquet file of the same data would have: numeric as float64, other
    extension types (the driver's opaque, JSON, UUID) as their storage; no driver metadata."""
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if isinstance(kind, pa.BaseExtensionType):
            column = pa.chunked_array([chunk.storage for chunk in column.chunks], type=kind.storage_type)
            if getattr(kind, "type_name", None) == "numeric":
                column = pc.cast(column, pa.float64())
        columns.append(column)
        fields.append(pa.field(field.name, column.type, nullable=field.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _parameters(query: str) -> list[tuple[str, str]]:
    """A URL's query parameters as (decoded name, raw value): values are passed on as written."""
    pairs = []
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        pairs.append((unquote(name), value))
    return pairs
