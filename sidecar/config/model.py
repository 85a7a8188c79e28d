"""The typed configuration tree, with kratos.yml key names (DESIGN §3).

Built once by ``sidecar.config.loader.load_config``; every model is frozen and forbids unknown
keys, so a typo fails at start with its key path. Durations accept Kratos' Go syntax
(``1h``, ``30m``, ``1h30m``, ``500ms``) and become ``datetime.timedelta``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sidecar.config.courier_http import CourierChannel, CourierHttp

# Re-exported: other modules have always imported these from here.
from sidecar.config.durations import ByteSize as ByteSize
from sidecar.config.durations import Duration as Duration
from sidecar.config.durations import parse_bytes as parse_bytes
from sidecar.config.durations import parse_duration as parse_duration
from sidecar.config.hooks import check_flow_hooks


class Model(BaseModel):
    # Each field's docstring is its description: in ``sidecar config schema`` and docs/CONFIG.md.
    # sidecar.config.describe attaches them when asked; not ``use_attribute_docstrings``, which reads
    # the source at every import (every start, worker and CLI run).
    model_config = ConfigDict(frozen=True, extra="forbid")


class Loose(BaseModel):
    """Kratos sections we accept for compatibility but do not interpret (yet)."""

    model_config = ConfigDict(frozen=True, extra="allow")


class FeatureFlags(Model):
    """``feature_flags`` (Kratos 25.4 ``driver/config/config.go``). A flag sidecar cannot honour is
    accepted only with the value that matches what sidecar does; the other value is refused here."""

    use_continue_with_transitions: bool = False
    """SPAs finishing recovery get 200 + ``continue_with`` (``show_settings_ui``) instead of 422
    ``browser_location_change_required``."""
    faster_session_extend: bool = False
    """``PATCH /admin/sessions/{id}/extend`` answers 204 with no body instead of 200 with the session."""
    legacy_require_verified_login_error: bool | None = None
    """Refused either way; leave it unset. Sidecar's ``require_verified_address`` login hook answers
    the unverified-address error for every method: Kratos' ``true`` checks password sign-ins only,
    its ``false`` lets the sign-in pass with a verification ``continue_with``."""
    legacy_continue_with_verification_ui: bool | None = None
    """Only ``true`` (a registration's ``continue_with`` lists ``show_verification_ui`` for every
    unverified address whenever verification is on), which is what sidecar does."""
    legacy_oidc_registration_node_group: bool | None = None
    """Only ``true``: the trait fields of a social sign-up's second screen sit in the ``oidc`` group
    (``saml`` for SAML), which is what sidecar does; ``false`` (Kratos: ``default``) is refused."""
    password_profile_registration_node_group: Literal["password", "default"] | None = None
    """Read by nothing in Kratos 25.4 (its password strategy reads
    ``selfservice.methods.password.config.password_profile_registration_node_group``); accepted
    for loading, as in Kratos. The group sidecar uses: ``registration.enable_legacy_one_step``."""
    choose_recovery_address: bool = False
    """Only ``false``: Kratos' recovery v2 (choosing among masked addresses, codes by SMS) is not built."""
    cacheable_sessions: bool = False
    """Only ``false``: the ``Ory-Session-Cache-For`` header (Ory Network's edge cache) is not sent."""
    cacheable_sessions_max_age: Duration | None = None
    """Refused: it only tunes ``cacheable_sessions``, which sidecar does not do."""

    @field_validator("legacy_require_verified_login_error")
    @classmethod
    def _verified_login_error(cls, v: bool | None) -> bool | None:
        if v is not None:
            raise ValueError(
                "legacy_require_verified_login_error: not supported (leave it unset); the "
                "require_verified_address hook answers the unverified-address error for every "
                "sign-in method (Kratos: true checks passwords only, false signs in with a "
                "verification continue_with)"
            )
        return v

    @field_validator("legacy_continue_with_verification_ui")
    @classmethod
    def _verification_ui(cls, v: bool | None) -> bool | None:
        if v is False:
            raise ValueError(
                "legacy_continue_with_verification_ui: false is not supported; a registration's "
                "continue_with always lists show_verification_ui for each address mailed"
            )
        return v

    @field_validator("legacy_oidc_registration_node_group")
    @classmethod
    def _oidc_group(cls, v: bool | None) -> bool | None:
        if v is False:
            raise ValueError(
                "legacy_oidc_registration_node_group: false (traits in the default group) is not "
                "supported; a social sign-up's trait fields sit in the oidc (or saml) group"
            )
        return v

    @field_validator("choose_recovery_address")
    @classmethod
    def _no_recovery_v2(cls, v: bool) -> bool:
        if v:
            raise ValueError(
                "choose_recovery_address: Kratos' recovery v2 (choosing among masked addresses, "
                "recovery codes by SMS) is not supported; recovery goes to the email address typed"
            )
        return v

    @field_validator("cacheable_sessions")
    @classmethod
    def _no_cache(cls, v: bool) -> bool:
        if v:
            raise ValueError(
                "cacheable_sessions: the Ory-Session-Cache-For header (Ory Network's edge cache) "
                "is not sent by sidecar"
            )
        return v

    @field_validator("cacheable_sessions_max_age")
    @classmethod
    def _no_cache_age(cls, v: timedelta | None) -> timedelta | None:
        if v is not None:
            raise ValueError(
                "cacheable_sessions_max_age: only tunes cacheable_sessions, which sidecar refuses"
            )
        return v


# --- serve -----------------------------------------------------------------------------------


