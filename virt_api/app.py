"""The FastAPI application: admission webhooks, the aggregated API, health and metrics.

Errors of every kind leave as Kubernetes ``Status`` objects with their HTTP code: a ``StatusError`` as
raised, a route that does not exist as 404 NotFound, a malformed request as 400 BadRequest, anything
unforeseen as 500 InternalError (and logged). Request bodies are bounded before they are read.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException

from virt_api import openapi
from virt_api.admission import webhook
from virt_api.admission.review import AdmissionReview, parse_review
from virt_api.limits import BodyLimit
from virt_api.services import Services
from virt_api.status import StatusError, bad_request, forbidden, status_object, too_large
from virt_api.subresources.routes import build_router

log = logging.getLogger(__name__)

ADMISSION_PREFIX = "/admission"
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
}


class Metrics:
    """Prometheus figures of one app (its own registry, so tests can build several apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.admission_seconds = Histogram(
            "virt_api_admission_seconds",
            "Time to answer one AdmissionReview",
            ["webhook", "resource"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.admission_refusals = Counter(
            "virt_api_admission_refusals",
            "AdmissionReviews answered with a refusal",
            ["resource"],
            registry=self.registry,
        )


def _label(resource: str) -> str:
    return resource if resource in webhook.KINDS else "other"


def _status_response(error: StatusError) -> JSONResponse:
    return JSONResponse(error.to_status(), status_code=error.code)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="virt-api",
        summary="podvirt's admission webhooks and the subresources.kubevirt.io aggregated API",
        version=services.version.get("gitVersion", ""),
        docs_url=None,
        redoc_url=None,
    )
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.services = services
    app.add_middleware(
        BodyLimit,
        limits=((ADMISSION_PREFIX, services.max_admission_body),),
        default=services.max_subresource_body,
        refuse=lambda limit: too_large(limit).to_status(),
    )

    @app.exception_handler(StatusError)
    async def on_status_error(request: Request, exc: StatusError) -> JSONResponse:
        return _status_response(exc)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        reason = _REASONS.get(exc.status_code, "InternalError" if exc.status_code >= 500 else "BadRequest")
        message = exc.detail if isinstance(exc.detail, str) else reason
        if exc.status_code == 404:
            message = f"the server could not find the requested resource ({request.method} {request.url.path})"
        return JSONResponse(status_object(exc.status_code, reason, message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5]
        )
        return _status_response(bad_request(f"invalid request: {problems}"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        error = StatusError(500, "InternalError", f"virt-api failed: {type(exc).__name__}: {exc}")
        return _status_response(error)

    @app.get("/healthz", summary="Liveness and readiness", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def admission_body(request: Request) -> bytes:
        if request.url.scheme != "https":
            raise forbidden("admission webhooks are served over TLS only")
        return await request.body()

    @app.post(
        ADMISSION_PREFIX + "/mutate/{resource}",
        summary="Mutating webhook: KubeVirt's defaults",
        openapi_extra=openapi.body(AdmissionReview),
    )
    async def mutate(resource: str, request: Request) -> JSONResponse:
        started = time.perf_counter()
        admission = parse_review(await admission_body(request))
        try:
            review = webhook.mutate(resource, admission)
        except StatusError as exc:
            review = webhook.error_review(admission.uid, exc)
        metrics.admission_seconds.labels("mutate", _label(resource)).observe(time.perf_counter() - started)
        return JSONResponse(review)

    @app.post(
        ADMISSION_PREFIX + "/validate/{resource}",
        summary="Validating webhook: KubeVirt's rules",
        openapi_extra=openapi.body(AdmissionReview),
    )
    async def validate(resource: str, request: Request) -> JSONResponse:
        started = time.perf_counter()
        admission = parse_review(await admission_body(request))
        try:
            review = await services.validator.validate(resource, admission)
        except StatusError as exc:
            review = webhook.error_review(admission.uid, exc)
        metrics.admission_seconds.labels("validate", _label(resource)).observe(time.perf_counter() - started)
        if not review["response"]["allowed"]:
            metrics.admission_refusals.labels(_label(resource)).inc()
        return JSONResponse(review)

    app.include_router(build_router(services))
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (what schemathesis explores)."""
    return app.openapi()
