"""What the FastAPI app is built from: the cluster, the webhooks, authentication, the handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from virt_api.admission.webhook import Validator
from virt_api.apiserver import ApiServer
from virt_api.auth import Authorizer, RequestHeaderConfig
from virt_api.subresources.handler import HandlerClient
from virt_api.version import version_info


@dataclass
class Services:
    apiserver: ApiServer
    validator: Validator
    authorizer: Authorizer
    handlers: HandlerClient
    #: The front proxy's identity as last read from the cluster; None until it has been read.
    requestheader: Callable[[], RequestHeaderConfig | None]
    version: dict[str, str] = field(default_factory=version_info)
    #: Largest request bodies accepted: admission reviews (two objects) and subresource options.
    max_admission_body: int = 4 * 1024 * 1024
    max_subresource_body: int = 64 * 1024
