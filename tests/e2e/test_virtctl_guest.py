"""virtctl against a real guest, the whole way: virtctl -> kube-apiserver (aggregation) -> virt-api
(SubjectAccessReview) -> virt-handler (mutual TLS) -> the launcher's console socket, or a TCP connection
made inside the launcher pod's network namespace to the guest's busybox httpd.

The VMI is created through the API and run by podvirt's controller and handler; virt-api reaches the
handlers (host processes here) through ``--handler-endpoint`` (see ``conftest.py``).
"""

from __future__ import annotations

import os
import re
import secrets
import select
import signal
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2e_env import Podvirt
from test_vmi_lifecycle import tiny_vmi

from devcluster.config import free_port
from podvirt_common.kube import VIRTUAL_MACHINE_INSTANCES
from virt_api.testing import VirtApiProcess

pytestmark = [pytest.mark.e2e, pytest.mark.vm]

PAGE = b"PODVIRT-THROUGH-PORTFORWARD"


@dataclass(frozen=True)
class Guest:
    namespace: str
    name: str
    node: str


@pytest.fixture(scope="module")
def guest(podvirt: Podvirt, virt_api: VirtApiProcess, tiny_containerdisk: str) -> Iterator[Guest]:
    """A running tiny guest with busybox httpd serving PAGE on port 8080 (started from its console)."""
    namespace = f"vg-{secrets.token_hex(2)}"
    podvirt.cluster.kubectl("create", "namespace", namespace)
    try:
        podvirt.kube.create(VIRTUAL_MACHINE_INSTANCES, tiny_vmi("pf", tiny_containerdisk), namespace)
        node = podvirt.wait_phase(namespace, "pf", "Running")["status"]["nodeName"]
        podvirt.read_console_until(node, namespace, "pf", b"PODVIRT-IP=10.0.2.2", send=b"\n", timeout=120)
        podvirt.read_console_until(
            node,
            namespace,
            "pf",
            b"HTTPD-8-UP",
            send=b"mkdir -p /tmp/w && echo " + PAGE + b" > /tmp/w/index.html && "
            b"httpd -p 8080 -h /tmp/w && echo HTTPD-$((4+4))-UP\n",
        )
        yield Guest(namespace, "pf", node)
    finally:
        podvirt.kube.delete(VIRTUAL_MACHINE_INSTANCES, "pf", namespace)
        podvirt.wait_vmi(namespace, "pf", "deleted", lambda o: o is None, timeout=90)
        podvirt.cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def virtctl_env(podvirt: Podvirt) -> dict[str, str]:
    env = {**os.environ, "KUBECONFIG": str(podvirt.cluster.kubeconfig), "TERM": "xterm"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def virtctl(podvirt: Podvirt, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "virtctl", *args], env=virtctl_env(podvirt), **popen)  # type: ignore[call-overload, no-any-return]


def read_until(fd: int, marker: bytes, within: float, poke: bytes = b"", seen: bytes = b"") -> bytes:
    """Read the pty master until ``marker``; ``poke`` is typed again every few seconds of silence."""
    deadline = time.monotonic() + within
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {marker!r}; the terminal showed {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], min(remaining, 3.0))
        if not ready:
            if poke:
                os.write(fd, poke)
            continue
        try:
            seen += os.read(fd, 4096)
        except OSError:  # EIO: every holder of the slave is gone
            break
    return seen


def test_console_in_a_terminal_types_into_the_guest_and_restores_the_terminal(podvirt: Podvirt, guest: Guest) -> None:
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    console = virtctl(podvirt, "console", guest.name, "-n", guest.namespace, stdin=slave, stdout=slave, stderr=slave)
    try:
        seen = read_until(master, b"guest# ", 120, poke=b"\r")
        os.write(master, b"echo PF-$((20+22))\r")
        # The answer on a line of its own (the echoed command holds only the unexpanded expression).
        seen = read_until(master, b"PF-42\r\n", 60, seen=seen)
        assert b"PF-42\r\n" in seen.split(b"PF-$((20+22))", 1)[-1], "the answer comes from the guest's shell"
        during = termios.tcgetattr(slave)
        assert during != before, "raw mode while connected"
        os.write(master, b"\x1d")
        assert console.wait(30) == 0
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
    assert termios.tcgetattr(slave) == before
    os.close(master)
    os.close(slave)


def test_port_forward_serves_the_guests_web_page_on_a_local_port(podvirt: Podvirt, guest: Guest) -> None:
    local = free_port()
    forward = virtctl(
        podvirt,
        "port-forward",
        f"vmi/{guest.name}/{guest.namespace}",
        f"{local}:8080",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline().decode()
        assert line == f"Forwarding from 127.0.0.1:{local} -> 8080\n", forward.stderr.read() if forward.stderr else ""
        for _ in range(2):  # each local connection is its own forward
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=30) as page:
                assert page.read().strip() == PAGE
    finally:
        forward.send_signal(signal.SIGINT)
        try:
            forward.wait(15)
        except subprocess.TimeoutExpired:
            forward.kill()
            forward.wait()
    assert forward.returncode in (0, 130), forward.stderr.read() if forward.stderr else ""


def forward_stdio(podvirt: Podvirt, guest: Guest, port: int, data: bytes) -> subprocess.CompletedProcess[bytes]:
    """``virtctl port-forward --stdio`` with ``data`` piped in, until it ends by itself."""
    argv = [
        sys.executable,
        "-m",
        "virtctl",
        "port-forward",
        "--stdio",
        f"vmi/{guest.name}/{guest.namespace}",
        str(port),
    ]
    return subprocess.run(argv, input=data, capture_output=True, env=virtctl_env(podvirt), timeout=60, check=False)


def test_port_forward_stdio_carries_an_http_request_and_its_answer(podvirt: Podvirt, guest: Guest) -> None:
    """What ssh's ProxyCommand does: the request on stdin, the answer on stdout, the end when the guest closes."""
    done = forward_stdio(podvirt, guest, 8080, b"GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n")
    assert done.returncode == 0, done.stderr.decode()
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 200 OK", head), done.stdout[:500]
    assert body.strip() == PAGE


def test_port_forward_to_a_port_nobody_listens_on_says_so(podvirt: Podvirt, guest: Guest) -> None:
    done = forward_stdio(podvirt, guest, 8081, b"")
    err = done.stderr.decode()
    assert done.returncode != 0
    assert "connecting to port 8081" in err and "Connection refused" in err, err
