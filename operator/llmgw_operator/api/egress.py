"""How the sidecar reaches providers: a forward proxy, private CAs, a client certificate.

An LLMGateway sets the proxy for all its providers (``spec.egress.proxy``); a
ProviderPolicy may set its own (``spec.egress.proxy``), which replaces the
gateway's for that provider. With neither, the sidecar's HTTPS_PROXY,
HTTP_PROXY and NO_PROXY environment variables apply (``spec.proxy.env``).
Referenced Secrets and ConfigMaps are mounted into the sidecar by kubelet;
the operator never reads them.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator, model_validator

from llmgw_operator.api import common
from llmgw_proxy import config

PROXY_URL = r"^(http://[^\s]*|[^\s:/]+:[0-9]+)?$"


class ObjectKeyRef(common.Model):
    """A key of a ConfigMap or of a Secret in the object's namespace (exactly one of the two)."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel(
                "has(self.configMap) != has(self.secret)",
                "name exactly one of configMap and secret",
            )
        )
    )

    config_map: common.ObjectName | None = Field(default=None, description="Name of a ConfigMap.")
    secret: common.ObjectName | None = Field(default=None, description="Name of a Secret.")
    key: str = Field(
        min_length=1, max_length=253, pattern=common.SECRET_KEY, description="Key within its data."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ObjectKeyRef:
        if (self.config_map is None) == (self.secret is None):
            raise ValueError("name exactly one of configMap and secret")
        return self


class ClientCertificate(common.Model):
    """A Secret holding the client certificate and its key, e.g. a kubernetes.io/tls Secret."""

    secret: common.ObjectName = Field(description="Name of the Secret.")
    certificate_key: str = Field(
        default="tls.crt",
        max_length=253,
        pattern=common.SECRET_KEY,
        description="Key of the PEM certificate.",
    )
    private_key_key: str = Field(
        default="tls.key",
        max_length=253,
        pattern=common.SECRET_KEY,
        description="Key of the PEM private key.",
    )


class Proxy(common.Model):
    """A forward proxy, as the HTTPS_PROXY, HTTP_PROXY and NO_PROXY variables set it."""

    https_proxy: str = Field(
        default="",
        max_length=config.MAX_PROXY_SETTING,
        pattern=PROXY_URL,
        description="http://host:port of the proxy for https:// providers (CONNECT); empty: direct.",
    )
    http_proxy: str = Field(
        default="",
        max_length=config.MAX_PROXY_SETTING,
        pattern=PROXY_URL,
        description="http://host:port of the proxy for http:// providers; empty: direct.",
    )
    no_proxy: str = Field(
        default="",
        max_length=config.MAX_PROXY_SETTING,
        description="Comma-separated hosts reached directly: '*', domains (with subdomains), IP "
        "addresses and CIDR blocks, each optionally with :port.",
    )
    credentials_secret_ref: common.SecretKeyRef | None = Field(
        default=None,
        description="A Secret key holding user:password for the proxy (Proxy-Authorization: Basic). "
        "Prefer it to credentials in the URL, which end up in the rendered ConfigMap.",
    )

    @field_validator("https_proxy", "http_proxy")
    @classmethod
    def _usable(cls, value: str) -> str:
        if value:
            try:
                config.parse_proxy(value)
            except config.ProxyUrlError as exc:  # never quotes the URL: it may hold a password
                raise ValueError(str(exc)) from None
        return value


class GatewayEgress(common.Model):
    """How the gateway's sidecars reach providers."""

    proxy: Proxy | None = Field(
        default=None,
        description="The forward proxy for every provider whose policy sets none; when unset, the "
        "sidecar's HTTPS_PROXY, HTTP_PROXY and NO_PROXY environment variables apply.",
    )


class PolicyEgress(common.Model):
    """How the sidecar reaches this provider."""

    proxy: Proxy | None = Field(
        default=None,
        description="The forward proxy for this provider; replaces the gateway's (an empty proxy "
        "object goes direct).",
    )
    ca_bundle: ObjectKeyRef | None = Field(
        default=None,
        description="PEM CA bundle the provider's certificate must chain to; replaces the system trust "
        "store for this provider.",
    )
    client_certificate: ClientCertificate | None = Field(
        default=None, description="Client certificate the sidecar presents to the provider (mTLS)."
    )
    connect_stagger: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Seconds before the next of the provider's (or proxy's) addresses is tried while "
        "a connection attempt hangs (happy eyeballs).",
    )