class Cors(Model):
    """``serve.public.cors`` (Kratos' keys). No origin is allowed unless listed; ``*`` is refused
    with ``allow_credentials`` (it would hand any site a signed-in user's session JSON)."""

    enabled: bool = False
    """Answer CORS preflights and add CORS headers on the public API under the prefix (proxied app traffic
    keeps the app's own CORS)."""
    # Before allowed_origins: its validator reads this one.
    allow_credentials: bool = True
    """Allow cookies on cross-origin requests (``Access-Control-Allow-Credentials``)."""
    allowed_origins: list[str] = []
    """Origins allowed to call the public API from a browser; ``https://*.example.com`` matches one DNS
    label. ``*`` (any) only with ``allow_credentials: false``."""
    allowed_methods: list[str] = ["POST", "GET", "PUT", "PATCH", "DELETE"]
    """Methods allowed in cross-origin requests."""
    allowed_headers: list[str] = [
        "Authorization",
        "Content-Type",
        "Max-Age",
        "X-Session-Token",
        "X-XSRF-TOKEN",
        "X-CSRF-TOKEN",
    ]
    """Request headers a cross-origin request may send."""
    exposed_headers: list[str] = ["Content-Type"]
    """Response headers a cross-origin caller may read."""
    max_age: int = 0
    """Seconds browsers may cache a preflight answer; 0 means 600."""
    debug: bool = False
    """Log every cross-origin request's decision (origin, preflight or not, allowed or not) at
    ``info``, as Kratos' CORS debug logging does."""

    @field_validator("allowed_origins")
    @classmethod
    def _no_wildcard_with_credentials(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("enabled") and info.data.get("allow_credentials", True) and "*" in v:
            raise ValueError(
                "'*' cannot be combined with allow_credentials: true "
                "(list the origins, or set allow_credentials: false)"
            )
        return v


HttpServer = Literal["uvicorn", "granian"]
GRANIAN_MAX_REQUEST_LINE = 64 * 1024
"""hyper refuses request targets over 65,534 bytes (414) whatever the configured limit."""


def _check_request_line(server: str, size: int) -> None:
    # ``server`` comes after ``max_request_line_size``: its validator sees the size.
    if server == "granian" and size > GRANIAN_MAX_REQUEST_LINE:
        raise ValueError(
            "granian refuses request targets over 64KiB: set max_request_line_size to 64KiB or less"
        )


class PublicServe(Model):
    host: str = "0.0.0.0"  # noqa: S104 - the public listener is meant to be reachable
    """Address the public listener binds (all interfaces by default)."""
    port: int = Field(4433, ge=0, le=65535)
    """Port of the public listener: Kratos' public API, the pages, the decision endpoints and the proxy."""
    base_url: str | None = None
    """The URL browsers use to reach the public API, including the prefix; drives flow ``ui.action``s,
    ``schema_url``, redirects and the CSRF cookie name. Default: ``http://<host>:<port><prefix>``."""
    prefix: str = "/.auth"
    """Path prefix of the Kratos API, pages and decision endpoints on the app's own origin (``/.auth``);
    empty puts them at the root beside the app."""
    trusted_proxies: list[str] | None = None
    """Peers (addresses or CIDRs) whose ``X-Forwarded-*`` / ``X-Original-*`` / ``X-Request-ID`` headers are
    believed. Absent: loopback only (127.0.0.0/8, ::1); ``[]``: nobody."""
    cors: Cors = Cors()
    """Cross-origin access to the public API (Kratos' ``serve.public.cors``)."""
    max_body_size: ByteSize = 1024 * 1024
    """Largest request body the public API reads (e.g. ``1MB``); more is refused with 413."""
    max_request_line_size: ByteSize = Field(8 * 1024, ge=256, le=1024 * 1024)
    """Sidecar-only: a longer request line (method, target, version) is answered 414, never read on."""
    redirect_admin_paths: bool = False
    """Sidecar-only: answer admin paths on this listener with Kratos' 307 to the admin listener
    (which reveals its URL); by default they are 404."""
    server: HttpServer = "uvicorn"
    """Sidecar-only: the HTTP server of this listener. ``uvicorn`` (httptools) checks request targets
    in its parser. ``granian`` (hyper, in Rust) uses less CPU per request (bench/RESULTS.md) and gives
    the same 414 and non-UTF-8 400 from the ASGI layer, with these differences: a raw ``#`` is not
    refused, hyper drops it and what follows before any check (``/a#/../admin`` is decided on and
    forwarded as ``/a``; a front proxy reading the raw target may disagree); a request head over
    ~408 KiB is 431; ``max_request_line_size`` at most ``64KiB``; answers carry ``server: granian``;
    at shutdown open WebSockets are cut without uvicorn's 1012 close frame."""
    fast_path: bool = True
    """Sidecar-only, uvicorn only: answer the requests that need no I/O (a decision endpoint or
    ``GET /sessions/whoami`` whose session is in the in-process cache, or needs none) inside the HTTP
    protocol, without the ASGI machinery; and relay an allowed proxied ``GET`` without a body (session
    cached) to a pooled upstream connection and its response back from the protocol's callbacks
    (``proxy.upstream_client: http1``). Over the wire this saves 11-24 % of the server's CPU per
    cached decision and about 15 % per proxied request (bench/RESULTS.md). Status,
    headers, body, access log line and metrics are the ASGI path's, byte for byte but for the request
    id. ``false``: every request through ASGI (for diagnosis). granian, and tracing when on, always
    use the ASGI path."""

    @field_validator("server")
    @classmethod
    def _granian_request_line(cls, v: str, info: ValidationInfo) -> str:
        _check_request_line(v, info.data.get("max_request_line_size", 0))
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and (not v.startswith("/") or v.endswith("/")):
            raise ValueError("must start with '/' and not end with '/' (or be empty)")
        return v


class Console(Model):
    enabled: bool = True
    """Sidecar-only: the admin console at ``/console`` on the admin listener (never on the public one).
    Sign-in takes ``serve.admin.api_key``; without a key only loopback clients may sign in."""
    session_lifespan: Duration = Field(timedelta(hours=1), gt=timedelta(0), le=timedelta(days=1))
    """How long a console sign-in lasts (its cookie and server-side session), at most ``24h``."""
    page_size: int = Field(25, ge=1, le=500)
    """Identities (and courier messages) shown per console page."""


class AdminServe(Model):
    host: str = "127.0.0.1"
    """Address the admin listener binds; keep it off the network (loopback by default)."""
    port: int = Field(4434, ge=0, le=65535)
    """Port of the admin listener: Kratos' admin API, ``/metrics`` and health."""
    base_url: str | None = None
    """The URL of the admin API as its callers see it (``Link`` headers, the public port's redirects).
    Default: ``http://<host>:<port>``."""
    api_key: str | None = None
    """Optional bearer key required on every admin call except health (on top of network isolation)."""
    max_body_size: ByteSize = 4 * 1024 * 1024
    """Largest request body the admin API reads (batch imports may use eight times this)."""
    max_request_line_size: ByteSize = Field(8 * 1024, ge=256, le=1024 * 1024)
    """Sidecar-only: a longer request line (method, target, version) is answered 414, never read on."""
    server: HttpServer = "uvicorn"
    """Sidecar-only: the HTTP server of this listener, as ``serve.public.server``."""
    console: Console = Console()
    """Sidecar-only: the browser admin console (identities, sessions, recovery, courier, rules)."""

    @field_validator("server")
    @classmethod
    def _granian_request_line(cls, v: str, info: ValidationInfo) -> str:
        _check_request_line(v, info.data.get("max_request_line_size", 0))
        return v


class Serve(Model):
    public: PublicServe = PublicServe()
    """The public listener."""
    admin: AdminServe = AdminServe()
    """The admin listener."""


# --- identity --------------------------------------------------------------------------------


class SchemaRef(Model):
    """``url`` is ``file://``, ``base64://`` or a path; ``schema`` holds the JSON Schema inline."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    id: str
    """The schema id identities name in ``schema_id``."""
    url: str | None = None
    """Where the JSON Schema is: ``file://``, ``base64://`` or a plain path."""
    inline: dict[str, Any] | None = Field(None, alias="schema")
    """The JSON Schema itself, under the key ``schema`` (instead of ``url``)."""
    selfservice_selectable: bool = False
    """Kratos' flag for schemas a registration may choose; accepted, sidecar registers with the default
    schema."""


class IdentityConfig(Model):
    default_schema_id: str = "default"
    """The schema new identities use unless they name another."""
    schemas: list[SchemaRef] = []
    """The identity schemas (JSON Schema with Kratos' ``ory.sh/kratos`` extension); empty: the built-in
    default (email, name)."""


# --- selfservice ------------------------------------------------------------------------------


class Hook(Model):
    hook: str
    """The hook's name: ``session`` (sign in after registration), ``show_verification_ui``
    (registration), ``require_verified_address`` (login), ``revoke_active_sessions`` (login, settings,
    recovery). A hook Kratos does not allow in that place, or one sidecar does not run, fails the load."""
    config: dict[str, Any] = {}
    """The hook's own settings (Kratos' ``web_hook`` config); the other hooks take none."""


class AfterHooks(Model):
    # Per-method sections (``password``, ``oidc``, ...) are extra keys.
    model_config = ConfigDict(frozen=True, extra="allow")
    default_browser_return_url: str | None = None
    """Where a browser goes after the flow succeeds, unless ``return_to`` says otherwise; per method under
    ``after.<method>.default_browser_return_url``."""
    hooks: list[Hook] = []
    """Hooks run after the flow succeeds; per method under ``after.<method>.hooks`` (which then replaces
    these)."""

    def for_method(self, method: str) -> list[Hook]:
        """Hooks of ``after.<method>.hooks`` when present, else ``after.hooks`` (Kratos' precedence)."""
        extra = self.model_extra or {}
        section = extra.get(method)
        if isinstance(section, dict) and "hooks" in section:
            return [Hook.model_validate(h) for h in section["hooks"] or []]
        return list(self.hooks)

    def return_url_for(self, method: str) -> str | None:
        section = (self.model_extra or {}).get(method)
        if isinstance(section, dict) and section.get("default_browser_return_url"):
            return str(section["default_browser_return_url"])
        return self.default_browser_return_url


class BeforeHooks(Model):
    hooks: list[Hook] = []
    """Hooks run when a flow is created (Kratos allows only ``web_hook`` here)."""


class FlowConfig(Model):
    ui_url: str | None = None
    """The UI that shows this flow (``?flow=<id>`` is appended). Default: the built-in page
    ``<base_url>/ui/<flow>``."""
    lifespan: Duration = timedelta(hours=1)
    """How long a flow can be submitted after it was created (e.g. ``1h``); an expired one is replaced."""
    before: BeforeHooks = BeforeHooks()
    """Before the flow starts."""
    after: AfterHooks = AfterHooks()
    """After the flow succeeds: return URL and hooks."""

    flow_name: ClassVar[str | None] = None

    @model_validator(mode="after")
    def _hooks_allowed(self) -> FlowConfig:
        if self.flow_name is not None:
            check_flow_hooks(
                self.flow_name, self.before.hooks, self.after.hooks, self.after.model_extra or {}
            )
        return self


class LoginFlowConfig(FlowConfig):
    flow_name: ClassVar[str | None] = "login"
    style: Literal["unified", "identifier_first"] = "unified"
    """``unified``: every method's fields on one screen. ``identifier_first``: the identifier
    first, then the methods that identity can use (Kratos ``selfservice/strategy/idfirst``); an
    unknown identifier gets the screen any account would, never "no such account"."""


class RegistrationFlowConfig(FlowConfig):
    flow_name: ClassVar[str | None] = "registration"
    enabled: bool = True
    """Allow self-service registration."""
    style: Literal["profile_first", "unified"] = "unified"
    """``unified``: traits and credentials in one form. ``profile_first``: two steps, as Kratos
    (``selfservice/strategy/profile/registration.go``): the traits with ``method=profile``, then
    the credential-selection screen (traits hidden, a ``screen=previous`` back button). Kratos'
    default is ``profile_first``; sidecar's is ``unified`` (see README, compatibility)."""
    enable_legacy_one_step: bool | None = None
    """Kratos' deprecated switch: ``true`` forces one step whatever ``style`` says. Unset or
    ``true`` with the unified style puts the trait fields in the ``password`` group; ``false``
    puts them in ``default``."""

    @property
    def two_step(self) -> bool:
        """Kratos' ``SelfServiceFlowRegistrationTwoSteps``: profile first unless legacy is on."""
        return self.style == "profile_first" and self.enable_legacy_one_step is not True

    login_hints: bool = False
    """When a registration hits an existing account, say how that account signs in (message 4000028:
    the identifier, its credential types and social sign-in providers) instead of the bare 4000007."""
    after: AfterHooks = AfterHooks(hooks=[Hook(hook="session")])
    """After registration succeeds: return URL and hooks (default: ``session``, sign the user in)."""


class SettingsFlowConfig(FlowConfig):
    flow_name: ClassVar[str | None] = "settings"
    privileged_session_max_age: Duration = timedelta(hours=1)
    """How recent the sign-in must be for password, second-factor and protected-trait changes; older
    sessions must sign in again."""
    required_aal: Literal["aal1", "highest_available"] = "highest_available"
    """``highest_available``: an identity with a second factor must have used it to change settings;
    ``aal1``: one factor is enough."""


class RecoveryFlowConfig(FlowConfig):
    flow_name: ClassVar[str | None] = "recovery"
    enabled: bool = False
    """Allow account recovery."""
    use: Literal["code", "link"] = "code"
    """How recovery proves an address: ``code`` (6 digits) or ``link``."""
    notify_unknown_recipients: bool = False
    """Mail unknown addresses that they have no account (else nothing is sent; the answer is the same)."""


class VerificationFlowConfig(FlowConfig):
    flow_name: ClassVar[str | None] = "verification"
    enabled: bool = False
    """Allow address verification (and mail unverified addresses after registration)."""
    use: Literal["code", "link"] = "code"
    """How verification proves an address: ``code`` or ``link``."""
    notify_unknown_recipients: bool = False
    """Mail unknown addresses that they have no account."""


class LogoutAfter(Model):
    default_browser_return_url: str | None = None
    """Where a browser goes after logout, unless ``return_to`` says otherwise."""


class LogoutFlowConfig(Model):
    after: LogoutAfter = LogoutAfter()
    """After logout."""


class ErrorFlowConfig(Model):
    ui_url: str | None = None
    """The UI that shows self-service errors (``?id=<error id>`` is appended). Default: the built-in error
    page."""


class Flows(Model):
    login: LoginFlowConfig = LoginFlowConfig()
    """Login (Kratos' ``selfservice.flows.login``)."""
    registration: RegistrationFlowConfig = RegistrationFlowConfig()
    """Registration."""
    settings: SettingsFlowConfig = SettingsFlowConfig()
    """Account settings."""
    recovery: RecoveryFlowConfig = RecoveryFlowConfig()
    """Account recovery."""
    verification: VerificationFlowConfig = VerificationFlowConfig()
    """Address verification."""
    logout: LogoutFlowConfig = LogoutFlowConfig()
    """Logout."""
    error: ErrorFlowConfig = ErrorFlowConfig()
    """The self-service error page."""


class MigrateHook(Model):
    enabled: bool = False
    """Must stay false: sidecar has no password migration hook. Import the old hashes instead
    (``credentials.password.config.hashed_password`` on the admin API: bcrypt, argon2, pbkdf2, scrypt,
    firebase-scrypt, md5, sha); they are re-hashed on the next good login."""
    config: dict[str, Any] = {}
    """The hook's settings (url, method, headers, auth); refused together with ``enabled: true``."""

    @field_validator("enabled")
    @classmethod
    def _refused(cls, v: bool) -> bool:
        if v:
            raise ValueError(
                "sidecar has no password migration hook; import the existing hashes with the admin API "
                "(credentials.password.config.hashed_password) instead"
            )
        return v


class PasswordMethodConfig(Model):
    min_password_length: int = Field(8, ge=1, le=1024)
    """Shortest password accepted."""
    max_password_length: int = Field(1024, ge=8, le=4096)
    """Longest password accepted (bcrypt itself stops at 72 bytes)."""
    identifier_similarity_check_enabled: bool = True
    """Refuse passwords too similar to the identifier."""
    haveibeenpwned_enabled: bool = False
    """Ask the Have I Been Pwned range API about new passwords (k-anonymity: only the first 5 hex
    digits of the SHA-1 leave the machine). Off by default, unlike Kratos: sidecar makes no outbound
    calls unless told to; the bundled list of common passwords is always checked."""
    haveibeenpwned_host: str = "api.pwnedpasswords.com"
    """The range API host (``https://<host>/range/<prefix>``), for a self-hosted mirror. Sidecar-only:
    a value with a scheme (``http://10.0.0.5:8080``) is used as the base URL as it is."""
    max_breaches: int = Field(0, ge=0, le=100)
    """How many breaches a password may appear in before it is refused (message 4000034)."""
    ignore_network_errors: bool = True
    """Accept the password when the range API cannot be reached or answers an error; false: the
    submission fails with 502 (Kratos' ``Leaked password server unavailable``)."""
    migrate_hook: MigrateHook = MigrateHook()
    """Kratos' password migration web hook; only ``enabled: false`` is accepted."""


class PasswordMethod(Model):
    enabled: bool = True
    """Passwords for registration, login and settings."""
    config: PasswordMethodConfig = PasswordMethodConfig()
    """Password policy."""


class ToggleMethod(Model):
    enabled: bool = True
    """The method is on."""
    config: dict[str, Any] = {}
    """Method settings; this method takes none."""


class CodeMethodConfig(Model):
    lifespan: Duration = timedelta(hours=1)
    """How long a mailed code (or recovery code) stays good."""
    max_submissions: int = 5
    """Code submissions per flow before it takes no code at all."""
    missing_credential_fallback_enabled: bool = False
    """Let identities without a code credential (their schema marks no ``code`` identifier) sign in
    by code anyway: first factor to an identifier that is one of their email addresses, second factor
    to their verifiable email addresses (Kratos' migration path)."""


class CodeMethod(Model):
    enabled: bool = True
    """Codes for recovery and verification (with ``selfservice.flows.<flow>.use: code``)."""
    passwordless_enabled: bool = False
    """Registration and login by a code mailed to the schema's code identifier."""
    mfa_enabled: bool = False
    """A mailed code as second factor (``aal=aal2`` logins), unless the first factor was a code too."""
    config: CodeMethodConfig = CodeMethodConfig()
    """Code settings."""


class LinkMethodConfig(Model):
    lifespan: Duration = timedelta(hours=1)
    """How long a mailed link stays good."""
    base_url: str | None = None
    """Base of the links in mails. Default: ``serve.public.base_url``."""


class LinkMethod(Model):
    enabled: bool = False
    """Links for recovery and verification (with ``selfservice.flows.<flow>.use: link``)."""
    config: LinkMethodConfig = LinkMethodConfig()
    """Link settings."""


class TotpMethodConfig(Model):
    issuer: str | None = None
    """The issuer authenticator apps show. Default: the host of ``serve.public.base_url``."""
    skew_steps: int = Field(1, ge=0, le=5)
    """Sidecar-only: 30-second steps accepted either side of now (RFC 6238 §5.2)."""


class TotpMethod(Model):
    enabled: bool = False
    """Authenticator apps (TOTP) as second factor."""
    config: TotpMethodConfig = TotpMethodConfig()
    """TOTP settings."""


class OffMethod(Model):
    enabled: bool = False
    """The method is on."""
    config: dict[str, Any] = {}
    """Method settings; this method takes none."""


class WebAuthnRp(Model):
    """``selfservice.methods.{webauthn,passkey}.config.rp``: the WebAuthn relying party.

    ``id`` defaults to the host of ``serve.public.base_url`` and ``origins`` to its origin; Kratos'
    single ``origin`` key is accepted too.
    """

    id: str | None = None
    """The relying party id (a registrable domain). Default: the host of ``serve.public.base_url``."""
    display_name: str = "sidecar"
    """The name authenticators show."""
    origin: str | None = None
    """Kratos' single allowed origin (added to ``origins``)."""
    origins: list[str] = []
    """Origins allowed to use the keys. Default: the origin of ``serve.public.base_url``."""

    def origin_list(self) -> list[str]:
        return [*self.origins, *([self.origin] if self.origin else [])]


class WebAuthnMethodConfig(Model):
    passwordless: bool = False
    """Security keys sign in on their own (identifier, then the key) instead of being a second factor."""
    rp: WebAuthnRp = WebAuthnRp()
    """The relying party."""


class WebAuthnMethod(Model):
    enabled: bool = False
    """Security keys (WebAuthn)."""
    config: WebAuthnMethodConfig = WebAuthnMethodConfig()
    """WebAuthn settings."""


class PasskeyMethodConfig(Model):
    rp: WebAuthnRp = WebAuthnRp()
    """The relying party."""


class PasskeyMethod(Model):
    enabled: bool = False
    """Passkeys (discoverable credentials) for sign-up and sign-in."""
    config: PasskeyMethodConfig = PasskeyMethodConfig()
    """Passkey settings."""


class OidcProvider(Model):
    """One ``selfservice.methods.oidc.config.providers[]`` entry (Kratos' key names).

    ``provider`` picks a preset (``generic`` uses OIDC discovery at ``issuer_url``); ``auth_url`` /
    ``token_url`` override the preset's endpoints. Sidecar-only: ``api_url`` (GitHub's REST API base,
    for GitHub Enterprise), ``trust_email_verified`` (a verified email claim verifies the address),
    ``store_tokens`` (keep the provider's tokens, encrypted with ``secrets.cipher``).
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The provider's id in URLs and forms (``/self-service/methods/oidc/callback/<id>``)."""
    provider: str = "generic"
    """The preset: ``generic`` (OIDC discovery at ``issuer_url``), ``google``, ``github``, ``microsoft``,
    ``apple``, ..."""
    label: str | None = None
    """The name on the buttons. Default: the preset's."""
    client_id: str
    """The OAuth 2.0 client id registered with the provider."""
    client_secret: str | None = None
    """The OAuth 2.0 client secret (Apple: derived from the private key instead)."""
    issuer_url: str | None = None
    """The OpenID Connect issuer (``generic``: discovery happens here)."""
    auth_url: str | None = None
    """Overrides the preset's authorization endpoint."""
    token_url: str | None = None
    """Overrides the preset's token endpoint."""
    api_url: str | None = None
    """Sidecar-only: GitHub's REST API base (GitHub Enterprise)."""
    scope: list[str] = []
    """Scopes to request besides the preset's."""
    mapper_url: str | None = None
    """The Jsonnet claims mapper (``file://``, ``base64://``); default: email and name from standard
    claims."""
    requested_claims: dict[str, Any] | None = None
    """OpenID Connect ``claims`` request parameter."""
    microsoft_tenant: str | None = None
    """Microsoft: the tenant (``common``, ``organizations``, a tenant id)."""
    apple_team_id: str | None = None
    """Apple: the team id signing the client secret."""
    apple_private_key_id: str | None = None
    """Apple: the key id of the signing key."""
    apple_private_key: str | None = None
    """Apple: the PEM private key that signs the client secret."""
    additional_id_token_audiences: list[str] = []
    """Further ``aud`` values accepted in ID tokens (native apps' client ids)."""
    trust_email_verified: bool = False
    """Sidecar-only: a verified email claim marks the address verified."""
    store_tokens: bool = True
    """Sidecar-only: keep the provider's tokens on the credential, encrypted with ``secrets.cipher``."""
    organization_id: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )
    """The organization this provider is the single sign-on of (Kratos' key): hidden from the
    general login form; an identifier in one of the organization's email domains is sent here, and
    accounts it creates belong to the organization. docs/SSO.md."""


