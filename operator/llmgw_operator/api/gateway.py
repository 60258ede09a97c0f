"""LLMGateway: an application's pods, each with the sidecar, routing model names to policies."""

from __future__ import annotations

import enum
import posixpath
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from llmgw_operator.api import common
from llmgw_operator.api import egress as egress_api
from llmgw_proxy import config

KIND = "LLMGateway"
PLURAL = "llmgateways"
SINGULAR = "llmgateway"
SHORT_NAMES = ("llmgw",)

# Names the operator adds to the application's pod; the template must leave them free.
SIDECAR_CONTAINER = "llmgw-proxy"
CONFIG_VOLUME = "llmgw-config"
KEYS_VOLUME = "llmgw-keys"
# The sidecar's own files live under this directory (config, keys, egress mounts), and its
# volumes' names start with this prefix: spec.proxy.volumes and volumeMounts must stay clear.
RESERVED_DIR = "/etc/llmgw"
RESERVED_VOLUME_PREFIX = "llmgw-"
MAX_SIDECAR_ENV = 64
MAX_SIDECAR_VOLUMES = 16

# A pod carrying this label, with a gateway's name as value, gets that gateway's sidecar
# injected (render/names.py GATEWAY_LABEL, which the owned mode's pods carry too).
GATEWAY_LABEL = "llmgateway.io/gateway"

# Without a template the gateway owns no pods: replicas and autoscaling would have nothing to scale.
INJECTION_RULE = common.cel(
    "has(self.template) || (!has(self.replicas) && !has(self.autoscaling))",
    "replicas and autoscaling need a template: without one, the gateway injects its sidecar into "
    "the users' own pods",
)

# The gateway's name becomes a label value on its children and pods.
MAX_NAME_LENGTH = 63
NAME_RULE = common.cel(
    f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters",
)


# The API server refuses a hostNetwork template at admission; the operator
# refuses it too (render/pod_rules.py, same message) for a CRD older than this
# rule. CEL sees only fields the schema declares, hence the two declared below.
HOST_NETWORK_RULE = common.cel(
    "!has(self.spec) || !has(self.spec.hostNetwork) || !self.spec.hostNetwork",
    "template.spec.hostNetwork is not allowed: the sidecar's API must stay on the pod's own loopback",
)
TEMPLATE_SCHEMA: dict[str, Any] = {
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "spec": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"hostNetwork": {"type": "boolean"}},
        }
    },
    **common.cel_rules(HOST_NETWORK_RULE),
}


def name_problem(name: str) -> str | None:
    """The pydantic-side twin of NAME_RULE (metadata is not part of the spec model)."""
    return NAME_RULE["message"] if len(name) > MAX_NAME_LENGTH else None


Port = Annotated[int, Field(ge=1, le=65535)]


class Target(common.Model):
    """Where a route sends requests: a ProviderPolicy and optionally another upstream model name."""

    policy: common.ObjectName = Field(description="Name of a ProviderPolicy in the gateway's namespace.")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Upstream model name; the requested name when unset.",
    )


ENDPOINT_PATTERN = r"^(\*|[a-z0-9_-][a-z0-9_.-]*(/[a-z0-9_-][a-z0-9_.-]*)*(/\*)?)$"
Endpoint = Annotated[str, Field(min_length=1, max_length=128, pattern=ENDPOINT_PATTERN)]
ENDPOINTS_MESSAGE = "endpoints: 'messages' is Anthropic's, not to be served by a route with OpenAI endpoints"
# One family per route: CEL sees only this object, so it checks the endpoints a route declares; the
# kinds of the policies its targets name are checked when the gateway is compiled (RenderFailed).
ENDPOINTS_RULE = common.cel(
    "!self.exists(e, e == 'messages' || e.startsWith('messages/')) || "
    "self.all(e, e == 'messages' || e.startsWith('messages/'))",
    ENDPOINTS_MESSAGE,
)


