"""Steps 2-4 of the access path (DESIGN §5): rule, session, decision. Shared by the proxy and the
decision endpoints, which differ only in how they read the original request and phrase the answer.

``Access.check`` takes plain values and returns an ``Outcome``; the judgement itself is the rules'
(``sidecar.rules.decision``). ``Access.check_cached`` is the same check without I/O (None when it
would need the session store), for answers made inside the HTTP protocol. Nothing here touches ASGI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from typing import Any

from sidecar import errors, waiting
from sidecar.config.model import Config
from sidecar.metrics import Metrics
from sidecar.proxy.headers import parse_cookie
from sidecar.rules.decision import Verdict, judge
from sidecar.rules.holder import RulesHolder
from sidecar.rules.model import Rule, RuleSet
from sidecar.security.tokens import digest
from sidecar.session.resolver import ResolvedSession, SessionResolver
from sidecar.tracing import Tracing

_ID_TEXT = "identity_id_text"


# The request headers ``RequestFacts.read`` reads, by lower-case name; 0 for any other.
_COOKIE, _SESSION_TOKEN, _AUTHORIZATION, _ACCEPT, _FETCH_MODE, _FETCH_DEST, _REQUESTED_WITH, _ORIGINAL = (
    range(1, 9)
)
_FACTS = {
    b"cookie": _COOKIE,
    b"x-session-token": _SESSION_TOKEN,
    b"authorization": _AUTHORIZATION,
    b"accept": _ACCEPT,
    b"sec-fetch-mode": _FETCH_MODE,
    b"sec-fetch-dest": _FETCH_DEST,
    b"x-requested-with": _REQUESTED_WITH,
}
_KINDS: dict[bytes, int] = {}
"""``_FACTS`` by header name as received (lower-case from an ASGI server, any case from a test),
filled as names are seen: a name lower-cased and compared once, not on every request. Bounded:
clients choose the names."""


ORIGINAL_PREFIXES = (b"x-original-", b"x-forwarded-", b"host")
"""The lower-case names a decision endpoint's dialect may read the original request from
(``sidecar.proxy.decisions.Dialect.original``): ``RequestFacts.read``'s ``original``."""
_WITH_ORIGINAL: dict[bytes, int] = {}
"""``_KINDS`` for a read that also collects the original request's headers: ``_ORIGINAL`` for a
name that starts with one of ``ORIGINAL_PREFIXES`` (lower-cased), whose lower-case form is in
``_LOWER``. Bounded as ``_KINDS``."""
_LOWER: dict[bytes, bytes] = {}


def _kind(name: bytes) -> int:
    kind = _FACTS.get(name.lower(), 0)
    if len(_KINDS) > 1024:
        _KINDS.clear()
    _KINDS[name] = kind
    return kind


def _kind_with_original(name: bytes) -> int:
    lower = name.lower()
    kind = _FACTS.get(lower, 0)
    if not kind and lower.startswith(ORIGINAL_PREFIXES):
        kind = _ORIGINAL
    if len(_WITH_ORIGINAL) > 1024:
        _WITH_ORIGINAL.clear()
        _LOWER.clear()
    if kind == _ORIGINAL:
        _LOWER[name] = lower
    _WITH_ORIGINAL[name] = kind
    return kind


