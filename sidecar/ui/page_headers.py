"""Security headers for the built-in pages.

The pages need nothing but their own origin: a stylesheet, one small script and form posts to the
public API. So the policy is closed by default, and ``form-action`` lists the only other places a
form submission may end up. Chromium applies ``form-action`` to the redirects that follow a POST, so
the origins of every allowed ``return_to`` must be listed or a successful sign-in would be blocked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from sidecar.config.model import SelfService

# A CSP host-source: a scheme, a host (optionally a leading "*." wildcard) and a port. Anything else
# (quotes, semicolons, spaces) could inject a directive, so such URLs are left out.
_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9.-]+(:(\d{1,5}|\*))?$")

REFERRER_DEFAULT = "strict-origin-when-cross-origin"
# Recovery, verification and error URLs can carry one-time tokens or codes; no Referer may leak them.
REFERRER_TOKEN_PAGES = "no-referrer"


def csp_source(url: str) -> str | None:
    """The CSP source expression (scheme://host[:port]) for ``url``, or None when it has none."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not _HOST.match(parts.netloc):
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def form_action_sources(
    public_base_url: str, selfservice: SelfService | None = None, extra: Iterable[str] = ()
) -> tuple[str, ...]:
    """Where a form on the pages may post or be redirected to after posting.

    The public origin (the submit URLs), every configured return URL (the redirect after success),
    and ``extra`` (e.g. OIDC providers' authorization endpoints).
    """
    urls = [public_base_url]
    if selfservice is not None:
        flows = selfservice.flows
        urls += [selfservice.default_browser_return_url or "", *selfservice.allowed_return_urls]
        urls += [flows.logout.after.default_browser_return_url or ""]
        for flow in (flows.login, flows.registration, flows.settings, flows.recovery, flows.verification):
            urls += [flow.ui_url or "", flow.after.default_browser_return_url or ""]
            for section in (flow.after.model_extra or {}).values():
                if isinstance(section, dict) and section.get("default_browser_return_url"):
                    urls.append(str(section["default_browser_return_url"]))
        urls.append(flows.error.ui_url or "")
    urls += list(extra)
    sources: list[str] = []
    for url in urls:
        source = csp_source(url) if url else None
        if source and source not in sources:
            sources.append(source)
    return tuple(sources)


def content_security_policy(form_action: Iterable[str] = ()) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "frame-ancestors 'none'",
            " ".join(["form-action 'self'", *form_action]),
            "img-src 'self' data:",
            "script-src 'self'",
            "style-src 'self'",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


def page_headers(csp: str, *, carries_tokens: bool = False, cacheable: bool = False) -> dict[str, str]:
    """Headers for one HTML page. Pages show flows and personal data, so nothing is cached by default."""
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": REFERRER_TOKEN_PAGES if carries_tokens else REFERRER_DEFAULT,
    }
    if not cacheable:
        headers["Cache-Control"] = "no-store"
    return headers


def static_headers() -> dict[str, str]:
    # Static URLs carry a content hash (?v=...), so a long cache lifetime is safe.
    return {
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "public, max-age=31536000, immutable",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