class Route(common.Model):
    """A model name the application asks for, and the targets that serve it."""

    model: str = Field(
        min_length=1,
        max_length=253,
        description="Model name the application asks for; '*' matches any model without its own route.",
    )
    targets: tuple[Target, ...] = Field(
        min_length=1,
        max_length=8,
        description="Primary first, then fallbacks in order.",
    )
    endpoints: tuple[Endpoint, ...] | None = Field(
        default=None,
        max_length=config.MAX_ROUTE_ENDPOINTS,
        description=(
            "Paths after /v1/ this route serves: modelled endpoints (chat/completions, completions, "
            "embeddings, responses; messages for anthropic policies) and path prefixes relayed as "
            "they are (audio, images, moderations, files, batches...; '*' for any path not modelled). "
            "Unset: the modelled endpoints of its policies' API family, nothing relayed."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set", **common.cel_rules(ENDPOINTS_RULE)},
    )

    @field_validator("endpoints")
    @classmethod
    def _one_family(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        try:
            config.check_endpoints(value)
        except ValueError:
            raise ValueError(ENDPOINTS_MESSAGE) from None
        return value


class Autoscaling(common.Model):
    """An autoscaling/v2 HorizontalPodAutoscaler for the gateway's Deployment."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel(
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            ),
            common.cel(
                "has(self.targetCPUUtilizationPercentage) || has(self.targetMemoryUtilizationPercentage)",
                "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage",
            ),
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest pods.")
    max_replicas: int = Field(ge=1, le=1000, description="Most pods.")
    target_cpu_utilization_percentage: int | None = Field(
        default=None,
        alias="targetCPUUtilizationPercentage",
        ge=1,
        le=1000,
        description="Average CPU use, in percent of requests, the autoscaler aims for.",
    )
    target_memory_utilization_percentage: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Average memory use, in percent of requests, the autoscaler aims for.",
    )

    @model_validator(mode="after")
    def _bounds_and_targets(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        if (
            self.target_cpu_utilization_percentage is None
            and self.target_memory_utilization_percentage is None
        ):
            raise ValueError(
                "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage"
            )
        return self


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}


ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


class EnvVar(common.Model):
    """One environment variable of the sidecar (a core/v1 EnvVar: value or valueFrom)."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel("!(has(self.value) && has(self.valueFrom))", "env: set value or valueFrom, not both")
        )
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME, description="Variable name.")
    value: str | None = Field(default=None, max_length=32768, description="A literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A core/v1 EnvVarSource: secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("env: set value or valueFrom, not both")
        return self


VOLUME_NAME_RULE = common.cel(
    f"self.all(v, !v.name.startsWith('{RESERVED_VOLUME_PREFIX}'))",
    f"proxy.volumes: names starting with {RESERVED_VOLUME_PREFIX} are reserved for the operator's volumes",
)
MOUNT_PATH_RULE = common.cel(
    f"self.all(m, !m.mountPath.startsWith('{RESERVED_DIR}') && !(m.mountPath in ['/', '/etc', '/etc/']))",
    f"proxy.volumeMounts: {RESERVED_DIR} and the directories above it are reserved for the sidecar's "
    "config, keys and egress files",
)
_NAMED_ITEM: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 63}},
}
_MOUNT_ITEM: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["name", "mountPath"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 63},
        "mountPath": {"type": "string", "minLength": 1, "maxLength": 4096},
    },
}


def mount_path_problem(path: str) -> str | None:
    """Why a sidecar volumeMount's path is refused (the pydantic twin of MOUNT_PATH_RULE)."""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    if (
        normal == RESERVED_DIR
        or normal.startswith(RESERVED_DIR + "/")
        or RESERVED_DIR.startswith(normal + "/")
    ):
        return MOUNT_PATH_RULE["message"]
    if normal == "/":
        return MOUNT_PATH_RULE["message"]
    return None


class Proxy(common.Model):
    """The sidecar container.

    ``env``, ``resources``, ``volumes`` and ``volumeMounts`` reach the sidecar as
    written; what they may not change: the config and key mounts (anything at or
    above /etc/llmgw, and volume names starting with llmgw-), the ports and the
    probes (not settable here at all), the command and the security context.
    """

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel("self.port != self.adminPort", "proxy.port and proxy.adminPort must differ"),
        )
    )

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Sidecar image; the operator's default when unset.",
    )
    port: Port = Field(default=8080, description="Port of the OpenAI-compatible API on 127.0.0.1.")
    admin_port: Port = Field(
        default=9090, description="Port of /healthz, /readyz and /metrics on all interfaces."
    )
    resources: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_RESOURCES),
        description="Sidecar resources (a core/v1 ResourceRequirements).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    log_level: LogLevel = Field(
        default=LogLevel.INFO, description="debug, info, warning or error; hot-reloaded."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, description="Largest request body accepted."
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Upstream tries for one request, across all of its route's targets and retries.",
    )
    env: tuple[EnvVar, ...] = Field(
        default=(),
        max_length=MAX_SIDECAR_ENV,
        description="Extra environment variables of the sidecar, e.g. OTEL_EXPORTER_OTLP_ENDPOINT or "
        "HTTPS_PROXY (values or valueFrom references).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    volumes: tuple[dict[str, Any], ...] = Field(
        default=(),
        max_length=MAX_SIDECAR_VOLUMES,
        description="Extra pod volumes (core/v1 Volume) for the sidecar's volumeMounts; names starting "
        "with llmgw- are reserved.",
        json_schema_extra={"items": _NAMED_ITEM, **common.cel_rules(VOLUME_NAME_RULE)},
    )
    volume_mounts: tuple[dict[str, Any], ...] = Field(
        default=(),
        max_length=MAX_SIDECAR_VOLUMES,
        description="Extra volumeMounts (core/v1 VolumeMount) of the sidecar, of proxy.volumes or of the "
        "template's volumes; not at or above /etc/llmgw.",
        json_schema_extra={"items": _MOUNT_ITEM, **common.cel_rules(MOUNT_PATH_RULE)},
    )

    @model_validator(mode="after")
    def _distinct_ports(self) -> Proxy:
        if self.port == self.admin_port:
            raise ValueError("proxy.port and proxy.adminPort must differ")
        return self

    @model_validator(mode="after")
    def _sidecar_extras(self) -> Proxy:
        names = [e.name for e in self.env]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"proxy.env: duplicate name {', '.join(dupes)}")
        volume_names = []
        for volume in self.volumes:
            name = volume.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError("proxy.volumes: every volume needs a name")
            if name.startswith(RESERVED_VOLUME_PREFIX):
                raise ValueError(VOLUME_NAME_RULE["message"])
            volume_names.append(name)
        dupes = sorted({n for n in volume_names if volume_names.count(n) > 1})
        if dupes:
            raise ValueError(f"proxy.volumes: duplicate name {', '.join(dupes)}")
        for mount in self.volume_mounts:
            path = mount.get("mountPath")
            if not isinstance(mount.get("name"), str) or not isinstance(path, str) or not path:
                raise ValueError("proxy.volumeMounts: every mount needs a name and a mountPath")
            problem = mount_path_problem(path)
            if problem is not None:
                raise ValueError(problem)
        return self


