"""``sidecar rules test``: YAML test tables for access rules, in the spirit of ``opa test``.

A test file names its rule files and lists requests with the answer each must get::

    rules: [example.yaml]            # relative to this file
    rules_order: first_match         # optional
    identities:                      # optional, reusable by name
      finance: {traits: {email: f@example.com}, metadata_public: {roles: [finance]}, aal: aal2}
    tests:
      - name: billing needs a second factor
        request: {method: GET, url: /billing/x, identity: {aal: aal1, metadata_public: {roles: [finance]}}}
        expect: {decision: step-up, rule: billing}

``request``: ``method`` (GET), ``url`` (a path or an absolute URL), ``identity`` (a name, an
inline identity, or ``anonymous``, the default) and ``client`` (``api``, the default, or
``browser``). ``expect``: ``decision`` (``allow``, ``redirect``, ``401``, ``403``, ``step-up`` or
``400`` for a path the proxy refuses), optionally ``rule`` (the deciding rule id, ``null`` for
none) and ``headers`` (identity headers sent upstream; ``null`` means not sent).

Each request goes through the proxy's own code: path normalisation, rule matching, the
judgement of ``rules/decision.py`` and the proxy's identity-header rendering, so a passing table says
what the running sidecar does. The signed upstream JWT is not produced here (no signing key).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from sidecar.config.model import Config
from sidecar.proxy.access import Outcome
from sidecar.proxy.explain import decide
from sidecar.proxy.identity_headers import IdentityHeaders
from sidecar.proxy.paths import BadPath, normalise_path
from sidecar.rules.decision import Verdict
from sidecar.rules.holder import RulesHolder
from sidecar.rules.loader import _LINE, RulesError, _LineLoader, load_rules
from sidecar.rules.model import ORDERS, RuleSet, normalise_host
from sidecar.session.resolver import ResolvedSession

DECISIONS = ("allow", "redirect", "401", "403", "step-up", "400")
_TEST_KEYS = {"rules", "rules_order", "identities", "tests"}
_CASE_KEYS = {"name", "request", "expect"}
_REQUEST_KEYS = {"method", "url", "identity", "client"}
_EXPECT_KEYS = {"decision", "rule", "headers"}
_IDENTITY_KEYS = {
    *("id", "traits", "metadata_public", "aal", "verified", "available_aal", "schema_id"),
    *("organization_id", "organization"),
}
DEFAULT_HOST = "app.example.com"


class TestFileError(Exception):
    """A test file is malformed; ``problems`` name file, line and key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    where: str
    method: str
    url: str
    identity_name: str | None
    identity: ResolvedSession | None
    browser: bool
    decision: str
    rule: str | None
    check_rule: bool
    headers: dict[str, str | None]


@dataclass(slots=True)
class TestFile:
    path: Path
    rule_files: list[Path]
    order: str
    cases: list[Case] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    decision: str
    rule: str | None
    reason: str
    headers: dict[str, str]
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


