"""How an existing account signs in, for a registration that collided with it
(``selfservice.flows.registration.login_hints``; Kratos ``identity/manager.go``
``findExistingAuthMethod`` and ``ConflictingIdentity``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.identity.model import Identity


@dataclass(frozen=True, slots=True)
class LoginHints:
    available_credential_types: list[str] = field(default_factory=list)
    available_oidc_providers: list[str] = field(default_factory=list)
    credential_identifier_hint: str = ""

    def any(self) -> bool:
        return bool(
            self.available_credential_types
            or self.available_oidc_providers
            or self.credential_identifier_hint
        )


def hints_for(found: Identity, conflict_value: str, conflict_type: str) -> LoginHints:
    """What ``found`` (the account that owns ``conflict_value``) can sign in with.

    Only first factors count (password with a hash, code, social sign-in, passwordless keys):
    second factors do not tell a user how to start. An OIDC subject is never shown as the
    identifier (it is the provider's id, meaningless to the user).
    """
    hint = conflict_value.strip() if conflict_type != "oidc" else ""
    types: set[str] = set()
    providers: list[str] = []
    for credential in sorted(found.credentials.values(), key=lambda c: c.type):
        config = credential.config or {}
        if credential.type == "password":
            if not hint and len(credential.identifiers) == 1:
                hint = credential.identifiers[0]
            if config.get("hashed_password"):
                types.add("password")
        elif credential.type == "code":
            types.add("code")
        elif credential.type == "oidc":
            types.add("oidc")
            entries = config.get("providers")
            providers = (
                [str(e.get("provider")) for e in entries if isinstance(e, dict)]
                if isinstance(entries, list)
                else []
            )
        elif credential.type in ("webauthn", "passkey"):
            if not hint and len(credential.identifiers) == 1:
                hint = credential.identifiers[0]
            keys = config.get("credentials")
            if isinstance(keys, list) and any(isinstance(k, dict) and k.get("is_passwordless") for k in keys):
                types.add(credential.type)
    return LoginHints(sorted(types), sorted(providers), hint)


_HUMAN = {
    "password": "your password",
    "oidc": "social sign in",
    "saml": "social sign in",
    "webauthn": "your passkey or a security key",
    "passkey": "your passkey",
}


def hints_text(hints: LoginHints) -> str:
    """Kratos' ``text.NewErrorValidationDuplicateCredentialsWithHints`` wording, word for word."""
    identifier = hints.credential_identifier_hint or "an email, phone, or username"
    reason = f"You tried signing in with {identifier} which is already in use by another account."
    if hints.available_credential_types:
        human = [_HUMAN[t] for t in hints.available_credential_types if t in _HUMAN]
        if not human:
            human = list(hints.available_credential_types)
        human = list(dict.fromkeys(human))
        if len(human) > 1:
            human[-1] = "or " + human[-1]
        reason += f" You can sign in using {', '.join(human)}."
    if hints.available_oidc_providers:
        titled = ", ".join(p.title() for p in hints.available_oidc_providers)
        reason += f" You can sign in using one of the following social sign in providers: {titled}."
    return reason
