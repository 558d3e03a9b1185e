"""The API server's CSR strategies and admission: requester, subresource rules, approve/sign permissions."""

from __future__ import annotations

import asyncio
import base64
import datetime
import types
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.apiserver import context, csr, rbac
from tests.api.test_validation_certificates import make_csr_pem

NOW = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
APPROVED = {"type": "Approved", "status": "True", "reason": "KubectlApprove", "lastUpdateTime": "2030-01-01T00:00:00Z",
            "lastTransitionTime": "2030-01-01T00:00:00Z"}


def stored(**status: Any) -> dict[str, Any]:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "c", "uid": "u1", "creationTimestamp": "2030-01-01T00:00:00Z",
                         "resourceVersion": "7"},
            "spec": {"request": "UkVR", "signerName": "example.com/s", "usages": ["client auth"],
                     "username": "alice"},
            "status": dict(status)}


def test_requester_is_stamped_from_the_user() -> None:
    """Whatever a client sends in spec.username/groups/uid/extra is replaced by who sent it."""
    obj: dict[str, Any] = {"spec": {"username": "root", "groups": ["system:masters"], "uid": "x", "extra": {"a": ["b"]}}}
    csr.stamp_requester(obj, context.User("bob", ("dev", "system:authenticated"), uid="42"))
    assert obj["spec"] == {"username": "bob", "uid": "42", "groups": ["dev", "system:authenticated"]}


def test_main_resource_update_keeps_spec_and_status() -> None:
    """PUT on the object itself changes metadata only."""
    old = stored(conditions=[APPROVED])
    new = stored()
    new["spec"]["signerName"] = "evil.com/x"
    new["metadata"]["labels"] = {"a": "b"}
    csr.prepare_update(new, old, subresource="")
    assert new["spec"] == old["spec"] and new["status"] == old["status"]
    assert new["metadata"]["labels"] == {"a": "b"}


def test_approval_changes_only_conditions() -> None:
    """/approval takes the conditions (status defaulted to True) and nothing else of status or spec."""
    old = stored(certificate="Q0VSVA==")
    new = stored(certificate="", conditions=[{"type": "Approved", "reason": "R"}])
    new["spec"]["usages"] = ["server auth"]
    csr.prepare_update(new, old, subresource="approval")
    assert new["status"] == {"certificate": "Q0VSVA==", "conditions": [{"type": "Approved", "reason": "R",
                                                                         "status": "True"}]}
    assert new["spec"]["usages"] == ["client auth"]


def test_status_preserves_existing_approval_conditions() -> None:
    """/status may not rewrite an Approved condition: the stored one is kept."""
    old = stored(conditions=[APPROVED])
    new = stored(conditions=[{**APPROVED, "reason": "Changed"}], certificate="Q0VSVA==")
    csr.prepare_update(new, old, subresource="status")
    assert new["status"] == {"conditions": [APPROVED], "certificate": "Q0VSVA=="}
    assert csr.status_update_errors(new, old) == []
    added = stored(conditions=[{"type": "Denied", "status": "True"}])
    assert [e.text() for e in csr.status_update_errors(added, stored())] == [
        'status.conditions: Forbidden: updates may not add a condition of type "Denied"']


@pytest.mark.parametrize(("old_conditions", "new_condition", "transition"), [
    ([], {"type": "Approved", "status": "True"}, "2030-01-02T03:04:05Z"),
    ([{"type": "Ready", "status": "True", "lastTransitionTime": "2029-01-01T00:00:00Z"}],
     {"type": "Ready", "status": "True"}, "2029-01-01T00:00:00Z"),
    ([{"type": "Ready", "status": "False", "lastTransitionTime": "2029-01-01T00:00:00Z"}],
     {"type": "Ready", "status": "True"}, "2030-01-02T03:04:05Z"),
])
def test_condition_timestamps(old_conditions: list[dict[str, Any]], new_condition: dict[str, Any],
                              transition: str) -> None:
    """lastUpdateTime defaults to now; lastTransitionTime is kept while a condition's status is unchanged."""
    new = stored(conditions=[dict(new_condition)])
    csr.populate_condition_timestamps(new, stored(conditions=old_conditions), NOW)
    c = new["status"]["conditions"][0]
    assert c["lastUpdateTime"] == "2030-01-02T03:04:05Z" and c["lastTransitionTime"] == transition


