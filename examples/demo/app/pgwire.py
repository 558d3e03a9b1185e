"""A minimal PostgreSQL client (startup, trust/cleartext/md5/SCRAM-SHA-256 auth, simple query) on the stdlib."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct


class Error(Exception):
    """The server refused a query or a login; the message is PostgreSQL's own (severity, code, text)."""


class Connection:
    """One session speaking the frontend/backend protocol v3, enough for a small app's simple queries."""

    def __init__(self, host: str, port: int, *, user: str, password: str, database: str,
                 timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        try:
            self._startup(user, password, database)
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.sendall(b"X" + struct.pack("!I", 4))
        except OSError:
            pass
        self.sock.close()

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run one or more statements; the rows of the last result set, every value as text or None."""
        self._send(b"Q", sql.encode() + b"\0")
        rows: list[tuple[str | None, ...]] = []
        error: Error | None = None
        while True:
            kind, body = self._read()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                rows.append(_data_row(body))
            elif kind == b"E":
                error = Error(_error_text(body))
            elif kind == b"Z":
                if error is not None:
                    raise error
                return rows

    def _startup(self, user: str, password: str, database: str) -> None:
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                          for k, v in (("user", user), ("database", database), ("client_encoding", "UTF8")))
        body = struct.pack("!I", 196608) + params + b"\0"
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        scram: _Scram | None = None
        while True:
            kind, body = self._read()
            if kind == b"E":
                raise Error(_error_text(body))
            if kind == b"Z":
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, notices
            code = struct.unpack("!I", body[:4])[0]
            if code == 3:
                self._send(b"p", password.encode() + b"\0")
            elif code == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                outer = "md5" + hashlib.md5(inner + body[4:8]).hexdigest()
                self._send(b"p", outer.encode() + b"\0")
            elif code == 10:
                if b"SCRAM-SHA-256\0" not in body[4:]:
                    raise Error(f"no supported SASL mechanism in {body[4:]!r}")
                scram = _Scram(password)
                first = scram.client_first()
                self._send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
            elif code == 11 and scram is not None:
                self._send(b"p", scram.client_final(body[4:]))
            elif code == 12 and scram is not None:
                scram.verify(body[4:])
            elif code != 0:
                raise Error(f"unsupported authentication request {code}")

    def _send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!I", len(body) + 4) + body)

    def _read(self) -> tuple[bytes, bytes]:
        header = self._exactly(5)
        size = struct.unpack("!I", header[1:])[0]
        return header[:1], self._exactly(size - 4)

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Error("server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: no channel binding."""

    def __init__(self, password: str, *, nonce: str = "", user: str = "") -> None:
        # PostgreSQL ignores the SCRAM user name (the startup message named the role); tests pass RFC 7677's.
        self.password = password.encode()
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={user},r={self.nonce}"
        self.server_key = b""
        self.auth_message = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
        if not fields["r"].startswith(self.nonce):
            raise Error("SCRAM: the server's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        without_proof = f"c=biws,r={fields['r']}"
        self.auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), self.auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        expected = base64.b64encode(hmac.digest(self.server_key, self.auth_message, "sha256")).decode()
        if server_final.decode() != f"v={expected}":
            raise Error("SCRAM: the server's signature does not match (wrong server?)")


def literal(value: str) -> str:
    """A string as an SQL literal (standard_conforming_strings is on by default since 9.1)."""
    if "\0" in value:
        raise ValueError("text must not contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def _data_row(body: bytes) -> tuple[str | None, ...]:
    count = struct.unpack("!H", body[:2])[0]
    pos = 2
    values: list[str | None] = []
    for _ in range(count):
        size = struct.unpack("!i", body[pos:pos + 4])[0]
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[pos:pos + size].decode())
            pos += size
    return tuple(values)


def _error_text(body: bytes) -> str:
    fields = {part[:1]: part[1:].decode(errors="replace") for part in body.split(b"\0") if part}
    return f"{fields.get(b'S', 'ERROR')} {fields.get(b'C', '')}: {fields.get(b'M', '')}"
