"""Which requests on the public listener are the sidecar's own, and the normalised path of the rest.

Under ``serve.public.prefix`` (``/.auth``) everything is ours. With an empty prefix the Kratos API
shares the root with the app, and a fixed set of first segments is ours. A path that reaches our
prefix only after decoding (``/%2eauth/...``) is refused: it would be one path to us and another
to a naive reader (DESIGN §5.1).
"""

from __future__ import annotations

from sidecar.proxy.paths import BadPath, normalise_path

# With an empty prefix the Kratos API shares the root with the app: these first segments are ours.
_ROOT_SEGMENTS = (
    "/self-service/",
    "/sessions",
    "/schemas",
    "/health/",
    "/.well-known/",
    "/authz/",
    "/decisions/",
    "/ui/",
    "/identities",
    "/admin/",
)


class OwnPaths:
    def __init__(self, prefix: str, *, reject_parameters: bool) -> None:
        self.prefix = prefix.encode()
        self.reject_parameters = reject_parameters
        self._slashed = self.prefix + b"/"

    def below(self, raw: bytes) -> bytes | None:
        """The path below the prefix when the request is for the sidecar itself, else None."""
        prefix = self.prefix
        if prefix:
            # A slice compared, not ``startswith``: its argument parsing cost ~1k instructions,
            # and every request on the public listener asks (twice: ``Gateway.may_answer``).
            slashed = self._slashed
            if raw[: len(slashed)] == slashed:
                return raw[len(prefix) :]
            return b"/" if raw == prefix else None
        return raw if raw.decode("latin-1").startswith(_ROOT_SEGMENTS) else None

    def normalise(self, raw: bytes) -> str:
        """The canonical path of a request for the app, or ``BadPath``."""
        path = normalise_path(raw, reject_parameters=self.reject_parameters)
        if self.below(path.encode()) is not None:
            # Reached the prefix only after decoding: a different path to us than to a naive reader.
            raise BadPath("encoded path into the sidecar's own prefix")
        return path
