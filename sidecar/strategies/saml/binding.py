"""What the rest of sidecar knows of the SAML method's HTTP face without loading pysaml2: the
endpoints' path, the largest message read, and where the pages' forms may be sent.

pysaml2 costs ~0.5 s of CPU to import (``python -X importtime -c "import saml2.config"``; its XML
schemas, ``saml2.xml.schema``, alone 0.28 s), paid by every ``sidecar serve`` although most
deployments never enable SAML. The route and page builders import this module; the modules that
speak SAML (``protocol``, ``connections``, ``strategy``, ``acs``) load only with the method on
(``sidecar.strategies.saml.method``).
"""

from __future__ import annotations

from defusedxml import ElementTree

from sidecar.config.model import SamlProvider
from sidecar.security.jsonnet import load_source

PATH = "/self-service/methods/saml"
MAX_MESSAGE = 256 * 1024
_MD = "urn:oasis:names:tc:SAML:2.0:metadata"


def raw_metadata(raw: str, key: str) -> str:
    """Inline metadata (XML) as it is, else the file or ``base64://`` source it names."""
    if raw.lstrip().startswith("<"):
        return raw
    return load_source(raw, key)


def form_action_origins(method_enabled: bool, providers: list[SamlProvider]) -> list[str]:
    """Where the pages' forms may be redirected (CSP ``form-action``): the single sign-on
    endpoints of inline or file metadata, else the origin of ``idp_metadata_url``."""
    if not method_enabled:
        return []
    out: list[str] = []
    for p in providers:
        if p.idp_metadata_url:
            out.append(p.idp_metadata_url)
            continue
        try:
            root = ElementTree.fromstring(
                raw_metadata(p.raw_idp_metadata_xml or "", "metadata"), forbid_dtd=True
            )
        except Exception:  # noqa: S112 - refused with its reason when the connection is built
            continue
        out += [
            e.get("Location") or "" for e in root.iter(f"{{{_MD}}}SingleSignOnService") if e.get("Location")
        ]
    return out
