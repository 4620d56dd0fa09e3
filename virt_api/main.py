"""The ``virt-api`` command: admission webhooks and the subresources.kubevirt.io API on one TLS port.

Start-up: learn its own identity (SelfSubjectReview) and the front proxy's (the
``extension-apiserver-authentication`` ConfigMap), make or load its certificates (Secret
``--secret-name``), register its webhooks and APIServices with the current caBundle, then serve.
While serving it re-checks the certificates and the front proxy's CA every ``--sync-interval`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from podvirt_common import kube as k
from podvirt_common import logs
from virt_api.admission.webhook import Validator, warm_up
from virt_api.apiserver import ApiServer, KubeApiServer
from virt_api.app import create_app
from virt_api.auth import AUTHENTICATION_CONFIGMAP, Authorizer, RequestHeaderConfig
from virt_api.certificates import Bundle, CertificateManager, CertSettings
from virt_api.registration import RegistrationSettings, register
from virt_api.services import Services
from virt_api.status import StatusError, unavailable
from virt_api.subresources.handler import (
    DEFAULT_PORT,
    Endpoint,
    HandlerTLS,
    Stream,
    StreamKind,
    TLSHandlerClient,
    parse_endpoint,
)
from virt_api.tls import ServingContext, TLSHttpProtocol, TLSWebSocketProtocol

log = logging.getLogger("virt_api")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="virt-api", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster credentials)")
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "kubevirt"), help="podvirt's namespace")
    p.add_argument("--listen", default="0.0.0.0", help="address to serve on")  # noqa: S104
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--service-name", default="virt-api", help="the Service in front of virt-api")
    p.add_argument("--service-port", type=int, default=443, help="the Service's port (APIService and webhooks)")
    p.add_argument("--webhook-url", default=None, help="call the webhooks at this base URL instead of the Service")
    p.add_argument("--no-register", action="store_true", help="do not apply webhook configurations and APIServices")
    p.add_argument("--secret-name", default="virt-api-certs", help="Secret holding virt-api's CA and certificate")
    p.add_argument("--extra-san", action="append", default=[], help="another name or IP for the serving certificate")
    p.add_argument("--ca-days", type=int, default=7, help="lifetime of virt-api's CA")
    p.add_argument("--cert-hours", type=int, default=24, help="lifetime of the serving certificate")
    p.add_argument("--sync-interval", type=float, default=60.0, help="seconds between certificate checks")
    p.add_argument("--webhook-timeout", type=int, default=5, help="seconds the apiserver waits for a webhook")
    p.add_argument("--handler-port", type=int, default=DEFAULT_PORT)
    p.add_argument("--handler-cert", type=Path, help="virt-api's client certificate for virt-handler (PEM)")
    p.add_argument("--handler-key", type=Path)
    p.add_argument("--handler-ca", type=Path, help="CA that signs virt-handler's serving certificate")
    p.add_argument("--handler-server-name", default="virt-handler", help="DNS name in virt-handler's certificate")
    p.add_argument(
        "--handler-endpoint",
        action="append",
        default=[],
        type=parse_endpoint,
        metavar="NODE=HOST:PORT",
        help="reach NODE's virt-handler here instead of at its pod (development clusters whose handlers run "
        "as host processes; a real installation never sets it)",
    )
    p.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")
    p.add_argument("--log-level", default="INFO")
    return p


class NoHandlerClient:
    """Used when virt-api was given no client certificate for virt-handler: VMI actions answer 503."""

    def _refuse(self) -> StatusError:
        return unavailable(
            "virt-api has no client certificate for virt-handler (--handler-cert/--handler-key/--handler-ca)"
        )

    async def locate(self, node: str) -> Endpoint:
        raise self._refuse()

    async def act(self, endpoint: Endpoint, namespace: str, name: str, action: Any) -> None:
        raise self._refuse()

    async def guest_os_info(self, endpoint: Endpoint, namespace: str, name: str) -> dict[str, Any]:
        raise self._refuse()

    def stream(
        self, endpoint: Endpoint, namespace: str, name: str, kind: StreamKind
    ) -> contextlib.AbstractAsyncContextManager[Stream]:
        raise self._refuse()


def serving_hosts(args: argparse.Namespace) -> tuple[str, ...]:
    service, ns = args.service_name, args.namespace
    hosts = [f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local", f"{service}.{ns}", service, "localhost"]
    hosts += ["127.0.0.1", *args.extra_san]
    return tuple(dict.fromkeys(hosts))


async def read_requestheader(apiserver: ApiServer) -> RequestHeaderConfig:
    namespace, name = AUTHENTICATION_CONFIGMAP
    configmap = await apiserver.get(k.CONFIG_MAPS, name, namespace)
    if configmap is None:
        raise unavailable(f"no ConfigMap {namespace}/{name}: is this a Kubernetes API server?")
    return RequestHeaderConfig.from_configmap(configmap)


async def serve(args: argparse.Namespace) -> None:
    kube = k.Kube.connect(args.kubeconfig, user_agent="virt-api", pool_size=64)
    apiserver = KubeApiServer(kube)
    me = await apiserver.whoami()
    requestheader = await read_requestheader(apiserver)
    serving = ServingContext(requestheader.client_ca)
    current_header: list[RequestHeaderConfig] = [requestheader]
    registration = RegistrationSettings(
        namespace=args.namespace,
        service_name=args.service_name,
        service_port=args.service_port,
        webhook_url=args.webhook_url,
        timeout_seconds=args.webhook_timeout,
    )

    async def on_change(bundle: Bundle) -> None:
        serving.load(bundle.serving.cert_pem, bundle.serving.key_pem)
        if not args.no_register:
            await register(apiserver, registration, bundle.ca_bundle)

    settings = CertSettings(
        hosts=serving_hosts(args),
        ca_lifetime=dt.timedelta(days=args.ca_days),
        cert_lifetime=dt.timedelta(hours=args.cert_hours),
    )
    manager = CertificateManager(apiserver, args.namespace, args.secret_name, settings, on_change)
    await manager.sync()

    handlers: Any = NoHandlerClient()
    if args.handler_cert and args.handler_key and args.handler_ca:
        tls = HandlerTLS(args.handler_cert, args.handler_key, args.handler_ca, args.handler_server_name)
        fixed = {endpoint.node: endpoint for endpoint in args.handler_endpoint}
        handlers = TLSHandlerClient(tls, apiserver.list_pods, args.namespace, args.handler_port, fixed)
    services = Services(
        apiserver=apiserver,
        validator=Validator(apiserver, trusted_users=frozenset({me})),
        authorizer=Authorizer(apiserver.review_access),
        handlers=handlers,
        requestheader=lambda: current_header[0],
    )
    app = create_app(services)
    warm_up()

    async def keep_current() -> None:
        while True:
            await asyncio.sleep(args.sync_interval)
            try:
                bundle = await manager.sync()
                if not args.no_register:
                    await register(apiserver, registration, bundle.ca_bundle)
                fresh = await read_requestheader(apiserver)
                serving.trust_client_ca(fresh.client_ca)
                current_header[0] = fresh
            except Exception:  # keep rotating whatever one attempt ran into; the next may succeed
                log.exception("could not refresh certificates, registration or the front proxy's configuration")

    config = uvicorn.Config(
        app,
        host=args.listen,
        port=args.port,
        http=TLSHttpProtocol,
        ws=TLSWebSocketProtocol,
        ssl_context_factory=lambda _config, _default: serving.context,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ws_max_size=1024 * 1024,  # console and VNC input are keystrokes and pointer events
        # The apiserver keeps webhook connections open; closing them early costs a TLS handshake per review.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    log.info(
        "serving",
        extra={
            "port": args.port,
            "user": me,
            "install_namespace": args.namespace,
            "webhooks": args.webhook_url or "service",
        },
    )
    refresher = asyncio.create_task(keep_current())
    try:
        await server.serve()
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        kube.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(level=args.log_level.upper(), fmt=args.log_format)
    try:
        asyncio.run(serve(args))
    except StatusError as exc:
        log.error("virt-api cannot start: %s", exc.message)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
