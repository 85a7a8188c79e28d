"""SAML connections from config: metadata read and checked at start (errors name the key), our
metadata per connection, the pages' CSP ``form-action``, and the XML shape checks that refuse
signature wrapping before pysaml2 reads a value."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from sidecar.strategies.saml.binding import form_action_origins
from sidecar.strategies.saml.connections import SamlConnections
from sidecar.strategies.saml.protocol import SamlRefused, parse_response, sp_metadata
from tests.conftest import make_config
from tests.strategies.saml.idp import IdentityProvider, key_pair

BASE = "http://127.0.0.1:4433/.auth/self-service/methods/saml"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    tmp = tmp_path_factory.mktemp("idp")
    key, cert = key_pair(tmp, "idp")
    return IdentityProvider("https://idp.example.test", key, cert)


def _config(*providers: dict[str, Any], **method: Any) -> Any:
    return make_config(
        selfservice={
            "methods": {"saml": {"enabled": True, "config": {"providers": list(providers), **method}}}
        }
    )


async def test_metadata_inline_base64_or_file_and_our_metadata(idp: IdentityProvider, tmp_path: Path) -> None:
    xml = idp.metadata()
    (tmp_path / "idp.xml").write_text(xml)
    encoded = "base64://" + base64.b64encode(xml.encode()).decode()
    sign_key, sign_cert = key_pair(tmp_path, "sp")
    config = _config(
        {"id": "a", "raw_idp_metadata_xml": xml},
        {"id": "b", "raw_idp_metadata_xml": encoded},
        {"id": "c", "raw_idp_metadata_xml": f"file://{tmp_path / 'idp.xml'}", "entity_id": "urn:sp:c"},
        signing={"key_url": f"file://{sign_key}", "certificate_url": f"file://{sign_cert}"},
    )
    connections = SamlConnections(config)
    try:
        for connection_id in ("a", "b", "c"):
            ours = sp_metadata(await connections.sp_config(connections.get(connection_id)))
            assert f'Location="{BASE}/acs/{connection_id}"' in ours
            assert f'Location="{BASE}/slo/{connection_id}"' in ours
            assert 'AuthnRequestsSigned="true"' in ours and "X509Certificate" in ours
        assert 'entityID="urn:sp:c"' in ours
        assert f'entityID="{BASE}/metadata/a"' in sp_metadata(
            await connections.sp_config(connections.get("a"))
        )
    finally:
        await connections.aclose()
    assert (
        form_action_origins(True, list(config.selfservice.methods.saml.config.providers))
        == [
            "https://idp.example.test/sso/redirect",
            "https://idp.example.test/sso/post",
        ]
        * 3
    )
    assert form_action_origins(False, list(config.selfservice.methods.saml.config.providers)) == []


@pytest.mark.parametrize(
    ("provider", "method", "words"),
    [
        pytest.param(
            {"raw_idp_metadata_xml": "<EntityDescriptor/>"},
            {},
            "selfservice.methods.saml.config.providers.0.raw_idp_metadata_xml: the metadata names no",
            id="no-idp",
        ),
        pytest.param(
            {"raw_idp_metadata_xml": "<broken"},
            {},
            "selfservice.methods.saml.config.providers.0.raw_idp_metadata_xml: unusable",
            id="not-xml",
        ),
        pytest.param(
            {"raw_idp_metadata_xml": "file:///nonexistent/idp.xml"},
            {},
            "selfservice.methods.saml.config.providers.0.raw_idp_metadata_xml: cannot read",
            id="missing-file",
        ),
        pytest.param(
            {"idp_metadata_url": "https://idp.example.test/metadata"},
            {
                "signing": {
                    "key_url": "file:///nonexistent/sp.key",
                    "certificate_url": "file:///nonexistent/sp.crt",
                }
            },
            "selfservice.methods.saml.config.signing.key_url: no file",
            id="missing-key",
        ),
    ],
)
def test_unusable_connections_stop_the_start(
    provider: dict[str, Any], method: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        SamlConnections(_config({"id": "x", **provider}, **method))


async def test_wrapped_or_unsigned_documents_are_refused_before_pysaml2(idp: IdentityProvider) -> None:
    connections = SamlConnections(_config({"id": "a", "raw_idp_metadata_xml": idp.metadata()}))
    connection = connections.get("a")
    config = await connections.sp_config(connection)
    await connections.aclose()

    def refusal(xml: str) -> str:
        with pytest.raises(SamlRefused) as caught:
            parse_response(connection.settings, config, base64.b64encode(xml.encode()).decode(), "id-1")
        return str(caught.value)

    assertion = '<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="a1"/>'
    response = (
        '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="r1">{}</samlp:Response>'
    )
    assert "exactly one" in refusal(response.format(assertion + assertion.replace("a1", "a2")))
    assert "exactly one" in refusal(response.format(""))
    wrapped = response.format(f"<samlp:Extensions>{assertion}</samlp:Extensions>")
    assert "plain child" in refusal(wrapped)
    assert "neither the response nor its assertion is signed" in refusal(response.format(assertion))
    assert "not well-formed" in refusal('<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    assert "not a SAML response" in refusal(assertion)
