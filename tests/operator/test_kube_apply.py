"""When the apply layer writes a child: only if the live object lacks, differs from, or would lose a field."""

from __future__ import annotations

from typing import Any

import pytest

from llmgw_operator import kube

SECRET = {
    "kind": "Secret",
    "metadata": {"name": "gw-provider-keys", "namespace": "ns"},
    "data": {"a": "eA=="},
}
# What the API server records for the operator's earlier apply of a Secret with keys a and b.
OWNS_A_AND_B: dict[str, Any] = {"f:data": {"f:a": {}, "f:b": {}}, "f:type": {}}


def live_secret(data: dict[str, str], owned: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "gw-provider-keys",
            "namespace": "ns",
            "managedFields": [
                {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {"f:c": {}}}},
                {"manager": kube.FIELD_MANAGER, "operation": "Apply", "fieldsV1": owned},
            ],
        },
        "data": data,
    }


class RecordingClient(kube.Client):
    def __init__(self) -> None:
        super().__init__(connect=None)
        self.calls: list[tuple[str, str]] = []

    async def _call(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, path))
        return {}


@pytest.mark.parametrize(
    ("owned", "desired", "drops"),
    [
        pytest.param({"f:data": {"f:a": {}}}, {"data": {"a": "x"}}, False, id="same-fields"),
        pytest.param(OWNS_A_AND_B, {"data": {"a": "x"}, "type": "Opaque"}, True, id="a-key-removed"),
        pytest.param(
            {"f:spec": {"f:replicas": {}}}, {"spec": {"template": {}}}, True, id="replicas-released"
        ),
        pytest.param(
            {"f:spec": {"f:containers": {'k:{"name":"a"}': {"f:image": {}}}}},
            {"spec": {"containers": []}},
            False,
            id="lists-are-left-to-contains",
        ),
        pytest.param({}, {"data": {"a": "x"}}, False, id="never-applied"),
    ],
)
def test_finds_fields_an_apply_would_drop(
    owned: dict[str, Any], desired: dict[str, Any], drops: bool
) -> None:
    assert kube.drops_owned_fields(owned, desired) is drops


async def test_does_not_write_a_child_the_live_object_already_holds() -> None:
    client = RecordingClient()
    live = live_secret({"a": "eA=="}, {"f:data": {"f:a": {}}})
    assert await client.apply(SECRET, live) is False
    assert client.calls == []
    assert client.writes == 0


async def test_does_not_write_an_empty_map_the_server_omits() -> None:
    client = RecordingClient()
    # A gateway whose policies need no key: its keys Secret is applied with no entries, and
    # the API server stores it without a data field at all.
    live = live_secret({}, {})
    del live["data"]
    assert await client.apply({**SECRET, "data": {}}, live) is False
    assert client.calls == []


async def test_writes_a_child_whose_earlier_apply_held_a_field_it_no_longer_has() -> None:
    client = RecordingClient()
    # The live object holds every desired field; only ownership shows b must go.
    live = live_secret({"a": "eA==", "b": "eQ==", "c": "eg=="}, OWNS_A_AND_B)
    assert await client.apply(SECRET, live) is True
    assert client.calls == [("PATCH", "/api/v1/namespaces/ns/secrets/gw-provider-keys")]
    assert client.writes == 1


async def test_fields_another_manager_owns_do_not_force_a_write() -> None:
    client = RecordingClient()
    live = live_secret({"a": "eA==", "c": "eg=="}, {"f:data": {"f:a": {}}})
    assert await client.apply(SECRET, live) is False
