"""``selfservice.flows.login.style: identifier_first`` (Kratos ``selfservice/strategy/idfirst``).

First screen: the identifier (group ``identifier_first``, ``autocomplete="username webauthn"``,
labelled from the schema as Kratos' ``GetIdentifierLabelFromSchema``), the methods that need no
identifier (social sign-in, passkey) and a ``method=identifier_first`` "Continue" button.
Submitting it looks the identifier up and answers with the second screen: the identifier kept as
a hidden input and each method the identity can use (``login_credential_nodes``), for JSON clients as
the flow with 400, for browsers as a 303 to the UI, as Kratos does. The flow stays in
``choose_method``; the credential submission that follows is an ordinary login.

Account enumeration: an unknown identifier gets the screen any account gets (every method, as
Kratos with ``security.account_enumeration.mitigate``); Kratos without mitigation answers it with
4000037 "This account does not exist", which sidecar never does. With mitigation on, a known
identifier gets that same screen too; off, it gets only its own methods (Kratos), and 4000037 when
it has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sidecar.flows import messages, nodes
from sidecar.flows.messages import Text
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import FlowInvalid
from sidecar.flows.strategy import LoginStrategy
from sidecar.identity.model import Identity
from sidecar.schema.model import IdentitySchema
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.identifiers import normalize_identifier

METHOD = "identifier_first"
FindIdentity = Callable[[str], Awaitable[Identity | None]]


def identifier_label(schema: IdentitySchema) -> Text:
    """One identifier trait with a title names the field; otherwise "ID" (Kratos
    ``login/extension_identifier_label.go``)."""
    found = []
    for f in schema.trait_fields():
        creds = f.extension.get("credentials")
        creds = creds if isinstance(creds, Mapping) else {}
        passkey, totp = creds.get("passkey"), creds.get("totp")
        if (
            f.identifier_for
            or (isinstance(passkey, Mapping) and passkey.get("display_name") is True)
            or (isinstance(totp, Mapping) and totp.get("account_name") is True)
        ):
            found.append(f)
    if len(found) == 1 and found[0].title:
        return messages.label_trait(found[0].title)
    return messages.label_identifier()


class IdentifierFirst:
    def __init__(self, schemas: SchemaRegistry, find_identity: FindIdentity, *, mitigate: bool) -> None:
        self._schemas = schemas
        self._find = find_identity
        self._mitigate = mitigate

    def _identifier_node(self, flow: Flow) -> Node:
        schema = self._schemas.get(flow.identity_schema) if flow.identity_schema else self._schemas.default()
        return nodes.input_node(
            "identifier",
            METHOD,
            "text",
            required=True,
            autocomplete="username webauthn",
            label=identifier_label(schema),
        )

    def first_screen(self, flow: Flow, strategies: Sequence[LoginStrategy]) -> list[Node]:
        out = [self._identifier_node(flow)]
        flow.ui.nodes.extend(out)  # methods that read the identifier node (passkey autofill) see it
        added: list[Node] = []
        for strategy in strategies:
            added.extend(strategy.identification_nodes(flow))
        del flow.ui.nodes[-len(out) :]
        return [*out, *added, nodes.submit_node(METHOD, METHOD, messages.label_continue())]

    async def second_screen(
        self, flow: Flow, body: Mapping[str, Any], strategies: Sequence[LoginStrategy]
    ) -> None:
        """Move ``flow`` to the credentials screen; always raises FlowInvalid, whose (empty)
        messages make the flow be shown again (Kratos' ``ErrCompletedByStrategy``)."""
        identifier = body.get("identifier")
        if not isinstance(identifier, str) or not identifier.strip():
            raise FlowInvalid(node_messages={"identifier": [messages.required("identifier")]})
        identifier = identifier.strip()
        found = await self._find(identifier)
        hint = None if self._mitigate else found
        hidden = self._identifier_node(flow)
        hidden["attributes"]["type"] = "hidden"
        hidden["attributes"]["value"] = identifier
        kept = [n for n in flow.ui.nodes if n["attributes"].get("name") == "csrf_token"]
        previous = flow.ui.nodes
        flow.ui.nodes = [*kept, hidden]
        offered: list[Node] = []
        for strategy in strategies:
            got = strategy.login_credential_nodes(flow, hint)
            if got is not None:
                offered.extend(got)
        if not offered:
            # Only a known identity without a usable method lands here (an unknown one is hint None).
            flow.ui.nodes = previous
            raise FlowInvalid([messages.account_not_found()], values={"identifier": identifier})
        flow.ui.nodes.extend(offered)
        # Kratos also sets ``active: identifier_first``, which its own OpenAPI enum (and so the
        # generated SDKs) refuse when the flow is fetched; the flow keeps no active method here.
        raise FlowInvalid()


async def find_by_any_identifier(
    identifier: str, lookup: Callable[[str, str], Awaitable[Identity | None]]
) -> Identity | None:
    """Kratos' ``FindIdentityByCredentialIdentifier``: any credential's identifier matches."""
    for kind in ("password", "code", "webauthn", "passkey"):
        found = await lookup(kind, normalize_identifier(identifier, kind))
        if found is not None:
            return found
    return None
