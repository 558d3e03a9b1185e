"""RBAC end to end with the real kubectl: a second user, Roles and bindings, can-i, escalation, aggregation."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from typing import Any

import pytest

from pocketkube.base import kubeconfig, pki
from tests.e2e import cluster as cluster_mod
from tests.e2e import http

NS_ROLE = "Error from server (Forbidden): {res} is forbidden: User \"alice\" cannot {verb} resource \"{res}\" " \
          "in API group \"\" in the namespace \"default\"\n"
PUBLIC = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
DISCOVERY = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
             "/version", "/version/"]

ALICE_LIST = """\
Resources                                       Non-Resource URLs   Resource Names   Verbs
selfsubjectreviews.authentication.k8s.io        []                  []               [create]
selfsubjectaccessreviews.authorization.k8s.io   []                  []               [create]
selfsubjectrulesreviews.authorization.k8s.io    []                  []               [create]
configmaps                                      []                  []               [get list watch]
                                                [/api/*]            []               [get]
                                                [/api]              []               [get]
                                                [/apis/*]           []               [get]
                                                [/apis]             []               [get]
                                                [/healthz]          []               [get]
                                                [/healthz]          []               [get]
                                                [/livez]            []               [get]
                                                [/livez]            []               [get]
                                                [/openapi/*]        []               [get]
                                                [/openapi]          []               [get]
                                                [/readyz]           []               [get]
                                                [/readyz]           []               [get]
                                                [/version/]         []               [get]
                                                [/version/]         []               [get]
                                                [/version]          []               [get]
                                                [/version]          []               [get]
"""


def _kubeconfig(c: cluster_mod.Cluster, user: str, path: str) -> str:
    """A kubeconfig for `user` with a client certificate from the cluster's CA."""
    keys = pki.load(c.data_dir)
    cfg = kubeconfig.admin_kubeconfig(c.url, keys)
    cert, key = pki.issue_client_cert(keys, user)
    cfg["users"][0]["user"] = {"client-certificate-data": base64.b64encode(cert).decode(),
                               "client-key-data": base64.b64encode(key).decode()}
    kubeconfig.write(path, cfg)
    return path


@pytest.fixture(scope="module")
def alice(cluster: cluster_mod.Cluster) -> str:
    """A kubeconfig for user alice (no groups but system:authenticated)."""
    return _kubeconfig(cluster, "alice", os.path.join(cluster.data_dir, "alice.kubeconfig"))


def as_alice(cluster: cluster_mod.Cluster, alice: str, *args: str, check: bool = True,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run kubectl as alice."""
    return cluster.kubectl(f"--kubeconfig={alice}", *args, check=check, input=input)


def test_new_user_is_denied_with_kube_message(cluster: cluster_mod.Cluster, alice: str) -> None:
    """A user without bindings is who they are, and listing pods is refused with kube's exact Forbidden text."""
    assert "alice" in as_alice(cluster, alice, "auth", "whoami").stdout
    cp = as_alice(cluster, alice, "get", "pods", check=False)
    assert cp.returncode == 1
    assert cp.stderr == NS_ROLE.format(res="pods", verb="list")


def test_role_reads_configmaps_not_secrets(cluster: cluster_mod.Cluster, alice: str) -> None:
    """A Role binding get/list/watch on ConfigMaps lets alice read them but not Secrets, and can-i agrees."""
    cluster.kubectl("create", "role", "cm-reader", "--verb=get,list,watch", "--resource=configmaps")
    cluster.kubectl("create", "rolebinding", "alice-cm", "--role=cm-reader", "--user=alice")
    cluster.kubectl("create", "configmap", "settings", "--from-literal=a=b")
    assert "settings" in as_alice(cluster, alice, "get", "configmaps").stdout
    assert as_alice(cluster, alice, "auth", "can-i", "list", "configmaps").stdout == "yes\n"
    cp = as_alice(cluster, alice, "auth", "can-i", "get", "secrets", check=False)
    assert (cp.returncode, cp.stdout) == (1, "no\n")
    cp = as_alice(cluster, alice, "get", "secrets", check=False)
    assert cp.stderr == NS_ROLE.format(res="secrets", verb="list")
    assert as_alice(cluster, alice, "auth", "can-i", "--list").stdout == ALICE_LIST


def test_admin_can_i_list(cluster: cluster_mod.Cluster) -> None:
    """cluster-admin's rules list everything first, like a real cluster's `kubectl auth can-i --list`."""
    lines = cluster.kubectl("auth", "can-i", "--list").stdout.splitlines()
    assert lines[1].split() == ["*.*", "[]", "[]", "[*]"]
    assert lines[2].split() == ["[*]", "[]", "[*]"]


def test_access_review_reason(cluster: cluster_mod.Cluster) -> None:
    """SubjectAccessReview answers with the binding that allowed the request, as kube's RBAC authorizer words it."""
    attrs = {"verb": "get", "resource": "configmaps", "namespace": "default"}
    review: dict[str, Any] = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                              "spec": {"user": "alice", "resourceAttributes": attrs}}
    out = json.loads(cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert out["status"] == {"allowed": True,
                             "reason": 'RBAC: allowed by RoleBinding "alice-cm/default" of Role "cm-reader" to User "alice"'}
    attrs["resource"] = "secrets"
    out = json.loads(cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout)
    assert out["status"] == {"allowed": False}


def test_escalation_is_refused(cluster: cluster_mod.Cluster, alice: str) -> None:
    """alice may write Roles and RoleBindings but cannot grant what she does not hold."""
    cluster.kubectl("create", "role", "rbac-writer", "--verb=create,get,list",
                    "--resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io")
    cluster.kubectl("create", "rolebinding", "alice-rbac", "--role=rbac-writer", "--user=alice")
    cp = as_alice(cluster, alice, "create", "role", "secret-reader", "--verb=get", "--resource=secrets", check=False)
    assert cp.returncode == 1
    assert cp.stderr == (
        'Error from server (Forbidden): roles.rbac.authorization.k8s.io "secret-reader" is forbidden: user "alice" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}\n')
    # What she holds she may hand on.
    as_alice(cluster, alice, "create", "role", "cm-too", "--verb=get", "--resource=configmaps")
    as_alice(cluster, alice, "create", "rolebinding", "bob-cm", "--role=cm-reader", "--user=bob")
    cp = as_alice(cluster, alice, "create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", check=False)
    assert cp.returncode == 1
    assert 'rolebindings.rbac.authorization.k8s.io "alice-view" is forbidden: user "alice"' in cp.stderr
    assert '{APIGroups:[""], Resources:["pods"], Verbs:["get" "list" "watch"]}' in cp.stderr


def test_view_binding_grants_view(cluster: cluster_mod.Cluster, alice: str) -> None:
    """`kubectl create rolebinding --clusterrole=view` by an admin gives the aggregated view role's reads only."""
    cluster.kubectl("create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice")
    as_alice(cluster, alice, "get", "pods")
    assert as_alice(cluster, alice, "auth", "can-i", "list", "deployments.apps").stdout == "yes\n"
    cp = as_alice(cluster, alice, "auth", "can-i", "create", "deployments.apps", check=False)
    assert cp.stdout == "no\n"
    cp = as_alice(cluster, alice, "get", "pods", "-n", "kube-system", check=False)
    assert 'cannot list resource "pods" in API group "" in the namespace "kube-system"' in cp.stderr


def test_aggregation_fills_view(cluster: cluster_mod.Cluster) -> None:
    """A ClusterRole labelled aggregate-to-view adds its rules to view (and so to edit and admin)."""
    cluster.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]}))
    want = {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}
    for role in ("view", "edit", "admin"):
        def aggregated(r: str = role) -> bool:
            return want in (cluster.json("get", "clusterrole", r).get("rules") or [])

        cluster_mod.eventually(aggregated, what=f"{role} to aggregate widgets-view")


def test_anonymous_gets_public_info_only(cluster: cluster_mod.Cluster) -> None:
    """Unauthenticated callers read /healthz and /version but not the API, with kube's Forbidden Status."""
    raw = http.Raw(cluster.kubeconfig)
    assert raw.request("GET", "/healthz", anonymous=True)[0] == 200
    assert raw.request("GET", "/version", anonymous=True)[0] == 200
    for path in ("/livez", "/readyz", "/version/"):
        assert raw.request("GET", path, anonymous=True)[0] == 200, path
    # only the exact public paths: system:public-info-viewer has no wildcards, and the issuer documents are not public
    for path in ("/livez/ping", "/metrics", "/.well-known/openid-configuration"):
        code, _, body = raw.request("GET", path, anonymous=True)
        assert (code, body["message"]) == (403, f'forbidden: User "system:anonymous" cannot get path "{path}"')
    code, _, body = raw.request("GET", "/api", anonymous=True)
    assert (code, body["message"], body["details"]) == (
        403, 'forbidden: User "system:anonymous" cannot get path "/api"', {})
    code, _, body = raw.request("GET", "/api/v1/namespaces/default/pods/web/log", anonymous=True)
    assert (code, body["message"], body["details"]) == (
        403, 'pods "web" is forbidden: User "system:anonymous" cannot get resource "pods/log" in API group "" '
             'in the namespace "default"', {"name": "web", "kind": "pods"})


def test_default_policy_is_installed(cluster: cluster_mod.Cluster) -> None:
    """The default roles and bindings exist with kube's labels, and the discovery roles have kube's URLs."""
    roles = cluster.json("get", "clusterroles", "-l", "kubernetes.io/bootstrapping=rbac-defaults")["items"]
    names = {r["metadata"]["name"] for r in roles}
    assert {"cluster-admin", "admin", "edit", "view", "system:basic-user", "system:node",
            "system:controller:deployment-controller"} <= names
    by_name = {r["metadata"]["name"]: r for r in roles}
    assert by_name["system:public-info-viewer"]["rules"] == [{"verbs": ["get"], "nonResourceURLs": PUBLIC}]
    assert by_name["system:discovery"]["rules"] == [{"verbs": ["get"], "nonResourceURLs": DISCOVERY}]
    binding = cluster.json("get", "clusterrolebinding", "cluster-admin")
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]


SA_DISCOVERY = ["/.well-known/openid-configuration", "/openid/v1/jwks"]


def test_service_account_can_i_list(cluster: cluster_mod.Cluster) -> None:
    """The issue's `can-i --list --as=system:serviceaccount:prod:app`: basic rules first, then what a binding adds."""
    cluster.kubectl("create", "namespace", "prod")
    cluster.kubectl("-n", "prod", "create", "serviceaccount", "app")
    args = ("auth", "can-i", "--list", "--as=system:serviceaccount:prod:app", "-n", "prod")
    rows = [line.split() for line in cluster.kubectl(*args).stdout.splitlines()]
    assert rows[0] == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    assert [r[0] for r in rows[1:4]] == ["selfsubjectreviews.authentication.k8s.io",
                                         "selfsubjectaccessreviews.authorization.k8s.io",
                                         "selfsubjectrulesreviews.authorization.k8s.io"]
    # system:serviceaccounts also reads the issuer discovery documents (system:service-account-issuer-discovery)
    urls = sorted({r[0][1:-1] for r in rows[4:]})
    assert urls == sorted(set(DISCOVERY + SA_DISCOVERY)), urls
    cluster.kubectl("-n", "prod", "create", "rolebinding", "app-view", "--clusterrole=view",
                    "--serviceaccount=prod:app")

    def granted() -> dict[str, str]:
        out = cluster.kubectl(*args).stdout.splitlines()[1:]
        rows = {line.split()[0]: line.split("]", 2)[-1].strip() for line in out if not line.startswith(" ")}
        return rows if "configmaps" in rows else {}
    found = cluster_mod.eventually(granted, what="view rules for prod:app")
    assert found["configmaps"] == found["pods/log"] == "[get list watch]"
    assert "secrets" not in found
    no = cluster.kubectl("auth", "can-i", "get", "secrets", "-n", "prod", "--as=system:serviceaccount:prod:app",
                         check=False)
    assert (no.returncode, no.stdout) == (1, "no\n")


def _lsar(cluster: cluster_mod.Cluster, ns: str, attrs: dict[str, str]) -> subprocess.CompletedProcess[str]:
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
            "metadata": {"namespace": ns},
            "spec": {"user": "system:serviceaccount:prod:app", "groups": ["system:serviceaccounts"],
                     "resourceAttributes": attrs}}
    return cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(body), check=False)


def test_local_subject_access_review(cluster: cluster_mod.Cluster) -> None:
    """A LocalSubjectAccessReview answers in its namespace with RBAC's reason and refuses another namespace (422)."""
    if cluster.kubectl("get", "rolebinding", "app-view", "-n", "prod", check=False).returncode != 0:
        cluster.kubectl("create", "namespace", "prod", check=False)
        cluster.kubectl("-n", "prod", "create", "serviceaccount", "app", check=False)
        cluster.kubectl("-n", "prod", "create", "rolebinding", "app-view", "--clusterrole=view",
                        "--serviceaccount=prod:app")

    def allowed() -> dict[str, Any]:
        cp = _lsar(cluster, "prod", {"namespace": "prod", "verb": "list", "resource": "pods"})
        status = dict(json.loads(cp.stdout)["status"]) if cp.returncode == 0 else {}
        return status if status.get("allowed") else {}
    status = cluster_mod.eventually(allowed, what="the review to allow")
    assert status == {"allowed": True, "reason": 'RBAC: allowed by RoleBinding "app-view/prod" of ClusterRole "view" '
                                                 'to ServiceAccount "app/prod"'}
    denied = json.loads(_lsar(cluster, "prod", {"namespace": "prod", "verb": "get", "resource": "secrets"}).stdout)
    assert denied["status"] == {"allowed": False}
    cp = _lsar(cluster, "prod", {"namespace": "other", "verb": "list", "resource": "pods"})
    assert cp.returncode == 1
    assert cp.stderr == ('The LocalSubjectAccessReview "" is invalid: spec.resourceAttributes.namespace: Invalid value: '
                         '"other": must match metadata.namespace\n')


@pytest.mark.parametrize(("user", "groups", "can_i", "answer"), [
    ("system:kube-scheduler", [], ["create", "pods", "--subresource=binding"], "yes"),
    ("system:kube-scheduler", [], ["get", "secrets", "-n", "kube-system"], "no"),
    ("system:kube-scheduler", [], ["delete", "nodes"], "no"),
    ("system:kube-controller-manager", [], ["create", "clusterrolebindings"], "no"),
    ("system:kube-controller-manager", [], ["impersonate", "users"], "no"),
    ("system:node:n1", ["system:nodes"], ["list", "secrets", "-n", "default"], "no"),
    ("system:node:n1", ["system:nodes"], ["create", "deployments", "-n", "default"], "no"),
    ("system:node:n1", ["system:nodes"], ["update", "nodes/n1", "--subresource=status"], "yes"),
])
def test_components_hold_least_privilege(cluster: cluster_mod.Cluster, user: str, groups: list[str],
                                         can_i: list[str], answer: str) -> None:
    """The scheduler, controller manager and kubelets get their own narrow rights, as kube's default policy gives."""
    as_groups = [f"--as-group={g}" for g in groups]
    cp = cluster.kubectl("auth", "can-i", *can_i, f"--as={user}", *as_groups, check=False)
    assert cp.stdout.strip() == answer, (cp.stdout, cp.stderr)
