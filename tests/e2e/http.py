"""A small synchronous HTTPS helper for end-to-end tests that need raw requests and responses."""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import tempfile
import urllib.parse
from typing import Any

import orjson
import yaml


class Raw:
    """Raw HTTPS requests to a cluster, authenticated with its kubeconfig's client certificate."""

    def __init__(self, kubeconfig: str) -> None:
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.url = urllib.parse.urlsplit(cluster["server"])
        self.ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        d = tempfile.mkdtemp()
        cert, key = os.path.join(d, "c"), os.path.join(d, "k")
        with open(cert, "wb") as f:
            f.write(base64.b64decode(user["client-certificate-data"]))
        with open(key, "wb") as f:
            f.write(base64.b64decode(user["client-key-data"]))
        self.ctx.load_cert_chain(cert, key)
        self.anon_ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())

    def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                anonymous: bool = False, timeout: float = 10) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPSConnection(self.url.hostname, self.url.port,
                                           context=self.anon_ctx if anonymous else self.ctx, timeout=timeout)
        h = {"Accept": "application/json"}
        if body is not None and not isinstance(body, (bytes, str)):
            body = orjson.dumps(body)
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        try:
            parsed = orjson.loads(raw) if raw and "json" in hdrs.get("content-type", "") and "\n{" not in raw.decode(errors="replace") else raw
        except orjson.JSONDecodeError:
            parsed = raw
        return resp.status, hdrs, parsed
