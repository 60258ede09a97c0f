"""The webhook's certificates: a CA the API server trusts and a serving certificate it signs.

Pure, with the clock as a parameter: ``next_bundle`` says what the stored
bundle should become at ``now``, and the webhook layer stores, loads and
publishes it. The design keeps admission uninterrupted across rotations:

- The serving certificate is renewed with the same CA, so the CA bundle the
  API server trusts does not change and any replica may switch at any time.
- A CA is renewed in two steps: first the new CA joins the bundle (the
  serving certificate stays), and only once that bundle is published in the
  webhook configuration does a serving certificate from the new CA replace
  the old one. The old CA leaves the bundle when it expires.

Anything is renewed once less than a third of its lifetime remains.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
from collections.abc import Mapping, Sequence

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Secret keys, the names cert-manager writes too, so either can fill the Secret.
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"

# The signature's validity starts a little before "now": clocks of the API server and the
# operator may differ.
BACKDATE = datetime.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True)
class Lifetimes:
    ca: datetime.timedelta = datetime.timedelta(days=3650)
    serving: datetime.timedelta = datetime.timedelta(days=90)


@dataclasses.dataclass(frozen=True)
class Bundle:
    """What the webhook's Secret holds; ``ca_bundle`` lists the trusted CAs, newest first."""

    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def secret_data(self) -> dict[str, str]:
        return {
            k: base64.b64encode(v).decode()
            for k, v in (
                (CA_CERT, self.ca_bundle),
                (CA_KEY, self.ca_key),
                (TLS_CERT, self.cert),
                (TLS_KEY, self.key),
            )
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None, *, need_ca_key: bool = True) -> Bundle | None:
        """The bundle in a Secret's ``data``, or None when a part is missing or unreadable."""
        try:
            parts = {
                k: base64.b64decode((data or {})[k], validate=True) for k in (CA_CERT, TLS_CERT, TLS_KEY)
            }
            ca_key = base64.b64decode((data or {}).get(CA_KEY, ""), validate=True)
            cas(parts[CA_CERT])
            x509.load_pem_x509_certificate(parts[TLS_CERT])
        except (KeyError, ValueError):
            return None
        if need_ca_key and not ca_key:
            return None
        return cls(parts[CA_CERT], ca_key, parts[TLS_CERT], parts[TLS_KEY])


def cas(ca_bundle: bytes) -> list[x509.Certificate]:
    found = x509.load_pem_x509_certificates(ca_bundle)
    if not found:
        raise ValueError("no certificate in the CA bundle")
    return found


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_ca(now: datetime.datetime, validity: datetime.timedelta) -> tuple[bytes, bytes]:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"llmgw-webhook-ca-{int(now.timestamp())}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(cert), _pem_key(key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(
    ca_cert: bytes, ca_key: bytes, hosts: Sequence[str], now: datetime.datetime, validity: datetime.timedelta
) -> tuple[bytes, bytes]:
    """A serving certificate for ``hosts`` (DNS names or IP addresses), signed by the CA."""
    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = _key()
    not_after = min(now + validity, ca.not_valid_after_utc)  # never outlive its CA
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    return _pem(cert), _pem_key(key)


def due(cert: x509.Certificate, now: datetime.datetime) -> bool:
    """Less than a third of its lifetime (from issue, not from the backdated start) is left."""
    start, end = cert.not_valid_before_utc + BACKDATE, cert.not_valid_after_utc
    return now >= end - (end - start) / 3


def hosts_of(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san]


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return False
    return True


def fresh(hosts: Sequence[str], now: datetime.datetime, lifetimes: Lifetimes) -> Bundle:
    ca_cert, ca_key = new_ca(now, lifetimes.ca)
    cert, key = issue(ca_cert, ca_key, hosts, now, lifetimes.serving)
    return Bundle(ca_cert, ca_key, cert, key)


def next_bundle(
    current: Bundle | None,
    hosts: Sequence[str],
    now: datetime.datetime,
    lifetimes: Lifetimes,
    *,
    published: bool,
) -> Bundle | None:
    """What the stored bundle must become at ``now``; None when it is fine as it is.

    ``published``: the webhook configuration's caBundle is ``current.ca_bundle``,
    so the API server trusts every CA in it (a new CA may then sign).
    """
    if current is None:
        return fresh(hosts, now, lifetimes)
    trusted = [c for c in cas(current.ca_bundle) if c.not_valid_after_utc > now]
    if not trusted:
        return fresh(hosts, now, lifetimes)  # every CA expired: admission is down anyway
    newest = trusted[0]
    if due(newest, now):
        # Step one of a CA rotation: trust the new CA first, keep serving from the old one. The old
        # CA's key is at hand only now, so the serving certificate is renewed from it here: a
        # certificate near its end would otherwise have to come from the new CA before the API
        # server is known to trust it (a missed publication, the API away).
        ca_cert, ca_key = new_ca(now, lifetimes.ca)
        bundle = ca_cert + b"".join(_pem(c) for c in trusted)
        cert, key = issue(_pem(newest), current.ca_key, hosts, now, lifetimes.serving)
        return Bundle(bundle, ca_key, cert, key)
    serving = x509.load_pem_x509_certificate(current.cert)
    kept = b"".join(_pem(c) for c in trusted)
    from_newest = issued_by(serving, newest)
    chains = from_newest or any(issued_by(serving, c) for c in trusted[1:])
    renew = (
        not from_newest or due(serving, now) or sorted(hosts_of(serving)) != sorted(_normal(h) for h in hosts)
    )
    # A certificate from a CA the API server may not trust yet waits for the bundle's publication,
    # unless the one served now is no good either.
    if renew and (from_newest or published or not chains or serving.not_valid_after_utc <= now):
        cert, key = issue(_pem(newest), current.ca_key, hosts, now, lifetimes.serving)
        return Bundle(kept, current.ca_key, cert, key)
    if kept != current.ca_bundle:
        return Bundle(kept, current.ca_key, current.cert, current.key)  # an expired CA leaves
    return None


def _normal(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def not_after(pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc
