"""Every ``--dev`` relaxation lives here, so production behaviour is the default everywhere else."""

from __future__ import annotations

import logging
import secrets

from sidecar.config.model import Config

log = logging.getLogger("sidecar.config")


def relax(config: Config) -> Config:
    """Fill in what a developer on a laptop should not have to write: generated secrets, text logs,
    and a public listener on 127.0.0.1."""
    updates: dict[str, object] = {}
    if not (config.secrets.cookie or config.secrets.default):
        generated = secrets.token_urlsafe(32)
        log.warning(
            "dev mode: no secrets configured, generated a random cookie secret; sessions and flows "
            "will not survive a restart. Set secrets.cookie for anything but local development."
        )
        updates["secrets"] = config.secrets.model_copy(update={"cookie": [generated], "default": [generated]})
    if config.log.format == "json" and "format" not in config.log.model_fields_set:
        updates["log"] = config.log.model_copy(update={"format": "text"})
    if "host" not in config.serve.public.model_fields_set:
        # A laptop's dev server (generated secrets, http cookies) stays off the network unless
        # serve.public.host says otherwise (a container needs 0.0.0.0).
        public = config.serve.public.model_copy(update={"host": "127.0.0.1"})
        updates["serve"] = config.serve.model_copy(update={"public": public})
    return config.model_copy(update=updates) if updates else config


def cookie_secure(config: Config) -> bool:
    """Secure cookies unless dev mode over plain http (Kratos relaxes the same way)."""
    explicit = config.session.cookie.secure
    if explicit is None:
        explicit = config.cookies.secure
    if explicit is not None:
        return explicit
    return not (config.dev and config.public_base_url.startswith("http://"))
