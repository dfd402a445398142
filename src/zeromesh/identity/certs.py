"""Certificate helpers shared by the CA and the node agent (pure: no IO).

Everything here is a thin, typed wrapper over ``cryptography`` so the rest of
zeromesh never touches ASN.1: make a CSR the way ztunnel does, read SANs, decide
when to rotate (half-life, like ztunnel), and verify a chain with a reason a
human can act on (expired, not yet valid, unknown issuer, bad signature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509 import verification

from zeromesh.errors import IdentityError

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_MAX_DEPTH = 8

PemObject = x509.Certificate | x509.CertificateSigningRequest | PrivateKeyTypes | PublicKeyTypes


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key: what ztunnel makes per CSR; fast and TLS 1.3 mandatory-to-implement."""
    return ec.generate_private_key(ec.SECP256R1())


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """SHA-256 for RSA/ECDSA/DSA; None for EdDSA keys, which hash internally."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def make_csr(key: CertificateIssuerPrivateKeyTypes, spiffe_uri: str) -> bytes:
    """A PEM CSR exactly like ztunnel's: empty subject, one critical URI SAN, SHA-256."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_uri)]),
                          critical=True)
           .sign(key, signature_hash(key)))
    return csr.public_bytes(serialization.Encoding.PEM)


def pem(obj: PemObject) -> str:
    """PEM text of a certificate, CSR, private key (PKCS#8, unencrypted) or public key."""
    if isinstance(obj, x509.Certificate | x509.CertificateSigningRequest):
        data = obj.public_bytes(serialization.Encoding.PEM)
    elif hasattr(obj, "private_bytes"):
        data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    elif hasattr(obj, "public_bytes"):
        data = obj.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        raise TypeError(f"cannot PEM-encode {type(obj).__name__}")
    return data.decode("ascii")


def load_chain(pem_bytes: bytes | str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in file order; IdentityError if there is none."""
    data = pem_bytes.encode("ascii") if isinstance(pem_bytes, str) else pem_bytes
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise IdentityError(f"not a PEM certificate bundle: {e}") from e


def load_key(pem_bytes: bytes | str) -> PrivateKeyTypes:
    """An unencrypted PEM private key; IdentityError if it is not one."""
    data = pem_bytes.encode("ascii") if isinstance(pem_bytes, str) else pem_bytes
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IdentityError(f"not an unencrypted PEM private key: {e}") from e


def key_kind(public_key: PublicKeyTypes) -> str:
    """Human name of a key type and size: ``EC P-256``, ``RSA-2048``, ``Ed25519``…"""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {_CURVES.get(public_key.curve.name, public_key.curve.name)}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA-{public_key.key_size}"
    if isinstance(public_key, dsa.DSAPublicKey):
        return f"DSA-{public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public_key).__name__


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    return _spki(key.public_key()) == _spki(cert.public_key())


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The URI SANs of a certificate (where SPIFFE ids live); empty if it has none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What an operator wants to see about a certificate (``zeromesh x ca``, config dumps)."""

    identity: str          # first URI SAN, else the subject, else ""
    serial: str            # lower-case hex
    not_before: datetime   # UTC
    not_after: datetime    # UTC
    issuer: str            # RFC 4514
    fingerprint_sha256: str  # lower-case hex of the DER's SHA-256


def describe(cert: x509.Certificate) -> CertInfo:
    uris = uri_sans(cert)
    return CertInfo(
        identity=uris[0] if uris else cert.subject.rfc4514_string(),
        serial=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issuer=cert.issuer.rfc4514_string(),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def refresh_at(cert: x509.Certificate) -> datetime:
    """When to renew: half-way through the validity, as ztunnel does."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) / 2


def _who(cert: x509.Certificate) -> str:
    uris = uri_sans(cert)
    return f"certificate {uris[0] if uris else cert.subject.rfc4514_string()!r}"


def _key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _check_time(cert: x509.Certificate, at: datetime) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if at < start:
        raise IdentityError(f"not yet valid: {_who(cert)} is valid from {start.isoformat()}"
                            f" (checked at {at.isoformat()})")
    if at > end:
        raise IdentityError(f"expired: {_who(cert)} expired at {end.isoformat()}"
                            f" (checked at {at.isoformat()})")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _diagnose(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
              roots: Sequence[x509.Certificate], at: datetime) -> None:
    """Walk leaf → root by name and signature, raising the first precise reason found."""
    trusted = {r.fingerprint(hashes.SHA256()) for r in roots}
    pool = [*roots, *intermediates]
    current, seen = leaf, set[bytes]()
    for _ in range(_MAX_DEPTH + 1):
        _check_time(current, at)
        fp = current.fingerprint(hashes.SHA256())
        if fp in trusted:
            return
        if fp in seen:
            raise IdentityError(f"unknown issuer: the chain loops at {_who(current)}")
        seen.add(fp)
        named = [c for c in pool if c.subject == current.issuer and c.fingerprint(hashes.SHA256()) != fp]
        aki = _authority_key_id(current)
        same_key = [c for c in named if aki is None or _key_id(c) in (None, aki)]
        if not same_key:
            why = "neither in the trust bundle nor among the intermediates"
            if named:
                why = "signed by a different key than the trusted certificate of that name"
            raise IdentityError(f"unknown issuer: {_who(current)} was issued by "
                                f"{current.issuer.rfc4514_string()!r}, {why}")
        issuer = next((c for c in same_key if _signed_by(current, c)), None)
        if issuer is None:
            raise IdentityError(f"bad signature: {_who(current)} does not verify with the key of "
                                f"{current.issuer.rfc4514_string()!r}")
        current = issuer
    raise IdentityError(f"unknown issuer: no trusted root within {_MAX_DEPTH} certificates of {_who(leaf)}")


def verify_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                 roots: Sequence[x509.Certificate], at: datetime | None = None) -> None:
    """Raise IdentityError unless ``leaf`` chains to one of ``roots`` and is valid at ``at`` (now).

    A walk by name and signature gives the precise reason; then cryptography's
    verifier (RFC 5280 path validation: CA flags, key usages, EKU clientAuth, name
    constraints) has the last word. It accepts SPIFFE leaves with an empty subject
    and only a URI SAN.
    """
    when = at if at is not None else datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("verify_chain needs a timezone-aware datetime")
    if not roots:
        raise IdentityError("unknown issuer: the trust bundle is empty")
    _diagnose(leaf, intermediates, roots, when)
    verifier = (verification.PolicyBuilder()
                .store(verification.Store(list(roots)))
                .time(when)
                .max_chain_depth(_MAX_DEPTH)
                .build_client_verifier())
    try:
        verifier.verify(leaf, list(intermediates))
    except verification.VerificationError as e:
        raise IdentityError(f"chain rejected for {_who(leaf)}: {e}") from e