class OidcMethodConfig(Model):
    base_redirect_uri: str | None = None
    """Base of the callback URL registered with providers. Default: ``serve.public.base_url``."""
    providers: list[OidcProvider] = []
    """The providers."""
    mapper_timeout: Duration = timedelta(seconds=2)
    """Sidecar-only: the longest a Jsonnet claims mapper may run."""

    @field_validator("providers")
    @classmethod
    def _unique_ids(cls, v: list[OidcProvider]) -> list[OidcProvider]:
        ids = [p.id for p in v]
        if len(ids) != len(set(ids)):
            raise ValueError("provider ids must be unique")
        return v


class OidcMethod(Model):
    enabled: bool = False
    """Social sign-in (OpenID Connect / OAuth 2.0)."""
    config: OidcMethodConfig = OidcMethodConfig()
    """Providers and callback settings."""


_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class SamlProvider(Model):
    """One ``selfservice.methods.saml.config.providers[]`` entry: a SAML 2.0 connection to an
    identity provider (Ory's key names: ``id``, ``label``, ``provider``, ``mapper_url``,
    ``raw_idp_metadata_xml``, ``organization_id``). docs/SSO.md."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The connection's id in URLs and forms (``/self-service/methods/saml/acs/<id>``) and in
    credential identifiers (``<id>:<NameID>``)."""
    provider: Literal["generic"] = "generic"
    """Ory's provider kind; only ``generic`` (any SAML 2.0 identity provider)."""
    label: str | None = None
    """The name on the buttons. Default: the id."""
    idp_metadata_url: str | None = None
    """Where the identity provider publishes its metadata (``https://``; fetched when first needed
    and again after ``metadata_refresh``). Exactly one of this and ``raw_idp_metadata_xml``."""
    raw_idp_metadata_xml: str | None = None
    """The identity provider's metadata: the XML itself, ``base64://<xml>`` or ``file://<path>``
    (read at start)."""
    mapper_url: str | None = None
    """The Jsonnet mapper from the assertion (``std.extVar('claims')``: ``sub`` = NameID,
    ``name_id_format``, ``issuer``, ``attributes`` = name -> list of values) to traits;
    ``file://`` or ``base64://``. Default: ``email`` from the ``email``/``mail`` attribute or an
    email-format NameID."""
    organization_id: str | None = Field(default=None, pattern=_UUID)
    """The organization this connection is the single sign-on of: hidden from the general login
    form, identifiers in the organization's email domains are sent here, and accounts it creates
    belong to the organization."""
    binding: Literal["redirect", "post"] = "redirect"
    """How the authentication request reaches the identity provider: HTTP-Redirect or HTTP-POST
    (the identity provider's metadata must list a single sign-on endpoint for it)."""
    allow_idp_initiated: bool = False
    """Accept unsolicited responses (identity-provider-initiated login, with no request of ours to
    answer). Off: only responses to a request of one of our login flows are accepted."""
    entity_id: str | None = None
    """The service provider's entity id (audience) at the identity provider. Default: the metadata
    URL, ``<serve.public.base_url>/self-service/methods/saml/metadata/<id>``."""

    @model_validator(mode="after")
    def _one_metadata(self) -> SamlProvider:
        if (self.idp_metadata_url is None) == (self.raw_idp_metadata_xml is None):
            raise ValueError("set exactly one of idp_metadata_url and raw_idp_metadata_xml")
        return self


