"""Kratos' HTTP courier configuration (``courier.channels[]`` and ``courier.http``, both an
``httpRequestConfig`` in Kratos' ``embedx/config.schema.json``), validated at load."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from sidecar.config.webhook import WebHookAuth

# Kratos' default body (``httpRequestConfig.body.default``): the message's fields as JSON.
DEFAULT_BODY = (
    "base64://ZnVuY3Rpb24oY3R4KSB7CiAgcmVjaXBpZW50OiBjdHgucmVjaXBpZW50LAogIHRlbXBsYXRlX3R5cGU6IGN0eC50ZW1w"
    "bGF0ZV90eXBlLAogIHRvOiBpZiAidGVtcGxhdGVfZGF0YSIgaW4gY3R4ICYmICJ0byIgaW4gY3R4LnRlbXBsYXRlX2RhdGEgdGhl"
    "biBjdHgudGVtcGxhdGVfZGF0YS50byBlbHNlIG51bGwsCiAgcmVjb3ZlcnlfY29kZTogaWYgInRlbXBsYXRlX2RhdGEiIGluIGN0"
    "eCAmJiAicmVjb3ZlcnlfY29kZSIgaW4gY3R4LnRlbXBsYXRlX2RhdGEgdGhlbiBjdHgudGVtcGxhdGVfZGF0YS5yZWNvdmVyeV9j"
    "b2RlIGVsc2UgbnVsbCwKICByZWNvdmVyeV91cmw6IGlmICJ0ZW1wbGF0ZV9kYXRhIiBpbiBjdHggJiYgInJlY292ZXJ5X3VybCIg"
    "aW4gY3R4LnRlbXBsYXRlX2RhdGEgdGhlbiBjdHgudGVtcGxhdGVfZGF0YS5yZWNvdmVyeV91cmwgZWxzZSBudWxsLAogIHZlcmlm"
    "aWNhdGlvbl91cmw6IGlmICJ0ZW1wbGF0ZV9kYXRhIiBpbiBjdHggJiYgInZlcmlmaWNhdGlvbl91cmwiIGluIGN0eC50ZW1wbGF0"
    "ZV9kYXRhIHRoZW4gY3R4LnRlbXBsYXRlX2RhdGEudmVyaWZpY2F0aW9uX3VybCBlbHNlIG51bGwsCiAgdmVyaWZpY2F0aW9uX2Nv"
    "ZGU6IGlmICJ0ZW1wbGF0ZV9kYXRhIiBpbiBjdHggJiYgInZlcmlmaWNhdGlvbl9jb2RlIiBpbiBjdHgudGVtcGxhdGVfZGF0YSB0"
    "aGVuIGN0eC50ZW1wbGF0ZV9kYXRhLnZlcmlmaWNhdGlvbl9jb2RlIGVsc2UgbnVsbCwKICBzdWJqZWN0OiBjdHguc3ViamVjdCwK"
    "ICBib2R5OiBjdHguYm9keQp9Cg=="
)


class HttpRequestConfig(BaseModel):
    """Where and how a message is sent: ``url``, ``method``, ``headers``, ``body`` (Jsonnet called
    with the message: ``recipient``, ``subject``, ``body``, ``html_body``, ``template_type``,
    ``template_data``, ``message_type``; ``file://``, ``base64://`` or ``http(s)://`` in Kratos,
    here ``file://``, ``base64://`` or a path), ``auth`` (``api_key``, ``basic_auth``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    """The API's ``http://`` or ``https://`` URL."""
    method: str = "POST"
    """The HTTP method; the body is sent with methods that carry one."""
    headers: dict[str, str] = {}
    """Headers on every request; ``Content-Type: application/x-www-form-urlencoded`` sends a form."""
    body: str | None = None
    """Jsonnet called with the message (``file://``, ``base64://`` or a path); unset: Kratos' default
    body (``recipient``, ``template_type``, ``to``, the codes and URLs, ``subject``, ``body``)."""
    auth: WebHookAuth | None = None
    """``{type: api_key, config: {name, value, in: header|cookie}}`` or ``{type: basic_auth, config:
    {user, password}}``."""

    @property
    def body_source(self) -> str:
        return self.body or DEFAULT_BODY

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, not {v!r}")
        return v

    @field_validator("body")
    @classmethod
    def _body(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(("http://", "https://")):
            raise ValueError(
                "a body fetched over http(s) is not supported (Kratos fetches it at each send): "
                "use file:// or base64://"
            )
        return v


class CourierChannel(BaseModel):
    """One of Kratos' ``courier.channels``: only ``id: sms`` with ``type: http``, as in Kratos."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Literal["sms"]
    """The channel: ``sms`` (the ``via`` of the identity schema's addresses)."""
    type: Literal["http"] = "http"
    """How it sends: ``http``, Kratos' only channel type."""
    request_config: HttpRequestConfig
    """The SMS gateway's HTTP API."""


class CourierHttp(BaseModel):
    """``courier.http``: email through an HTTP API instead of SMTP (``delivery_strategy: http``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_config: HttpRequestConfig | None = None
    """The mail API."""
