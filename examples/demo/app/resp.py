"""A minimal Redis client speaking RESP2 over a socket: AUTH and any command, replies as Python values."""

from __future__ import annotations

import socket


class Error(Exception):
    """An error reply from Redis (e.g. WRONGPASS, NOAUTH) or a broken connection."""


Reply = bytes | int | list["Reply"] | None


class Connection:
    """One connection; each call sends a command and reads its reply."""

    def __init__(self, host: str, port: int, *, password: str = "", timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        if password:
            try:
                self.call("AUTH", password)
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def call(self, *args: str | int) -> Reply:
        """Send a command as an array of bulk strings and return its reply."""
        parts = [str(a).encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(out)
        return self._reply()

    def _reply(self) -> Reply:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise Error("connection closed by Redis")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise Error(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise Error(f"unexpected reply {line!r}")