class SamlSigning(Model):
    """The service provider's own key pair: signs authentication and logout requests and is
    published in the metadata. Absent: requests go unsigned (most identity providers accept that
    for authentication requests; single logout needs it)."""

    key_url: str
    """The PEM private key: ``file://<path>`` (or a plain path)."""
    certificate_url: str
    """The PEM certificate of that key: ``file://<path>`` (or a plain path)."""


class SamlRateLimit(Model):
    """``selfservice.methods.saml.config.rate_limit``: requests to the ACS (``POST``) and SLO
    endpoints per client IP (IPv6: its /64), counted in the key-value store, so every replica
    shares one count. Each may cost a signature check: the verification bound caps the CPU they
    take, this caps how much of it one address gets. Past it: 429 with ``Retry-After``."""

    enabled: bool = True
    """Count and limit ACS and SLO requests per client IP."""
    per_ip: int = Field(120, ge=1, le=1_000_000)
    """Requests per client IP per ``window``. The default, two a second on average, lets an office
    behind one address sign in together while one address can keep at most about a quarter of a
    core busy with signature checks."""
    window: Duration = timedelta(minutes=1)
    """The fixed window of ``per_ip`` (the first request starts it)."""

    @field_validator("window")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than zero")
        return v


class SamlMethodConfig(Model):
    providers: list[SamlProvider] = []
    """The SAML connections."""
    clock_skew: Duration = timedelta(seconds=60)
    """Sidecar-only: how far the identity provider's clock may be off (``NotBefore``,
    ``NotOnOrAfter``, ``IssueInstant``)."""
    mapper_timeout: Duration = timedelta(seconds=2)
    """Sidecar-only: the longest a Jsonnet attribute mapper may run."""
    metadata_refresh: Duration = timedelta(hours=24)
    """Sidecar-only: how long metadata fetched from ``idp_metadata_url`` is used before it is
    fetched again."""
    signing: SamlSigning | None = None
    """Sidecar-only: the service provider's key pair."""
    max_concurrent_verifications: int = Field(0, ge=0, le=256)
    """Sidecar-only: signature checks of identity providers' responses and logout requests that
    run at once (each costs about 135 ms of CPU); 0 means the CPUs this process may run on."""
    max_queued_verifications: int = Field(32, ge=0, le=100_000)
    """Sidecar-only: checks that may wait for a free slot; past this the ACS and SLO answer 503
    with ``Retry-After``."""
    rate_limit: SamlRateLimit = SamlRateLimit()
    """Sidecar-only: ACS and SLO requests per client IP (429 with ``Retry-After`` past it)."""

    @field_validator("providers")
    @classmethod
    def _unique_ids(cls, v: list[SamlProvider]) -> list[SamlProvider]:
        ids = [p.id for p in v]
        if len(ids) != len(set(ids)):
            raise ValueError("provider ids must be unique")
        return v


class SamlMethod(Model):
    enabled: bool = False
    """Enterprise single sign-on with SAML 2.0 (service provider; browser flows)."""
    config: SamlMethodConfig = SamlMethodConfig()
    """The connections and their settings."""


class Methods(Model):
    password: PasswordMethod = PasswordMethod()
    """Passwords."""
    profile: ToggleMethod = ToggleMethod()
    """Traits in registration and settings."""
    code: CodeMethod = CodeMethod()
    """Mailed codes."""
    link: LinkMethod = LinkMethod()
    """Mailed links."""
    totp: TotpMethod = TotpMethod()
    """Authenticator apps."""
    lookup_secret: OffMethod = OffMethod()
    """Backup recovery codes as second factor."""
    webauthn: WebAuthnMethod = WebAuthnMethod()
    """Security keys."""
    passkey: PasskeyMethod = PasskeyMethod()
    """Passkeys."""
    oidc: OidcMethod = OidcMethod()
    """Social sign-in."""
    saml: SamlMethod = SamlMethod()
    """Enterprise single sign-on with SAML 2.0 (docs/SSO.md)."""


