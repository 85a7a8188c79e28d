"""What ``sidecar serve`` checks before it listens, and what ``sidecar config check`` prints.

``check_config`` loads everything the server would load at start, without starting it, and
collects every problem by key: identity schemas, rule files (a pattern that matches no file is a
problem, not a silent deny-all), claims mappers, the mail template folder, the ``dsn`` scheme and
the SQLite file's folder, ``redis.url``, ``proxy.upstream``, the SMTP URI, the audit web hook's
event names, an ``sms`` courier channel for traits verified via sms, the HTTP courier bodies.
``prepare_database`` then reaches the database: it must answer, and its schema must be current
(or be migrated now, with ``--migrate``). Any failure is a :class:`StartupError`: one line naming
the cause and the config key, never a traceback, so ``sidecar serve`` exits non-zero with something to act on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sidecar.config.loader import ConfigError
from sidecar.config.model import Config

log = logging.getLogger("sidecar")

Problem = tuple[str, str]


class StartupError(Exception):
    """The server cannot start; ``str()`` is the one line to show."""


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def check_config(config: Config) -> Report:
    """Every problem (and warning) of a validated ``Config`` that only shows when loading its files."""
    report = Report()
    _check_schemas(config, report)
    _check_rules(config, report)
    _check_dsn(config, report)
    _check_redis(config, report)
    _check_courier(config, report)
    _check_oidc(config, report)
    _check_proxy(config, report)
    _check_tokenizer(config, report)
    _check_audit(config, report)
    return report


def _check_audit(config: Config, report: Report) -> None:
    from sidecar.audit import EVENTS

    hook = config.log.audit.webhook
    unknown = sorted(set(hook.events or ()) - set(EVENTS)) if hook is not None else []
    if unknown:
        report.problems.append(
            ("log.audit.webhook.events", f"unknown event name(s) {unknown} (docs/AUDIT.md lists them)")
        )


def _check_schemas(config: Config, report: Report) -> None:
    from sidecar.schema.registry import SchemaRegistry

    registry = SchemaRegistry(config.identity, base_url=config.public_base_url)
    try:
        asyncio.run(registry.load())
    except ConfigError as exc:
        report.problems += exc.problems
        return
    if config.courier.channel("sms") is None:
        # Kratos would queue the text messages and fail every delivery ("no channel"): refused here.
        for schema in registry.all():
            for path in schema.fields_via("verification", "sms"):
                report.problems.append(
                    (
                        "courier.channels",
                        f"identity schema {schema.id!r}: {path} is verified via sms, but no courier "
                        "channel with id sms is configured",
                    )
                )


def _check_rules(config: Config, report: Report) -> None:
    from sidecar.rules.loader import RulesError, expand_paths, load_rules

    files = []
    for index, pattern in enumerate(config.rules):
        matched = expand_paths([pattern])
        if any(ch in pattern for ch in "*?[") and not matched:
            report.problems.append((f"rules.{index}", f"{pattern!r} matches no file"))
        files += matched
    if not files:
        if config.proxy.upstream:
            report.warnings.append(
                ("rules", "no rules are configured: every request to proxy.upstream will be denied (403)")
            )
        return
    try:
        load_rules(files, order=config.rules_order, reserved_prefix=config.serve.public.prefix)
    except RulesError as exc:
        report.problems += [("rules", problem) for problem in exc.problems]


def _sqlite_file(dsn: str) -> Path | None:
    from sidecar.storage.sql.engine import parse_dsn

    spec = parse_dsn(dsn)
    if spec.flavour != "sqlite" or not spec.url.database:
        return None
    return Path(spec.url.database)


def _check_dsn(config: Config, report: Report) -> None:
    try:
        sqlite = _sqlite_file(config.dsn)
    except Exception as exc:  # sqlalchemy's URL parser raises several kinds
        report.problems.append(("dsn", f"{exc}"))
        return
    if sqlite is None:
        return
    folder = sqlite.absolute().parent
    if not folder.is_dir():
        report.problems.append(("dsn", f"the SQLite file's folder {folder} does not exist"))
    elif not os.access(folder, os.W_OK | os.X_OK):
        report.problems.append(("dsn", f"cannot create files in {folder} (the SQLite file and its journal)"))


def _check_redis(config: Config, report: Report) -> None:
    if config.redis is None:
        return
    import redis.asyncio as redis

    if not config.redis.url:
        return  # sentinel mode without credentials: the sentinels' addresses were checked at load
    try:
        redis.ConnectionPool.from_url(config.redis.url)
    except ValueError as exc:
        report.problems.append(("redis.url", str(exc)))


def _check_courier(config: Config, report: Report) -> None:
    from sidecar.courier.smtp import parse_connection_uri
    from sidecar.courier.templates import Templates

    try:
        parse_connection_uri(config.courier.smtp.connection_uri)
    except ValueError as exc:
        report.problems.append(("courier.smtp.connection_uri", str(exc).split(": ", 1)[-1]))
    from sidecar.security.jsonnet import load_source

    requests = [(f"courier.channels[{i}]", c.request_config) for i, c in enumerate(config.courier.channels)]
    if config.courier.http.request_config is not None:
        requests.append(("courier.http", config.courier.http.request_config))
    for key, request in requests:
        try:
            load_source(request.body_source, f"{key}.request_config.body")
        except ValueError as exc:
            report.problems.append((f"{key}.request_config.body", str(exc).split(": ", 1)[-1]))
    path = config.courier.template_override_path
    if path:
        try:
            Templates(path)
        except ValueError:
            report.problems.append(("courier.template_override_path", f"{path} is not a directory"))


def _check_oidc(config: Config, report: Report) -> None:
    oidc = config.selfservice.methods.oidc
    if not oidc.enabled:
        return
    from sidecar.strategies.federation.mapper import load_mapper

    for index, provider in enumerate(oidc.config.providers):
        try:
            load_mapper(provider.mapper_url)
        except ValueError as exc:
            key = f"selfservice.methods.oidc.config.providers.{index}.mapper_url"
            report.problems.append((key, str(exc).removeprefix("mapper_url: ")))


def _check_tokenizer(config: Config, report: Report) -> None:
    from sidecar.session.tokenizer import SessionTokenizer

    for name, template in config.session.whoami.tokenizer.templates.items():
        try:
            SessionTokenizer({name: template}, issuer=config.public_base_url)
        except ValueError as exc:
            key, _, reason = str(exc).partition(": ")
            report.problems.append((key, reason))


def _check_proxy(config: Config, report: Report) -> None:
    for key, url in (
        ("proxy.upstream", config.proxy.upstream),
        ("serve.public.base_url", config.serve.public.base_url),
    ):
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            report.problems.append((key, f"{url!r} is not an absolute http:// or https:// URL"))


# --- the database -------------------------------------------------------------------------------


def shown_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", dsn)


async def _prepare(config: Config, migrate: bool) -> str | None:
    from sidecar.storage.sql.database import SqlDatabase

    db = SqlDatabase(config.dsn)
    try:
        if migrate:
            before, after = await db.migrate()
            # Says which replica migrated when several start together; --dev migrates on every
            # start, where the line would only be noise.
            level = logging.DEBUG if config.dev else logging.INFO
            if before != after:
                log.log(
                    level, "database migrated from %s to %s", ",".join(before) or "empty", ",".join(after)
                )
            else:
                log.log(level, "database schema already current (%s)", ",".join(after))
        version = await db.schema_version()
    finally:
        await db.close()
    if version.behind:
        raise StartupError(version.problem())
    if version.head not in version.current:
        return f"database schema is at version {version.shown}, newer than this sidecar ({version.head})"
    return None


def open_sqlite(dsn: str) -> None:
    """Open a SQLite file with the standard library first: a failed aiosqlite connect leaves its
    worker thread to report into an event loop that is already closed (a traceback at exit)."""
    import sqlite3

    path = _sqlite_file(dsn)
    if path is None:
        return
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise StartupError(database_problem(dsn, exc)) from None


def prepare_database(config: Config, *, migrate: bool) -> str | None:
    """Reach the database and check (or, with ``migrate``, bring) its schema to this version.

    Returns a warning to log (a newer schema: another version is rolling out), or raises
    ``StartupError``.
    """
    open_sqlite(config.dsn)
    try:
        return asyncio.run(_prepare(config, migrate))
    except StartupError:
        raise
    except Exception as exc:  # every driver's error becomes the one line below
        raise StartupError(database_problem(config.dsn, exc)) from None


def database_problem(dsn: str, exc: BaseException) -> str:
    from sidecar.storage.monitor import describe

    return f"cannot use the database {shown_dsn(dsn)} (dsn): {describe(exc)}"
