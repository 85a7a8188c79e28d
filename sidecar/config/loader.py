"""YAML files → environment overrides → validation → one frozen ``Config``.

Environment mapping: ``SIDECAR_`` + the key path in upper case with ``__`` between levels, the
value parsed as YAML (so ``8080``, ``true`` and ``[a, b]`` keep their types). Examples::

    SIDECAR_DSN=postgres://...              -> dsn
    SIDECAR_SERVE__PUBLIC__PORT=8443        -> serve.public.port
    SIDECAR_SECRETS__COOKIE='[a-long-secret-of-32-chars....]' -> secrets.cookie
    SIDECAR_REDIS__URL=redis://127.0.0.1:6379/0                 -> redis.url

Kratos' own ``DSN`` variable is honoured too, so a Kratos deployment's env keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.config import dev as dev_mode
from sidecar.config.model import Config

ENV_PREFIX = "SIDECAR_"


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


def read_files(paths: Iterable[str | Path]) -> dict[str, Any]:
    data: dict[str, Any] = {}
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
        data = deep_merge(data, loaded)
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "DSN" in environ:
        out["dsn"] = environ["DSN"]
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
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


def build_config(data: Mapping[str, Any], *, dev: bool = False) -> Config:
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
) -> Config:
    data = read_files(paths)
    if environ is not None:
        data = deep_merge(data, env_overrides(environ))
    if overrides:
        data = deep_merge(data, overrides)
    return build_config(data, dev=dev)
