"""The ``subresources.kubevirt.io`` routes: discovery, version, healthz, VM and VMI subresources, console.

Every route here requires the front proxy (:func:`virt_api.auth.authenticate`); the subresources are
then authorised per call with a SubjectAccessReview. VM subresources (start, stop, restart, migrate)
change podvirt's objects only; VMI subresources (pause, unpause, softreboot, reset, guestosinfo,
console, vnc, portforward) are checked here and carried out by the virt-handler on the VMI's node; a
VM's portforward goes to the VMI of the same name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from podvirt_common import kube as k
from podvirt_common import logs
from virt_api import openapi
from virt_api.auth import Access, User, authenticate
from virt_api.services import Services
from virt_api.status import StatusError, bad_request, conflict, not_found, too_large, unavailable
from virt_api.subresources import discovery, vmactions
from virt_api.subresources.handler import PLAIN_SUBPROTOCOL, Stream
from virt_api.subresources.vmiactions import node_for

log = logging.getLogger(__name__)

GROUP_PATH = f"/apis/{discovery.GROUP}"
NAMESPACED = GROUP_PATH + "/{version}/namespaces/{namespace}"
#: How often a write that lost a race (its JSON-patch test failed) is decided again.
WRITE_ATTEMPTS = 3

Version = Annotated[str, Path(description="API version: v1 or v1alpha3", max_length=16)]
Name = Annotated[str, Path(description="Object name", min_length=1, max_length=253)]
Namespace = Annotated[str, Path(description="Namespace", min_length=1, max_length=63)]


class _Options(BaseModel):
    # KubeVirt's option types; ``kind``/``apiVersion`` and unknown fields are ignored, as KubeVirt's decoder does.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    dry_run: list[str] | None = Field(default=None, alias="dryRun")

    @property
    def is_dry_run(self) -> bool:
        return bool(self.dry_run) and "All" in (self.dry_run or [])


class StartOptions(_Options):
    paused: bool = False


class StopOptions(_Options):
    grace_period: int | None = Field(default=None, alias="gracePeriod", ge=0)


class RestartOptions(_Options):
    grace_period_seconds: int | None = Field(default=None, alias="gracePeriodSeconds", ge=0)


class MigrateOptions(_Options):
    added_node_selector: dict[str, str] | None = Field(default=None, alias="addedNodeSelector")


def _check_version(version: str) -> None:
    if version not in discovery.VERSIONS:
        raise StatusError(404, "NotFound", f"{discovery.GROUP} has no version {version!r}; it serves v1 and v1alpha3")


def _services(scope_app: Any) -> Services:
    services: Services = scope_app.state.services
    return services


def proxied_user(request: Request) -> User:
    """The user the front proxy names (a FastAPI dependency): 401 unless the request came through it."""
    config = _services(request.app).requestheader()
    if config is None:
        raise unavailable("virt-api has not read the front proxy's configuration yet")
    return authenticate(config, request.scope, request.headers)


ProxiedUser = Annotated[User, Depends(proxied_user)]


def build_router(services: Services) -> APIRouter:
    """The routes; the app must keep ``services`` in ``app.state.services`` (see :func:`virt_api.app.create_app`)."""
    router = APIRouter()

    async def read_options(request: Request, model: type[_Options]) -> Any:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > services.max_subresource_body:
                raise too_large(services.max_subresource_body)
        if not body.strip():
            return model()
        try:
            return model.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            raise bad_request(f"the body is not a valid {model.__name__}: {exc}") from exc

    @router.get("/apis", summary="API groups served here")
    async def apis(user: ProxiedUser) -> dict[str, Any]:
        return discovery.api_group_list()

    @router.get(GROUP_PATH, summary="The subresources.kubevirt.io group")
    async def group(user: ProxiedUser) -> dict[str, Any]:
        return discovery.api_group()

    @router.get(GROUP_PATH + "/{version}", summary="Resources of one version")
    async def resources(version: Version, user: ProxiedUser) -> dict[str, Any]:
        _check_version(version)
        return discovery.api_resource_list(version)

    @router.get(GROUP_PATH + "/{version}/version", summary="virt-api's version")
    async def version_route(version: Version, user: ProxiedUser) -> dict[str, str]:
        _check_version(version)
        return services.version

    @router.get(GROUP_PATH + "/{version}/healthz", summary="virt-api's health")
    async def healthz(version: Version, user: ProxiedUser) -> dict[str, str]:
        _check_version(version)
        return {"apiserver": "ok", "restapiserver": "ok"}

    async def vm_and_vmi(namespace: str, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        vm = await services.apiserver.get_vm(namespace, name)
        if vm is None:
            raise not_found("virtualmachines", name)
        return vm, await services.apiserver.get_vmi(namespace, name)

    async def write(namespace: str, name: str, writes: list[vmactions.Write], dry_run: bool) -> None:
        for w in writes:
            resource = k.VIRTUAL_MACHINE_INSTANCES if w.target == "vmi" else k.VIRTUAL_MACHINES
            await services.apiserver.patch(
                resource, namespace, name, w.operations, status=w.target == "vm-status", dry_run=dry_run
            )

    async def vm_action(version: str, namespace: str, name: str, action: str, user: User, options: Any) -> Response:
        _check_version(version)
        await services.authorizer.authorize(user, Access("update", "virtualmachines", action, namespace, name, version))
        for attempt in range(WRITE_ATTEMPTS):
            vm, vmi = await vm_and_vmi(namespace, name)
            if isinstance(options, MigrateOptions):
                body = vmactions.migration_for(vm, vmi, added_node_selector=options.added_node_selector)
                await services.apiserver.create_migration(namespace, body, dry_run=options.is_dry_run)
                break
            if isinstance(options, StartOptions):
                writes = vmactions.plan_start(vm, vmi, paused=options.paused)
            elif isinstance(options, StopOptions):
                writes = vmactions.plan_stop(vm, vmi, grace_period=options.grace_period)
            else:
                writes = vmactions.plan_restart(vm, vmi, grace_period=options.grace_period_seconds)
            try:
                await write(namespace, name, writes, options.is_dry_run)
                break
            except StatusError as exc:
                if not _lost_race(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
        logs.for_object(log, "VirtualMachine", namespace, name).info(
            "%s requested", action, extra={"user": user.name, "dry_run": options.is_dry_run}
        )
        return Response(status_code=202)

    @router.put(
        NAMESPACED + "/virtualmachines/{name}/start",
        status_code=202,
        openapi_extra=openapi.body(StartOptions, required=False),
        summary="Start a VM",
    )
    async def start(
        version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser
    ) -> Response:
        return await vm_action(version, namespace, name, "start", user, await read_options(request, StartOptions))

    @router.put(
        NAMESPACED + "/virtualmachines/{name}/stop",
        status_code=202,
        openapi_extra=openapi.body(StopOptions, required=False),
        summary="Stop a VM",
    )
    async def stop(version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser) -> Response:
        return await vm_action(version, namespace, name, "stop", user, await read_options(request, StopOptions))

    @router.put(
        NAMESPACED + "/virtualmachines/{name}/restart",
        status_code=202,
        openapi_extra=openapi.body(RestartOptions, required=False),
        summary="Restart a VM",
    )
    async def restart(
        version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser
    ) -> Response:
        return await vm_action(version, namespace, name, "restart", user, await read_options(request, RestartOptions))

    @router.put(
        NAMESPACED + "/virtualmachines/{name}/migrate",
        status_code=202,
        openapi_extra=openapi.body(MigrateOptions, required=False),
        summary="Live-migrate a VM",
    )
    async def migrate(
        version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser
    ) -> Response:
        return await vm_action(version, namespace, name, "migrate", user, await read_options(request, MigrateOptions))

    async def vmi_node(version: str, namespace: str, name: str, action: str, verb: str, user: User) -> str:
        _check_version(version)
        access = Access(verb, "virtualmachineinstances", action, namespace, name, version)
        await services.authorizer.authorize(user, access)
        return node_for(await services.apiserver.get_vmi(namespace, name), name, action)

    async def vmi_action(
        version: str, namespace: str, name: str, action: Any, request: Request, user: User
    ) -> Response:
        options = await read_options(request, _Options)
        node = await vmi_node(version, namespace, name, action, "update", user)
        if not options.is_dry_run:
            endpoint = await services.handlers.locate(node)
            await services.handlers.act(endpoint, namespace, name, action)
        logs.for_object(log, "VirtualMachineInstance", namespace, name).info(
            "%s done", action, extra={"user": user.name, "node": node}
        )
        return Response(status_code=202)

    @router.put(
        NAMESPACED + "/virtualmachineinstances/{name}/pause",
        status_code=202,
        openapi_extra=openapi.body(_Options, required=False),
        summary="Pause a VMI",
    )
    async def pause(
        version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser
    ) -> Response:
        return await vmi_action(version, namespace, name, "pause", request, user)

    @router.put(
        NAMESPACED + "/virtualmachineinstances/{name}/unpause",
        status_code=202,
        openapi_extra=openapi.body(_Options, required=False),
        summary="Unpause a VMI",
    )
    async def unpause(
        version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser
    ) -> Response:
        return await vmi_action(version, namespace, name, "unpause", request, user)

    @router.put(
        NAMESPACED + "/virtualmachineinstances/{name}/softreboot",
        status_code=202,
        openapi_extra=openapi.body(_Options, required=False),
        summary="Reboot the guest",
    )
    async def softreboot(
        version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser
    ) -> Response:
        return await vmi_action(version, namespace, name, "softreboot", request, user)

    @router.put(
        NAMESPACED + "/virtualmachineinstances/{name}/reset",
        status_code=202,
        openapi_extra=openapi.body(_Options, required=False),
        summary="Reset a VMI",
    )
    async def reset(
        version: Version, namespace: Namespace, name: Name, request: Request, user: ProxiedUser
    ) -> Response:
        return await vmi_action(version, namespace, name, "reset", request, user)

    @router.get(NAMESPACED + "/virtualmachineinstances/{name}/guestosinfo", summary="The guest agent's OS information")
    async def guestosinfo(version: Version, namespace: Namespace, name: Name, user: ProxiedUser) -> dict[str, Any]:
        node = await vmi_node(version, namespace, name, "guestosinfo", "get", user)
        endpoint = await services.handlers.locate(node)
        return await services.handlers.guest_os_info(endpoint, namespace, name)

    def websocket_user(websocket: WebSocket) -> User:
        config = services.requestheader()
        if config is None:
            raise unavailable("virt-api has not read the front proxy's configuration yet")
        return authenticate(config, websocket.scope, websocket.headers)

    async def stream(websocket: WebSocket, namespace: str, name: str, what: str, node: str, user: User) -> None:
        endpoint = await services.handlers.locate(node)
        async with services.handlers.stream(endpoint, namespace, name, what) as upstream:
            wanted = PLAIN_SUBPROTOCOL in websocket.scope.get("subprotocols", [])
            await websocket.accept(subprotocol=PLAIN_SUBPROTOCOL if wanted else None)
            logs.for_object(log, "VirtualMachineInstance", namespace, name).info(
                "%s session opened", what, extra={"user": user.name, "node": node}
            )
            await proxy(websocket, upstream)

    async def vmi_stream(websocket: WebSocket, version: str, namespace: str, name: str, kind: str) -> None:
        try:
            user = websocket_user(websocket)
            node = await vmi_node(version, namespace, name, kind, "get", user)
            await stream(websocket, namespace, name, kind, node, user)
        except StatusError as exc:
            await _refuse_websocket(websocket, exc)

    @router.websocket(NAMESPACED + "/virtualmachineinstances/{name}/console")
    async def console(websocket: WebSocket, version: str, namespace: str, name: str) -> None:
        await vmi_stream(websocket, version, namespace, name, "console")

    @router.websocket(NAMESPACED + "/virtualmachineinstances/{name}/vnc")
    async def vnc(websocket: WebSocket, version: str, namespace: str, name: str) -> None:
        await vmi_stream(websocket, version, namespace, name, "vnc")

    async def port_forward(
        websocket: WebSocket, version: str, plural: str, namespace: str, name: str, port: str, protocol: str
    ) -> None:
        try:
            what = forward_path(port, protocol)
            user = websocket_user(websocket)
            if plural == "virtualmachineinstances":
                node = await vmi_node(version, namespace, name, "portforward", "get", user)
            else:
                # A VM's forward goes to its VMI (of the same name), authorised on the VM's own subresource.
                _check_version(version)
                access = Access("get", "virtualmachines", "portforward", namespace, name, version)
                await services.authorizer.authorize(user, access)
                _, vmi = await vm_and_vmi(namespace, name)
                if vmi is None:
                    raise conflict("virtualmachines", name, "VM is not running")
                node = node_for(vmi, name, "portforward")
            await stream(websocket, namespace, name, what, node, user)
        except StatusError as exc:
            await _refuse_websocket(websocket, exc)

    def add_forward_routes(plural: str) -> None:
        path = NAMESPACED + f"/{plural}/{{name}}/portforward/{{port}}"

        @router.websocket(path)
        async def forward_tcp(websocket: WebSocket, version: str, namespace: str, name: str, port: str) -> None:
            await port_forward(websocket, version, plural, namespace, name, port, "tcp")

        @router.websocket(path + "/{protocol}")
        async def forward(
            websocket: WebSocket, version: str, namespace: str, name: str, port: str, protocol: str
        ) -> None:
            await port_forward(websocket, version, plural, namespace, name, port, protocol)

    add_forward_routes("virtualmachineinstances")
    add_forward_routes("virtualmachines")

    return router


def forward_path(port: str, protocol: str) -> str:
    """The handler's stream for a port-forward (``portforward/PORT/tcp``); 400 for what podvirt cannot forward."""
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise bad_request(f"port {port!r} is not a number in 1-65535")
    if protocol == "udp":
        raise bad_request("port-forward over udp is not supported by podvirt (only tcp)")
    if protocol != "tcp":
        raise bad_request(f"unknown protocol {protocol!r}: port-forward takes tcp")
    return f"portforward/{int(port)}/{protocol}"


