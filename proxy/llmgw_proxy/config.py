"""The compiled proxy config: the one contract between operator and sidecar.

The operator compiles LLMGateway and ProviderPolicy objects into this document;
the sidecar validates it and serves from it. Nothing here knows Kubernetes.
The document carries ``version``: a sidecar that reads a version it does not
know refuses the document and keeps serving its previous config.

Field names are camelCase on the wire (like the CRDs) and snake_case in Python.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import re
from typing import Annotated, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

CONFIG_VERSION: Literal[1] = 1
MiB = 1024 * 1024

Seconds = Annotated[float, Field(gt=0, le=3600)]
ErrorCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MAX_FALLBACK_CODES = 32

OTHER_MODEL = "other"
"""The metric label of a model name the config does not write (see ``ProxyConfig.model_names``)."""

FORWARDED_HEADERS = ("content-type", "accept", "user-agent", "openai-beta", "traceparent", "tracestate")
"""Caller headers sent upstream by default; a provider's ``forwardHeaders`` adds to them."""
ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")
"""Caller headers an ``anthropic`` provider gets besides ``FORWARDED_HEADERS``: they select the API
version and beta features the caller's SDK was written for."""
ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` an ``anthropic`` provider gets when neither caller nor policy sets one."""
HOP_BY_HOP = frozenset(
    {
        # RFC 9110 7.6.1: they describe one connection, so they end at the sidecar either way.
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
NEVER_FORWARDED = HOP_BY_HOP | frozenset(
    {
        # Credentials: the caller's never reach the provider, which gets the gateway's key.
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        # What the sidecar sets itself for the upstream hop.
        "host",
        "content-length",
        "content-encoding",
        "expect",
        # Claims about the client's network path, which the provider must not take from a caller.
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
"""Header names ``forwardHeaders`` may not name."""
MAX_FORWARD_HEADERS = 32
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def check_forward_headers(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` lower-cased, or ValueError naming the first one that may not be forwarded."""
    out: list[str] = []
    for name in names:
        lower = name.lower()
        if not lower or len(lower) > 64 or not set(lower) <= _TOKEN:
            raise ValueError(f"forwardHeaders: {name[:64]!r} is not a header name")
        if lower in NEVER_FORWARDED or lower.startswith("proxy-"):
            raise ValueError(f"forwardHeaders: {name!r} is a credential or hop-by-hop header")
        if lower not in out and lower not in FORWARDED_HEADERS:
            out.append(lower)
    return tuple(out)


# Key files: the operator copies a key from a Secret into a file the sidecar
# reads, so both apply this one rule, and a key the operator accepts is one
# the sidecar will serve with.
MAX_KEY_BYTES = 8192
"""Largest key accepted; real provider keys are well under 300 bytes."""
KEY_EMPTY = "key_empty"
KEY_NOT_UTF8 = "key_not_utf8"
KEY_INVALID_CHARACTER = "key_invalid_character"
KEY_TOO_LONG = "key_too_long"


class KeyProblem(NamedTuple):
    """Why a key cannot serve: a bounded ``reason`` code and a ``detail`` that never quotes the key."""

    reason: str
    detail: str


def check_key(raw: bytes) -> str | KeyProblem:
    """The key ``raw`` holds, with the whitespace around it stripped, or why it cannot serve.

    A key goes into an HTTP header as it is, so it must be printable ASCII with
    no whitespace or control character inside (an embedded newline would turn
    every request into a 502). Whitespace around it, like the trailing newline
    that ``echo`` and editors add, is dropped.
    """
    if len(raw) > MAX_KEY_BYTES:
        return KeyProblem(KEY_TOO_LONG, f"is longer than {MAX_KEY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The position only: the offending byte is part of the key.
        return KeyProblem(KEY_NOT_UTF8, f"is not UTF-8 (at byte {exc.start})")
    value = text.strip()
    if not value:
        return KeyProblem(KEY_EMPTY, "is empty")
    for at, char in enumerate(value):
        if not "!" <= char <= "~":
            kind = "a non-ASCII character" if ord(char) > 0x7F else "whitespace or a control character"
            return KeyProblem(KEY_INVALID_CHARACTER, f"holds {kind} inside the key (at character {at})")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class ProviderKind(enum.StrEnum):
    OPENAI = "openai"
    AZURE_OPENAI = "azure-openai"
    OPENAI_COMPATIBLE = "openai-compatible"
    ANTHROPIC = "anthropic"


class ApiFamily(enum.StrEnum):
    """The API a provider kind speaks. Requests are relayed natively, never translated, so a route
    serves one family: an OpenAI-shaped request never reaches an Anthropic target, or the reverse."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


