"""A deliberately small HTTP/1.1 server on a unix socket: one bounded request per connection, JSON in and out.

Why not ``http.server``: it costs ~9 MiB of resident memory (email parsing and friends) in a process
whose whole budget is 40 MiB, and it bounds neither header size nor request time the way we need.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .protocol import MAX_BODY, MAX_CONNECTIONS, MAX_HEADER_BYTES, REQUEST_TIMEOUT, ProtocolError

log = logging.getLogger(__name__)
REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class Response:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Request], Response]
BodyLimit = Callable[[str], int]


class _IncompleteError(Exception):
    pass


class _Reader:
    """Reads from a socket against one deadline for the whole request."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""

    def _fill(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError("Timeout", "the request did not arrive in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise ProtocolError("Timeout", "the request did not arrive in time") from None
        if not chunk:
            raise _IncompleteError
        self.buf += chunk

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEADER_BYTES:
                raise ProtocolError("BadRequest", f"headers exceed {MAX_HEADER_BYTES} bytes")
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            raise ProtocolError("BadRequest", f"headers exceed {MAX_HEADER_BYTES} bytes")
        return head

    def body(self, length: int) -> bytes:
        while len(self.buf) < length:
            self._fill()
        return self.buf[:length]


def parse_request(reader: _Reader, body_limit: BodyLimit) -> Request:
    lines = reader.head().decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise ProtocolError("BadRequest", "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise ProtocolError("BadRequest", "only HTTP/1.x is spoken here")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError("BadRequest", "malformed header line")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise ProtocolError("BadRequest", "chunked bodies are not accepted; send Content-Length")
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    request = Request(method, url.path, query, headers)
    raw_length = headers.get("content-length", "0")
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (raw_length.isascii() and raw_length.isdigit()):
        raise ProtocolError("BadRequest", "Content-Length must be a number")
    limit = body_limit(url.path)
    # A number too long for any limit is not converted: int() refuses more than 4300 digits.
    digits = raw_length.lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        raise ProtocolError("BadRequest", f"the body exceeds {limit} bytes for {url.path}")
    length = int(digits)
    if length:
        try:
            request.body = json.loads(reader.body(length))
        except (ValueError, RecursionError):  # RecursionError: arrays or objects nested thousands deep
            raise ProtocolError("BadRequest", "the body is not JSON") from None
    return request


def encode_response(response: Response) -> bytes:
    payload = json.dumps(response.body, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


def bind_unix(path: Path, mode: int = 0o660) -> socket.socket:
    """A listening unix socket at ``path``, replacing only a stale socket (never a file or a symlink)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.bind(str(path))
    os.chmod(path, mode)
    sock.listen(64)
    return sock


class UnixHTTPServer:
    """Serves ``handler`` on a unix socket, a thread per connection, at most ``MAX_CONNECTIONS`` at once."""

    def __init__(self, path: Path, handler: Handler, body_limit: BodyLimit = lambda _: MAX_BODY) -> None:
        self.path = path
        self.handler = handler
        self.body_limit = body_limit
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._sock = bind_unix(self.path)
        self._thread = threading.Thread(target=self._accept_loop, name="command-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            if not self._slots.acquire(blocking=False):
                busy = ProtocolError("BadRequest", "too many connections; retry shortly")
                self._reply_and_close(conn, Response(503, busy.to_body()))
                continue
            threading.Thread(target=self._serve, args=(conn,), name="command-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            reader = _Reader(conn, time.monotonic() + REQUEST_TIMEOUT)
            try:
                request = parse_request(reader, self.body_limit)
            except _IncompleteError:
                return
            except ProtocolError as exc:
                status = 408 if exc.reason == "Timeout" else exc.status
                self._reply_and_close(conn, Response(status, exc.to_body()))
                return
            try:
                response = self.handler(request)
            except ProtocolError as exc:
                response = Response(exc.status, exc.to_body())
            except Exception:
                log.exception("command %s %s failed", request.method, request.path)
                response = Response(500, ProtocolError("Internal", "internal error; see the launcher log").to_body())
            self._reply_and_close(conn, response)
        finally:
            # Also when the peer stopped sending mid-request: otherwise the socket stays open (and the peer
            # waits) until the garbage collector happens to break the traceback's reference cycle.
            conn.close()
            self._slots.release()

    @staticmethod
    def _reply_and_close(conn: socket.socket, response: Response) -> None:
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            conn.sendall(encode_response(response))
        except OSError:
            pass
        finally:
            conn.close()
