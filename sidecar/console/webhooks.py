"""The web hook outbox: deliveries newest first with status, attempts, last answer and error; retry.

Retry makes a dead (or waiting) delivery due now with a fresh attempt budget, as the admin API's
``POST /admin/webhooks/deliveries/{id}/retry`` does; a delivery in flight belongs to its worker's
lease and a delivered one is done, so both are refused (``OutboxStore.retry`` says which it took).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sidecar import errors
from sidecar.console.auth import ConsoleSession
from sidecar.console.listing import path_id, status_filter
from sidecar.console.pages import PREFIX, Form, Pages, Problem
from sidecar.i18n import N_, Phrase
from sidecar.webhooks.outbox import STATUSES, OutboxStore

# The statuses in words, for the refusal of a retry (the template has its own, _labels.html).
_STATUS = {
    "queued": N_("queued"),
    "processing": N_("processing"),
    "delivered": N_("delivered"),
    "dead": N_("dead"),
}


class WebhookPages:
    def __init__(self, pages: Pages, store: OutboxStore, page_size: int) -> None:
        self.pages = pages
        self.store = store
        self.page_size = page_size

    async def queue(self, request: Request, signed_in: ConsoleSession) -> Response:
        q = request.query_params
        status = status_filter(q, STATUSES)
        context = {
            "title": Phrase(N_("Web hooks")),
            "deliveries": await self.store.list(status=status, limit=self.page_size),
            "status": status or "",
            "statuses": STATUSES,
            "counts": await self.store.count_by_status(),
            "page_size": self.page_size,
            "notice": Phrase(N_("Delivery queued to be sent now.") if q.get("done") == "retry" else ""),
        }
        return self.pages.render("webhooks.html", context, signed_in=signed_in, section="webhooks")

    async def retry(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        delivery_id = path_id(request, "web hook delivery")
        done = await self.store.retry(delivery_id)
        self.pages.audit.record(
            signed_in.actor,
            "webhook.retry",
            result="ok" if done else "refused",
            detail=f"delivery {delivery_id}",
        )
        if not done:
            delivery = await self.store.get(delivery_id)
            if delivery is None:
                raise errors.NotFound(N_("There is no web hook delivery with that id."))
            raise Problem(
                409,
                Phrase(
                    N_("A delivery that is {status} cannot be retried."),
                    status=Phrase(_STATUS.get(delivery.status, delivery.status)),
                ),
            )
        return self.pages.redirect(f"{PREFIX}/webhooks?done=retry")
