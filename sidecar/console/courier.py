"""The courier queue: messages newest first with status, attempts and last error; retry, abandon.

Retry makes a queued or abandoned message due now (its attempts are kept, so a retried message that
fails again is abandoned again); abandon gives up on a queued one. A message being sent belongs to
its worker's lease and is left alone (``CourierStore.retry``/``abandon`` refuse it).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sidecar import errors
from sidecar.api.admin.courier import CourierPageTokens
from sidecar.console.auth import ConsoleSession
from sidecar.console.listing import Paging, path_id, status_filter
from sidecar.console.pages import PREFIX, Form, Pages, Problem
from sidecar.courier.model import MESSAGE_STATUSES
from sidecar.courier.store import CourierStore
from sidecar.i18n import N_, Phrase

_NOTICES = {"retry": N_("Message queued to be sent now."), "abandon": N_("Message abandoned.")}
_CANNOT = {
    "retry": N_("A message that is {status} cannot be retried."),
    "abandon": N_("A message that is {status} cannot be abandoned."),
}
# The statuses in words, for the refusal above (the template has its own, _labels.html).
_STATUS = {
    "queued": N_("queued"),
    "processing": N_("processing"),
    "sent": N_("sent"),
    "abandoned": N_("abandoned"),
}


class CourierPages:
    def __init__(self, pages: Pages, store: CourierStore, tokens: CourierPageTokens, page_size: int) -> None:
        self.pages = pages
        self.store = store
        self.paging = Paging(tokens, page_size)

    async def queue(self, request: Request, signed_in: ConsoleSession) -> Response:
        q = request.query_params
        status = status_filter(q, MESSAGE_STATUSES)
        after = self.paging.after(q.get("page_token"))
        rows = await self.store.list(page_size=self.paging.fetch, after=after, status=status)
        page, next_url = self.paging.cut(
            rows, f"{PREFIX}/courier", {"status": status or ""}, lambda m: (m.created_at, m.id)
        )
        context = {
            "title": Phrase(N_("Courier")),
            "messages": page,
            "status": status or "",
            "statuses": MESSAGE_STATUSES,
            "counts": await self.store.count_by_status(),
            "next_url": next_url,
            "notice": Phrase(_NOTICES.get(q.get("done", ""), "")),
        }
        return self.pages.render("courier.html", context, signed_in=signed_in, section="courier")

    async def _act(self, request: Request, signed_in: ConsoleSession, action: str) -> Response:
        message_id = path_id(request, "courier message")
        if action == "retry":
            done = await self.store.retry(message_id)
        else:
            done = await self.store.abandon(message_id, f"abandoned in the console by {signed_in.actor.name}")
        self.pages.audit.record(
            signed_in.actor,
            f"courier.{action}",
            result="ok" if done else "refused",
            detail=f"message {message_id}",
        )
        if not done:
            message = await self.store.get(message_id)
            if message is None:
                raise errors.NotFound(N_("There is no courier message with that id."))
            raise Problem(
                409, Phrase(_CANNOT[action], status=Phrase(_STATUS.get(message.status, message.status)))
            )
        return self.pages.redirect(f"{PREFIX}/courier?done={action}")

    async def retry(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        return await self._act(request, signed_in, "retry")

    async def abandon(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        return await self._act(request, signed_in, "abandon")
