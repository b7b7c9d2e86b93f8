"""Database data sources without a server: URLs, SQL, credentials, redaction, which driver reads.

The reads against a real PostgreSQL server are in test_databases_postgres.py. No MySQL server
runs here: connectorx, the library MySQL is read with, stands in as a stub module only in the
test that checks what it is called with.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from fnserve.runtime.databases import (
    CONNECT_TIMEOUT_S,
    DatabaseSource,
    DataSourceError,
    check_readable,
    credentials,
    is_database_url,
    read_table,
)
from fnserve.runtime.redact import redact_url
from fnserve.runtime.training import TrainContext

PASSWORD = "hunter2-Sekr3t"


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections (and says nothing)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield int(server.getsockname()[1])


# --- URLs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "table", "query"),
    [
        ("postgresql://db:5432/shop?table=bookings", "postgresql", ("bookings",), None),
        ("postgres://db/shop?table=sales.bookings", "postgresql", ("sales", "bookings"), None),
        ("POSTGRESQL://db/shop?sslmode=require&table=Bookings", "postgresql", ("Bookings",), None),
        ("mysql://trainer@db:3306/shop?table=shop.bookings", "mysql", ("shop", "bookings"), None),
        ("postgresql://db/shop?query=SELECT%20a%2Bb%20FROM%20t;", "postgresql", None, "SELECT a+b FROM t"),
        (
            "postgresql://db/shop?query=SELECT a+b FROM t WHERE x = 'a&b'",
            "postgresql",
            None,
            "SELECT a+b FROM t WHERE x = 'a",
        ),
        ("mysql://u@db/shop?query=SELECT * FROM t", "mysql", None, "SELECT * FROM t"),
    ],
)
def test_a_url_names_a_table_or_a_query(
    url: str, kind: str, table: tuple[str, ...] | None, query: str | None
) -> None:
    source = DatabaseSource.parse(url)
    assert (source.kind, source.table, source.query) == (kind, table, query)
    assert is_database_url(url)


def test_other_urls_are_not_databases() -> None:
    for url in (
        "s3://bucket/bookings.parquet",
        "file:///data",
        "/data/x.parquet",
        "",
        None,
        "sqlite:///x.db",
    ):
        assert not is_database_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db/shop", "name what to read, a table"),
        ("postgresql://db/shop?sslmode=require", "name what to read, a table"),
        ("postgresql://db/shop?table=a&query=SELECT%201", "one of the two"),
        ("postgresql://db/shop?table=a&table=b", "table= is given twice"),
        ("postgresql://db/shop?query=%20;%20", "query= is empty"),
        ("postgresql://db/shop?table=a.b.c", "table= must be NAME or SCHEMA.NAME, got 'a.b.c'"),
        ("postgresql://db/shop?table=.b", "table= must be NAME or SCHEMA.NAME"),
        ("postgresql://db/shop?table=", "table= must be NAME or SCHEMA.NAME"),
        ("postgresql://db/shop?query=SELECT * FROM t WHERE c = '#1'", "write it as %23"),
        ("sqlite:///x.db?table=t", "not a database URL"),
    ],
)
def test_a_malformed_url_is_refused_saying_what_is_expected(url: str, message: str) -> None:
    with_password = url.replace("://db", f"://trainer:{PASSWORD}@db")
    with pytest.raises(DataSourceError, match=message) as caught:
        DatabaseSource.parse(with_password)
    assert PASSWORD not in caught.value.message
    if "://db" in url:
        assert caught.value.message.startswith(url.split("://")[0] + "://***@db")


def test_shown_urls_have_no_credentials() -> None:
    source = DatabaseSource.parse(f"postgresql://trainer:{PASSWORD}@db:5432/shop?table=bookings")
    assert source.shown == "postgresql://***@db:5432/shop?table=bookings" == redact_url(source.url)
    in_query = DatabaseSource.parse(f"postgresql://db/shop?user=trainer&password={PASSWORD}&table=t")
    assert in_query.shown == "postgresql://db/shop?user=trainer&password=***&table=t"
    assert in_query.has_password and source.has_password
    assert not DatabaseSource.parse("mysql://trainer@db/shop?table=t").has_password


def test_only_a_loopback_host_is_on_loopback() -> None:
    for host, loopback in (
        ("127.0.0.1", True),
        ("localhost", True),
        ("[::1]", True),
        ("db.internal", False),
        ("localhost.example", False),
    ):
        assert DatabaseSource.parse(f"postgresql://{host}:5432/shop?table=t").on_loopback is loopback


# --- SQL: names are quoted, never pasted ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "sql"),
    [
        ("postgresql://db/shop?table=bookings", 'SELECT * FROM "bookings"'),
        ("postgresql://db/shop?table=Sales.Bookings", 'SELECT * FROM "Sales"."Bookings"'),
        (
            'postgresql://db/shop?table=x"; DROP TABLE bookings; --',
            'SELECT * FROM "x""; DROP TABLE bookings; --"',
        ),
        ("postgresql://db/shop?table=it's", """SELECT * FROM "it's\""""),
        ("mysql://u@db/shop?table=bookings", "SELECT * FROM `bookings`"),
        (
            "mysql://u@db/shop?table=x`; DROP TABLE bookings; --",
            "SELECT * FROM `x``; DROP TABLE bookings; --`",
        ),
        ("postgresql://db/shop?query=SELECT 1", "SELECT 1"),
    ],
)
def test_table_names_are_quoted_as_identifiers(url: str, sql: str) -> None:
    assert DatabaseSource.parse(url).select() == sql


