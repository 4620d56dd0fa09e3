"""podvirt_common.httpserve: routes served on a kernel-chosen port, and that port found again in the log."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

import pytest

from podvirt_common import httpserve

pytestmark = pytest.mark.unit


def test_the_announced_port_serves_the_routes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="podvirt.httpserve")
    server = httpserve.serve("127.0.0.1:0", {"/metrics": httpserve.ok, "/healthz": httpserve.ok}, "test")
    assert server is not None
    try:
        port = httpserve.port_from_log(caplog.text)
        assert port == server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
        assert missing.value.code == 404
    finally:
        server.shutdown()


def test_port_from_log_takes_the_last_announcement_and_needs_metrics() -> None:
    log = (
        "12:00 INFO podvirt.httpserve: virt-handler: serving /healthz, /metrics, /readyz on 127.0.0.1:4000\n"
        "12:01 INFO podvirt.httpserve: virt-handler: serving /healthz, /metrics, /readyz on 127.0.0.1:4001\n"
    )
    assert httpserve.port_from_log(log) == 4001
    assert httpserve.port_from_log("serving /healthz on 127.0.0.1:5000\n") is None
    assert httpserve.port_from_log("") is None