class Cache(common.Model):
    """Bounds of the sidecar's one in-memory response store (per pod)."""

    max_entries: int = Field(default=1000, ge=1, le=10_000_000, description="Most cached responses.")
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024 * 1024,
        description="Memory the store may hold: each cached response's key and body plus 320 bytes "
        "of overhead.",
    )


class LLMGatewaySpec(common.Model):
    """An application's pods with the LLM gateway sidecar next to each container set."""

    model_config = ConfigDict(
        json_schema_extra=common.cel_rules(
            common.cel(
                "!(has(self.replicas) && has(self.autoscaling))",
                "replicas and autoscaling are mutually exclusive",
            ),
            INJECTION_RULE,
        )
    )

    template: dict[str, Any] | None = Field(
        default=None,
        description=(
            "The application's pod template (a core/v1 PodTemplateSpec): the gateway then owns a "
            "Deployment of it. The operator adds the sidecar, its volumes and labels; the Deployment "
            "validates the rest. hostNetwork is refused, and the operator's flags may refuse privileged "
            "containers, host namespaces, hostPath volumes and ServiceAccounts outside an allow-list "
            "(see docs/security.md). Unset: injection mode, where the operator's webhook adds the "
            f"sidecar to the pods of the namespace labelled {GATEWAY_LABEL}=<gateway name>."
        ),
        json_schema_extra=TEMPLATE_SCHEMA,
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Fixed pod count (1 when neither replicas nor autoscaling is set).",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Autoscale instead of a fixed pod count."
    )
    routes: tuple[Route, ...] = Field(
        min_length=1,
        max_length=64,
        description="Model names and their targets; model names are unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["model"]},
    )
    proxy: Proxy = Field(default_factory=Proxy, description="The sidecar.")
    egress: egress_api.GatewayEgress = Field(
        default_factory=egress_api.GatewayEgress, description="How the sidecars reach providers."
    )
    cache: Cache = Field(default_factory=Cache, description="Response store bounds per pod.")

    @field_validator("template")
    @classmethod
    def _template_has_containers(cls, template: dict[str, Any] | None) -> dict[str, Any] | None:
        if template is None:
            return None
        spec = template.get("spec")
        if not isinstance(spec, dict):
            raise ValueError("template.spec.containers must list at least one container")
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            raise ValueError("template.spec.containers must list at least one container")
        names = [c.get("name") for c in containers if isinstance(c, dict)]
        names += [c.get("name") for c in spec.get("initContainers") or [] if isinstance(c, dict)]
        if SIDECAR_CONTAINER in names:
            raise ValueError(f"template.spec: the container name {SIDECAR_CONTAINER} is reserved")
        volumes = [v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)]
        taken = sorted({CONFIG_VOLUME, KEYS_VOLUME} & set(volumes))
        if taken:
            raise ValueError(f"template.spec.volumes: the name {taken[0]} is reserved")
        return template

    @model_validator(mode="after")
    def _sidecar_volumes_fit_the_template(self) -> LLMGatewaySpec:
        # Injection mode (no template): the users' pods are unknown here, so mounts name proxy.volumes.
        pod = (self.template or {}).get("spec") or {}
        template_volumes = {
            str(v.get("name")) for v in pod.get("volumes") or [] if isinstance(v, dict) and v.get("name")
        }
        extra = {v["name"] for v in self.proxy.volumes}
        clash = sorted(template_volumes & extra)
        if clash:
            raise ValueError(f"proxy.volumes: {clash[0]} is also a volume of template.spec.volumes")
        for mount in self.proxy.volume_mounts:
            if mount["name"] not in extra | template_volumes:
                raise ValueError(
                    f"proxy.volumeMounts: {mount['name']} is neither in proxy.volumes nor in "
                    "template.spec.volumes"
                )
        return self

    @model_validator(mode="after")
    def _cross_field_rules(self) -> LLMGatewaySpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("replicas and autoscaling are mutually exclusive")
        if self.template is None and (self.replicas is not None or self.autoscaling is not None):
            raise ValueError(INJECTION_RULE["message"])
        models = [r.model for r in self.routes]
        dupes = sorted({m for m in models if models.count(m) > 1})
        if dupes:
            raise ValueError(f"routes: duplicate model {', '.join(dupes)}")
        return self

    @property
    def injected(self) -> bool:
        """Injection mode: no template, so the webhook adds the sidecar to the users' own pods."""
        return self.template is None

    def policy_names(self) -> tuple[str, ...]:
        """Every ProviderPolicy the routes name, sorted, each once."""
        return tuple(sorted({t.policy for r in self.routes for t in r.targets}))


