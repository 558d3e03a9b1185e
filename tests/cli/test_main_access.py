"""`pocketkube up` flags for authorization mode, admission plugins and in-flight limits, checked as kube checks them."""

from __future__ import annotations

import pytest

from pocketkube.cli import main
from tests.cli.test_main import _run, stub  # noqa: F401 - stub is a fixture used by name


def test_access_flags_reach_the_cluster(stub, tmp_path):  # noqa: F811
    """The authorization mode, admission plugin lists and in-flight limits are passed to the cluster settings."""
    code, _, err = _run("up", "--data-dir", str(tmp_path / "d"), "--authorization-mode=AlwaysAllow",
                        "--disable-admission-plugins=NamespaceLifecycle,ResourceQuota",
                        "--max-requests-inflight", "10", "--max-mutating-requests-inflight=5")
    assert code == 0, err
    rest = stub.settings.rest
    assert rest["authorization_mode"] == ("AlwaysAllow",)
    assert rest["disable_admission_plugins"] == ("NamespaceLifecycle", "ResourceQuota")
    assert rest["enable_admission_plugins"] == ()
    assert (rest["max_requests_inflight"], rest["max_mutating_requests_inflight"]) == (10, 5)


def test_access_defaults_are_kube_apiserver_defaults(stub, tmp_path):  # noqa: F811
    """Without the flags the cluster keeps its Node,RBAC default and gets kube's 400 + 200 in-flight limits."""
    code, _, err = _run("up", "--data-dir", str(tmp_path / "d"))
    assert code == 0, err
    rest = stub.settings.rest
    assert "authorization_mode" not in rest
    assert (rest["max_requests_inflight"], rest["max_mutating_requests_inflight"]) == (400, 200)


@pytest.mark.parametrize(("args", "message"), [
    (["--authorization-mode=Magic"], 'authorization-mode "Magic" is not a valid mode'),
    (["--authorization-mode=RBAC,RBAC"], 'authorization-mode "RBAC" has mode specified more than once'),
    (["--authorization-mode="], "at least one authorization-mode must be passed"),
    (["--authorization-mode=Webhook"], "authorization-mode Webhook is not supported by pocketkube"),
    (["--max-requests-inflight=lots"], "expected a whole number, not 'lots'"),
])
def test_bad_authorization_flags_are_usage_errors(stub, tmp_path, args, message, capsys):  # noqa: F811
    """An invalid --authorization-mode or a non-numeric limit stops with exit 2 and kube's message."""
    with pytest.raises(SystemExit) as info:
        main.run(["up", "--data-dir", str(tmp_path), *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--enable-admission-plugins=Nope"], 'enable-admission-plugins plugin "Nope" is unknown'),
    (["--disable-admission-plugins=Nope"], 'disable-admission-plugins plugin "Nope" is unknown'),
    (["--enable-admission-plugins=Priority", "--disable-admission-plugins=Priority"],
     "[Priority] in enable-admission-plugins and disable-admission-plugins overlapped"),
    (["--enable-admission-plugins=AlwaysPullImages"], "AlwaysPullImages are not implemented by pocketkube"),
    (["--max-requests-inflight=-1"], "--max-requests-inflight can not be negative value"),
    (["--max-mutating-requests-inflight=-3"], "--max-mutating-requests-inflight can not be negative value"),
    (["--max-requests-inflight=0", "--max-mutating-requests-inflight=0"],
     "invalid configuration: MaxRequestsInFlight=0 and MaxMutatingRequestsInFlight=0; they must add up to "
     "something positive"),
])
def test_bad_admission_and_inflight_flags_fail_before_start(stub, tmp_path, args, message):  # noqa: F811
    """Unknown or conflicting plugins and impossible limits fail with one line and exit 1, before any start."""
    code, _, err = _run("up", "--data-dir", str(tmp_path / "d"), *args)
    assert code == 1
    assert err.strip() == f"pocketkube: error: {message}" or message in err
    assert stub.settings is None
