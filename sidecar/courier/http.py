"""Kratos' HTTP courier channel (``courier/http_channel.go``, ``request/builder.go``): a message is
sent as one HTTP request built from an ``httpRequestConfig``.

The Jsonnet ``body`` is called with Kratos' ``httpDataModel``: ``recipient``, ``subject``, ``body``,
``html_body`` (emails), ``template_type``, ``template_data``, ``message_type`` (``email``/``sms``).
A ``Content-Type: application/x-www-form-urlencoded`` header sends the result as a form, anything
else as JSON (the default). ``api_key`` (header or cookie) and ``basic_auth`` are applied. A 2xx
answer is a delivery; anything else, or no answer, is a failed attempt that the worker retries with
backoff until ``courier.message_retries`` (Kratos retries every failure the same way).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from sidecar import request_builder
from sidecar.config.courier_http import HttpRequestConfig
from sidecar.courier.model import Message
from sidecar.courier.sender import PermanentDeliveryError, Sender
from sidecar.security import jsonnet

log = logging.getLogger("sidecar.courier")


class DeliveryFailed(Exception):
    """The HTTP API did not accept the message (retried)."""


class HttpChannel:
    def __init__(
        self,
        channel_id: str,
        config: HttpRequestConfig,
        client: httpx.AsyncClient,
        sandbox: jsonnet.JsonnetSandbox,
    ) -> None:
        self.id = channel_id
        self._config = config
        self._client = client
        self._sandbox = sandbox
        # Read once at start: a missing file stops the start, not a delivery.
        self._body = jsonnet.load_source(config.body_source, f"{channel_id}.request_config.body")

    @staticmethod
    def data_model(message: Message) -> dict[str, Any]:
        """Kratos' ``httpDataModel`` for ``message``."""
        model: dict[str, Any] = {
            "recipient": message.recipient,
            "subject": message.subject,
            "body": message.body,
            "template_type": message.template_type,
            "template_data": message.template_data,
            "message_type": message.type,
        }
        if message.html_body:
            model["html_body"] = message.html_body
        return model

    async def send(self, message: Message) -> None:
        headers = request_builder.headers(self._config)
        content: bytes | None = None
        if self._config.method.upper() not in ("GET", "HEAD", "TRACE", "DELETE"):
            try:
                content = await request_builder.body(
                    self._sandbox, self._body, self.data_model(message), headers["Content-Type"]
                )
            except jsonnet.JsonnetError as exc:
                # The same message would fail the same way on every retry.
                raise PermanentDeliveryError(
                    f"courier channel {self.id}: the body Jsonnet failed: {exc}"
                ) from None
        response = await self._client.request(
            self._config.method.upper(), self._config.url, headers=headers, content=content
        )
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(
                f"courier channel {self.id}: {self._config.url} answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        log.info("courier channel %s delivered message %s", self.id, message.id)


class ChannelRouter:
    """Sends each message through the channel of its type (``email``, ``sms``)."""

    def __init__(self, channels: Mapping[str, Sender]) -> None:
        self._channels = channels

    async def send(self, message: Message) -> None:
        channel = self._channels.get(message.type)
        if channel is None:
            raise PermanentDeliveryError(f"no courier channel is configured for {message.type} messages")
        await channel.send(message)
