"""A real SAML 2.0 identity provider for the tests: pysaml2's ``saml2.server.Server`` behind a
small WSGI app on 127.0.0.1, with a key pair made here (signatures by xmlsec1).

Endpoints: ``/metadata``; ``/sso/redirect`` and ``/sso/post`` (the AuthnRequest in either
binding) show a login form; ``/login`` answers with the auto-posting form to the service
provider's ACS; ``/slo`` takes a LogoutRequest and answers with a LogoutResponse. Tests can also
make responses directly (``respond``), including the broken ones an attacker would send.
"""

from __future__ import annotations

import datetime
import html
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server

from tests.conftest import free_port

PASSWORD_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def key_pair(directory: Path, name: str) -> tuple[str, str]:
    """A fresh RSA key and self-signed certificate, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


@dataclass
class Request:
    """An AuthnRequest the IdP received."""

    id: str
    acs_url: str
    sp_entity_id: str
    relay_state: str | None


@dataclass
class LogoutSeen:
    """A LogoutRequest the IdP received from a service provider."""

    issuer: str
    name_id: str
    name_id_format: str | None
    session_indexes: list[str]


@dataclass
class IdentityProvider:
    url: str
    key_file: str
    cert_file: str
    sp_metadata: list[str] = field(default_factory=list)
    users: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    logouts: list[str] = field(default_factory=list)
    """NameIDs of the LogoutRequests received."""
    logout_requests: list[LogoutSeen] = field(default_factory=list)
    """Every LogoutRequest received, in full."""
    session_indexes: list[str] = field(default_factory=list)
    """The SessionIndex of every response made, in order."""

    @property
    def entity_id(self) -> str:
        return f"{self.url}/metadata"

    def _config(self, lifetime_minutes: int = 15, key_file: str | None = None) -> IdPConfig:
        conf: dict[str, Any] = {
            "entityid": self.entity_id,
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            (f"{self.url}/sso/redirect", BINDING_HTTP_REDIRECT),
                            (f"{self.url}/sso/post", BINDING_HTTP_POST),
                        ],
                        "single_logout_service": [(f"{self.url}/slo", BINDING_HTTP_REDIRECT)],
                    },
                    "policy": {
                        "default": {"lifetime": {"minutes": lifetime_minutes}, "name_form": NAME_FORMAT_URI}
                    },
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                }
            },
            "key_file": key_file or self.key_file,
            "cert_file": self.cert_file,
            "metadata": {"inline": list(self.sp_metadata)},
        }
        config = IdPConfig()
        config.load(conf)
        return config

    def server(self, lifetime_minutes: int = 15, key_file: str | None = None) -> Server:
        return Server(config=self._config(lifetime_minutes, key_file))

    def metadata(self) -> str:
        return str(entity_descriptor(self._config()))

    def trust(self, sp_metadata: str) -> None:
        self.sp_metadata.append(sp_metadata)

    def read_request(self, message: str, binding: str, relay_state: str | None) -> Request:
        parsed = self.server().parse_authn_request(message, binding).message
        return Request(parsed.id, parsed.assertion_consumer_service_url, parsed.issuer.text, relay_state)

    def respond(
        self,
        request: Request | None,
        email: str,
        *,
        acs_url: str | None = None,
        sp_entity_id: str | None = None,
        in_response_to: str | None = "",
        sign_assertion: bool = True,
        sign_response: bool = False,
        lifetime_minutes: int = 15,
        key_file: str | None = None,
        attributes: dict[str, list[str]] | None = None,
    ) -> str:
        """A Response (XML) for ``email``: by default a correct answer to ``request``."""
        server = self.server(lifetime_minutes, key_file)
        answered = (request.id if request else None) if in_response_to == "" else in_response_to
        response = server.create_authn_response(
            attributes or self.users.get(email) or {"mail": [email]},
            answered,
            acs_url or (request.acs_url if request else ""),
            sp_entity_id or (request.sp_entity_id if request else ""),
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=email),
            authn={"class_ref": PASSWORD_CLASS},
            sign_assertion=sign_assertion,
            sign_response=sign_response,
        )
        found = re.search(r'SessionIndex="([^"]+)"', str(response))
        if found:
            self.session_indexes.append(found.group(1))
        return str(response)

    def logout_request(
        self, sp_entity_id: str, slo_url: str, email: str, session_indexes: list[str] | None = None
    ) -> str:
        """An IdP-initiated LogoutRequest, signed, as the query of an HTTP-Redirect URL; for the
        given sessions (``SessionIndex``) only, or for every session of ``email``."""
        server = self.server()
        _id, request = server.create_logout_request(
            slo_url,
            sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=email),
            session_indexes=session_indexes,
            sign=False,
        )
        info = server.apply_binding(
            BINDING_HTTP_REDIRECT,
            str(request),
            slo_url,
            "",
            sign=True,
            sigalg="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        )
        return str(dict(info["headers"])["Location"])

    def logout_request_xml(self, sp_entity_id: str, slo_url: str, email: str, *, sign: bool) -> str:
        """An IdP-initiated LogoutRequest for the HTTP-POST binding (XML, signed or not)."""
        _id, request = self.server().create_logout_request(
            slo_url, sp_entity_id, name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=email), sign=sign
        )
        return str(request)

    # --- the WSGI app --------------------------------------------------------------------------

    def app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if environ["REQUEST_METHOD"] == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            params = {k: v[0] for k, v in parse_qs(environ["wsgi.input"].read(size).decode()).items()}
        else:
            params = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/metadata":
            return _answer(start, "200 OK", self.metadata(), "application/samlmetadata+xml")
        if path in ("/sso/redirect", "/sso/post"):
            binding = BINDING_HTTP_REDIRECT if path.endswith("redirect") else BINDING_HTTP_POST
            request = self.read_request(params["SAMLRequest"], binding, params.get("RelayState"))
            page = _form(
                "/login",
                {
                    "SAMLRequest": params["SAMLRequest"],
                    "RelayState": params.get("RelayState") or "",
                    "binding": binding,
                },
                visible='<label>Email <input name="username" type="email" autofocus></label>'
                '<button type="submit">Sign in</button>',
                title=f"IdP login for {html.escape(request.sp_entity_id)}",
            )
            return _answer(start, "200 OK", page)
        if path == "/login":
            request = self.read_request(params["SAMLRequest"], params["binding"], params.get("RelayState"))
            xml = self.respond(request, params["username"])
            return _answer(start, "200 OK", self.post_to_acs(request.acs_url, xml, request.relay_state))
        if path == "/slo":
            server = self.server()
            parsed = server.parse_logout_request(params["SAMLRequest"], BINDING_HTTP_REDIRECT)
            self.logouts.append(str(parsed.message.name_id.text))
            self.logout_requests.append(
                LogoutSeen(
                    str(parsed.message.issuer.text),
                    str(parsed.message.name_id.text),
                    parsed.message.name_id.format,
                    [str(i.text) for i in parsed.message.session_index or ()],
                )
            )
            response = server.create_logout_response(parsed.message, [BINDING_HTTP_REDIRECT])
            destination = server.metadata.single_logout_service(
                parsed.message.issuer.text, BINDING_HTTP_REDIRECT, "spsso"
            )[0]["location"]
            info = server.apply_binding(
                BINDING_HTTP_REDIRECT, str(response), destination, params.get("RelayState"), response=True
            )
            start("303 See Other", [("Location", dict(info["headers"])["Location"])])
            return [b""]
        return _answer(start, "404 Not Found", "not found")

    @staticmethod
    def post_to_acs(acs_url: str, xml: str, relay_state: str | None) -> str:
        import base64

        fields = {"SAMLResponse": base64.b64encode(xml.encode()).decode()}
        if relay_state:
            fields["RelayState"] = relay_state
        return _form(acs_url, fields, visible="<noscript><button>Continue</button></noscript>", auto=True)


def _form(
    action: str, fields: dict[str, str], *, visible: str, title: str = "IdP", auto: bool = False
) -> str:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items())
    script = "<script>document.forms[0].submit()</script>" if auto else ""
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
        f'<form method="post" action="{html.escape(action)}">{hidden}{visible}</form>{script}</body></html>'
    )


def _answer(start: Callable[..., Any], status: str, body: str, ctype: str = "text/html") -> list[bytes]:
    data = body.encode()
    start(status, [("Content-Type", f"{ctype}; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the first form of an HTML page."""
    action = re.search(r'<form[^>]*action="([^"]+)"', page)
    assert action is not None, page[:500]
    fields = {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }
    return html.unescape(action.group(1)), fields


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def identity_provider(directory: Path) -> Iterator[IdentityProvider]:
    """The IdP, serving on 127.0.0.1 in a thread until the block ends."""
    port = free_port()
    key_file, cert_file = key_pair(directory, "idp")
    idp = IdentityProvider(f"http://127.0.0.1:{port}", key_file, cert_file)
    server: WSGIServer = make_server("127.0.0.1", port, idp.app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
