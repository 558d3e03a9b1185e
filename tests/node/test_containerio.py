"""Specification of containers' stdin and terminals (attach) and of each pod's /etc/resolv.conf in the process runtime."""

from __future__ import annotations

import asyncio
import os

import pytest

from pocketkube.network import resolvconf
from pocketkube.node import containerio, process, remotecommand, runtime
from tests.node import fakes
from tests.node.test_process import Harness, pod

CAN_MOUNT = process.probe_mounts(process.shutil.which("unshare")) == ""


def session(*, stdin: bool = True, tty: bool = False) -> remotecommand.Session:
    async def send(channel: int, data: bytes) -> None:
        pass

    return remotecommand.Session(remotecommand.Options(stdin=stdin, stdout=True, tty=tty), send, protocol="v5")


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    await harness.rt.close()


def log_of(h: Harness, uid: str = "u1") -> str:
    with open(h.rt.log_path(uid, "main", 0), encoding="utf-8", errors="replace") as f:
        return f.read()


@pytest.mark.parametrize(("container", "want"), [
    ({}, False),
    ({"stdin": True}, True),
    ({"tty": True}, True),
    ({"stdin": False, "tty": False}, False),
])
def test_wants_stdio(container: dict, want: bool) -> None:
    """Only stdin: true or tty: true gives a container more than /dev/null as stdin."""
    assert containerio.wants_stdio(container) is want


async def test_without_stdin_the_container_reads_dev_null(h):
    """A container without stdin: true reads end-of-file at once and has no stdin to attach to."""
    await h.rt.sync_pod(pod(command=["sh", "-c", "cat; echo done"]))
    assert h.rt.stdio("u1", "main") is None
    await h.exit()
    assert log_of(h) == "done\n"


async def test_attach_feeds_stdin_and_stdin_once_closes_it(h):
    """An attach session's input reaches a stdin: true container; with stdinOnce its end closes the stdin."""
    await h.rt.sync_pod(pod(command=["sh", "-c", "while read l; do echo got $l; done; echo eof"],
                            stdin=True, stdinOnce=True))
    stdio = h.rt.stdio("u1", "main")
    assert stdio is not None and not stdio.tty
    s = session()
    s.feed(remotecommand.STDIN, b"hello\n")
    s.end_stdin()
    await asyncio.wait_for(stdio.attach(s), 5)
    await h.exit()
    assert log_of(h) == "got hello\neof\n"
    assert h.rt.pod_status("u1").containers["main"].termination.exit_code == 0


async def test_stdin_stays_open_across_attaches_without_stdin_once(h):
    """Without stdinOnce a detaching client leaves the stdin open for the next attach."""
    await h.rt.sync_pod(pod(command=["sh", "-c", "read a; read b; echo $a $b"], stdin=True))
    stdio = h.rt.stdio("u1", "main")
    for line in (b"one\n", b"two\n"):
        s = session()
        s.feed(remotecommand.STDIN, line)
        s.client_gone()
        await asyncio.wait_for(stdio.attach(s), 5)
        assert stdio.stdin_open
    await h.exit()
    assert log_of(h) == "one two\n"


async def test_attach_without_stdin_flag_writes_nothing(h):
    """A session that did not ask for stdin never writes to the container, nor closes its stdin."""
    await h.rt.sync_pod(pod(command=["sh", "-c", "read a; echo [$a]"], stdin=True, stdinOnce=True))
    stdio = h.rt.stdio("u1", "main")
    s = session(stdin=False)
    s.client_gone()
    await asyncio.wait_for(stdio.attach(s), 5)
    assert stdio.stdin_open
    assert await stdio.write(b"late\n")
    await h.exit()
    assert log_of(h) == "[late]\n"


async def test_tty_container_gets_a_controlling_terminal_with_resize(h):
    """tty: true runs the container on a pty (its controlling terminal) whose size an attach sets."""
    script = "read l; stty size; : </dev/tty && echo has-a-ctty; echo \"<$l>\""
    await h.rt.sync_pod(pod(command=["sh", "-c", script], stdin=True, tty=True))
    stdio = h.rt.stdio("u1", "main")
    assert stdio is not None and stdio.tty
    s = session(tty=True)
    s.feed(remotecommand.RESIZE, b'{"Width":100,"Height":40}')
    attached = asyncio.get_running_loop().create_task(stdio.attach(s))
    await asyncio.sleep(0.2)
    s.feed(remotecommand.STDIN, b"hi\n")
    await h.exit()
    s.client_gone()
    await asyncio.wait_for(attached, 5)
    out = log_of(h).replace("\r\n", "\n")
    assert out == "hi\n40 100\nhas-a-ctty\n<hi>\n"


