"""What the console's list pages share: keyset paging with sealed tokens, the ``status`` filter of a
queue, and the ``{id}`` of a page's path.

A list asks its store for one row more than a page: that row only says a next page exists (no
COUNT). The next page's URL carries the page's last position sealed (``PageTokens``,
``CourierPageTokens``), so a forged token is a 400, never a scan from an arbitrary position.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request

from sidecar import errors
from sidecar.console.pages import Problem
from sidecar.i18n import N_, Phrase

C = TypeVar("C")
T = TypeVar("T")
S = TypeVar("S", bound=str)


class Tokens(Protocol[C]):
    def seal(self, cursor: C, /) -> str: ...

    def open(self, token: str, /) -> C: ...


class Paging(Generic[C]):
    """Pages of ``size`` rows whose positions ``tokens`` seal."""

    def __init__(self, tokens: Tokens[C], size: int) -> None:
        self.tokens = tokens
        self.size = size

    @property
    def fetch(self) -> int:
        """How many rows to ask the store for: one more than a page."""
        return self.size + 1

    def after(self, token: str | None) -> C | None:
        """The position a ``page_token`` stands for (none: the first page); forged: a 400."""
        return self.tokens.open(token) if token else None

    def cut(
        self, rows: Sequence[T], url: str, params: Mapping[str, str], position: Callable[[T], C]
    ) -> tuple[list[T], str | None]:
        """The page of ``rows`` (as fetched) and the URL of the next one (None on the last page):
        ``url`` with ``params`` (empty ones left out) and the last row's ``position`` sealed."""
        page = list(rows[: self.size])
        if len(rows) <= self.size or not page:
            return page, None
        query = {k: v for k, v in params.items() if v}
        query["page_token"] = self.tokens.seal(position(page[-1]))
        return page, f"{url}?{urlencode(query)}"


def status_filter(query: QueryParams, statuses: Sequence[S]) -> S | None:
    """The ``status`` a queue page is filtered by (none: every status); an unknown one is a 400."""
    raw = query.get("status")
    if not raw:
        return None
    for status in statuses:
        if status == raw:
            return status
    raise Problem(400, Phrase(N_("The status must be one of {statuses}."), statuses=", ".join(statuses)))


# What a 404 says, per kind of thing (msgids: the page shows them in the reader's language).
_NO_SUCH = {
    "identity": N_("There is no identity with that id."),
    "session": N_("There is no session with that id."),
    "organization": N_("There is no organization with that id."),
    "courier message": N_("There is no courier message with that id."),
    "web hook delivery": N_("There is no web hook delivery with that id."),
}


def path_id(request: Request, what: str, param: str = "id") -> uuid.UUID:
    """The ``{id}`` (``param``) of the page's path; one that is no UUID names nothing: a 404 about
    ``what``."""
    try:
        return uuid.UUID(request.path_params[param])
    except ValueError:
        raise errors.NotFound(_NO_SUCH.get(what, f"There is no {what} with that id.")) from None
