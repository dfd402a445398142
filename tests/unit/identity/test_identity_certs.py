"""Certificate helpers: ztunnel-shaped CSRs, SAN reading, half-life, and chain verification reasons."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zeromesh.errors import IdentityError
from zeromesh.identity import (
    CertificateAuthority,
    describe,
    generate_key,
    key_kind,
    key_matches,
    load_chain,
    load_key,
    make_csr,
    pem,
    refresh_at,
    uri_sans,
    verify_chain,
)

URI = "spiffe://cluster.local/ns/ns1/sa/sleep"
ALLOW = lambda uri: None  # noqa: E731


def test_generate_key_is_p256() -> None:
    key = generate_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


def test_make_csr_is_shaped_like_ztunnels(workload_key: ec.EllipticCurvePrivateKey) -> None:
    csr = x509.load_pem_x509_csr(make_csr(workload_key, URI))
    assert csr.is_signature_valid
    assert len(csr.subject) == 0
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    (ext,) = list(csr.extensions)
    assert ext.critical and isinstance(ext.value, x509.SubjectAlternativeName)
    assert list(ext.value) == [x509.UniformResourceIdentifier(URI)]


def test_make_csr_with_eddsa_key() -> None:
    csr = x509.load_pem_x509_csr(make_csr(ed25519.Ed25519PrivateKey.generate(), URI))
    assert csr.is_signature_valid and csr.signature_hash_algorithm is None


def test_pem_round_trips(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey) -> None:
    root = ca.signing_cert
    assert load_chain(pem(root)) == [root]
    assert load_chain(pem(root).encode() * 2) == [root, root]
    key = load_key(pem(workload_key))
    assert key_matches(key, ca.sign_csr(make_csr(workload_key, URI), caller="t", allowed=ALLOW).leaf)
    assert not key_matches(key, root)
    assert pem(workload_key.public_key()).startswith("-----BEGIN PUBLIC KEY-----")
    assert pem(x509.load_pem_x509_csr(make_csr(workload_key, URI))).startswith(
        "-----BEGIN CERTIFICATE REQUEST-----")
    with pytest.raises(TypeError):
        pem(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_load_chain_rejects_garbage(text: bytes) -> None:
    with pytest.raises(IdentityError, match="not a PEM certificate bundle"):
        load_chain(text)


def test_load_key_rejects_garbage() -> None:
    with pytest.raises(IdentityError, match="not an unencrypted PEM private key"):
        load_key("nope")


@pytest.mark.parametrize(("make", "kind"), [
    (lambda: ec.generate_private_key(ec.SECP256R1()), "EC P-256"),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "EC P-384"),
    (lambda: ec.generate_private_key(ec.SECP256K1()), "EC secp256k1"),
    (lambda: rsa.generate_private_key(65537, 1024), "RSA-1024"),
    (lambda: dsa.generate_private_key(1024), "DSA-1024"),
    (ed25519.Ed25519PrivateKey.generate, "Ed25519"),
])
def test_key_kind(make: Any, kind: str) -> None:
    assert key_kind(make().public_key()) == kind


def test_uri_sans_and_describe(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey) -> None:
    signed = ca.sign_csr(make_csr(workload_key, URI), caller="t", allowed=ALLOW)
    assert uri_sans(signed.leaf) == [URI]
    assert uri_sans(ca.signing_cert) == []  # the root has no SAN at all
    info = describe(signed.leaf)
    assert info.identity == URI
    assert info.serial == signed.serial == f"{signed.leaf.serial_number:x}"
    assert info.not_before == signed.leaf.not_valid_before_utc
    assert info.not_after == signed.not_after
    assert info.issuer == "CN=zeromesh root CA cluster.local,O=zeromesh"
    assert re.fullmatch(r"[0-9a-f]{64}", info.fingerprint_sha256)
    assert info.fingerprint_sha256 == signed.leaf.fingerprint(hashes.SHA256()).hex()
    assert describe(ca.signing_cert).identity == "CN=zeromesh root CA cluster.local,O=zeromesh"


def test_refresh_at_is_half_life(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey) -> None:
    signed = ca.sign_csr(make_csr(workload_key, URI), caller="t", allowed=ALLOW, ttl=timedelta(hours=24))
    start, end = signed.leaf.not_valid_before_utc, signed.leaf.not_valid_after_utc
    assert refresh_at(signed.leaf) == start + (end - start) / 2
    assert refresh_at(signed.leaf).tzinfo is not None


# ---- verify_chain ------------------------------------------------------------------------------


@pytest.fixture
def signed(ca: CertificateAuthority, workload_key: ec.EllipticCurvePrivateKey) -> Any:
    return ca.sign_csr(make_csr(workload_key, URI), caller="t", allowed=ALLOW)


def _now(signed: Any) -> datetime:
    return signed.leaf.not_valid_before_utc + timedelta(hours=1)


def test_verify_chain_accepts_a_good_chain(ca: CertificateAuthority, signed: Any) -> None:
    verify_chain(signed.leaf, [], ca.roots, at=_now(signed))
    # extra, unrelated intermediates and roots do not matter
    verify_chain(signed.leaf, [ca.signing_cert], [*ca.roots, ca.signing_cert], at=_now(signed))


def test_verify_chain_defaults_to_now(tmp_path: Any, workload_key: ec.EllipticCurvePrivateKey) -> None:
    real = CertificateAuthority.load_or_create(tmp_path / "real")
    leaf = real.sign_csr(make_csr(workload_key, URI), caller="t", allowed=ALLOW).leaf
    verify_chain(leaf, [], real.roots)


def test_verify_chain_expired(ca: CertificateAuthority, signed: Any) -> None:
    with pytest.raises(IdentityError, match=r"^expired: certificate 'spiffe://cluster.local/ns/ns1/sa/sleep'"):
        verify_chain(signed.leaf, [], ca.roots, at=signed.not_after + timedelta(seconds=1))


def test_verify_chain_not_yet_valid(ca: CertificateAuthority, signed: Any) -> None:
    with pytest.raises(IdentityError, match=r"^not yet valid: "):
        verify_chain(signed.leaf, [], ca.roots, at=signed.leaf.not_valid_before_utc - timedelta(seconds=1))


def test_verify_chain_needs_aware_time(ca: CertificateAuthority, signed: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain(signed.leaf, [], ca.roots, at=datetime(2025, 6, 1))


def test_verify_chain_unknown_issuer_other_ca(tmp_path: Any, clock: Any, signed: Any) -> None:
    """Another mesh's root with the very same name is still an unknown issuer."""
    other = CertificateAuthority.load_or_create(tmp_path / "other", clock=clock)
    assert other.signing_cert.subject == signed.leaf.issuer
    with pytest.raises(IdentityError, match=r"^unknown issuer: .*signed by a different key"):
        verify_chain(signed.leaf, [], other.roots, at=_now(signed))


