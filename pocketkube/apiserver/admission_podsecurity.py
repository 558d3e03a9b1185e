"""The PodSecurity admission plugin: enforce, audit and warn the Pod Security Standards named by namespace labels."""

from __future__ import annotations

import dataclasses
from typing import Any

from pocketkube.api import errors, podsecurity
from pocketkube.apiserver import context, objects

# Pod subresources that cannot change what the checks look at.
_IGNORED_POD_SUBRESOURCES = frozenset({"exec", "attach", "binding", "eviction", "log", "portforward", "proxy",
                                       "status"})

# Kinds whose pod template is checked (warn and audit only: their pods are enforced when created).
_TEMPLATE_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "PodTemplate"): ("template",),
    ("", "ReplicationController"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}

# A ReplicationController's template is optional (a pointer in Go): without one there is nothing to check.
# The other kinds always have a template, checked even when empty.
_OPTIONAL_TEMPLATES = frozenset({("", "ReplicationController")})

ANNOTATION_ENFORCE_POLICY = podsecurity.LABEL_PREFIX + "enforce-policy"
ANNOTATION_AUDIT_VIOLATIONS = podsecurity.LABEL_PREFIX + "audit-violations"
ANNOTATION_ERROR = podsecurity.LABEL_PREFIX + "error"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The PodSecurityConfiguration: defaults for unlabeled namespaces and exemptions (kube's defaults: none)."""

    defaults: podsecurity.Policy = podsecurity.Policy()
    exempt_usernames: frozenset[str] = frozenset()
    exempt_runtime_classes: frozenset[str] = frozenset()
    exempt_namespaces: frozenset[str] = frozenset()
    max_pods_to_check: int = 3000
    pod_check_timeout: float = 1.0
    relax_user_namespace_pods: bool = False

    def __post_init__(self) -> None:
        if self.max_pods_to_check <= 0 or self.pod_check_timeout <= 0:
            raise ValueError("max_pods_to_check and pod_check_timeout must be positive")


class PodSecurity:
    """One admission plugin with the same signature as the functions in admission.py."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    async def __call__(self, server: context.Server, call: context.Call, obj: dict[str, Any],
                       old: dict[str, Any] | None, operation: str) -> None:
        if operation not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
            return
        kind = (call.res.group, call.res.kind)
        if kind == ("", "Namespace"):
            await self._namespace(server, call, obj=obj, old=old, operation=operation)
        elif kind == ("", "Pod"):
            await self._pod(server, call, obj=obj, old=old, operation=operation)
        elif kind in _TEMPLATE_PATHS:
            await self._template(server, call, obj=obj, kind=kind)

    # --- namespaces ------------------------------------------------------------------------------

    async def _namespace(self, server: context.Server, call: context.Call, *, obj: dict[str, Any],
                         old: dict[str, Any] | None, operation: str) -> None:
        if call.info.subresource:
            return
        name = str(_meta(obj).get("name") or "")
        new_policy, new_errs = self._policy(obj)
        if operation == "CREATE" or old is None:
            if new_errs:
                raise errors.Invalid(kind="Namespace", group="", name=name, causes=new_errs)
            self._warn_exempt(call, name, policy=new_policy, ns=obj)
            return
        old_policy, old_errs = self._policy(old)
        if new_errs and (not old_errs or [e.text() for e in new_errs] != [e.text() for e in old_errs]):
            raise errors.Invalid(kind="Namespace", group="", name=name, causes=new_errs)
        new_lv, old_lv = new_policy.enforce, old_policy.enforce
        # Only a stricter enforce policy can newly reject pods already running there.
        if new_lv == old_lv or new_lv.level == podsecurity.PRIVILEGED:
            return
        if new_lv.version == old_lv.version and _stricter(new_lv.level, old_lv.level) < 1:
            return
        if self._warn_exempt(call, name, policy=new_policy, ns=obj):
            return
        call.warnings.extend(await self._check_existing_pods(server, name, enforce=new_lv))

    def _warn_exempt(self, call: context.Call, name: str, *, policy: podsecurity.Policy, ns: dict[str, Any]) -> bool:
        """Warn that an exempt namespace's labels do nothing; True when the namespace is exempt."""
        if name not in self.settings.exempt_namespaces:
            return False
        if policy.fully_privileged() or policy == self.settings.defaults:
            return True
        labels = _dict(_meta(ns).get("labels"))
        modes = []
        for mode in podsecurity.MODES:
            lv = getattr(policy, mode)
            key = podsecurity.LABEL_PREFIX + mode
            if lv.level != podsecurity.PRIVILEGED and (key in labels or key + "-version" in labels):
                modes.append(f"{mode}={lv}")
        call.warnings.append(f'namespace "{name}" is exempt from Pod Security, and the policy '
                             f"({', '.join(modes)}) will be ignored")
        return True

    async def _check_existing_pods(self, server: context.Server, namespace: str, *,
                                   enforce: podsecurity.LevelVersion) -> list[str]:
        pod_res = server.registry.get("", "v1", "pods")
        if pod_res is None:
            return []
        try:
            listed = await server.store.list(objects.list_prefix(pod_res, namespace))
        except Exception:  # noqa: BLE001 - a failed list must not fail the namespace update
            return ["failed to list pods while checking new PodSecurity enforce level"]
        pods = self._prioritize([objects.decode(e.value, e.mod_revision) for e in listed.entries])
        total = len(pods)
        pods = pods[:self.settings.max_pods_to_check]
        deadline = server.clock.monotonic() + self.settings.pod_check_timeout
        first_pod: dict[str, str] = {}
        counts: dict[str, int] = {}
        checked = len(pods)
        for i, pod in enumerate(pods):
            results = podsecurity.evaluate(enforce, pod.get("metadata"), pod.get("spec"),
                                           relax_user_namespace_pods=self.settings.relax_user_namespace_pods)
            if results:
                warning = podsecurity.forbidden_reason(results)
                pod_name = str(_meta(pod).get("name") or "")
                if warning not in first_pod or pod_name < first_pod[warning]:
                    first_pod[warning] = pod_name
                counts[warning] = counts.get(warning, 0) + 1
            if server.clock.monotonic() > deadline:
                checked = i + 1
                break
        out = []
        if checked < total:
            out.append(f"new PodSecurity enforce level only checked against the first {checked} of {total} "
                       "existing pods")
        if counts:
            out.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level '
                       f'"{enforce}"')
        return out + sorted(_with_pod_names(w, first_pod[w], count=counts[w]) for w in counts)

    def _prioritize(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop exempt pods and put one pod per controller first, the other replicas after."""
        first, replicas = [], []
        seen: set[str] = set()
        for pod in pods:
            if self._exempt_runtime_class(_dict(pod.get("spec"))):
                continue
            owner = next((r for r in _list(_meta(pod).get("ownerReferences"))
                          if isinstance(r, dict) and r.get("controller") is True), None)
            if owner is None:
                first.append(pod)
            elif str(owner.get("uid")) in seen:
                replicas.append(pod)
            else:
                first.append(pod)
                seen.add(str(owner.get("uid")))
        return first + replicas

    # --- pods and templates ----------------------------------------------------------------------

    async def _pod(self, server: context.Server, call: context.Call, *, obj: dict[str, Any],
                   old: dict[str, Any] | None, operation: str) -> None:
        if call.info.subresource in _IGNORED_POD_SUBRESOURCES:
            return
        namespace = await self._namespace_of(server, call)
        if namespace is None:
            return
        policy, errs = self._policy(namespace)
        if not errs and policy.fully_privileged():
            return
        if operation == "UPDATE" and old is not None and not _significant_update(obj, old):
            return
        self._evaluate(call, obj, policy=policy, errs=errs, meta=_dict(obj.get("metadata")),
                       spec=_dict(obj.get("spec")), enforce=True)

    async def _template(self, server: context.Server, call: context.Call, *, obj: dict[str, Any],
                        kind: tuple[str, str]) -> None:
        if call.info.subresource:
            return
        namespace = await self._namespace_of(server, call)
        if namespace is None:
            return
        policy, errs = self._policy(namespace)
        if not errs and policy.warn.level == policy.audit.level == podsecurity.PRIVILEGED:
            return
        template: Any = obj
        for key in _TEMPLATE_PATHS[kind]:
            template = _dict(template).get(key)
        if template is None and kind in _OPTIONAL_TEMPLATES:
            return
        self._evaluate(call, obj, policy=policy, errs=errs, meta=_dict(_dict(template).get("metadata")),
                       spec=_dict(_dict(template).get("spec")), enforce=False)

    def _evaluate(self, call: context.Call, obj: dict[str, Any], *, policy: podsecurity.Policy,
                  errs: list[errors.FieldError], meta: dict[str, Any], spec: dict[str, Any], enforce: bool) -> None:
        """Deny on the enforce level, annotate the audit level, warn on the warn level (unless denied)."""
        if self._exempt_runtime_class(spec):
            return
        annotations: dict[str, str] = {}
        if errs:
            annotations[ANNOTATION_ERROR] = "Failed to parse policy: " + _aggregate(errs)
        relax = self.settings.relax_user_namespace_pods
        cache: dict[podsecurity.LevelVersion, list[podsecurity.Result]] = {}

        def results(lv: podsecurity.LevelVersion) -> list[podsecurity.Result]:
            if lv not in cache:
                cache[lv] = podsecurity.evaluate(lv, meta, spec, relax_user_namespace_pods=relax)
            return cache[lv]

        denial = None
        if enforce:
            annotations[ANNOTATION_ENFORCE_POLICY] = str(policy.enforce)
            if failed := results(policy.enforce):
                denial = _forbidden(call, obj, why=f'violates PodSecurity "{policy.enforce}": '
                                               f"{podsecurity.forbidden_detail(failed)}")
        if failed := results(policy.audit):
            annotations[ANNOTATION_AUDIT_VIOLATIONS] = (f'would violate PodSecurity "{policy.audit}": '
                                                        f"{podsecurity.forbidden_detail(failed)}")
        if denial is None and (failed := results(policy.warn)):
            call.warnings.append(f'would violate PodSecurity "{policy.warn}": {podsecurity.forbidden_detail(failed)}')
        _record_audit(call, annotations)
        if denial is not None:
            raise denial

    # --- helpers ---------------------------------------------------------------------------------

    def _policy(self, ns: dict[str, Any]) -> tuple[podsecurity.Policy, list[errors.FieldError]]:
        labels = _dict(_meta(ns).get("labels"))
        # Most namespaces carry no pod-security label (only kubernetes.io/metadata.name): the defaults apply.
        if not any(k.startswith(podsecurity.LABEL_PREFIX) for k in labels):
            return self.settings.defaults, []
        return podsecurity.policy_from_labels(labels, self.settings.defaults)

    async def _namespace_of(self, server: context.Server, call: context.Call) -> dict[str, Any] | None:
        """The request's namespace, None when it or the user is exempt (or it is gone: lifecycle says so)."""
        ns_name = call.info.namespace
        if ns_name in self.settings.exempt_namespaces or call.user.name in self.settings.exempt_usernames:
            return None
        ns_res = server.registry.get("", "v1", "namespaces")
        if ns_res is None or not ns_name:
            return None
        ns: dict[str, Any] | None = await server.objects.get_shared(ns_res, "", ns_name)
        return ns

    def _exempt_runtime_class(self, spec: dict[str, Any]) -> bool:
        return bool(spec.get("runtimeClassName")) and spec.get("runtimeClassName") in self.settings.exempt_runtime_classes


def _significant_update(pod: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether a pod update changes what the checks see: only images and ephemeral containers can change."""
    spec, old_spec = _dict(pod.get("spec")), _dict(old.get("spec"))
    annotations, old_annotations = _dict(_meta(pod).get("annotations")), _dict(_meta(old).get("annotations"))

    def changed(c: dict[str, Any], o: dict[str, Any]) -> bool:
        key = "container.seccomp.security.alpha.kubernetes.io/" + str(c.get("name") or "")
        return c.get("image") != o.get("image") or annotations.get(key) != old_annotations.get(key)

    for key in ("containers", "initContainers"):
        new_list, old_list = _list(spec.get(key)), _list(old_spec.get(key))
        if len(new_list) != len(old_list):
            return True
        if any(changed(_dict(c), _dict(o)) for c, o in zip(new_list, old_list, strict=True)):
            return True
    old_ephemeral = {str(_dict(o).get("name")): _dict(o) for o in _list(old_spec.get("ephemeralContainers"))}
    for c in _list(spec.get("ephemeralContainers")):
        o = old_ephemeral.get(str(_dict(c).get("name")))
        if o is None or changed(_dict(c), o):
            return True
    return False


def _stricter(a: str, b: str) -> int:
    """CompareLevels: 1 when a is stricter than b, -1 when looser, 0 when equal."""
    order = {podsecurity.PRIVILEGED: 0, podsecurity.BASELINE: 1, podsecurity.RESTRICTED: 2}
    return (order[a] > order[b]) - (order[a] < order[b])


def _with_pod_names(warning: str, pod: str, *, count: int) -> str:
    if count == 1:
        return f"{pod}: {warning}"
    others = "1 other pod" if count == 2 else f"{count - 1} other pods"
    return f"{pod} (and {others}): {warning}"


def _forbidden(call: context.Call, obj: dict[str, Any], *, why: str) -> errors.Forbidden:
    name = str(_meta(obj).get("name") or "")
    res = call.res
    target = errors.qualified(res.resource, res.group)
    message = f'{target} "{name}" is forbidden: {why}' if name else f"{target} is forbidden: {why}"
    details: dict[str, Any] = {"name": name} if name else {}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.resource
    return errors.Forbidden(message, details=details)


def _aggregate(errs: list[errors.FieldError]) -> str:
    texts = [e.text() for e in errs]
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"


def _record_audit(call: context.Call, annotations: dict[str, str]) -> None:
    # The audit log reads `call.audit_annotations` once Call grows that dict; until then nothing keeps them.
    target = getattr(call, "audit_annotations", None)
    if isinstance(target, dict):
        target.update(annotations)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return _dict(obj.get("metadata"))


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


pod_security = PodSecurity()
