"""The storage builder takes column names only from its allow-list and no f-string SQL is left
under ``signer/storage`` (issue 16, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.storage.sql import Columns, sql

STORAGE = Path(__file__).parents[3] / "signer" / "storage"


def test_columns_and_statement() -> None:
    cols = Columns.of("a.id AS credential_id, state, created_at")
    assert cols.names == ("a.id AS credential_id", "state", "created_at")
    assert str(cols.without("state")) == "a.id AS credential_id, created_at"
    statement = sql("SELECT", cols + Columns(("x",)), "FROM t WHERE id=$1")
    assert statement == "SELECT a.id AS credential_id, state, created_at, x FROM t WHERE id=$1"


@pytest.mark.parametrize(
    "name",
    ["id; DROP TABLE t", "id --", "a.b.c", "Id", "x AS y z", "", "(SELECT 1)", "id,x"],
)
def test_a_name_outside_the_allow_list_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a column name"):
        Columns((name,))


def test_no_suppressed_sql_string_building_in_storage() -> None:
    offenders = [
        f"{path.name}:{n}"
        for path in sorted(STORAGE.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if "S608" in line
    ]
    assert offenders == []
