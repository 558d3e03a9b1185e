"""The OpenAPI operations and schema shapes kube-apiserver publishes for each resource (v3, and v2 by conversion)."""

from __future__ import annotations

import copy
from typing import Any

from pocketkube.api import resources as resources_mod
from pocketkube.api import schemas

V2_PREFIX = schemas.REF_PREFIX
V3_PREFIX = "#/components/schemas/"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."

_JSON = "application/json"
_PROTO = "application/vnd.kubernetes.protobuf"
_YAML = "application/yaml"
_WATCH_JSON = "application/json;stream=watch"
_WATCH_PROTO = "application/vnd.kubernetes.protobuf;stream=watch"
_OBJECT_TYPES = (_JSON, _PROTO, _YAML)
_STREAM_TYPES = (_JSON, _WATCH_JSON, _PROTO, _WATCH_PROTO, _YAML)
_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json",
                "application/merge-patch+json", "application/strategic-merge-patch+json")
# Subresources served as streams or upgraded connections rather than as objects.
_CONNECT = {"exec", "attach", "portforward", "proxy"}

_RV_DOC = "See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset"
_PARAM_DOCS: dict[str, tuple[str, str]] = {
    "allowWatchBookmarks": ("boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored."),
    "continue": ("string", "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token.\n\nThis field is not supported when watch is true. Clients may start a watch from the last resourceVersion value returned by the server and not miss any modifications."),
    "dryRun": ("string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed"),
    "fieldManager": ("string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint."),
    "fieldSelector": ("string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
    "fieldValidation": ("string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered."),
    "force": ("boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests."),
    "gracePeriodSeconds": ("integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately."),
    "ignoreStoreReadErrorWithClusterBreakingPotential": ("boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it"),
    "labelSelector": ("string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
    "limit": ("integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results. Setting a limit may return fewer than the requested amount of items (up to zero items) in the event all requested objects are filtered out and clients should only use the presence of the continue field to determine whether more results are available. Servers may choose not to support the limit argument and will return all of the available results. If limit is specified and the continue field is empty, clients may assume that no more results are available. This field is not supported if watch is true.\n\nThe server guarantees that the objects returned when using continue will be identical to issuing a single list call without a limit - that is, no objects created, modified, or deleted after the first request is issued will be included in any subsequent continued requests. This is sometimes referred to as a consistent snapshot, and ensures that a client that is using limit to receive smaller chunks of a very large result can ensure they see all possible objects. If objects are updated during a chunked list the version of the object that was present at the time the first list result was calculated is returned."),
    "orphanDependents": ("boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both."),
    "pretty": ("string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget)."),
    "propagationPolicy": ("string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground."),
    "resourceVersion": ("string", "resourceVersion sets a constraint on what resource versions a request may be served from. " + _RV_DOC),
    "resourceVersionMatch": ("string", "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set " + _RV_DOC),
    "sendInitialEvents": ("boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event  will be sent. The bookmark will report the ResourceVersion (RV) corresponding to the set of objects, and be marked with `\"k8s.io/initial-events-end\": \"true\"` annotation. Afterwards, the watch stream will proceed as usual, sending watch events corresponding to changes (subsequent to the RV) to objects watched.\n\nWhen `sendInitialEvents` option is set, we require `resourceVersionMatch` option to also be set. The semantic of the watch request is as following: - `resourceVersionMatch` = NotOlderThan\n  is interpreted as \"data at least as new as the provided `resourceVersion`\"\n  and the bookmark event is send when the state is synced\n  to a `resourceVersion` at least as fresh as the one provided by the ListOptions.\n  If `resourceVersion` is unset, this is interpreted as \"consistent read\" and the\n  bookmark event is send when the state is synced at least to the moment\n  when request started being processed.\n- `resourceVersionMatch` set to any other value or unset\n  Invalid error is returned.\n\nDefaults to true if `resourceVersion=\"\"` or `resourceVersion=\"0\"` (for backward compatibility reasons) and to false otherwise."),
    "timeoutSeconds": ("integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
    "watch": ("boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
    # pods/log
    "container": ("string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
    "follow": ("boolean", "Follow the log stream of the pod. Defaults to false."),
    "insecureSkipTLSVerifyBackend": ("boolean", "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to.  This will make the HTTPS connection between the apiserver and the backend insecure. This means the apiserver cannot verify the log data it is receiving came from the real kubelet.  If the kubelet is configured to verify the apiserver's TLS credentials, it does not mean the connection to the real kubelet is vulnerable to a man in the middle attack (e.g. an attacker could not intercept the actual log data coming from the real kubelet)."),
    "limitBytes": ("integer", "If set, the number of bytes to read from the server before terminating the log output. This may not display a complete final line of logging, and may return slightly more or slightly less than the specified limit."),
    "previous": ("boolean", "Return previous terminated container logs. Defaults to false."),
    "sinceSeconds": ("integer", "A relative time in seconds before the current time from which to show logs. If this value precedes the time a pod was started, only logs since the pod start will be returned. If this value is in the future, no logs will be returned. Only one of sinceSeconds or sinceTime may be specified."),
    "stream": ("string", "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used, and both stdout and stderr are returned interleaved. Note that when \"TailLines\" is specified, \"Stream\" can only be set to nil or \"All\"."),
    "tailLines": ("integer", "If set, the number of lines from the end of the logs to show. If not specified, logs are shown from the creation of the container or sinceSeconds or sinceTime. Note that when \"TailLines\" is specified, \"Stream\" can only be set to nil or \"All\"."),
    "timestamps": ("boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false."),
    # exec / attach / portforward / proxy
    "command": ("string", "Command is the remote command to execute. argv array. Not executed within a shell."),
    "stderr": ("boolean", "Redirect the standard error stream of the pod for this call."),
    "stdin": ("boolean", "Redirect the standard input stream of the pod for this call. Defaults to false."),
    "stdout": ("boolean", "Redirect the standard output stream of the pod for this call."),
    "tty": ("boolean", "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false."),
    "ports": ("integer", "List of ports to forward Required when using WebSockets"),
    "path": ("string", "Path is the URL path to use for the current proxy request."),
}

_LIST_PARAMS = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
                "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_PARAMS = ("dryRun", "gracePeriodSeconds", "ignoreStoreReadErrorWithClusterBreakingPotential",
                  "orphanDependents", "propagationPolicy")
_DELETECOLLECTION_PARAMS = ("continue", "dryRun", "fieldSelector", "gracePeriodSeconds",
                            "ignoreStoreReadErrorWithClusterBreakingPotential", "labelSelector", "limit",
                            "orphanDependents", "propagationPolicy", "resourceVersion",
                            "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds")
_SUB_PARAMS = {
    "log": ("container", "follow", "insecureSkipTLSVerifyBackend", "limitBytes", "previous",
            "sinceSeconds", "stream", "tailLines", "timestamps"),
    "exec": ("command", "container", "stderr", "stdin", "stdout", "tty"),
    "attach": ("container", "stderr", "stdin", "stdout", "tty"),
    "portforward": ("ports",),
    "proxy": ("path",),
}


def query_param(name: str) -> dict[str, Any]:
    """A query parameter in OpenAPI 3 shape, e.g. `fieldValidation`."""
    typ, doc = _PARAM_DOCS[name]
    return {"name": name, "in": "query", "description": doc, "schema": {"type": typ, "uniqueItems": True}}


def _path_param(name: str, doc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "description": doc, "required": True,
            "schema": {"type": "string", "uniqueItems": True}}


_NAMESPACE = _path_param("namespace", "object name and auth scope, such as for teams and projects")


def friendly_group(group: str) -> str:
    """Group as operation ids spell it: `rbac.authorization.k8s.io` -> `RbacAuthorization`, core -> `Core`."""
    if not group:
        return "Core"
    if group.endswith(".k8s.io"):
        group = group[: -len(".k8s.io")]
    parts = group.replace("-", ".").split(".")
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def tag(group: str, version: str) -> str:
    """The tag of a group-version's operations, e.g. `apps_v1`, `rbacAuthorization_v1`."""
    g = friendly_group(group)
    return f"{g[:1].lower()}{g[1:]}_{version}"


def gv_prefix(group: str, version: str) -> str:
    """The URL prefix of a group-version: `/api/v1` or `/apis/apps/v1`."""
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": V3_PREFIX + name}


def _content(name: str | None, types: tuple[str, ...]) -> dict[str, Any]:
    schema = _ref(name) if name else {"type": "string"}
    return {t: {"schema": schema} for t in types}


def _responses(name: str | None, codes: tuple[str, ...], types: tuple[str, ...] = _OBJECT_TYPES) -> dict[str, Any]:
    words = {"200": "OK", "201": "Created", "202": "Accepted"}
    out: dict[str, Any] = {c: {"description": words[c], "content": _content(name, types)} for c in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _op(*, gv: tuple[str, str], desc: str, op_id: str, action: str, gvk: dict[str, str],
        params: tuple[str, ...] = (), body: dict[str, Any] | None = None,
        responses: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [tag(*gv)], "description": desc, "operationId": op_id}
    if params:
        op["parameters"] = [query_param(p) for p in params]
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses
    op["x-kubernetes-action"] = action
    op["x-kubernetes-group-version-kind"] = gvk
    return op


def _body(name: str, types: tuple[str, ...] = ("*/*",)) -> dict[str, Any]:
    return {"content": {t: {"schema": _ref(name)} for t in types}, "required": True}


def resource_paths(r: resources_mod.Resource, type_name: str) -> dict[str, dict[str, Any]]:
    """The OpenAPI 3 path items kube-apiserver serves for one resource; `type_name` is its schema name."""
    gv = (r.group, r.version)
    gvn = friendly_group(r.group) + r.version[:1].upper() + r.version[1:]
    gvk = {"group": r.group, "version": r.version, "kind": r.kind}
    ns = "Namespaced" if r.namespaced else ""
    list_name = type_name + "List"
    prefix = gv_prefix(r.group, r.version)
    scope = f"{prefix}/namespaces/{{namespace}}" if r.namespaced else prefix
    scope_params = [_NAMESPACE] if r.namespaced else []
    pretty = query_param("pretty")
    name_param = _path_param("name", f"name of the {r.kind}")
    verbs = set(r.verbs)
    paths: dict[str, dict[str, Any]] = {}

    def op_id(verb: str) -> str:
        return f"{verb}{gvn}{ns}{r.kind}"

    coll: dict[str, Any] = {}
    if "list" in verbs:
        coll["get"] = _op(gv=gv, desc=f"list or watch objects of kind {r.kind}", op_id=op_id("list"),
                          action="list", gvk=gvk, params=_LIST_PARAMS,
                          responses=_responses(list_name, ("200",), _STREAM_TYPES))
    if "create" in verbs:
        coll["post"] = _op(gv=gv, desc=f"create{_article(r.kind)}{r.kind}", op_id=op_id("create"),
                           action="post", gvk=gvk, params=_WRITE_PARAMS, body=_body(type_name),
                           responses=_responses(type_name, ("200", "201", "202")))
    if "deletecollection" in verbs:
        coll["delete"] = _op(gv=gv, desc=f"delete collection of {r.kind}",
                             op_id=f"delete{gvn}Collection{ns}{r.kind}", action="deletecollection",
                             gvk=gvk, params=_DELETECOLLECTION_PARAMS, body=_body(META + "DeleteOptions"),
                             responses=_responses(META + "Status", ("200",)))
    if coll:
        coll["parameters"] = [*scope_params, pretty]
        paths[f"{scope}/{r.resource}"] = coll

    item: dict[str, Any] = {}
    if "get" in verbs:
        item["get"] = _op(gv=gv, desc=f"read the specified {r.kind}", op_id=op_id("read"), action="get",
                          gvk=gvk, responses=_responses(type_name, ("200",)))
    if "update" in verbs:
        item["put"] = _op(gv=gv, desc=f"replace the specified {r.kind}", op_id=op_id("replace"), action="put",
                          gvk=gvk, params=_WRITE_PARAMS, body=_body(type_name),
                          responses=_responses(type_name, ("200", "201")))
    if "delete" in verbs:
        item["delete"] = _op(gv=gv, desc=f"delete{_article(r.kind)}{r.kind}", op_id=op_id("delete"),
                             action="delete", gvk=gvk, params=_DELETE_PARAMS,
                             body=_body(META + "DeleteOptions"),
                             responses=_responses(META + "Status", ("200", "202")))
    if "patch" in verbs:
        patch_types = _PATCH_TYPES[:3] if r.crd else _PATCH_TYPES
        item["patch"] = _op(gv=gv, desc=f"partially update the specified {r.kind}", op_id=op_id("patch"),
                            action="patch", gvk=gvk, params=(*_WRITE_PARAMS, "force"),
                            body=_body(META + "Patch", patch_types),
                            responses=_responses(type_name, ("200", "201")))
    if item:
        item["parameters"] = [name_param, *scope_params, pretty]
        paths[f"{scope}/{r.resource}/{{name}}"] = item

    for sub in r.subresources:
        path_item = _subresource_item(r, sub, gvn=gvn, ns=ns, type_name=type_name)
        if path_item:
            path_item["parameters"] = [_path_param("name", f"name of the {sub.kind}"), *scope_params]
            if sub.name not in _CONNECT and sub.name != "log":
                path_item["parameters"].append(pretty)
            paths[f"{scope}/{r.resource}/{{name}}/{sub.name}"] = path_item

    if r.namespaced and "list" in verbs:
        paths[f"{prefix}/{r.resource}"] = {
            "get": _op(gv=gv, desc=f"list or watch objects of kind {r.kind}",
                       op_id=f"list{gvn}{r.kind}ForAllNamespaces", action="list", gvk=gvk,
                       responses=_responses(list_name, ("200",), _STREAM_TYPES)),
            "parameters": _sorted_params([query_param(p) for p in _LIST_PARAMS] + [pretty]),
        }
    if "watch" in verbs:
        _watch_paths(paths, r, gvn=gvn, ns=ns, gvk=gvk, scope=scope, scope_params=scope_params)
    return paths


def _article(kind: str) -> str:
    # kube-apiserver's wording: "create an Ingress", "create a Pod", but "create Endpoints".
    if kind.endswith("s") and not kind.endswith("ss"):
        return " "
    return " an " if kind[:1].lower() in "aeiou" else " a "


def _sorted_params(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(params, key=lambda p: p["name"])


def _watch_paths(paths: dict[str, Any], r: resources_mod.Resource, *, gvn: str, ns: str,
                 gvk: dict[str, str], scope: str, scope_params: list[dict[str, Any]]) -> None:
    gv = (r.group, r.version)
    prefix = gv_prefix(r.group, r.version)
    watch_scope = scope.replace(prefix, prefix + "/watch", 1)
    list_params = [query_param(p) for p in _LIST_PARAMS]
    event = _responses(META + "WatchEvent", ("200",), _STREAM_TYPES)
    deprecated = "deprecated: use the 'watch' parameter with a list operation instead"
    paths[f"{watch_scope}/{r.resource}"] = {
        "get": _op(gv=gv, desc=f"watch individual changes to a list of {r.kind}. {deprecated}.",
                   op_id=f"watch{gvn}{ns}{r.kind}List", action="watchlist", gvk=gvk, responses=event),
        "parameters": _sorted_params([*list_params, *scope_params, query_param("pretty")]),
    }
    paths[f"{watch_scope}/{r.resource}/{{name}}"] = {
        "get": _op(gv=gv, desc=f"watch changes to an object of kind {r.kind}. {deprecated}, filtered to a "
                   "single item with the 'fieldSelector' parameter.",
                   op_id=f"watch{gvn}{ns}{r.kind}", action="watch", gvk=gvk, responses=event),
        "parameters": _sorted_params([*list_params, _path_param("name", f"name of the {r.kind}"),
                                      *scope_params, query_param("pretty")]),
    }
    if r.namespaced:
        paths[f"{prefix}/watch/{r.resource}"] = {
            "get": _op(gv=gv, desc=f"watch individual changes to a list of {r.kind}. {deprecated}.",
                       op_id=f"watch{gvn}{r.kind}ListForAllNamespaces", action="watchlist", gvk=gvk,
                       responses=event),
            "parameters": _sorted_params([*list_params, query_param("pretty")]),
        }


def _subresource_item(r: resources_mod.Resource, sub: resources_mod.Subresource, *, gvn: str, ns: str,
                      type_name: str) -> dict[str, Any]:
    gv = (r.group, r.version)
    sub_gvk = {"group": sub.group or r.group, "version": sub.version or r.version, "kind": sub.kind}
    sub_type = schemas.definition_name(sub_gvk["group"], sub_gvk["version"], sub.kind)
    if sub.kind == r.kind and not sub.group:
        sub_type = type_name
    camel = "".join(p[:1].upper() + p[1:] for p in sub.name.split("-"))
    verbs = set(sub.verbs)
    item: dict[str, Any] = {}
    if sub.name in _CONNECT:
        for method, verb in (("get", "Get"), ("post", "Post"), ("put", "Put"), ("delete", "Delete"),
                             ("patch", "Patch"), ("head", "Head"), ("options", "Options")):
            if sub.name != "proxy" and method not in ("get", "post"):
                continue
            item[method] = _op(gv=gv, desc=f"connect {method.upper()} requests to {sub.name} of {r.kind}",
                               op_id=f"connect{gvn}{verb}{ns}{r.kind}{camel}", action="connect",
                               gvk=sub_gvk, params=_SUB_PARAMS[sub.name],
                               responses=_responses(None, ("200",), ("*/*",)))
        return item
    if sub.name == "log":
        item["get"] = _op(gv=gv, desc=f"read log of the specified {r.kind}", op_id=f"read{gvn}{ns}{r.kind}Log",
                          action="get", gvk=sub_gvk, params=(*_SUB_PARAMS["log"], "pretty"),
                          responses=_responses(None, ("200",), ("text/plain", _JSON, _YAML, _PROTO)))
        return item
    if sub_type is None:
        return item
    what = f"{sub.name} of the specified {r.kind}"
    if "get" in verbs:
        item["get"] = _op(gv=gv, desc=f"read {what}", op_id=f"read{gvn}{ns}{r.kind}{camel}", action="get",
                          gvk=sub_gvk, responses=_responses(sub_type, ("200",)))
    if "update" in verbs:
        item["put"] = _op(gv=gv, desc=f"replace {what}", op_id=f"replace{gvn}{ns}{r.kind}{camel}",
                          action="put", gvk=sub_gvk, params=_WRITE_PARAMS, body=_body(sub_type),
                          responses=_responses(sub_type, ("200", "201")))
    if "patch" in verbs:
        item["patch"] = _op(gv=gv, desc=f"partially update {what}", op_id=f"patch{gvn}{ns}{r.kind}{camel}",
                            action="patch", gvk=sub_gvk, params=(*_WRITE_PARAMS, "force"),
                            body=_body(META + "Patch", _PATCH_TYPES[:3] if r.crd else _PATCH_TYPES),
                            responses=_responses(sub_type, ("200", "201")))
    if "create" in verbs:
        item["post"] = _op(gv=gv, desc=f"create {sub.name} of{_article(r.kind)}{r.kind}",
                           op_id=f"create{gvn}{ns}{r.kind}{camel}", action="post", gvk=sub_gvk,
                           params=_WRITE_PARAMS, body=_body(sub_type),
                           responses=_responses(sub_type, ("200", "201", "202")))
    return item


def getter_path(path: str, *, op_id: str, desc: str, schema: str | None, tags: list[str],
                types: tuple[str, ...] = (_JSON, _YAML, _PROTO)) -> dict[str, Any]:
    """The paths of a discovery-style GET (`/apis/apps/`, `/version/`) returning one schema."""
    return {path: {"get": {"tags": tags, "description": desc, "operationId": op_id,
                           "responses": _responses(schema, ("200",), types)}}}


# ---- schemas ------------------------------------------------------------------------------------

def to_v3_schema(node: Any) -> Any:
    """A v2 schema rewritten the way kube-apiserver's v3 document carries it.

    `$ref` moves to `#/components/schemas/`; a `$ref` with siblings (description, patch strategy)
    becomes `allOf: [{$ref}]` next to them, since OpenAPI 3.0 ignores a `$ref`'s siblings.
    """
    if isinstance(node, list):
        return [to_v3_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    ref = node.get("$ref")
    for k, v in node.items():
        if k == "$ref":
            continue
        if k in ("properties", "patternProperties", "definitions") and isinstance(v, dict):
            out[k] = {pk: to_v3_schema(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "not") or k in ("allOf", "anyOf", "oneOf"):
            out[k] = to_v3_schema(v)
        elif k == "x-kubernetes-group-version-kind" or k == "enum" or k == "default" or k == "example":
            out[k] = copy.deepcopy(v)
        else:
            out[k] = to_v3_schema(v) if isinstance(v, (dict, list)) else v
    if isinstance(ref, str):
        target = V3_PREFIX + ref[len(V2_PREFIX):] if ref.startswith(V2_PREFIX) else ref
        if not out:
            return {"$ref": target}
        out["allOf"] = [{"$ref": target}]
    return out


def refs(node: Any, into: set[str]) -> set[str]:
    """Collect the definition names a (v2 or v3) schema refers to."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            into.add(ref.rsplit("/", 1)[-1])
        for v in node.values():
            if isinstance(v, (dict, list)):
                refs(v, into)
    elif isinstance(node, list):
        for v in node:
            refs(v, into)
    return into


def v2_path_item(item: dict[str, Any]) -> dict[str, Any]:
    """The Swagger 2.0 form of an OpenAPI 3 path item built above."""
    out: dict[str, Any] = {}
    for method, op in item.items():
        if method == "parameters":
            out["parameters"] = [_v2_param(p) for p in op]
            continue
        v2: dict[str, Any] = {"description": op["description"]}
        body = op.get("requestBody")
        v2["consumes"] = list(body["content"]) if body else ["*/*"]
        first = next(iter(op["responses"].values()))
        v2["produces"] = [t for t in first.get("content", {"*/*": None})]
        v2["schemes"] = ["https"]
        v2["tags"] = op["tags"]
        v2["operationId"] = op["operationId"]
        params = [_v2_param(p) for p in op.get("parameters", ())]
        if body:
            schema = next(iter(body["content"].values()))["schema"]
            params.insert(0, {"name": "body", "in": "body", "required": True, "schema": _v2_ref(schema)})
        if params:
            v2["parameters"] = params
        responses: dict[str, Any] = {}
        for code, resp in op["responses"].items():
            r2: dict[str, Any] = {"description": resp["description"]}
            content = resp.get("content")
            if content:
                r2["schema"] = _v2_ref(next(iter(content.values()))["schema"])
            responses[code] = r2
        v2["responses"] = responses
        for k, v in op.items():
            if k.startswith("x-"):
                v2[k] = v
        out[method] = v2
    return out


def _v2_ref(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return {"$ref": V2_PREFIX + ref[len(V3_PREFIX):]}
    return dict(schema)


def _v2_param(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"uniqueItems": True, "type": p["schema"]["type"], "description": p["description"],
                           "name": p["name"], "in": p["in"]}
    if p.get("required"):
        out["required"] = True
    return out