def _lost_race(error: StatusError) -> bool:
    """A JSON-patch ``test`` failed (the object changed between reading and writing it): the apiserver
    answers 422 Invalid with a generic message, unlike a webhook's refusal, which names the webhook."""
    return error.code == 422 and error.reason == "Invalid" and "admission webhook" not in error.message


async def _refuse_websocket(websocket: WebSocket, error: StatusError) -> None:
    if websocket.application_state == WebSocketState.CONNECTING:
        try:
            await websocket.send_denial_response(JSONResponse(error.to_status(), status_code=error.code))
        except RuntimeError:  # the server cannot send an HTTP answer to an upgrade: close instead
            await websocket.close(code=1008, reason=error.message[:120])
    elif websocket.application_state == WebSocketState.CONNECTED:
        await websocket.close(code=1011, reason=error.message[:120])


async def proxy(websocket: WebSocket, upstream: Stream) -> None:
    """Copy bytes both ways until either side ends, then end the other."""

    async def downstream_to_upstream() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None and message.get("text") is not None:
                data = str(message["text"]).encode()
            if data:
                await upstream.send(data)

    async def upstream_to_downstream() -> None:
        while (data := await upstream.receive()) is not None:
            await websocket.send_bytes(data)

    tasks = [asyncio.create_task(downstream_to_upstream()), asyncio.create_task(upstream_to_downstream())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(RuntimeError, OSError):
            if websocket.application_state == WebSocketState.CONNECTED:
                await websocket.close()
