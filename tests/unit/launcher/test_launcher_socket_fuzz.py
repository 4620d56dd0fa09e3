"""Fuzzing a real launcher's command socket: a ``virt-launcher`` process (fake libvirt backend, the real
socket server, parser and routes) gets malformed, oversized, truncated, slow and random requests.

Whatever arrives, the launcher stays up, answers with a 4xx protocol error (the JSON error body of
``runtime.protocol``) or closes the connection, still answers ``GET /v1/ping`` afterwards, and its
memory and thread count come back to where they were: nothing a peer sends piles up.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from virt_launcher.runtime import protocol

pytestmark = pytest.mark.unit

ROUTES = ["/v1/ping", "/v1/domain", "/v1/pause", "/v1/unpause", "/v1/shutdown", "/v1/sync", "/v1/stats", "/v1/x", "/"]


@dataclass
class Launcher:
    process: subprocess.Popen[bytes]
    socket_path: Path
    log: Path

    def alive(self) -> None:
        assert self.process.poll() is None, f"the launcher exited ({self.process.returncode}):\n{self.log.read_text()}"

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.process.pid}")


def exchange(path: Path, data: bytes, *, close_write: bool = True, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the launcher closes it (b"" if it just closed)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the launcher refused early and closed: fine, its answer (if any) is still readable
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    return reply


def assert_refused_or_closed(reply: bytes, request: bytes) -> None:
    """Either nothing (closed) or one complete 4xx answer with a protocol error body."""
    if not reply:
        return
    head, sep, body = reply.partition(b"\r\n\r\n")
    assert sep, f"a partial answer {reply[:200]!r} to {request[:200]!r}"
    status = int(head.split()[1])
    assert 400 <= status < 500, f"{status} for {request[:300]!r}: {body[:300]!r}"
    error = json.loads(body)["error"]
    assert error["reason"] in protocol.STATUS_BY_REASON and error["message"]


def ping(path: Path) -> dict[str, object]:
    reply = exchange(path, b"GET /v1/ping HTTP/1.1\r\nHost: launcher\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:300]
    answer: dict[str, object] = json.loads(body)
    return answer


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    """``virt-launcher --backend fake`` waiting for its spec, as a launcher pod's main process does."""
    base = Path(tempfile.mkdtemp(prefix="pvfz", dir="/tmp"))
    log = base / "launcher.log"
    argv = [
        sys.executable,
        "-m",
        "virt_launcher",
        f"--sockets-dir={base / 's'}",
        f"--private-dir={base / 'p'}",
        f"--user={os.getuid()}:{os.getgid()}",
        "--backend=fake",
        "--log-format=text",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    running = Launcher(process, base / "s" / "launcher.sock", log)
    try:
        deadline = time.monotonic() + 30
        while not running.socket_path.exists():
            running.alive()
            assert time.monotonic() < deadline, f"no command socket within 30 s:\n{log.read_text()}"
            time.sleep(0.05)
        assert ping(running.socket_path)["runtime"] == "fake"
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(base, ignore_errors=True)


# -- what a confused or hostile peer sends ---------------------------------------------------------------

# Latin-1 text without line breaks (a line break would make a header line of its own).
tokens = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)
header_names = st.builds(
    lambda t: "X-" + t, st.text(st.characters(codec="latin-1", exclude_characters="\r\n:"), max_size=20)
)


