"""The courier as flows see it: ``await courier.send("recovery_code_valid", to, {...})``.

Sending only renders and enqueues; delivery happens in ``CourierWorker``, so a slow or unreachable
mail server never holds up a login or recovery request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from sidecar.courier.model import Message, TemplateType
from sidecar.courier.store import CourierStore
from sidecar.courier.templates import Templates


class Courier:
    def __init__(self, store: CourierStore, templates: Templates) -> None:
        self._store = store
        self._templates = templates

    async def send(
        self, template_type: TemplateType, recipient: str, data: Mapping[str, Any], *, via: str = "email"
    ) -> uuid.UUID:
        """Render ``template_type`` with ``data`` (``to`` defaults to ``recipient``) and enqueue it,
        as an email or (``via="sms"``, Kratos' ``QueueSMS``) a text message.

        Raises ``ValueError`` for an unsafe recipient, an unknown template type or missing data.
        """
        context = {"to": recipient, **data}
        if via == "sms":
            sms = Message(
                recipient=recipient,
                subject="",
                body=self._templates.render_sms(template_type, context),
                template_type=template_type,
                template_data=json.loads(json.dumps(context, default=str)),
                type="sms",
            ).validate()
            return (await self._store.enqueue(sms)).id
        if via != "email":
            raise ValueError(f"no courier channel for {via!r} messages")
        subject, text, html = self._templates.render(template_type, context)
        message = Message(
            recipient=recipient,
            subject=subject,
            body=text,
            html_body=html,
            template_type=template_type,
            # Stored as plain JSON: identities, UUIDs and datetimes become strings.
            template_data=json.loads(json.dumps(context, default=str)),
        ).validate()
        stored = await self._store.enqueue(message)
        return stored.id