class Languages(Model):
    """The language of the built-in pages, the admin console, the courier's emails and (optionally)
    API texts. A language is one of the gettext catalogs shipped in ``sidecar/i18n/locales`` (en,
    de, fr, es, pt_BR, ja) or added in ``catalog_dir``. The order: the identity's own field (not in
    the console), else the browser's ``Accept-Language``, else a ``?lang=`` choice (remembered in
    ``cookie``), else ``default``."""

    default: str = Field(default="en", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    """The language when nothing else decides (a catalog name: ``en``, ``de``, ``pt_BR``, ...);
    refused at start when no catalog of that name exists."""
    identity_field: str | None = Field(
        default="traits.locale", pattern=r"^(traits|metadata_public)(\.[A-Za-z0-9_-]+)+$"
    )
    """Where an identity keeps its language (``traits.<key>`` or ``metadata_public.<key>``): a
    language tag such as ``de``, ``fr-CA`` or ``pt-BR``. It decides the language of that identity's
    emails and of pages that know the identity (settings, the signed-in page). ``null``: never."""
    cookie: str = Field(default="sidecar_lang", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Cookie that remembers a ``?lang=`` choice on a built-in page or in the admin console (one
    year, SameSite=Lax; path: the public prefix, ``/console`` for the console)."""
    translate_api: bool = False
    """false (Kratos' behaviour): the JSON API keeps the English ``text`` of every message and label
    (SDKs and Ory's UIs key on ``id``). true: ``text`` is in the negotiated language of the request
    (``Accept-Language``, the ``lang`` cookie, the identity's field)."""
    catalog_dir: str | None = None
    """Directory of extra or replacing catalogs, laid out like the built-in ones
    (``<lang>/LC_MESSAGES/sidecar.po``): an entry there replaces the built-in one; a new directory
    adds a language."""


class SelfService(Model):
    default_browser_return_url: str | None = None
    """Where browsers go after a flow when nothing more specific is configured or asked for."""
    allowed_return_urls: list[str] = []
    """URLs (prefixes; ``*.`` wildcard hosts) a ``return_to`` may point at; anything else is refused (no
    open redirects). A native app's own scheme (``myapp://signed-in``) is allowed when listed."""
    methods: Methods = Methods()
    """The strategies, each on or off (``selfservice.methods.<name>.enabled``)."""
    flows: Flows = Flows()
    """The flows."""
    languages: Languages = Languages()
    """Languages of pages, emails and (optionally) API texts (sidecar-only)."""


# --- session, secrets, hashers, courier ---------------------------------------------------------


class SessionCookie(Model):
    name: str = "ory_kratos_session"
    """Name of the session cookie."""
    persistent: bool = True
    """A cookie that outlives the browser (``Max-Age`` = the session's remaining life); false: a
    browser-session cookie."""
    domain: str | None = None
    """Cookie ``Domain``. Default: ``cookies.domain`` (else host-only)."""
    path: str = "/"
    """Cookie ``Path``."""
    same_site: Literal["Lax", "Strict", "None"] = "Lax"
    """Cookie ``SameSite``."""
    secure: bool | None = None
    """Cookie ``Secure``. Default: true, except over http in ``--dev``."""


class TokenizerTemplate(Model):
    """One ``session.whoami.tokenizer.templates.<name>`` (Kratos' ``session/tokenizer.go``)."""

    jwks_url: str
    """The private JSON Web Key Set that signs (``file://``, ``base64://``, or a path); its first key
    signs, with the key's ``alg`` (ES256/384/512, RS256/384/512, PS256/384/512, EdDSA) and ``kid``."""
    ttl: Duration = timedelta(minutes=1)
    """Lifetime of each token (``exp`` = now + ttl)."""
    claims_mapper_url: str | None = None
    """Jsonnet (``file://``, ``base64://``) over ``std.extVar('session')`` and ``std.extVar('claims')``
    returning ``{claims: {...}}``, merged into the token's claims (``sub`` always stays the subject)."""
    subject_source: Literal["id", "external_id"] = "id"
    """``sub`` is the identity id, or its ``external_id`` (a session of an identity without one is
    refused with 400)."""


class Tokenizer(Model):
    templates: dict[Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]+$")], TokenizerTemplate] = {}
    """Templates by name, for ``GET /sessions/whoami?tokenize_as=<name>``."""


class Whoami(Model):
    required_aal: Literal["aal1", "highest_available"] = "highest_available"
    """``highest_available``: whoami (and the proxy) refuse a session whose identity has an unused second
    factor; ``aal1``: one factor is enough."""
    tokenizer: Tokenizer = Tokenizer()
    """Session-to-JWT templates: ``/sessions/whoami?tokenize_as=<name>`` answers with ``tokenized``, a
    JWT signed with the template's key."""


class SessionConfig(Model):
    lifespan: Duration = timedelta(hours=24)
    """How long a session lasts."""
    earliest_possible_extend: Duration | None = None
    """An extend request is a no-op until the session has at most this long left. Default: always extends."""
    cookie: SessionCookie = SessionCookie()
    """The session cookie."""
    whoami: Whoami = Whoami()
    """``/sessions/whoami`` and the access proxy's AAL requirement."""
    cache_ttl: Duration = timedelta(seconds=5)
    """Sidecar-only: how long a resolved session may be served from the in-process cache."""


class Cookies(Model):
    domain: str | None = None
    """``Domain`` of the cookies sidecar sets (CSRF, and the session cookie unless
    ``session.cookie.domain``)."""
    path: str = "/"
    """``Path`` of the cookies sidecar sets."""
    same_site: Literal["Lax", "Strict", "None"] = "Lax"
    """``SameSite`` of the CSRF cookie."""
    secure: bool | None = None
    """``Secure`` of the cookies. Default: true, except over http in ``--dev``."""


class Secrets(Model):
    default: list[str] = []
    """Fallback for every other secret list (16+ characters each, newest first)."""
    cookie: list[str] = []
    """Signing secrets for cookies and tokens (16+ characters each); the first signs, all verify, so
    rotation keeps old ones valid. Required outside ``--dev``."""
    cipher: list[str] = []
    """Encryption keys for stored provider tokens (exactly 32 characters each); the first encrypts."""
    pagination: list[str] = []
    """Signing secrets for page tokens. Default: ``default``, then ``cookie``."""

    @field_validator("default", "cookie", "pagination")
    @classmethod
    def _long_enough(cls, v: list[str]) -> list[str]:
        for s in v:
            if len(s) < 16:
                raise ValueError("each secret must be at least 16 characters long")
        return v

    @field_validator("cipher")
    @classmethod
    def _cipher(cls, v: list[str]) -> list[str]:
        for s in v:
            if len(s) != 32:
                raise ValueError("each cipher secret must be exactly 32 characters long")
        return v


class Argon2Config(Model):
    memory: ByteSize = 64 * 1024 * 1024
    """Memory per hash (e.g. ``64MB``)."""
    iterations: int = Field(3, ge=1, le=10)
    """Passes over the memory."""
    parallelism: int = Field(2, ge=1, le=16)
    """Lanes per hash: computed on as many threads, but never more threads than the CPUs the server
    may run on (one CPU: all lanes in one thread; the hash is the same)."""
    salt_length: int = Field(16, ge=8, le=64)
    """Salt bytes."""
    key_length: int = Field(32, ge=16, le=128)
    """Hash bytes."""
    expected_duration: Duration = timedelta(milliseconds=500)
    """When set, a failed password check (unknown identifier or wrong password) answers no sooner than
    a random time within ``expected_duration`` ± ``expected_deviation`` (Kratos' delay for unknown
    identifiers). Unset: sidecar verifies a dummy hash with the same parameters, which takes as long
    as a real check."""
    expected_deviation: Duration = timedelta(milliseconds=500)
    """The spread of that random delay."""
    dedicated_memory: ByteSize = 1024**3
    """The memory set aside for hashing (Kratos' calibration budget); ``memory`` must fit in it."""

    @model_validator(mode="after")
    def _fits(self) -> Argon2Config:
        if self.memory > self.dedicated_memory:
            raise ValueError("memory is larger than dedicated_memory")
        return self


class BcryptConfig(Model):
    cost: int = Field(12, ge=4, le=31)
    """bcrypt cost (log2 of rounds)."""


class Hashers(Model):
    algorithm: Literal["argon2", "bcrypt"] = "argon2"
    """The hash for new passwords; imported hashes of other kinds verify and are rehashed after a good
    login."""
    argon2: Argon2Config = Argon2Config()
    """argon2id parameters."""
    bcrypt: BcryptConfig = BcryptConfig()
    """bcrypt parameters."""
    max_concurrent: int = Field(0, ge=0, le=256)
    """Sidecar-only: cap on hashes computed at once in each server worker (0 = the CPUs this process
    may run on). With ``pool: process`` it is also the number of hashing processes per worker, so
    memory stays below ``max_concurrent`` x ``argon2.memory`` (+ about 20 MiB per process)."""
    max_queue: int = Field(64, ge=0, le=100_000)
    """Sidecar-only: hashes that may wait for a free slot. Past that, a login, registration or password
    change is answered 503 with ``Retry-After: 1``, so a sign-up storm costs neither unbounded memory nor
    minutes-long waits."""
    pool: Literal["process", "thread"] = "process"
    """Sidecar-only: where hashes run. ``process``: in hashing processes of their own (``python -m
    sidecar.hashing.worker``, started at the first hash, replaced when one dies, stopped with the
    server; a crash mid-hash answers 503), so no hash ever holds the server's GIL or maps its 64 MiB
    in the server's address space. ``thread``: in threads of the server process (no extra processes,
    about 20 MiB less per slot; but a hashing thread takes the server's GIL to start and to hand back
    each hash, and at ``priority: idle`` the event loop then waits for it behind the other hashing
    threads: about 4 ms per hash in bench/, see bench/RESULTS.md)."""
    priority: Literal["adaptive", "idle", "low", "normal"] = "adaptive"
    """Sidecar-only: CPU priority of the hashing processes or threads (Linux). ``adaptive`` (processes:
    ``SCHED_IDLE``, which the event loop always preempts at once, so a login storm leaves the access
    path's tail alone; a hash that gets under 5 % of a CPU for 0.25 s, because the machine is busy, is
    run again in a process at nice +10, as are new hashes for the next 10 s, so logins still progress;
    threads: as ``low``), ``low`` (nice +10: about a tenth of a core that nice-0 work keeps busy, but
    the event loop may then wait up to a scheduler tick behind a hash: a c1 decision's p99 of several
    ms during 20 logins), ``idle`` (``SCHED_IDLE`` only: any busy process on the machine starves the
    hashes; logins then wait for seconds), ``normal``."""


class Smtp(Model):
    connection_uri: str = "smtp://127.0.0.1:25/?disable_starttls=true"
    """The mail server: ``smtp://`` / ``smtps://``, optional user:password, ``?disable_starttls=true`` /
    ``skip_ssl_verify=true``."""
    from_address: str = "no-reply@sidecar.local"
    """``From`` address of every message."""
    from_name: str | None = None
    """``From`` display name."""
    headers: dict[str, str] = {}
    """Extra headers on every message."""
    local_name: str = "localhost"
    """The name sent in ``EHLO``."""


class Courier(Model):
    smtp: Smtp = Smtp()
    """The SMTP connection."""
    message_retries: int = Field(5, ge=0, le=100)
    """Delivery attempts per message before it is abandoned (with backoff in between)."""
    delivery_strategy: Literal["smtp", "http"] = "smtp"
    """How emails are delivered: ``smtp`` (``courier.smtp``) or ``http`` (``courier.http.request_config``,
    Kratos' HTTP mailer: one request per message, same queue, retries and backoff)."""
    http: CourierHttp = CourierHttp()
    """The HTTP API emails go to with ``delivery_strategy: http``."""
    templates: Loose = Loose()
    """Kratos' per-template sources (``courier.templates.<type>.valid.email.body.html: https://...``):
    Go templates, which sidecar cannot render, so any entry stops the load; put Jinja2 files in
    ``template_override_path`` instead. Empty (the default) is accepted."""

    @field_validator("templates")
    @classmethod
    def _no_go_templates(cls, v: Loose) -> Loose:
        if v.model_extra:
            names = ", ".join(sorted(v.model_extra))
            raise ValueError(
                f"Kratos' Go template sources ({names}) cannot be rendered by sidecar; put Jinja2 "
                "templates (<template_type>/email.body.txt, sms.body.txt, ...) in "
                "courier.template_override_path"
            )
        return v

    template_override_path: str | None = None
    """Directory laid out like the bundled templates (``<template_type>/email.subject.txt``,
    ``email.body.txt``, ``email.body.html``); any file there replaces the bundled one. Per language:
    ``<template_type>/<lang>/email.subject.txt`` (e.g. ``recovery_code_valid/fr/``) replaces that
    language's file, before the language-neutral override and the bundled ones."""
    worker_interval: Duration = timedelta(seconds=1)
    """How often the courier worker looks for queued messages."""
    channels: list[CourierChannel] = []
    """Kratos' extra courier channels: ``{id: sms, type: http, request_config: {url, method, headers,
    body, auth}}`` sends the text messages (verification codes to a trait with ``verification.via:
    sms``) to an SMS gateway's HTTP API, through the same queue and retries as email."""

    @field_validator("channels")
    @classmethod
    def _one_per_id(cls, v: list[CourierChannel]) -> list[CourierChannel]:
        ids = [c.id for c in v]
        if len(ids) != len(set(ids)):
            raise ValueError("each channel id may appear once")
        return v

    @model_validator(mode="after")
    def _http_needs_a_request(self) -> Courier:
        if self.delivery_strategy == "http" and self.http.request_config is None:
            raise ValueError("delivery_strategy: http needs courier.http.request_config")
        return self

    def channel(self, channel_id: str) -> CourierChannel | None:
        return next((c for c in self.channels if c.id == channel_id), None)


class AccountEnumeration(Model):
    mitigate: bool = False
    """Answer alike whether an account exists (login codes, registration by code), at the cost of less
    helpful messages."""


class RateLimit(Model):
    """``security.rate_limit``: brute-force throttling (``sidecar.security.throttle``) and mail limits.

    Only failed credential checks count and a success clears them; past a threshold each attempt
    waits ``initial_delay``, doubled per further failure up to ``max_delay`` (429 + Retry-After).
    Nothing locks an account.
    """

    enabled: bool = True
    """Throttle credential submissions (login, registration, second factors, codes) and mail sends."""
    free_failures: int = Field(5, ge=1)
    """Failures per identifier from one client IP before the delay starts."""
    per_identifier: int = Field(100, ge=1)
    """Failures per identifier from all IPs together before the delay applies to every attempt on
    it (NIST SP 800-63B §5.2.2 allows at most 100 consecutive failures)."""
    per_ip: int = Field(100, ge=1)
    """Failures from one client IP (IPv6: its /64) across all identifiers (credential stuffing)
    before the delay applies to that IP. Successes never count."""
    initial_delay: Duration = timedelta(seconds=1)
    """The first delay past a threshold; it doubles with each further failure."""
    max_delay: Duration = timedelta(minutes=15)
    """The longest delay between attempts (429 with ``Retry-After``)."""
    failure_window: Duration = timedelta(hours=12)
    """How long failures are remembered: counters start over this long after their first failure."""
    window: Duration = timedelta(minutes=15)
    """The window of the mail limits below."""
    send_per_address: int = Field(5, ge=1)
    """Sidecar-only: recovery/verification/code messages per address per window (mail bombing)."""
    send_per_ip: int = Field(30, ge=1)
    """Sidecar-only: recovery/verification/code messages per client IP per window."""

    @field_validator("initial_delay", "max_delay", "failure_window", "window")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be longer than zero")
        return v


class Security(Model):
    account_enumeration: AccountEnumeration = AccountEnumeration()
    """Account enumeration defences."""
    rate_limit: RateLimit = RateLimit()
    """Rate limits on credentials and mail sends."""


# --- sidecar-only ------------------------------------------------------------------------------


class Timeouts(Model):
    connect: Duration = timedelta(seconds=2)
    """Connecting to the upstream; past it: 504."""
    read: Duration = timedelta(seconds=60)
    """Waiting for upstream bytes (between reads); past it: 504 before the response started, an aborted
    connection after."""


class IdentityHeaders(Model):
    id: str = "X-User-ID"
    """Header carrying the identity id to the app."""
    email: str = "X-User-Email"
    """Header carrying the identity's email (from the ``email`` trait or the first email address)."""
    aal: str = "X-User-AAL"
    """Header carrying the session's assurance level (``aal1`` / ``aal2``)."""
    organization: str = "X-User-Organization"
    """Header carrying the id of the identity's organization (absent when it belongs to none)."""


class JwtConfig(Model):
    enabled: bool = False
    """Send a short-lived signed JWT of the identity on every allowed request (per rule: ``upstream_jwt``)."""
    header: str = "Authorization"
    """The header carrying it (``Authorization`` gets ``Bearer <jwt>``)."""
    alg: Literal["ES256", "RS256", "EdDSA"] = "ES256"
    """Signing algorithm; the public keys are at ``<base_url>/.well-known/jwks.json``."""
    ttl: Duration = timedelta(minutes=1)
    """Lifetime of each JWT."""
    issuer: str | None = None
    """``iss`` claim. Default: ``serve.public.base_url``."""
    audience: str | None = None
    """``aud`` claim (per rule: ``upstream_jwt.audience``)."""


class ProxyConfig(Model):
    upstream: str | None = None
    """The app behind sidecar (``http://127.0.0.1:8080``). Absent: no proxying, a standalone identity
    server (rules may still name their own upstream)."""
    timeouts: Timeouts = Timeouts()
    """Upstream timeouts."""
    identity_headers: IdentityHeaders = IdentityHeaders()
    """Names of the identity headers added to allowed requests (client copies are always stripped)."""
    headers: dict[str, str] = {}
    """Extra headers from templates over the session, e.g. ``X-User-Roles: "{{ metadata_public.roles }}"``."""
    jwt: JwtConfig = JwtConfig()
    """An optional signed JWT for the app."""
    websockets: bool = True
    """Proxy WebSocket upgrades (judged like a GET; closed when the session ends)."""
    reject_path_parameters: bool = True
    """Refuse ``;`` path parameters with 400 (Java servers strip them, so ``/admin;x`` would be ``/admin``
    to them)."""
    allowed_ws_origins: list[str] = []
    """Origins besides the request's own and ``serve.public.base_url``'s that may open WebSockets."""
    upstream_client: Literal["http1", "aiohttp"] = "http1"
    """Sidecar-only: the HTTP client that forwards to the app: ``http1`` (sidecar's own pooled keep-alive
    client, the fastest in ``bench/``) or ``aiohttp``. ``SIDECAR_UPSTREAM_CLIENT`` sets it too."""


SCIM_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# The SCIM User attributes ``scim.attributes`` may map (RFC 7643 §4.1, §4.3): single values, or the
# primary (else first) value of a multi-valued one (``emails``, ``phoneNumbers``), or the manager's id.
SCIM_SOURCE_ATTRIBUTES = (
    *("userName", "displayName", "nickName", "title", "userType", "preferredLanguage", "locale"),
    *("timezone", "externalId", "active", "profileUrl", "emails", "phoneNumbers"),
    *("name.formatted", "name.givenName", "name.familyName", "name.middleName"),
    *("name.honorificPrefix", "name.honorificSuffix"),
    *(f"{SCIM_ENTERPRISE}:{a}" for a in ("employeeNumber", "costCenter", "organization")),
    *(f"{SCIM_ENTERPRISE}:{a}" for a in ("division", "department", "manager")),
)
_SCIM_TARGET = re.compile(r"^(traits|metadata_public|metadata_admin)(\.[A-Za-z_][A-Za-z0-9_-]{0,63}){1,4}$")
_SCIM_ORG = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)$"
)


def _scim_attributes(value: dict[str, str]) -> dict[str, str]:
    """Sources named by their full name (``enterprise:`` abbreviates the enterprise extension's
    URN); each known, each target a distinct identity field outside the built-in ones."""
    out: dict[str, str] = {}
    for source, target in value.items():
        name = (
            source.replace("enterprise:", f"{SCIM_ENTERPRISE}:", 1)
            if source.startswith("enterprise:")
            else source
        )
        if name not in SCIM_SOURCE_ATTRIBUTES:
            raise ValueError(f"{source!r} is not a SCIM User attribute sidecar maps (see docs/SSO.md)")
        if not _SCIM_TARGET.fullmatch(target):
            raise ValueError(
                f"{source}: target {target!r} must be traits.<path>, metadata_public.<path> "
                "or metadata_admin.<path>"
            )
        if target == "traits.email" or target == "traits.username":
            raise ValueError(f"{source}: {target} is written by sidecar itself (the primary email, userName)")
        out[name] = target
    targets = list(out.values())
    for t in targets:
        if (
            any(o != t and (o.startswith(t + ".") or t.startswith(o + ".")) for o in targets)
            or targets.count(t) > 1
        ):
            raise ValueError(f"target {t!r} is written by two attributes, or inside another target")
    return out


class ScimOrganization(Model):
    attributes: dict[str, str] = {}
    """This organization's mapping, instead of ``scim.attributes`` (the same form)."""

    @field_validator("attributes")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        return _scim_attributes(v)


class ScimConfig(Model):
    roles_field: str = Field(default="roles", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """The ``metadata_public`` key SCIM group membership is written to (the display names of the
    user's groups); ``require: {roles: [...]}`` reads ``roles``. docs/SSO.md."""
    attributes: dict[str, str] = {}
    """SCIM User attribute -> identity field, besides the primary email (``traits.email``) and
    ``userName`` (``traits.username`` when the schema has it): e.g. ``name.givenName:
    traits.name.first``, ``phoneNumbers: traits.phone``, ``enterprise:department:
    metadata_public.department``. Sources: ``userName``, ``displayName``, ``nickName``, ``title``,
    ``userType``, ``preferredLanguage``, ``locale``, ``timezone``, ``externalId``, ``active``,
    ``profileUrl``, ``emails`` and ``phoneNumbers`` (the primary value), ``name.*`` (``formatted``,
    ``givenName``, ``familyName``, ``middleName``, ``honorificPrefix``, ``honorificSuffix``),
    ``enterprise:*`` (the enterprise extension: ``employeeNumber``, ``costCenter``,
    ``organization``, ``division``, ``department``, ``manager`` = the manager's id). Targets:
    ``traits.*``, ``metadata_public.*``, ``metadata_admin.*``; an attribute the User no longer has
    removes its field. Unknown sources are refused at load; docs/SSO.md."""
    organizations: dict[str, ScimOrganization] = {}
    """Per organization (its slug or id), a mapping that replaces ``attributes`` for it."""

    @field_validator("attributes")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        return _scim_attributes(v)

    @field_validator("organizations")
    @classmethod
    def _org_keys(cls, v: dict[str, ScimOrganization]) -> dict[str, ScimOrganization]:
        for key in v:
            if not _SCIM_ORG.fullmatch(key):
                raise ValueError(f"{key!r} is neither an organization slug nor an id (lower-case)")
        return v

    @model_validator(mode="after")
    def _roles_kept(self) -> ScimConfig:
        roles = f"metadata_public.{self.roles_field}"
        for mapping in (self.attributes, *(o.attributes for o in self.organizations.values())):
            for target in mapping.values():
                if target == roles or target.startswith(roles + "."):
                    raise ValueError(f"{target} holds the SCIM groups (scim.roles_field)")
        return self


class RedisConfig(Model):
    url: str = ""
    """The Redis server (``redis://host:6379/0``, ``rediss://`` for TLS). With ``mode: cluster`` one
    node of the cluster (more in ``nodes``); with ``mode: sentinel`` only its credentials, database
    and scheme are used (``redis://:password@/0``), the master's address comes from the sentinels."""
    mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    """Sidecar-only: ``standalone`` (one server, or a managed endpoint that fails over behind one
    address), ``cluster`` (Redis Cluster: the keys of one sidecar's sessions share a hash tag, flows
    and counters spread over the slots, revocations use sharded pub/sub) or ``sentinel`` (the master
    of ``sentinel_master``, found through ``sentinels`` and followed across failovers). docs/SCALING.md."""
    nodes: list[str] = []
    """Sidecar-only, ``mode: cluster``: further ``host:port`` start-up nodes besides ``url``'s, so a
    sidecar starting while one node is down still finds the cluster."""
    sentinels: list[str] = []
    """Sidecar-only, ``mode: sentinel``: the sentinels' ``host:port`` addresses."""
    sentinel_master: str = "mymaster"
    """Sidecar-only, ``mode: sentinel``: the monitored master's name."""
    key_prefix: str = "sidecar:"
    """Sidecar-only: namespace for every key and channel, so several sidecars can share one Redis.
    No ``{`` or ``}``: sidecar chooses the cluster hash tags itself."""

    @field_validator("nodes", "sentinels")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _no_hash_tag(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("must not contain { or } (sidecar sets the Redis Cluster hash tags)")
        return value

    @model_validator(mode="after")
    def _mode_needs(self) -> RedisConfig:
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError("mode: sentinel needs the sentinels' addresses in redis.sentinels")
        if self.mode != "sentinel" and not self.url and not (self.mode == "cluster" and self.nodes):
            raise ValueError("redis.url is required (or redis.nodes with mode: cluster)")
        if self.mode != "cluster" and self.nodes:
            raise ValueError("redis.nodes is only for mode: cluster")
        if self.mode != "sentinel" and self.sentinels:
            raise ValueError("redis.sentinels is only for mode: sentinel")
        return self


class AuditWebhookConfig(Model):
    """Sidecar-only: send each audit event to a SIEM through the durable web hook outbox."""

    url: str
    """Where each event is POSTed (``application/json``, the same object as the log line), signed
    with ``Webhook-Signature`` (``webhooks.signing_secret``) and keyed by ``Idempotency-Key``;
    retried and dead-lettered as every outbox delivery (``/admin/webhooks/deliveries``)."""
    headers: dict[str, str] = {}
    """Extra request headers (e.g. the SIEM's ``Authorization``), stored with each delivery."""
    events: list[str] | None = None
    """Only these event names (docs/AUDIT.md); all events when unset. An unknown name is refused."""
    timeout: Duration = timedelta(seconds=10)
    """The longest one attempt waits for the receiver; shorter than ``webhooks.lease``."""

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an absolute http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in ("content-type", "idempotency-key", "webhook-signature", "content-length"):
                raise ValueError(f"{name} is set by sidecar")
            if "\r" in header or "\n" in header:
                raise ValueError(f"the value of {name} has a line break")
        return value


class AuditLogConfig(Model):
    enabled: bool = False
    """Sidecar-only: write security audit events (sign-ins, MFA changes, revocations, admin changes;
    docs/AUDIT.md) as JSON lines to ``path``."""
    path: str = "-"
    """Where audit events go: ``-`` for standard output (the access and error logs go to standard
    error), or a file, opened for appending (several workers may share it)."""
    webhook: AuditWebhookConfig | None = None
    """Also enqueue each event in the web hook outbox as a delivery to ``webhook.url``, so a SIEM can
    subscribe (needs ``enabled`` and ``webhooks.signing_secret``). docs/AUDIT.md has the details."""


class LogConfig(Model):
    level: Literal["trace", "debug", "info", "warning", "warn", "error", "fatal", "panic"] = "info"
    """Log level (Kratos' names); ``info`` and below write the access log."""
    format: Literal["json", "text"] = "json"
    """``json`` lines, or ``text`` for people (the default in ``--dev``)."""
    leak_sensitive_values: bool = False
    """Write request query strings and headers (cookies and tokens included) into the access log, as
    Kratos does with this switch. For debugging only."""
    audit: AuditLogConfig = AuditLogConfig()
    """Sidecar-only: the security audit log, a stream of its own."""
    access_buffer: ByteSize = Field(64 * 1024, ge=0, le=16 * 1024 * 1024)
    """Sidecar-only: access-log lines are buffered and written in chunks of about this size (nginx's
    ``buffer=``), never blocking a request: a pipe whose reader lags keeps lines waiting (up to 100,000,
    then dropped and counted); ``0`` writes each line as it comes."""
    access_flush_interval: Duration = timedelta(seconds=1)
    """Sidecar-only: the longest a queued access-log line waits before it is written (nginx's ``flush=``)."""


class WebhooksConfig(Model):
    """Sidecar-only: the durable outbox for fire-and-forget web hooks (``response.ignore``)."""

    signing_secret: str | None = None
    """Key of the ``Webhook-Signature`` HMAC on every outbox delivery (16+ characters); required
    once a ``web_hook`` has ``response.ignore``. README "Web hooks" shows how a receiver checks it."""
    max_attempts: int = Field(10, ge=1, le=100)
    """Attempts per delivery before it is ``dead`` (listed by ``/admin/webhooks/deliveries``)."""
    initial_backoff: Duration = timedelta(seconds=1)
    """The wait after the first failure; it doubles per failure (±20 % jitter)."""
    max_backoff: Duration = timedelta(minutes=10)
    """The longest wait between attempts."""
    worker_interval: Duration = timedelta(seconds=1)
    """How often an idle worker looks for due deliveries."""
    lease: Duration = timedelta(seconds=45)
    """How long a claimed delivery is a worker's; longer than any hook's ``timeout``, so no other
    replica sends it meanwhile. A killed sidecar's delivery is sent again after it."""

    @field_validator("signing_secret")
    @classmethod
    def _long_enough(cls, v: str | None) -> str | None:
        if v is not None and len(v) < 16:
            raise ValueError("must be at least 16 characters long")
        return v


class OtlpSampling(Model):
    sampling_ratio: float = Field(1.0, ge=0.0, le=1.0)
    """The share of new traces recorded (0 to 1; Kratos' key). A trace a trusted proxy started
    keeps that proxy's sampling decision."""


class OtlpProvider(Model):
    server_url: str | None = None
    """Where spans go, as Kratos has it: ``host:port`` of an OTLP/HTTP receiver (the exporter posts
    to ``/v1/traces`` there), e.g. ``otel-collector:4318``."""
    insecure: bool = False
    """Plain HTTP to the receiver (Kratos' key); HTTPS when false."""
    sampling: OtlpSampling = OtlpSampling()
    """Sampling of new traces."""
    authorization_header: str | None = None
    """Sent as the ``Authorization`` header of each export (Kratos' key)."""

    @field_validator("server_url")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}", value):
            raise ValueError(f"expected host:port (as Kratos), e.g. otel-collector:4318; got {value!r}")
        return value


class TracingProviders(Model):
    otlp: OtlpProvider = OtlpProvider()
    """The OTLP/HTTP exporter (``provider: otel``)."""
    jaeger: Loose = Loose()
    """Kratos' Jaeger settings; accepted so a kratos.yml loads, but ``provider: jaeger`` is refused
    (send OTLP: Jaeger receives it on port 4318)."""
    zipkin: Loose = Loose()
    """Kratos' Zipkin settings; accepted, ``provider: zipkin`` is refused (use ``otel``)."""


class TracingConfig(Model):
    provider: str | None = None
    """``otel`` turns tracing on (OpenTelemetry over OTLP/HTTP to ``providers.otlp.server_url``);
    absent or empty: off, at no cost. Kratos' ``jaeger`` and ``zipkin`` are refused by name."""
    service_name: str = "sidecar"
    """``service.name`` of every span (Kratos' key)."""
    deployment_environment: str | None = None
    """``deployment.environment`` of every span (Kratos' key)."""
    providers: TracingProviders = TracingProviders()
    """Exporter settings, by provider."""

    @field_validator("provider")
    @classmethod
    def _supported(cls, value: str | None) -> str | None:
        if value in (None, "", "otel"):
            return value or None
        raise ValueError(
            f"tracing provider {value!r} is not supported: use 'otel' (OTLP/HTTP; Jaeger, Zipkin's "
            "collectors and the OpenTelemetry Collector all receive it)"
        )

    @model_validator(mode="after")
    def _has_receiver(self) -> TracingConfig:
        if self.provider == "otel" and not self.providers.otlp.server_url:
            raise ValueError(
                "provider 'otel' needs providers.otlp.server_url (host:port of an OTLP/HTTP receiver)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.provider == "otel"


class Config(Model):
    """The whole configuration. Build it with ``load_config``; never mutate it."""

    version: str | None = None
    """The kratos.yml schema version; accepted, not used."""
    dev: bool = False
    """Development mode (``--dev``): secrets generated when none are set, cookies over http allowed,
    migrations applied on start, text logs."""
    dsn: str = "sqlite://sidecar.db"
    """The SQL database for identities, credentials and the courier queue (and sessions without Redis):
    ``sqlite://file.db`` (relative), ``sqlite:///var/lib/db.sqlite?_fk=true`` (absolute, as Kratos
    reads it), ``memory``, ``postgres://user:pass@host:5432/db``."""
    serve: Serve = Serve()
    """The two listeners."""
    identity: IdentityConfig = IdentityConfig()
    """Identity schemas."""
    selfservice: SelfService = SelfService()
    """Self-service methods and flows."""
    session: SessionConfig = SessionConfig()
    """Sessions."""
    cookies: Cookies = Cookies()
    """Defaults for every cookie sidecar sets."""
    secrets: Secrets = Secrets()
    """Secrets."""
    hashers: Hashers = Hashers()
    """Password hashing."""
    courier: Courier = Courier()
    """Outgoing mail."""
    security: Security = Security()
    """Abuse defences."""
    feature_flags: FeatureFlags = FeatureFlags()
    """Kratos' feature flags (Kratos 25.4's keys only): each is honoured, or accepted only with the
    value that is sidecar's behaviour and refused by name otherwise."""

    log: LogConfig = LogConfig()
    """Logging."""
    proxy: ProxyConfig = ProxyConfig()
    """Sidecar-only: the access proxy in front of the app."""
    rules: list[str] = []
    """Sidecar-only: access rule files (globs), read in name order; hot-reloaded (a bad edit keeps the
    old rules). docs/RULES.md."""
    rules_order: Literal["first_match", "most_specific"] = "first_match"
    """Sidecar-only: which rule decides a request: ``first_match`` (rules in file order, the first that
    matches) or ``most_specific`` (the matching rule with the most specific path pattern). docs/RULES.md."""
    redis: RedisConfig | None = None
    """Sidecar-only: Redis for sessions, flows and counters. Absent: they live in the SQL database."""
    webhooks: WebhooksConfig = WebhooksConfig()
    """Sidecar-only: the durable outbox of fire-and-forget web hooks."""
    scim: ScimConfig = ScimConfig()
    """Sidecar-only: SCIM 2.0 provisioning per organization (``<base_url>/scim/v2/<org>``)."""
    # Kratos sections we accept so an existing kratos.yml loads; not interpreted.
    organizations: list[Any] = []
    """Kratos' organizations; accepted so an existing kratos.yml loads, not used."""
    clients: Loose = Loose()
    """Kratos' HTTP client settings: ``web_hook.header_allowlist`` (request headers web hooks see) is
    honoured; the rest is accepted, not used."""
    ciphers: Loose = Loose()
    """Kratos' cipher settings; accepted, not used (see ``secrets.cipher``)."""
    oauth2_provider: Loose = Loose()
    """Kratos' Hydra integration; accepted, not used."""
    tracing: TracingConfig = TracingConfig()
    """OpenTelemetry tracing (Kratos' ``tracing`` keys); off unless ``provider: otel``."""

    def fire_and_forget_hooks(self) -> list[dict[str, Any]]:
        """The config of every ``web_hook`` with ``response.ignore`` (they use the outbox)."""
        found = []
        for name in type(self.selfservice.flows).model_fields:
            flow = getattr(self.selfservice.flows, name)
            before = getattr(flow, "before", None)
            after = getattr(flow, "after", None)
            hooks = list(before.hooks) if before is not None else []
            if isinstance(after, AfterHooks):
                hooks += after.hooks
                for section in (after.model_extra or {}).values():
                    if isinstance(section, dict):
                        hooks += [Hook.model_validate(h) for h in section.get("hooks") or []]
            for hook in hooks:
                response = hook.config.get("response") if hook.hook == "web_hook" else None
                if isinstance(response, dict) and response.get("ignore"):
                    found.append(hook.config)
        return found

    @model_validator(mode="after")
    def _outbox_ready(self) -> Config:
        audit_hook = self.log.audit.webhook
        if audit_hook is not None:
            if not self.log.audit.enabled:
                raise ValueError("log.audit.webhook: needs log.audit.enabled: true")
            if self.webhooks.signing_secret is None and not self.dev:
                raise ValueError(
                    "log.audit.webhook: needs webhooks.signing_secret (every outbox delivery is signed)"
                )
            if audit_hook.timeout >= self.webhooks.lease:
                raise ValueError(
                    f"log.audit.webhook.timeout: must be shorter than webhooks.lease "
                    f"({self.webhooks.lease.total_seconds():g}s)"
                )
        ignored = self.fire_and_forget_hooks()
        if ignored and self.webhooks.signing_secret is None and not self.dev:
            raise ValueError(
                "webhooks.signing_secret: required when a web_hook has response.ignore (every outbox "
                "delivery is signed with it)"
            )
        for hook in ignored:
            timeout = parse_duration(hook.get("timeout") or 30)
            if timeout >= self.webhooks.lease:
                raise ValueError(
                    f"webhooks.lease: must be longer than the timeout of web hook {hook.get('url')!r} "
                    f"({timeout.total_seconds():g}s)"
                )
        return self

    @property
    def public_base_url(self) -> str:
        """Absolute base of the public API, including the prefix, without a trailing slash."""
        if self.serve.public.base_url:
            return self.serve.public.base_url.rstrip("/")
        host = self.serve.public.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104
            host = "127.0.0.1"
        return f"http://{host}:{self.serve.public.port}{self.serve.public.prefix}"

    @property
    def admin_base_url(self) -> str:
        if self.serve.admin.base_url:
            return self.serve.admin.base_url.rstrip("/")
        return f"http://{self.serve.admin.host}:{self.serve.admin.port}"
