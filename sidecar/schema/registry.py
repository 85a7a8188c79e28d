"""The configured identity schemas (``identity.schemas``), loaded once at start.

Schema sources follow kratos.yml: ``file://`` URLs, plain paths, ``base64://`` and, sidecar-only,
an inline ``schema`` object. Remote ``http(s)://`` schemas are refused: fetching code-like config
over the network at start makes a boot depend on another service and on its integrity.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema.exceptions

from sidecar import errors
from sidecar.config.loader import ConfigError
from sidecar.config.model import IdentityConfig, SchemaRef
from sidecar.schema.model import IdentitySchema

DEFAULT_SCHEMA_ID = "default"

__all__ = ["DEFAULT_SCHEMA_ID", "IdentitySchema", "SchemaRegistry", "encode_schema_id"]


def encode_schema_id(schema_id: str) -> str:
    """The ``/schemas/<segment>`` path segment: unpadded base64url of the id, as Kratos does."""
    return base64.urlsafe_b64encode(schema_id.encode()).decode().rstrip("=")


def _decode_base64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as exc:
        raise ValueError("invalid base64") from exc


def _read_source(ref: SchemaRef) -> Any:
    if ref.inline is not None:
        return ref.inline
    url = ref.url
    if not url:
        raise ValueError("neither url nor schema is set")
    if url.startswith("base64://"):
        return json.loads(_decode_base64(url.removeprefix("base64://")))
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        raise ValueError("remote schemas are not supported: use file://, a path, base64:// or schema")
    if scheme == "file":
        parts = urlsplit(url)
        path = Path(unquote(parts.netloc + parts.path))
    elif scheme and len(scheme) > 1:
        raise ValueError(f"unsupported schema URL scheme {scheme!r}")
    else:
        path = Path(url)
    return json.loads(path.read_text(encoding="utf-8"))


def _default_document() -> dict[str, Any]:
    data = resources.files("sidecar.schema").joinpath("default.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(data)
    return document


class SchemaRegistry:
    """Looks schemas up by id; ``load`` must have run (``Services.start`` does it)."""

    def __init__(self, config: IdentityConfig, base_url: str) -> None:
        self._config = config
        self._base_url = base_url.rstrip("/")
        self._schemas: dict[str, IdentitySchema] = {}

    async def load(self) -> None:
        """Read and check every schema; ``ConfigError`` names each schema's id and problem."""
        loaded: dict[str, IdentitySchema] = {}
        problems: list[tuple[str, str]] = []
        for index, ref in enumerate(self._config.schemas):
            key = f"identity.schemas[{index}] (id={ref.id!r})"
            if ref.id in loaded:
                problems.append((key, "duplicate schema id"))
                continue
            try:
                document = await asyncio.to_thread(_read_source, ref)
                if not isinstance(document, dict):
                    raise ValueError("a schema must be a JSON object")
                loaded[ref.id] = IdentitySchema(ref.id, document)
            except jsonschema.exceptions.SchemaError as exc:
                problems.append((key, f"invalid JSON Schema: {exc.message}"))
            except OSError as exc:
                problems.append((key, f"cannot read {exc.filename or ref.url}: {exc.strerror}"))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                problems.append((key, str(exc)))
        if problems:
            raise ConfigError(problems)
        if not loaded:
            loaded[DEFAULT_SCHEMA_ID] = IdentitySchema(DEFAULT_SCHEMA_ID, _default_document())
        if self._config.default_schema_id not in loaded and self._config.schemas:
            raise ConfigError(
                [("identity.default_schema_id", f"no schema with id {self._config.default_schema_id!r}")]
            )
        self._schemas = loaded

    def get(self, schema_id: str) -> IdentitySchema:
        """The schema, or ``BadRequest`` (an identity names a schema that is not configured)."""
        schema = self._schemas.get(schema_id)
        if schema is None:
            raise errors.BadRequest(
                f"unknown identity schema {schema_id!r}", reason=f"Schema {schema_id!r} is not configured."
            )
        return schema

    def find(self, schema_id: str) -> IdentitySchema | None:
        return self._schemas.get(schema_id)

    def default(self) -> IdentitySchema:
        schema = self._schemas.get(self._config.default_schema_id) or self._schemas.get(DEFAULT_SCHEMA_ID)
        if schema is None:
            raise errors.InternalError("identity schemas are not loaded")
        return schema

    def get_or_default(self, schema_id: str | None) -> IdentitySchema:
        """The schema ``schema_id`` names (a flow's ``identity_schema``), or the default when it
        names none."""
        return self.get(schema_id) if schema_id else self.default()

    def all(self) -> list[IdentitySchema]:
        return list(self._schemas.values())

    def schema_url(self, schema_id: str) -> str:
        return f"{self._base_url}/schemas/{encode_schema_id(schema_id)}"

    def resolve_id(self, path_segment: str) -> str | None:
        """The schema id named by a ``/schemas/{id}`` segment: the id itself or its base64url form."""
        if path_segment in self._schemas:
            return path_segment
        try:
            decoded = _decode_base64(path_segment).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded if decoded in self._schemas else None
