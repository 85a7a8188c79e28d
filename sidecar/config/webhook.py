"""Kratos' ``web_hook`` hook config (``selfServiceWebHook`` in Kratos' ``embedx/config.schema.json``),
validated at load so a broken hook stops the start by key instead of failing a user's sign-up."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sidecar.config.durations import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebHookResponse(_Strict):
    ignore: bool = False
    """Fire and forget: the flow does not wait (the call goes through the durable outbox)."""
    parse: bool = False
    """The answer may change the identity (traits, metadata) or stop the flow with Kratos' messages."""


class ApiKeyConfig(_Strict):
    name: str
    value: str
    in_: Literal["header", "cookie"] = Field("header", alias="in")


class BasicAuthConfig(_Strict):
    user: str
    password: str


class WebHookAuth(_Strict):
    type: Literal["api_key", "basic_auth"]
    """``api_key`` (a header or cookie) or ``basic_auth``."""
    config: dict[str, Any]
    """``{name, value, in: header|cookie}`` for ``api_key``, ``{user, password}`` for ``basic_auth``."""

    @model_validator(mode="after")
    def _config(self) -> WebHookAuth:
        (ApiKeyConfig if self.type == "api_key" else BasicAuthConfig).model_validate(self.config)
        return self


class WebHookConfig(_Strict):
    url: str
    method: str
    id: str | None = None
    headers: dict[str, str] = {}
    body: str | None = None
    """Jsonnet (``file://``, ``base64://`` or a path) called with ``ctx``; ``error 'cancel'`` skips
    the call."""
    auth: WebHookAuth | None = None
    can_interrupt: bool = False
    response: WebHookResponse = WebHookResponse()
    emit_analytics_event: bool = True
    timeout: Duration | None = None
    """Sidecar-only: how long to wait for the answer (default 30 s, Kratos' HTTP client timeout)."""

    @model_validator(mode="after")
    def _consistent(self) -> WebHookConfig:
        if self.response.ignore and (self.response.parse or self.can_interrupt):
            raise ValueError("response.ignore cannot be combined with response.parse or can_interrupt")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, not {self.url!r}")
        return self

    @property
    def interrupts(self) -> bool:
        """Kratos runs these before the identity is saved and lets them stop the flow."""
        return self.can_interrupt or self.response.parse
