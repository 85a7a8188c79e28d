"""SAML 2.0 Web Browser SSO for one connection, with pysaml2 (xmlsec1 checks the signatures).

pysaml2 is synchronous and runs ``xmlsec1`` as a child process, so callers run these functions in
a thread. What pysaml2 checks on a response: the signature of the response or of the assertion
(one of them is required), the issuer against the identity provider's metadata, ``Destination``
and ``Recipient`` against our ACS URL, the audience against our entity id, ``NotBefore`` /
``NotOnOrAfter`` with the configured clock skew, and ``InResponseTo`` against the one request
this login flow sent (or none at all, only where identity-provider-initiated login is allowed).
On top, ``_one_signed_assertion`` refuses any document that carries more than one assertion or
whose signature does not cover the response or the assertion it hands out: the shape of XML
signature wrapping attacks, refused before pysaml2 reads a value.
"""

from __future__ import annotations

import base64
import binascii
import shutil
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from xml.etree.ElementTree import Element

from cryptography import x509
from defusedxml import ElementTree
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor
from saml2.response import AuthnResponse, IncorrectlySigned, UnsolicitedResponse
from saml2.s_utils import UnknownPrincipal, UnsupportedBinding
from saml2.sigver import RSACrypto, SigverError, verify_redirect_signature
from saml2.validate import ResponseLifetimeExceed, ToEarly

from sidecar.strategies.saml.binding import MAX_MESSAGE

BINDINGS = {"redirect": BINDING_HTTP_REDIRECT, "post": BINDING_HTTP_POST}
_SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
_DS = "http://www.w3.org/2000/09/xmldsig#"


REFUSALS = (
    "signature",
    "audience",
    "destination",
    "expired",
    "replay",
    "inresponseto",
    "unsigned",
    "malformed",
    "too_large",
    "other",
)
"""Why a message was refused, in a few buckets (the ``outcome`` of ``sidecar_saml_verifications``)."""


class SamlRefused(Exception):
    """The identity provider's message is not acceptable; the text says why (for logs and hints),
    ``reason`` in which of the ``REFUSALS`` buckets."""

    def __init__(self, text: str, reason: str = "other") -> None:
        super().__init__(text)
        self.reason = reason if reason in REFUSALS else "other"


def _reason_of(exc: Exception) -> str:
    """The bucket of a pysaml2 refusal: it signals each with an exception type of its own, or a
    plain ``Exception`` whose text names the check (the audience)."""
    text = str(exc).lower()
    if isinstance(exc, SigverError | IncorrectlySigned):
        return "signature"
    if "audience" in text:
        return "audience"
    if isinstance(exc, ResponseLifetimeExceed | ToEarly) or "expired" in text:
        return "expired"
    if isinstance(exc, UnsolicitedResponse):
        return "inresponseto"
    if "recipient" in text or "destination" in text:
        return "destination"
    if "signature" in text:
        return "signature"
    return "other"


@dataclass(frozen=True, slots=True)
class SpSettings:
    """Our side of one connection."""

    entity_id: str
    acs_url: str
    slo_url: str
    allow_unsolicited: bool
    clock_skew: int
    """Seconds."""
    key_file: str | None = None
    cert_file: str | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """An authentication or logout request on its way: a URL to redirect to, or a form to post."""

    request_id: str
    url: str
    form: dict[str, str] | None = None
    """HTTP-POST binding: the fields to post to ``url``; None: redirect to ``url``."""


@dataclass(frozen=True, slots=True)
class Assertion:
    """What a checked response proved."""

    issuer: str
    assertion_id: str
    name_id: str
    name_id_format: str | None
    attributes: dict[str, list[str]]
    not_on_or_after: int
    """Unix time after which the assertion may not be used (the replay cache keeps it until then)."""
    session_index: str | None
    in_response_to: str | None


def sp_config(settings: SpSettings, idp_metadata: str) -> SPConfig:
    """pysaml2's service-provider configuration; raises ValueError on unusable metadata."""
    signing = settings.key_file is not None
    conf: dict[str, Any] = {
        "entityid": settings.entity_id,
        "xmlsec_binary": shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(settings.acs_url, BINDING_HTTP_POST)],
                    "single_logout_service": [
                        (settings.slo_url, BINDING_HTTP_REDIRECT),
                        (settings.slo_url, BINDING_HTTP_POST),
                    ],
                },
                "allow_unsolicited": settings.allow_unsolicited,
                "want_assertions_or_response_signed": True,
                "want_assertions_signed": False,
                "want_response_signed": False,
                "authn_requests_signed": signing,
                "logout_requests_signed": signing,
            }
        },
        "metadata": {"inline": [idp_metadata]},
        "accepted_time_diff": settings.clock_skew,
        "allow_unknown_attributes": True,
    }
    if signing:
        conf["key_file"] = settings.key_file
        conf["cert_file"] = settings.cert_file
    config = SPConfig()
    try:
        config.load(conf)
    except Exception as exc:  # pysaml2 raises many kinds on bad metadata
        raise ValueError(f"unusable identity provider metadata: {exc}") from None
    if not idp_entity_ids(config):
        raise ValueError("the metadata names no identity provider (IDPSSODescriptor)")
    return config


