"""``sidecar rules check | test | explain``: the access rules, offline.

``check`` validates and analyses (never-matching, shadowed, overlapping and tied rules);
``test`` runs YAML test tables (``sidecar/policy_tests.py``); ``explain`` runs the same
normalisation, matching and decision code as the proxy, so what it prints is what a request
would get, for a request given on the command line or found by its id in an access log.

Each command imports what it runs, as ``sidecar.cli`` does: ``sidecar.cli`` imports this module
for every command (``serve``, ``migrate``, ...), and the policy tests with the proxy's explain
and JWT code at the top cost each of them ~0.35 s of CPU (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sidecar.config.loader import load_config
from sidecar.rules.model import ORDERS, Order

if TYPE_CHECKING:
    from sidecar.rules.model import RuleSet
    from sidecar.session.resolver import ResolvedSession


def add_rules_parser(subparsers: Any) -> None:
    rules = subparsers.add_parser("rules", help="access rules: validate and explain")
    sub = rules.add_subparsers(dest="rules_command", required=True)

    check = sub.add_parser(
        "check", help="validate rule files (default: the config's rules) and print every problem"
    )
    check.add_argument("files", nargs="*", metavar="FILE")
    _order_arg(check)
    check.add_argument("--strict", action="store_true", help="fail on warnings (overlaps) too")
    _config_args(check)
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run rule test tables (FILE.test.yaml) and report each failure")
    test.add_argument("files", nargs="+", metavar="FILE")
    _config_args(test)
    test.set_defaults(func=cmd_test)

    explain = sub.add_parser("explain", help="show which rule matches a request, why, and the decision")
    explain.add_argument("method", metavar="METHOD", nargs="?")
    explain.add_argument(
        "url", metavar="URL", nargs="?", help="absolute URL, e.g. https://app.example.com/billing/x"
    )
    explain.add_argument(
        "--request-id", metavar="ID", help="explain the request with this id, read from --log"
    )
    explain.add_argument("--log", metavar="FILE", help="access log (JSON or text lines) for --request-id")
    _order_arg(explain)
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--identity", metavar="ID", help="judge as this identity (read from the database)")
    who.add_argument("--anonymous", action="store_true", help="judge without a session (the default)")
    explain.add_argument(
        "--aal", choices=["aal1", "aal2"], default="aal1", help="session AAL with --identity"
    )
    explain.add_argument(
        "--rules", action="append", default=[], metavar="FILE", help="rule files instead of config"
    )
    _config_args(explain)
    explain.set_defaults(func=cmd_explain)


def _order_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--order", choices=ORDERS, help="rules_order for explicit rule files (default: the config's)"
    )


def _order(args: argparse.Namespace, config: Any) -> Order:
    if args.order:
        return args.order  # type: ignore[no-any-return]
    return config.rules_order if config is not None else "first_match"  # type: ignore[no-any-return]


def _prefix(config: Any) -> str | None:
    return config.serve.public.prefix if config is not None else None


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE", help="YAML config file")
    p.add_argument("--dev", action="store_true", help="development mode")


def cmd_check(args: argparse.Namespace) -> int:
    from sidecar.rules.loader import RulesError, expand_paths, load_rules

    config = None
    if args.config or not args.files:
        config = load_config(args.config, environ=os.environ, dev=args.dev, require_secrets=False)
    files = expand_paths(args.files) if args.files else expand_paths(config.rules if config else [])
    if not files:
        print("no rule files found (config key `rules` matches no file, or none is set)", file=sys.stderr)
        return 1
    try:
        ruleset = load_rules(files, order=_order(args, config), reserved_prefix=_prefix(config))
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in ruleset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    status = "valid" if not ruleset.warnings else f"valid, {len(ruleset.warnings)} warnings"
    print(f"{len(ruleset.rules)} rules in {len(files)} files ({ruleset.order}): {status}")
    return 1 if args.strict and ruleset.warnings else 0


def cmd_test(args: argparse.Namespace) -> int:
    from sidecar.policy_tests import run_files

    # Without a config: the defaults (header names, prefix); the secret is never used to sign.
    placeholder = None if args.config else {"secrets": {"cookie": ["rules-test-unused-secret"]}}
    config = load_config(args.config, environ=os.environ, dev=args.dev, overrides=placeholder)
    files = [Path(p) for f in args.files for p in (sorted(glob.glob(f)) if glob.has_magic(f) else [f])]
    results, problems = run_files(files, config)
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    for result in results:
        case = result.case
        if result.passed:
            continue
        who = f"as {case.identity_name!r}" if case.identity_name else "anonymous"
        print(f"FAIL {case.where} {case.name}")
        print(f"  request: {case.method} {case.url} {who} ({'browser' if case.browser else 'api'})")
        for problem in result.problems:
            print(f"  {problem}")
        if result.headers:
            sent = ", ".join(f"{k}: {v}" for k, v in result.headers.items())
            print(f"  headers sent upstream: {sent}")
    failed = sum(1 for r in results if not r.passed)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed or problems or not results else 0


async def _identity_session(config: Any, identity_id: str, aal: str) -> ResolvedSession | None:
    from sidecar.session.model import Session
    from sidecar.session.resolver import resolved
    from sidecar.storage.sql.database import SqlDatabase

    db = SqlDatabase(config.dsn)
    try:
        identity = await db.identities.get(uuid.UUID(identity_id))
    finally:
        await db.close()
    if identity is None:
        return None
    session = Session(identity_id=identity.id, expires_at=datetime.now(UTC) + timedelta(hours=1), aal=aal)
    return resolved(session, identity)


def explain(
    ruleset: RuleSet,
    method: str,
    url: str,
    session: ResolvedSession | None,
    out: Any = None,
    required_aal: str = "aal1",
) -> int:
    """Print the walk over the rules and the decision; returns the exit status (0 = allowed)."""
    from sidecar.proxy.explain import describe, explain_request
    from sidecar.rules.decision import Verdict

    out = out or sys.stdout
    found = explain_request(ruleset, method, url, session, required_aal)
    if found.problem is not None:
        if found.problem_status == 2:
            print(found.problem, file=out)
            return 2
        print(f"{found.method} {url}\n  {found.problem}", file=out)
        return 1
    print(f"{found.method} {url}\n  matched as: host {found.host!r}, path {found.path!r}", file=out)
    for step in found.steps:
        mark = "MATCH" if step.matched else "skip "
        print(f"  {mark} {step.rule.id:<24} {step.rule.source:<28} {step.why}", file=out)
    if found.matched is None:
        print("no rule matched: forbidden (403, default deny)", file=out)
        return 1
    print(f"rule {found.matched.id!r} requires: {describe(found.matched)}", file=out)
    who = f"identity {session.identity_id} ({session.aal})" if session else "anonymous"
    print(f"decision for {who}: {found.outcome_text}", file=out)
    return 0 if found.verdict is Verdict.ALLOW else 1


_TEXT_LINE = re.compile(r"^(?P<method>\S+) (?P<path>\S+) \d{3} .* rid=(?P<rid>\S+)(?P<extra>.*)$")


def find_logged_request(log: Path, request_id: str) -> dict[str, Any] | None:
    """The access-log entry of ``request_id`` (JSON lines, or the text format), or None."""
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if request_id not in line:
                continue
            line = line.strip()
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("request_id") == request_id:
                    return entry
                continue
            m = _TEXT_LINE.match(line)
            if m and m["rid"] == request_id:
                extra = dict(kv.split("=", 1) for kv in m["extra"].split() if "=" in kv)
                return {
                    "method": m["method"],
                    "path": m["path"],
                    "rule": extra.get("rule"),
                    "decision": extra.get("decision"),
                    "identity_id": extra.get("identity"),
                }
    return None


def cmd_explain(args: argparse.Namespace) -> int:
    from sidecar.rules.loader import RulesError, expand_paths, load_rules

    logged: dict[str, Any] | None = None
    if args.request_id:
        if not args.log:
            print("--request-id needs --log FILE (the access log to read)", file=sys.stderr)
            return 2
        try:
            logged = find_logged_request(Path(args.log), args.request_id)
        except OSError as exc:
            print(f"cannot read {args.log}: {exc.strerror}", file=sys.stderr)
            return 2
        if logged is None:
            print(f"request id {args.request_id} not found in {args.log}", file=sys.stderr)
            return 2
    elif not (args.method and args.url):
        print("give METHOD URL, or --request-id ID --log FILE", file=sys.stderr)
        return 2
    identity = args.identity or (logged.get("identity_id") if logged and not args.anonymous else None)
    config = None
    if identity or not args.rules or logged is not None:
        config = load_config(args.config, environ=os.environ, dev=args.dev, require_secrets=False)
    files = expand_paths(args.rules) if args.rules else expand_paths(config.rules if config else [])
    try:
        ruleset = load_rules(files, order=_order(args, config), reserved_prefix=_prefix(config))
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    if not ruleset.rules:
        where = "--rules FILE" if args.rules else "the config key `rules` (-c FILE)"
        print(
            f"no rules are loaded (from {where}): every request is denied (403, default deny)",
            file=sys.stderr,
        )
        return 2
    method, url = args.method, args.url
    if logged is not None:
        assert config is not None
        # The log has the normalised path; the host is the logged one, else the public base URL's.
        base = urlsplit(config.public_base_url)
        host = logged.get("host") or base.netloc
        method, url = str(logged.get("method")), f"{base.scheme}://{host}{logged.get('path')}"
        print(
            f"request {args.request_id}: logged rule {logged.get('rule')!r}, decision "
            f"{logged.get('decision')!r}, identity {logged.get('identity_id')!r}"
        )
    session = None
    if identity:
        session = asyncio.run(_identity_session(config, identity, args.aal))
        if session is None:
            print(f"identity {identity} not found", file=sys.stderr)
            return 2
    required_aal = config.session.whoami.required_aal if config is not None else "aal1"
    return explain(ruleset, method, url, session, required_aal=required_aal)
