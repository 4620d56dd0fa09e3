"""virt-api's CA and serving certificate: made once, renewed in time, rotated with an overlap, kept in a Secret."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
from collections.abc import Callable

import pytest
from api_fakes import FakeApiServer
from cryptography import x509

from podvirt_common import certs
from podvirt_common import kube as k
from virt_api.certificates import Bundle, CertificateManager, CertSettings, decode, encode, plan

pytestmark = pytest.mark.unit

HOSTS = ("virt-api.kubevirt.svc", "127.0.0.1")
SETTINGS = CertSettings(hosts=HOSTS)
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch) -> Callable[[dt.datetime], dt.datetime]:
    """Make the certificate helper believe it is ``moment`` (it dates certificates from its own clock)."""
    clock = [NOW]

    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> FrozenDatetime:  # type: ignore[override]
            return clock[0]  # type: ignore[return-value]

    monkeypatch.setattr(certs, "dt", types.SimpleNamespace(datetime=FrozenDatetime, timedelta=dt.timedelta, UTC=dt.UTC))

    def move(moment: dt.datetime) -> dt.datetime:
        clock[0] = moment
        return moment

    return move


def signed_by(bundle: Bundle, index: int) -> bool:
    try:
        bundle.serving.cert.verify_directly_issued_by(bundle.cas[index].cert)
    except Exception:
        return False
    return True


def test_a_first_plan_makes_a_ca_and_a_serving_certificate_for_every_host() -> None:
    bundle = plan(None, SETTINGS, NOW)
    assert len(bundle.cas) == 1 and signed_by(bundle, 0)
    san = bundle.serving.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"virt-api.kubevirt.svc"}
    lifetime = bundle.serving.cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23) < lifetime <= dt.timedelta(hours=24)


def test_a_current_bundle_is_kept_as_it_is() -> None:
    bundle = plan(None, SETTINGS, NOW)
    assert plan(bundle, SETTINGS, NOW + dt.timedelta(hours=12)) is bundle


def test_the_serving_certificate_is_renewed_when_a_fifth_of_its_life_is_left(at: Callable[..., dt.datetime]) -> None:
    bundle = plan(None, SETTINGS, NOW)
    later = plan(bundle, SETTINGS, at(NOW + dt.timedelta(hours=20)))
    assert later.serving.cert_pem != bundle.serving.cert_pem
    assert later.cas == bundle.cas, "same CA: nothing for clients to learn"


def test_a_new_name_means_a_new_certificate() -> None:
    bundle = plan(None, SETTINGS, NOW)
    assert plan(bundle, CertSettings(hosts=(*HOSTS, "virt-api.other.svc")), NOW) is not bundle


def test_a_successor_ca_is_published_at_half_life_before_it_signs_anything(at: Callable[..., dt.datetime]) -> None:
    first = plan(None, SETTINGS, NOW)
    half = plan(first, SETTINGS, at(NOW + dt.timedelta(days=3, hours=13)))
    assert len(half.cas) == 2 and half.cas[1] == first.cas[0]
    assert signed_by(half, 1), "the old CA still signs while it outlives a fresh certificate"
    # A day before the old CA ends, certificates come from the successor, trusted for 2.5 days by then.
    late = plan(half, SETTINGS, at(NOW + dt.timedelta(days=6, hours=1)))
    assert len(late.cas) == 2 and signed_by(late, 0)
    assert late.serving.cert.not_valid_after_utc <= late.cas[0].cert.not_valid_after_utc
    # Once the old CA has expired it leaves the bundle.
    gone = plan(late, SETTINGS, at(NOW + dt.timedelta(days=7, hours=1)))
    assert gone.cas[-1] != first.cas[0] and first.cas[0] not in gone.cas


def test_no_certificate_outlives_its_ca_and_clients_always_trust_it(at: Callable[..., dt.datetime]) -> None:
    bundle = plan(None, SETTINGS, NOW)
    for hours in range(0, 24 * 30, 5):
        previous = bundle
        bundle = plan(bundle, SETTINGS, at(NOW + dt.timedelta(hours=hours)))
        if bundle.serving is not previous.serving:
            # A new certificate is signed by a CA that was already published before.
            assert any(_issued(bundle.serving.cert, ca.cert) for ca in previous.cas), f"at {hours} h"
        issuer = next(ca for ca in bundle.cas if _issued(bundle.serving.cert, ca.cert))
        assert bundle.serving.cert.not_valid_after_utc <= issuer.cert.not_valid_after_utc


def _issued(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


def test_the_secret_round_trips_and_a_broken_one_is_replaced() -> None:
    bundle = plan(plan(None, SETTINGS, NOW), SETTINGS, NOW + dt.timedelta(days=4))
    again = decode(encode(bundle, "kubevirt", "virt-api-certs"))
    assert again is not None
    assert again.ca_bundle == bundle.ca_bundle and again.serving.cert_pem == bundle.serving.cert_pem
    assert decode({"data": {"tls.crt": "bm9wZQ=="}}) is None


def test_the_manager_stores_the_bundle_and_reports_each_change_once(at: Callable[..., dt.datetime]) -> None:
    api = FakeApiServer()
    changes: list[Bundle] = []

    async def on_change(bundle: Bundle) -> None:
        changes.append(bundle)

    clock = [NOW]
    manager = CertificateManager(api, "kubevirt", "virt-api-certs", SETTINGS, on_change, now=lambda: clock[0])
    first = asyncio.run(manager.sync())
    assert api.obj("secrets", "kubevirt", "virt-api-certs") is not None
    asyncio.run(manager.sync())
    assert len(changes) == 1
    # A second replica reads the same Secret and serves the same certificate.
    other: list[Bundle] = []

    async def other_change(bundle: Bundle) -> None:
        other.append(bundle)

    replica = CertificateManager(api, "kubevirt", "virt-api-certs", SETTINGS, other_change, now=lambda: clock[0])
    assert asyncio.run(replica.sync()).serving.cert_pem == first.serving.cert_pem
    clock[0] = at(NOW + dt.timedelta(hours=21))
    renewed = asyncio.run(manager.sync())
    assert len(changes) == 2 and renewed.serving.cert_pem != first.serving.cert_pem
    stored = decode(api.obj("secrets", "kubevirt", "virt-api-certs"))
    assert stored is not None and stored.serving.cert_pem == renewed.serving.cert_pem
    assert api.obj("secrets", "kubevirt", "virt-api-certs")["metadata"]["resourceVersion"] == "2"
    assert k.SECRETS.plural == "secrets"
