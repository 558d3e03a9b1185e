"""Server-wide state shared by the request handlers, and the per-request view of one call."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from pocketkube.api import errors, resources
from pocketkube.apiserver import requestinfo
from pocketkube.base import clock as clock_mod


@dataclasses.dataclass
class User:
    """An authenticated (or anonymous) caller."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """authentication.k8s.io/v1 UserInfo (audit events, AdmissionReviews, TokenReviews), empty fields left out."""
        out: dict[str, Any] = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        if self.groups:
            out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))


@dataclasses.dataclass
class Server:
    """Everything the handlers share: registry, objects, clock, allocators, hooks."""

    registry: resources.Registry
    objects: Any                 # objects.Objects
    store: Any                   # store.base.Store
    clock: clock_mod.Clock
    allocators: Any = None       # allocators.Allocators
    crds: Any = None             # crds.CRDs
    authorizer: Any = None
    authenticator: Any = None    # authn.Authenticator: token file, ServiceAccount and legacy Secret tokens
    admission: list[Any] = dataclasses.field(default_factory=list)
    server_address: str = "127.0.0.1:6443"
    min_watch_timeout: float = 1800.0
    bookmark_interval: float = 60.0
    shutting_down: bool = False
    kubelet_ssl: Any = None      # ssl.SSLContext presenting a client cert to kubelets (pods/log)


@dataclasses.dataclass
class Call:
    """One resource request: who, what, the resolved resource and the query parameters."""

    request: web.Request
    info: requestinfo.RequestInfo
    res: resources.Resource
    user: User
    query: dict[str, str]
    warnings: list[str] = dataclasses.field(default_factory=list)
    # Key/value notes for the audit log (PodSecurity, webhooks, policies add theirs).
    audit_annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.info.namespace if self.res.namespaced else ""

    def param(self, name: str, default: str = "") -> str:
        return self.query.get(name, default)

    def bool_param(self, name: str) -> bool:
        v = self.query.get(name, "")
        if v in ("", "false", "0", "False"):
            return False
        if v in ("true", "1", "True"):
            return True
        raise errors.BadRequest(f'strconv.ParseBool: parsing "{v}": invalid syntax')

    def int_param(self, name: str) -> int | None:
        v = self.query.get(name)
        if v is None or v == "":
            return None
        try:
            return int(v)
        except ValueError:
            raise errors.BadRequest(f'strconv.ParseInt: parsing "{v}": invalid syntax') from None

    @property
    def dry_run(self) -> bool:
        values = self.request.query.getall("dryRun", [])
        for v in values:
            if v != "All":
                raise errors.BadRequest(f'dryRun: Unsupported value: "{v}": supported values: "All"')
        return bool(values)

    def field_manager(self, default_from_agent: bool = True) -> str:
        fm = self.query.get("fieldManager", "")
        if fm:
            if len(fm) > 128:
                raise errors.Invalid(kind=self.res.kind, group=self.res.group, name=self.info.name,
                                     causes=[errors.invalid("fieldManager", fm, "must be no more than 128 characters")])
            return fm
        agent = self.request.headers.get("User-Agent", "")
        return agent.split("/", 1)[0] if agent else "unknown"
