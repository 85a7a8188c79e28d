"""What a rule set means, checked at load: never-matching, shadowed, overlapping and tied rules.

A rule matches the product of three sets: methods x hosts x paths. Two rules overlap exactly
when each pair of sets meets, and one contains the other exactly when each set is contained, so
the analysis decides the three parts apart: method sets by set algebra, hosts by set algebra on
exact names and ``*.`` suffixes, paths with automata over normalised paths (``automata.py``).

Globs are decided exactly. A ``regex:`` pattern is exact when ``automata.from_regex`` reads it;
otherwise its pairs are *sampled*: a request both real matchers accept proves an overlap, and no
such request yields "possible overlap", never "no overlap" (nor "shadowed", which needs proof).

Findings (first_match order; A above B):
- B can never match on its own terms (an impossible host, a path no normalised request has, a
  path under the sidecar's own prefix): error.
- A matches everything B matches: B is shadowed, an error naming both.
- A and B share some requests but neither contains the other: a warning with a request that
  both match (A decides it). A strictly inside B is the usual exception-before-the-rule
  pattern and is not reported.
With ``most_specific`` (``order.py``): B is shadowed when one more specific pattern of another
rule covers all of B; two patterns of equal rank that share a request are a tie (error).
Every example request is checked against the real matchers before it is reported.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Literal

from sidecar.rules import automata
from sidecar.rules.automata import Dfa, Unsupported
from sidecar.rules.model import Order, PathMatcher, Rule, compile_paths
from sidecar.rules.order import Rank, most_specific_entries

Severity = Literal["error", "warning"]
Kind = Literal["never_matches", "shadowed", "overlap", "possible_overlap", "tie", "possible_tie"]
_HOST = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_METHOD_PREFERENCE = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "CONNECT")
_SAMPLES = 64


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    kind: Kind
    rule: Rule
    other: Rule | None
    text: str
    example: str | None = None

    def __str__(self) -> str:
        return f"{self.rule.source}: rule {self.rule.id!r} match: {self.text}"


@dataclass(slots=True)
class _Part:
    """A rule, or one pattern of it, with its path language: ``dfa`` holds what the automata
    read exactly (within PATHS, outside the sidecar's prefix); ``sampled`` says a regex in it
    could only be sampled; ``paths`` is the real matcher every example is checked with."""

    rule: Rule
    dfa: Dfa
    sampled: bool
    paths: PathMatcher

    def matches(self, method: str, host: str, path: str) -> bool:
        return self.rule.admits(method, host) and self.paths.matches(path)


@dataclass(slots=True)
class _Space:
    rule: Rule
    whole: _Part
    patterns: dict[str, _Part] = field(default_factory=dict)
    empty: bool = False


def _format(method: str, host: str | None, path: str) -> str:
    return f"{method} https://{host}{path}" if host else f"{method} {path}"


# --- methods and hosts ------------------------------------------------------------------------


def _method_meet(a: Rule, b: Rule) -> str | None:
    """A method both rules accept (the most usual first), or None."""
    if a.methods is None and b.methods is None:
        return "GET"
    if a.methods is None or b.methods is None:
        common = a.methods if a.methods is not None else b.methods or frozenset()
    else:
        common = a.methods & b.methods
    return next((m for m in _METHOD_PREFERENCE if m in common), None)


def _methods_within(inner: Rule, outer: Rule) -> bool:
    if outer.methods is None:
        return True
    return inner.methods is not None and inner.methods <= outer.methods


def _host_ok(rule: Rule, host: str) -> bool:
    return rule.hosts is None or host in rule.hosts or host.endswith(rule.host_suffixes)


def _host_meet(a: Rule, b: Rule) -> tuple[bool, str | None]:
    """(whether some host satisfies both, an example host or None when any host does)."""
    if a.hosts is None and b.hosts is None:
        return True, None
    if a.hosts is None or b.hosts is None:
        restricted = a if a.hosts is not None else b
        names = sorted(restricted.hosts or ())
        return True, names[0] if names else "www" + restricted.host_suffixes[0]
    for host in sorted(a.hosts):
        if _host_ok(b, host):
            return True, host
    for host in sorted(b.hosts):
        if _host_ok(a, host):
            return True, host
    for s in a.host_suffixes:
        for t in b.host_suffixes:
            if s.endswith(t) or t.endswith(s):
                return True, "www" + (s if len(s) >= len(t) else t)
    return False, None


def _hosts_within(inner: Rule, outer: Rule) -> bool:
    if outer.hosts is None:
        return True
    if inner.hosts is None:
        return False
    return all(_host_ok(outer, h) for h in inner.hosts) and all(
        s.endswith(outer.host_suffixes) for s in inner.host_suffixes
    )


# --- the analyser ----------------------------------------------------------------------------


class Analyser:
    def __init__(self, rules: tuple[Rule, ...], *, reserved_prefix: str | None = None) -> None:
        self.reserved_prefix = reserved_prefix.rstrip("/") if reserved_prefix else None
        self.universe = automata.PATHS
        if self.reserved_prefix:
            reserved = automata.from_glob(self.reserved_prefix + "/**")
            self.universe = automata.difference(automata.PATHS, reserved)
        self.nothing = automata.intersection([automata.literal(""), self.universe])
        self.rng = random.Random(20)  # noqa: S311 - fixed seed: the same files give the same findings
        self.findings: list[Finding] = []
        self.unsupported: dict[str, str] = {}
        self.spaces = [self._space(r) for r in rules]

    def _raw_dfa(self, pattern: str) -> Dfa | None:
        try:
            if pattern.startswith("regex:"):
                return automata.from_regex(pattern[6:])
            return automata.from_glob(pattern)
        except Unsupported as exc:
            self.unsupported[pattern] = str(exc)
            return None

    def _space(self, rule: Rule) -> _Space:
        parts: dict[str, _Part] = {}
        for p in rule.path_patterns:
            raw = self._raw_dfa(p)
            dfa = automata.intersection([raw, self.universe]) if raw is not None else self.nothing
            parts[p] = _Part(rule, dfa, raw is None, compile_paths([p]))
        exact = [part.dfa for part in parts.values() if not part.sampled]
        whole = _Part(
            rule,
            automata.union(exact) if exact else self.nothing,
            any(part.sampled for part in parts.values()),
            rule.paths,
        )
        return _Space(rule, whole, parts)

    # --- never matches -------------------------------------------------------------------

    def check_reachable(self) -> None:
        for space in self.spaces:
            rule = space.rule
            for host in sorted(rule.hosts or ()):
                if not _HOST.match(host):
                    self._never(space, f"host {host!r} can never match: not a host name a request can carry")
            for suffix in rule.host_suffixes:
                if not _HOST.match(suffix[1:]):
                    self._never(
                        space, f"host '*{suffix}' can never match: not a host name a request can carry"
                    )
            for pattern, part in space.patterns.items():
                if part.sampled or not automata.is_empty(part.dfa):
                    continue
                raw = self._raw_dfa(pattern)
                inside = raw is not None and not automata.is_empty(
                    automata.intersection([raw, automata.PATHS])
                )
                if inside and self.reserved_prefix:
                    why = f"every path it matches is under the sidecar's own prefix {self.reserved_prefix}"
                else:
                    why = "no normalised request path matches it (no '//', '/./' or '/../', ASCII only)"
                self._never(space, f"path {pattern!r} can never match: {why}")

    def _never(self, space: _Space, text: str) -> None:
        space.empty = True
        self.findings.append(Finding("error", "never_matches", space.rule, None, text))

    # --- relations between two parts ------------------------------------------------------

    def _sample(self, a: _Part, b: _Part, method: str, host: str) -> str | None:
        """A path both real matchers accept, from random paths of either side or any path."""
        sources = [d for d in (a.dfa, b.dfa, self.universe) if not automata.is_empty(d)]
        for _ in range(_SAMPLES):
            for d in sources:
                path = automata.sample(d, self.rng)
                if path is not None and a.matches(method, host, path) and b.matches(method, host, path):
                    return path
        return None

    def meet(self, a: _Part, b: _Part) -> tuple[str, str | None]:
        """("none" | "exact" | "sampled" | "possible", an example request both match)."""
        method = _method_meet(a.rule, b.rule)
        if method is None:
            return "none", None
        hosts_meet, host = _host_meet(a.rule, b.rule)
        if not hosts_meet:
            return "none", None
        h = host or "app.example.com"
        path = automata.common_witness([a.dfa, b.dfa])
        if path is not None:
            if a.matches(method, h, path) and b.matches(method, h, path):
                return "exact", _format(method, host, path)
            return "possible", None  # automata and matcher disagree: claim nothing
        if a.sampled or b.sampled:
            # A side with few paths (literals) is checked path by path: exact, not sampled.
            for exact, other in ((a, b), (b, a)):
                if not exact.sampled:
                    paths = automata.enumerate_strings(exact.dfa, _SAMPLES)
                    if paths is not None:
                        found = next((p for p in paths if other.matches(method, h, p)), None)
                        return ("exact", _format(method, host, found)) if found else ("none", None)
            found = self._sample(a, b, method, h)
            return ("sampled", _format(method, host, found)) if found else ("possible", None)
        return "none", None

    def within(self, inner: _Part, outer: _Part) -> bool:
        """Every request ``inner`` matches, ``outer`` matches (False when not proven)."""
        if not (_methods_within(inner.rule, outer.rule) and _hosts_within(inner.rule, outer.rule)):
            return False
        if inner.sampled:
            return automata.uncovered_witness(self.universe, outer.dfa) is None
        return automata.uncovered_witness(inner.dfa, outer.dfa) is None

    # --- the two orders ------------------------------------------------------------------

    def first_match(self) -> None:
        live = [s for s in self.spaces if not s.empty]
        for j, sb in enumerate(live):
            b = sb.whole
            for sa in live[:j]:
                a = sa.whole
                relation, example = self.meet(a, b)
                if relation == "none":
                    continue
                if relation == "exact" and self.within(b, a):
                    self._add(
                        "error",
                        "shadowed",
                        b,
                        a,
                        "never matches: shadowed by {other}, which matches every request this rule matches",
                    )
                    break
                if self.within(a, b):
                    continue  # an exception placed before the general rule: the intended pattern
                if relation == "possible":
                    self._add(
                        "warning",
                        "possible_overlap",
                        b,
                        a,
                        "possible overlap with {other}: "
                        f"{self._why_sampled(a, b)}, and sampling found no request both match; "
                        "if one exists, {id} decides it",
                    )
                else:
                    self._add(
                        "warning",
                        "overlap",
                        b,
                        a,
                        f"overlaps {{other}}: e.g. {example} matches both, and {{id}} decides it",
                        example,
                    )

    def most_specific(self) -> None:
        live = [s for s in self.spaces if not s.empty]
        entries = most_specific_entries(tuple(s.rule for s in live))
        space_of = {id(s.rule): s for s in live}
        best: dict[int, Rank] = {}
        for rule, rank, _ in entries:
            best.setdefault(id(rule), rank)
        # Shadowed: one strictly more specific pattern of another rule covers all of B.
        for sb in live:
            for rule_a, rank_a, pattern in entries:
                if rank_a <= best[id(sb.rule)]:
                    break
                if rule_a is sb.rule:
                    continue
                a = space_of[id(rule_a)].patterns[pattern]
                if not a.sampled and self.meet(a, sb.whole)[0] == "exact" and self.within(sb.whole, a):
                    self._add(
                        "error",
                        "shadowed",
                        sb.whole,
                        a,
                        f"never matches: {{other}} pattern "
                        f"{pattern!r} is more specific and matches every request this rule matches",
                    )
                    break
        # Ties: equal ranks on two rules that share a request.
        for i, (rule_a, rank_a, pa) in enumerate(entries):
            for rule_b, rank_b, pb in entries[i + 1 :]:
                if rank_b != rank_a:
                    break
                if rule_b is rule_a:
                    continue
                a = space_of[id(rule_a)].patterns[pa]
                b = space_of[id(rule_b)].patterns[pb]
                relation, example = self.meet(a, b)
                if relation in ("exact", "sampled"):
                    self._add(
                        "error",
                        "tie",
                        b,
                        a,
                        f"ties with {{other}}: {pb!r} and {pa!r} are equally "
                        f"specific and e.g. {example} matches both; make one more specific",
                        example,
                    )
                elif relation == "possible":
                    self._add(
                        "warning",
                        "possible_tie",
                        b,
                        a,
                        f"possible tie with {{other}}: {pb!r} and "
                        f"{pa!r} are equally specific, {self._why_sampled(a, b)}; if a request "
                        "matches both, file order decides",
                    )

    def _why_sampled(self, a: _Part, b: _Part) -> str:
        patterns = [p for p in (*a.rule.path_patterns, *b.rule.path_patterns) if p in self.unsupported]
        if not patterns:
            return "the exact analysis could not confirm its example"
        p = patterns[0]
        return f"{p!r} cannot be analysed exactly ({self.unsupported[p]})"

    def _add(
        self, severity: Severity, kind: Kind, part: _Part, other: _Part, text: str, example: str | None = None
    ) -> None:
        o = other.rule
        text = text.replace("{other}", f"{o.id!r} ({o.source})").replace("{id}", repr(o.id))
        self.findings.append(Finding(severity, kind, part.rule, o, text, example))


def analyse(
    rules: tuple[Rule, ...], order: Order = "first_match", *, reserved_prefix: str | None = None
) -> list[Finding]:
    """Every finding, errors and warnings, in rule order."""
    analyser = Analyser(rules, reserved_prefix=reserved_prefix)
    analyser.check_reachable()
    if order == "most_specific":
        analyser.most_specific()
    else:
        analyser.first_match()
    return sorted(analyser.findings, key=lambda f: (f.rule.position, f.severity != "error"))
