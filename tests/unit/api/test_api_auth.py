"""Only the front proxy's certificate makes the user headers count; RBAC is asked, and briefly remembered."""

from __future__ import annotations

import asyncio
import json

import pytest
from api_fakes import FRONT_PROXY_CA, FRONT_PROXY_CLIENT, REQUESTHEADER, STRANGER, FakeApiServer
from starlette.datastructures import Headers

from virt_api.auth import Access, Authorizer, RequestHeaderConfig, User, authenticate
from virt_api.status import StatusError

pytestmark = pytest.mark.unit


def scope_with(pem: bytes | None) -> dict[str, object]:
    return {"extensions": {"tls": {"client_cert_chain": [pem.decode()] if pem else []}}}


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers(raw=[(k.lower().encode(), v.encode()) for k, v in pairs])


def test_the_front_proxy_names_the_user_groups_and_extras() -> None:
    user = authenticate(
        REQUESTHEADER,
        scope_with(FRONT_PROXY_CLIENT.cert_pem),
        headers(
            ("X-Remote-User", "alice"),
            ("X-Remote-Group", "devs"),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Extra-Scopes%2Fwide", "a"),
            ("X-Remote-Extra-Scopes%2Fwide", "b"),
        ),
    )
    assert user == User("alice", ("devs", "system:authenticated"), (("scopes/wide", ("a", "b")),))


@pytest.mark.parametrize(
    ("pem", "user", "why"),
    [
        (None, "alice", "only through the Kubernetes API server's aggregation layer"),
        (STRANGER.cert_pem, "alice", "not one of the front proxy's names"),
        (FRONT_PROXY_CLIENT.cert_pem, "", "named no user"),
    ],
)
def test_anything_but_the_front_proxy_naming_a_user_is_unauthorized(pem: bytes | None, user: str, why: str) -> None:
    with pytest.raises(StatusError) as caught:
        authenticate(REQUESTHEADER, scope_with(pem), headers(("X-Remote-User", user)))
    assert caught.value.code == 401
    assert why in caught.value.message


def test_the_configmap_gives_the_ca_names_and_headers() -> None:
    configmap = {
        "data": {
            "requestheader-client-ca-file": FRONT_PROXY_CA.cert_pem.decode(),
            "requestheader-allowed-names": json.dumps(["front-proxy-client"]),
            "requestheader-username-headers": json.dumps(["X-Remote-User"]),
            "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
            "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
        }
    }
    config = RequestHeaderConfig.from_configmap(configmap)
    assert config.client_ca == FRONT_PROXY_CA.cert_pem
    assert config.allowed_names == ("front-proxy-client",)
    with pytest.raises(ValueError, match="requestheader-client-ca-file"):
        RequestHeaderConfig.from_configmap({"data": {}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_access_is_reviewed_on_the_subresource_and_cached_briefly() -> None:
    api = FakeApiServer()
    clock = Clock()
    authorizer = Authorizer(api.review_access, clock=clock)
    alice = User("alice", ("devs",))
    console = Access("get", "virtualmachineinstances", "console", "ns", "vmi1")

    asyncio.run(authorizer.authorize(alice, console))
    asyncio.run(authorizer.authorize(alice, console))
    assert len(api.reviews) == 1
    assert api.reviews[0]["spec"] == {
        "user": "alice",
        "groups": ["devs"],
        "resourceAttributes": {
            "verb": "get",
            "group": "subresources.kubevirt.io",
            "version": "v1",
            "resource": "virtualmachineinstances",
            "subresource": "console",
            "namespace": "ns",
            "name": "vmi1",
        },
    }
    clock.now += 11
    asyncio.run(authorizer.authorize(alice, console))
    assert len(api.reviews) == 2, "an allowed answer is remembered 10 s"


def test_a_denied_user_gets_403_worded_like_rbac() -> None:
    api = FakeApiServer()
    api.denied_users.add("mallory")
    authorizer = Authorizer(api.review_access, clock=Clock())
    with pytest.raises(StatusError) as caught:
        asyncio.run(authorizer.authorize(User("mallory"), Access("update", "virtualmachines", "start", "ns", "vm")))
    assert caught.value.code == 403
    assert caught.value.message.startswith(
        'virtualmachines.subresources.kubevirt.io "vm" is forbidden: User "mallory" cannot update resource '
        '"virtualmachines/start" in API group "subresources.kubevirt.io" in the namespace "ns"'
    )
