"""``sidecar.storage.sql.sqlite_reads``: the reader's column processors give what SQLAlchemy's give."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import sqlite

from sidecar.storage.sql.identity_query import select_identities
from sidecar.storage.sql.sqlite_reads import _result_processor
from sidecar.storage.sql.tables import identities, sessions

DIALECT = sqlite.dialect()
COLUMNS = {c.key: c for c in (*select_identities("sqlite").selected_columns, *sessions.c)}


@pytest.mark.parametrize(
    ("column", "raw"),
    [
        pytest.param("created_at", "2026-12-07 05:38:51.525731", id="timestamp"),
        pytest.param("created_at", "2026-12-07 05:38:51", id="timestamp-whole-second"),
        pytest.param("created_at", "2026-12-07 05:38:51.5", id="timestamp-short-fraction"),
        pytest.param("state_changed_at", "2026-12-07", id="date-only"),
        pytest.param("expires_at", "2026-12-07 23:59:59.999999", id="session-expiry"),
        pytest.param("id", "873504a3c31745a4a35e3db3a456f3e9", id="uuid"),
        pytest.param("organization_id", "873504A3C31745A4A35E3DB3A456F3E9", id="uuid-upper"),
        pytest.param("traits", '{"email":"a@example.test","n":1.5,"l":[true,null]}', id="json"),
        pytest.param("traits", ' {"email": "a@example.test"} ', id="json-spaces"),
        pytest.param("metadata_public", "null", id="json-null"),
        pytest.param("metadata_public", "12", id="json-number"),
        pytest.param("metadata_public", '"text"', id="json-string"),
        pytest.param("j_credentials", "[]", id="json-empty-array"),
        pytest.param("j_verifiable", '[{"id":"8","verified":1,"verified_at":null}]', id="json-children"),
    ],
)
def test_values_match_sqlalchemys(column: str, raw: Any) -> None:
    col = COLUMNS[column]
    general = col.type.dialect_impl(DIALECT).result_processor(DIALECT, None)
    fast = _result_processor(col, DIALECT)
    assert fast is not None and general is not None
    expected = general(raw)
    assert fast(raw) == expected
    assert type(fast(raw)) is type(expected)
    if hasattr(expected, "tzinfo"):
        assert fast(raw).tzinfo == expected.tzinfo


@pytest.mark.parametrize(
    ("column", "raw"),
    [
        pytest.param("traits", "{not json", id="json-broken"),
        pytest.param("traits", '{"a": 1} x', id="json-trailing"),
        pytest.param("traits", "", id="json-empty"),
        pytest.param("id", "not-a-uuid", id="uuid-broken"),
    ],
)
def test_bad_values_fail_as_sqlalchemys_do(column: str, raw: Any) -> None:
    col = COLUMNS[column]
    general = col.type.dialect_impl(DIALECT).result_processor(DIALECT, None)
    fast = _result_processor(col, DIALECT)
    assert fast is not None and general is not None
    with pytest.raises(ValueError) as expected:
        general(raw)
    with pytest.raises(type(expected.value)):
        fast(raw)


def test_text_columns_have_no_processor() -> None:
    assert _result_processor(identities.c.schema_id, DIALECT) is None
