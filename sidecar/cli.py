"""The ``sidecar`` command: serve, migrate, config check/schema/docs, rules, demo, version."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from sidecar import __version__
from sidecar.cli_rules import add_rules_parser
from sidecar.config.loader import ConfigError, load_config
from sidecar.rules.loader import RulesError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config file (repeatable; later files override earlier ones)",
    )
    p.add_argument("--dev", action="store_true", help="development mode: http cookies, generated secrets")


def _cmd_serve(args: argparse.Namespace) -> int:
    from sidecar import server

    return server.run(args.config, dev=args.dev, workers=args.workers, migrate=args.migrate)


def _cmd_demo(args: argparse.Namespace) -> int:
    from sidecar import demo

    return demo.run(args.config, public_port=args.port, upstream_port=args.upstream_port)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from sidecar.preflight import StartupError, database_problem, open_sqlite
    from sidecar.storage.sql.database import SqlDatabase

    # Migrations sign nothing: no secrets needed, so a CI job can run them with the DSN alone.
    config = load_config(args.config, environ=os.environ, dev=args.dev, require_secrets=False)

    async def go() -> list[tuple[str, str, bool]]:
        db = SqlDatabase(config.dsn)
        try:
            if args.action == "up":
                await db.migrate()
            return await db.migration_status()
        finally:
            await db.close()

    open_sqlite(config.dsn)
    try:
        status = asyncio.run(go())
    except Exception as exc:  # any driver error: one line naming the DSN
        raise StartupError(database_problem(config.dsn, exc)) from None
    if args.action == "up":
        print("migrations applied")
    for revision, description, applied in status:
        print(f"{'applied' if applied else 'pending':8} {revision}  {description}")
    return 0


def _cmd_config_check(args: argparse.Namespace) -> int:
    from sidecar.preflight import check_config

    try:
        config = load_config(args.files, environ=os.environ, dev=args.dev)
    except ConfigError as exc:
        for key, reason in exc.problems:
            print(f"{key}: {reason}", file=sys.stderr)
        return 1
    report = check_config(config)
    for key, reason in report.problems:
        print(f"{key}: {reason}", file=sys.stderr)
    for key, reason in report.warnings:
        print(f"warning: {key}: {reason}", file=sys.stderr)
    if report.problems:
        return 1
    print("configuration is valid")
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    from sidecar.config.describe import json_schema_text

    sys.stdout.write(json_schema_text())
    return 0


def _cmd_config_docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sidecar.config.describe import markdown

    text = markdown()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    try:
        current = Path(args.check).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{args.check}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    if current != text:
        print(f"{args.check} is out of date: run `sidecar config docs > {args.check}`", file=sys.stderr)
        return 1
    print(f"{args.check} is current")
    return 0


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"sidecar {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar", description="Identity and authentication sidecar")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the public and admin listeners")
    _add_config_args(serve)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="apply database migrations before serving (as `sidecar migrate up`; --dev always does)",
    )
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser("demo", help="run sidecar (--dev) in front of a demo app that shows its headers")
    demo.add_argument("-c", "--config", action="append", default=[], metavar="FILE")
    demo.add_argument("--port", type=int, default=4433, help="public port (default 4433)")
    demo.add_argument("--upstream-port", type=int, default=8080, help="demo app port (default 8080)")
    demo.set_defaults(func=_cmd_demo)

    migrate = sub.add_parser("migrate", help="apply or show database migrations")
    migrate.add_argument("action", choices=["up", "status"])
    _add_config_args(migrate)
    migrate.set_defaults(func=_cmd_migrate)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate config files and print every problem")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--dev", action="store_true")
    check.set_defaults(func=_cmd_config_check)
    schema = config_sub.add_parser("schema", help="print the JSON Schema of the configuration")
    schema.set_defaults(func=_cmd_config_schema)
    docs = config_sub.add_parser("docs", help="print the configuration reference (docs/CONFIG.md)")
    docs.add_argument("--check", metavar="FILE", help="fail when FILE is not what would be printed")
    docs.set_defaults(func=_cmd_config_docs)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version)

    add_rules_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sidecar.preflight import StartupError

    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except RulesError as exc:
        print(f"access rules refused:\n{exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
