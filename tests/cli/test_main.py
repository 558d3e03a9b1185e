"""Specification of the `pocketkube` command line (the cluster itself is replaced by a stub)."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import stat
import subprocess
import sys
import types

import pytest
import yaml

import pocketkube
from pocketkube.base import kubeconfig, pki
from pocketkube.cli import main


@dataclasses.dataclass
class Info:
    url: str
    port: int


class StubCluster:
    """Stands in for pocketkube.cluster: records settings, makes the PKI, reports ready or fails."""

    def __init__(self, *, fail: BaseException | None = None, port: int = 43210, before_ready: bool = False):
        self.fail = fail
        self.port = port
        self.before_ready = before_ready
        self.settings = None
        self.ready_calls = 0

    class Settings:
        """The real Settings' required fields; every other setting is kept as given."""

        def __init__(self, *, data_dir: str, host: str, port: int, **rest: object) -> None:
            self.data_dir, self.host, self.port = data_dir, host, port
            self.nodes, self.virtual_nodes, self.zones = rest.pop("nodes", 0), rest.pop("virtual_nodes", 0), rest.pop("zones", None)
            self.rest = rest

        def __eq__(self, other: object) -> bool:
            """Equal when the required fields and node counts match (other settings are the CLI's defaults)."""
            return isinstance(other, StubCluster.Settings) and (
                self.data_dir, self.host, self.port, self.nodes, self.virtual_nodes, self.zones) == (
                other.data_dir, other.host, other.port, other.nodes, other.virtual_nodes, other.zones)

    async def run(self, settings, *, on_ready):
        self.settings = settings
        if self.fail is not None and self.before_ready:
            raise self.fail
        pki.ensure_pki(settings.data_dir, hosts=[settings.host])
        port = settings.port or self.port
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        on_ready(Info(url=f"https://{host}:{port}", port=port))
        self.ready_calls += 1
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def stub(monkeypatch, tmp_path):
    """Install a StubCluster as pocketkube.cluster and isolate HOME and the environment."""
    cluster = StubCluster()
    module = types.ModuleType("pocketkube.cluster")
    module.Settings = StubCluster.Settings  # type: ignore[attr-defined]
    module.run = lambda settings, *, on_ready: cluster.run(settings, on_ready=on_ready)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pocketkube.cluster", module)
    monkeypatch.setattr(pocketkube, "cluster", module, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv(main.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(main.DEBUG_ENV, raising=False)
    return cluster


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main.run(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_up_writes_kubeconfig_with_actual_port(stub, tmp_path):
    """On ready, `up` writes DATA_DIR/kubeconfig (0600) pointing at the port the server really uses."""
    data = tmp_path / "data"
    code, out, err = _run("up", "--data-dir", str(data), "--port", "0")
    assert code == 0, err
    assert stub.settings == StubCluster.Settings(data_dir=str(data), host="127.0.0.1", port=0)
    path = data / "kubeconfig"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = yaml.safe_load(path.read_text())
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:43210"
    assert cfg == kubeconfig.admin_kubeconfig("https://127.0.0.1:43210", pki.load(str(data)))


def test_up_prints_how_to_use_it(stub, tmp_path):
    """The ready message gives the export line, a kubectl command and the startup time."""
    data = tmp_path / "data"
    code, out, _ = _run("up", "--data-dir", str(data), "--port", "7443")
    assert code == 0
    assert "https://127.0.0.1:7443" in out
    assert f"export KUBECONFIG={data}/kubeconfig\n" in out
    assert "kubectl get ns\n" in out
    assert "ready in " in out and "s)" in out


def test_up_defaults(stub, tmp_path):
    """Without flags `up` uses ~/.pocketkube, 127.0.0.1 and port 6443."""
    code, _, err = _run("up")
    assert code == 0, err
    assert stub.settings == StubCluster.Settings(
        data_dir=str(tmp_path / "home" / ".pocketkube"), host="127.0.0.1", port=6443
    )


def test_data_dir_from_environment(stub, tmp_path, monkeypatch):
    """POCKETKUBE_DATA_DIR overrides the default data dir and --data-dir overrides both."""
    monkeypatch.setenv(main.DATA_DIR_ENV, str(tmp_path / "envdir"))
    assert _run("up")[0] == 0
    assert stub.settings.data_dir == str(tmp_path / "envdir")
    assert _run("up", "--data-dir", str(tmp_path / "flag"))[0] == 0
    assert stub.settings.data_dir == str(tmp_path / "flag")


def test_up_relative_data_dir_is_made_absolute(stub, tmp_path, monkeypatch):
    """A relative --data-dir is resolved so the printed export line works from anywhere."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run("up", "--data-dir", "rel")
    assert code == 0
    assert stub.settings.data_dir == str(tmp_path / "rel")
    assert f"export KUBECONFIG={tmp_path}/rel/kubeconfig" in out


@pytest.mark.parametrize(
    ("host", "server"),
    [("0.0.0.0", "https://127.0.0.1:6443"), ("::", "https://[::1]:6443"), ("::1", "https://[::1]:6443")],
)
def test_up_kubeconfig_server_is_dialable(stub, tmp_path, host, server):
    """A wildcard bind address is replaced by loopback in the kubeconfig; IPv6 is bracketed."""
    data = tmp_path / "data"
    assert _run("up", "--data-dir", str(data), "--host", host)[0] == 0
    cfg = yaml.safe_load((data / "kubeconfig").read_text())
    assert cfg["clusters"][0]["cluster"]["server"] == server


def test_up_merge_kubeconfig(stub, tmp_path):
    """--merge-kubeconfig merges the context into ~/.kube/config, keeping other contexts."""
    home_cfg = tmp_path / "home" / ".kube" / "config"
    home_cfg.parent.mkdir(parents=True)
    home_cfg.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "prod", "cluster": {"server": "https://prod"}}],
                "users": [{"name": "prod", "user": {"token": "x"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
                "current-context": "prod",
            }
        )
    )
    code, out, _ = _run("up", "--data-dir", str(tmp_path / "data"), "--merge-kubeconfig")
    assert code == 0
    merged = yaml.safe_load(home_cfg.read_text())
    assert [c["name"] for c in merged["contexts"]] == ["prod", "pocketkube"]
    assert merged["current-context"] == "pocketkube"
    assert str(home_cfg) in out


def test_up_without_merge_leaves_home_alone(stub, tmp_path):
    """Without --merge-kubeconfig nothing is written to ~/.kube."""
    assert _run("up", "--data-dir", str(tmp_path / "data"))[0] == 0
    assert not (tmp_path / "home" / ".kube").exists()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            OSError(
                errno.EADDRINUSE,
                "error while attempting to bind on address ('127.0.0.1', 6443): address already in use",
            ),
            "pocketkube: error: port 6443 on 127.0.0.1 is already in use",
        ),
        (
            OSError(
                errno.EADDRNOTAVAIL,
                "error while attempting to bind on address: cannot assign requested address",
            ),
            "pocketkube: error: cannot listen on 127.0.0.1",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied: '/data'"),
            "pocketkube: error: [Errno 13] Permission denied",
        ),
        (RuntimeError("store is corrupt"), "pocketkube: error: RuntimeError: store is corrupt"),
    ],
)
def test_up_startup_errors_are_one_line(stub, tmp_path, error, message):
    """Startup failures print one clear line on stderr, no traceback, and exit 1."""
    stub.fail = error
    stub.before_ready = True
    code, out, err = _run("up", "--data-dir", str(tmp_path / "data"))
    assert code == 1
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "data" / "kubeconfig").exists()


def test_up_debug_env_shows_traceback(stub, tmp_path, monkeypatch):
    """With POCKETKUBE_DEBUG set, unexpected errors propagate for a full traceback."""
    monkeypatch.setenv(main.DEBUG_ENV, "1")
    stub.fail = RuntimeError("boom")
    stub.before_ready = True
    with pytest.raises(RuntimeError, match="boom"):
        _run("up", "--data-dir", str(tmp_path / "data"))


def test_up_interrupt_exits_zero(stub, tmp_path):
    """Ctrl+C reaching the CLI (before the cluster handles signals) exits 0 quietly."""
    stub.fail = KeyboardInterrupt()
    code, _, err = _run("up", "--data-dir", str(tmp_path / "data"))
    assert code == 0
    assert "Traceback" not in err


def test_up_clean_stop_exits_zero(stub, tmp_path):
    """When cluster.run returns (after SIGINT/SIGTERM) `up` exits 0."""
    code, _, err = _run("up", "--data-dir", str(tmp_path / "data"))
    assert code == 0
    assert stub.ready_calls == 1
    assert "stopped" in err


def test_kubeconfig_prints_written_file(stub, tmp_path):
    """`pocketkube kubeconfig` prints the kubeconfig that `up` wrote."""
    data = tmp_path / "data"
    assert _run("up", "--data-dir", str(data))[0] == 0
    code, out, _ = _run("kubeconfig", "--data-dir", str(data))
    assert code == 0
    assert out == (data / "kubeconfig").read_text()


def test_kubeconfig_without_cluster_fails(stub, tmp_path):
    """`pocketkube kubeconfig` on a data dir that never ran a cluster exits 1 with a hint."""
    code, out, err = _run("kubeconfig", "--data-dir", str(tmp_path / "empty"))
    assert code == 1
    assert out == ""
    assert err.startswith(f"pocketkube: error: no cluster in {tmp_path / 'empty'}")
    assert "pocketkube up" in err


def test_version():
    """`pocketkube version` prints the package version and the Kubernetes API version."""
    code, out, _ = _run("version")
    assert code == 0
    assert out.startswith(f"pocketkube {pocketkube.__version__} ")
    assert "v1.32" in out


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["up", "--port", "70000"], ["up", "--port", "http"], ["up", "--bogus"]]
)
def test_usage_errors_exit_2(argv, capsys):
    """Missing or unknown commands and bad flags are usage errors (exit 2) as argparse reports them."""
    with pytest.raises(SystemExit) as exc:
        main.run(argv)
    assert exc.value.code == 2
    assert "usage: pocketkube" in capsys.readouterr().err


def test_main_exits_with_status(stub, tmp_path):
    """main() turns the command's status into the process exit code."""
    with pytest.raises(SystemExit) as exc:
        main.main(["kubeconfig", "--data-dir", str(tmp_path / "none")])
    assert exc.value.code == 1


def test_python_dash_m(tmp_path):
    """`python -m pocketkube version` works."""
    proc = subprocess.run(
        [sys.executable, "-m", "pocketkube", "version"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pocketkube ")


@pytest.mark.parametrize("args,message", [
    (["--virtual-nodes", "-1"], "must be between 0 and 10000"),
    (["--virtual-nodes", "two"], "expected a whole number"),
    (["--zones", ","], "comma-separated list of zone names"),
])
def test_bad_node_flags_are_usage_errors(stub, tmp_path, args, message, capsys):
    """Invalid --virtual-nodes or --zones values stop with a usage error naming the fix."""
    with pytest.raises(SystemExit) as info:
        main.run(["up", "--data-dir", str(tmp_path), *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_node_flags_reach_the_cluster(stub, tmp_path):
    """--nodes, --virtual-nodes and --zones are passed to the cluster settings."""
    code, _, err = _run("up", "--data-dir", str(tmp_path / "d"), "--nodes", "1", "--virtual-nodes", "3",
                        "--zones", "a,b")
    assert code == 0, err
    assert stub.settings.nodes == 1 and stub.settings.virtual_nodes == 3 and stub.settings.zones == ["a", "b"]