FAMILY = {
    ProviderKind.OPENAI: ApiFamily.OPENAI,
    ProviderKind.AZURE_OPENAI: ApiFamily.OPENAI,
    ProviderKind.OPENAI_COMPATIBLE: ApiFamily.OPENAI,
    ProviderKind.ANTHROPIC: ApiFamily.ANTHROPIC,
}

MODELLED_ENDPOINTS = {
    ApiFamily.OPENAI: ("chat/completions", "completions", "embeddings", "responses"),
    ApiFamily.ANTHROPIC: ("messages",),
}
"""The endpoints the sidecar understands (every policy applies), by family: what a route serves
when its ``endpoints`` is unset. Anything else is relayed, and only when a route declares it."""
RELAY_ANY = "*"
"""In a route's ``endpoints``: every OpenAI path the sidecar does not model, relayed."""
MAX_ROUTE_ENDPOINTS = 32
_ENDPOINT = re.compile(r"[a-z0-9_-][a-z0-9_.-]*(/[a-z0-9_-][a-z0-9_.-]*)*")  # no dot segments


def family_of_endpoint(endpoint: str) -> ApiFamily:
    """The family whose callers use ``endpoint`` (a path after ``/v1/``): ``messages`` is Anthropic's."""
    return ApiFamily.ANTHROPIC if endpoint in MODELLED_ENDPOINTS[ApiFamily.ANTHROPIC] else ApiFamily.OPENAI


def check_endpoints(names: tuple[str, ...]) -> tuple[str, ...]:
    """A route's ``endpoints``, normalised (``audio/*`` is ``audio``), or ValueError naming the problem."""
    out: list[str] = []
    for name in names:
        entry = name.strip().strip("/").removesuffix("/*")
        if entry != RELAY_ANY and _ENDPOINT.fullmatch(entry) is None:
            raise ValueError(f"endpoints: {name[:64]!r} is not a path after /v1/ (like 'audio' or 'files')")
        if entry not in out:
            out.append(entry)
    families = {family_of_endpoint(e) for e in out if e != RELAY_ANY}
    if RELAY_ANY in out:
        families.add(ApiFamily.OPENAI)
    if len(families) > 1:
        raise ValueError(
            "endpoints: 'messages' is Anthropic's, not to be served by a route with OpenAI endpoints"
        )
    return tuple(out)


class FailureKind(enum.StrEnum):
    """What a circuit breaker counts as a failure. 429 never is: it pauses instead."""

    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECTION = "connection"


class Listener(_Model):
    """The API listener (loopback: the application's). Read at start; a reload does not rebind."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    idle_timeout: Seconds = Field(
        75.0,
        description="Seconds a connection may wait between requests, or take to send a request's "
        "headers, before it is closed.",
    )
    read_timeout: Seconds = Field(30.0, description="Seconds a request's body may take to arrive (408).")
    max_connections: int = Field(
        4096, ge=1, le=1_000_000, description="Open connections; past it a new one gets 503 and is closed."
    )


class AdminListener(_Model):
    """Probes and metrics, on all interfaces: any pod can reach it, so it is tightly bounded."""

    host: str = "0.0.0.0"
    port: int = Field(9090, ge=1, le=65535)
    idle_timeout: Seconds = Field(
        10.0,
        description="Seconds a connection may wait between requests, or take to send a request's "
        "headers, before it is closed.",
    )
    max_connections: int = Field(
        64, ge=1, le=100_000, description="Open connections; past it a new one gets 503 and is closed."
    )


class Timeouts(_Model):
    """Upstream timeouts. ``total`` bounds the whole request, retries and fallbacks included."""

    connect: Seconds = 5.0
    first_byte: Seconds = Field(60.0, description="Until the upstream's response headers arrive.")
    first_event: Seconds = Field(
        60.0,
        description="From a stream's response headers until its first event with data; a stream that "
        "stays silent that long falls back like a failed request.",
    )
    stream_idle: Seconds = Field(
        60.0,
        description="Longest silence of a stream after its first event; then the stream ends with an "
        "error event.",
    )
    total: Seconds = Field(
        300.0,
        description="From the request's arrival until the provider's answer ends, retries and earlier "
        "targets' tries included.",
    )


class LimitScope(enum.StrEnum):
    LOCAL = "local"  # this sidecar's own buckets, in memory
    GLOBAL = "global"  # one set of buckets in the shared store for every sidecar of the provider's sharedId


class RateLimit(_Model):
    """Token buckets, refilled continuously. A limit left out is not enforced."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    request_burst: int | None = Field(
        None, ge=1, description="Bucket size for requests; defaults to requestsPerMinute."
    )
    token_burst: int | None = Field(
        None, ge=1, description="Bucket size for tokens; defaults to tokensPerMinute."
    )
    max_wait: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Seconds a request may wait for capacity before it is refused with 429.",
    )
    default_max_tokens: int = Field(
        256, ge=1, description="Completion tokens reserved when a request sets no max_tokens."
    )
    scope: LimitScope = Field(
        LimitScope.LOCAL,
        description="local: this sidecar enforces the limits in memory. global: the limits hold across "
        "every sidecar whose provider has the same sharedId, in the shared store (sharedStore).",
    )
    fallback_share: int = Field(
        1,
        ge=1,
        le=10_000,
        description="global only: while the shared store cannot answer, this sidecar enforces "
        "ceil(limit / fallbackShare) in memory (the operator sets the gateway's replica count).",
    )


class TokenBudget(_Model):
    """Prompt plus completion tokens per UTC calendar day and month, counted in the shared store."""

    tokens_per_day: int | None = Field(None, ge=1, le=10**15)
    tokens_per_month: int | None = Field(None, ge=1, le=10**15)

    @model_validator(mode="after")
    def _needs_a_period(self) -> TokenBudget:
        if self.tokens_per_day is None and self.tokens_per_month is None:
            raise ValueError("budget needs tokensPerDay or tokensPerMonth")
        return self


class SharedStore(_Model):
    """The Redis that holds global limits, budgets and the shared cache (see docs/proxy.md)."""

    url: str = Field(
        pattern=r"^(redis|rediss|unix)://",
        max_length=2048,
        description="redis://host:port/db, rediss:// for TLS, or unix:///path; no password in it.",
    )
    sentinels: tuple[Annotated[str, Field(pattern=r"^[^:\s]+:[0-9]{1,5}$")], ...] = Field(
        (),
        max_length=16,
        description="host:port of Redis Sentinels; when set, the master named sentinelMaster is used "
        "and url only gives the database, TLS and credentials.",
    )
    sentinel_master: str = Field("mymaster", min_length=1, max_length=253)
    cluster: bool = Field(
        False,
        description="url names a node of a Redis Cluster; the client finds the others. Each policy's "
        "keys share one hash tag, so each script runs on one shard.",
    )
    username: str | None = Field(None, max_length=253)
    password_file: str | None = Field(
        None, description="File holding the password; read at each (re)connect."
    )
    timeout: Seconds = Field(
        0.2,
        le=5,
        description="Seconds one command may take, connecting and the sidecar's own event-loop delay "
        "included, before the store counts as down and the sidecar falls back.",
    )
    max_in_flight: int = Field(
        64,
        ge=1,
        le=4096,
        description="Commands in flight at once; past it a request falls back at once instead of "
        "queueing. The connection pool holds this many connections, plus one kept for the admission "
        "batches (not with Redis Cluster).",
    )
    reconnect_backoff: Seconds = Field(
        0.25, description="Seconds before the first probe after a failure; doubles, with jitter."
    )
    max_reconnect_backoff: Seconds = Field(5.0, description="Cap in seconds for the probe backoff.")
    key_prefix: str = Field(
        "llmgw", pattern=r"^[A-Za-z0-9._:-]{1,64}$", description="First part of every key."
    )


SHARED_ID_PATTERN = r"^[A-Za-z0-9._/-]{1,300}$"


class CircuitBreaker(_Model):
    consecutive_failures: int | None = Field(5, ge=1)
    failure_ratio: float | None = Field(None, gt=0, le=1)
    window: Seconds = Field(30.0, description="Rolling window for failureRatio.")
    minimum_requests: int = Field(10, ge=1, description="Requests in the window before the ratio counts.")
    open_duration: Seconds = 10.0
    max_open_duration: Seconds = Field(300.0, description="Cap for the doubling open duration.")
    half_open_requests: int = Field(1, ge=1, le=100)
    fail_on: tuple[FailureKind, ...] = (
        FailureKind.SERVER_ERROR,
        FailureKind.TIMEOUT,
        FailureKind.CONNECTION,
    )


class Retry(_Model):
    attempts: int = Field(2, ge=1, le=10, description="Tries per target, the first included.")
    base_backoff: Seconds = 0.1
    max_backoff: Seconds = 5.0
    honor_retry_after: bool = True
    max_retry_after: Seconds = Field(
        60.0,
        description="Cap in seconds for an upstream Retry-After, both as a retry delay and as the "
        "pause of the provider after a 429.",
    )
    budget_ratio: float = Field(
        0.2,
        ge=0,
        le=10,
        description="Retries allowed per request over budgetWindow, on top of budgetMinPerSecond.",
    )
    budget_min_per_second: float = Field(
        1.0, ge=0, le=1000, description="Retries per second allowed whatever the ratio says."
    )
    budget_window: Seconds = Field(10.0, description="Seconds over which the retry budget counts.")
    fallback_on_error_codes: tuple[ErrorCode, ...] = Field(
        (),
        max_length=MAX_FALLBACK_CODES,
        description="Error codes (the error object's code or type) of a 4xx answer that send the "
        "request to the route's next target instead of answering it, e.g. context_length_exceeded "
        "or content_filter. 429, 5xx, timeouts and open breakers move on regardless.",
    )


class CacheMode(enum.StrEnum):
    DETERMINISTIC = "deterministic"  # only temperature 0 or seed-pinned requests
    ALL = "all"


class CachePolicy(_Model):
    enabled: bool = False
    ttl: Seconds = 300.0
    mode: CacheMode = CacheMode.DETERMINISTIC
    shared: bool = Field(
        False,
        description="Store entries in the shared store (with their TTL) so a hit in one sidecar serves "
        "all; the in-memory store answers while the shared store cannot.",
    )


class CacheStore(_Model):
    """Bounds of the sidecar's one in-memory LRU store."""

    max_entries: int = Field(1000, ge=1)
    max_bytes: int = Field(
        64 * MiB,
        ge=1024,
        description="Memory the store may hold: each entry's key and value bytes plus a fixed "
        "320-byte overhead.",
    )


class UpstreamLimits(_Model):
    """Bounds on the provider's answers and on the connections the sidecar keeps to it.

    An answer that breaks a size bound ends its request with a 502 (mid-stream:
    an error event) and its connection is closed; it counts as a connection
    failure for the breaker. A request that waits ``poolWait`` for a free
    connection gets a 503 that never counts against the provider.
    """

    max_response_bytes: int = Field(
        32 * MiB,
        ge=1 * MiB,
        le=1024 * MiB,
        description="Largest body read whole (after decoding gzip or deflate); also what one streamed "
        "answer may hold buffered, and the largest streamed answer kept for the cache.",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * MiB,
        description="Largest response head (and chunked trailers) in bytes.",
    )
    max_headers: int = Field(
        128, ge=8, le=10_000, description="Most header (and trailer) fields in one answer."
    )
    max_event_bytes: int = Field(
        1 * MiB,
        ge=1024,
        le=256 * MiB,
        description="Longest server-sent event the sidecar buffers when it must look inside a stream "
        "(rate limits, cache, usage it asked for).",
    )
    pool_size: int = Field(
        1024,
        ge=1,
        le=65_536,
        description="Connections open at most to the provider's origin; a stream holds one for its length.",
    )
    pool_wait: Seconds = Field(
        10.0,
        description="Seconds a request may wait for a free connection, then a 503 (not a provider failure).",
    )


