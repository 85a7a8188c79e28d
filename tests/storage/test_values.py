"""``sidecar.storage.values``: the short ways give exactly what the general parsers give, and fail
as they fail; and whole identities and sessions read the same through the session check's reads
as through the stores' general queries, on both SQL backends."""

from __future__ import annotations

import dataclasses
import json
import pickle
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress, utcnow
from sidecar.session.model import AuthenticationMethod, Device, Session
from sidecar.slotted import builder
from sidecar.storage.sql.database import SqlDatabase
from sidecar.storage.sql.tables import identities
from sidecar.storage.values import json_document, json_value, parse_uuid, utc_from_text


def _outcome(parse: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", parse(value)
    except Exception as exc:
        return "error", type(exc)


def _same_uuid(value: Any) -> None:
    fast, general = _outcome(parse_uuid, value), _outcome(uuid.UUID, value)
    assert fast == general
    if fast[0] == "ok":
        assert fast[1].is_safe is general[1].is_safe
        assert (str(fast[1]), hash(fast[1]), fast[1].int) == (
            str(general[1]),
            hash(general[1]),
            general[1].int,
        )


@given(st.uuids())
def test_uuids_in_their_usual_spellings(value: uuid.UUID) -> None:
    for text in (str(value), value.hex, str(value).upper(), value.hex.upper()):
        _same_uuid(text)


@given(st.text(alphabet="0123456789abcdefABCDEF-{}_+ \u0663xurn:", min_size=30, max_size=40))
@example("{12345678-1234-5678-1234-567812345678}")
@example("urn:uuid:12345678-1234-5678-1234-567812345678")
@example("12345678-1234-5678-1234-5678123456-8")  # a hyphen out of place
@example("12345678-1234-5678-1234-56781234567g")
@example("1234567_-1234-5678-1234-567812345678")  # int() takes underscores, UUID() too
@example("12345678-1234-5678-1234-5678 1234 56")  # bytes.fromhex skips the spaces: 15 bytes
@example("\u0663" * 32)  # int() takes any Unicode digit
@example("+1234567-1234-5678-1234-567812345678")
def test_uuid_text_of_any_shape(text: str) -> None:
    _same_uuid(text)


@pytest.mark.parametrize("value", [None, b"12345678123456781234567812345678", 12])
def test_uuid_of_what_is_not_text(value: Any) -> None:
    _same_uuid(value)


def _reference_utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from([None, UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]),
    st.sampled_from([" ", "T"]),
    st.sampled_from(["auto", "seconds", "milliseconds", "microseconds", "minutes", "hours"]),
)
def test_timestamps_as_the_stores_write_them(
    moment: datetime, zone: timezone | None, sep: str, timespec: str
) -> None:
    text = moment.replace(tzinfo=zone).isoformat(sep, timespec)
    fast, general = utc_from_text(text), _reference_utc(text)
    assert fast == general and fast.tzinfo is general.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-07",  # a date alone, 10 characters
        "2026-12-07 05:38:51",
        "2026-12-07 05:38:51.525731",
        "2026-12-07T05:38:51.52573Z",  # 26 characters with a Z
        "2026-12-07 05:38:51+02:00",
        "20261207T053851.123456789",
        "2026-12-07 25:00:00.000000",
        "not a timestamp at all, 26",
        "",
    ],
)
def test_timestamps_of_other_shapes(text: str) -> None:
    fast, general = _outcome(utc_from_text, text), _outcome(_reference_utc, text)
    assert fast == general
    if fast[0] == "ok":
        assert fast[1].tzinfo is UTC


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), _json, max_size=5), st.booleans(), st.booleans())
def test_json_documents(document: dict[str, Any], compact: bool, ascii_only: bool) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    raw = json.dumps(document, separators=separators, ensure_ascii=ascii_only).encode()
    assert json_document(raw) == json.loads(raw) == document
    assert json_value(raw.decode()) == document


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1} ',
        b' {"a": 1}',
        b'{"a": 1} x',
        b'{"a": ',
        b"{",
        b"",
        b"[1]",
        '{"a": "\u00e9"}'.encode("utf-16-le"),
        '{"a": 1}'.encode("utf-8-sig"),
        b'{"a": "\xed\xa0\x80"}',  # a lone surrogate, which json.loads lets through
        b'{"a": "\xff"}',
    ],
)
def test_json_documents_of_other_shapes(raw: bytes) -> None:
    assert _outcome(json_document, raw) == _outcome(json.loads, raw)


