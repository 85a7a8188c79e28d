"""The judgement of a matched rule over a signed-in subject (DESIGN §5.4), as plain values.

Shared by the proxy, every decision dialect and ``sidecar rules explain``, so all of them decide
alike. Pure: no session store, no HTTP; the caller resolves the session and phrases the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, Protocol

from sidecar.i18n import N_
from sidecar.rules.model import Rule


class Verdict(enum.Enum):
    ALLOW = "allow"
    LOGIN = "login"  # no (valid) session
    STEP_UP = "step_up"  # session is aal1, rule needs aal2
    FORBIDDEN = "forbidden"  # signed in but not allowed, deny rule, or no matching rule
    UNAVAILABLE = "unavailable"  # the session store is down: fail closed


class Subject(Protocol):
    """What a rule may require of the signed-in identity (``ResolvedSession`` is one)."""

    @property
    def aal(self) -> str: ...

    @property
    def available_aal(self) -> str:
        """The highest level the identity's credentials allow."""
        ...

    @property
    def roles(self) -> frozenset[str]: ...

    @property
    def traits(self) -> Mapping[str, Any]: ...

    @property
    def verified(self) -> bool: ...

    @property
    def organization_id(self) -> Any:
        """The identity's organization id (a UUID), or None."""
        ...

    @property
    def organization_slug(self) -> str | None: ...


Judgement = tuple[Verdict, str, bool]
"""(verdict, reason, whether the answer carries the identity: False serves the request anonymously)."""

# A reason is English (logs, ``sidecar rules explain``) made from a msgid, so the console can say
# it in the reader's language (``sidecar.proxy.explain.reason_phrase``).
NEEDS_ORGANIZATION: Final = N_("needs membership of organization {organizations}")
NEEDS_ROLE: Final = N_("needs one of the roles {roles}")
TRAIT_DIFFERS: Final = N_("trait {trait} does not equal {expected}")
NEEDS_AAL2: Final = N_("needs aal2, session is {aal}")
# The common answers are constants: judging an allowed request allocates nothing.
ALLOWED: Final[Judgement] = (Verdict.ALLOW, N_("allowed by the rule"), True)
_ANONYMOUS: Final[Judgement] = (Verdict.ALLOW, N_("second factor pending; served anonymously"), False)
_STEP_UP: Final[Judgement] = (Verdict.STEP_UP, N_("the identity has aal2 available"), True)
_UNVERIFIED: Final[Judgement] = (Verdict.FORBIDDEN, N_("needs a verified address"), True)
REASONS: Final = (
    ALLOWED[1],
    _ANONYMOUS[1],
    _STEP_UP[1],
    _UNVERIFIED[1],
    NEEDS_ORGANIZATION,
    NEEDS_ROLE,
    TRAIT_DIFFERS,
    NEEDS_AAL2,
)


def judge(rule: Rule, subject: Subject, required_aal: str = "aal1") -> Judgement:
    """May ``subject`` pass ``rule``? ``required_aal`` is ``session.whoami.required_aal``."""
    req = rule.require
    if required_aal == "highest_available" and subject.aal < subject.available_aal:
        # A first factor alone must not pass while the identity has a second factor set up
        # (Kratos' whoami answers session_aal2_required here): step up, or stay anonymous.
        if req.level == "optional" and not req.has_conditions:
            return _ANONYMOUS
        return _STEP_UP
    if req.organizations is not None and not _member(req.organizations, subject):
        return (Verdict.FORBIDDEN, NEEDS_ORGANIZATION.format(organizations=sorted(req.organizations)), True)
    if req.roles is not None and not (req.roles & subject.roles):
        return (Verdict.FORBIDDEN, NEEDS_ROLE.format(roles=sorted(req.roles)), True)
    for key, expected in req.traits.items():
        if subject.traits.get(key) != expected:
            return (Verdict.FORBIDDEN, TRAIT_DIFFERS.format(trait=repr(key), expected=repr(expected)), True)
    if req.verified and not subject.verified:
        return _UNVERIFIED
    if req.aal2 and subject.aal != "aal2":
        return (Verdict.STEP_UP, NEEDS_AAL2.format(aal=subject.aal), True)
    return ALLOWED


def _member(organizations: frozenset[str], subject: Subject) -> bool:
    org = subject.organization_id
    if org is None:
        return False
    return str(org) in organizations or (subject.organization_slug or "") in organizations
