"""YAML files → environment overrides → validation → one frozen ``Config``.

Environment mapping: ``SIDECAR_`` + the key path in upper case with ``__`` between levels. A
value for a text key is taken as it is (``SIDECAR_REDIS__KEY_PREFIX=app:`` is the string
``app:``); any other value is parsed as YAML (so ``8080``, ``true`` and ``[a, b]`` keep their
types). Examples::

    SIDECAR_DSN=postgres://...              -> dsn
    SIDECAR_SERVE__PUBLIC__PORT=8443        -> serve.public.port
    SIDECAR_SECRETS__COOKIE='[a-long-secret-of-32-chars....]' -> secrets.cookie
    SIDECAR_REDIS__URL=redis://127.0.0.1:6379/0                 -> redis.url

Kratos' own ``DSN`` variable is honoured too, so a Kratos deployment's env keeps working, and so is
``SIDECAR_UPSTREAM_CLIENT`` (the benchmark's old switch) for ``proxy.upstream_client``; the full
key path (``SIDECAR_DSN``, ``SIDECAR_PROXY__UPSTREAM_CLIENT``) wins over an alias.

In config files, relative file references resolve against the file's folder
(``sidecar.config.paths``) and ``${NAME}`` in a string value is replaced by the environment
variable ``NAME`` (``sidecar.config.references``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from sidecar.config import dev as dev_mode
from sidecar.config.model import Config
from sidecar.config.paths import resolve_relative_paths
from sidecar.config.references import expand_references

ENV_PREFIX = "SIDECAR_"
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "DSN": ("", "dsn"),
    "SIDECAR_UPSTREAM_CLIENT": ("proxy", "upstream_client"),
}
"""Variables that set a key their name does not spell (section, key); both take text values."""


class ConfigError(Exception):
    """Configuration is invalid. ``problems`` is a list of (key path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {r}" for k, r in problems))

    def __str__(self) -> str:
        return "invalid configuration:\n" + "\n".join(f"  {k}: {r}" for k, r in self.problems)


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_files(paths: Iterable[str | Path], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merge the files in order, each with its ``${NAME}`` references expanded from ``environ``
    and its relative file references resolved against its own folder."""
    data: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([(str(path), f"cannot read file: {exc.strerror}")]) from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([(str(path), f"not valid YAML: {exc}")]) from exc
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise ConfigError([(str(path), "the top level must be a mapping")])
        loaded, unset = expand_references(loaded, environ or {})
        problems += [(key, f"{reason} in {path}") for key, reason in unset]
        resolve_relative_paths(loaded, Path(path).absolute().parent)
        data = deep_merge(data, loaded)
    if problems:
        raise ConfigError(problems)
    return data


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` as ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_text(path: list[str]) -> bool:
    """True when the key at ``path`` is a text field, whose env value must not be parsed as YAML
    (``nctest:`` would become a mapping, ``no`` a boolean, ``0123`` a number)."""
    node: Any = Config
    for part in path:
        node = _unwrap(node)
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return False
        field = node.model_fields.get(part)
        if field is None:
            return False
        node = field.annotation
    node = _unwrap(node)
    if node is str:
        return True
    return typing.get_origin(node) is Literal and all(isinstance(a, str) for a in typing.get_args(node))


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for alias, (section, key) in ENV_ALIASES.items():
        if alias in environ:
            node = out.setdefault(section, {}) if section else out
            node[key] = environ[alias]
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX or name in ENV_ALIASES:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        if raw == "" or _is_text(path):
            value: Any = raw
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[path[-1]] = value
    return out


def build_config(data: Mapping[str, Any], *, dev: bool = False, require_secrets: bool = True) -> Config:
    """Validate ``data``. ``require_secrets=False`` is for commands that sign nothing
    (``migrate``, ``rules check``/``explain``): they must not demand ``secrets.cookie``."""
    data = dict(data)
    if dev:
        data["dev"] = True
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(root)"
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            problems.append((key, reason))
        raise ConfigError(problems) from None
    if config.dev:
        config = dev_mode.relax(config)
    problems = check_production(config) if not config.dev else []
    if not require_secrets:
        problems = [(key, reason) for key, reason in problems if not key.startswith("secrets.")]
    if problems:
        raise ConfigError(problems)
    return config


def check_production(config: Config) -> list[tuple[str, str]]:
    problems = []
    if not (config.secrets.cookie or config.secrets.default):
        problems.append(("secrets.cookie", "required outside --dev (at least one secret of 16+ characters)"))
    if config.session.cookie.same_site == "None" and config.session.cookie.secure is False:
        problems.append(("session.cookie.secure", "SameSite=None cookies must be Secure"))
    return problems


def load_config(
    paths: Iterable[str | Path] = (),
    *,
    environ: Mapping[str, str] | None = None,
    dev: bool = False,
    overrides: Mapping[str, Any] | None = None,
    require_secrets: bool = True,
) -> Config:
    data = read_files(paths, environ)
    if environ is not None:
        data = deep_merge(data, env_overrides(environ))
    if overrides:
        data = deep_merge(data, overrides)
    return build_config(data, dev=dev, require_secrets=require_secrets)
