"""The configured SAML connections, each with its identity provider's metadata and pysaml2
configuration (``selfservice.methods.saml.config.providers[]``).

Inline and file metadata is read and checked at start, so a broken connection stops the process
with the key named; metadata behind ``idp_metadata_url`` is fetched when first needed and again
after ``metadata_refresh``.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from saml2.config import SPConfig

from sidecar import errors
from sidecar.config.model import Config, SamlProvider
from sidecar.flows import messages
from sidecar.flows.outcome import FlowInvalid
from sidecar.security.jsonnet import load_source
from sidecar.strategies.federation.jit import Connection
from sidecar.strategies.saml.binding import PATH, raw_metadata
from sidecar.strategies.saml.protocol import IdpFacts, SpSettings, idp_facts, sp_config

DEFAULT_MAPPER = """
local claims = std.extVar('claims');
local a = claims.attributes;
local first(k) = if k in a && std.length(a[k]) > 0 then a[k][0] else null;
local emails = std.prune([
  first('email'), first('mail'), first('emailAddress'),
  first('http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress'),
  if claims.name_id_format == 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress' then claims.sub,
]);
{ identity: { traits: if std.length(emails) > 0 then { email: emails[0] } else {} } }
"""


def _file(url: str, key: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("file", ""):
        raise ValueError(f"{key}: use file://<path>")
    return unquote(parts.netloc + parts.path) if parts.scheme == "file" else url


@dataclass(frozen=True, slots=True)
class SamlConnection:
    provider: SamlProvider
    settings: SpSettings
    mapper: str

    @property
    def id(self) -> str:
        return self.provider.id

    @property
    def label(self) -> str:
        return self.provider.label or self.provider.id

    def facts(self) -> Connection:
        return Connection(self.id, self.label, self.provider.organization_id)


class SamlConnections:
    def __init__(self, config: Config, http: httpx.AsyncClient | None = None) -> None:
        method = config.selfservice.methods.saml.config
        if method.providers and shutil.which("xmlsec1") is None:
            raise ValueError(
                "selfservice.methods.saml: xmlsec1 is not installed (Debian: apt-get install xmlsec1)"
            )
        self.base = config.public_base_url.rstrip("/")
        self.mapper_timeout = method.mapper_timeout.total_seconds()
        self._refresh = method.metadata_refresh.total_seconds()
        key_file = cert_file = None
        if method.signing is not None:
            key_file = _file(method.signing.key_url, "selfservice.methods.saml.config.signing.key_url")
            cert_file = _file(
                method.signing.certificate_url, "selfservice.methods.saml.config.signing.certificate_url"
            )
            for path, name in ((key_file, "key_url"), (cert_file, "certificate_url")):
                if not Path(path).is_file():
                    raise ValueError(f"selfservice.methods.saml.config.signing.{name}: no file {path}")
        self.by_id: dict[str, SamlConnection] = {}
        self._configs: dict[str, tuple[float, SPConfig]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        for i, p in enumerate(method.providers):
            key = f"selfservice.methods.saml.config.providers.{i}"
            settings = SpSettings(
                entity_id=p.entity_id or f"{self.base}{PATH}/metadata/{p.id}",
                acs_url=f"{self.base}{PATH}/acs/{p.id}",
                slo_url=f"{self.base}{PATH}/slo/{p.id}",
                allow_unsolicited=p.allow_idp_initiated,
                clock_skew=int(method.clock_skew.total_seconds()),
                key_file=key_file,
                cert_file=cert_file,
            )
            mapper = load_source(p.mapper_url, f"{key}.mapper_url") if p.mapper_url else DEFAULT_MAPPER
            self.by_id[p.id] = SamlConnection(p, settings, mapper)
            if p.raw_idp_metadata_xml is not None:
                xml = raw_metadata(p.raw_idp_metadata_xml, f"{key}.raw_idp_metadata_xml")
                try:
                    self._configs[p.id] = (float("inf"), sp_config(settings, xml))
                except ValueError as exc:
                    raise ValueError(f"{key}.raw_idp_metadata_xml: {exc}") from None
            else:
                self._locks[p.id] = asyncio.Lock()
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    def get(self, connection_id: Any) -> SamlConnection:
        found = self.by_id.get(connection_id) if isinstance(connection_id, str) else None
        if found is None:
            raise FlowInvalid([messages.generic(f"Unknown sign-in provider {str(connection_id)[:64]!r}.")])
        return found

    def find(self, connection_id: str) -> SamlConnection | None:
        return self.by_id.get(connection_id)

    def loaded(self, connection: SamlConnection) -> SPConfig | None:
        """The configuration as last loaded (stale or not); None before remote metadata was first
        fetched. Never fetches: for read-only views."""
        cached = self._configs.get(connection.id)
        return cached[1] if cached is not None else None

    def loaded_facts(self, connection: SamlConnection) -> IdpFacts | None:
        """What the identity provider's metadata as last loaded says (``loaded``); None before
        remote metadata was first fetched. Reads certificates: run it in a thread."""
        config = self.loaded(connection)
        return idp_facts(config) if config is not None else None

    async def sp_config(self, connection: SamlConnection) -> SPConfig:
        """pysaml2's configuration for ``connection``; 502 when remote metadata cannot be had."""
        cached = self._configs.get(connection.id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lock = self._locks[connection.id]
        async with lock:
            cached = self._configs.get(connection.id)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            url = connection.provider.idp_metadata_url or ""
            try:
                response = await self._http.get(url)
                response.raise_for_status()
                config = await asyncio.to_thread(sp_config, connection.settings, response.text)
            except (httpx.HTTPError, ValueError) as exc:
                if cached is not None:
                    return cached[1]  # keep the last good metadata through an outage
                raise errors.BadGateway(
                    f"The identity provider's metadata could not be loaded: {str(exc)[:200]}"
                ) from None
            self._configs[connection.id] = (time.monotonic() + self._refresh, config)
            return config
