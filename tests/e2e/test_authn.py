"""End to end: ServiceAccount tokens, TokenReview, the token file, impersonation and in-pod API access via kubectl."""

from __future__ import annotations

import base64
import collections.abc
import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
TOKENS = 'alice-token,alice,uid-alice,"devs,qa"\nbob-token,bob,uid-bob\n'
SA_USER = "system:serviceaccount:default:default"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """A cluster started with --token-auth-file (alice and bob)."""
    data = str(tmp_path_factory.mktemp("pk"))
    token_file = os.path.join(data, "tokens.csv")
    with open(token_file, "w") as f:
        f.write(TOKENS)
    c = cluster_mod.Cluster(os.path.join(data, "data")).start(args=["--token-auth-file", token_file])
    try:
        cluster_mod.eventually(lambda: c.kubectl("get", "sa", "default", check=False).returncode == 0,
                               what="the default ServiceAccount")
        yield c
    finally:
        c.stop()


def _with_token(cluster: cluster_mod.Cluster, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run kubectl authenticating only with a bearer token (no client certificate)."""
    with open(cluster.kubeconfig) as f:
        cfg = yaml.safe_load(f)
    cfg["users"] = [{"name": u["name"], "user": {"token": token}} for u in cfg["users"]]
    path = os.path.join(cluster.data_dir, "token-kubeconfig")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    env = dict(os.environ, KUBECONFIG=path, KUBECACHEDIR=os.path.join(cluster.data_dir, "kcache"))  # discovery shared with cluster.kubectl
    return subprocess.run([cluster_mod.kubectl_binary(), *args], capture_output=True, text=True, env=env, timeout=60)


def _review(cluster: cluster_mod.Cluster, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"token": token}
    if audiences:
        spec["audiences"] = audiences
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})
    return dict(json.loads(cluster.kubectl("create", "-f", "-", "-o", "json", input=body).stdout)["status"])


def _authenticated_as(cp: subprocess.CompletedProcess[str], user: str) -> bool:
    # Authenticated either way: the call works, or RBAC refuses it by this user's name.
    return cp.returncode == 0 or f'User "{user}" cannot' in cp.stderr


def test_create_token_then_use_it(cluster: cluster_mod.Cluster) -> None:
    """`kubectl create token default` gives a token that authenticates as the default ServiceAccount."""
    token = cluster.kubectl("create", "token", "default").stdout.strip()
    assert token.count(".") == 2
    assert _authenticated_as(_with_token(cluster, token, "get", "pods"), SA_USER)
    status = _review(cluster, token)
    assert status["authenticated"] is True
    user = status["user"]
    assert user["username"] == SA_USER
    assert user["groups"] == ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
    assert user["uid"] == cluster.json("get", "sa", "default")["metadata"]["uid"]
    assert user["extra"]["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")
    assert status["audiences"] == ["https://kubernetes.default.svc.cluster.local"]


def test_invalid_token_is_unauthorized(cluster: cluster_mod.Cluster) -> None:
    """A bad token is refused with 401, never treated as anonymous; TokenReview says why."""
    # With a cold discovery cache kubectl words the 401 of its discovery call instead (so would it against kube).
    cluster.kubectl("api-resources")
    cp = _with_token(cluster, "not-a-token", "get", "pods")
    assert cp.returncode != 0
    assert "error: You must be logged in to the server (Unauthorized)" in cp.stderr
    assert _review(cluster, "not-a-token") == {"user": {}, "error": "invalid bearer token"}


def test_create_token_flags(cluster: cluster_mod.Cluster) -> None:
    """--duration below 10 minutes is refused with kube's message; --audience scopes the token to that audience."""
    cp = cluster.kubectl("create", "token", "default", "--duration", "5m", check=False)
    assert cp.returncode != 0
    assert cp.stderr.strip() == ('error: failed to create token: TokenRequest.authentication.k8s.io "" is invalid: '
                                 "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than "
                                 "10 minutes")
    cp = cluster.kubectl("create", "token", "nosuch", check=False)
    assert 'error: failed to create token: serviceaccounts "nosuch" not found' in cp.stderr
    token = cluster.kubectl("create", "token", "default", "--audience", "vault", "--duration", "1h").stdout.strip()
    assert _review(cluster, token, ["vault"])["user"]["username"] == SA_USER
    assert _review(cluster, token)["error"].startswith('[invalid bearer token, token audiences ["vault"] is invalid')
    assert _with_token(cluster, token, "get", "pods").returncode != 0


def test_token_bound_to_a_secret_dies_with_it(cluster: cluster_mod.Cluster) -> None:
    """A token bound to a Secret stops authenticating once that Secret is deleted."""
    cluster.kubectl("create", "secret", "generic", "anchor", "--from-literal=a=b")
    token = cluster.kubectl("create", "token", "default", "--bound-object-kind", "Secret",
                            "--bound-object-name", "anchor").stdout.strip()
    cluster.kubectl("delete", "secret", "anchor")
    status = _review(cluster, token)
    assert status == {"user": {}, "error": "[invalid bearer token, service account token has been invalidated]"}
    cp = cluster.kubectl("create", "token", "default", "--bound-object-kind", "Pod", "--bound-object-name", "ghost",
                         check=False)
    assert 'error: failed to create token: pods "ghost" not found' in cp.stderr


def test_token_file_users(cluster: cluster_mod.Cluster) -> None:
    """--token-auth-file users authenticate with their uid and groups (plus system:authenticated)."""
    review = _review(cluster, "alice-token")
    assert review["user"] == {"username": "alice", "uid": "uid-alice", "groups": ["devs", "qa", "system:authenticated"]}
    assert _authenticated_as(_with_token(cluster, "bob-token", "get", "pods"), "bob")


def test_impersonation(cluster: cluster_mod.Cluster) -> None:
    """The admin may impersonate (whoami shows the target); a plain user gets kube's Forbidden."""
    out = cluster.kubectl("--as=carol", "--as-group=devs", "auth", "whoami", "-o", "json").stdout
    info = json.loads(out)["status"]["userInfo"]
    assert info == {"username": "carol", "groups": ["devs", "system:authenticated"]}
    out = cluster.kubectl("--as=system:serviceaccount:kube-system:default", "auth", "whoami", "-o", "json").stdout
    assert json.loads(out)["status"]["userInfo"]["groups"] == [
        "system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
    # bob's own discovery first: impersonating without the right fails discovery too, where kubectl (like against
    # kube) prints only "Forbidden: unknown"; with discovery cached the pods request shows the real message
    _with_token(cluster, "bob-token", "get", "pods")
    cp = _with_token(cluster, "bob-token", "--as=carol", "get", "pods")
    assert cp.returncode != 0
    assert ('Error from server (Forbidden): users "carol" is forbidden: User "bob" cannot impersonate resource '
            '"users" in API group "" at the cluster scope') in cp.stderr


def test_pod_gets_its_account_and_token_volume(cluster: cluster_mod.Cluster) -> None:
    """Admission defaults the account, mounts kube-api-access-*, and refuses a pod naming a missing account."""
    cluster.kubectl("run", "sa-shape", "--image=nginx")
    spec = cluster.json("get", "pod", "sa-shape")["spec"]
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    vol = spec["volumes"][-1]
    assert vol["name"].startswith("kube-api-access-") and vol["projected"]["defaultMode"] == 420
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": vol["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    cp = cluster.kubectl("run", "sa-ghost", "--image=nginx", "--overrides",
                         '{"spec":{"serviceAccountName":"ghost"}}', check=False)
    assert ('Error from server (Forbidden): pods "sa-ghost" is forbidden: error looking up service account '
            'default/ghost: serviceaccount "ghost" not found') in cp.stderr
    cluster.kubectl("delete", "pod", "sa-shape", "--wait=false")


def test_legacy_token_secret(cluster: cluster_mod.Cluster) -> None:
    """A service-account-token Secret is filled by the tokens controller and its token authenticates."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "legacy", "annotations": {"kubernetes.io/service-account.name": "default"}}}))
    data = cluster_mod.eventually(lambda: cluster.json("get", "secret", "legacy").get("data"), what="token filled")
    assert set(data) == {"token", "ca.crt", "namespace"}
    token = base64.b64decode(data["token"]).decode()
    assert _review(cluster, token)["user"]["username"] == SA_USER


CALLER = """
import os, ssl, urllib.error, urllib.request
d = "/var/run/secrets/kubernetes.io/serviceaccount/"
token, ns = open(d + "token").read(), open(d + "namespace").read()
ctx = ssl.create_default_context(cafile=d + "ca.crt")
url = "https://%s:%s/api/v1/namespaces/%s/pods" % (os.environ["KUBERNETES_SERVICE_HOST"],
                                                  os.environ["KUBERNETES_SERVICE_PORT"], ns)
try:
    print("STATUS", urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer " + token}),
                                           context=ctx).status)
except urllib.error.HTTPError as e:
    print("STATUS", e.code, e.read().decode())
"""


def test_pod_calls_the_api_with_its_token(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A pod reads its mounted token, namespace and ca.crt and calls the API: 200, or an RBAC 403 naming its account."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "caller"},
        "spec": {"nodeName": NODE, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "python:3.11", "command": ["python3", "-c", CALLER]}]}}))
    cluster_mod.eventually(lambda: cluster.json("get", "pod", "caller")["status"].get("phase") in ("Succeeded", "Failed"),
                           timeout=30, what="the caller pod to finish")
    out = cluster.kubectl("logs", "caller").stdout
    assert out.startswith("STATUS 200") or (out.startswith("STATUS 403") and f'User \\"{SA_USER}\\"' in out), out


def test_impersonating_groups_uids_and_accounts_needs_each_right(cluster: cluster_mod.Cluster) -> None:
    """A user allowed to impersonate users only is refused groups, uids and ServiceAccounts with kube's messages."""
    cluster.kubectl("create", "clusterrole", "impersonate-users", "--verb=impersonate", "--resource=users")
    cluster.kubectl("create", "clusterrolebinding", "bob-impersonates", "--clusterrole=impersonate-users",
                    "--user=bob")

    def as_carol() -> bool:
        cp = _with_token(cluster, "bob-token", "--as=carol", "get", "pods")
        return 'User "carol" cannot list resource "pods"' in cp.stderr
    cluster_mod.eventually(as_carol, what="bob to impersonate carol")
    cases = [
        (["--as=carol", "--as-group=admins"],
         'groups "admins" is forbidden: User "bob" cannot impersonate resource "groups" in API group "" at the '
         'cluster scope'),
        (["--as=carol", "--as-uid=123"],
         'uids.authentication.k8s.io "123" is forbidden: User "bob" cannot impersonate resource "uids" in API group '
         '"authentication.k8s.io" at the cluster scope'),
        (["--as=system:serviceaccount:default:default"],
         'serviceaccounts "default" is forbidden: User "bob" cannot impersonate resource "serviceaccounts" in API '
         'group "" in the namespace "default"'),
    ]
    for flags, message in cases:
        cp = _with_token(cluster, "bob-token", *flags, "get", "pods")
        assert cp.stderr == f"Error from server (Forbidden): {message}\n", flags
