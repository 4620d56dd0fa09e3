"""How virtctl reaches the Kubernetes API: the user's kubeconfig (or in-cluster credentials), REST and websockets.

Credentials are read like kubectl reads them: ``--kubeconfig``, else ``$KUBECONFIG`` (several files
joined with ``:``), else ``~/.kube/config``, else the pod's service account. The ``kubernetes``
package parses the kubeconfig (tokens, client certificates, exec plugins). REST goes through the
project's one client wrapper (:class:`podvirt_common.kube.Kube`); streams go through ``websockets``
with the same TLS settings and credentials. This module is virtctl's only client construction.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, list_kube_config_contexts, load_incluster_config, load_kube_config
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from podvirt_common import kube as shared
from virtctl import __version__
from virtctl.errors import SUBRESOURCE_GROUP, SUBRESOURCE_VERSION, ApiError, Request, Served, VirtctlError, explain
from virtctl.exitcodes import ExitCode

PLAIN_SUBPROTOCOL = Subprotocol("plain.kubevirt.io")
"""The websocket subprotocol of KubeVirt's console, VNC and port-forward streams: raw bytes, no framing."""

SUBRESOURCE_API = f"/apis/{SUBRESOURCE_GROUP}/{SUBRESOURCE_VERSION}"
KUBEVIRT_API = "/apis/kubevirt.io/v1"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_AGENT = f"virtctl/{__version__} (podvirt)"


@dataclass(frozen=True)
class Selection:
    """Which cluster, user and namespace the command line asked for (``None``: not given)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


@dataclass(frozen=True)
class Credentials:
    """Everything needed to open a connection to the API server."""

    server: str
    ssl_context: ssl.SSLContext | None
    tls_server_name: str | None
    auth_header: Callable[[], str | None]
    """Fresh ``Authorization`` value for each connection (tokens from exec plugins expire)."""
    namespace: str
    namespace_explicit: bool
    """The namespace came from ``-n``; ``create vm`` writes it into the manifest only then."""
    configuration: Configuration
    """The parsed kubeconfig, for the shared REST client."""
    proxy: str | None = None


def load_credentials(selection: Selection) -> Credentials:
    """Read the kubeconfig (or in-cluster credentials) the way kubectl does."""
    config = Configuration()
    kubeconfig = selection.kubeconfig or os.environ.get("KUBECONFIG") or ""
    default_file = Path("~/.kube/config").expanduser()
    in_cluster = not kubeconfig and not default_file.exists() and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
            namespace = os.environ.get("POD_NAMESPACE") or _read_service_account_namespace()
        else:
            paths = kubeconfig or str(default_file)
            if not any(Path(p).expanduser().exists() for p in paths.split(os.pathsep) if p):
                raise VirtctlError(
                    f"no kubeconfig found at {paths}: pass --kubeconfig, set KUBECONFIG, or run inside a pod",
                    ExitCode.CONFIG,
                )
            contexts, current = list_kube_config_contexts(config_file=paths)  # type: ignore[no-untyped-call]
            chosen = _choose_context(contexts, current, selection.context, paths)
            load_kube_config(  # type: ignore[no-untyped-call]
                config_file=paths, context=chosen["name"], client_configuration=config, persist_config=False
            )
            namespace = chosen.get("context", {}).get("namespace") or "default"
    except ConfigException as e:
        raise VirtctlError(f"cannot use the kubeconfig: {e}", ExitCode.CONFIG) from None

    def auth_header() -> str | None:
        value = config.get_api_key_with_prefix("BearerToken", alias="authorization")
        return str(value) if value else None

    return Credentials(
        server=str(config.host).rstrip("/"),
        ssl_context=_ssl_context(config),
        tls_server_name=getattr(config, "tls_server_name", None),
        auth_header=auth_header,
        namespace=selection.namespace or namespace,
        namespace_explicit=selection.namespace is not None,
        configuration=config,
        proxy=_proxy_for(str(config.host), config.proxy, getattr(config, "no_proxy", None)),
    )


def _choose_context(
    contexts: list[dict[str, Any]], current: dict[str, Any] | None, wanted: str | None, paths: str
) -> dict[str, Any]:
    if wanted is None:
        if not current:
            raise VirtctlError(f"the kubeconfig {paths} has no current context: pass --context", ExitCode.CONFIG)
        return current
    for context in contexts:
        if context.get("name") == wanted:
            return context
    known = ", ".join(str(c.get("name")) for c in contexts) or "none"
    raise VirtctlError(f"context {wanted!r} is not in the kubeconfig {paths} (known: {known})", ExitCode.CONFIG)


def _read_service_account_namespace() -> str:
    try:
        return (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def _ssl_context(config: Configuration) -> ssl.SSLContext | None:
    if not str(config.host).startswith("https:"):
        return None
    context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
    if not config.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file or None)
    return context


def _proxy_for(server: str, proxy: str | None, no_proxy: str | None) -> str | None:
    """The proxy to use, if any: like Go's net/http, loopback and NO_PROXY hosts go direct."""
    if not proxy:
        return None
    host = urlsplit(server).hostname or ""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    if host == "localhost":
        return None
    for raw in (no_proxy or "").split(","):
        entry = raw.strip().lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return proxy


