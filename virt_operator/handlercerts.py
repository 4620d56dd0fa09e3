"""The mutual-TLS material between virt-api and virt-handler: a CA and two leaf certificates in Secrets.

- ``virt-handler-ca``: the CA (``tls.crt``, ``tls.key``) and ``ca.crt``, every CA still trusted;
- ``virt-handler-server-certs``: virt-handler's serving certificate (DNS name ``virt-handler``);
- ``virt-api-handler-client-certs``: virt-api's client certificate for virt-handler.

Each leaf Secret also carries ``ca.crt``, the bundle its holder trusts for the other side.

:func:`decide` is the pure rule of when to issue: material is made once and kept; the CA is renewed when
less than :attr:`CertPolicy.ca_renew_before` of its life is left, a leaf when less than
:attr:`CertPolicy.leaf_renew_before` is left, when it is not signed by the current CA, or when it
cannot be read. A renewed CA re-issues both leaves; the old CA stays in the bundles until it expires.
Components read their certificates at start; the operator restarts them on renewal by stamping a
digest of the certificates into their pod templates (see :func:`digest`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from podvirt_common import certs

from .installconfig import (
    CA_BUNDLE_KEY,
    HANDLER_CA_SECRET,
    HANDLER_CLIENT_SECRET,
    HANDLER_SERVER_SECRET,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
)

Obj = dict[str, Any]
SECRET_NAMES = (HANDLER_CA_SECRET, HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET)
SERVER_NAME = "virt-handler"
CLIENT_NAME = "virt-api"


@dataclass(frozen=True)
class CertPolicy:
    ca_days: int = 5 * 365
    ca_renew_before: dt.timedelta = dt.timedelta(days=365)
    leaf_days: int = 365
    leaf_renew_before: dt.timedelta = dt.timedelta(days=30)


@dataclass(frozen=True)
class Decision:
    """Which Secrets to (re)issue, and why (for the event)."""

    ca: bool = False
    server: bool = False
    client: bool = False
    reasons: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return self.ca or self.server or self.client


def _data(secret: Mapping[str, Any] | None, key: str) -> bytes | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    if not raw:
        return None
    try:
        return base64.b64decode(raw)
    except ValueError:
        return None


def _pair(secret: Mapping[str, Any] | None) -> certs.KeyPair | None:
    cert_pem, key_pem = _data(secret, TLS_CERT_KEY), _data(secret, TLS_KEY_KEY)
    if cert_pem is None or key_pem is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return None
    return certs.KeyPair(cert, key)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):  # a different key, issuer name or algorithm
        return False
    return True


def decide(secrets: Mapping[str, Mapping[str, Any] | None], now: dt.datetime, policy: CertPolicy) -> Decision:
    """What to issue, given the three Secrets as they are (None when absent), at ``now``."""
    reasons: list[str] = []
    ca = _pair(secrets.get(HANDLER_CA_SECRET))
    if ca is None:
        reasons.append(f"{HANDLER_CA_SECRET} is missing or unreadable")
        return Decision(True, True, True, tuple(reasons))
    if ca.expires_within(policy.ca_renew_before, now):
        reasons.append(f"{HANDLER_CA_SECRET} expires {ca.cert.not_valid_after_utc:%Y-%m-%d}")
        return Decision(True, True, True, tuple(reasons))
    renew = {}
    for name in (HANDLER_SERVER_SECRET, HANDLER_CLIENT_SECRET):
        leaf = _pair(secrets.get(name))
        if leaf is None:
            reasons.append(f"{name} is missing or unreadable")
        elif not _signed_by(leaf.cert, ca.cert):
            reasons.append(f"{name} is not signed by the current CA")
        elif leaf.expires_within(policy.leaf_renew_before, now):
            reasons.append(f"{name} expires {leaf.cert.not_valid_after_utc:%Y-%m-%d}")
        else:
            continue
        renew[name] = True
    return Decision(
        False, renew.get(HANDLER_SERVER_SECRET, False), renew.get(HANDLER_CLIENT_SECRET, False), tuple(reasons)
    )


def _bundle(*pems: bytes | None, now: dt.datetime) -> bytes:
    """Every distinct certificate of ``pems`` that has not expired, newest first."""
    found: dict[bytes, x509.Certificate] = {}
    for pem in pems:
        if pem:
            for cert in x509.load_pem_x509_certificates(pem):
                if cert.not_valid_after_utc > now:
                    found.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    ordered = sorted(found.values(), key=lambda c: c.not_valid_before_utc, reverse=True)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ordered)


def _secret(name: str, namespace: str, values: Mapping[str, bytes]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {key: base64.b64encode(value).decode() for key, value in sorted(values.items())},
    }


def issue(
    decision: Decision,
    secrets: Mapping[str, Mapping[str, Any] | None],
    namespace: str,
    now: dt.datetime,
    policy: CertPolicy,
) -> list[Obj]:
    """The Secrets ``decision`` asks for, freshly issued (the others are left as they are)."""
    if not decision.any:
        return []
    old_bundle = _data(secrets.get(HANDLER_CA_SECRET), CA_BUNDLE_KEY)
    written: list[Obj] = []
    if decision.ca:
        ca = certs.new_ca("virt-handler-ca", days=policy.ca_days)
        bundle = _bundle(ca.cert_pem, old_bundle, now=now)
        values = {TLS_CERT_KEY: ca.cert_pem, TLS_KEY_KEY: ca.key_pem, CA_BUNDLE_KEY: bundle}
        written.append(_secret(HANDLER_CA_SECRET, namespace, values))
    else:
        pair = _pair(secrets.get(HANDLER_CA_SECRET))
        assert pair is not None, "decide() renews a CA it cannot read"
        ca = pair
        bundle = _bundle(ca.cert_pem, old_bundle, now=now)
    if decision.server:
        leaf = certs.issue(ca, SERVER_NAME, hosts=(SERVER_NAME,), server=True, days=policy.leaf_days)
        values = {TLS_CERT_KEY: leaf.cert_pem, TLS_KEY_KEY: leaf.key_pem, CA_BUNDLE_KEY: bundle}
        written.append(_secret(HANDLER_SERVER_SECRET, namespace, values))
    if decision.client:
        leaf = certs.issue(ca, CLIENT_NAME, client=True, days=policy.leaf_days)
        values = {TLS_CERT_KEY: leaf.cert_pem, TLS_KEY_KEY: leaf.key_pem, CA_BUNDLE_KEY: bundle}
        written.append(_secret(HANDLER_CLIENT_SECRET, namespace, values))
    return written


def digest(secrets: Mapping[str, Mapping[str, Any] | None]) -> str:
    """A short digest of the certificates in force: it changes exactly when one is re-issued."""
    h = hashlib.sha256()
    for name in SECRET_NAMES:
        h.update(name.encode())
        h.update(_data(secrets.get(name), TLS_CERT_KEY) or b"-")
        h.update(_data(secrets.get(name), CA_BUNDLE_KEY) or b"-")
    return h.hexdigest()[:16]
