"""The typed configuration tree, with kratos.yml key names (DESIGN §3).

Built once by ``sidecar.config.loader.load_config``; every model is frozen and forbids unknown
keys, so a typo fails at start with its key path. Durations accept Kratos' Go syntax
(``1h``, ``30m``, ``1h30m``, ``500ms``) and become ``datetime.timedelta``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """Go-style duration ("1h30m", "500ms") or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m or 1h")
    if isinstance(value, int | float):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):  # ValueError: NaN
            raise ValueError(f"duration {value!r} is out of range") from None
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 15m or 1h")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 15m, 1h30m")
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long") from None


def parse_bytes(value: Any) -> int:
    """Sizes such as ``128MB`` / ``64KB`` / plain integers (bytes)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*", value)
        if m:
            mult = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2}
            mult["GiB"] = 1024**3
            return int(m.group(1)) * mult[m.group(2) or "B"]
    raise ValueError(f"invalid size {value!r}: expected e.g. 64MB")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Loose(BaseModel):
    """Kratos sections we accept for compatibility but do not interpret (yet)."""

    model_config = ConfigDict(frozen=True, extra="allow")


# --- serve -----------------------------------------------------------------------------------


class Cors(Model):
    """``serve.public.cors`` (Kratos' keys). No origin is allowed unless listed; ``*`` is refused
    with ``allow_credentials`` (it would hand any site a signed-in user's session JSON)."""

    enabled: bool = False
    # Before allowed_origins: its validator reads this one.
    allow_credentials: bool = True
    allowed_origins: list[str] = []
    allowed_methods: list[str] = ["POST", "GET", "PUT", "PATCH", "DELETE"]
    allowed_headers: list[str] = [
        "Authorization",
        "Content-Type",
        "Max-Age",
        "X-Session-Token",
        "X-XSRF-TOKEN",
        "X-CSRF-TOKEN",
    ]
    exposed_headers: list[str] = ["Content-Type"]
    max_age: int = 0
    debug: bool = False

    @field_validator("allowed_origins")
    @classmethod
    def _no_wildcard_with_credentials(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("enabled") and info.data.get("allow_credentials", True) and "*" in v:
            raise ValueError(
                "'*' cannot be combined with allow_credentials: true "
                "(list the origins, or set allow_credentials: false)"
            )
        return v


class PublicServe(Model):
    host: str = "0.0.0.0"  # noqa: S104 - the public listener is meant to be reachable
    port: int = Field(4433, ge=0, le=65535)
    base_url: str | None = None
    prefix: str = "/.auth"
    trusted_proxies: list[str] | None = None
    """Peers whose X-Forwarded-* / X-Original-* headers are believed. Absent: loopback only
    (127.0.0.0/8, ::1); ``[]``: nobody."""
    cors: Cors = Cors()
    max_body_size: ByteSize = 1024 * 1024
    max_request_line_size: ByteSize = Field(8 * 1024, ge=256, le=1024 * 1024)
    """Sidecar-only: a longer request line (method, target, version) is answered 414, never read on."""
    redirect_admin_paths: bool = False
    """Sidecar-only: answer admin paths on this listener with Kratos' 307 to the admin listener
    (which reveals its URL); by default they are 404."""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and (not v.startswith("/") or v.endswith("/")):
            raise ValueError("must start with '/' and not end with '/' (or be empty)")
        return v


class AdminServe(Model):
    host: str = "127.0.0.1"
    port: int = Field(4434, ge=0, le=65535)
    base_url: str | None = None
    api_key: str | None = None
    """Optional bearer key required on every admin call except health (on top of network isolation)."""
    max_body_size: ByteSize = 4 * 1024 * 1024
    max_request_line_size: ByteSize = Field(8 * 1024, ge=256, le=1024 * 1024)


class Serve(Model):
    public: PublicServe = PublicServe()
    admin: AdminServe = AdminServe()


# --- identity --------------------------------------------------------------------------------


class SchemaRef(Model):
    """``url`` is ``file://``, ``base64://`` or a path; ``schema`` holds the JSON Schema inline."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    id: str
    url: str | None = None
    inline: dict[str, Any] | None = Field(None, alias="schema")
    selfservice_selectable: bool = False


class IdentityConfig(Model):
    default_schema_id: str = "default"
    schemas: list[SchemaRef] = []


# --- selfservice ------------------------------------------------------------------------------


class Hook(Model):
    hook: str
    config: dict[str, Any] = {}


class AfterHooks(Model):
    model_config = ConfigDict(frozen=True, extra="allow")  # per-method sections: password, oidc, ...
    default_browser_return_url: str | None = None
    hooks: list[Hook] = []

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


class FlowConfig(Model):
    ui_url: str | None = None
    lifespan: Duration = timedelta(hours=1)
    before: BeforeHooks = BeforeHooks()
    after: AfterHooks = AfterHooks()


class LoginFlowConfig(FlowConfig):
    style: Literal["unified", "identifier_first"] = "unified"


class RegistrationFlowConfig(FlowConfig):
    enabled: bool = True
    style: Literal["profile_first", "unified"] = "unified"
    enable_legacy_one_step: bool = True
    login_hints: bool = False
    after: AfterHooks = AfterHooks(hooks=[Hook(hook="session")])


class SettingsFlowConfig(FlowConfig):
    privileged_session_max_age: Duration = timedelta(hours=1)
    required_aal: Literal["aal1", "highest_available"] = "highest_available"


class RecoveryFlowConfig(FlowConfig):
    enabled: bool = False
    use: Literal["code", "link"] = "code"
    notify_unknown_recipients: bool = False


class VerificationFlowConfig(FlowConfig):
    enabled: bool = False
    use: Literal["code", "link"] = "code"
    notify_unknown_recipients: bool = False


class LogoutAfter(Model):
    default_browser_return_url: str | None = None


class LogoutFlowConfig(Model):
    after: LogoutAfter = LogoutAfter()


class ErrorFlowConfig(Model):
    ui_url: str | None = None


class Flows(Model):
    login: LoginFlowConfig = LoginFlowConfig()
    registration: RegistrationFlowConfig = RegistrationFlowConfig()
    settings: SettingsFlowConfig = SettingsFlowConfig()
    recovery: RecoveryFlowConfig = RecoveryFlowConfig()
    verification: VerificationFlowConfig = VerificationFlowConfig()
    logout: LogoutFlowConfig = LogoutFlowConfig()
    error: ErrorFlowConfig = ErrorFlowConfig()


class PasswordMethodConfig(Model):
    min_password_length: int = Field(8, ge=1, le=1024)
    max_password_length: int = Field(1024, ge=8, le=4096)
    identifier_similarity_check_enabled: bool = True
    haveibeenpwned_enabled: bool = False
    haveibeenpwned_host: str = "api.pwnedpasswords.com"
    max_breaches: int = 0
    ignore_network_errors: bool = True
    migrate_hook: dict[str, Any] = {}


class PasswordMethod(Model):
    enabled: bool = True
    config: PasswordMethodConfig = PasswordMethodConfig()


class ToggleMethod(Model):
    enabled: bool = True
    config: dict[str, Any] = {}


class CodeMethodConfig(Model):
    lifespan: Duration = timedelta(hours=1)
    max_submissions: int = 5
    missing_credential_fallback_enabled: bool = False


class CodeMethod(Model):
    enabled: bool = True
    passwordless_enabled: bool = False
    mfa_enabled: bool = False
    config: CodeMethodConfig = CodeMethodConfig()


class LinkMethodConfig(Model):
    lifespan: Duration = timedelta(hours=1)
    base_url: str | None = None


class LinkMethod(Model):
    enabled: bool = False
    config: LinkMethodConfig = LinkMethodConfig()


class TotpMethodConfig(Model):
    issuer: str | None = None
    skew_steps: int = Field(1, ge=0, le=5)


class TotpMethod(Model):
    enabled: bool = False
    config: TotpMethodConfig = TotpMethodConfig()


class OffMethod(Model):
    enabled: bool = False
    config: dict[str, Any] = {}


class WebAuthnRp(Model):
    """``selfservice.methods.{webauthn,passkey}.config.rp``: the WebAuthn relying party.

    ``id`` defaults to the host of ``serve.public.base_url`` and ``origins`` to its origin; Kratos'
    single ``origin`` key is accepted too.
    """

    id: str | None = None
    display_name: str = "sidecar"
    origin: str | None = None
    origins: list[str] = []

    def origin_list(self) -> list[str]:
        return [*self.origins, *([self.origin] if self.origin else [])]


class WebAuthnMethodConfig(Model):
    passwordless: bool = False
    rp: WebAuthnRp = WebAuthnRp()


class WebAuthnMethod(Model):
    enabled: bool = False
    config: WebAuthnMethodConfig = WebAuthnMethodConfig()


class PasskeyMethodConfig(Model):
    rp: WebAuthnRp = WebAuthnRp()


class PasskeyMethod(Model):
    enabled: bool = False
    config: PasskeyMethodConfig = PasskeyMethodConfig()


class OidcProvider(Model):
    """One ``selfservice.methods.oidc.config.providers[]`` entry (Kratos' key names).

    ``provider`` picks a preset (``generic`` uses OIDC discovery at ``issuer_url``); ``auth_url`` /
    ``token_url`` override the preset's endpoints. Sidecar-only: ``api_url`` (GitHub's REST API base,
    for GitHub Enterprise), ``trust_email_verified`` (a verified email claim verifies the address),
    ``store_tokens`` (keep the provider's tokens, encrypted with ``secrets.cipher``).
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider: str = "generic"
    label: str | None = None
    client_id: str
    client_secret: str | None = None
    issuer_url: str | None = None
    auth_url: str | None = None
    token_url: str | None = None
    api_url: str | None = None
    scope: list[str] = []
    mapper_url: str | None = None
    requested_claims: dict[str, Any] | None = None
    microsoft_tenant: str | None = None
    apple_team_id: str | None = None
    apple_private_key_id: str | None = None
    apple_private_key: str | None = None
    additional_id_token_audiences: list[str] = []
    trust_email_verified: bool = False
    store_tokens: bool = True


class OidcMethodConfig(Model):
    base_redirect_uri: str | None = None
    providers: list[OidcProvider] = []
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
    config: OidcMethodConfig = OidcMethodConfig()


class Methods(Model):
    password: PasswordMethod = PasswordMethod()
    profile: ToggleMethod = ToggleMethod()
    code: CodeMethod = CodeMethod()
    link: LinkMethod = LinkMethod()
    totp: TotpMethod = TotpMethod()
    lookup_secret: OffMethod = OffMethod()
    webauthn: WebAuthnMethod = WebAuthnMethod()
    passkey: PasskeyMethod = PasskeyMethod()
    oidc: OidcMethod = OidcMethod()
    saml: OffMethod = OffMethod()


class SelfService(Model):
    default_browser_return_url: str | None = None
    allowed_return_urls: list[str] = []
    methods: Methods = Methods()
    flows: Flows = Flows()


# --- session, secrets, hashers, courier ---------------------------------------------------------


class SessionCookie(Model):
    name: str = "ory_kratos_session"
    persistent: bool = True
    domain: str | None = None
    path: str = "/"
    same_site: Literal["Lax", "Strict", "None"] = "Lax"
    secure: bool | None = None


class Whoami(Model):
    required_aal: Literal["aal1", "highest_available"] = "highest_available"
    tokenizer: Loose = Loose()


class SessionConfig(Model):
    lifespan: Duration = timedelta(hours=24)
    earliest_possible_extend: Duration | None = None
    cookie: SessionCookie = SessionCookie()
    whoami: Whoami = Whoami()
    cache_ttl: Duration = timedelta(seconds=5)
    """Sidecar-only: how long a resolved session may be served from the in-process cache."""


class Cookies(Model):
    domain: str | None = None
    path: str = "/"
    same_site: Literal["Lax", "Strict", "None"] = "Lax"
    secure: bool | None = None


class Secrets(Model):
    default: list[str] = []
    cookie: list[str] = []
    cipher: list[str] = []
    pagination: list[str] = []

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
    iterations: int = Field(3, ge=1, le=10)
    parallelism: int = Field(2, ge=1, le=16)
    salt_length: int = Field(16, ge=8, le=64)
    key_length: int = Field(32, ge=16, le=128)
    expected_duration: Duration = timedelta(milliseconds=500)
    expected_deviation: Duration = timedelta(milliseconds=500)
    dedicated_memory: ByteSize = 1024**3


class BcryptConfig(Model):
    cost: int = Field(12, ge=4, le=31)


class Hashers(Model):
    algorithm: Literal["argon2", "bcrypt"] = "argon2"
    argon2: Argon2Config = Argon2Config()
    bcrypt: BcryptConfig = BcryptConfig()
    max_concurrent: int = Field(0, ge=0, le=256)
    """Sidecar-only: cap on hashes computed at once (0 = number of CPUs)."""


class Smtp(Model):
    connection_uri: str = "smtp://127.0.0.1:25/?disable_starttls=true"
    from_address: str = "no-reply@sidecar.local"
    from_name: str | None = None
    headers: dict[str, str] = {}
    local_name: str = "localhost"


class Courier(Model):
    smtp: Smtp = Smtp()
    message_retries: int = Field(5, ge=0, le=100)
    delivery_strategy: Literal["smtp"] = "smtp"
    templates: Loose = Loose()
    template_override_path: str | None = None
    worker_interval: Duration = timedelta(seconds=1)


class AccountEnumeration(Model):
    mitigate: bool = False


class RateLimit(Model):
    """``security.rate_limit``: brute-force throttling (``sidecar.security.throttle``) and mail limits.

    Only failed credential checks count and a success clears them; past a threshold each attempt
    waits ``initial_delay``, doubled per further failure up to ``max_delay`` (429 + Retry-After).
    Nothing locks an account.
    """

    enabled: bool = True
    free_failures: int = Field(5, ge=1)
    """Failures per identifier from one client IP before the delay starts."""
    per_identifier: int = Field(100, ge=1)
    """Failures per identifier from all IPs together before the delay applies to every attempt on
    it (NIST SP 800-63B §5.2.2 allows at most 100 consecutive failures)."""
    per_ip: int = Field(100, ge=1)
    """Failures from one client IP (IPv6: its /64) across all identifiers (credential stuffing)
    before the delay applies to that IP. Successes never count."""
    initial_delay: Duration = timedelta(seconds=1)
    max_delay: Duration = timedelta(minutes=15)
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
    rate_limit: RateLimit = RateLimit()


# --- sidecar-only ------------------------------------------------------------------------------


class Timeouts(Model):
    connect: Duration = timedelta(seconds=2)
    read: Duration = timedelta(seconds=60)


class IdentityHeaders(Model):
    id: str = "X-User-ID"
    email: str = "X-User-Email"
    aal: str = "X-User-AAL"


class JwtConfig(Model):
    enabled: bool = False
    header: str = "Authorization"
    alg: Literal["ES256", "RS256", "EdDSA"] = "ES256"
    ttl: Duration = timedelta(minutes=1)
    issuer: str | None = None
    audience: str | None = None


class ProxyConfig(Model):
    upstream: str | None = None
    timeouts: Timeouts = Timeouts()
    identity_headers: IdentityHeaders = IdentityHeaders()
    headers: dict[str, str] = {}
    """Extra headers from templates over the session, e.g. ``X-User-Roles: "{{ metadata_public.roles }}"``."""
    jwt: JwtConfig = JwtConfig()
    websockets: bool = True
    reject_path_parameters: bool = True
    allowed_ws_origins: list[str] = []


class RedisConfig(Model):
    url: str
    key_prefix: str = "sidecar:"
    """Sidecar-only: namespace for every key and channel, so several sidecars can share one Redis."""


class LogConfig(Model):
    level: Literal["trace", "debug", "info", "warning", "warn", "error", "fatal", "panic"] = "info"
    format: Literal["json", "text"] = "json"
    leak_sensitive_values: bool = False


class Config(Model):
    """The whole configuration. Build it with ``load_config``; never mutate it."""

    version: str | None = None
    dev: bool = False
    dsn: str = "sqlite:///sidecar.db"
    serve: Serve = Serve()
    identity: IdentityConfig = IdentityConfig()
    selfservice: SelfService = SelfService()
    session: SessionConfig = SessionConfig()
    cookies: Cookies = Cookies()
    secrets: Secrets = Secrets()
    hashers: Hashers = Hashers()
    courier: Courier = Courier()
    security: Security = Security()
    feature_flags: Loose = Loose()
    log: LogConfig = LogConfig()
    proxy: ProxyConfig = ProxyConfig()
    rules: list[str] = []
    rules_order: Literal["first_match", "most_specific"] = "first_match"
    redis: RedisConfig | None = None
    # Kratos sections we accept so an existing kratos.yml loads; not interpreted.
    organizations: list[Any] = []
    clients: Loose = Loose()
    ciphers: Loose = Loose()
    oauth2_provider: Loose = Loose()
    tracing: Loose = Loose()

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
