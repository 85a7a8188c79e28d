"""Rule files: matching semantics and validation messages (file, line, rule, key)."""

from __future__ import annotations

import pytest

from sidecar.rules.loader import RulesError, parse_rules
from sidecar.rules.model import RuleSet, normalise_host


def rules(text: str, name: str = "r.yaml") -> RuleSet:
    return parse_rules([(name, text)])


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        rules(text)
    return info.value.problems


def test_first_match_wins_and_default_deny() -> None:
    rs = rules(
        """
version: 1
rules:
  - {id: a, match: {paths: ["/x/**"]}, require: public}
  - {id: b, match: {paths: ["/x/*", "/y"]}, require: deny}
  - {id: c, match: {paths: ["/z"]}, require: authenticated}
"""
    )
    assert rs.match("GET", "h", "/x/y").id == "a"  # type: ignore[union-attr]
    assert rs.match("GET", "h", "/y").id == "b"  # type: ignore[union-attr]
    assert rs.match("GET", "h", "/nothing") is None


GLOBS = [
    ("/a/**", "/a", True),
    ("/a/**", "/a/b/c", True),
    ("/a/**", "/ab", False),
    ("/a/*", "/a/b", True),
    ("/a/*", "/a/b/c", False),
    ("/a/*/c", "/a/b/c", True),
    ("/a/**/z", "/a/b/c/z", True),
    ("/a/**/z", "/a/z", True),
    ("/**", "/", True),
    ("regex:/items/[0-9]+", "/items/42", True),
    ("regex:/items/[0-9]+", "/items/42/x", False),
    ("/exact", "/exact/", False),
]


@pytest.mark.parametrize(("glob", "path", "expected"), GLOBS, ids=[f"{g} {p}" for g, p, _ in GLOBS])
def test_path_patterns(glob: str, path: str, expected: bool) -> None:
    rs = rules(f"version: 1\nrules:\n  - {{id: r, match: {{paths: ['{glob}']}}, require: public}}\n")
    assert (rs.match("GET", "h", path) is not None) is expected


def test_methods_and_hosts() -> None:
    rs = rules(
        """
version: 1
rules:
  - id: get
    match: {methods: [get], hosts: [app.example.com, "*.example.org"], paths: ["/**"]}
    require: public
"""
    )
    assert rs.match("HEAD", "app.example.com", "/") is not None  # GET also matches HEAD
    assert rs.match("POST", "app.example.com", "/") is None
    assert rs.match("GET", "x.example.org", "/") is not None
    assert rs.match("GET", "example.org", "/") is None
    assert rs.match("GET", normalise_host("APP.Example.com.:8443"), "/") is not None


def test_requirement_mapping() -> None:
    rs = rules(
        """
version: 1
rules:
  - id: billing
    match: {paths: ["/billing/**"]}
    require: {level: authenticated, aal: aal2, roles: [finance], traits: {tenant: acme}, verified: true}
"""
    )
    req = rs.rules[0].require
    assert (
        req.aal2
        and req.verified
        and req.roles == frozenset({"finance"})
        and dict(req.traits) == {"tenant": "acme"}
    )


BAD = [
    (
        "rules:\n  - {id: a, match: {paths: [/x]}, require: maybe}\n",
        "r.yaml:3: rule 'a' require: unknown level",
    ),
    ("rules:\n  - {id: a, match: {paths: [x]}, require: public}\n", "r.yaml:3: rule 'a' match.paths: 'x'"),
    (
        "rules:\n  - {id: a, match: {paths: ['regex:(']}, require: public}\n",
        "rule 'a' match.paths: invalid pattern",
    ),
    (
        "rules:\n  - {id: a, match: {paths: [/x]}, require: public, colour: red}\n",
        "rule 'a' colour: unknown key",
    ),
    ("rules:\n  - {id: a, match: {paths: [/x], verbs: [GET]}, require: public}\n", "rule 'a' match.verbs"),
    (
        "rules:\n  - {id: a, match: {methods: [FETCH], paths: [/x]}, require: public}\n",
        "unknown method 'FETCH'",
    ),
    ("rules:\n  - {id: a, match: {paths: [/x]}}\n", "rule 'a' require: required"),
    (
        "rules:\n  - {id: a, match: {paths: [/x]}, require: public}\n"
        "  - {id: a, match: {paths: [/y]}, require: public}\n",
        "r.yaml:4: rule 'a' id: duplicate id",
    ),
    (
        "rules:\n  - {id: all, match: {paths: ['/**']}, require: public}\n"
        "  - {id: late, match: {paths: [/y]}, require: deny}\n",
        "r.yaml:4: rule 'late' match: never matches: shadowed by 'all'",
    ),
    (
        "rules:\n  - {id: a, match: {paths: [/x]}, require: public, headers: {X-A: '{oops.x}'}}\n",
        "headers.X-A",
    ),
    ("rules:\n  - {id: a, match: {paths: [/x]}, require: {level: public, roles: [x]}}\n", "conditions need"),
    ("rules:\n  - {id: a, match: {paths: [/x]}, require: {aal: aal3}}\n", "require.aal"),
    ("rules: [\n", "r.yaml: yaml:"),
    (
        "rules:\n  - {id: a, match: {paths: ['/x?y=1']}, require: public}\n",
        "the query string is never matched",
    ),
]


@pytest.mark.parametrize(("text", "needle"), BAD, ids=[b[1][:40] for b in BAD])
def test_validation_names_file_line_rule_and_key(text: str, needle: str) -> None:
    found = problems("version: 1\n" + text if not text.startswith("rules: [") else text)
    assert any(needle in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        """
version: 1
rules:
  - {id: a, match: {paths: [x]}, require: public}
  - {id: b, match: {paths: [/y]}, require: nope}
"""
    )
    assert len(found) == 2


def test_shipped_examples_are_valid() -> None:
    from pathlib import Path

    from sidecar.rules.loader import expand_paths, load_rules

    files = expand_paths(["rules/*.yaml"], Path(__file__).resolve().parents[2])
    assert files and len(load_rules(files).rules) >= 5