@dataclass(slots=True)
class RequestFacts:
    """What the decision reads from the request headers, collected in one pass."""

    token: str | None = None
    token_from_bearer: bool = False
    api: bool = False

    @classmethod
    def read(
        cls,
        headers: list[tuple[bytes, bytes]],
        cookie_name: bytes,
        original: dict[bytes, bytes] | None = None,
    ) -> RequestFacts:
        """The facts of ``headers``. With ``original``, the same pass also puts there the first
        value of every header whose lower-case name starts with one of ``ORIGINAL_PREFIXES``, by
        that name: what a decision endpoint's dialect reads the original request from (one loop
        over the headers instead of two: ``DecisionEndpoints._asked``)."""
        session_token = bearer = cookie = None
        requested_with = fetch_mode = fetch_dest = None
        html = False
        if original is None:
            kinds, classify = _KINDS, _kind
        else:
            kinds, classify = _WITH_ORIGINAL, _kind_with_original
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                kind = classify(name)
            if not kind:
                continue
            if kind == _ORIGINAL:
                original.setdefault(_LOWER[name], value)  # type: ignore[union-attr]  # (only with one)
            elif kind == _COOKIE:
                if cookie is None:
                    cookie = parse_cookie(value, cookie_name)
            elif kind == _SESSION_TOKEN:
                session_token = value
            elif kind == _AUTHORIZATION:
                if value[:7].lower() == b"bearer ":
                    bearer = value[7:].strip()
            elif kind == _ACCEPT:
                html = value.find(b"text/html") != -1  # not ``in`` (proxy.paths.normalise_path)
            elif kind == _FETCH_MODE:
                fetch_mode = value
            elif kind == _FETCH_DEST:
                fetch_dest = value
            else:
                requested_with = value
        # proxy-conventions.md "Browser navigation or API call": first signal that applies wins.
        if session_token or bearer or (requested_with and requested_with.lower() == b"xmlhttprequest"):
            api = True
        elif fetch_mode == b"navigate" or fetch_dest == b"document":
            api = False
        elif fetch_mode is not None:
            api = True
        else:
            api = not html
        raw = session_token or bearer or cookie
        token = raw.decode("latin-1") if raw else None
        return cls(token=token, token_from_bearer=session_token is None and bearer is not None, api=api)


def identity_text(session: ResolvedSession) -> str:
    """``str(session.identity_id)``, made once per session (in its memo): formatting a UUID costs
    ~0.4 µs, and the access log and the identity headers both want it."""
    text: str | None = session.memo.get(_ID_TEXT)
    if text is None:
        text = session.memo[_ID_TEXT] = str(session.identity_id)
    return text


@dataclass(slots=True)
class Outcome:
    verdict: Verdict
    rule: Rule | None
    session: ResolvedSession | None
    api: bool
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


Noted = tuple[Outcome, RuleSet, Rule | None, str | None, ResolvedSession | None]
"""A check made without I/O: the outcome, the rule set and rule, the token's digest when the session
cache was read, what it held."""
Checked = Noted
"""What ``Access.check_noted`` hands back for ``Access.replay_of``."""
REPLAY_LATER = "sidecar.replay_later"
"""The scope key of the replay of an answer made from the session store's load (``Access._replay_later``
and the layers around it: ``DecisionEndpoints``, ``AccessLog``, ``sidecar.http_protocol``)."""
_RECORDED = ("sidecar.path", "sidecar.rule", "sidecar.decision", "sidecar.identity_id")
_FAILED: Any = object()  # the load failed: no value to replay from
Replayed = tuple[Outcome, MutableMapping[str, Any]] | None
"""What a replay's load gave: None, the same outcome (counted); or another outcome and the scope it
was recorded in."""
Later = waiting.Later[Outcome]
"""``check``'s outcome, once the session store has answered (``Access.check_cached`` with ``later``)."""