@dataclass
class KubeClient:
    """The API server as virtctl uses it: JSON requests and websocket streams, errors explained."""

    credentials: Credentials
    timeout: float = 30.0
    _rest: shared.Kube | None = field(default=None, init=False, repr=False)
    _served: Served | None = field(default=None, init=False, repr=False)

    @property
    def namespace(self) -> str:
        return self.credentials.namespace

    def _client(self) -> shared.Kube:
        if self._rest is None:
            configuration = self.credentials.configuration
            configuration.proxy = self.credentials.proxy
            self._rest = shared.Kube(ApiClient(configuration), user_agent=USER_AGENT)
        return self._rest

    def close(self) -> None:
        if self._rest is not None:
            self._rest.close()
            self._rest = None

    def _headers(self) -> dict[str, str]:
        auth = self.credentials.auth_header()
        return {"Authorization": auth} if auth else {}

    def raw_request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or :class:`ApiError` for an HTTP error."""
        server = self.credentials.server
        try:
            return self._client().request(method, path, query=query, body=body, timeout=timeout or self.timeout)
        except shared.ApiError as e:
            status = {"kind": "Status", "code": e.status, "reason": e.reason, "message": e.message}
            raise ApiError(code=e.status, status=status, body=e.message) from None
        except (urllib3.exceptions.TimeoutError, TimeoutError):
            raise VirtctlError(
                f"the API server at {server} did not answer {method} {path} in time", ExitCode.UNAVAILABLE
            ) from None
        except (urllib3.exceptions.HTTPError, ApiException, ssl.SSLError, OSError) as e:
            raise VirtctlError(
                f"cannot reach the Kubernetes API server at {server}: {_reason(e)}", ExitCode.CONFIG
            ) from None

    def request(
        self,
        method: str,
        path: str,
        request: Request,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> Any:
        """Like :meth:`raw_request`, but a refusal becomes a :class:`VirtctlError` explaining ``request``."""
        try:
            return self.raw_request(method, path, body=body, query=query)
        except ApiError as e:
            raise self.explain(e, request) from None

    def explain(self, err: ApiError, request: Request) -> VirtctlError:
        """The user's message for ``err``; asks discovery when the answer may mean virt-api (or a route) is absent."""
        maybe_absent = err.code in (404, 405, 503) or (err.code == 403 and err.status is None)
        served = self.served() if request.group == SUBRESOURCE_GROUP and maybe_absent else None
        return explain(err, request, served)

    def served(self) -> Served:
        """Discovery of the subresource API group (cached): is it there, and which subresources it lists."""
        if self._served is None:
            try:
                document = self.raw_request("GET", SUBRESOURCE_API, timeout=10)
            except ApiError:
                self._served = Served(group_served=False)
            else:
                names = [r.get("name", "") for r in (document or {}).get("resources", []) if isinstance(r, dict)]
                self._served = Served(group_served=True, resources=frozenset(n for n in names if n))
        return self._served

    def websocket_url(self, path: str) -> str:
        scheme = "wss" if self.credentials.server.startswith("https:") else "ws"
        return scheme + self.credentials.server[self.credentials.server.index(":") :] + path

    @contextlib.asynccontextmanager
    async def websocket(self, path: str, *, open_timeout: float = 30.0) -> AsyncIterator[ClientConnection]:
        """A websocket stream (subprotocol ``plain.kubevirt.io``); :class:`ApiError` if the upgrade is refused.

        Keep-alive pings every 20 s catch dead connections (KubeVirt users know idle consoles that
        silently die).
        """
        kwargs: dict[str, Any] = {}
        if self.credentials.ssl_context is not None:
            kwargs["ssl"] = self.credentials.ssl_context
            if self.credentials.tls_server_name:
                kwargs["server_hostname"] = self.credentials.tls_server_name
        try:
            ws = await connect(
                self.websocket_url(path),
                subprotocols=[PLAIN_SUBPROTOCOL],
                additional_headers=self._headers(),
                user_agent_header=USER_AGENT,
                proxy=self.credentials.proxy,
                compression=None,
                open_timeout=open_timeout,
                ping_interval=20,
                ping_timeout=20,
                max_size=16 * 1024 * 1024,
                **kwargs,
            )
        except InvalidStatus as e:
            raise ApiError.from_response(e.response.status_code, bytes(e.response.body or b"")) from None
        except TimeoutError:
            raise VirtctlError(
                f"the API server at {self.credentials.server} did not open the stream {path} in time",
                ExitCode.UNAVAILABLE,
            ) from None
        except (InvalidHandshake, OSError) as e:
            raise VirtctlError(
                f"cannot open a stream to the Kubernetes API server at {self.credentials.server}: {e}",
                ExitCode.CONFIG,
            ) from None
        try:
            yield ws
        finally:
            await ws.close()


def _reason(error: Exception) -> str:
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        return str(error.reason)
    if isinstance(error, ApiException):
        return str(error.reason or error).replace("\n", ": ")
    return str(error)


def subresource_path(plural: str, namespace: str, name: str, subresource: str) -> str:
    """``/apis/subresources.kubevirt.io/v1/namespaces/NS/PLURAL/NAME/SUBRESOURCE``."""
    return f"{SUBRESOURCE_API}/namespaces/{namespace}/{plural}/{name}/{subresource}"


def kubevirt_path(plural: str, namespace: str, name: str | None = None) -> str:
    """``/apis/kubevirt.io/v1/namespaces/NS/PLURAL[/NAME]``."""
    base = f"{KUBEVIRT_API}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base