def test_columns_are_quoted_and_a_limit_wraps_a_query() -> None:
    table = DatabaseSource.parse("postgresql://db/shop?table=bookings")
    assert table.select(["hotel_id", 'a"b']) == 'SELECT "hotel_id", "a""b" FROM "bookings"'
    assert table.select(limit=1) == 'SELECT * FROM "bookings" LIMIT 1'
    query = DatabaseSource.parse("postgresql://db/shop?query=SELECT a FROM t;")
    assert query.select(limit=1) == "SELECT * FROM (SELECT a FROM t) AS fnserve_source LIMIT 1"
    with pytest.raises(DataSourceError, match="NUL"):
        table.select(["a\0b"])


# --- credentials ------------------------------------------------------------------------------------


def test_postgresql_connection_takes_credentials_from_the_environment_where_the_url_has_none() -> None:
    env = {"PGUSER": "trainer", "PGPASSWORD": "p@ss word", "MYSQL_PWD": "other"}
    bare = DatabaseSource.parse("postgresql://db:5432/shop?sslmode=require&table=t")
    assert bare.connection(env) == (
        f"postgresql://db:5432/shop?sslmode=require&connect_timeout={CONNECT_TIMEOUT_S}"
        "&user=trainer&password=p%40ss%20word"
    )
    assert (
        bare.connection({})
        == f"postgresql://db:5432/shop?sslmode=require&connect_timeout={CONNECT_TIMEOUT_S}"
    )
    given = DatabaseSource.parse(f"postgres://reader:{PASSWORD}@db/shop?connect_timeout=3&query=SELECT 1")
    assert given.connection(env) == f"postgres://reader:{PASSWORD}@db/shop?connect_timeout=3"  # the URL's win
    assert bare.secrets(env) == {"p@ss word"} and given.secrets({}) == {PASSWORD}


def test_mysql_connection_takes_mysql_pwd() -> None:
    source = DatabaseSource.parse("mysql://trainer@db:3306/shop?table=bookings")
    assert (
        source.connection({"MYSQL_PWD": "p@ss", "PGPASSWORD": "x"}) == "mysql://trainer:p%40ss@db:3306/shop"
    )
    assert source.connection({}) == "mysql://trainer@db:3306/shop"
    given = DatabaseSource.parse(f"mysql://trainer:{PASSWORD}@db/shop?table=t")
    assert given.connection({"MYSQL_PWD": "other"}) == f"mysql://trainer:{PASSWORD}@db/shop"


def test_credentials_are_the_variables_of_the_urls_database() -> None:
    env = {"PGUSER": "u", "PGPASSWORD": "pw", "MYSQL_PWD": "my", "PGHOST": "elsewhere", "HOME": "/root"}
    assert credentials("postgresql://db/shop?table=t", env) == {"PGUSER": "u", "PGPASSWORD": "pw"}
    assert credentials("mysql://u@db/shop?table=t", env) == {"MYSQL_PWD": "my"}
    assert credentials("postgres://db/shop?table=t", {"PGPASSWORD": ""}) == {}


def test_train_context_keeps_the_database_credentials_out_of_sight(tmp_path: Path) -> None:
    env = {
        "FNSERVE_PROJECT": str(tmp_path),
        "FNSERVE_DATA": "postgresql://trainer@db/shop?table=bookings",
        "PGPASSWORD": PASSWORD,
        "AWS_SECRET_ACCESS_KEY": "not-for-databases",
    }
    ctx = TrainContext.from_env(env, default_function="recs")
    assert ctx.database_credentials == {"PGPASSWORD": PASSWORD}
    assert PASSWORD not in repr(ctx)
    parquet = TrainContext.from_env(
        {**env, "FNSERVE_DATA": "file:///data/x.parquet"}, default_function="recs"
    )
    assert parquet.database_credentials == {}


# --- which driver reads, and its errors -------------------------------------------------------------


def test_an_unreachable_postgresql_server_is_named_without_its_password(closed_port: int) -> None:
    url = f"postgresql://trainer:{PASSWORD}@127.0.0.1:{closed_port}/shop?table=bookings"
    for read in (lambda: read_table(url, {}), lambda: check_readable(url, {"PGPASSWORD": "env-Password-1"})):
        with pytest.raises(DataSourceError) as caught:
            read()
        message = caught.value.message
        assert message.startswith(
            f"postgresql://***@127.0.0.1:{closed_port}/shop?table=bookings: cannot reach"
        )
        assert "Connection refused" in message and PASSWORD not in message and "\n" not in message


