"""Reading and validating ``rules/*.yaml`` into a compiled ``RuleSet``, off the hot path.

Every problem names the file, the line, the rule and the key; all problems of all files are
collected before failing, so one ``sidecar rules check`` run shows the whole list.
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from sidecar.config.durations import parse_duration
from sidecar.rules.analysis import analyse
from sidecar.rules.model import (
    Level,
    Order,
    PathMatcher,
    Requirement,
    Rule,
    RuleSet,
    UpstreamJwt,
    compile_paths,
)
from sidecar.rules.order import compiled_entries
from sidecar.rules.templates import Template, TemplateError, compile_template

_LEVELS = ("public", "optional", "authenticated", "deny")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_RULE_KEYS = {
    "id",
    "description",
    "match",
    "require",
    "on_unauthenticated",
    "headers",
    "upstream_jwt",
    "upstream",
}
_MATCH_KEYS = {"methods", "hosts", "paths"}
_REQUIRE_KEYS = {"level", "aal", "verified", "roles", "traits", "organization"}
_LINE = "__line__"
_TEST_SUFFIXES = (".test.yaml", ".test.yml")


class RulesError(Exception):
    """Rules failed validation. ``problems`` are human-readable lines naming file, rule and key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping so errors can point at the rule."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[_LINE] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def expand_paths(patterns: Iterable[str], base: Path | None = None) -> list[Path]:
    """Config ``rules`` entries in order; a glob expands in name order and skips policy test
    tables (``*.test.yaml``, ``*.test.yml``), which live next to the rules they test."""
    out: list[Path] = []
    for pattern in patterns:
        full = str(base / pattern) if base and not Path(pattern).is_absolute() else pattern
        if any(ch in full for ch in "*?["):
            out.extend(Path(p) for p in sorted(glob.glob(full)) if not p.endswith(_TEST_SUFFIXES))
        else:
            out.append(Path(full))
    return out


class _Collector:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, rule: str | None, key: str, reason: str) -> None:
        who = f" rule {rule!r}" if rule else ""
        self.problems.append(f"{where}:{who} {key}: {reason}")


def _str_list(value: Any, where: str, rule: str, key: str, errs: _Collector) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        errs.add(where, rule, key, "expected a non-empty list of strings")
        return None
    return list(value)


def _compile_requirement(raw: Any, where: str, rid: str, errs: _Collector) -> Requirement | None:
    if isinstance(raw, str):
        if raw not in _LEVELS:
            errs.add(where, rid, "require", f"unknown level {raw!r} (one of {', '.join(_LEVELS)})")
            return None
        return Requirement(level=raw)  # type: ignore[arg-type]
    if not isinstance(raw, dict):
        errs.add(where, rid, "require", "expected a level or a mapping with level and conditions")
        return None
    for key in raw.keys() - _REQUIRE_KEYS - {_LINE}:
        errs.add(where, rid, f"require.{key}", f"unknown key (allowed: {', '.join(sorted(_REQUIRE_KEYS))})")
    level: Level = raw.get("level", "authenticated")
    if level not in _LEVELS:
        errs.add(where, rid, "require.level", f"unknown level {level!r}")
        return None
    aal = raw.get("aal", "aal1")
    if aal not in ("aal1", "aal2"):
        errs.add(where, rid, "require.aal", "must be aal1 or aal2")
    verified = raw.get("verified", False)
    if not isinstance(verified, bool):
        errs.add(where, rid, "require.verified", "must be true or false")
    roles = None
    if "roles" in raw:
        lst = _str_list(raw["roles"], where, rid, "require.roles", errs)
        roles = frozenset(lst) if lst else None
    organizations = None
    if "organization" in raw:
        lst = _str_list(raw["organization"], where, rid, "require.organization", errs)
        organizations = frozenset(lst) if lst else None
    traits = raw.get("traits", {})
    if not isinstance(traits, dict):
        errs.add(where, rid, "require.traits", "expected a mapping of trait name to value")
        traits = {}
    traits = {k: v for k, v in traits.items() if k != _LINE}
    req = Requirement(
        level,
        aal2=aal == "aal2",
        verified=verified is True,
        roles=roles,
        traits=traits,
        organizations=organizations,
    )
    if req.has_conditions and level in ("public", "deny"):
        errs.add(where, rid, "require", f"conditions need level authenticated (or optional), not {level}")
    return req


