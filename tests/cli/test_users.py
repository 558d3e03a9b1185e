"""`pocketkube user add`: argument checks and the offline path that signs with the CA in the data dir."""

from __future__ import annotations

import argparse
import base64
import io
import os
import pathlib

import pytest
import yaml
from cryptography import x509

from pocketkube.base import kubeconfig, pki
from pocketkube.cli import main, users


@pytest.mark.parametrize(("value", "ok"), [
    ("alice", True), ("alice@example.com", True), ("a.b-c_d+e", True), ("Alice1", True),
    ("", False), ("bad name", False), ("-x", False), ("a/b", False), ("system:admin", False), ("x" * 65, False),
])
def test_user_names(value: str, ok: bool) -> None:
    """NAME must be a plain, non-reserved certificate common name."""
    if ok:
        assert users.user_name(value) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            users.user_name(value)


@pytest.mark.parametrize(("value", "ok"), [
    ("dev", True), ("team:ops", True), ("system:masters", False), ("a b", False), ("", False),
])
def test_group_names(value: str, ok: bool) -> None:
    """Groups are plain names; system:masters is refused as the kube-apiserver-client signer refuses it."""
    if ok:
        assert users.group_name(value) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            users.group_name(value)


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad NAME or group is a usage error: exit code 2 and a message naming the argument."""
    for argv in (["user", "add", "bad name"], ["user", "add", "bob", "--group", "system:masters"]):
        with pytest.raises(SystemExit) as e:
            main.run(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument NAME: invalid user name 'bad name'" in err and "group system:masters is not allowed" in err


def test_no_cluster_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    """Without a cluster in the data dir the command says how to make one."""
    err = io.StringIO()
    assert main.run(["user", "add", "bob", "--data-dir", str(tmp_path)], out=io.StringIO(), err=err) == 1
    assert "no cluster in" in err.getvalue() and "pocketkube up" in err.getvalue()


def test_offline_signs_with_the_ca_and_writes_a_kubeconfig(tmp_path: pathlib.Path) -> None:
    """With the cluster stopped, the CA in the data dir signs and the kubeconfig says who the user is."""
    data_dir = str(tmp_path)
    keys = pki.ensure_pki(data_dir)
    kubeconfig.write(os.path.join(data_dir, "kubeconfig"), kubeconfig.admin_kubeconfig("https://127.0.0.1:1", keys))
    out = io.StringIO()
    code = main.run(["user", "add", "alice", "-g", "dev", "-g", "ops", "-g", "dev", "--data-dir", data_dir],
                    out=out, err=io.StringIO())
    assert code == 0
    path = os.path.join(data_dir, "users", "alice.kubeconfig")
    assert "the cluster is not running: signed directly with the cluster CA" in out.getvalue()
    assert f"kubectl --kubeconfig {path} auth whoami" in out.getvalue()
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        cfg = yaml.safe_load(f)
    assert cfg["current-context"] == "alice@pocketkube"
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"
    cert = x509.load_pem_x509_certificate(base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"]))
    assert cert.subject.rfc4514_string() == "CN=alice,O=ops,O=dev"
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(keys.ca_cert_pem))