@st.composite
def malformed_requests(draw: st.DrawFn) -> bytes:
    """A request with at least one flaw no correct server accepts (in its request line, a header, its
    length or its JSON body), the rest drawn at random."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]) | tokens)
    target = draw(st.sampled_from(ROUTES) | tokens)
    version = "HTTP/1.1"
    headers = [f"{name}: {value}" for name, value in draw(st.lists(st.tuples(header_names, tokens), max_size=4))]
    body = b""
    flaw = draw(st.sampled_from(["version", "length", "header", "chunked", "json", "too long", "request line"]))
    if flaw == "version":
        version = draw(tokens.filter(lambda v: not v.startswith("HTTP/1.")))
    elif flaw == "length":
        headers.append(
            "Content-Length: " + draw(tokens.filter(lambda v: not v.strip().isascii() or not v.strip().isdigit()))
        )
    elif flaw == "header":
        headers.insert(draw(st.integers(0, len(headers))), draw(tokens.filter(lambda v: ":" not in v)) or " x: y")
    elif flaw == "chunked":
        headers.append("Transfer-Encoding: chunked")
        body = b"5\r\nhello\r\n0\r\n\r\n"
    elif flaw == "json":
        method = "POST"
        nested = st.integers(900, 4000).map(lambda n: b"[" * n + b"]" * n)  # deeper than the parser recurses
        body = draw(st.binary(max_size=200).map(lambda b: b"{" + b.replace(b"}", b"")) | nested)
        headers.append(f"Content-Length: {len(body)}")
    elif flaw == "too long":
        digits = st.integers(4300, 12000).map(lambda n: "9" * n)  # more digits than int() converts
        headers.append(f"Content-Length: {draw(st.integers(protocol.MAX_SYNC_BODY + 1).map(str) | digits)}")
    else:
        target = target + " " + draw(tokens)
    head = "\r\n".join([f"{method} {target} {version}", *headers]).encode("latin-1")
    return head + b"\r\n\r\n" + body


@st.composite
def truncated_requests(draw: st.DrawFn) -> bytes:
    """A valid request cut short anywhere before its end (then the peer closes its side)."""
    body = json.dumps({"gracePeriodSeconds": 1}).encode()
    whole = b"POST /v1/shutdown HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    return whole[: draw(st.integers(0, len(whole) - 1))]


def fuzz(launcher: Launcher, requests: st.SearchStrategy[bytes], *found: bytes, max_examples: int = 150) -> None:
    """Each drawn request (and each of ``found``) gets a 4xx or a close; the launcher lives on and answers."""

    @settings(max_examples=max_examples, deadline=None)
    @given(requests)
    def one(request: bytes) -> None:
        assert_refused_or_closed(exchange(launcher.socket_path, request), request)

    for request in found:
        one = example(request)(one)
    one()
    launcher.alive()
    ping(launcher.socket_path)


def test_launcher_answers_random_bytes_with_a_4xx_or_by_closing(launcher: Launcher) -> None:
    # Found by this test: a peer that sent (nearly) nothing and closed its side waited for the close
    # until the garbage collector ran.
    fuzz(launcher, st.binary(max_size=2048), b"", b"GET")


def test_launcher_refuses_malformed_requests(launcher: Launcher) -> None:
    # Found by this test: each made the connection's thread die with a traceback and no answer.
    fuzz(
        launcher,
        malformed_requests(),
        "GET /v1/ping HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"),
        b"POST /v1/sync HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"POST /v1/kill HTTP/1.1\r\nContent-Length: " + b"0" * 5000 + b"3\r\n\r\n{x}",
        b"POST /v1/sync HTTP/1.1\r\nContent-Length: 4000\r\n\r\n" + b"[" * 4000,
    )


def test_launcher_closes_truncated_requests(launcher: Launcher) -> None:
    fuzz(launcher, truncated_requests(), max_examples=60)


def test_oversized_requests_are_refused_without_reading_them_whole(launcher: Launcher) -> None:
    huge_header = b"GET /v1/ping HTTP/1.1\r\nX: " + b"y" * (4 * protocol.MAX_HEADER_BYTES) + b"\r\n\r\n"
    endless_line = b"G" * (protocol.MAX_HEADER_BYTES * 8)
    body = b"{" + b" " * (protocol.MAX_BODY + 10) + b"}"
    big_body = b"POST /v1/pause HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    announced = b"POST /v1/sync HTTP/1.1\r\nContent-Length: %d\r\n\r\n{" % (protocol.MAX_SYNC_BODY * 50)
    for request in (huge_header, endless_line, big_body, announced):
        reply = exchange(launcher.socket_path, request)
        assert reply.startswith(b"HTTP/1.1 4"), (request[:80], reply[:200])
        assert_refused_or_closed(reply, request)
    launcher.alive()
    ping(launcher.socket_path)


def test_slow_requests_are_served_and_stalled_ones_cut_off(launcher: Launcher) -> None:
    # Slow but within the request time: answered.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(launcher.socket_path))
        for piece in (b"GET /v1/pi", b"ng HTTP/1.1\r\n", b"Host: l\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.3)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")

    # More stalled peers than the launcher serves at once: each is cut off after the request time,
    # those beyond the limit are told to retry, and afterwards the launcher answers again.
    stalled = []
    for _ in range(protocol.MAX_CONNECTIONS + 4):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(protocol.REQUEST_TIMEOUT + 10)
        sock.connect(str(launcher.socket_path))
        sock.sendall(b"POST /v1/pause HTTP/1.1\r\nContent-Length: 2\r\n")
        stalled.append(sock)
    started = time.monotonic()
    answers = []
    for sock in stalled:
        with sock:
            answers.append(sock.recv(65536).split(b"\r\n", 1)[0])
    assert time.monotonic() - started < protocol.REQUEST_TIMEOUT + 5
    assert set(answers) <= {b"HTTP/1.1 408 Request Timeout", b"HTTP/1.1 503 Service Unavailable"}, answers
    assert answers.count(b"HTTP/1.1 408 Request Timeout") == protocol.MAX_CONNECTIONS
    launcher.alive()
    ping(launcher.socket_path)


def test_memory_and_threads_do_not_grow_with_what_peers_send(launcher: Launcher) -> None:
    requests = [os.urandom(n) for n in (10, 500, 5000)] + [
        b"GET /v1/ping HTTP/1.1\r\nX: " + b"y" * (2 * protocol.MAX_HEADER_BYTES) + b"\r\n\r\n",
        b"POST /v1/pause HTTP/1.1\r\nContent-Length: 9\r\n\r\n{",
        b"POST /v1/sync HTTP/1.1\r\nContent-Length: 40\r\n\r\n" + b"[" * 40,
        b"GET /v1/domain HTTP/1.1\r\n\r\n",
    ]

    def round_of(times: int) -> None:
        for _ in range(times):
            for request in requests:
                exchange(launcher.socket_path, request)

    round_of(50)  # warm up: allocator arenas, imports on first use
    time.sleep(0.5)
    threads = launcher.status("Threads")
    rss = launcher.status("VmRSS")
    round_of(300)
    time.sleep(0.5)
    launcher.alive()
    grown = launcher.status("VmRSS") - rss
    assert grown < 4 * 1024, f"RSS grew by {grown} KiB over {300 * len(requests)} requests"
    assert launcher.status("Threads") <= threads
    ping(launcher.socket_path)