class FakeAuthorizer:
    """Allows exactly the (verb, signer name) pairs it is given."""

    def __init__(self, *allowed: tuple[str, str]) -> None:
        self.allowed = set(allowed)
        self.asked: list[tuple[str, str]] = []

    async def decide(self, server: Any, user: context.User, attrs: rbac.Attributes) -> tuple[bool, str]:
        assert (attrs.group, attrs.resource) == ("certificates.k8s.io", "signers")
        self.asked.append((attrs.verb, attrs.name))
        return (attrs.verb, attrs.name) in self.allowed, ""


def _call(sub: str, user: str = "bob") -> Any:
    res = types.SimpleNamespace(group="certificates.k8s.io", kind="CertificateSigningRequest")
    info = types.SimpleNamespace(subresource=sub, name="c")
    return types.SimpleNamespace(res=res, info=info, user=context.User(user, ("system:authenticated",)))


def _server(authz: Any) -> Any:
    return types.SimpleNamespace(authorizer=authz, clock=types.SimpleNamespace(now=lambda: NOW))


def test_approve_needs_permission_on_the_signer() -> None:
    """Approving asks `approve` on signers/<name>, then on signers/<domain>/*, and refuses with kube's message."""
    authz = FakeAuthorizer()
    new = stored(conditions=[{"type": "Approved", "status": "True"}])
    with pytest.raises(errors.Forbidden) as e:
        asyncio.run(csr.admit(_server(authz), _call("approval"), new, stored(), "UPDATE"))
    assert e.value.message == ('certificatesigningrequests.certificates.k8s.io "c" is forbidden: user not permitted '
                               'to approve requests with signerName "example.com/s"')
    assert authz.asked == [("approve", "example.com/s"), ("approve", "example.com/*")]
    ok = FakeAuthorizer(("approve", "example.com/*"))
    asyncio.run(csr.admit(_server(ok), _call("approval"), new, stored(), "UPDATE"))
    assert new["status"]["conditions"][0]["lastUpdateTime"] == "2030-01-02T03:04:05Z"


def test_writing_a_certificate_needs_sign() -> None:
    """A /status write that sets the certificate needs `sign` on the signer; one changing nothing does not."""
    new, old = stored(certificate="Q0VSVA=="), stored()
    with pytest.raises(errors.Forbidden, match='not permitted to sign requests with signerName "example.com/s"'):
        asyncio.run(csr.admit(_server(FakeAuthorizer()), _call("status"), new, old, "UPDATE"))
    asyncio.run(csr.admit(_server(FakeAuthorizer()), _call("status"), stored(), stored(), "UPDATE"))


def test_kube_apiserver_client_refuses_system_masters() -> None:
    """CertificateSubjectRestriction: no system:masters in requests to the kube-apiserver-client signer."""
    obj = stored()
    obj["spec"].update(signerName=csr.KUBE_APISERVER_CLIENT,
                       request=base64.b64encode(make_csr_pem("root", ("system:masters",))).decode())
    with pytest.raises(errors.Forbidden) as e:
        asyncio.run(csr.admit(_server(None), _call(""), obj, None, "CREATE"))
    assert e.value.message == ('certificatesigningrequests.certificates.k8s.io "c" is forbidden: use of '
                               "kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed")
    obj["spec"]["signerName"] = "example.com/s"
    asyncio.run(csr.admit(_server(None), _call(""), obj, None, "CREATE"))
