"""Every identity lookup the login, the admin API and the courier use runs on an index.

The statements are not written out here: each store call runs for real on PostgreSQL with a few
thousand identities, its SQL is captured as sent, and PostgreSQL's ``EXPLAIN`` of exactly that
SQL must not contain a sequential scan with ``enable_seqscan`` off. With seq scans off the
planner still picks one when no index can answer (at a cost of 1e10), so the check fails for a
query without an index and passes for one with an index, whatever the table size. The 1M-row
timings are in bench/RESULTS.md (``bench/identities.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress
from sidecar.storage.sql.database import SqlDatabase
from sidecar.storage.sql.sqlite_reads import Read

ROWS = 3000


@pytest.fixture
async def db(postgres_dsn: str) -> AsyncIterator[SqlDatabase]:
    database = SqlDatabase(postgres_dsn)
    await database.migrate()
    batch = []
    for i in range(ROWS):
        email = f"user{i}@example.test"
        batch.append(
            Identity(
                schema_id="default",
                traits={"email": email},
                external_id=f"ext-{i}",
                credentials={"password": Credential(type="password", identifiers=(email,), config={})},
                verifiable_addresses=(VerifiableAddress(value=email),),
                recovery_addresses=(RecoveryAddress(value=email),),
            )
        )
    for start in range(0, ROWS, 500):
        results = await database.identities.create_many(batch[start : start + 500])
        assert not [r for r in results if isinstance(r, Exception)]
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")
    yield database
    await database.close()


async def _plans(db: SqlDatabase, call: Any) -> list[tuple[str, str]]:
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    connector = db._connector
    fetch_raw_pg = connector._fetch_raw_pg

    async def recorded(read: Read, values: Any) -> Any:  # the session check's reads (asyncpg's own)
        captured.append((read.sql, read.parameters(values)))
        return await fetch_raw_pg(read, values)

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    connector._fetch_raw_pg = recorded  # type: ignore[method-assign]
    try:
        await call()
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
        del connector._fetch_raw_pg
    assert captured, "the call ran no SELECT"
    plans = []
    async with db.engine.connect() as conn:
        await conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in captured:
            rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            plans.append((statement, "\n".join(r[0] for r in rows)))
    return plans


async def _some_id(db: SqlDatabase) -> uuid.UUID:
    page = await db.identities.list(page_size=1)
    return page[0].id


@pytest.mark.parametrize(
    "lookup",
    [
        "get",
        "get_for_session",
        "find_by_identifier",
        "get_by_external_id",
        "find_verifiable_address",
        "find_recovery_address",
        "list_first_page",
        "list_next_page",
        "list_by_credentials_identifier",
    ],
)
async def test_every_identity_lookup_uses_an_index(db: SqlDatabase, lookup: str) -> None:
    store = db.identities
    some = await _some_id(db)
    calls = {
        "get": lambda: store.get(some),
        "get_for_session": lambda: store.get_for_session(some, ("totp", "lookup_secret", "webauthn")),
        "find_by_identifier": lambda: store.find_by_identifier("password", "user1234@example.test"),
        "get_by_external_id": lambda: store.get_by_external_id("ext-77"),
        "find_verifiable_address": lambda: store.find_verifiable_address("email", "user5@example.test"),
        "find_recovery_address": lambda: store.find_recovery_address("email", "user6@example.test"),
        "list_first_page": lambda: store.list(page_size=250),
        "list_next_page": lambda: store.list(page_size=250, after=some),  # keyset: id > after
        "list_by_credentials_identifier": lambda: store.list(
            page_size=250, credentials_identifier="user42@example.test"
        ),
    }
    for statement, plan in await _plans(db, calls[lookup]):
        assert "Seq Scan" not in plan, f"{lookup} scans a table:\n{statement}\n{plan}"
