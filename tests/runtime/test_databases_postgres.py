"""Training data read from a real PostgreSQL server (scripts/ensure-postgres starts one on loopback):
tables and queries into Arrow columns, credentials from the URL or the environment, and every
failure a one-line error that names the source and never its password."""

from __future__ import annotations

import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from fnserve.runtime.databases import DataSourceError, check_readable, read_table
from fnserve.runtime.training import TrainContext
from tests.support.postgres import Scratch, execute

pytestmark = pytest.mark.postgres

BOOKINGS = pa.table(
    {
        "user_country": pa.array(["NL", "DE", None], pa.string()),
        "day_of_week": pa.array([1, 6, 7], pa.int32()),
        "hotel_price": pa.array([101.5, 88.25, 240.0], pa.float32()),
        "hotel_id": pa.array([991, 12, 4004], pa.int64()),
        "booked": pa.array([True, False, True]),
        "day": pa.array([datetime.date(2025, 1, 1), datetime.date(2025, 7, 1), None]),
    }
)


@pytest.fixture
def bookings(postgres: Scratch) -> Scratch:
    postgres.create("bookings", BOOKINGS)
    return postgres


def test_a_table_reads_into_its_columns_and_types(bookings: Scratch) -> None:
    table = read_table(bookings.source(table="bookings"), {})
    assert table.schema == BOOKINGS.schema
    assert table.to_pydict() == BOOKINGS.to_pydict()
    picked = read_table(bookings.source(table="bookings"), {}, ["hotel_id", "user_country"])
    assert picked.column_names == ["hotel_id", "user_country"] and picked.num_rows == 3


def test_a_query_reads_its_result(bookings: Scratch) -> None:
    query = (
        f'SELECT hotel_id, hotel_price + 1 AS price FROM "{bookings.schema}".bookings WHERE booked ORDER BY 1'
    )
    table = read_table(bookings.source(query=query), {})
    assert table.to_pydict() == {"hotel_id": [991, 4004], "price": [102.5, 241.0]}
    assert read_table(bookings.source(query=query), {}, ["price"]).column_names == ["price"]


def test_numeric_and_driver_specific_types_arrive_as_plain_arrow(postgres: Scratch) -> None:
    query = (
        "SELECT 3.25::numeric(10, 2) AS amount, 'NaN'::numeric AS unknown, "
        "'{\"a\": 1}'::json AS doc, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id"
    )
    table = read_table(postgres.source(query=query), {})
    assert table.schema.types == [pa.float64(), pa.float64(), pa.string(), pa.binary(16)]
    assert table.column("amount").to_pylist() == [3.25] and table.column("doc").to_pylist() == ['{"a": 1}']
    assert not any(field.metadata for field in table.schema)


def test_credentials_come_from_the_environment(bookings: Scratch) -> None:
    url = bookings.source(table="bookings", password="")
    assert read_table(url, {"PGPASSWORD": bookings.password}).num_rows == 3
    anonymous = url.replace(url.split("//")[1].split("@")[0] + "@", "")  # no user either: PGUSER
    user = url.split("//")[1].split("@")[0]
    assert read_table(anonymous, {"PGUSER": user, "PGPASSWORD": bookings.password}).num_rows == 3


def test_a_refused_password_is_said_without_showing_it(bookings: Scratch) -> None:
    wrong = "wrong-Passw0rd-42"
    for url, env in (
        (bookings.source(table="bookings", password=wrong), {}),
        (bookings.source(table="bookings", password=""), {"PGPASSWORD": wrong}),
    ):
        with pytest.raises(DataSourceError) as caught:
            read_table(url, env)
        message = caught.value.message
        assert "password authentication failed for user" in message and "PGPASSWORD" in message
        assert wrong not in message and bookings.password not in message and "\n" not in message
        assert message.startswith("postgresql://***@127.0.0.1:")


def test_an_unknown_table_is_named(postgres: Scratch) -> None:
    with pytest.raises(DataSourceError) as caught:
        read_table(postgres.source(table="nope"), {})
    assert f'no table "{postgres.schema}"."nope"' in caught.value.message
    assert postgres.password not in caught.value.message
    with pytest.raises(DataSourceError, match='the query reads a table that does not exist: relation "nope"'):
        check_readable(postgres.source(query="SELECT * FROM nope"), {})


def test_an_unknown_column_and_bad_sql_are_named(bookings: Scratch) -> None:
    with pytest.raises(
        DataSourceError, match=rf'column "wanted" does not exist in table "{bookings.schema}"'
    ):
        read_table(bookings.source(table="bookings"), {}, ["hotel_id", "wanted"])
    with pytest.raises(DataSourceError, match='the query is not valid SQL: syntax error at or near "SELEC"'):
        read_table(bookings.source(query="SELEC 1"), {})


def test_an_empty_result_is_an_error_before_and_during_training(bookings: Scratch) -> None:
    bookings.create("empty", BOOKINGS.slice(0, 0))
    for read in (check_readable, read_table):
        with pytest.raises(
            DataSourceError, match=rf'table "{bookings.schema}"."empty" has no rows to train on'
        ):
            read(bookings.source(table="empty"), {})
    with pytest.raises(DataSourceError, match="the query has no rows to train on"):
        check_readable(bookings.source(query=f'SELECT * FROM "{bookings.schema}".bookings WHERE false'), {})
    check_readable(bookings.source(table="bookings"), {})  # one row is enough


def test_a_table_name_cannot_inject_sql(bookings: Scratch) -> None:
    # With the scratch schema first on the search path, an injected DROP TABLE bookings would hit.
    search_path = f"&options=-csearch_path%3D{bookings.schema}"
    attack = bookings.source(table='bookings"; DROP TABLE bookings; --') + search_path
    with pytest.raises(DataSourceError, match="no table"):
        read_table(attack, {})
    assert read_table(bookings.source(query="SELECT * FROM bookings") + search_path, {}).num_rows == 3
    assert read_table(bookings.source(table="bookings"), {}).num_rows == 3  # still there
    # A table whose name really has a quote and a semicolon is read like any other.
    odd = 'it\'s "odd"; really'
    bookings.create(odd, BOOKINGS.slice(0, 1))
    assert read_table(bookings.source(table=odd), {}).num_rows == 1


def test_an_unknown_database_is_named(postgres: Scratch) -> None:
    url = postgres.source(table="bookings").replace("/fnserve_test?", "/no_such_db?")
    with pytest.raises(DataSourceError, match='database "no_such_db" does not exist'):
        read_table(url, {})


def test_train_context_reads_the_database(bookings: Scratch, tmp_path: Path) -> None:
    env = {
        "FNSERVE_PROJECT": str(tmp_path),
        "FNSERVE_DATA": bookings.source(table="bookings", password=""),
        "PGPASSWORD": bookings.password,
    }
    ctx = TrainContext.from_env(env, default_function="recs")
    assert ctx.read_table(["hotel_id", "booked"]).to_pydict() == {
        "hotel_id": [991, 12, 4004],
        "booked": [True, False, True],
    }
    execute(bookings.server, f'DROP TABLE "{bookings.schema}".bookings')
    with pytest.raises(DataSourceError, match="no table"):
        ctx.read_table()
