"""``sidecar rules check`` and ``sidecar rules explain``: the access rules, offline.

``explain`` runs the same normalisation, matching and decision code as the proxy, so what it
prints is what a request would get.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sidecar.config.loader import load_config
from sidecar.proxy.paths import BadPath, normalise_path
from sidecar.rules.decision import Verdict, judge
from sidecar.rules.loader import RulesError, expand_paths, load_rules
from sidecar.rules.model import Rule, RuleSet, normalise_host
from sidecar.session.resolver import ResolvedSession


def add_rules_parser(subparsers: Any) -> None:
    rules = subparsers.add_parser("rules", help="access rules: validate and explain")
    sub = rules.add_subparsers(dest="rules_command", required=True)

    check = sub.add_parser(
        "check", help="validate rule files (default: the config's rules) and print every problem"
    )
    check.add_argument("files", nargs="*", metavar="FILE")
    _config_args(check)
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="show which rule matches a request, why, and the decision")
    explain.add_argument("method", metavar="METHOD")
    explain.add_argument("url", metavar="URL", help="absolute URL, e.g. https://app.example.com/billing/x")
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


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE", help="YAML config file")
    p.add_argument("--dev", action="store_true", help="development mode")


def _files(args: argparse.Namespace, explicit: list[str]) -> list[Path]:
    if explicit:
        return expand_paths(explicit)
    config = load_config(args.config, environ=os.environ, dev=args.dev)
    return expand_paths(config.rules)


def cmd_check(args: argparse.Namespace) -> int:
    files = _files(args, args.files)
    if not files:
        print("no rule files configured (config key: rules)", file=sys.stderr)
        return 1
    try:
        ruleset = load_rules(files)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"{len(ruleset.rules)} rules in {len(files)} files: valid")
    return 0


def describe(rule: Rule) -> str:
    req = rule.require
    parts: list[str] = [req.level]
    if req.aal2:
        parts.append("aal2")
    if req.verified:
        parts.append("a verified address")
    if req.roles is not None:
        parts.append(f"one of roles {sorted(req.roles)}")
    parts += [f"trait {k} == {v!r}" for k, v in req.traits.items()]
    return ", ".join(parts)


_OUTCOMES = {
    Verdict.ALLOW: "allow",
    Verdict.LOGIN: "login required (browser: redirect to login; API: 401 session_inactive)",
    Verdict.STEP_UP: "step-up required (browser: login with aal=aal2; API: 403 session_aal2_required)",
    Verdict.FORBIDDEN: "forbidden (403)",
    Verdict.UNAVAILABLE: "session store unavailable (503)",
}


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


def explain(ruleset: RuleSet, method: str, url: str, session: ResolvedSession | None, out: Any = None) -> int:
    """Print the walk over the rules and the decision; returns the exit status (0 = allowed)."""
    out = out or sys.stdout
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        print(f"not an absolute URL: {url}", file=out)
        return 2
    try:
        path = normalise_path((parts.path or "/").encode("latin-1"))
    except BadPath as exc:
        print(f"{method} {url}\n  400: the path is ambiguous or malformed: {exc}", file=out)
        return 1
    host = normalise_host(parts.netloc)
    method = method.upper()
    print(f"{method} {url}\n  matched as: host {host!r}, path {path!r}", file=out)
    matched: Rule | None = None
    for rule, why in ruleset.explain(method, host, path):
        mark = "MATCH" if why == "matched" else "skip "
        print(f"  {mark} {rule.id:<24} {rule.source:<28} {why}", file=out)
        if why == "matched":
            matched = rule
    if matched is None:
        print("no rule matched: forbidden (403, default deny)", file=out)
        return 1
    print(f"rule {matched.id!r} requires: {describe(matched)}", file=out)
    level = matched.require.level
    if level in ("deny", "public"):
        verdict = Verdict.FORBIDDEN if level == "deny" else Verdict.ALLOW
    elif session is None:
        verdict = Verdict.ALLOW if level == "optional" else Verdict.LOGIN
    else:
        verdict = judge(matched, session)[0]
    who = f"identity {session.identity_id} ({session.aal})" if session else "anonymous"
    print(f"decision for {who}: {_OUTCOMES[verdict]}", file=out)
    return 0 if verdict is Verdict.ALLOW else 1


def cmd_explain(args: argparse.Namespace) -> int:
    config = None
    if args.identity or not args.rules:
        config = load_config(args.config, environ=os.environ, dev=args.dev)
    files = expand_paths(args.rules) if args.rules else expand_paths(config.rules if config else [])
    try:
        ruleset = load_rules(files)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    session = None
    if args.identity:
        session = asyncio.run(_identity_session(config, args.identity, args.aal))
        if session is None:
            print(f"identity {args.identity} not found", file=sys.stderr)
            return 2
    return explain(ruleset, args.method, args.url, session)
