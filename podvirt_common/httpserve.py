"""A small plain-HTTP endpoint for probes and metrics (``/healthz``, ``/readyz``, ``/metrics``).

Components serve their health and Prometheus metrics on it, apart from any TLS API they have: the
kubelet's probes and a Prometheus scraper carry no client certificate. Each route is a function
returning ``(status, body, content type)``, called in the server's thread for every GET.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: A GET route: () -> (HTTP status, body, content type).
Route = Callable[[], tuple[int, bytes, str]]

log = logging.getLogger("podvirt.httpserve")


def ok() -> tuple[int, bytes, str]:
    return 200, b"ok\n", "text/plain"


def metrics_route(registry: CollectorRegistry) -> Route:
    """``/metrics`` in the Prometheus text format for ``registry``."""
    return lambda: (200, generate_latest(registry), CONTENT_TYPE_LATEST)


_SERVING = re.compile(r"serving [^\n]*/metrics[^\n]* on [^\s:]+:(\d+)$", re.MULTILINE)


def port_from_log(text: str) -> int | None:
    """The port of the last ``/metrics`` endpoint :func:`serve` announced in a component's log (how tests
    and benchmarks find a kernel-chosen port, ``HOST:0``); None when there is none yet."""
    found = _SERVING.findall(text)
    return int(found[-1]) if found else None


def serve(address: str, routes: Mapping[str, Route], component: str) -> ThreadingHTTPServer | None:
    """Serve ``routes`` on ``address`` (``HOST:PORT``; port 0 lets the kernel choose; ``''`` for none)
    in a daemon thread. A taken port is logged and the component goes on without the endpoint: its
    work matters more than its metrics."""
    if not address:
        return None
    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                code, body, content_type = 404, b"not found\n", "text/plain"
            else:
                try:
                    code, body, content_type = route()
                except Exception:
                    log.exception("%s: %s failed", component, self.path)
                    code, body, content_type = 500, b"internal error; see the component's log\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    try:
        server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)  # noqa: S104
    except OSError as exc:
        log.error("%s: cannot serve %s on %s (%s); running without them", component, ", ".join(routes), address, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="httpserve", daemon=True).start()
    log.info("%s: serving %s on %s:%s", component, ", ".join(sorted(routes)), *server.server_address[:2])
    return server