async def test_stdin_is_released_when_the_container_exits(h):
    """Writing to the stdin of a container that has gone fails instead of blocking."""
    await h.rt.sync_pod(pod(command=["true"], stdin=True))
    stdio = h.rt.stdio("u1", "main")
    await h.exit()
    assert h.rt.stdio("u1", "main") is None
    assert not await stdio.write(b"x\n")


# --- /etc/resolv.conf


def dns_harness(tmp_path, host: str = "nameserver 192.0.2.53\nsearch corp.example\n", client=None) -> Harness:
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text(host)
    harness = Harness(tmp_path / "data", client or fakes.FakeClient())
    harness.rt.sandboxes.dns = resolvconf.Settings(cluster_dns=("10.96.0.10",), resolv_conf=str(host_file))
    return harness


def resolv_of(h: Harness, uid: str = "u1") -> str:
    return (open(os.path.join(h.rt.run_dir(uid), "resolv.conf")).read()
            if os.path.exists(os.path.join(h.rt.run_dir(uid), "resolv.conf")) else "")


@pytest.mark.skipif(not CAN_MOUNT, reason="mount namespaces are not permitted here")
async def test_cluster_first_pod_sees_cluster_dns_at_etc_resolv_conf(tmp_path):
    """A ClusterFirst pod reads the cluster nameserver, its namespace's search path and ndots:5 at /etc/resolv.conf."""
    h = dns_harness(tmp_path)
    try:
        await h.rt.sync_pod(pod(command=["cat", "/etc/resolv.conf"]))
        await h.exit()
        want = ("search ns.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
                "nameserver 10.96.0.10\noptions ndots:5\n")
        assert log_of(h) == want and resolv_of(h) == want
    finally:
        await h.rt.close()
    assert "10.96.0.10" not in open("/etc/resolv.conf").read(), "the host's file is untouched"


@pytest.mark.parametrize(("spec", "want"), [
    ({"dnsPolicy": "Default"}, "search corp.example\nnameserver 192.0.2.53\n"),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]}},
     "nameserver 1.1.1.1\noptions ndots:2\n"),
    ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"},
     "search ns.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
     "nameserver 10.96.0.10\noptions ndots:5\n"),
    ({"hostNetwork": True}, ""),
])
async def test_resolv_conf_per_dns_policy(tmp_path, spec: dict, want: str):
    """The pod's file follows its dnsPolicy; a host-network ClusterFirst pod keeps the host's own file (none made)."""
    h = dns_harness(tmp_path)
    try:
        p = pod(command=["true"])
        p["spec"].update(spec)
        await h.rt.sync_pod(p)
        await h.exit()
        assert resolv_of(h) == want
    finally:
        await h.rt.close()


async def test_missing_cluster_dns_falls_back_with_a_warning(tmp_path):
    """Without a cluster DNS address a ClusterFirst pod gets the host's resolver and a MissingClusterDNS event."""
    h = dns_harness(tmp_path)
    h.rt.sandboxes.dns = resolvconf.Settings(resolv_conf=h.rt.sandboxes.dns.resolv_conf)
    try:
        result = await h.rt.sync_pod(pod(command=["true"]))
        assert [(e.type, e.reason) for e in result.events][0] == (runtime.WARNING, resolvconf.MISSING_CLUSTER_DNS)
        await h.exit()
        assert resolv_of(h) == "search corp.example\nnameserver 192.0.2.53\n"
    finally:
        await h.rt.close()


@pytest.mark.skipif(not CAN_MOUNT, reason="mount namespaces are not permitted here")
async def test_container_mounting_its_own_resolv_conf_keeps_it(tmp_path):
    """A volume mounted at /etc/resolv.conf wins over the pod's formed file."""
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/configmaps/dns"] = {"data": {"resolv.conf": "nameserver 203.0.113.1\n"}}
    h = dns_harness(tmp_path, client=client)
    try:
        p = pod(command=["cat", "/etc/resolv.conf"],
                volumeMounts=[{"name": "dns", "mountPath": "/etc/resolv.conf", "subPath": "resolv.conf"}],
                _volumes=[{"name": "dns", "configMap": {"name": "dns"}}])
        await h.rt.sync_pod(p)
        await h.exit()
        assert log_of(h) == "nameserver 203.0.113.1\n"
    finally:
        await h.rt.close()


def test_settings_refuse_a_non_ip_nameserver() -> None:
    """--cluster-dns takes IP addresses only."""
    with pytest.raises(ValueError, match="not an IP address"):
        resolvconf.Settings(cluster_dns=("kube-dns",))