def _session(raw: dict[str, Any], name: str) -> ResolvedSession:
    now = datetime.now(UTC)
    traits = raw.get("traits") or {}
    email = traits.get("email") if isinstance(traits, dict) else None
    aal = str(raw.get("aal", "aal1"))
    return ResolvedSession(
        session_id=uuid.uuid5(uuid.NAMESPACE_URL, f"sidecar-rules-test-session:{name}"),
        identity_id=uuid.UUID(str(raw["id"])) if "id" in raw else uuid.uuid5(uuid.NAMESPACE_URL, name),
        email=email if isinstance(email, str) else None,
        aal=aal,
        traits=traits if isinstance(traits, dict) else {},
        metadata_public=raw.get("metadata_public"),
        schema_id=str(raw.get("schema_id", "default")),
        verified=raw.get("verified") is True,
        expires_at=now + timedelta(hours=1),
        authenticated_at=now,
        available_aal=str(raw.get("available_aal", aal)),
        organization_id=uuid.UUID(str(raw["organization_id"])) if raw.get("organization_id") else None,
        organization_slug=str(raw["organization"]) if raw.get("organization") else None,
    )


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def bad(self, line: Any, key: str, reason: str) -> None:
        self.problems.append(f"{self.path}:{line}: {key}: {reason}")

    def keys(self, raw: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in sorted(raw.keys() - allowed - {_LINE}):
            self.bad(
                raw.get(_LINE, "?"), f"{where}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
            )

    def identity(self, raw: Any, line: Any, name: str) -> ResolvedSession | None:
        if not isinstance(raw, dict):
            self.bad(line, "identity", "expected a mapping (id, traits, metadata_public, aal, verified)")
            return None
        self.keys(raw, _IDENTITY_KEYS, "identity.")
        if raw.get("aal", "aal1") not in ("aal1", "aal2"):
            self.bad(raw.get(_LINE, line), "identity.aal", "must be aal1 or aal2")
        clean = {k: _strip_lines(v) for k, v in raw.items() if k != _LINE}
        try:
            return _session(clean, name)
        except ValueError as exc:
            self.bad(raw.get(_LINE, line), "identity.id", str(exc))
            return None

    def read(self) -> TestFile:
        try:
            doc = yaml.load(self.path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506
        except OSError as exc:
            raise TestFileError([f"{self.path}: cannot read: {exc.strerror}"]) from None
        except yaml.YAMLError as exc:
            raise TestFileError([f"{self.path}: yaml: {str(exc).replace(chr(10), ' ')}"]) from None
        if not isinstance(doc, dict):
            raise TestFileError([f"{self.path}: expected a mapping with rules and tests"])
        self.keys(doc, _TEST_KEYS, "")
        default_rules = self.path.name.replace(".test.yaml", ".yaml").replace(".test.yml", ".yml")
        rules = doc.get("rules", [default_rules])
        if isinstance(rules, str):
            rules = [rules]
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            self.bad(doc.get(_LINE), "rules", "expected a list of rule file paths")
            rules = []
        order = doc.get("rules_order", "first_match")
        if order not in ORDERS:
            self.bad(doc.get(_LINE), "rules_order", f"one of {', '.join(ORDERS)}")
        named: dict[str, ResolvedSession | None] = {}
        identities = doc.get("identities") or {}
        if not isinstance(identities, dict):
            self.bad(doc.get(_LINE), "identities", "expected a mapping of name to identity")
            identities = {}
        for name, raw in identities.items():
            if name != _LINE:
                named[str(name)] = self.identity(raw, identities.get(_LINE), str(name))
        out = TestFile(self.path, [self.path.parent / r for r in rules], str(order))
        tests = doc.get("tests")
        if not isinstance(tests, list) or not tests:
            self.bad(doc.get(_LINE), "tests", "expected a non-empty list of test cases")
            tests = []
        for i, raw in enumerate(tests):
            case = self.case(raw, i, named)
            if case is not None:
                out.cases.append(case)
        if self.problems:
            raise TestFileError(self.problems)
        return out

    def case(self, raw: Any, i: int, named: dict[str, ResolvedSession | None]) -> Case | None:
        if not isinstance(raw, dict):
            self.bad("?", f"tests[{i}]", "each test is a mapping with name, request and expect")
            return None
        line = raw.get(_LINE, "?")
        self.keys(raw, _CASE_KEYS, f"tests[{i}].")
        req, exp = raw.get("request"), raw.get("expect")
        if not isinstance(req, dict) or not isinstance(exp, dict):
            self.bad(line, f"tests[{i}]", "needs a request mapping and an expect mapping")
            return None
        self.keys(req, _REQUEST_KEYS, "request.")
        self.keys(exp, _EXPECT_KEYS, "expect.")
        url = req.get("url")
        if not isinstance(url, str) or not (url.startswith("/") or "://" in url):
            self.bad(req.get(_LINE, line), "request.url", "a path (/x) or an absolute URL")
            return None
        who = req.get("identity", "anonymous")
        name: str | None = None
        session: ResolvedSession | None = None
        if isinstance(who, str) and who != "anonymous":
            if who not in named:
                self.bad(req.get(_LINE, line), "request.identity", f"no identity named {who!r}")
            name, session = who, named.get(who)
        elif isinstance(who, dict):
            name, session = "(inline)", self.identity(who, req.get(_LINE, line), f"{self.path}:{line}")
        client = req.get("client", "api")
        if client not in ("api", "browser"):
            self.bad(req.get(_LINE, line), "request.client", "api or browser")
        decision = str(exp.get("decision"))
        if decision not in DECISIONS:
            self.bad(exp.get(_LINE, line), "expect.decision", f"one of {', '.join(DECISIONS)}")
        headers = exp.get("headers") or {}
        if not isinstance(headers, dict):
            self.bad(
                exp.get(_LINE, line), "expect.headers", "a mapping of header name to value (null: not sent)"
            )
            headers = {}
        return Case(
            name=str(raw.get("name") or f"test {i + 1}"),
            where=f"{self.path}:{line}",
            method=str(req.get("method", "GET")).upper(),
            url=url,
            identity_name=name,
            identity=session,
            browser=client == "browser",
            decision=decision,
            rule=exp.get("rule"),
            check_rule="rule" in exp,
            headers={str(k): (None if v is None else str(v)) for k, v in headers.items() if k != _LINE},
        )


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != _LINE}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def read_test_file(path: Path) -> TestFile:
    return _Reader(path).read()


def decision_name(outcome: Outcome) -> str:
    verdict = outcome.verdict
    if verdict is Verdict.ALLOW:
        return "allow"
    if verdict is Verdict.LOGIN:
        return "401" if outcome.api else "redirect"
    if verdict is Verdict.STEP_UP:
        return "step-up"
    if verdict is Verdict.UNAVAILABLE:
        return "503"
    return "403"


class Runner:
    """Runs test cases against rule sets, with the proxy's header rendering from ``config``."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def run_file(self, test_file: TestFile) -> list[Result]:
        holder = RulesHolder([], order=test_file.order, reserved_prefix=self.config.serve.public.prefix)  # type: ignore[arg-type]
        holder.current = load_rules(
            test_file.rule_files, order=holder.order, reserved_prefix=holder.reserved_prefix
        )
        identity = IdentityHeaders(self.config.proxy, holder)
        return [self.run_case(identity, holder.current, case) for case in test_file.cases]

    def run_case(self, identity: IdentityHeaders, ruleset: RuleSet, case: Case) -> Result:
        parts = urlsplit(case.url)
        host = normalise_host(parts.netloc) if parts.netloc else DEFAULT_HOST
        try:
            path = normalise_path(
                (parts.path or "/").encode("latin-1"),
                reject_parameters=self.config.proxy.reject_path_parameters,
            )
        except (BadPath, UnicodeEncodeError) as exc:
            return self._compare(case, "400", None, f"path refused: {exc}", {})
        outcome = decide(
            ruleset,
            case.method,
            host,
            path,
            case.identity,
            not case.browser,
            self.config.session.whoami.required_aal,
        )
        decision = decision_name(outcome)
        headers: dict[str, str] = {}
        if outcome.allowed:
            headers = {
                name.decode("latin-1"): value.decode("latin-1") for name, value in identity.render(outcome)
            }
        return self._compare(
            case, decision, outcome.rule.id if outcome.rule else None, outcome.reason, headers
        )

    @staticmethod
    def _compare(case: Case, decision: str, rule: str | None, reason: str, headers: dict[str, str]) -> Result:
        problems: list[str] = []
        if decision != case.decision:
            problems.append(f"decision: expected {case.decision}, got {decision} ({reason})")
        if case.check_rule and rule != case.rule:
            problems.append(f"rule: expected {case.rule!r}, got {rule!r}")
        lower = {k.lower(): v for k, v in headers.items()}
        for name, want in case.headers.items():
            got = lower.get(name.lower())
            if got != want:
                shown = "not sent" if got is None else repr(got)
                problems.append(
                    f"header {name}: expected {'not sent' if want is None else repr(want)}, got {shown}"
                )
        return Result(case, decision, rule, reason, headers, tuple(problems))


def run_files(paths: list[Path], config: Config) -> tuple[list[Result], list[str]]:
    """Every result, and the problems of test or rule files that could not run."""
    runner = Runner(config)
    results: list[Result] = []
    problems: list[str] = []
    for path in paths:
        try:
            results += runner.run_file(read_test_file(path))
        except TestFileError as exc:
            problems += exc.problems
        except RulesError as exc:
            problems += [f"{path}: rules: {p}" for p in exc.problems]
    return results, problems