def _compile_rule(raw: Any, where: str, index: int, errs: _Collector) -> Rule | None:
    if not isinstance(raw, dict):
        errs.add(where, None, f"rules[{index}]", "each rule must be a mapping")
        return None
    where = f"{where.split(':')[0]}:{raw.get(_LINE, '?')}"
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        errs.add(where, None, f"rules[{index}].id", "every rule needs a non-empty string id")
        rid = f"#{index}"
    for key in raw.keys() - _RULE_KEYS - {_LINE}:
        errs.add(where, rid, key, f"unknown key (allowed: {', '.join(sorted(_RULE_KEYS))})")
    match = raw.get("match")
    if not isinstance(match, dict):
        errs.add(where, rid, "match", "required mapping with methods, hosts and/or paths")
        return None
    for key in match.keys() - _MATCH_KEYS - {_LINE}:
        errs.add(where, rid, f"match.{key}", "unknown key (allowed: hosts, methods, paths)")
    methods: frozenset[str] | None = None
    if match.get("methods") == []:
        errs.add(where, rid, "match.methods", "an empty method list matches no request (omit it for any)")
    elif "methods" in match:
        lst = _str_list(match["methods"], where, rid, "match.methods", errs) or []
        upper = {m.upper() for m in lst}
        for m in sorted(upper - _METHODS):
            errs.add(where, rid, "match.methods", f"unknown method {m!r}")
        methods = frozenset(upper | ({"HEAD"} if "GET" in upper else set()))
    hosts: frozenset[str] | None = None
    suffixes: tuple[str, ...] = ()
    if "hosts" in match:
        lst = [
            h.lower().rstrip(".") for h in _str_list(match["hosts"], where, rid, "match.hosts", errs) or []
        ]
        suffixes = tuple(h[1:] for h in lst if h.startswith("*."))
        hosts = frozenset(h for h in lst if not h.startswith("*."))
        for h in hosts:
            if "*" in h or ":" in h or "/" in h:
                errs.add(where, rid, "match.hosts", f"{h!r}: exact host or '*.' wildcard, without port")
    if "paths" not in match:
        errs.add(where, rid, "match.paths", "required: a list of globs or regex: patterns")
        return None
    patterns = _str_list(match["paths"], where, rid, "match.paths", errs) or []
    for p in patterns:
        if not p.startswith(("/", "regex:")):
            errs.add(where, rid, "match.paths", f"{p!r}: a path glob starts with '/' (or use regex:)")
        if "?" in p and not p.startswith("regex:"):
            errs.add(where, rid, "match.paths", f"{p!r}: the query string is never matched")
    try:
        paths = compile_paths(patterns)
    except ValueError as exc:
        errs.add(where, rid, "match.paths", f"invalid pattern: {exc}")
        paths = PathMatcher(frozenset(), (), None)
    require = _compile_requirement(raw.get("require"), where, rid, errs) if "require" in raw else None
    if require is None:
        if "require" not in raw:
            errs.add(where, rid, "require", "required: public, optional, authenticated or deny")
        return None
    on_unauth = raw.get("on_unauthenticated")
    if on_unauth not in (None, "redirect", "json"):
        errs.add(where, rid, "on_unauthenticated", "must be redirect or json")
        on_unauth = None
    headers: list[tuple[str, Template]] = []
    raw_headers = raw.get("headers", {})
    if not isinstance(raw_headers, dict):
        errs.add(where, rid, "headers", "expected a mapping of header name to template")
        raw_headers = {}
    for name, source in raw_headers.items():
        if name == _LINE:
            continue
        if not isinstance(name, str) or not name or not all(c.isalnum() or c == "-" for c in name):
            errs.add(where, rid, f"headers.{name}", "header names use letters, digits and '-' only")
            continue
        try:
            headers.append((name, compile_template(str(source))))
        except TemplateError as exc:
            errs.add(where, rid, f"headers.{name}", str(exc))
    jwt = None
    raw_jwt = raw.get("upstream_jwt")
    if raw_jwt is True:
        jwt = UpstreamJwt(None, timedelta(minutes=1))
    elif isinstance(raw_jwt, dict):
        try:
            jwt = UpstreamJwt(raw_jwt.get("audience"), parse_duration(raw_jwt.get("ttl", "60s")))
        except ValueError as exc:
            errs.add(where, rid, "upstream_jwt.ttl", str(exc))
    elif raw_jwt not in (None, False):
        errs.add(where, rid, "upstream_jwt", "expected true or {audience, ttl}")
    upstream = raw.get("upstream")
    if upstream is not None and (
        not isinstance(upstream, str) or not upstream.startswith(("http://", "https://"))
    ):
        errs.add(where, rid, "upstream", "expected an http:// or https:// URL")
        upstream = None
    return Rule(
        id=rid,
        source=where,
        methods=methods,
        hosts=hosts,
        host_suffixes=suffixes,
        paths=paths,
        path_patterns=tuple(patterns),
        require=require,
        on_unauthenticated=on_unauth,
        headers=tuple(headers),
        upstream_jwt=jwt,
        upstream=upstream.rstrip("/") if upstream else None,
    )


