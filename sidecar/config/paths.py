"""Relative paths in a config file resolve against that file's folder, not the working directory.

A config file is usually written next to the files it names (``identity.schema.json``,
``rules/*.yaml``, a claims mapper, mail templates), and read by a process whose working directory
is somewhere else entirely (``/`` under systemd, ``/var/lib/sidecar`` in the image). Resolving
against the file's folder makes ``sidecar serve -c /etc/sidecar/sidecar.yaml`` and
``cd /etc/sidecar && sidecar serve -c sidecar.yaml`` mean the same thing.

Only keys that name files are touched: ``identity.schemas[].url`` (``file://`` URLs and plain
paths), ``selfservice.methods.oidc.config.providers[].mapper_url``,
``courier.template_override_path``, ``log.audit.path``, web hooks' ``config.body``,
``session.whoami.tokenizer.templates.*.{jwks_url,claims_mapper_url}`` and ``rules[]``. ``dsn``
keeps Kratos' meaning (a relative SQLite file is relative to the working directory), and values
from the environment or the command line are relative to the working directory as well. Symlinks
are kept, not resolved: Kubernetes swaps mounted ConfigMaps by replacing a symlink, and the rules
watcher must keep following it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit


def _absolute(base: Path, relative: str) -> str:
    return os.path.normpath(os.path.join(base, relative))


def resolve_path(value: Any, base: Path) -> Any:
    """A plain path or glob: absolute as it is, else joined to ``base``."""
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    return _absolute(base, value)


def resolve_file_url(value: Any, base: Path) -> Any:
    """``file://`` URLs and plain paths; other schemes (``base64://``, ``https://``) pass unchanged.

    ``file://./x.json`` and ``file://x.json`` are relative (the form Kratos' own configs use);
    ``file:///etc/x.json`` is absolute. The result is always ``file://`` + an absolute path.
    """
    if not isinstance(value, str) or not value:
        return value
    parts = urlsplit(value)
    if parts.scheme == "file":
        path = unquote(parts.netloc + parts.path)
    elif parts.scheme == "":
        path = value
    else:
        return value
    if not os.path.isabs(path):
        path = _absolute(base, path)
    return "file://" + quote(path)


def _each(items: Any) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _section(data: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    node: Any = data
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    """Rewrite, in place, every relative file reference in one file's ``data`` against ``base``."""
    identity = _section(data, "identity")
    if identity is not None:
        for ref in _each(identity.get("schemas")):
            if "url" in ref:
                ref["url"] = resolve_file_url(ref["url"], base)
    oidc = _section(data, "selfservice", "methods", "oidc", "config")
    if oidc is not None:
        for provider in _each(oidc.get("providers")):
            if "mapper_url" in provider:
                provider["mapper_url"] = resolve_file_url(provider["mapper_url"], base)
    courier = _section(data, "courier")
    if courier is not None and "template_override_path" in courier:
        courier["template_override_path"] = resolve_path(courier["template_override_path"], base)
    audit = _section(data, "log", "audit")
    if audit is not None and audit.get("path") not in (None, "-"):
        audit["path"] = resolve_path(audit["path"], base)
    rules = data.get("rules")
    if isinstance(rules, list):
        data["rules"] = [resolve_path(pattern, base) for pattern in rules]
    templates = _section(data, "session", "whoami", "tokenizer", "templates")
    if templates is not None:
        for template in templates.values():
            if isinstance(template, dict):
                for key in ("jwks_url", "claims_mapper_url"):
                    if key in template:
                        template[key] = resolve_file_url(template[key], base)
    flows = _section(data, "selfservice", "flows")
    if flows is not None:
        for flow in flows.values():
            for hook in _hooks_of(flow):
                config = hook.get("config")
                if hook.get("hook") == "web_hook" and isinstance(config, dict) and "body" in config:
                    config["body"] = resolve_file_url(config["body"], base)


def _hooks_of(flow: Any) -> list[dict[str, Any]]:
    """Every hook of one ``selfservice.flows.<flow>``: before, after and after.<method>."""
    if not isinstance(flow, dict):
        return []
    found: list[dict[str, Any]] = []
    for phase in ("before", "after"):
        section = flow.get(phase)
        if not isinstance(section, dict):
            continue
        found += _each(section.get("hooks"))
        if phase == "after":
            for method in section.values():
                if isinstance(method, dict):
                    found += _each(method.get("hooks"))
    return found