MAX_PROXY_SETTING = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyAddress:
    """A forward proxy: ``http://host:port`` only (TLS to the proxy itself is not supported)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """How the proxy is named in errors and logs: the address, never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class ProxyUrlError(ValueError):
    """A proxy URL that cannot be used; the message never quotes the URL (it may hold a password)."""


def parse_proxy(url: str) -> ProxyAddress:
    """``http://[user:password@]host[:port]``; a bare ``host:port`` is read as http, like curl does."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ProxyUrlError("the proxy URL does not parse") from None
    if parts.scheme.lower() != "http":
        raise ProxyUrlError(f"proxy URL scheme {parts.scheme.lower()[:16]!r} is not supported (use http://)")
    if not parts.hostname:
        raise ProxyUrlError("the proxy URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyUrlError("the proxy URL must be http://host:port with nothing after it")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxyAddress(parts.hostname, port or 80, username, password)


class EgressProxy(_Model):
    """A forward proxy, set like the HTTPS_PROXY, HTTP_PROXY and NO_PROXY variables.

    An empty URL means direct for that scheme. Proxy URLs are ``http://host:port``,
    optionally with ``user:password@`` (prefer ``credentialsFile``: the config is
    not a secret).
    """

    https_proxy: str = Field(
        "", max_length=MAX_PROXY_SETTING, description="Proxy for https:// providers (CONNECT)."
    )
    http_proxy: str = Field("", max_length=MAX_PROXY_SETTING, description="Proxy for http:// providers.")
    no_proxy: str = Field(
        "",
        max_length=MAX_PROXY_SETTING,
        description="Comma-separated hosts reached directly: '*', domains (and their subdomains), IP "
        "addresses, CIDR blocks, each optionally with :port.",
    )
    credentials_file: str | None = Field(
        None, description="File holding user:password for the proxy (Proxy-Authorization: Basic)."
    )

    @field_validator("https_proxy", "http_proxy")
    @classmethod
    def _usable(cls, value: str) -> str:
        if value:
            try:
                parse_proxy(value)
            except ProxyUrlError as exc:  # the message never quotes the URL: it may hold a password
                raise ValueError(str(exc)) from None
        return value


class Egress(_Model):
    """How the provider is reached: the proxy, the trust store and a client certificate."""

    proxy: EgressProxy | None = Field(
        None,
        description="The forward proxy; when unset the sidecar's HTTPS_PROXY, HTTP_PROXY and NO_PROXY "
        "environment variables apply.",
    )
    ca_file: str | None = Field(
        None, description="PEM CA bundle that replaces the system trust store for this provider."
    )
    client_cert_file: str | None = Field(None, description="PEM client certificate (chain) for mTLS.")
    client_key_file: str | None = Field(
        None, description="PEM private key of clientCertFile, when the certificate file does not hold it."
    )
    connect_stagger: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Seconds between connection attempts to a host's successive addresses (happy eyeballs).",
    )

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Egress:
        if self.client_key_file is not None and self.client_cert_file is None:
            raise ValueError("egress.clientKeyFile needs egress.clientCertFile")
        return self


class Provider(_Model):
    kind: ProviderKind = ProviderKind.OPENAI_COMPATIBLE
    base_url: str = Field(description="Up to and including /v1, e.g. https://api.openai.com/v1.")
    api_key_file: str | None = Field(None, description="File holding the key; re-read when it changes.")
    api_version: str | None = Field(
        None,
        description="Azure OpenAI api-version query parameter; for anthropic, the anthropic-version "
        "header sent when the caller sends none (default 2023-06-01).",
    )
    timeouts: Timeouts = Timeouts()
    rate_limit: RateLimit | None = None
    model_rate_limits: dict[str, RateLimit] = Field(
        default_factory=dict, description="Per upstream model, on top of the provider's limit."
    )
    circuit_breaker: CircuitBreaker | None = None
    retry: Retry = Retry()
    cache: CachePolicy = CachePolicy()
    upstream_limits: UpstreamLimits = UpstreamLimits()
    forward_headers: tuple[str, ...] = Field(
        (),
        max_length=MAX_FORWARD_HEADERS,
        description="Caller headers sent upstream besides content-type, accept, user-agent, "
        "openai-beta, traceparent and tracestate; credentials and hop-by-hop headers are refused.",
    )
    models: tuple[str, ...] | None = Field(
        None, description="Upstream models this provider may be sent; any model when unset."
    )
    egress: Egress = Egress()
    shared_id: str | None = Field(
        None,
        pattern=SHARED_ID_PATTERN,
        description="Identity of the provider's state in the shared store (the operator writes the "
        "policy's namespace/name): sidecars with the same sharedId share global limits, budget and cache.",
    )
    budget: TokenBudget | None = Field(None, description="Token budget, enforced in the shared store.")

    @property
    def uses_shared_store(self) -> bool:
        limits = [self.rate_limit, *self.model_rate_limits.values()]
        return (
            any(lim is not None and lim.scope is LimitScope.GLOBAL for lim in limits)
            or self.budget is not None
            or self.cache.shared
        )

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_forward_headers(value)


class Target(_Model):
    provider: str
    model: str | None = Field(None, description="Upstream model name; the requested name when unset.")


class Route(_Model):
    model: str = Field(description="Model name the application asks for; '*' matches any.")
    targets: tuple[Target, ...] = Field(min_length=1, description="Primary first, then fallbacks in order.")
    endpoints: tuple[str, ...] | None = Field(
        None,
        max_length=MAX_ROUTE_ENDPOINTS,
        description="Paths after /v1/ this route serves: modelled endpoints (chat/completions, "
        "completions, embeddings, responses; messages for Anthropic) and path prefixes relayed as "
        "they are (audio, images, moderations, files, batches, ...; '*' for any path not modelled). "
        "Unset: the modelled endpoints of its providers' API family, nothing relayed.",
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else check_endpoints(value)

    def serves(self, endpoint: str, family: ApiFamily) -> bool:
        """The route serves ``endpoint`` (a modelled one, or a relayed path) for a ``family`` route."""
        if self.endpoints is None:
            return endpoint in MODELLED_ENDPOINTS[family]
        if endpoint in self.endpoints:
            return True
        if endpoint in MODELLED_ENDPOINTS[family]:
            return False  # a modelled endpoint is served only when named
        return RELAY_ANY in self.endpoints or any(endpoint.startswith(e + "/") for e in self.endpoints)


class ProxyConfig(_Model):
    version: Literal[1] = CONFIG_VERSION
    listen: Listener = Listener()
    admin: AdminListener = AdminListener()
    max_body_bytes: int = Field(10 * MiB, ge=1024)
    max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Upstream tries for one request, across all of its route's targets and retries.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace: Seconds = 25.0
    providers: dict[str, Provider] = Field(min_length=1)
    routes: tuple[Route, ...] = Field(min_length=1)
    cache: CacheStore = CacheStore()
    max_pinned_responses: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="Responses API ids the sidecar remembers with the provider that created them, so "
        "calls naming one (previous_response_id, GET /v1/responses/{id}) go to that provider; the "
        "oldest are forgotten first, and a forgotten or unknown id goes to its route's first target.",
    )
    shared_store: SharedStore | None = Field(
        None, description="Needed by global limits, budgets and shared caches; none when unset."
    )

    @model_validator(mode="after")
    def _shared_state_has_a_store(self) -> ProxyConfig:
        for name, provider in self.providers.items():
            if not provider.uses_shared_store:
                continue
            if self.shared_store is None:
                raise ValueError(
                    f"provider {name!r}: global limits, budgets and shared caches need sharedStore"
                )
            if provider.shared_id is None:
                raise ValueError(f"provider {name!r}: global limits, budgets and shared caches need sharedId")
        return self

    @model_validator(mode="after")
    def _targets_name_known_providers(self) -> ProxyConfig:
        names = [r.model for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"routes: duplicate model {', '.join(dupes)}")
        for route in self.routes:
            for target in route.targets:
                if target.provider not in self.providers:
                    raise ValueError(
                        f"route {route.model!r}: target provider {target.provider!r} is not in providers"
                    )
            self._one_family(route)
        return self

    def _one_family(self, route: Route) -> None:
        kinds = {self.providers[t.provider].kind for t in route.targets}
        families = {FAMILY[k] for k in kinds}
        if len(families) > 1:
            raise ValueError(
                f"route {route.model!r}: targets mix API families ({', '.join(sorted(families))}); "
                "a route's providers must all speak the same API"
            )
        family = families.pop()
        for endpoint in route.endpoints or ():
            if endpoint != RELAY_ANY and family_of_endpoint(endpoint) is not family:
                raise ValueError(
                    f"route {route.model!r}: endpoint {endpoint!r} is not served by {family} providers"
                )
            relayed = endpoint not in MODELLED_ENDPOINTS[family]
            if family is ApiFamily.ANTHROPIC and relayed:
                raise ValueError(f"route {route.model!r}: only 'messages' is served for anthropic providers")
            if relayed and ProviderKind.AZURE_OPENAI in kinds:
                raise ValueError(
                    f"route {route.model!r}: relayed endpoint {endpoint!r} is not supported for "
                    "azure-openai providers"
                )

    def family(self, route: Route) -> ApiFamily:
        return FAMILY[self.providers[route.targets[0].provider].kind]

    @functools.cached_property
    def model_names(self) -> frozenset[str]:
        """Every model name the config itself writes: routes (but '*'), target models, providers'
        ``models`` and ``modelRateLimits``. Only these become metric label values: any other
        name a caller sends (a '*' route passes any) is counted as ``OTHER_MODEL``."""
        names = {r.model for r in self.routes if r.model != "*"}
        names.update(t.model for r in self.routes for t in r.targets if t.model)
        for provider in self.providers.values():
            names.update(provider.models or ())
            names.update(provider.model_rate_limits)
        return frozenset(names)

    def model_label(self, model: str) -> str:
        return model if model in self.model_names else OTHER_MODEL

    def route_for(self, model: str) -> Route | None:
        wildcard = None
        for route in self.routes:
            if route.model == model:
                return route
            if route.model == "*":
                wildcard = route
        return wildcard


def canonical(cfg: ProxyConfig) -> dict[str, object]:
    """The document both sides can produce from a config: ``version`` plus every field that is
    not at its default, in JSON types. The operator's ConfigMap holds exactly this (as YAML)."""
    return {"version": cfg.version, **cfg.model_dump(mode="json", by_alias=True, exclude_defaults=True)}


HASH_LENGTH = 16


def digest(cfg: ProxyConfig) -> str:
    """The config's hash: SHA-256 of its canonical document as compact, key-sorted JSON, cut to
    ``HASH_LENGTH`` hex digits. The sidecar reports it for the config it serves and the operator
    computes it for the config it rendered; equal configs hash equal whatever their YAML layout."""
    text = json.dumps(canonical(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def parse(data: object) -> ProxyConfig:
    """Validate a decoded document (JSON or YAML) into a config."""
    if isinstance(data, dict) and data.get("version") not in (None, CONFIG_VERSION):
        raise UnsupportedVersion(data.get("version"))
    return ProxyConfig.model_validate(data)


class UnsupportedVersion(ValueError):
    def __init__(self, version: object) -> None:
        super().__init__(f"config version {version!r} is not supported (this proxy reads {CONFIG_VERSION})")
