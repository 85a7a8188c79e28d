"""The rule analysis: exact for globs, method and host sets; sound for regexes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.proxy.paths import BadPath, normalise_path
from sidecar.rules import automata
from sidecar.rules.analysis import analyse
from sidecar.rules.loader import RulesError, parse_rules
from sidecar.rules.model import Rule, RuleSet


def ruleset(body: str, order: str = "first_match", prefix: str | None = None) -> RuleSet:
    return parse_rules([("r.yaml", "version: 1\nrules:\n" + body)], order=order, reserved_prefix=prefix)  # type: ignore[arg-type]


def problems(body: str, order: str = "first_match", prefix: str | None = None) -> list[str]:
    with pytest.raises(RulesError) as info:
        ruleset(body, order, prefix)
    return info.value.problems


def test_partial_overlap_is_a_warning_with_an_example() -> None:
    rs = ruleset(
        '  - {id: csv, match: {paths: ["/**/*.csv"]}, require: public}\n'
        '  - {id: admin, match: {paths: ["/admin/**"]}, require: authenticated}\n'
    )
    assert rs.warnings == (
        "r.yaml:4: rule 'admin' match: overlaps 'csv' (r.yaml:3): e.g. GET /admin/a.csv matches both, "
        "and 'csv' decides it",
    )


def test_shadowing_is_an_error_naming_both_rules() -> None:
    assert problems(
        "  - id: all-get\n"
        '    match: {methods: [GET, POST], hosts: ["*.example.com"], paths: ["/**"]}\n'
        "    require: public\n"
        "  - id: admin\n"
        '    match: {methods: [GET], hosts: [app.example.com], paths: ["/admin/*"]}\n'
        "    require: deny\n"
    ) == [
        "r.yaml:6: rule 'admin' match: never matches: shadowed by 'all-get' (r.yaml:3), which matches every "
        "request this rule matches"
    ]


def test_disjoint_methods_or_hosts_do_not_overlap() -> None:
    rs = ruleset(
        '  - {id: a, match: {methods: [POST], paths: ["/**"]}, require: public}\n'
        '  - {id: b, match: {methods: [GET], paths: ["/x"]}, require: public}\n'
        '  - {id: c, match: {methods: [GET], hosts: [a.example.com], paths: ["/y/**"]}, require: public}\n'
        '  - {id: d, match: {methods: [GET], hosts: ["*.other.com"], paths: ["/y/z"]}, require: public}\n'
    )
    assert rs.warnings == ()


def test_an_exception_before_the_general_rule_is_not_reported() -> None:
    rs = ruleset(
        '  - {id: health, match: {paths: ["/admin/health"]}, require: public}\n'
        '  - {id: admin, match: {paths: ["/admin/**"]}, require: authenticated}\n'
    )
    assert rs.warnings == ()


@pytest.mark.parametrize(
    ("match", "reason"),
    [
        ('{paths: ["/a//b"]}', "path '/a//b' can never match: no normalised request path"),
        ('{paths: ["/a/./b"]}', "path '/a/./b' can never match"),
        ('{paths: ["/.auth/**"]}', "every path it matches is under the sidecar's own prefix /.auth"),
        ('{paths: ["regex:^/a^b$"]}', None),  # not analysed exactly: never an error
        ('{hosts: ["a..example.com"], paths: ["/x"]}', "host 'a..example.com' can never match"),
        ("{methods: [], paths: [/x]}", "match.methods: an empty method list matches no request"),
    ],
)
def test_rules_that_can_never_match_are_errors(match: str, reason: str | None) -> None:
    body = f"  - {{id: x, match: {match}, require: public}}\n"
    if reason is None:
        ruleset(body, prefix="/.auth")
        return
    found = problems(body, prefix="/.auth")
    assert len(found) == 1 and reason in found[0] and found[0].startswith("r.yaml:3: rule 'x'")


def test_regexes_are_exact_when_plain_and_sampled_otherwise() -> None:
    shadow = problems(
        '  - {id: api, match: {paths: ["regex:^/api/v[0-9]+/.*$"]}, require: public}\n'
        '  - {id: v1, match: {paths: ["/api/v1/users/*"]}, require: authenticated}\n'
    )
    assert "rule 'v1' match: never matches: shadowed by 'api'" in shadow[0]
    rs = ruleset(
        '  - {id: ci, match: {paths: ["regex:(?i)^/case/[a-z]+$"]}, require: public}\n'
        '  - {id: lit, match: {paths: ["/CASE/X", "/other"]}, require: authenticated}\n'
        '  - {id: glob, match: {paths: ["/z/*"]}, require: authenticated}\n'
    )
    # A literal side is checked path by path against RE2: an exact example, no "possible".
    assert "overlaps 'ci' (r.yaml:3): e.g. GET /CASE/X matches both" in rs.warnings[0]
    # A glob against an unreadable regex: sampled, and said to be only possible.
    assert "possible overlap with 'ci'" in rs.warnings[1]
    assert "'regex:(?i)^/case/[a-z]+$' cannot be analysed exactly" in rs.warnings[1]


def test_most_specific_ties_and_shadowing() -> None:
    tie = problems(
        '  - {id: a, match: {paths: ["/a/x*"]}, require: public}\n'
        '  - {id: b, match: {paths: ["/a/*x"]}, require: public}\n',
        order="most_specific",
    )
    assert tie == [
        "r.yaml:4: rule 'b' match: ties with 'a' (r.yaml:3): '/a/*x' and '/a/x*' are equally specific and "
        "e.g. GET /a/x matches both; make one more specific"
    ]
    shadow = problems(
        '  - {id: general, match: {paths: ["regex:^/api/.*$"]}, require: public}\n'
        '  - {id: api, match: {paths: ["/api/**"]}, require: authenticated}\n',
        order="most_specific",
    )
    assert (
        "rule 'general' match: never matches: 'api' (r.yaml:4) pattern '/api/**' is more specific"
        in shadow[0]
    )
    rs = ruleset(
        '  - {id: all, match: {paths: ["/**"]}, require: authenticated}\n'
        '  - {id: admin, match: {paths: ["/admin/**"]}, require: deny}\n'
        '  - {id: export, match: {methods: [GET], paths: ["/admin/export.csv"]}, require: public}\n',
        order="most_specific",
    )
    assert rs.match("GET", "h", "/admin/export.csv").id == "export"  # type: ignore[union-attr]
    assert rs.match("POST", "h", "/admin/export.csv").id == "admin"  # type: ignore[union-attr]
    assert rs.match("GET", "h", "/other").id == "all"  # type: ignore[union-attr]


# --- properties ---------------------------------------------------------------------------------

SEGMENTS = ["a", "b", "ab", "x.csv", "*", "**", "*.csv", "a*", "*a*"]
PATH_SEGMENTS = ["a", "b", "ab", "x.csv", "a.csv", "ba", "c", ".csv", "aa"]
METHODS = ["GET", "POST", "DELETE"]
HOSTS = ["a.example.com", "b.example.com", "*.example.com", "*.a.example.com", "other.org"]


@st.composite
def globs(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4))
    glob = "/" + "/".join(segments)
    return glob


@st.composite
def rule_yaml(draw: st.DrawFn, i: int) -> str:
    parts = [f"paths: {draw(st.lists(globs(), min_size=1, max_size=2))}"]
    if draw(st.booleans()):
        parts.append(f"methods: {draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=2))}")
    if draw(st.booleans()):
        hosts = draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2))
        parts.append("hosts: [" + ", ".join(f'"{h}"' for h in hosts) + "]")
    return f"  - {{id: r{i}, match: {{{', '.join(parts)}}}, require: public}}\n"


def requests() -> st.SearchStrategy[tuple[str, str, str]]:
    path = st.lists(st.sampled_from(PATH_SEGMENTS), min_size=0, max_size=5).map(lambda s: "/" + "/".join(s))
    host = st.sampled_from(["a.example.com", "b.example.com", "x.a.example.com", "other.org", "example.com"])
    return st.tuples(st.sampled_from([*METHODS, "HEAD", "PUT"]), host, path)


def compile_rules(bodies: list[str]) -> tuple[Rule, ...]:
    # Without the analysis: the property checks what it would say about raw rule pairs.
    from sidecar.rules import loader

    errs = loader._Collector()
    text = "version: 1\nrules:\n" + "".join(bodies)
    import dataclasses

    import yaml

    doc = yaml.load(text, Loader=loader._LineLoader)
    rules = [loader._compile_rule(raw, "r.yaml:?", i, errs) for i, raw in enumerate(doc["rules"])]
    assert not errs.problems, errs.problems
    return tuple(dataclasses.replace(r, position=i) for i, r in enumerate(rules) if r is not None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_overlap_and_shadowed_claims_hold_for_every_request(data: st.DataObject) -> None:
    bodies = [data.draw(rule_yaml(i)) for i in range(2)]
    rules = compile_rules(bodies)
    findings = analyse(rules)
    earlier, later = rules
    kinds = {f.kind for f in findings if f.rule is later and f.other is earlier}
    never = {f.rule.id for f in findings if f.kind == "never_matches"}
    reqs = data.draw(st.lists(requests(), min_size=40, max_size=80))
    # Requests built from the rules' own patterns, so matches are common, not rare.
    for glob in (*earlier.path_patterns, *later.path_patterns):
        for fill in ("a", "x", "a.csv", "a/b"):
            path = glob.replace("**", fill).replace("*", fill.split("/")[0]).replace("?", "a")
            reqs += [(m, h, path) for m in ("GET", "POST") for h in ("a.example.com", "x.a.example.com")]
    for method, host, path in reqs:
        try:
            if normalise_path(path.encode()) != path:
                continue  # the proxy never matches a path it would rewrite first
        except BadPath:
            continue
        both = earlier.matches(method, host, path) and later.matches(method, host, path)
        if "shadowed" in kinds and later.matches(method, host, path):
            assert earlier.matches(method, host, path), (method, host, path, bodies)
        if both and later.id not in never and earlier.id not in never:
            # Overlap must have been reported: a warning, a shadow, or earlier inside later.
            inside = all(not earlier.matches(m, h, p) or later.matches(m, h, p) for m, h, p in reqs)
            assert kinds & {"overlap", "shadowed"} or inside, (method, host, path, bodies, findings)
        if later.id in never and later.matches(method, host, path):
            pytest.fail(f"{later.id} said never to match, but matches {method} {host}{path}: {bodies}")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=24).map(lambda b: b"/" + b))
def test_every_normalised_path_is_in_the_path_language(raw: bytes) -> None:
    try:
        path = normalise_path(raw)
    except BadPath:
        return
    assert automata.PATHS.accepts(path), path


@settings(max_examples=200, deadline=None)
@given(globs(), st.lists(st.sampled_from([*PATH_SEGMENTS, "*", ""]), max_size=5))
def test_glob_automata_agree_with_the_matcher(glob: str, segments: list[str]) -> None:
    from sidecar.rules.model import compile_paths

    path = "/" + "/".join(segments)
    assert automata.from_glob(glob).accepts(path) == compile_paths([glob]).matches(path), (glob, path)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(["/a", "/b", "[0-9]+", "(x|y)", r"\.csv", "/.*", "[^/]*", "?", "{1,2}"]),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.sampled_from([*PATH_SEGMENTS, "1", "12", "x", "y"]), max_size=4),
)
def test_regex_automata_agree_with_re2(pieces: list[str], segments: list[str]) -> None:
    import re2

    rx = "".join(pieces)
    try:
        compiled = re2.compile(rx)
    except re2.error:
        return
    try:
        dfa = automata.from_regex(rx)
    except automata.Unsupported:
        return
    path = "/" + "/".join(segments)
    assert dfa.accepts(path) == (compiled.fullmatch(path) is not None), (rx, path)
