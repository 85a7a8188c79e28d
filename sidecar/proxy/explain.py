"""Why a request gets the answer it gets: the walk over the rules and the decision, as data.

``sidecar rules explain`` prints it, the admin console draws it and ``sidecar rules test`` tables
decide with ``decide``: all three use the proxy's own path normalisation, rule matching and
judgement (``rules/decision.py``), so an explanation is what the proxy would answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sidecar.i18n import N_, Phrase, Phrases, recognise
from sidecar.proxy.access import Outcome
from sidecar.proxy.paths import BadPath, normalise_path
from sidecar.rules.decision import REASONS, Verdict, judge
from sidecar.rules.model import MATCHED, Rule, RuleSet, normalise_host
from sidecar.session.resolver import ResolvedSession

OUTCOMES = {
    Verdict.ALLOW: "allow",
    Verdict.LOGIN: "login required (browser: redirect to login; API: 401 session_inactive)",
    Verdict.STEP_UP: "step-up required (browser: login with aal=aal2; API: 403 session_aal2_required)",
    Verdict.FORBIDDEN: "forbidden (403)",
    Verdict.UNAVAILABLE: "session store unavailable (503)",
}


# Why ``decide`` answers as it does before a rule is judged: msgids, like the judgement's own
# (``rules.decision.REASONS``), so the console says them in the reader's language.
NO_RULE = N_("no rule matched (default deny)")
RULE_DENIES = N_("rule {rule} denies")
RULE_PUBLIC = N_("rule {rule} is public")
RULE_ANONYMOUS = N_("rule {rule} allows anonymous access")
NO_SESSION = N_("no valid session")
# What a rule requires (``describe``): the level as written in the rules file, then its conditions.
_LEVELS = {
    "public": N_("public"),
    "optional": N_("optional"),
    "authenticated": N_("authenticated"),
    "deny": N_("deny"),
}
VERIFIED = N_("a verified address")
ONE_OF_ROLES = N_("one of roles {roles}")
MEMBER_OF = N_("a member of organization {organizations}")
TRAIT_EQUALS = N_("trait {trait} == {value}")
# Between two requirements: the language's list comma.
AND = N_(", ")


def decide(
    ruleset: RuleSet,
    method: str,
    host: str,
    path: str,
    session: ResolvedSession | None,
    api: bool,
    required_aal: str,
) -> Outcome:
    """``Access._check`` for a known session: the same branches, without the session store."""
    rule = ruleset.match(method, host, path)
    if rule is None:
        return Outcome(Verdict.FORBIDDEN, None, None, api, NO_RULE)
    api = api if rule.on_unauthenticated is None else rule.on_unauthenticated == "json"
    level = rule.require.level
    if level == "deny":
        return Outcome(Verdict.FORBIDDEN, rule, None, api, RULE_DENIES.format(rule=repr(rule.id)))
    if level == "public":
        return Outcome(Verdict.ALLOW, rule, None, api, RULE_PUBLIC.format(rule=repr(rule.id)))
    if session is None:
        if level == "optional":
            return Outcome(Verdict.ALLOW, rule, None, api, RULE_ANONYMOUS.format(rule=repr(rule.id)))
        return Outcome(Verdict.LOGIN, rule, None, api, NO_SESSION)
    verdict, reason, identified = judge(rule, session, required_aal)
    return Outcome(verdict, rule, session if identified else None, api, reason)


def describe(rule: Rule) -> Phrases:
    """What a rule requires, in words (``authenticated, aal2, one of roles ['admin']``): English
    as ``str()``, the reader's language where the console prints it."""
    req = rule.require
    parts: list[Phrase] = [Phrase(_LEVELS[req.level])]
    if req.aal2:
        parts.append(Phrase("aal2"))
    if req.verified:
        parts.append(Phrase(VERIFIED))
    if req.roles is not None:
        parts.append(Phrase(ONE_OF_ROLES, roles=str(sorted(req.roles))))
    if req.organizations is not None:
        parts.append(Phrase(MEMBER_OF, organizations=str(sorted(req.organizations))))
    parts += [Phrase(TRAIT_EQUALS, trait=k, value=repr(v)) for k, v in req.traits.items()]
    return Phrases(parts, AND)


def reason_phrase(reason: str) -> Phrase:
    """An outcome's English reason as the phrase it was made from (its values found again), so it
    can be said in another language; a reason from elsewhere stays as it is."""
    reasons = (*REASONS, NO_RULE, RULE_DENIES, RULE_PUBLIC, RULE_ANONYMOUS, NO_SESSION)
    return recognise(reason, reasons) or Phrase(reason)


@dataclass(frozen=True, slots=True)
class Step:
    rule: Rule
    why: Phrase
    """``matched`` for the deciding rule, else why the rule was passed over."""

    @property
    def matched(self) -> bool:
        return self.why.msgid == MATCHED


@dataclass(frozen=True, slots=True)
class Explanation:
    method: str
    url: str
    problem: str | None = None
    """Set when the request never reaches the rules: not an absolute URL, or a path refused (400)."""
    problem_status: int = 0
    host: str = ""
    path: str = ""
    steps: tuple[Step, ...] = ()
    matched: Rule | None = None
    outcome: Outcome | None = None

    @property
    def verdict(self) -> Verdict | None:
        return self.outcome.verdict if self.outcome is not None else None

    @property
    def outcome_text(self) -> str:
        if self.outcome is None:
            return ""
        if self.matched is None:
            return "forbidden (403, default deny)"
        return OUTCOMES[self.outcome.verdict]


def explain_request(
    ruleset: RuleSet,
    method: str,
    url: str,
    session: ResolvedSession | None,
    required_aal: str = "aal1",
) -> Explanation:
    """Walk ``ruleset`` for ``method url`` as the proxy would, and decide for ``session``."""
    method = method.upper()
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return Explanation(method, url, problem=f"not an absolute URL: {url}", problem_status=2)
    try:
        path = normalise_path((parts.path or "/").encode("latin-1"))
    except (BadPath, UnicodeEncodeError) as exc:
        return Explanation(
            method, url, problem=f"400: the path is ambiguous or malformed: {exc}", problem_status=400
        )
    host = normalise_host(parts.netloc)
    steps = tuple(Step(rule, why) for rule, why in ruleset.explain(method, host, path))
    matched = next((s.rule for s in steps if s.matched), None)
    outcome = decide(ruleset, method, host, path, session, True, required_aal)
    return Explanation(method, url, host=host, path=path, steps=steps, matched=matched, outcome=outcome)