def idp_entity_ids(config: SPConfig) -> list[str]:
    return sorted(config.metadata.identity_providers())


@dataclass(frozen=True, slots=True)
class IdpFacts:
    """What an identity provider's metadata says, for operators (``GET /admin/saml/connections``)."""

    entity_id: str
    single_sign_on: dict[str, str]
    """Binding (``redirect``, ``post``) -> location."""
    single_logout: dict[str, str]
    signing_certificates_expire: list[str]
    """The ``notAfter`` of each signing certificate (ISO 8601, UTC): an expired one fails every sign-in."""


def idp_facts(config: SPConfig) -> IdpFacts:
    """The (single) identity provider of ``config``: entity id, endpoints, certificate expiries."""
    idp = idp_entity_ids(config)[0]
    metadata = config.metadata

    def endpoints(find: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, binding in BINDINGS.items():
            try:
                found = find(idp, binding, "idpsso")
            except (UnknownPrincipal, UnsupportedBinding):  # none for this binding
                found = []
            if found:
                out[name] = str(found[0]["location"])
        return out

    expiries = []
    for _name, text in metadata.certs(idp, "idpsso", "signing"):
        try:
            certificate = x509.load_der_x509_certificate(base64.b64decode("".join(text.split())))
        except ValueError:
            continue  # unreadable: pysaml2 cannot check signatures with it either
        expiries.append(certificate.not_valid_after_utc.isoformat().replace("+00:00", "Z"))
    return IdpFacts(
        idp,
        endpoints(metadata.single_sign_on_service),
        endpoints(metadata.single_logout_service),
        sorted(expiries),
    )


def sp_metadata(config: SPConfig) -> str:
    return str(entity_descriptor(config))


def authn_request(config: SPConfig, binding: str, relay_state: str) -> Outbound:
    """An AuthnRequest to the (single) identity provider of ``config``."""
    client = Saml2Client(config=config)
    idp = idp_entity_ids(config)[0]
    try:
        request_id, info = client.prepare_for_authenticate(
            entityid=idp, binding=BINDINGS[binding], relay_state=relay_state
        )
    except UnsupportedBinding:
        raise SamlRefused(f"the identity provider has no single sign-on endpoint for {binding}") from None
    return _outbound(str(request_id), info)


def _outbound(request_id: str, info: dict[str, Any]) -> Outbound:
    if info.get("method") == "POST":
        # pysaml2 renders an HTML form; take its fields back out of it.
        return Outbound(request_id, str(info["url"]), _form_fields(str(info.get("data") or "")))
    return Outbound(request_id, dict(info["headers"])["Location"])


def _form_fields(html: str) -> dict[str, str]:
    import re

    found = dict(re.findall(r'<input type="hidden" name="([A-Za-z]+)" value="([^"]*)"', html))
    return {k: v.replace("&quot;", '"').replace("&amp;", "&") for k, v in found.items()}


def _decode(message: str) -> bytes:
    if len(message) > MAX_MESSAGE:
        raise SamlRefused("the SAML message is too large", "too_large")
    try:
        return base64.b64decode(message, validate=False)
    except (binascii.Error, ValueError):
        raise SamlRefused("the SAML message is not base64", "malformed") from None


def _signed_ids(root: Element) -> set[str]:
    """IDs of elements that carry an enveloped signature referencing themselves."""
    signed: set[str] = set()
    for element in root.iter():
        own_id = element.get("ID")
        if not own_id:
            continue
        for child in element:
            if child.tag != f"{{{_DS}}}Signature":
                continue
            for ref in child.iter(f"{{{_DS}}}Reference"):
                if ref.get("URI") == f"#{own_id}":
                    signed.add(own_id)
    return signed


def _instant(value: str | None) -> float | None:
    if not value:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SamlRefused(f"unreadable time {value[:40]!r}", "malformed") from None


def _addressed_and_current(root: Element, assertion: Element, acs_url: str, skew: int) -> None:
    """Destination, Recipient and the validity window, with clear reasons (pysaml2 checks them too)."""
    destination = root.get("Destination")
    if destination is not None and destination != acs_url:
        raise SamlRefused("the response's Destination is not this connection's ACS URL", "destination")
    now = time.time()
    for confirmation in assertion.iter(f"{{{_SAML}}}SubjectConfirmationData"):
        recipient = confirmation.get("Recipient")
        if recipient is not None and recipient != acs_url:
            raise SamlRefused("the assertion's Recipient is not this connection's ACS URL", "destination")
        until = _instant(confirmation.get("NotOnOrAfter"))
        if until is not None and now - skew >= until:
            raise SamlRefused("the assertion has expired (SubjectConfirmationData NotOnOrAfter)", "expired")
    for conditions in assertion.iter(f"{{{_SAML}}}Conditions"):
        until = _instant(conditions.get("NotOnOrAfter"))
        if until is not None and now - skew >= until:
            raise SamlRefused("the assertion has expired (Conditions NotOnOrAfter)", "expired")
        since = _instant(conditions.get("NotBefore"))
        if since is not None and now + skew < since:
            raise SamlRefused("the assertion is not valid yet (Conditions NotBefore)", "expired")


def _one_signed_assertion(xml: bytes, acs_url: str, skew: int) -> None:
    try:
        root = ElementTree.fromstring(xml, forbid_dtd=True)
    except Exception:
        raise SamlRefused("the SAML response is not well-formed XML", "malformed") from None
    if root.tag != f"{{{_SAMLP}}}Response":
        raise SamlRefused("the message is not a SAML response", "malformed")
    assertions = [
        e for e in root.iter() if e.tag in (f"{{{_SAML}}}Assertion", f"{{{_SAML}}}EncryptedAssertion")
    ]
    if len(assertions) != 1:
        raise SamlRefused(
            f"the response carries {len(assertions)} assertions; exactly one is accepted", "malformed"
        )
    assertion = assertions[0]
    if assertion.tag != f"{{{_SAML}}}Assertion" or assertion not in list(root):
        raise SamlRefused(
            "the assertion must be a plain child of the response (encrypted ones are not supported)",
            "malformed",
        )
    signed = _signed_ids(root)
    if root.get("ID") not in signed and assertion.get("ID") not in signed:
        raise SamlRefused("neither the response nor its assertion is signed", "unsigned")
    _addressed_and_current(root, assertion, acs_url, skew)


def precheck_response(settings: SpSettings, message: str) -> None:
    """The cheap checks of a base64 SAMLResponse (size, base64, well-formed XML without DTD, one
    signed assertion, addressing, validity window): a few milliseconds, no signature checked."""
    _one_signed_assertion(_decode(message), settings.acs_url, settings.clock_skew)


def parse_response(settings: SpSettings, config: SPConfig, message: str, request_id: str | None) -> Assertion:
    """Check a base64 SAMLResponse (HTTP-POST) that answers ``request_id`` (None: unsolicited)."""
    precheck_response(settings, message)
    client = Saml2Client(config=config)
    outstanding = {request_id: "flow"} if request_id else {}
    try:
        response = client.parse_authn_request_response(message, BINDING_HTTP_POST, outstanding=outstanding)
    except UnsolicitedResponse:
        raise SamlRefused(
            "the response answers another request than this sign-in's (InResponseTo)", "inresponseto"
        ) from None
    except Exception as exc:  # pysaml2 signals every refusal with its own exception type
        raise SamlRefused(f"{type(exc).__name__}: {exc}"[:300], _reason_of(exc)) from None
    if not isinstance(response, AuthnResponse) or response.assertion is None or response.name_id is None:
        raise SamlRefused("the response holds no usable assertion (issuer, status or addressing)")
    answered = response.in_response_to
    if request_id is not None and answered != request_id:
        raise SamlRefused("the response answers another request", "inresponseto")
    if request_id is None and answered:
        raise SamlRefused("the response answers a request this sign-in did not send", "inresponseto")
    info = response.session_info()
    name_id = response.name_id
    return Assertion(
        issuer=str(info.get("issuer") or ""),
        assertion_id=str(response.assertion.id),
        name_id=str(name_id.text or "").strip(),
        name_id_format=name_id.format,
        attributes={str(k): [str(v) for v in vs] for k, vs in (response.ava or {}).items()},
        not_on_or_after=int(info.get("not_on_or_after") or 0),
        session_index=info.get("session_index"),
        in_response_to=answered,
    )


def logout_request(
    config: SPConfig,
    name_id: str,
    name_id_format: str | None,
    relay_state: str,
    session_index: str | None = None,
) -> Outbound:
    """An SP-initiated LogoutRequest for ``name_id`` (HTTP-Redirect), naming the identity
    provider's session ``session_index`` when the sign-in had one; SamlRefused when the identity
    provider has no single logout endpoint."""
    from saml2.saml import NameID

    client = Saml2Client(config=config)
    idp = idp_entity_ids(config)[0]
    try:
        destinations = client.metadata.single_logout_service(idp, BINDING_HTTP_REDIRECT, "idpsso")
    except UnknownPrincipal:
        destinations = []
    if not destinations:
        raise SamlRefused("the identity provider has no single logout endpoint")
    destination = destinations[0]["location"]
    request_id, request = client.create_logout_request(
        destination,
        idp,
        name_id=NameID(format=name_id_format, text=name_id),
        session_indexes=[session_index] if session_index else None,
        sign=False,
    )
    sign = config.key_file is not None
    info = client.apply_binding(
        BINDING_HTTP_REDIRECT,
        str(request),
        destination,
        relay_state,
        sign=sign,
        sigalg="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" if sign else None,
    )
    return _outbound(str(request_id), info)


@dataclass(frozen=True, slots=True)
class LogoutOrder:
    """An identity provider's LogoutRequest, checked: who to sign out, and the answer to send."""

    name_id: str
    answer: Outbound
    session_indexes: tuple[str, ...] = ()
    """The identity provider's sessions to end; none: every session of ``name_id``."""


def parse_logout_request(config: SPConfig, message: str, binding: str, query: str | None) -> LogoutOrder:
    """Check an identity provider's LogoutRequest and build the LogoutResponse. It must be signed
    by the identity provider: the message itself (HTTP-POST, an enveloped signature on the request)
    or the query string's ``Signature`` (HTTP-Redirect). pysaml2 checks neither for a service
    provider unless told, so both are required here."""
    client = Saml2Client(config=config)
    params: dict[str, str] = {}
    if binding == "redirect":
        params = {k: v[0] for k, v in parse_qs(query or "", keep_blank_values=True).items()}
        if not params.get("Signature") or not params.get("SigAlg"):
            raise SamlRefused("the logout request is not signed", "unsigned")
    else:
        try:
            root = ElementTree.fromstring(_decode(message), forbid_dtd=True)
        except SamlRefused:
            raise
        except Exception:
            raise SamlRefused("the logout request is not well-formed XML", "malformed") from None
        if root.get("ID") not in _signed_ids(root):
            raise SamlRefused("the logout request is not signed", "unsigned")
    try:
        request = client.parse_logout_request(message, BINDINGS[binding])
    except Exception as exc:  # pysaml2 signals every refusal with its own exception type
        raise SamlRefused(f"{type(exc).__name__}: {exc}"[:300], _reason_of(exc)) from None
    if request is None or request.message is None:
        raise SamlRefused("the logout request could not be read", "malformed")
    body = request.message
    issuer = body.issuer.text if body.issuer is not None else None
    if issuer not in idp_entity_ids(config):
        raise SamlRefused("the logout request comes from another identity provider")
    if binding == "redirect":
        signed = {"SAMLRequest": message, "Signature": params["Signature"], "SigAlg": params["SigAlg"]}
        if "RelayState" in params:
            signed["RelayState"] = params["RelayState"]
        certs = client.metadata.certs(issuer, "any", "signing")
        if not any(verify_redirect_signature(signed, RSACrypto(None), cert) for _name, cert in certs):
            raise SamlRefused("the logout request's signature is not the identity provider's", "signature")
    elif not _post_signature_ok(client, message):
        raise SamlRefused("the logout request's signature is not the identity provider's", "signature")
    if body.name_id is None or not body.name_id.text:
        raise SamlRefused("the logout request names nobody", "malformed")
    response = client.create_logout_response(body, [BINDING_HTTP_REDIRECT])
    destinations = client.metadata.single_logout_service(issuer, BINDING_HTTP_REDIRECT, "idpsso")
    if not destinations:
        raise SamlRefused("the identity provider has no single logout endpoint to answer")
    location = destinations[0].get("response_location") or destinations[0]["location"]
    info = client.apply_binding(BINDING_HTTP_REDIRECT, str(response), location, None, response=True)
    indexes = tuple(str(i.text).strip() for i in body.session_index or () if i is not None and i.text)
    return LogoutOrder(str(body.name_id.text).strip(), _outbound(str(body.id), info), indexes)


def _post_signature_ok(client: Saml2Client, message: str) -> bool:
    try:
        checked = client.sec.correctly_signed_logout_request(_decode(message).decode(), must=True)
    except Exception:
        return False
    return checked is not None