def parse_rules(
    sources: Iterable[tuple[str, str]], *, order: Order = "first_match", reserved_prefix: str | None = None
) -> RuleSet:
    """Compile ``(file name, YAML text)`` pairs; raises ``RulesError`` listing every problem.

    After the per-rule checks, ``rules/analysis.py`` looks at the set as a whole: rules that can
    never match, shadowed rules and (``most_specific``) ties are errors; overlaps are warnings,
    kept on the returned ``RuleSet``. ``reserved_prefix`` is the sidecar's own path prefix, which
    never reaches the rules.
    """
    errs = _Collector()
    rules: list[Rule] = []
    files: list[str] = []
    for name, text in sources:
        files.append(name)
        try:
            doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
        except yaml.YAMLError as exc:
            errs.add(name, None, "yaml", str(exc).replace("\n", " "))
            continue
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            errs.add(name, None, "(top level)", "expected a mapping with version and rules")
            continue
        if doc.get("version", 1) != 1:
            errs.add(f"{name}:{doc.get(_LINE, 1)}", None, "version", "only version 1 is supported")
        for key in doc.keys() - {"version", "rules", _LINE}:
            errs.add(f"{name}:{doc.get(_LINE, 1)}", None, key, "unknown key (allowed: version, rules)")
        raw_rules = doc.get("rules", [])
        if not isinstance(raw_rules, list):
            errs.add(name, None, "rules", "expected a list of rules")
            continue
        for i, raw in enumerate(raw_rules):
            rule = _compile_rule(raw, f"{name}:?", i, errs)
            if rule is not None:
                rules.append(rule)
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in seen:
            errs.add(rule.source, rule.id, "id", f"duplicate id (first defined at {seen[rule.id].source})")
        seen.setdefault(rule.id, rule)
    if errs.problems:
        raise RulesError(errs.problems)
    rules = [dataclasses.replace(rule, position=i) for i, rule in enumerate(rules)]
    findings = analyse(tuple(rules), order, reserved_prefix=reserved_prefix)
    errors = [str(f) for f in findings if f.severity == "error"]
    if errors:
        raise RulesError(errors)
    return RuleSet(
        tuple(rules),
        tuple(files),
        order=order,
        entries=compiled_entries(tuple(rules)) if order == "most_specific" else (),
        warnings=tuple(str(f) for f in findings if f.severity == "warning"),
        hits=[0] * len(rules),
    )


def load_rules(
    paths: Iterable[Path], *, order: Order = "first_match", reserved_prefix: str | None = None
) -> RuleSet:
    sources: list[tuple[str, str]] = []
    problems: list[str] = []
    for path in paths:
        try:
            sources.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror}")
    if problems:
        raise RulesError(problems)
    return parse_rules(sources, order=order, reserved_prefix=reserved_prefix)
