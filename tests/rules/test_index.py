"""The rule index (``RuleSet.match``) decides exactly as the plain scan of every rule in order
(``RuleSet.scan``), for both orders, over generated rule sets and requests."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.rules.model import ORDERS, Order, PathMatcher, Requirement, Rule, RuleSet, compile_paths, head
from sidecar.rules.order import compiled_entries

SEGMENTS = ["", "a", "ab", "b", "api", "x.css", "v1", "%41"]
HOSTS = ["app.example.com", "api.example.com", "example.com", "other.test"]
METHODS = ["GET", "POST", "DELETE"]


def _glob_segment() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SEGMENTS),
        st.sampled_from(["*", "**", "a*", "*b", "?", "a?", "*.css", "**x"]),
    )


# Globs (literals, "/a/**" prefixes, wildcards anywhere, a leading "/**"), and regexes.
globs = st.lists(_glob_segment(), min_size=1, max_size=4).map(lambda segs: "/" + "/".join(segs))
regexes = st.sampled_from(["regex:/a/.*", "regex:/(a|b)/v[0-9]", "regex:.*\\.css", "regex:/api(/.*)?"])
patterns = st.one_of(globs, globs.map(lambda g: g.rstrip("/") + "/**"), st.just("/**"), regexes)


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    rules = []
    for i in range(draw(st.integers(1, 8))):
        paths = draw(st.lists(patterns, min_size=1, max_size=3))
        methods = draw(st.one_of(st.none(), st.frozensets(st.sampled_from(METHODS), min_size=1)))
        hosts = draw(st.one_of(st.none(), st.frozensets(st.sampled_from(HOSTS), min_size=1)))
        suffixes = draw(st.sampled_from([(), (".example.com",)])) if hosts is not None else ()
        rules.append(
            Rule(
                id=f"r{i}",
                source=f"r.yaml:{i + 3}",
                methods=methods,
                hosts=hosts,
                host_suffixes=suffixes,
                paths=compile_paths(paths),
                path_patterns=tuple(paths),
                require=Requirement("public"),
                position=i,
            )
        )
    order: Order = draw(st.sampled_from(ORDERS))
    entries = compiled_entries(tuple(rules)) if order == "most_specific" else ()
    return RuleSet(tuple(rules), order=order, entries=entries)


paths = st.one_of(
    st.lists(st.sampled_from([*SEGMENTS, "c", "v2", "y.css", "x"]), min_size=0, max_size=4).map(
        lambda segs: "/" + "/".join(segs)
    ),
    st.text(alphabet="/ab*.%1", max_size=8),  # not normalised, not even starting with "/"
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), st.lists(st.tuples(st.sampled_from(METHODS), st.sampled_from(HOSTS), paths), max_size=25))
def test_the_index_decides_as_the_scan(rs: RuleSet, requests: list[tuple[str, str, str]]) -> None:
    for method, host, path in requests:
        assert rs.match(method, host, path) is rs.scan(method, host, path), (method, host, path)


@given(st.lists(patterns, min_size=1, max_size=3), paths)
@settings(max_examples=600, deadline=None)
def test_a_matched_path_has_one_of_the_matchers_heads(globs_: list[str], path: str) -> None:
    matcher = compile_paths(globs_)
    if matcher.heads is not None and matcher.matches(path):
        assert head(path) in matcher.heads


def test_the_index_walks_only_the_rules_that_can_match() -> None:
    rules = tuple(
        Rule(
            id=f"api{i}",
            source="r.yaml",
            methods=None,
            hosts=None,
            host_suffixes=(),
            paths=compile_paths([f"/api/v{i}/**"]) if i % 2 else compile_paths([f"/v{i}/*"]),
            path_patterns=(),
            require=Requirement("public"),
            position=i,
        )
        for i in range(1000)
    )
    anywhere = Rule("css", "r.yaml", None, None, (), compile_paths(["/**/*.css"]), (), Requirement("public"))
    rs = RuleSet((*rules, anywhere))
    by_head, rest = rs._any_host
    assert [r.id for r, _ in by_head["api"]] == [f"api{i}" for i in range(1, 1000, 2)] + ["css"]
    assert [r.id for r, _ in by_head["v8"]] == ["api8", "css"]
    assert [r.id for r, _ in rest] == ["css"]
    assert rs.match("GET", "h", "/v8/x") is rules[8]
    assert rs.match("GET", "h", "/elsewhere/a.css") is anywhere
    assert rs.match("GET", "h", "/elsewhere/a.js") is None


def test_a_matcher_made_by_hand_is_always_walked() -> None:
    by_hand = Rule(
        "h", "r.yaml", None, None, (), PathMatcher(frozenset({"/x"}), (), None), (), Requirement("public")
    )
    rs = RuleSet((by_hand,))
    assert rs.match("GET", "h", "/x") is by_hand


def test_other_hosts_rules_are_not_walked() -> None:
    def rule(i: int, hosts: frozenset[str] | None, suffixes: tuple[str, ...] = ()) -> Rule:
        return Rule(
            f"r{i}", "r.yaml", None, hosts, suffixes, compile_paths(["/**"]), (), Requirement("public")
        )

    per_host = tuple(rule(i, frozenset({f"app{i}.example.com"})) for i in range(100))
    wildcard, everyone = rule(100, frozenset(), (".example.com",)), rule(101, None)
    rs = RuleSet((*per_host, wildcard, everyone))
    by_head, rest = rs._by_host["app7.example.com"]
    assert by_head == {} and [r.id for r, _ in rest] == ["r7", "r100", "r101"]
    assert [r.id for r, _ in rs._any_host[1]] == ["r100", "r101"]
    assert rs.match("GET", "app7.example.com", "/x") is per_host[7]
    assert rs.match("GET", "new.example.com", "/x") is wildcard
    assert rs.match("GET", "example.org", "/x") is everyone
