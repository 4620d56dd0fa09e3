"""The handler mTLS material: issued once, kept across reconciles, renewed before expiry, re-issued when broken."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from test_operator_fakes import T0, World, kubevirt

from virt_operator import handlercerts
from virt_operator.installconfig import HANDLER_CA_SECRET, HANDLER_CLIENT_SECRET, HANDLER_SERVER_SECRET
from virt_operator.kinds import Key
from virt_operator.plan import CERTS_ANNOTATION, Apply

pytestmark = pytest.mark.unit

POLICY = handlercerts.CertPolicy()
NAMES = (HANDLER_CA_SECRET, HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET)


def issued_all() -> dict[str, dict[str, Any]]:
    first = handlercerts.issue(handlercerts.Decision(True, True, True), {}, "kubevirt", T0, POLICY)
    return {s["metadata"]["name"]: s for s in first}


def cert(secret: dict[str, Any], key: str = "tls.crt") -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def test_nothing_is_issued_while_the_material_is_sound() -> None:
    secrets = issued_all()
    assert not handlercerts.decide(secrets, T0, POLICY).any
    assert not handlercerts.decide(secrets, T0 + timedelta(days=300), POLICY).any


def test_the_leaves_are_issued_as_the_components_need_them() -> None:
    secrets = issued_all()
    server, client, ca = (
        cert(secrets[HANDLER_SERVER_SECRET]),
        cert(secrets[HANDLER_CLIENT_SECRET]),
        cert(secrets[HANDLER_CA_SECRET]),
    )
    assert server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["virt-handler"]
    usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert (
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    for name in (HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET):
        assert cert(secrets[name], "ca.crt") == ca
        assert secrets[name]["type"] == "kubernetes.io/tls"


def test_a_leaf_is_renewed_inside_its_renewal_window_only() -> None:
    secrets = issued_all()
    expiry = cert(secrets[HANDLER_SERVER_SECRET]).not_valid_after_utc
    just_before = expiry - POLICY.leaf_renew_before - timedelta(minutes=1)
    inside = expiry - POLICY.leaf_renew_before + timedelta(minutes=1)
    assert not handlercerts.decide(secrets, just_before, POLICY).any
    decision = handlercerts.decide(secrets, inside, POLICY)
    assert (decision.ca, decision.server, decision.client) == (False, True, True)
    assert "expires" in decision.reasons[0]
    renewed = {s["metadata"]["name"]: s for s in handlercerts.issue(decision, secrets, "kubevirt", inside, POLICY)}
    assert set(renewed) == {HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET}, "the CA is kept"
    cert(renewed[HANDLER_SERVER_SECRET]).verify_directly_issued_by(cert(secrets[HANDLER_CA_SECRET]))


def test_a_ca_near_its_end_is_renewed_with_both_leaves_and_the_old_ca_stays_trusted() -> None:
    secrets = issued_all()
    old_ca = cert(secrets[HANDLER_CA_SECRET])
    late = old_ca.not_valid_after_utc - POLICY.ca_renew_before + timedelta(days=1)
    decision = handlercerts.decide(secrets, late, POLICY)
    assert (decision.ca, decision.server, decision.client) == (True, True, True)
    renewed = {s["metadata"]["name"]: s for s in handlercerts.issue(decision, secrets, "kubevirt", late, POLICY)}
    bundle = x509.load_pem_x509_certificates(base64.b64decode(renewed[HANDLER_SERVER_SECRET]["data"]["ca.crt"]))
    assert old_ca in bundle and cert(renewed[HANDLER_CA_SECRET]) in bundle


@pytest.mark.parametrize("broken", NAMES)
def test_missing_or_unreadable_material_is_reissued(broken: str) -> None:
    secrets = issued_all()
    secrets[broken] = {"data": {"tls.crt": base64.b64encode(b"junk").decode(), "tls.key": ""}}
    decision = handlercerts.decide(secrets, T0, POLICY)
    assert getattr(
        decision, {HANDLER_CA_SECRET: "ca", HANDLER_SERVER_SECRET: "server", HANDLER_CLIENT_SECRET: "client"}[broken]
    )
    del secrets[broken]
    assert handlercerts.decide(secrets, T0, POLICY).any


def test_a_leaf_from_another_ca_is_reissued() -> None:
    secrets = issued_all()
    other = issued_all()
    secrets[HANDLER_CLIENT_SECRET] = other[HANDLER_CLIENT_SECRET]
    decision = handlercerts.decide(secrets, T0, POLICY)
    assert (decision.server, decision.client) == (False, True) and "not signed by the current CA" in decision.reasons[0]


def test_the_operator_never_rotates_on_every_reconcile_and_restarts_handlers_on_renewal() -> None:
    world = World(kubevirt())
    world.step()
    handler = Key("apps/v1", "DaemonSet", "kubevirt", "virt-handler")
    first_digest = world.objects[handler]["spec"]["template"]["metadata"]["annotations"][CERTS_ANNOTATION]
    secrets_before = {k: v["data"] for k, v in world.objects.items() if k.kind == "Secret"}
    for _ in range(3):
        plan = world.step(60)
        assert not any(isinstance(a, Apply) and a.key.kind == "Secret" for a in plan.actions)
    assert {k: v["data"] for k, v in world.objects.items() if k.kind == "Secret"} == secrets_before
    server = cert(world.objects[Key("v1", "Secret", "kubevirt", HANDLER_SERVER_SECRET)])
    world.now = server.not_valid_after_utc - timedelta(days=1)
    plan = world.step()
    renewed = {a.key.name for a in plan.actions if isinstance(a, Apply)}
    assert {HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET, "virt-handler"} <= renewed
    assert world.objects[handler]["spec"]["template"]["metadata"]["annotations"][CERTS_ANNOTATION] != first_digest
