"""The PostgreSQL server of the tests marked ``postgres``, and scratch space on it.

    url = server_url()                 # PostgresUnavailable, saying why, when there is none
    with scratch_schema(url) as db:    # a fresh schema, dropped afterwards
        db.create("bookings", arrow_table)
        db.source(table="bookings")    # 'postgresql://fnserve_test:...@127.0.0.1:55432/fnserve_test?table=s_1a2b.bookings'

``scripts/ensure-postgres`` installs Debian's postgresql, starts a cluster on loopback and writes
its URL (a role with a password, over TCP) to :data:`URL_FILE`; ``FNSERVE_TEST_POSTGRES_URL``
points the tests at another server instead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pyarrow as pa

URL_FILE = Path(__file__).resolve().parents[2] / ".fnserve" / "test-postgres.url"  # ensure-postgres writes it


class PostgresUnavailable(Exception):
    pass


def server_url() -> str:
    """The test server's URL (user and password included), once it answers a query."""
    given = os.environ.get("FNSERVE_TEST_POSTGRES_URL")
    where = "FNSERVE_TEST_POSTGRES_URL" if given else str(URL_FILE)
    url = given or (URL_FILE.read_text().strip() if URL_FILE.is_file() else "")
    if not url:
        raise PostgresUnavailable(f"no {URL_FILE}: scripts/ensure-postgres starts a server and writes it")
    try:
        execute(url, "SELECT 1")
    except Exception as exc:
        raise PostgresUnavailable(
            f"the server in {where} does not answer ({str(exc).splitlines()[0]}): "
            "scripts/ensure-postgres starts it"
        ) from None
    return url


def execute(url: str, *statements: str) -> None:
    import adbc_driver_postgresql.dbapi as postgresql

    with postgresql.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


@dataclass(frozen=True)
class Scratch:
    server: str  # the server's URL, password included
    schema: str  # this scratch space's schema

    def create(self, name: str, table: pa.Table) -> None:
        """A table ``schema.name`` holding ``table``'s rows, its types mapped by the driver."""
        import adbc_driver_postgresql.dbapi as postgresql

        with postgresql.connect(self.server, autocommit=True) as connection, connection.cursor() as cursor:
            cursor.adbc_ingest(name, table, mode="create", db_schema_name=self.schema)

    def source(
        self, *, table: str | None = None, query: str | None = None, password: str | None = None
    ) -> str:
        """A data URL on the server: ``?table=SCHEMA.NAME`` or ``?query=...`` (percent-encoded);
        ``password`` replaces the server's (``""``: none in the URL)."""
        parts = urlsplit(self.server)
        netloc = parts.netloc
        if password is not None:
            user, host = parts.username or "", netloc.rpartition("@")[2]
            netloc = f"{user}:{quote(password, safe='')}@{host}" if password else f"{user}@{host}"
        what = (
            f"table={quote(f'{self.schema}.{table}', safe='.')}" if table else f"query={quote(query or '')}"
        )
        return urlunsplit((parts.scheme, netloc, parts.path, what, ""))

    @property
    def password(self) -> str:
        return urlsplit(self.server).password or ""


@contextlib.contextmanager
def scratch_schema(server: str) -> Iterator[Scratch]:
    schema = f"s_{uuid.uuid4().hex[:12]}"
    execute(server, f'CREATE SCHEMA "{schema}"')
    try:
        yield Scratch(server, schema)
    finally:
        execute(server, f'DROP SCHEMA "{schema}" CASCADE')