async def test_the_session_checks_reads_give_what_the_general_queries_give(dsn: str) -> None:
    """The identity by id and the session by token (``fetch_one``: the SQLite reader on SQLite,
    the engine on PostgreSQL) against the stores' general queries (SQLAlchemy's processors)."""
    db = SqlDatabase(dsn)
    await db.migrate()
    try:
        rich = await db.identities.create(
            Identity(
                schema_id="default",
                traits={"email": "c@example.test", "name": {"first": "C\u00e9"}, "n": [1, 2.5, None]},
                metadata_public={"roles": ["x"]},
                metadata_admin="note",
                external_id="ext-1",
                state="inactive",
                state_changed_at=utcnow(),
                verifiable_addresses=(
                    VerifiableAddress(
                        "c@example.test", verified=True, status="completed", verified_at=utcnow()
                    ),
                    VerifiableAddress("c2@example.test"),
                ),
                recovery_addresses=(RecoveryAddress("c@example.test"),),
                credentials={
                    "password": Credential("password", ("c@example.test",), {"hashed_password": "h"}),
                    "totp": Credential("totp", (), {"totp_url": "otpauth://x"}, version=2),
                },
            )
        )
        plain = await db.identities.create(Identity(schema_id="default", traits={}))
        for identity in (rich, plain):
            general = await db.identities._find(identities.c.id == identity.id)
            assert await db.identities.get(identity.id) == general == identity
        session = Session(
            identity_id=rich.id,
            expires_at=utcnow() + timedelta(hours=1),
            aal="aal2",
            authentication_methods=(AuthenticationMethod("password"), AuthenticationMethod("totp", "aal2")),
            devices=(Device(ip_address="127.0.0.1", user_agent="ua"),),
            extra={"k": ["v"]},
        )
        await db.sessions.create(session, "f" * 64)
        assert await db.sessions.get_by_token("f" * 64) == await db.sessions.get(session.id) == session
    finally:
        await db.close()


def _all_fields(cls: type) -> dict[str, Any]:
    """One value per field of the model classes the stores build, none of them a default."""
    now = datetime(2026, 12, 7, 5, 38, 51, 525731, tzinfo=UTC)
    samples: dict[str, Any] = {
        "id": uuid.uuid4(),
        "identity_id": uuid.uuid4(),
        "organization_id": uuid.uuid4(),
        "expires_at": now + timedelta(hours=1),
        "active": False,
        "aal": "aal2",
        "method": "password",
        "provider": "p",
        "subject": "s",
        "subject_format": "f",
        "session_index": "i",
        "ip_address": "127.0.0.1",
        "user_agent": "ua",
        "location": "here",
        "authentication_methods": (AuthenticationMethod("totp", "aal2"),),
        "devices": (Device(ip_address="::1"),),
        "logout_token_digest": "d" * 64,
        "extra": {"k": [1]},
        "schema_id": "default",
        "traits": {"email": "v@example.test"},
        "state": "inactive",
        "metadata_public": {"roles": ["r"]},
        "metadata_admin": [1],
        "external_id": "ext",
        "verifiable_addresses": (VerifiableAddress("v@example.test"),),
        "recovery_addresses": (RecoveryAddress("v@example.test"),),
        "credentials": {"password": Credential("password")},
        "type": "password",
        "identifiers": ("v@example.test",),
        "config": {"hashed_password": "h"},
        "version": 3,
        "value": "v@example.test",
        "via": "sms",
        "verified": True,
        "status": "completed",
    }
    out = {}
    for f in fields(cls):
        if f.name in samples:
            out[f.name] = samples[f.name]
        else:  # the timestamps
            out[f.name] = now + timedelta(seconds=len(out))
    return out


MODELS = [Session, AuthenticationMethod, Device, Identity, Credential, VerifiableAddress, RecoveryAddress]


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_built_values_are_the_classes_own(cls: type) -> None:
    values = _all_fields(cls)
    built: Any = builder(cls)(**values)
    made: Any = cls(**values)
    assert builder(cls) is not cls  # these models take the short way
    assert built == made and repr(built) == repr(made)
    assert _outcome(hash, built) == _outcome(hash, made)  # (unhashable with a dict field)
    assert dataclasses.asdict(built) == dataclasses.asdict(made)
    assert pickle.loads(pickle.dumps(built)) == made
    assert dataclasses.replace(built) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, fields(cls)[0].name, None)
    assert type(built) is cls


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_every_field_must_be_given(cls: type) -> None:
    values = _all_fields(cls)
    make: Any = builder(cls)
    missing = dict(values)
    missing.pop(next(iter(values)))
    with pytest.raises(TypeError):
        make(**missing)
    with pytest.raises(TypeError):
        make(**values, unknown=1)
    with pytest.raises(TypeError):
        make(*values.values())


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


@dataclasses.dataclass(frozen=True)
class _Unslotted:
    n: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Derived:
    n: int
    twice: int = dataclasses.field(init=False, default=0)


@pytest.mark.parametrize("cls", [_Checked, _Unslotted, _Derived, dict])
def test_classes_it_cannot_stand_in_for_are_built_by_themselves(cls: type) -> None:
    assert builder(cls) is cls
