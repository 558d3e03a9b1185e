"""The pods/eviction subresource: delete a pod only when its PodDisruptionBudget allows it."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.apiserver import admission_noderestriction, context, delete, negotiate, objects, writes
from pocketkube.base import clock as clock_mod

# Versions of Eviction the subresource takes (kube still accepts v1beta1 bodies here).
ACCEPTED_VERSIONS = ("policy/v1", "policy/v1beta1")
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"
VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
MORE_THAN_ONE = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
# The API server refuses evictions once this many are approved but not yet seen by the PDB controller.
MAX_DISRUPTED_PODS = 2000
# kube retries a conflicting PDB write 20 times; one process rarely needs more than a couple.
PDB_RETRIES = 20
POD_RETRIES = 5
SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def is_pod_ready(pod: dict[str, Any]) -> bool:
    """podutil.IsPodReady: the Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in ((pod.get("status") or {}).get("conditions") or []) if isinstance(c, dict))


def can_ignore_pdb(pod: dict[str, Any]) -> bool:
    """Finished, pending or already terminating pods are deleted without asking their budget."""
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed", "Pending") or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def should_enforce_resource_version(pod: dict[str, Any]) -> bool:
    """Live pods are deleted only at the version we judged, so one turning ready meanwhile is not lost."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def matching_pdbs(pod: dict[str, Any], pdbs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The budgets covering a pod; a nil, empty or invalid selector covers nothing here."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if not labels:
        return []
    out = []
    for pdb in pdbs:
        try:
            sel = selectors.from_label_selector((pdb.get("spec") or {}).get("selector"))
        except errors.APIError:
            continue
        if sel.empty or sel.matches_nothing or not sel.matches(labels):
            continue
        out.append(pdb)
    return out


def too_many_requests(message: str, *, retry_after: int = 0) -> errors.TooManyRequests:
    """NewTooManyRequests with a DisruptionBudget cause, and Retry-After when a delay is suggested."""
    details: dict[str, Any] = {"causes": [{"reason": DISRUPTION_BUDGET_CAUSE, "message": message}]}
    headers = {}
    if retry_after:
        details["retryAfterSeconds"] = retry_after
        headers["Retry-After"] = str(retry_after)
    return errors.TooManyRequests(VIOLATION, details=details, headers=headers)


def still_processing(name: str) -> errors.TooManyRequests:
    return too_many_requests(f"The disruption budget {name} is still being processed by the server.", retry_after=10)


def _forbidden(name: str, why: str) -> errors.Forbidden:
    return errors.Forbidden(f'poddisruptionbudget.policy "{name}" is forbidden: {why}',
                            details={"name": name, "group": "policy", "kind": "poddisruptionbudget"})


def set_disruption_allowed_condition(status: dict[str, Any], now: str) -> None:
    """pdbhelper.UpdateDisruptionAllowedCondition: DisruptionAllowed follows disruptionsAllowed."""
    allowed = int(status.get("disruptionsAllowed") or 0) > 0
    want = ("True", "SufficientPods") if allowed else ("False", "InsufficientPods")
    conds = [c for c in (status.get("conditions") or []) if isinstance(c, dict)]
    gen = status.get("observedGeneration") or 0
    for c in conds:
        if c.get("type") == "DisruptionAllowed":
            if c.get("status") != want[0]:
                c["lastTransitionTime"] = now
            c["status"], c["reason"], c["observedGeneration"] = want[0], want[1], gen
            c.setdefault("message", "")
            break
    else:
        conds.append({"type": "DisruptionAllowed", "status": want[0], "observedGeneration": gen,
                      "lastTransitionTime": now, "reason": want[1], "message": ""})
    status["conditions"] = conds


def check_and_decrement(pdb: dict[str, Any], pod_name: str, now: str, *, dry_run: bool) -> dict[str, Any]:
    """The budget after approving one disruption, or the error kube answers when it cannot."""
    name = (pdb.get("metadata") or {}).get("name") or ""
    status = dict(pdb.get("status") or {})
    if int(status.get("observedGeneration") or 0) < int((pdb.get("metadata") or {}).get("generation") or 0):
        raise still_processing(name)
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        raise _forbidden(name, "pdb disruptions allowed is negative")
    disrupted = dict(status.get("disruptedPods") or {})
    if len(disrupted) > MAX_DISRUPTED_PODS:
        raise _forbidden(name, "DisruptedPods map too big - too many evictions not confirmed by PDB controller")
    if allowed == 0:
        raise too_many_requests(f"The disruption budget {name} needs {int(status.get('desiredHealthy') or 0)} "
                                f"healthy pods and has {int(status.get('currentHealthy') or 0)} currently")
    status["disruptionsAllowed"] = allowed - 1
    if allowed - 1 == 0:
        set_disruption_allowed_condition(status, now)
    if not dry_run:
        disrupted[pod_name] = now
        status["disruptedPods"] = disrupted
    new = dict(pdb)
    new["status"] = status
    return new


def _eviction_body(call: context.Call, ev: dict[str, Any]) -> dict[str, Any]:
    """The Eviction sent, checked as kube decodes it; v1beta1 bodies are accepted too."""
    kind, api_version = ev.get("kind"), ev.get("apiVersion")
    if kind == "Eviction" and api_version in ACCEPTED_VERSIONS:
        ev["apiVersion"] = "policy/v1"
    return ev


def _delete_options(call: context.Call, ev: dict[str, Any]) -> dict[str, Any]:
    """The eviction's DeleteOptions with the request's dryRun pushed in (propagateDryRun)."""
    opts = ev.get("deleteOptions")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise errors.BadRequest("deleteOptions must be a DeleteOptions object")
    opts = objects.clone(opts)
    query_dry = list(call.request.query.getall("dryRun", []))
    body_dry = opts.get("dryRun") or []
    if not body_dry:
        opts["dryRun"] = query_dry
    elif query_dry and list(body_dry) != query_dry:
        raise errors.InternalError(f"Non-matching dry-run options in request and content: "
                                   f"[{' '.join(query_dry)}] and [{' '.join(body_dry)}]")
    for v in opts.get("dryRun") or []:
        if v != "All":
            raise errors.BadRequest(f'dryRun: Unsupported value: "{v}": supported values: "All"')
    policy = opts.get("propagationPolicy")
    if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
        raise errors.Invalid(kind="DeleteOptions", group="meta.k8s.io", name="", causes=[
            errors.unsupported("propagationPolicy", policy, ["Foreground", "Background", "Orphan", "nil"])])
    grace = opts.get("gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
        raise errors.BadRequest("gracePeriodSeconds must be an integer")
    pre = opts.get("preconditions")
    if pre is not None and not isinstance(pre, dict):
        raise errors.BadRequest("preconditions must be an object")
    return opts


def check_preconditions(pod: dict[str, Any], opts: dict[str, Any]) -> None:
    """The 409 kube answers when the pod is not the one (uid) or not the version the options name."""
    pre = opts.get("preconditions") or {}
    meta = pod["metadata"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise errors.Conflict.because("pods", "", meta["name"], f"Precondition failed: UID in precondition: "
                                      f"{pre['uid']}, UID in object meta: {meta.get('uid')}")
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise errors.Conflict.because("pods", "", meta["name"], "Precondition failed: ResourceVersion in "
                                      f"precondition: {pre['resourceVersion']}, ResourceVersion in object meta: "
                                      f"{meta.get('resourceVersion')}")


def _rv_unset(opts: dict[str, Any]) -> bool:
    return not (opts.get("preconditions") or {}).get("resourceVersion")


def _with_rv(opts: dict[str, Any], rv: str) -> dict[str, Any]:
    out = objects.clone(opts)
    out.setdefault("preconditions", {})
    if out["preconditions"] is None:
        out["preconditions"] = {}
    out["preconditions"]["resourceVersion"] = rv
    return out


async def create(server: context.Server, call: context.Call) -> tuple[dict[str, Any], int]:
    """POST pods/NAME/eviction: the 201 Success, a 429 when the budget forbids it, or kube's other errors."""
    raw = await negotiate.read_body(call.request)
    ev = _eviction_body(call, negotiate.decode_object(raw, call.request.headers.get("Content-Type"),
                                                      what="Eviction"))
    writes.check_type(server, call, ev)
    writes.check_namespace(call, ev)
    if call.info.name != ev["metadata"].get("name"):
        raise errors.BadRequest("name in URL does not match name in Eviction object")
    if admission_noderestriction.admit in server.admission:  # before the budget is spent, as kube admits evictions
        await admission_noderestriction.admit(server, call, ev, None, "CREATE")
    opts = _delete_options(call, ev)
    dry_run = bool(opts.get("dryRun"))
    pods = call.res
    name = call.info.name
    pod: dict[str, Any] = {}
    for attempt in range(POD_RETRIES):
        pod = await server.objects.get(pods, call.namespace, name)
        if not can_ignore_pdb(pod):
            break
        del_opts = opts
        if should_enforce_resource_version(pod) and _rv_unset(opts):
            del_opts = _with_rv(opts, pod["metadata"]["resourceVersion"])
        try:
            await _delete_pod(server, call, del_opts, dry_run=dry_run)
        except errors.Conflict:
            if not _rv_unset(opts) or attempt == POD_RETRIES - 1:
                raise
            continue
        return dict(SUCCESS), 201

    pdb_res = server.registry.get("policy", "v1", "poddisruptionbudgets")
    assert pdb_res is not None
    listed = await server.store.list(objects.list_prefix(pdb_res, call.namespace))
    pdbs = [server.objects.from_storage(pdb_res, objects.decode(e.value, e.mod_revision)) for e in listed.entries]
    covering = matching_pdbs(pod, pdbs)
    if len(covering) > 1:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": MORE_THAN_ONE, "code": 500}, 500
    update_options = False
    pdb_name = ""
    if covering:
        pdb = covering[0]
        pdb_name = pdb["metadata"]["name"]
        spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
        if not is_pod_ready(pod) and (
                spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
                or int(status.get("currentHealthy") or 0) >= int(status.get("desiredHealthy") or 0) > 0):
            # An unready pod does not count as healthy: taking it costs the budget nothing.
            update_options = True
        else:
            await _decrement(server, pdb_res, pdb, name, dry_run=dry_run)
    del_opts = _with_rv(opts, pod["metadata"]["resourceVersion"]) if update_options else opts
    try:
        await _delete_pod(server, call, del_opts, dry_run=dry_run)
    except errors.Conflict:
        if update_options and _rv_unset(opts):
            raise still_processing(pdb_name) from None
        raise
    return dict(SUCCESS), 201


