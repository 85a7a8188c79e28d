"""Which hooks Kratos allows where (``embedx/config.schema.json`` of Kratos v25.4.0).

A hook in a place Kratos does not allow it, or a hook sidecar does not have, fails the load with
its key path and the reason, instead of loading and doing nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# selfServiceBeforeLogin / ...Registration / ...Settings / ...Recovery / ...Verification: "selfServiceHooks".
BEFORE = frozenset({"web_hook"})

_LOGIN_METHOD = frozenset(
    {"revoke_active_sessions", "require_verified_address", "web_hook", "verification", "show_verification_ui"}
)
_REGISTRATION_METHOD = frozenset({"session", "web_hook", "show_verification_ui"})
_SETTINGS_AUTH = frozenset({"web_hook", "revoke_active_sessions"})

# flow -> {None: top-level after.hooks, method: after.<method>.hooks}
AFTER: dict[str, dict[str | None, frozenset[str]]] = {
    "login": {
        None: _LOGIN_METHOD,
        **{m: _LOGIN_METHOD for m in ("password", "webauthn", "passkey", "code", "totp", "lookup_secret")},
        "oidc": frozenset({"revoke_active_sessions", "web_hook", "require_verified_address"}),
    },
    # Kratos allows only web_hook at the top; sidecar has always taken the per-method hooks there
    # too (its default is a top-level ``session``), as the fallback for every method.
    "registration": {
        None: _REGISTRATION_METHOD,
        **{m: _REGISTRATION_METHOD for m in ("password", "webauthn", "passkey", "oidc", "code")},
    },
    "settings": {
        None: frozenset({"web_hook"}),
        **{m: _SETTINGS_AUTH for m in ("password", "totp", "oidc", "webauthn", "passkey", "lookup_secret")},
        "profile": frozenset({"web_hook", "show_verification_ui"}),
    },
    "recovery": {None: frozenset({"web_hook", "revoke_active_sessions"})},
    "verification": {None: frozenset({"web_hook"})},
}

_NOT_HERE = {
    # Kratos' schema lists them (b2bSSOHook) but only Ory Network implements them.
    "b2b_sso": "Ory Network's hook, not in open-source Kratos; sidecar's organizations need no hook",
    "organization": "Ory Network's hook, not in open-source Kratos; sidecar's organizations need no hook",
}
# Kratos hooks sidecar does not run yet in a place Kratos allows them: refused, never ignored.
NOT_YET: dict[tuple[str, str], str] = {
    ("settings", "show_verification_ui"): "sidecar does not start verification from settings",
}


def _check_list(flow: str, where: str, hooks: Iterable[Any], allowed: frozenset[str]) -> list[str]:
    problems = []
    for i, hook in enumerate(hooks):
        name = (
            hook.hook
            if hasattr(hook, "hook")
            else (hook or {}).get("hook")
            if isinstance(hook, Mapping)
            else None
        )
        if name in allowed and (flow, name) not in NOT_YET:
            if name == "web_hook":
                problems += _check_web_hook(f"{where}[{i}]", hook)
            continue
        why = NOT_YET.get((flow, str(name))) if name in allowed else None
        why = (
            why
            or _NOT_HERE.get(str(name))
            or (
                f"allowed here: {', '.join(sorted(n for n in allowed if (flow, n) not in NOT_YET)) or 'none'}"
                if name in _ALL
                else f"unknown hook (Kratos' hooks: {', '.join(sorted(_ALL))})"
            )
        )
        problems.append(f"{where}[{i}]: hook {name!r} is not supported here: {why}")
    return problems


def _check_web_hook(where: str, hook: Any) -> list[str]:
    from pydantic import ValidationError

    from sidecar.config.webhook import WebHookConfig

    config = hook.config if hasattr(hook, "config") else (hook or {}).get("config")
    try:
        WebHookConfig.model_validate(config or {})
    except ValidationError as exc:
        return [
            f"{where}.config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}".replace(
                ".config.: ", ".config: "
            )
            for e in exc.errors()
        ]
    return []


_ALL = frozenset().union(*(s for places in AFTER.values() for s in places.values()))


def check_flow_hooks(
    flow: str, before: Iterable[Any], after_hooks: Iterable[Any], after_extra: Mapping[str, Any]
) -> None:
    """Raise ``ValueError`` naming every hook (and per-method section) Kratos would refuse."""
    places = AFTER[flow]
    problems = _check_list(flow, "before.hooks", before, BEFORE)
    problems += _check_list(flow, "after.hooks", after_hooks, places[None])
    for method, section in after_extra.items():
        if method not in places:
            known = ", ".join(sorted(m for m in places if m))
            problems.append(f"after.{method}: not a method Kratos runs {flow} hooks for ({known})")
            continue
        if not isinstance(section, Mapping):
            problems.append(f"after.{method}: expected a mapping")
            continue
        unknown = set(section) - {"hooks", "default_browser_return_url"}
        if unknown:
            problems.append(f"after.{method}.{sorted(unknown)[0]}: unknown key")
        problems += _check_list(flow, f"after.{method}.hooks", section.get("hooks") or [], places[method])
    if problems:
        raise ValueError("; ".join(problems))
