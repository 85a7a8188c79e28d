"""Compiled access rules (proxy-conventions.md "Access rules"): values only, matched in order.

Everything a request needs is precomputed at load time: method sets, host sets, path matchers
(literal set, prefix list, one RE2 alternation for the rest), header templates, and an index from
a path's first segment to the few rules that can match it (``RuleSet.match`` walks only those).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import re2

from sidecar.i18n import N_, Phrase
from sidecar.rules.templates import Template

Level = Literal["public", "optional", "authenticated", "deny"]
OnUnauthenticated = Literal["redirect", "json"] | None
Order = Literal["first_match", "most_specific"]
ORDERS: tuple[Order, ...] = ("first_match", "most_specific")

# Why a rule did or did not match a request (``RuleSet.explain``): msgids, the values filled in
# after translation. Values keep Python's spelling (``'app.test'``, ``['GET']``) in every language.
MATCHED = N_("matched")
METHOD_MISSED = N_("method {method} not in {methods}")
HOST_MISSED = N_("host {host} not in {hosts}")
PATH_MISSED = N_("path {path} not matched by {patterns}")
LESS_SPECIFIC = N_("matches too, but {winner} is more specific")


def head(path: str) -> str:
    """A path's first segment (``/a/b`` → ``a``, ``/`` → ``""``): the key of the rule index."""
    end = path.find("/", 1)
    return path[1:end] if end != -1 else path[1:]


def _fixed_head(text: str) -> str | None:
    """The first segment every path starting with ``text`` has, when ``text`` already fixes it."""
    return head(text) if text.find("/", 1) != -1 else None


@dataclass(frozen=True, slots=True)
class PathMatcher:
    """Exact ``literals``, ``prefixes`` from ``/a/**`` (``/a`` and below), ``pattern`` for the rest.

    ``heads``: the first segments (``head``) of every path this matcher can match, or None when
    that set is not known to be finite (``/**``, a wildcard or a regex in the first segment).
    """

    literals: frozenset[str]
    prefixes: tuple[str, ...]
    pattern: Any  # re2 compiled pattern or None
    any_path: bool = False
    heads: frozenset[str] | None = None

    def matches(self, path: str) -> bool:
        if self.any_path or path in self.literals:
            return True
        for prefix in self.prefixes:
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return True
        return self.pattern is not None and self.pattern.fullmatch(path) is not None