async def _decrement(server: context.Server, pdb_res: Any, pdb: dict[str, Any], pod_name: str, *,
                     dry_run: bool) -> None:
    name = pdb["metadata"]["name"]
    for _ in range(PDB_RETRIES):
        new = check_and_decrement(pdb, pod_name, clock_mod.rfc3339(server.clock.now()), dry_run=dry_run)
        if dry_run:
            return
        try:
            await server.objects.update(pdb_res, new, expected_revision=writes.revision_of(pdb))
            return
        except errors.Conflict:
            pdb = await server.objects.get(pdb_res, pdb["metadata"].get("namespace") or "", name)
    raise errors.Timeout(f'couldn\'t update PodDisruptionBudget "{name}" due to conflicts',
                         details={"retryAfterSeconds": 10})


async def _delete_pod(server: context.Server, call: context.Call, opts: dict[str, Any], *, dry_run: bool) -> None:
    """Mark the pod a DisruptionTarget, then delete it with the eviction's options (addConditionAndDeletePod)."""
    name = call.info.name
    if dry_run:
        check_preconditions(await server.objects.get(call.res, call.namespace, name), opts)
        return
    opts = await _add_disruption_condition(server, call, opts)
    await delete.delete_one(server, call, name, opts)


async def _add_disruption_condition(server: context.Server, call: context.Call,
                                    opts: dict[str, Any]) -> dict[str, Any]:
    for _ in range(POD_RETRIES):
        pod = await server.objects.get(call.res, call.namespace, call.info.name)
        check_preconditions(pod, opts)
        new = objects.clone(pod)
        status = new.setdefault("status", {})
        conds = [c for c in (status.get("conditions") or []) if isinstance(c, dict)]
        cond = {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                "lastTransitionTime": clock_mod.rfc3339(server.clock.now()),
                "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}
        for i, c in enumerate(conds):
            if c.get("type") == "DisruptionTarget":
                if c.get("status") == "True":
                    cond["lastTransitionTime"] = c.get("lastTransitionTime")
                conds[i] = cond
                break
        else:
            conds.append(cond)
        status["conditions"] = conds
        try:
            stored = await server.objects.update(call.res, new, expected_revision=writes.revision_of(pod))
        except errors.Conflict:
            continue
        if not _rv_unset(opts):
            # We moved the version ourselves: the caller's precondition now names the new one.
            opts = _with_rv(opts, stored["metadata"]["resourceVersion"])
        return opts
    raise errors.Conflict.modified("pods", "", call.info.name)
