"""SCIM User attributes beyond email and userName (``scim.attributes``, per organization
``scim.organizations.<slug or id>.attributes``): names checked at load, each mapped attribute in the
identity's traits or metadata on create and on every write (removed when the User no longer has it),
the User as provisioned on GET, a value the identity schema refuses a SCIM 400; through a live
sidecar on both SQL backends, and scim2-tester's compliance run with a mapping in place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import yaml
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from sidecar.api.scim.attributes import AttributeMapping, scim_value
from sidecar.config.loader import ConfigError
from sidecar.config.model import SCIM_ENTERPRISE, SCIM_SOURCE_ATTRIBUTES
from tests.api.scim.test_scim import PATCH, USER, make_org, scim
from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar
from tests.schemas import person_schema

ENTERPRISE = SCIM_ENTERPRISE
EXAMPLE = yaml.safe_load(
    (Path(__file__).resolve().parents[3] / "examples/sso/scim-attributes.yaml").read_text()
)
MAPPING = EXAMPLE["scim"]["attributes"]
SCHEMA = person_schema(
    email_for=(),
    closed=True,
    name={"type": "object", "properties": {"first": {"type": "string"}, "last": {"type": "string"}}},
    phone={"type": "string", "pattern": "^\\+[0-9 ]{6,20}$"},
    team={"type": "string"},
)
ADA = {
    "schemas": [USER, ENTERPRISE],
    "userName": "ada",
    "externalId": "okta-00u1",
    "displayName": "Ada L.",
    "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada King, Countess of Lovelace"},
    "emails": [{"value": "ada@home.com", "primary": False}, {"value": "ada@acmecorp.com", "primary": True}],
    "phoneNumbers": [{"value": "+44 20 7946 0000", "type": "work", "primary": True}],
    "active": True,
    ENTERPRISE: {
        "department": "Analytical Engines",
        "employeeNumber": "1815",
        "manager": {"value": "bab-1", "$ref": "https://idp.example/Users/bab-1"},
    },
}


# --- configuration: honoured or refused by name ---------------------------------------------------


def problems_of(**scim_config: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        make_config(scim=scim_config)
    return dict(refused.value.problems)


def test_unknown_attributes_and_targets_are_refused_at_load() -> None:
    assert (
        "'name.nickname' is not a SCIM User attribute"
        in problems_of(attributes={"name.nickname": "traits.nick"})["scim.attributes"]
    )
    assert "must be traits.<path>" in problems_of(attributes={"title": "identity.title"})["scim.attributes"]
    assert (
        "written by sidecar itself" in problems_of(attributes={"emails": "traits.email"})["scim.attributes"]
    )
    inside = problems_of(attributes={"title": "traits.job", "userType": "traits.job.kind"})
    assert "inside another target" in inside["scim.attributes"]
    assert "holds the SCIM groups" in problems_of(attributes={"title": "metadata_public.roles"})["scim"]
    assert (
        "neither an organization slug nor an id"
        in problems_of(organizations={"Not A Slug": {}})["scim.organizations"]
    )
    assert "scim.organizations.acme.mapping" in problems_of(organizations={"acme": {"mapping": {}}})
    refused = problems_of(organizations={"acme": {"attributes": {"enterprise:shoeSize": "traits.x"}}})
    assert any("enterprise:shoeSize" in v for v in refused.values()), refused


def test_the_enterprise_abbreviation_and_the_per_organization_choice() -> None:
    config = make_config(
        scim={
            "attributes": {
                "enterprise:department": "metadata_public.department",
                f"{ENTERPRISE}:manager": "metadata_admin.manager",
            },
            "organizations": {
                "beta": {"attributes": {"title": "traits.team"}},
                "0f8e1d2c-3b4a-4596-8877-66554433aabb": {"attributes": {"userType": "traits.kind"}},
            },
        }
    )
    assert config.scim.attributes == {
        f"{ENTERPRISE}:department": "metadata_public.department",
        f"{ENTERPRISE}:manager": "metadata_admin.manager",
    }
    mapping = AttributeMapping(config.scim)
    assert mapping.for_organization("5b0c6f7e-3f0e-4a51-9a59-0d8f4e2a7c11", "acme") == config.scim.attributes
    assert mapping.for_organization("5b0c6f7e-3f0e-4a51-9a59-0d8f4e2a7c11", "beta") == {
        "title": "traits.team"
    }
    by_id = mapping.for_organization("0F8E1D2C-3B4A-4596-8877-66554433AABB", "gamma")
    assert by_id == {"userType": "traits.kind"}


def test_every_source_attribute_is_read_from_a_user() -> None:
    user = {
        **{name: f"v-{name}" for name in SCIM_SOURCE_ATTRIBUTES if "." not in name and ":" not in name},
        "emails": [{"value": "b@x.com"}, {"value": "a@x.com", "primary": True}],
        "phoneNumbers": [{"value": "+1 555 0100"}],
        "name": {n.removeprefix("name."): f"v-{n}" for n in SCIM_SOURCE_ATTRIBUTES if n.startswith("name.")},
        ENTERPRISE: {
            **{n.rpartition(":")[2]: f"v-{n}" for n in SCIM_SOURCE_ATTRIBUTES if n.startswith(ENTERPRISE)},
            "manager": {"value": "boss-id", "displayName": "Boss"},
        },
    }
    values = {name: scim_value(user, name) for name in SCIM_SOURCE_ATTRIBUTES}
    assert values["emails"] == "a@x.com" and values["phoneNumbers"] == "+1 555 0100"
    assert values[f"{ENTERPRISE}:manager"] == "boss-id"
    assert values["name.givenName"] == "v-name.givenName"
    assert all(v is not None for v in values.values()), values
    assert all(scim_value({}, name) is None for name in SCIM_SOURCE_ATTRIBUTES)


# --- through a live sidecar -----------------------------------------------------------------------


@pytest.fixture
def mapped(tmp_path: Path, dsn: str) -> Iterator[LiveSidecar]:
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    config = make_config(
        dsn=dsn,
        identity={"default_schema_id": "person", "schemas": [{"id": "person", "url": f"file://{schema}"}]},
        scim=EXAMPLE["scim"],
    )
    with live_sidecar(config) as live:
        yield live


def identity_of(sidecar: LiveSidecar, identity_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=sidecar.admin_url, timeout=15) as admin:
        found = admin.get(f"/admin/identities/{identity_id}")
    assert found.status_code == 200, found.text
    return dict(found.json())


def test_mapped_attributes_reach_the_identity_and_come_back_on_get(mapped: LiveSidecar) -> None:
    acme = make_org(mapped, "acme")
    with scim(acme) as c:
        made = c.post("/Users", json=ADA)
        assert made.status_code == 201, made.text
        ada_id = made.json()["id"]
        identity = identity_of(mapped, ada_id)
        assert identity["traits"] == {
            "email": "ada@acmecorp.com",
            "name": {"first": "Ada", "last": "Lovelace"},
            "phone": "+44 20 7946 0000",
        }
        assert identity["metadata_public"] == {
            "roles": [],
            "full_name": "Ada King, Countess of Lovelace",
            "display_name": "Ada L.",
            "department": "Analytical Engines",
        }
        assert identity["metadata_admin"] == {
            "scim": {"active": True, "external_id": "okta-00u1"},
            "employee_number": "1815",
            "manager_id": "bab-1",
        }

        # Round trip: the User as provisioned, every attribute.
        got = c.get(f"/Users/{ada_id}").json()
        for key in ("userName", "externalId", "displayName", "name", "phoneNumbers", "active"):
            assert got[key] == ADA[key], key
        assert sorted(e["value"] for e in got["emails"]) == ["ada@acmecorp.com", "ada@home.com"]
        assert got[ENTERPRISE] == ADA[ENTERPRISE]
        found = c.get("/Users", params={"filter": f'{ENTERPRISE}:department eq "Analytical Engines"'})
        assert found.status_code == 200 and [u["id"] for u in found.json()["Resources"]] == [ada_id]

        # PATCH: a replaced attribute follows, a removed one takes its field away.
        ops = {
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "name.givenName", "value": "Augusta Ada"},
                {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Difference Engines"},
                {"op": "remove", "path": "phoneNumbers"},
                {"op": "remove", "path": "displayName"},
            ],
        }
        patched = c.patch(f"/Users/{ada_id}", json=ops)
        assert patched.status_code in (200, 204), patched.text
        identity = identity_of(mapped, ada_id)
        assert identity["traits"] == {
            "email": "ada@acmecorp.com",
            "name": {"first": "Augusta Ada", "last": "Lovelace"},
        }
        assert identity["metadata_public"]["department"] == "Difference Engines"
        assert "display_name" not in identity["metadata_public"]
        after = c.get(f"/Users/{ada_id}").json()
        assert after["name"]["givenName"] == "Augusta Ada" and "phoneNumbers" not in after

        # A change the identity schema refuses: a SCIM 400, and the User stays as the identity is.
        version = c.get(f"/Users/{ada_id}").json()["meta"]["version"]
        refused = c.patch(
            f"/Users/{ada_id}",
            json={
                "schemas": [PATCH],
                "Operations": [
                    {
                        "op": "replace",
                        "path": "phoneNumbers",
                        "value": [{"value": "call me", "primary": True}],
                    },
                    {"op": "replace", "path": "name.familyName", "value": "Byron"},
                ],
            },
        )
        assert refused.status_code == 400 and refused.json()["scimType"] == "invalidValue", refused.text
        kept = c.get(f"/Users/{ada_id}").json()
        assert "phoneNumbers" not in kept and kept["name"]["familyName"] == "Lovelace"
        assert kept["meta"]["version"] != version  # a new version: an ETag taken before stays stale
        assert identity_of(mapped, ada_id)["traits"]["name"]["last"] == "Lovelace"

        # Deprovisioning: the state, and the mapped copy of active.
        gone = c.patch(
            f"/Users/{ada_id}",
            json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]},
        )
        assert gone.status_code in (200, 204), gone.text
        identity = identity_of(mapped, ada_id)
        assert identity["state"] == "inactive" and identity["metadata_admin"]["scim"]["active"] is False

        # A value the identity schema refuses: a SCIM 400, nothing written.
        bad = c.post(
            "/Users",
            json={
                **ADA,
                "userName": "bob",
                "emails": [{"value": "bob@acmecorp.com"}],
                "phoneNumbers": [{"value": "call me"}],
            },
        )
        assert bad.status_code == 400 and bad.json()["scimType"] == "invalidValue", bad.text
        assert "phone" in bad.json()["detail"]
        assert [u["userName"] for u in c.get("/Users").json()["Resources"]] == ["ada"]


def test_an_organization_mapping_replaces_the_global_one(mapped: LiveSidecar) -> None:
    globex = make_org(mapped, "globex")
    with scim(globex) as c:
        made = c.post(
            "/Users",
            json={
                **ADA,
                "title": "Engine designer",
                "emails": [{"value": "ada@betacorp.com", "primary": True}],
            },
        )
        assert made.status_code == 201, made.text
        identity = identity_of(mapped, made.json()["id"])
    assert identity["traits"] == {"email": "ada@betacorp.com", "team": "Engine designer"}
    assert identity["metadata_public"] == {"roles": []}
    assert identity["metadata_admin"] is None


def test_scim2_tester_finds_no_error_with_a_mapping(tmp_path: Path, sqlite_dsn: str) -> None:
    schema = tmp_path / "person.schema.json"
    loose = person_schema(
        name={"type": "object", "properties": {"first": {"type": "string"}, "last": {"type": "string"}}},
        phone={"type": "string"},
        username={"type": "string", "ory.sh/kratos": {"credentials": {"password": {"identifier": True}}}},
    )
    loose["properties"]["traits"]["required"] = []  # scim2-tester's users have no email
    schema.write_text(json.dumps(loose))
    config = make_config(
        dsn=sqlite_dsn,
        identity={"default_schema_id": "person", "schemas": [{"id": "person", "url": f"file://{schema}"}]},
        scim={"attributes": MAPPING},
    )
    with live_sidecar(config) as sidecar:
        org = make_org(sidecar, "acme")
        with httpx2.Client(
            base_url=org.base, headers={"Authorization": f"Bearer {org.token}"}, timeout=30
        ) as http:
            results = check_server(SyncSCIMClient(http))
    bad = [
        (r.title, r.resource_type, r.reason) for r in results if r.status in (Status.ERROR, Status.CRITICAL)
    ]
    assert bad == []
    assert sum(r.status is Status.SUCCESS for r in results) >= 20
