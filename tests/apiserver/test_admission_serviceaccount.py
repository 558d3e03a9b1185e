"""ServiceAccount admission: the kube-api-access volume, automount rules and the account lookup."""

from __future__ import annotations

import types
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.apiserver import admission_serviceaccount as sa_admission
from pocketkube.base import clock as clock_mod

MOUNT = {"name": "kube-api-access-abcde", "readOnly": True, "mountPath": sa_admission.MOUNT_PATH}


def test_mount_token_shape() -> None:
    """Every container and init container mounts kube-api-access-* read-only, the volume is projected like kube's."""
    spec: dict[str, Any] = {"initContainers": [{"name": "i"}], "containers": [{"name": "a", "volumeMounts": [
        {"name": "data", "mountPath": "/data"}]}], "volumes": [{"name": "data", "emptyDir": {}}]}
    sa_admission.mount_token(spec, suffix="abcde")
    assert spec["initContainers"][0]["volumeMounts"] == [MOUNT]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}, MOUNT]
    assert spec["volumes"][1] == {"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                       "fieldPath": "metadata.namespace"}}]}}]}}


def test_existing_mount_path_or_volume_is_respected() -> None:
    """A container already mounting the path is left alone; an existing kube-api-access volume is reused."""
    spec: dict[str, Any] = {"containers": [{"name": "a", "volumeMounts": [
        {"name": "mine", "mountPath": sa_admission.MOUNT_PATH}]}, {"name": "b"}],
        "volumes": [{"name": "kube-api-access-zzzzz", "projected": {}}]}
    sa_admission.mount_token(spec)
    assert spec["containers"][0]["volumeMounts"] == [{"name": "mine", "mountPath": sa_admission.MOUNT_PATH}]
    assert spec["containers"][1]["volumeMounts"][0]["name"] == "kube-api-access-zzzzz"
    assert len(spec["volumes"]) == 1


@pytest.mark.parametrize(("pod", "sa", "want"), [
    (None, None, True), (False, True, False), (True, False, True), (None, False, False), (None, True, True),
])
def test_should_automount(pod: bool | None, sa: bool | None, want: bool) -> None:
    """The pod's automountServiceAccountToken wins over the account's; both unset means mount."""
    spec = {} if pod is None else {"automountServiceAccountToken": pod}
    account = {} if sa is None else {"automountServiceAccountToken": sa}
    assert sa_admission.should_automount(account, spec) is want


class _Objects:
    def __init__(self, accounts: dict[str, dict[str, Any]]) -> None:
        self.accounts = accounts

    async def get_or_none(self, res: Any, namespace: str, name: str) -> dict[str, Any] | None:
        return self.accounts.get(name)

    get_shared = get_or_none


def _call() -> Any:
    return types.SimpleNamespace(res=types.SimpleNamespace(group="", kind="Pod"),
                                 info=types.SimpleNamespace(namespace="ns", subresource=""))


def _server(accounts: dict[str, dict[str, Any]]) -> Any:
    return types.SimpleNamespace(registry=types.SimpleNamespace(get=lambda *a: "serviceaccounts"),
                                 objects=_Objects(accounts), clock=clock_mod.Clock())


async def test_admit_defaults_account_and_copies_pull_secrets() -> None:
    """A pod without an account gets "default" (both spellings), its token volume and the account's pull secrets."""
    pod: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    server = _server({"default": {"imagePullSecrets": [{"name": "reg"}]}})
    await sa_admission.admit(server, _call(), pod, None, "CREATE")
    spec = pod["spec"]
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    assert spec["volumes"][0]["name"].startswith("kube-api-access-")
    assert spec["imagePullSecrets"] == [{"name": "reg"}]


async def test_admit_refuses_a_missing_account() -> None:
    """A pod naming an account that does not exist is forbidden with kube's message."""
    pod: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"serviceAccountName": "ghost", "containers": []}}
    with pytest.raises(errors.Forbidden) as e:
        await sa_admission.admit(_server({}), _call(), pod, None, "CREATE")
    assert e.value.message == ('pods "p" is forbidden: error looking up service account ns/ghost: '
                               'serviceaccount "ghost" not found')
