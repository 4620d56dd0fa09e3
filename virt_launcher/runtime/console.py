"""The serial console: QEMU's serial port proxied to one client at a time, and kept in a bounded log.

QEMU connects to ``serial_socket`` (the launcher listens first, so no early byte is lost). Clients —
the handler's console proxy — connect to ``client_socket``; a new client replaces the current one,
which is closed. Everything the guest writes is appended to ``log_path``; when the log reaches
``log_limit`` bytes it is rotated once (``.1``), so the two files never hold more than twice that.
A client that does not read falls ``MAX_PENDING`` bytes behind and is dropped; the guest never waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from pathlib import Path

from .httpd import bind_unix

log = logging.getLogger(__name__)
MAX_PENDING = 1 << 20
LOG_LIMIT = 1 << 20
CHUNK = 65536


class _Peer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()


class ConsoleProxy:
    def __init__(
        self, serial_socket: Path, client_socket: Path, log_path: Path | None, log_limit: int = LOG_LIMIT
    ) -> None:
        self.serial_socket = serial_socket
        self.client_socket = client_socket
        self.log_path = log_path
        self.log_limit = log_limit
        self._sel = selectors.DefaultSelector()
        self._qemu: _Peer | None = None
        self._client: _Peer | None = None
        self._log_file = log_path.open("ab") if log_path else None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self.bytes_from_guest = 0
        self.first_byte = threading.Event()
        self._serial_listener = bind_unix(serial_socket, 0o600)
        self._client_listener = bind_unix(client_socket, 0o660)
        for listener in (self._serial_listener, self._client_listener):
            listener.setblocking(False)
            self._sel.register(listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(2)
        for peer in (self._qemu, self._client):
            if peer is not None:
                peer.sock.close()
        for listener, path in (
            (self._serial_listener, self.serial_socket),
            (self._client_listener, self.client_socket),
        ):
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self._log_file:
            self._log_file.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- the loop -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, mask in self._sel.select(timeout=1.0):
                if key.data == "wake":
                    os.read(self._wake_r, 64)
                elif key.data == "accept":
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                elif isinstance(key.data, _Peer):
                    self._service(key.data, mask)

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, OSError):
            return
        sock.setblocking(False)
        peer = _Peer(sock)
        if listener is self._serial_listener:
            if self._qemu is not None:
                self._drop(self._qemu)
            self._qemu = peer
            log.info("QEMU connected its serial port")
        else:
            if self._client is not None:
                log.info("a new console client replaces the current one")
                self._drop(self._client)
            self._client = peer
        self._sel.register(sock, selectors.EVENT_READ, peer)

    def _drop(self, peer: _Peer) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(peer.sock)
        peer.sock.close()
        if peer is self._qemu:
            self._qemu = None
        if peer is self._client:
            self._client = None

    def _service(self, peer: _Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(peer)
        if mask & selectors.EVENT_READ and peer.sock.fileno() >= 0:
            try:
                data = peer.sock.recv(CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop(peer)
                return
            if peer is self._qemu:
                self._from_guest(data)
            elif self._qemu is not None:
                self._send(self._qemu, data)

    def _from_guest(self, data: bytes) -> None:
        self.bytes_from_guest += len(data)
        self.first_byte.set()
        self._write_log(data)
        if self._client is not None:
            self._send(self._client, data)

    def _send(self, peer: _Peer, data: bytes) -> None:
        peer.pending += data
        if len(peer.pending) > MAX_PENDING:
            log.warning("console peer fell %d bytes behind; dropping it", len(peer.pending))
            self._drop(peer)
            return
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        try:
            sent = peer.sock.send(peer.pending) if peer.pending else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(peer)
            return
        del peer.pending[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.pending else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(peer.sock, events, peer)

    def _write_log(self, data: bytes) -> None:
        if self._log_file is None or self.log_path is None:
            return
        while data:
            room = self.log_limit - self._log_file.tell()
            self._log_file.write(data[:room])
            data = data[room:]
            if self._log_file.tell() >= self.log_limit:
                self._log_file.close()
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
                self._log_file = self.log_path.open("ab")
        self._log_file.flush()