def test_verify_chain_unknown_issuer_name(tmp_path: Any, clock: Any, signed: Any) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other", "example.org", clock=clock)
    with pytest.raises(IdentityError, match=r"^unknown issuer: .*neither in the trust bundle nor among"):
        verify_chain(signed.leaf, [], other.roots, at=_now(signed))


def test_verify_chain_empty_bundle(signed: Any) -> None:
    with pytest.raises(IdentityError, match=r"^unknown issuer: the trust bundle is empty"):
        verify_chain(signed.leaf, [], [], at=_now(signed))


def test_verify_chain_bad_signature(ca: CertificateAuthority, signed: Any) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(signed.leaf.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s
    tampered = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(IdentityError, match=r"^bad signature: certificate 'spiffe://cluster.local/ns/ns1/sa/sleep'"):
        verify_chain(tampered, [], ca.roots, at=_now(signed))


def test_verify_chain_missing_intermediate(plugin: Any, clock: Any, tmp_path: Any,
                                           workload_key: ec.EllipticCurvePrivateKey) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "x", plugin_dir=plugin.directory, clock=clock)
    leaf = ca.sign_csr(make_csr(workload_key, URI), caller="t", allowed=ALLOW).leaf
    verify_chain(leaf, [plugin.intermediate], [plugin.root], at=clock.now)
    with pytest.raises(IdentityError, match=r"^unknown issuer: .*'CN=Intermediate CA,O=Istio'"):
        verify_chain(leaf, [], [plugin.root], at=clock.now)


def test_verify_chain_expired_intermediate(plugin: Any, make_ca_cert: Any, rsa_root_key: rsa.RSAPrivateKey,
                                           ec_keys: list[ec.EllipticCurvePrivateKey],
                                           workload_key: ec.EllipticCurvePrivateKey) -> None:
    """Our CA never outlives its chain, but a foreign leaf may: the reason names the intermediate."""
    start = datetime(2025, 6, 1, tzinfo=UTC)
    short = make_ca_cert("Short CA", ec_keys[1], plugin.root, rsa_root_key, not_before=start,
                         lifetime=timedelta(days=2))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(short.subject)
            .public_key(workload_key.public_key()).serial_number(3)
            .not_valid_before(start).not_valid_after(start + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(URI)]), critical=True)
            .sign(ec_keys[1], hashes.SHA256()))
    expected = r"^expired: certificate 'CN=Short CA,O=Istio' expired at 2025-06-03"
    with pytest.raises(IdentityError, match=expected):
        verify_chain(leaf, [short], [plugin.root], at=start + timedelta(days=5))


def test_verify_chain_rejects_what_path_validation_rejects(ca: CertificateAuthority,
                                                          workload_key: ec.EllipticCurvePrivateKey) -> None:
    """A leaf without clientAuth passes the signature walk but not RFC 5280 + EKU checks."""
    now = datetime(2025, 6, 1, tzinfo=UTC)
    issuer_key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r")])
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(issuer_key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(issuer_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(name)
            .public_key(workload_key.public_key()).serial_number(2)
            .not_valid_before(now).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(URI)]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    with pytest.raises(IdentityError, match=r"^chain rejected for certificate 'spiffe://"):
        verify_chain(leaf, [], [root], at=now + timedelta(minutes=1))