MAX_PROVIDERS = 256  # as many as one sidecar report may hold (llmgw_proxy.status.MAX_PROVIDERS)


class ProviderHealth(common.Model):
    """One provider as the gateway's ready pods report it (their ``GET /status``)."""

    name: str = Field(max_length=253, description="The provider (the ProviderPolicy's name).")
    pods_reporting: int = Field(default=0, ge=0, description="Ready pods whose report names the provider.")
    breaker_open: int = Field(default=0, ge=0, description="Pods where its circuit breaker is open.")
    half_open: int = Field(default=0, ge=0, description="Pods where its breaker is half-open (probing).")
    paused: int = Field(default=0, ge=0, description="Pods where an upstream 429 pauses it.")
    last_transition_time: str | None = Field(
        default=None, description="When the provider last turned healthy in every pod, or unhealthy in one."
    )


class ConfigRollout(common.Model):
    """Which config the gateway's ready pods run, compared with the one the operator rendered."""

    hash: str | None = Field(
        default=None, max_length=64, description="Hash of the rendered config (the sidecar's configHash)."
    )
    up_to_date: int = Field(default=0, ge=0, description="Reporting pods that run the rendered config.")
    outdated: int = Field(
        default=0,
        ge=0,
        description="Reporting pods that run another config (a reload not yet done, or refused).",
    )
    unreporting: int = Field(
        default=0, ge=0, description="Ready pods that did not answer the last poll of their /status."
    )


class InjectionRollout(common.Model):
    """The pods the webhook gave this gateway's sidecar, and which sidecar they run."""

    image: str | None = Field(default=None, max_length=512, description="The sidecar image injected now.")
    pods: int = Field(default=0, ge=0, description="Injected pods that run or will (not finished).")
    current: int = Field(default=0, ge=0, description="Of those, pods whose sidecar is the current one.")
    outdated: int = Field(
        default=0,
        ge=0,
        description="Pods injected with another image, ports or resources: `kubectl rollout restart` "
        "their workload to update them (config and keys reach them by hot reload).",
    )


class LLMGatewayStatus(common.Model):
    """Written by the operator: Ready, Reconciled and PoliciesResolved, plus pod counts.

    ProvidersHealthy, ConfigApplied, ``providers`` and ``config`` come from the
    sidecars' own reports, which the operator polls (see docs/runbook.md)."""

    observed_generation: int = Field(default=0, ge=0, description="metadata.generation last acted on.")
    replicas: int = Field(default=0, ge=0, description="Pods of the gateway's Deployment.")
    ready_replicas: int = Field(default=0, ge=0, description="Ready pods of the gateway's Deployment.")
    conditions: common.Conditions = ()
    providers: tuple[ProviderHealth, ...] = Field(
        default=(), max_length=MAX_PROVIDERS, description="Each provider's health across the ready pods."
    )
    config: ConfigRollout | None = Field(
        default=None, description="The rendered config's rollout to the pods."
    )
    injection: InjectionRollout | None = Field(
        default=None, description="Injection mode: the pods the webhook injected, counted by the poller."
    )


class LLMGateway(common.Model):
    """An LLMGateway object as read from the API server (metadata left out)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["llmgateway.io/v1alpha1"] = "llmgateway.io/v1alpha1"
    kind: Literal["LLMGateway"] = "LLMGateway"
    spec: LLMGatewaySpec
    status: LLMGatewayStatus | None = None