def test_the_train_context_reads_a_database_url_through_the_driver(tmp_path: Path, closed_port: int) -> None:
    url = f"postgresql://trainer@127.0.0.1:{closed_port}/shop?table=bookings"
    env = {"FNSERVE_PROJECT": str(tmp_path), "FNSERVE_DATA": url, "PGPASSWORD": PASSWORD}
    with pytest.raises(DataSourceError, match="cannot reach the server"):
        TrainContext.from_env(env, default_function="recs").read_table(["hotel_id"])


@pytest.mark.skipif(importlib.util.find_spec("connectorx") is not None, reason="connectorx is installed here")
def test_mysql_without_connectorx_says_how_to_get_it() -> None:
    with pytest.raises(DataSourceError) as caught:
        read_table(f"mysql://trainer:{PASSWORD}@db.invalid/shop?table=bookings", {})
    message = caught.value.message
    assert message == (
        "mysql://***@db.invalid/shop?table=bookings: reading mysql needs connectorx: pip install "
        "'fnserve[mysql]' (for training in the function's image, add it to the function's requirements.txt)"
    )


class _Connectorx(types.ModuleType):
    """Stands in for connectorx (no MySQL server runs here): records its calls, answers ``result``."""

    def __init__(self, result: pa.Table | Exception):
        super().__init__("connectorx")
        self.result, self.calls = result, []  # type: list[tuple[str, str, str]]

    def read_sql(self, conn: str, query: str, *, return_type: str) -> Any:
        self.calls.append((conn, query, return_type))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_mysql_is_read_through_connectorx_with_quoted_names_and_mysql_pwd(
    monkeypatch: pytest.MonkeyPatch, listening_port: int
) -> None:
    stub = _Connectorx(pa.table({"hotel_id": pa.array([7, 8], pa.int64()), "price": [1.5, 2.5]}))
    monkeypatch.setitem(sys.modules, "connectorx", stub)
    url = f"mysql://trainer@127.0.0.1:{listening_port}/shop?table=bookings"
    table = read_table(url, {"MYSQL_PWD": PASSWORD, "PGPASSWORD": "not-this"}, ["hotel_id"])
    assert table.to_pydict() == {"hotel_id": [7, 8], "price": [1.5, 2.5]}  # as the stub answered
    assert stub.calls == [
        (
            f"mysql://trainer:{PASSWORD}@127.0.0.1:{listening_port}/shop",
            "SELECT `hotel_id` FROM `bookings`",
            "arrow",
        )
    ]


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (
            RuntimeError(
                "timed out waiting for connection: MySqlError { ERROR 1045 (28000): Access denied for user "
                "'trainer'@'10.0.0.2' (using password: YES) }"
            ),
            "authentication failed: timed out waiting for connection: MySqlError { ERROR 1045 (28000): "
            "Access denied for user 'trainer'@'10.0.0.2' (using password: YES) } "
            "(give the password in MYSQL_PWD)",
        ),
        (
            RuntimeError("MySqlError { ERROR 1146 (42S02): Table 'shop.bookings' doesn't exist }"),
            "no table `bookings` (MySqlError { ERROR 1146 (42S02): Table 'shop.bookings' doesn't exist })",
        ),
        (RuntimeError(f"bad url mysql://trainer:{PASSWORD}@db"), "bad url mysql://***@db"),
    ],
)
def test_mysql_errors_are_one_line_naming_the_problem(
    monkeypatch: pytest.MonkeyPatch, listening_port: int, error: Exception, problem: str
) -> None:
    monkeypatch.setitem(sys.modules, "connectorx", _Connectorx(error))
    url = f"mysql://trainer@127.0.0.1:{listening_port}/shop?table=bookings"
    with pytest.raises(DataSourceError) as caught:
        read_table(url, {"MYSQL_PWD": PASSWORD})
    assert caught.value.message == f"{DatabaseSource.parse(url).shown}: {problem}"


def test_an_unreachable_mysql_server_fails_at_once(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    stub = _Connectorx(pa.table({"a": [1]}))
    monkeypatch.setitem(sys.modules, "connectorx", stub)
    with pytest.raises(DataSourceError, match=f"cannot reach the server at 127.0.0.1:{closed_port}"):
        check_readable(f"mysql://trainer:{PASSWORD}@127.0.0.1:{closed_port}/shop?table=bookings", {})
    assert stub.calls == []  # connectorx would have waited 30 s in its pool


def test_an_empty_result_is_an_error(monkeypatch: pytest.MonkeyPatch, listening_port: int) -> None:
    monkeypatch.setitem(sys.modules, "connectorx", _Connectorx(pa.table({"a": pa.array([], pa.int64())})))
    url = f"mysql://trainer@127.0.0.1:{listening_port}/shop?query=SELECT a FROM t WHERE false"
    with pytest.raises(DataSourceError, match="the query has no rows to train on"):
        read_table(url, {})
    with pytest.raises(DataSourceError, match=r"the query's result has no column 'b' \(it has a\)"):
        read_table(url, {}, ["a", "b"])
