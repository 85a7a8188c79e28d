"""``rules_order: most_specific``: which rule decides when several match (docs/RULES.md).

Every path pattern of every rule gets a static rank; a request is decided by the matching
pattern with the highest rank. Ranks compare, in this order:

1. the path: an exact path (no wildcard) beats any glob, and any glob beats any ``regex:``.
   Two globs compare segment by segment from the left: a literal segment beats a segment
   mixing literal characters and wildcards, which beats ``*``, which beats ``**``; two mixed
   segments compare by their count of literal characters. When one glob's segments run out
   first with all earlier ones equal, the longer glob wins.
2. the hosts: a rule listing only exact hosts beats one with a ``*.`` wildcard, which beats a
   rule for any host; between wildcards, the one whose broadest suffix has more labels wins.
3. the methods: a rule listing methods beats one for any method; fewer methods beat more
   (``GET`` counts as ``GET`` and ``HEAD``).

Equal ranks on two rules that can match the same request are a *tie*, which the analysis
rejects (``rules/analysis.py``): the file order never silently decides.
"""

from __future__ import annotations

from sidecar.rules.model import PathMatcher, Rule, compile_paths

# Segment ranks (rank, literal characters): higher is more specific.
_LITERAL, _MIXED, _STAR, _GLOBSTAR = 3, 2, 1, 0

PathRank = tuple[int, tuple[tuple[int, int], ...]]
Rank = tuple[PathRank, tuple[int, int], tuple[int, int]]


def path_rank(pattern: str) -> PathRank:
    if pattern.startswith("regex:"):
        return (0, ())
    if "*" not in pattern and "?" not in pattern:
        return (2, ())
    segments: list[tuple[int, int]] = []
    for segment in pattern.split("/")[1:]:
        if segment == "**":
            segments.append((_GLOBSTAR, 0))
        elif segment == "*":
            segments.append((_STAR, 0))
        elif "*" in segment or "?" in segment:
            segments.append((_MIXED, sum(1 for ch in segment if ch not in "*?")))
        else:
            segments.append((_LITERAL, len(segment)))
    return (1, tuple(segments))


def host_rank(rule: Rule) -> tuple[int, int]:
    if rule.hosts is None:
        return (0, 0)
    if not rule.host_suffixes:
        return (2, 0)
    return (1, min(s.count(".") for s in rule.host_suffixes))


def method_rank(rule: Rule) -> tuple[int, int]:
    return (0, 0) if rule.methods is None else (1, -len(rule.methods))


def rank(rule: Rule, pattern: str) -> Rank:
    return (path_rank(pattern), host_rank(rule), method_rank(rule))


def most_specific_entries(rules: tuple[Rule, ...]) -> tuple[tuple[Rule, Rank, str], ...]:
    """Every (rule, rank, pattern), highest rank first; equal ranks keep file order."""
    entries = [(rule, rank(rule, p), p) for rule in rules for p in rule.path_patterns]
    entries.sort(key=lambda e: e[1], reverse=True)  # stable: file order among equals
    return tuple(entries)


def compiled_entries(rules: tuple[Rule, ...]) -> tuple[tuple[Rule, PathMatcher], ...]:
    """The matcher entries ``RuleSet.match`` walks in ``most_specific`` order."""
    return tuple((rule, compile_paths([p])) for rule, _, p in most_specific_entries(rules))