def _glob_to_regex(glob: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("/**", i) and (i + 3 == len(glob) or glob[i + 3] == "/"):
            out.append("(?:/.*)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re2.escape(glob[i]))
            i += 1
    return "".join(out)


def compile_paths(patterns: list[str]) -> PathMatcher:
    """Raises ``ValueError`` (from RE2) for a pattern that does not compile."""
    literals: set[str] = set()
    prefixes: list[str] = []
    regexes: list[str] = []
    any_path = False
    heads: set[str] | None = set()
    for p in patterns:
        fixed: str | None
        if p.startswith("regex:"):
            regexes.append(f"(?:{p[6:]})")
            fixed = None
        elif p == "/**":
            any_path = True
            fixed = None
        elif not any(ch in p for ch in "*?"):
            literals.add(p)
            fixed = head(p)
        elif p.endswith("/**") and not any(ch in p[:-3] for ch in "*?"):
            prefixes.append(p[:-3])
            # "/a/**" matches "/a" and below: the head is the prefix's own when it has no "/".
            fixed = head(p[:-3]) if p[:-3] else None
        else:
            regexes.append(f"(?:{_glob_to_regex(p)})")
            # The literal text before the first wildcard starts every match (a "/**" there may
            # drop its "/", which ends the first segment all the same).
            fixed = _fixed_head(p[: min(i for i in (p.find("*"), p.find("?")) if i != -1)])
        if fixed is None:
            heads = None
        elif heads is not None:
            heads.add(fixed)
    pattern = None
    if regexes:
        # RE2 would also print its own "Error parsing" lines (via absl) straight to stderr.
        options = re2.Options()
        options.log_errors = False
        try:
            pattern = re2.compile("|".join(regexes), options)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            raise ValueError(
                reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
            ) from None
    return PathMatcher(
        frozenset(literals), tuple(prefixes), pattern, any_path, None if heads is None else frozenset(heads)
    )


@dataclass(frozen=True, slots=True)
class Requirement:
    level: Level
    aal2: bool = False
    verified: bool = False
    roles: frozenset[str] | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    organizations: frozenset[str] | None = None
    """Ids or slugs: the identity must belong to one of these organizations."""

    @property
    def has_conditions(self) -> bool:
        return (
            self.aal2
            or self.verified
            or self.roles is not None
            or bool(self.traits)
            or self.organizations is not None
        )


@dataclass(frozen=True, slots=True)
class UpstreamJwt:
    audience: str | None
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    source: str  # "file:line", for explanations and errors
    methods: frozenset[str] | None
    hosts: frozenset[str] | None
    host_suffixes: tuple[str, ...]
    paths: PathMatcher
    path_patterns: tuple[str, ...]
    require: Requirement
    on_unauthenticated: OnUnauthenticated = None
    headers: tuple[tuple[str, Template], ...] = ()
    upstream_jwt: UpstreamJwt | None = None
    upstream: str | None = None
    position: int = 0  # index in file order over all files: coverage counters use it

    def admits(self, method: str, host: str) -> bool:
        """The method and host conditions (the path is checked apart)."""
        if self.methods is not None and method not in self.methods:
            return False
        return self.hosts is None or host in self.hosts or host.endswith(self.host_suffixes)

    def admits_host(self, host: str) -> bool:
        return self.hosts is None or host in self.hosts or host.endswith(self.host_suffixes)

    def matches(self, method: str, host: str, path: str) -> bool:
        return self.admits(method, host) and self.paths.matches(path)


_Entry = tuple[Rule, PathMatcher]
_Index = tuple[dict[str, tuple[_Entry, ...]], tuple[_Entry, ...]]


def _index(walk: list[_Entry]) -> _Index:
    """First path segment → the entries whose paths can start with it (``PathMatcher.heads``),
    in ``walk`` order; and the entries whose first segment is open, for every other segment."""
    keys = {h for _, paths in walk if paths.heads is not None for h in paths.heads}
    by_head = {key: tuple(e for e in walk if e[1].heads is None or key in e[1].heads) for key in sorted(keys)}
    return by_head, tuple(e for e in walk if e[1].heads is None)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """``rules`` in file order. With ``most_specific``, ``entries`` holds one (rule, pattern) per
    path pattern, most specific first (``rules/order.py``), and matching walks those instead.

    ``hits[rule.position]`` counts the requests each rule decided (coverage): a plain list the
    event loop increments, read at scrape time, so counting costs one index and one add.
    """

    rules: tuple[Rule, ...]
    files: tuple[str, ...] = ()
    generation: int = 0
    order: Order = "first_match"
    entries: tuple[tuple[Rule, PathMatcher], ...] = ()
    warnings: tuple[str, ...] = ()
    hits: list[int] = field(default_factory=list, compare=False)

    # The rule index: request host → (first path segment → the (rule, matcher) pairs that can
    # match such a request, in matching order; the pairs for every other first segment).
    _by_host: dict[str, _Index] = field(default_factory=dict, init=False, compare=False, repr=False)
    _any_host: _Index = field(default=({}, ()), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.hits) != len(self.rules):
            object.__setattr__(self, "hits", [0] * len(self.rules))
        walk = self.entries or tuple((rule, rule.paths) for rule in self.rules)
        exact = sorted({h for rule, _ in walk for h in rule.hosts or ()})
        by_host = {
            host: _index([e for e in walk if e[0].hosts is None or e[0].admits_host(host)]) for host in exact
        }
        # Any other host: the rules for every host, and those with a "*." suffix it may end with.
        other = _index([e for e in walk if e[0].hosts is None or e[0].host_suffixes])
        object.__setattr__(self, "_by_host", by_host)
        object.__setattr__(self, "_any_host", other)

    def match(self, method: str, host: str, path: str) -> Rule | None:
        """The deciding rule (first match, or the most specific); None is a deny.

        Two dict lookups (the host, the path's first segment), then only the rules that can match
        there, in the same order as ``scan``: the same answer, without walking the whole file."""
        by_head, rest = self._by_host.get(host, self._any_host)
        end = path.find("/", 1)  # ``head(path)``, inlined
        for rule, paths in by_head.get(path[1:end] if end != -1 else path[1:], rest):
            if rule.admits(method, host) and paths.matches(path):
                return rule
        return None

    def scan(self, method: str, host: str, path: str) -> Rule | None:
        """``match`` without the index: every rule in order (the reference the tests hold it to)."""
        if self.entries:
            for rule, paths in self.entries:
                if rule.admits(method, host) and paths.matches(path):
                    return rule
            return None
        for rule in self.rules:
            if rule.matches(method, host, path):
                return rule
        return None

    def explain(self, method: str, host: str, path: str) -> list[tuple[Rule, Phrase]]:
        """Why each rule did or did not match, up to the deciding one (``most_specific``: all of
        them, since a later rule can win); ``MATCHED`` marks the deciding rule. A reason is a
        ``Phrase``: English for ``sidecar rules explain``, the reader's language in the console."""
        winner = self.match(method, host, path)
        out: list[tuple[Rule, Phrase]] = []
        for rule in self.rules:
            if rule.methods is not None and method not in rule.methods:
                why = Phrase(METHOD_MISSED, method=method, methods=str(sorted(rule.methods)))
            elif not rule.admits(method, host):
                hosts = sorted(rule.hosts or ()) + [f"*{s}" for s in rule.host_suffixes]
                why = Phrase(HOST_MISSED, host=repr(host), hosts=str(hosts))
            elif not rule.paths.matches(path):
                why = Phrase(PATH_MISSED, path=repr(path), patterns=str(list(rule.path_patterns)))
            elif rule is winner:
                out.append((rule, Phrase(MATCHED)))
                if self.order == "first_match":
                    break
                continue
            else:
                assert winner is not None
                why = Phrase(LESS_SPECIFIC, winner=repr(winner.id))
            out.append((rule, why))
        return out


def normalise_host(host: str) -> str:
    """Lower-case, without port and trailing dot (IPv6 literals keep their brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    host = host.rsplit(":", 1)[0] if ":" in host else host
    return host.rstrip(".")
