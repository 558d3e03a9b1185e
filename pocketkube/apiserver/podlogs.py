"""GET pods/NAME/log: pick the container, find the pod's kubelet and stream its containerLogs back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import context

# What the kubelet understands of PodLogOptions; the rest (container, pretty, ...) is ours.
PASSED_ON = ("follow", "tailLines", "sinceSeconds", "sinceTime", "timestamps", "previous", "limitBytes")
CONNECT_SECONDS = 10.0


def validate(call: context.Call) -> None:
    """ValidatePodLogOptions: 422 on PodLogOptions with the field errors kube words."""
    causes = []
    tail = call.int_param("tailLines")
    if tail is not None and tail < 0:
        causes.append(errors.invalid("tailLines", tail, "must be greater than or equal to 0"))
    limit = call.int_param("limitBytes")
    if limit is not None and limit < 1:
        causes.append(errors.invalid("limitBytes", limit, "must be greater than 0"))
    seconds = call.int_param("sinceSeconds")
    if seconds is not None and call.param("sinceTime"):
        causes.append(errors.FieldError("Forbidden", "", detail="at most one of `sinceTime` or `sinceSeconds` "
                                                                 "may be specified"))
    if seconds is not None and seconds < 1:
        causes.append(errors.invalid("sinceSeconds", seconds, "must be greater than 0"))
    for flag in ("follow", "timestamps", "previous"):
        call.bool_param(flag)
    if causes:
        raise errors.Invalid(kind="PodLogOptions", group="", name=call.info.name, causes=causes)


def container_names(spec: Mapping[str, Any], key: str) -> list[str]:
    return [str(c.get("name") or "") for c in spec.get(key) or []]


def choose_container(pod: Mapping[str, Any], wanted: str) -> str:
    """The container to read: the one asked for, else the only one; 400s worded as kube's LogLocation."""
    name = str((pod.get("metadata") or {}).get("name") or "")
    spec = pod.get("spec") or {}
    mains = container_names(spec, "containers")
    inits = container_names(spec, "initContainers")
    ephemeral = container_names(spec, "ephemeralContainers")
    if not wanted:
        if len(mains) == 1:
            return mains[0]
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(mains)}]"
        if inits:
            message += f" or one of the init containers: [{' '.join(inits)}]"
        if ephemeral:
            message += f" or one of the ephemeral containers: [{' '.join(ephemeral)}]"
        raise errors.BadRequest(message)
    if wanted not in (*mains, *inits, *ephemeral):
        raise errors.BadRequest(f"container {wanted} is not valid for pod {name}")
    return wanted


def waiting_reason(pod: Mapping[str, Any], container: str) -> str | None:
    """Why a container has not started according to the pod's status (None when it has started or ended)."""
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            if cs.get("name") == container:
                state = cs.get("state") or {}
                if "waiting" in state and not cs.get("lastState", {}).get("terminated"):
                    return str((state.get("waiting") or {}).get("reason") or "ContainerCreating")
                return None
    return "ContainerCreating"


def kubelet_endpoint(node: Mapping[str, Any]) -> tuple[str, int]:
    """The node's InternalIP (else any address) and the kubelet port it reports."""
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    ip = next((a.get("address") for a in addresses if a.get("type") == "InternalIP"), None)
    ip = ip or next((a.get("address") for a in addresses), None) or "127.0.0.1"
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 10250
    return str(ip), int(port)


def _not_started(container: str, pod: str, reason: str) -> errors.BadRequest:
    return errors.BadRequest(f'container "{container}" in pod "{pod}" is waiting to start: {reason}')


def _from_kubelet(code: int, text: str) -> errors.APIError:
    message = text.strip()
    if code == 400:
        return errors.BadRequest(message)
    if code == 404:
        return errors.NotFound(message)
    if code == 403:
        return errors.Forbidden(message)
    return errors.InternalError(message or f"the kubelet answered {code}")


async def handle(server: context.Server, call: context.Call) -> web.StreamResponse:
    validate(call)
    name = call.info.name
    pod = await server.objects.get(call.res, call.namespace, name)
    container = choose_container(pod, call.param("container"))
    node_name = str((pod.get("spec") or {}).get("nodeName") or "")
    if not node_name:
        raise _not_started(container, name, "ContainerCreating")
    nodes_res = server.registry.get("", "v1", "nodes")
    node = None if nodes_res is None else await server.objects.get_or_none(nodes_res, "", node_name)
    if node is None:
        raise errors.NotFound.for_object("nodes", "", node_name)
    if ((node.get("metadata") or {}).get("labels") or {}).get("type") == "virtual" or server.kubelet_ssl is None:
        # Nothing runs on a virtual node: a started container's log is empty.
        reason = waiting_reason(pod, container)
        if reason is not None:
            raise _not_started(container, name, reason)
        return web.Response(body=b"", content_type="text/plain")
    ip, port = kubelet_endpoint(node)
    host = f"[{ip}]" if ":" in ip else ip
    url = f"https://{host}:{port}/containerLogs/{call.namespace}/{name}/{container}"
    params = {k: call.query[k] for k in PASSED_ON if call.query.get(k, "") != ""}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.kubelet_ssl),
                                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS))
    try:
        try:
            upstream = await session.get(url, params=params)
        except (aiohttp.ClientError, OSError) as e:
            raise errors.InternalError(f'Get "{url}": {e}') from None
        async with upstream:
            if upstream.status != 200:
                raise _from_kubelet(upstream.status, await upstream.text(errors="replace"))
            response = web.StreamResponse(headers={"Content-Type": "text/plain", "Cache-Control": "no-cache, private"})
            await response.prepare(call.request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    finally:
        await session.close()
