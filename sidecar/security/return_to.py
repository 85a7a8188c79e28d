"""``return_to`` checking against ``selfservice.allowed_return_urls`` (kratos-api.md §6).

An allowed entry matches when scheme, host (``*.example.com`` wildcards allowed) and port are
equal and the path lies under the entry's path, segment by segment (stricter than Kratos' plain
string prefix: ``/app`` does not allow ``/application``). URLs under the public base URL are always
allowed. Anything ambiguous is refused rather than guessed at: backslashes, control characters,
userinfo (``https://good@evil``), scheme-relative ``//evil`` and script-capable schemes. Dot
segments are resolved before the path comparison, so ``/app/../admin`` cannot pass as ``/app``.

A native app's own scheme (``com.example.app:/callback``, ``myapp://signed-in``) passes only when an
entry names that scheme, as in Kratos (``x/redir/secure_redirect.go`` compares scheme, host and
path of each allowed URL): native social sign-in returns the browser to the app that way.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit, urlunsplit

from sidecar.errors import ReturnToForbidden

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NEVER = frozenset({"javascript", "data", "vbscript", "file", "blob", "about", "filesystem", "view-source"})
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def _split(url: str) -> tuple[str, str, int, str, str] | None:
    """(scheme, host, port, path, query) of an absolute http(s) URL, or None if unusable."""
    if not url or any(ord(c) < 0x21 or c in "\\\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if "@" in parts.netloc:
        return None
    if scheme not in _DEFAULT_PORTS:
        # An app's own scheme: the host may be absent (RFC 8252 ``com.example.app:/path``).
        if scheme in _NEVER or not _SCHEME.fullmatch(scheme) or url.startswith(("//", "/")):
            return None
        path = posixpath.normpath(parts.path) if parts.path else ""
        if path.startswith("//"):
            # ``myapp:////evil`` has no host; written back as ``myapp://evil`` it would have one.
            path = "/" + path.lstrip("/")
        return scheme, (parts.hostname or "").lower(), port or 0, path, parts.query
    if not parts.hostname:
        return None
    path = parts.path or "/"
    normalized = posixpath.normpath(path)
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if path.endswith("/") and not normalized.endswith("/"):
        normalized += "/"
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], normalized, parts.query


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def _path_matches(prefix: str, path: str) -> bool:
    # Segment-wise: "/app" allows "/app" and "/app/x" but not "/application" (Kratos is looser).
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _matches(allowed: str, candidate: tuple[str, str, int, str, str]) -> bool:
    entry = _split(allowed.replace("*.", "wildcard-placeholder.", 1))
    if entry is None:
        return False
    scheme, host, port, path, _ = entry
    if host.startswith("wildcard-placeholder."):
        host = "*." + host[len("wildcard-placeholder.") :]
    c_scheme, c_host, c_port, c_path, _ = candidate
    return (
        scheme == c_scheme and port == c_port and _host_matches(host, c_host) and _path_matches(path, c_path)
    )


def resolve_return_to(
    return_to: str | None, *, allowed: list[str], public_base_url: str, default_url: str | None
) -> str | None:
    """The checked, absolute ``return_to``; None when none was given.

    A relative path (``/dashboard``) is resolved against the default browser return URL's origin.
    Raises ``ReturnToForbidden`` (400 ``self_service_flow_return_to_forbidden``) otherwise.
    """
    if return_to is None or return_to == "":
        return None
    url = return_to
    if url.startswith("/") and not url.startswith("//") and default_url:
        origin = urlsplit(default_url)
        url = urlunsplit((origin.scheme, origin.netloc, "", "", "")) + url
    candidate = _split(url)
    if candidate is None:
        raise ReturnToForbidden()
    entries = [*allowed, public_base_url.rstrip("/") + "/"]
    if not any(_matches(entry, candidate) for entry in entries):
        raise ReturnToForbidden()
    scheme, host, port, path, query = candidate
    shown = f"[{host}]" if ":" in host else host
    netloc = shown if port in (0, _DEFAULT_PORTS.get(scheme)) else f"{shown}:{port}"
    return urlunsplit((scheme, netloc, path, query, ""))
