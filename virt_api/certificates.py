"""virt-api's own certificates: a private CA and a serving certificate, kept in a Secret and rotated.

No one hands virt-api a certificate. It keeps a CA of its own and a serving certificate signed by it in
the Secret ``virt-api-certs`` (``tls.crt``, ``tls.key``; ``ca.crt`` holds every CA still trusted and
``ca.key`` their keys), so that all replicas serve the same chain and a restart keeps it.
:func:`plan` decides what to renew; it is pure and takes the time as an argument:

- a CA lives ``ca_lifetime`` (7 days); at half its life a successor CA is made, and both are published
  in the ``caBundle`` of the webhook configurations and APIServices from then on;
- the serving certificate lives ``cert_lifetime`` (24 hours) and is renewed when a fifth of its life is
  left; it is signed by the oldest CA that outlives it, so a certificate is only ever signed by a CA
  that clients have trusted for a while (half a CA lifetime minus one certificate lifetime);
- an expired CA leaves the bundle.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from podvirt_common import certs
from podvirt_common import kube as k
from virt_api.apiserver import ApiServer
from virt_api.status import StatusError

log = logging.getLogger(__name__)

CA_NAME = "virt-api-ca"
SERVING_NAME = "virt-api"


@dataclass(frozen=True)
class CertSettings:
    hosts: tuple[str, ...]
    ca_lifetime: dt.timedelta = dt.timedelta(days=7)
    cert_lifetime: dt.timedelta = dt.timedelta(hours=24)
    #: Renew the serving certificate when less than this share of its life is left.
    renew_when_left: float = 0.2


@dataclass(frozen=True)
class Bundle:
    """The CAs clients should trust (newest first) and the serving certificate."""

    cas: tuple[certs.KeyPair, ...]
    serving: certs.KeyPair

    @property
    def ca_bundle(self) -> bytes:
        return b"".join(ca.cert_pem for ca in self.cas)


def _lifetime(pair: certs.KeyPair) -> dt.timedelta:
    return pair.cert.not_valid_after_utc - pair.cert.not_valid_before_utc


def _hours(delta: dt.timedelta) -> int:
    return max(1, int(delta.total_seconds() // 3600))


def _issued_by(cert: x509.Certificate, ca: certs.KeyPair) -> bool:
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _hosts(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def plan(current: Bundle | None, settings: CertSettings, now: dt.datetime) -> Bundle:
    """The bundle to use from ``now`` on; ``current`` itself (the same object) when nothing needs renewing."""
    cas = [ca for ca in (current.cas if current else ()) if ca.cert.not_valid_after_utc > now]
    changed = current is None or len(cas) != len(current.cas)
    if not cas or cas[0].cert.not_valid_after_utc - now < settings.ca_lifetime / 2:
        days = max(1, settings.ca_lifetime.days)
        cas.insert(0, certs.new_ca(CA_NAME, days=days))
        changed = True
    # The oldest CA that outlives a new certificate signs it; otherwise the newest.
    signer = next((ca for ca in reversed(cas) if ca.cert.not_valid_after_utc >= now + settings.cert_lifetime), cas[0])
    serving = current.serving if current else None
    if serving is None or _needs_new_serving(serving, cas, settings, now):
        lifetime = min(settings.cert_lifetime, signer.cert.not_valid_after_utc - now)
        serving = certs.issue(signer, SERVING_NAME, hosts=settings.hosts, server=True, days=0, hours=_hours(lifetime))
        changed = True
    if not changed and current is not None:
        return current
    return Bundle(tuple(cas), serving)


def _needs_new_serving(
    serving: certs.KeyPair, cas: list[certs.KeyPair], settings: CertSettings, now: dt.datetime
) -> bool:
    # A certificate never outlives its CA (see plan), so renewing it on time also moves it to a newer CA.
    left = serving.cert.not_valid_after_utc - now
    if left <= _lifetime(serving) * settings.renew_when_left:
        return True
    if not any(_issued_by(serving.cert, ca) for ca in cas):
        return True  # its CA expired or was dropped
    return _hosts(serving.cert) != set(settings.hosts)


# -- the Secret -----------------------------------------------------------------------------------------


def _load_keys(pem: bytes) -> list[certs.PrivateKey]:
    keys: list[certs.PrivateKey] = []
    marker = b"-----BEGIN"
    for chunk in pem.split(marker)[1:]:
        key = serialization.load_pem_private_key(marker + chunk, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            keys.append(key)
    return keys


def _public(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def decode(secret: dict[str, Any] | None) -> Bundle | None:
    """The bundle stored in the Secret; None if there is none or it is unusable (then it is made anew)."""
    if not secret:
        return None
    data = secret.get("data") or {}
    try:
        raw = {key: base64.b64decode(data[key]) for key in ("tls.crt", "tls.key", "ca.crt", "ca.key")}
        ca_certs = x509.load_pem_x509_certificates(raw["ca.crt"])
        keys = {_public(key.public_key()): key for key in _load_keys(raw["ca.key"])}
        cas = tuple(certs.KeyPair(c, keys[_public(c.public_key())]) for c in ca_certs)
        serving_keys = _load_keys(raw["tls.key"])
        serving = certs.KeyPair(x509.load_pem_x509_certificate(raw["tls.crt"]), serving_keys[0])
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        log.warning("the certificate Secret is unusable (%s); making new certificates", exc)
        return None
    if not cas:
        return None
    return Bundle(tuple(sorted(cas, key=lambda ca: ca.cert.not_valid_after_utc, reverse=True)), serving)


def encode(bundle: Bundle, namespace: str, name: str) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "podvirt"}},
        "data": {
            "tls.crt": b64(bundle.serving.cert_pem),
            "tls.key": b64(bundle.serving.key_pem),
            "ca.crt": b64(bundle.ca_bundle),
            "ca.key": b64(b"".join(ca.key_pem for ca in bundle.cas)),
        },
    }


class CertificateManager:
    """Keeps the Secret's bundle current and tells ``on_change`` whenever the bundle in use changes."""

    def __init__(
        self,
        apiserver: ApiServer,
        namespace: str,
        secret_name: str,
        settings: CertSettings,
        on_change: Callable[[Bundle], Awaitable[None]],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.apiserver = apiserver
        self.namespace = namespace
        self.secret_name = secret_name
        self.settings = settings
        self.on_change = on_change
        self.now = now
        self.current: Bundle | None = None

    async def sync(self) -> Bundle:
        """Read the Secret, renew what is due (writing it back), and apply the result."""
        for _ in range(5):
            secret = await self.apiserver.get(k.SECRETS, self.secret_name, self.namespace)
            stored = decode(secret)
            bundle = plan(stored, self.settings, self.now())
            if bundle is not stored:
                body = encode(bundle, self.namespace, self.secret_name)
                try:
                    if secret is None:
                        await self.apiserver.create(k.SECRETS, body, self.namespace)
                    else:
                        body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
                        await self.apiserver.replace(k.SECRETS, body, self.namespace)
                except StatusError as exc:
                    if exc.code == 409:  # another replica wrote first: take theirs
                        continue
                    raise
                log.info("renewed certificates", extra={"cas": len(bundle.cas), "secret": self.secret_name})
            if self.current is None or not _same(self.current, bundle):
                await self.on_change(bundle)
                self.current = bundle
            return bundle
        raise StatusError(409, "Conflict", f"could not settle the Secret {self.namespace}/{self.secret_name}")


def _same(a: Bundle, b: Bundle) -> bool:
    return a.serving.cert_pem == b.serving.cert_pem and a.ca_bundle == b.ca_bundle
