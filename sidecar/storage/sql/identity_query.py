"""Whole identities in one statement: the identity row with its children aggregated as JSON.

An identity spans five tables. Loading them table by table costs a round trip each (and on
SQLite a hop through aiosqlite's worker thread each), which dominated a session check's store
miss (issue 21). Here the credentials (with their identifiers), verifiable and recovery addresses
come back as JSON arrays from correlated subqueries in the same SELECT: ``json_agg`` /
``json_build_object`` on PostgreSQL, ``json_group_array`` / ``json_object`` on SQLite. The
children are ordered here, not in SQL, so both backends return the same order (SQLite before
3.44 has no ORDER BY inside an aggregate, and PostgreSQL would sort text by its collation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress
from sidecar.slotted import builder
from sidecar.storage.sql.tables import (
    JsonText,
    credential_identifiers,
    credentials,
    identities,
    recovery_addresses,
    verifiable_addresses,
)
from sidecar.storage.values import parse_uuid, utc_from_text

Expr = sa.ColumnElement[Any]

_make_credential, _make_identity = builder(Credential), builder(Identity)
_make_verifiable, _make_recovery = builder(VerifiableAddress), builder(RecoveryAddress)


class _Json:
    """The dialect's JSON builders. SQLite stores JSON as text, so JSON-typed values are wrapped
    in ``json()`` there to be embedded as JSON rather than as a string."""

    def __init__(self, dialect: str) -> None:
        if dialect == "postgresql":
            self.array: Callable[[Expr], Expr] = sa.func.json_agg
            self.object_fn: Callable[..., Expr] = sa.func.json_build_object
            self.embed: Callable[[Expr], Expr] = lambda value: value
        else:
            self.array = sa.func.json_group_array
            self.object_fn = sa.func.json_object
            self.embed = sa.func.json

    def object(self, **fields: Expr) -> Expr:
        # Keys inline: PostgreSQL cannot infer a type for a bound key of json_build_object(VARIADIC "any").
        args: list[Expr] = []
        for key, value in fields.items():
            args += [sa.literal_column(f"'{key}'"), value]
        return self.object_fn(*args)


def _of_types(column: Expr, types: Sequence[str]) -> Expr:
    """``column`` is one of ``types``, as ``(column || '') IN ('a', 'b')``: the types inline (they
    are code's names, never input), and the column wrapped so that SQLite finds the rows by
    ``identity_id`` alone and filters them: one index probe, where ``type = ? OR ...`` made one
    per type (36k instructions more per load of an identity without credentials, issue 15)."""
    if not types:
        return sa.false()
    for name in types:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a credential type: {name!r}")
    return column.op("||")(sa.literal_column("''")).in_([sa.literal_column(f"'{name}'") for name in types])


def _children(json: _Json, credential_types: Sequence[str] | None = None) -> dict[str, Expr]:
    identifiers = (
        sa.select(json.array(credential_identifiers.c.identifier))
        .where(credential_identifiers.c.credential_id == credentials.c.id)
        .correlate(credentials)
        .scalar_subquery()
    )
    c = credentials.c
    creds = (
        sa.select(
            json.array(
                json.object(
                    id=c.id,
                    type=c.type,
                    config=json.embed(c.config),
                    version=c.version,
                    created_at=c.created_at,
                    updated_at=c.updated_at,
                    identifiers=json.embed(identifiers),
                )
            )
        )
        .where(
            c.identity_id == identities.c.id,
            *([] if credential_types is None else [_of_types(c.type, credential_types)]),
        )
        .correlate(identities)
        .scalar_subquery()
    )
    v = verifiable_addresses.c
    verifiable = (
        sa.select(
            json.array(
                json.object(
                    id=v.id,
                    via=v.via,
                    value=v.value,
                    verified=v.verified,
                    status=v.status,
                    verified_at=v.verified_at,
                    created_at=v.created_at,
                    updated_at=v.updated_at,
                )
            )
        )
        .where(v.identity_id == identities.c.id)
        .correlate(identities)
        .scalar_subquery()
    )
    r = recovery_addresses.c
    recovery = (
        sa.select(
            json.array(
                json.object(
                    id=r.id, via=r.via, value=r.value, created_at=r.created_at, updated_at=r.updated_at
                )
            )
        )
        .where(r.identity_id == identities.c.id)
        .correlate(identities)
        .scalar_subquery()
    )
    return {"j_credentials": creds, "j_verifiable": verifiable, "j_recovery": recovery}


def _as_text(expr: Expr) -> Expr:
    return sa.type_coerce(sa.cast(expr, sa.Text), JsonText)


def select_identities(
    dialect: str,
    *extra: Expr,
    credential_types: Sequence[str] | None = None,
    admin: bool = True,
    json_text: bool = False,
) -> sa.Select[Any]:
    """``SELECT identities.*, <children as JSON>, *extra FROM identities``; add WHERE, JOIN, LIMIT.

    ``credential_types``: only the credentials of these types (all when None); ``admin=False``:
    ``metadata_admin`` is not read (NULL); ``json_text``: every JSON value is selected as its
    text and decoded from it (``JsonText``), so that asyncpg's rows are plain values too."""
    children = _children(_Json(dialect), credential_types)
    as_json = _as_text if json_text else lambda expr: sa.type_coerce(expr, sa.JSON)
    columns = [as_json(expr).label(name) for name, expr in children.items()]
    table: list[Any] = []
    for c in identities.c:
        if c.name == "metadata_admin" and not admin:
            table.append(sa.type_coerce(sa.null(), JsonText if json_text else c.type).label(c.name))
        elif json_text and isinstance(c.type, sa.JSON):
            table.append(_as_text(c).label(c.name))
        else:
            table.append(c)
    return sa.select(*table, *columns, *extra)


# PostgreSQL's JSON carries an offset; SQLite's text timestamps are UTC without one.
_moment = utc_from_text


def _maybe_moment(value: str | None) -> datetime | None:
    return None if value is None else _moment(value)


def _credential(item: Mapping[str, Any]) -> Credential:
    return _make_credential(
        id=parse_uuid(item["id"]),
        type=item["type"],
        identifiers=tuple(sorted(item["identifiers"] or ())),
        config=item["config"],
        version=int(item["version"]),
        created_at=_moment(item["created_at"]),
        updated_at=_moment(item["updated_at"]),
    )


def _verifiable(item: Mapping[str, Any]) -> VerifiableAddress:
    return _make_verifiable(
        id=parse_uuid(item["id"]),
        via=item["via"],
        value=item["value"],
        verified=bool(item["verified"]),  # SQLite: 0/1
        status=item["status"],
        verified_at=_maybe_moment(item["verified_at"]),
        created_at=_moment(item["created_at"]),
        updated_at=_moment(item["updated_at"]),
    )


def _recovery(item: Mapping[str, Any]) -> RecoveryAddress:
    return _make_recovery(
        id=parse_uuid(item["id"]),
        via=item["via"],
        value=item["value"],
        created_at=_moment(item["created_at"]),
        updated_at=_moment(item["updated_at"]),
    )


def _in_order(addresses: Sequence[Any]) -> tuple[Any, ...]:
    if len(addresses) < 2:  # most identities have one address: nothing to sort
        return tuple(addresses)
    return tuple(sorted(addresses, key=lambda a: (a.created_at, a.id)))


def identity_from_row(row: sa.Row[Any]) -> Identity:
    """The identity of one row of ``select_identities``."""
    found = row.j_credentials
    creds = sorted((_credential(c) for c in found), key=lambda c: c.type) if found else ()
    verifiable = row.j_verifiable
    recovery = row.j_recovery
    return _make_identity(
        id=row.id,
        schema_id=row.schema_id,
        traits=row.traits,
        state=row.state,
        state_changed_at=row.state_changed_at,
        metadata_public=row.metadata_public,
        metadata_admin=row.metadata_admin,
        external_id=row.external_id,
        organization_id=row.organization_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        credentials={c.type: c for c in creds},
        verifiable_addresses=_in_order([_verifiable(a) for a in verifiable]) if verifiable else (),
        recovery_addresses=_in_order([_recovery(a) for a in recovery]) if recovery else (),
    )