class Access:
    """Rule, session, judgement: ``check`` answers an ``Outcome`` for one request."""

    def __init__(
        self,
        config: Config,
        resolver: SessionResolver,
        rules: RulesHolder,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.resolver = resolver
        self.rules = rules
        self.cookie_name = config.session.cookie.name.encode()
        self.required_aal = config.session.whoami.required_aal
        self._digests: dict[str, str] = {}
        self._observers: dict[tuple[str, str], Callable[[float], None]] = {}

    def _observer(self, rule_id: str, decision: str) -> Callable[[float], None]:
        """``metrics.decision_counter(rule_id, decision)``, kept: ``observe_decision``'s count
        without its lookups each time. Bounded (rule ids come and go with reloads)."""
        assert self.metrics is not None
        observers = self._observers
        if len(observers) >= 1024:
            observers.clear()
        observe = observers[rule_id, decision] = self.metrics.decision_counter(rule_id, decision)
        return observe

    def _digest(self, token: str) -> str:
        """``digest(token)``, memoised for the tokens last presented: a session's requests present
        the same token, and with the session cache off (or missed) its SHA-256 was ~6k
        instructions of every request. Bounded (presented tokens are the clients' choice). It
        holds presented tokens, as the request did; what they unlock is the stores' to say, on
        every lookup, by the digest."""
        key = digest(token)
        if len(self._digests) >= 1024:
            self._digests.clear()
        self._digests[token] = key
        return key

    async def check(
        self,
        method: str,
        host: str,
        path: str,
        facts: RequestFacts,
        scope: MutableMapping[str, Any] | None = None,
    ) -> Outcome:
        """Decide, then record the decision: metrics, and the access log's scope keys."""
        started = time.perf_counter()
        outcome = await self._check(method, host, path, facts)
        self._record(outcome, path, started, scope)
        return outcome

    def check_cached(
        self,
        method: str,
        host: str,
        path: str,
        facts: RequestFacts,
        scope: MutableMapping[str, Any] | None = None,
        later: bool = False,
    ) -> Outcome | Later | None:
        """``check`` without I/O, for answers made inside the HTTP protocol (``sidecar.http_protocol``):
        the same outcome and the same records, or None, with nothing recorded or counted, when the
        answer needs the session store (the token is not in the resolver's cache) or tracing is on
        (its spans belong to the ASGI path). With ``later``, the answer that needs the store is a
        coroutine instead of None (``_later``)."""
        checked = self._checked(method, host, path, facts, scope, later)
        return checked[0] if isinstance(checked, tuple) else checked

    def check_noted(
        self,
        method: str,
        host: str,
        path: str,
        facts: RequestFacts,
        scope: MutableMapping[str, Any] | None = None,
    ) -> tuple[Outcome, Checked] | None:
        """``check_cached``, and with its outcome what ``replay_of`` needs to make the replay
        ``check_replayable`` gives, for a caller that wants one only for some outcomes (the fast
        relay's remembered relays: ``sidecar.proxy.fast``)."""
        checked = self._checked(method, host, path, facts, scope)
        if not isinstance(checked, tuple):  # (None: without ``later``, no coroutine)
            return None
        return checked[0], checked

    def replay_of(self, noted: Checked) -> Callable[[], bool]:
        """``check_replayable``'s ``replay`` for a check ``check_noted`` made."""
        outcome, ruleset, rule, key, session = noted
        return self._replay(ruleset, rule, key, session, outcome)

    def check_replayable(
        self,
        method: str,
        host: str,
        path: str,
        facts: RequestFacts,
        scope: MutableMapping[str, Any] | None = None,
        later: bool = False,
    ) -> tuple[Outcome, Callable[[], bool], Callable[[str], bool]] | Later | None:
        """``check_cached``, and with its outcome a ``replay`` for whoever remembers the answer made
        from it (``sidecar.http_protocol``'s memo): ``replay()`` is True, with this check's records
        made again (rule hit, session cache hit, decision metrics), while the same facts would
        still give the same outcome: the same rule set, and the session cache entry that was read
        (when one was) still there, unexpired and the same; else False, with nothing recorded.

        Third, ``same_rule(other_path)``: True when this rule set gives ``other_path`` (normalised)
        the rule that decided here, so that, with ``replay()`` True, the same method, host and facts
        with ``other_path`` get the same outcome (the judgement reads the rule, the session and the
        facts, never the path). Pure: records nothing. ``later``: as ``check_cached``'s."""
        checked = self._checked(method, host, path, facts, scope, later, replayable=True)
        if not isinstance(checked, tuple):
            return checked
        outcome, ruleset, rule, key, session = checked

        def same_rule(other: str) -> bool:
            return rule is not None and ruleset.match(method, host, other) is rule

        return outcome, self._replay(ruleset, rule, key, session, outcome), same_rule

    def _checked(
        self,
        method: str,
        host: str,
        path: str,
        facts: RequestFacts,
        scope: MutableMapping[str, Any] | None,
        later: bool = False,
        replayable: bool = False,
    ) -> Noted | Later | None:
        """``check_cached``'s steps; with the outcome, what a replay needs: the rule set and rule,
        the token's digest when the session cache was read (else None), and what it held. With
        ``later``, a cache miss gives ``_later``'s coroutine instead of None."""
        if self.tracing is not None:
            return None
        started = time.perf_counter()
        ruleset = self.rules.current
        rule = ruleset.match(method, host, path)
        key: str | None = None
        session: ResolvedSession | None = None
        if rule is None:
            outcome = self._unmatched(facts)
        else:
            # ``_api`` and ``_settled``, inlined for the common case (a token on a rule that needs a
            # session): two calls fewer on every request that reads the session.
            unauthenticated = rule.on_unauthenticated
            api = facts.api if unauthenticated is None else unauthenticated == "json"
            token = facts.token
            level = rule.require.level
            settled = (
                None if token and level != "deny" and level != "public" else self._settled(rule, api, token)
            )
            if settled is None:
                assert token  # _settled answers every request without one
                key = self._digests.get(token) or self._digest(token)
                found, session = self.resolver.cached_digest(key)
                if not found:
                    if not later:
                        return None
                    return self._later(ruleset, rule, api, key, path, started, scope, replayable)
                settled = self._judged(rule, api, session)
            outcome = settled
            ruleset.hits[rule.position] += 1
        self._record(outcome, path, started, scope)
        return outcome, ruleset, rule, key, session

    def _later(
        self,
        ruleset: RuleSet,
        rule: Rule,
        api: bool,
        key: str,
        path: str,
        started: float,
        scope: MutableMapping[str, Any] | None,
        replayable: bool = False,
    ) -> Later:
        """``check``'s outcome and records for a request ``_checked`` matched and found missing
        from the session cache: the rule it matched (counted now, as ``check`` counts it), the
        session from the store's load of the digest it made (``SessionResolver.loading``, shared
        with the other misses of that token), judged once that load has settled. ``replayable``
        (``check_replayable``): then, with the outcome, ``scope[REPLAY_LATER]`` is its replay
        (``_replay_later``)."""
        ruleset.hits[rule.position] += 1
        load = self.resolver.loading(key)

        def judged() -> Outcome:
            try:
                session = load.result()
            except errors.ServiceUnavailable:
                outcome = self._unavailable(rule, api)
                session = _FAILED
            else:
                outcome = self._judged(rule, api, session)
            self._record(outcome, path, started, scope)
            if replayable and scope is not None and session is not _FAILED:
                scope[REPLAY_LATER] = self._replay_later(
                    ruleset, rule, api, key, path, session, outcome, scope
                )
            return outcome

        return waiting.later(load, judged)

    def _replay_later(
        self,
        ruleset: RuleSet,
        rule: Rule,
        api: bool,
        key: str,
        path: str,
        value: ResolvedSession | None,
        outcome: Outcome,
        scope: MutableMapping[str, Any],
    ) -> Callable[[], waiting.Later[Replayed] | None]:
        """For an outcome judged from the session store's load (the session cache off or missed):
        ``again()``, the same request judged again, which needs a load of its own: None, with
        nothing recorded, when the rule set changed or the cache holds the token again (the
        request takes the full path); else a
        ``Later`` of a new load of the token (``SessionResolver.loading``: the miss and the rule hit
        counted now, as ``_later`` counts them) whose ``make()`` is None when the load gave this
        very value (the same objects read: ``SessionResolver._load``), so this outcome again, with
        the decision counted; else the new outcome and a copy of ``scope`` with its records
        (``_record``), for the answer to be made afresh."""
        rules, resolver, hits, position = self.rules, self.resolver, ruleset.hits, rule.position
        observe = (
            self.metrics.decision_counter(rule.id, outcome.verdict.value)
            if self.metrics is not None
            else None
        )

        def again() -> waiting.Later[Replayed] | None:
            # The cache holds the token again (its entry filled by a load since, with the cache on):
            # the full path answers it from there and remembers that answer as a cache hit's, so a
            # request that once missed does not read the store on every repeat while the cache
            # could answer it.
            if rules.current is not ruleset or resolver.holds(key):
                return None
            started = time.perf_counter()
            hits[position] += 1
            load = resolver.loading(key)

            def made() -> Replayed:
                try:
                    found = load.result()
                except errors.ServiceUnavailable:
                    fresh = self._unavailable(rule, api)
                else:
                    if found is value:
                        if observe is not None:
                            observe(time.perf_counter() - started)
                        return None
                    fresh = self._judged(rule, api, found)
                copied = dict(scope)
                for name in _RECORDED:
                    copied.pop(name, None)
                self._record(fresh, path, started, copied)
                return fresh, copied

            return waiting.later(load, made)

        return again

    def _replay(
        self,
        ruleset: RuleSet,
        rule: Rule | None,
        key: str | None,
        session: ResolvedSession | None,
        outcome: Outcome,
    ) -> Callable[[], bool]:
        rules, resolver = self.rules, self.resolver
        position = rule.position if rule is not None else -1
        hits = ruleset.hits
        observe = (
            self.metrics.decision_counter(rule.id if rule is not None else "-", outcome.verdict.value)
            if self.metrics is not None
            else None
        )

        def replay() -> bool:
            started = time.perf_counter()
            if rules.current is not ruleset or (key is not None and not resolver.still_cached(key, session)):
                return False
            if position >= 0:
                hits[position] += 1
            if observe is not None:
                observe(time.perf_counter() - started)
            return True

        return replay

    def _record(
        self, outcome: Outcome, path: str, started: float, scope: MutableMapping[str, Any] | None
    ) -> None:
        rule_id = outcome.rule.id if outcome.rule is not None else "-"
        # ``_value_``, not ``value``: Enum's ``value`` is a property run in Python (~0.6k instructions).
        decision: str = outcome.verdict._value_
        if self.metrics is not None:
            observe = self._observers.get((rule_id, decision)) or self._observer(rule_id, decision)
            observe(time.perf_counter() - started)
        if scope is not None:
            scope["sidecar.path"] = path
            scope["sidecar.rule"] = rule_id
            scope["sidecar.decision"] = decision
            session = outcome.session
            if session is not None:
                scope["sidecar.identity_id"] = identity_text(session)

    async def _check(self, method: str, host: str, path: str, facts: RequestFacts) -> Outcome:
        ruleset = self.rules.current
        if self.tracing is None:
            rule = ruleset.match(method, host, path)
        else:
            with self.tracing.span("sidecar.rules.match") as span:
                rule = ruleset.match(method, host, path)
                if span is not None:
                    span.set_attribute("sidecar.rule", rule.id if rule is not None else "-")
        if rule is None:
            return self._unmatched(facts)
        ruleset.hits[rule.position] += 1  # coverage: a list slot, no label lookup or lock
        api = self._api(rule, facts)
        settled = self._settled(rule, api, facts.token)
        if settled is not None:
            return settled
        assert facts.token  # _settled answers every request without one
        return await self._resolved(rule, api, self.resolver.resolve(facts.token))

    async def _resolved(
        self, rule: Rule, api: bool, resolving: Coroutine[Any, Any, ResolvedSession | None]
    ) -> Outcome:
        """The outcome once ``resolving`` (the resolver's load of the presented token) has given
        the session; fail closed when the store is down."""
        try:
            session = await resolving
        except errors.ServiceUnavailable:
            return self._unavailable(rule, api)
        return self._judged(rule, api, session)

    @staticmethod
    def _unavailable(rule: Rule, api: bool) -> Outcome:
        """The outcome when the session store is down: fail closed."""
        req = rule.require
        if req.level == "optional" and not req.has_conditions:
            # Anonymous access is what this rule grants anyway; serving it grants nothing more.
            return Outcome(Verdict.ALLOW, rule, None, api, "session store unavailable; served anonymously")
        return Outcome(Verdict.UNAVAILABLE, rule, None, api, "session store unavailable")

    # The steps of the judgement, shared by ``check`` and ``check_cached``: they differ only in
    # where the session comes from (the resolver, or its in-process cache alone).

    @staticmethod
    def _unmatched(facts: RequestFacts) -> Outcome:
        return Outcome(Verdict.FORBIDDEN, None, None, facts.api, "no rule matched (default deny)")

    @staticmethod
    def _api(rule: Rule, facts: RequestFacts) -> bool:
        return facts.api if rule.on_unauthenticated is None else rule.on_unauthenticated == "json"

    def _settled(self, rule: Rule, api: bool, token: str | None) -> Outcome | None:
        """The outcome when the session cannot change it; None when the session must be looked up."""
        level = rule.require.level
        if level == "deny":
            return Outcome(Verdict.FORBIDDEN, rule, None, api, f"rule {rule.id!r} denies")
        if level == "public":
            return Outcome(Verdict.ALLOW, rule, None, api, f"rule {rule.id!r} is public")
        if not token:
            return self._judged(rule, api, None)
        return None

    def _judged(self, rule: Rule, api: bool, session: ResolvedSession | None) -> Outcome:
        """The outcome once the session is known (None: none presented, or none valid)."""
        if session is None:
            if rule.require.level == "optional":
                return Outcome(Verdict.ALLOW, rule, None, api, f"rule {rule.id!r} allows anonymous access")
            return Outcome(Verdict.LOGIN, rule, None, api, "no valid session")
        verdict, reason, identified = judge(rule, session, self.required_aal)
        # The identity is in ``session``; formatting its UUID here cost a microsecond per request.
        return Outcome(verdict, rule, session if identified else None, api, reason)
