"""The custom resources' models: the operator validates with them and the CRDs are generated from them."""

from llmgw_operator.api import common, crd, gateway, policy, structural
from llmgw_operator.api.common import GROUP, VERSION, Condition, ConditionStatus
from llmgw_operator.api.gateway import LLMGateway, LLMGatewaySpec, LLMGatewayStatus
from llmgw_operator.api.policy import ProviderPolicy, ProviderPolicySpec, ProviderPolicyStatus

__all__ = [
    "GROUP",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "LLMGateway",
    "LLMGatewaySpec",
    "LLMGatewayStatus",
    "ProviderPolicy",
    "ProviderPolicySpec",
    "ProviderPolicyStatus",
    "common",
    "crd",
    "gateway",
    "policy",
    "structural",
]
