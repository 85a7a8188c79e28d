"""The Session <-> JSON codec shared by the Redis and SQL session stores."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from sidecar.session.model import AuthenticationMethod, Device, Session
from sidecar.storage.session_records import decode_datetime, dumps_session, encode_datetime, loads_session


def test_round_trip_with_envelope() -> None:
    session = Session(
        identity_id=uuid.uuid4(),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        aal="aal2",
        authentication_methods=(
            AuthenticationMethod("password"),
            AuthenticationMethod("oidc", provider="google"),
        ),
        devices=(Device(ip_address="2001:db8::1", user_agent="ua", location="Berlin"),),
        logout_token_digest="ab" * 32,
        extra={"nested": {"list": [1, "two"]}},
    )
    raw = dumps_session(session, token_digest="cd" * 32)
    decoded, document = loads_session(raw)
    assert decoded == session
    assert document["token_digest"] == "cd" * 32
    assert json.loads(raw)["identity_id"] == str(session.identity_id)


def test_datetimes_are_utc_with_offset() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert encode_datetime(moment) == "2030-01-02T01:04:05.678901+00:00"
    assert decode_datetime(encode_datetime(moment)) == moment
    assert decode_datetime("2030-01-02T01:04:05").tzinfo == UTC


def test_a_provider_sign_in_round_trips_and_older_documents_read_without_one() -> None:
    """The SAML connection, NameID (and format) and SessionIndex a session keeps for its single
    logout; a document written before they existed reads back with none."""
    saml = AuthenticationMethod(
        "saml",
        provider="acme",
        subject="ann@acme.example",
        subject_format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        session_index="id-idp-session-1",
    )
    session = Session(
        identity_id=uuid.uuid4(),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        authentication_methods=(AuthenticationMethod("password"), saml),
    )
    raw = dumps_session(session)
    assert loads_session(raw)[0] == session
    document = json.loads(raw)
    assert "session_index" not in document["authentication_methods"][0]  # only written when set
    assert document["authentication_methods"][1]["session_index"] == "id-idp-session-1"
    for key in ("subject", "subject_format", "session_index"):
        del document["authentication_methods"][1][key]
    older = loads_session(json.dumps(document))[0]
    assert older.authentication_methods[1] == AuthenticationMethod(
        "saml", completed_at=saml.completed_at, provider="acme"
    )
