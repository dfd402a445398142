"""The mesh's certificate authority: signs workload CSRs the way istiod does.

Two ways to get a signing key, as in Istio: a self-signed root made on first start
and persisted, or a plug-in CA given as Istio's four files (``ca-cert.pem``,
``ca-key.pem``, ``root-cert.pem``, ``cert-chain.pem``). Chains are answered leaf
first and root last, like ``IstioCertificateService/CreateCertificate``.

The CA decides nothing about *who* may have an identity: the caller passes
``allowed(uri)`` (e.g. "a pod with that service account runs on the requesting
node"), so the node-authorization rule lives with the state it needs. Every
decision, signed or refused, is kept in a bounded audit log (:meth:`recent`).

Key type of the self-signed root: **ECDSA P-256.** It matches the workload keys
ztunnel generates, is a mandatory-to-implement TLS 1.3 signature scheme (every
peer verifies it), keeps certificates and handshakes small, and is generated in
milliseconds (tests make many). Istio's own self-signed root is RSA 2048, but a peer
never needs our root's key type to match its own, so this costs no interop.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zeromesh.errors import CsrRefused, IdentityError
from zeromesh.identity.certs import (
    generate_key,
    key_kind,
    key_matches,
    load_chain,
    load_key,
    pem,
    signature_hash,
)
from zeromesh.identity.files import write_file_atomic
from zeromesh.identity.spiffe import NodeId, PodId, SpiffeId, check_trust_domain, parse_any

DEFAULT_TTL = timedelta(hours=24)     # Istio DEFAULT_WORKLOAD_CERT_TTL
MAX_TTL = timedelta(days=90)          # Istio MAX_WORKLOAD_CERT_TTL
ROOT_TTL = timedelta(days=3650)       # Istio self-signed root: 10 years
CLOCK_SKEW = timedelta(minutes=1)     # leaves start a minute early so slightly slow peers accept them
AUDIT_SIZE = 1000
CONTROL_PLANE = "control-plane"
_CURVES = frozenset({"secp256r1", "secp384r1"})

ROOT_CERT, CA_CERT, CA_KEY, CERT_CHAIN = "root-cert.pem", "ca-cert.pem", "ca-key.pem", "cert-chain.pem"

Clock = Callable[[], datetime]
IpAddress = IPv4Address | IPv6Address


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Signed:
    """A certificate the CA issued, with the chain to hand back (as istiod answers)."""

    chain_pem: list[str]   # leaf first, then intermediates (cert-chain.pem), root LAST
    leaf: x509.Certificate
    identity: str          # the URI SAN
    serial: str            # lower-case hex
    not_after: datetime


@dataclass(frozen=True, slots=True)
class Signing:
    """One audit record, for ``zeromesh x ca``: who asked for what, and what the CA did."""

    at: datetime
    caller: str
    identity: str   # the requested URI ("" if the CSR could not be read; SANs joined by "," if several)
    outcome: str    # "signed" | "refused"
    reason: str     # why refused; for "signed", notes such as a capped TTL ("" if none)
    serial: str = ""
    not_after: datetime | None = None


class _Refusal(Exception):
    """Internal: a refusal, with the identity to record (raised to the caller as CsrRefused)."""

    def __init__(self, identity: str, reason: str) -> None:
        super().__init__(reason)
        self.identity = identity
        self.reason = reason


def key_refusal(public_key: PublicKeyTypes) -> str | None:
    """None if the key type is accepted (EC P-256/P-384, RSA >= 2048), else the reason."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in _CURVES:
        return None
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048:
        return None
    return f"key type {key_kind(public_key)} not accepted (EC P-256/P-384 or RSA >= 2048 only)"


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False,
               cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def _fp(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _who(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def _ca_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` cannot sign certificates, or None if it can."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "not a CA certificate (no BasicConstraints extension)"
    if not bc.ca:
        return "not a CA certificate (BasicConstraints CA:FALSE)"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "not usable as a CA (no KeyUsage extension; keyCertSign is required)"
    if not ku.key_cert_sign:
        return "not usable as a CA (KeyUsage lacks keyCertSign)"
    return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError (name/alg mismatch), TypeError (key type)
        return False
    return True


def _self_signed_root(key: ec.EllipticCurvePrivateKey, trust_domain: str, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zeromesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"zeromesh root CA {trust_domain}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    not_before = now - CLOCK_SKEW
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(secrets.randbits(128) or 1)
            .not_valid_before(not_before).not_valid_after(not_before + ROOT_TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(aki, critical=False)
            .sign(key, hashes.SHA256()))


class CertificateAuthority:
    """Signs workload certificates for one trust domain; see the module docstring.

    Methods are synchronous and take a few milliseconds of CPU (one ECDSA/RSA
    signature). In one asyncio process the event loop serializes them, so there is no
    lock; the audit log is a bounded deque whose appends are atomic anyway.
    """

    def __init__(self, *, trust_domain: str, signing_key: CertificateIssuerPrivateKeyTypes,
                 signing_cert: x509.Certificate, intermediates: Sequence[x509.Certificate],
                 root: x509.Certificate, roots: Sequence[x509.Certificate] | None = None,
                 default_ttl: timedelta = DEFAULT_TTL, max_ttl: timedelta = MAX_TTL,
                 clock: Clock = _utcnow) -> None:
        """Use :meth:`load_or_create` unless you already hold a validated CA set.

        ``intermediates`` are the certificates between a leaf and ``root``, starting
        with ``signing_cert`` when it is not the root itself; ``roots`` is the whole
        trust bundle (defaults to ``[root]``; several during a root rotation).
        """
        check_trust_domain(trust_domain)
        if default_ttl <= timedelta(0) or default_ttl > max_ttl:
            raise ValueError(f"default_ttl {default_ttl} must be positive and at most max_ttl {max_ttl}")
        self.trust_domain = trust_domain
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._key = signing_key
        self._cert = signing_cert
        self._roots = list(roots) if roots else [root]
        self._clock = clock
        self._tail_pem = [pem(c) for c in (*intermediates, root)]
        self._ca_not_after = min(c.not_valid_after_utc for c in (signing_cert, *intermediates, root))
        self.root_pem = pem(root)
        try:
            ski = signing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key())
        self._log: deque[Signing] = deque(maxlen=AUDIT_SIZE)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str = "cluster.local", *,
                       plugin_dir: Path | None = None, default_ttl: timedelta = DEFAULT_TTL,
                       max_ttl: timedelta = MAX_TTL, clock: Clock = _utcnow) -> CertificateAuthority:
        """The plug-in CA in ``plugin_dir`` if given, else the self-signed root in ``directory``.

        The self-signed root is created on first start (directory 0700, key 0600) and
        reloaded afterwards, so the trust root survives restarts. A directory holding
        only some of the files is an error rather than a silent new root, which would
        break every certificate already issued.
        """
        check_trust_domain(trust_domain)
        now = clock()
        if plugin_dir is not None:
            key, cert, intermediates, root, roots = _load_ca_files(plugin_dir, chain_required=True, now=now)
        else:
            names = (ROOT_CERT, CA_CERT, CA_KEY)
            present = [n for n in names if (directory / n).exists()]
            if not present:
                _create_self_signed(directory, trust_domain, now)
            elif len(present) != len(names):
                missing = ", ".join(n for n in names if n not in present)
                raise IdentityError(f"{directory}: CA files incomplete, missing {missing}; restore them, or "
                                    "remove the remaining ones to create a new root (this invalidates "
                                    "every certificate issued so far)")
            key, cert, intermediates, root, roots = _load_ca_files(directory, chain_required=False, now=now)
        return cls(trust_domain=trust_domain, signing_key=key, signing_cert=cert, intermediates=intermediates,
                   root=root, roots=roots, default_ttl=default_ttl, max_ttl=max_ttl, clock=clock)

    # ---- queries -------------------------------------------------------------------------------

    @property
    def signing_cert(self) -> x509.Certificate:
        return self._cert

    @property
    def roots(self) -> list[x509.Certificate]:
        return list(self._roots)

    def trust_bundle_pem(self) -> str:
        """Every trusted root, PEM-concatenated (what workloads verify peers against)."""
        return "".join(pem(r) for r in self._roots)

    def recent(self, limit: int = 50) -> list[Signing]:
        """The last ``limit`` decisions, oldest first (like a log tail)."""
        if limit <= 0:
            return []
        return list(self._log)[-limit:]

    # ---- signing -------------------------------------------------------------------------------

    def sign_csr(self, csr_pem: bytes, *, caller: str, allowed: Callable[[str], str | None],
                 ttl: timedelta | None = None) -> Signed:
        """Sign a workload CSR for ``caller`` or raise CsrRefused; either way it is recorded.

        Only the CSR's public key and its single URI SAN are used; its subject and
        other extensions are ignored, so a caller cannot smuggle in CA:TRUE or a DNS name.
        """
        now = self._now()
        try:
            uri, public_key = self._vet_csr(csr_pem, allowed)
        except _Refusal as r:
            self._log.append(Signing(now, caller, r.identity, "refused", r.reason))
            raise CsrRefused(r.reason) from None
        return self._sign(now, caller, public_key, uri, ttl)

    def issue(self, key_public: CertificatePublicKeyTypes, uri: str, ttl: timedelta | None, *,
              dns_names: Sequence[str] = (), ips: Sequence[IpAddress] = (),
              server: bool = False) -> Signed:
        """Issue a zeromesh-internal credential (node/pod bootstrap, control-plane server cert).

        Any identity of this trust domain is allowed, bootstrap ones included. With
        ``server=True`` and DNS/IP SANs the subject CN is the first DNS name (or IP),
        for clients that still look at it. All leaves carry serverAuth and clientAuth.
        """
        now = self._now()
        try:
            ident = parse_any(uri)
        except ValueError as e:
            raise self._refuse_issue(now, uri, f"not a zeromesh identity: {e}") from None
        if ident.trust_domain != self.trust_domain:
            raise self._refuse_issue(now, uri, f"{uri} is not in trust domain {self.trust_domain!r}")
        if (why := key_refusal(key_public)) is not None:
            raise self._refuse_issue(now, uri, why)
        subject = x509.Name([])
        if server and (dns_names or ips):
            cn = dns_names[0] if dns_names else str(ips[0])
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return self._sign(now, CONTROL_PLANE, key_public, uri, ttl, dns_names=dns_names, ips=ips,
                          subject=subject)

    # ---- internals -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the CA clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    def _refuse_issue(self, now: datetime, uri: str, reason: str) -> IdentityError:
        self._log.append(Signing(now, CONTROL_PLANE, uri, "refused", reason))
        return IdentityError(reason)

    def _vet_csr(self, csr_pem: bytes | str,
                 allowed: Callable[[str], str | None]) -> tuple[str, CertificatePublicKeyTypes]:
        """Apply the CSR rules in order; raise _Refusal with the first reason."""
        data = csr_pem.encode("ascii", "replace") if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as e:
            raise _Refusal("", f"CSR is not a PEM certificate request ({e})") from None
        try:
            sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        except (ValueError, x509.DuplicateExtension) as e:
            raise _Refusal("", f"CSR extensions cannot be read ({e})") from None
        identity = ",".join(str(gn.value) for gn in sans)
        try:
            signature_ok = csr.is_signature_valid
            public_key = csr.public_key()
        except (UnsupportedAlgorithm, ValueError) as e:
            raise _Refusal(identity, f"key type not accepted ({e})") from None
        if not signature_ok:
            raise _Refusal(identity, "CSR signature does not verify (altered, or not signed by its own key)")
        if (why := key_refusal(public_key)) is not None:
            raise _Refusal(identity, why)
        if not sans:
            raise _Refusal(identity, "CSR has no subjectAltName; exactly one URI SAN (the SPIFFE id) "
                                     "is required")
        if len(sans) != 1:
            listed = ", ".join(f"{_san_kind(gn)} {gn.value}" for gn in sans)
            raise _Refusal(identity, f"CSR has {len(sans)} SANs ({listed}); exactly one URI SAN is accepted")
        if not isinstance(sans[0], x509.UniformResourceIdentifier):
            kind = _san_kind(sans[0])
            article = "an" if kind[0] in "AEIOUaeiou" else "a"
            raise _Refusal(identity, f"CSR SAN is {article} {kind} ({sans[0].value}); "
                                     "only a single URI SAN (the SPIFFE id) is accepted")
        uri = sans[0].value
        try:
            ident = parse_any(uri)
        except ValueError as e:
            raise _Refusal(uri, f"requested identity is not a workload SPIFFE id: {e}") from None
        if isinstance(ident, NodeId | PodId):
            raise _Refusal(uri, f"{uri} is a zeromesh bootstrap identity; CSRs may only request "
                                "workload identities (spiffe://<td>/ns/<namespace>/sa/<service-account>)")
        assert isinstance(ident, SpiffeId)
        if ident.trust_domain != self.trust_domain:
            raise _Refusal(uri, f"{uri} is in trust domain {ident.trust_domain!r}, but this CA signs for "
                                f"trust domain {self.trust_domain!r}")
        if (why := allowed(uri)) is not None:
            raise _Refusal(uri, why)
        return uri, public_key

    def _sign(self, now: datetime, caller: str, public_key: CertificatePublicKeyTypes, uri: str,
              ttl: timedelta | None, *, dns_names: Sequence[str] = (), ips: Sequence[IpAddress] = (),
              subject: x509.Name | None = None) -> Signed:
        notes: list[str] = []
        now = now.replace(microsecond=0)  # X.509 times have whole seconds; keep Signed.not_after exact
        if ttl is None or ttl <= timedelta(0):
            ttl = self.default_ttl
        if ttl > self.max_ttl:
            notes.append(f"requested ttl {ttl} capped at {self.max_ttl}")
            ttl = self.max_ttl
        not_before = now - CLOCK_SKEW
        not_after = now + ttl          # the skew only widens the start; the lifetime is as asked
        if not_after > self._ca_not_after:
            not_after = self._ca_not_after
            notes.append("not_after capped at the CA chain's expiry")
        if not_after <= now:
            reason = f"the CA chain expired at {self._ca_not_after.isoformat()}; cannot sign"
            self._log.append(Signing(now, caller, uri, "refused", reason))
            raise IdentityError(reason)
        subject = subject if subject is not None else x509.Name([])
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        names += [x509.DNSName(d) for d in dns_names]
        names += [x509.IPAddress(ip) for ip in ips]
        leaf = (x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(self._cert.subject)
                .public_key(public_key)
                .serial_number(secrets.randbits(128) or 1)
                .not_valid_before(not_before).not_valid_after(not_after)
                # RFC 5280 4.2.1.6: with an empty subject the SAN must be critical.
                .add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                .add_extension(self._aki, critical=False)
                .sign(self._key, signature_hash(self._key)))
        serial = f"{leaf.serial_number:x}"
        not_after = leaf.not_valid_after_utc
        self._log.append(Signing(now, caller, uri, "signed", "; ".join(notes), serial, not_after))
        return Signed([pem(leaf), *self._tail_pem], leaf, uri, serial, not_after)


def _san_kind(gn: x509.GeneralName) -> str:
    kinds: dict[type[x509.GeneralName], str] = {
        x509.DNSName: "DNS name", x509.IPAddress: "IP address", x509.UniformResourceIdentifier: "URI",
        x509.RFC822Name: "email address", x509.DirectoryName: "directory name",
    }
    return kinds.get(type(gn), type(gn).__name__)


def _create_self_signed(directory: Path, trust_domain: str, now: datetime) -> None:
    """Make and persist a new root: certificates first, the key last (0600) in a 0700 directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key = generate_key()
    root_pem = pem(_self_signed_root(key, trust_domain, now))
    write_file_atomic(directory / ROOT_CERT, root_pem, 0o644)
    write_file_atomic(directory / CA_CERT, root_pem, 0o644)
    write_file_atomic(directory / CA_KEY, pem(key), 0o600)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{path}: missing (a CA needs {CA_CERT}, {CA_KEY}, {ROOT_CERT}"
                            f" and, for a plug-in CA, {CERT_CHAIN})") from None
    except OSError as e:
        raise IdentityError(f"{path}: cannot read ({e.strerror})") from None


def _certs(path: Path) -> list[x509.Certificate]:
    try:
        return load_chain(_read(path))
    except IdentityError as e:
        if str(e).startswith(str(path)):
            raise
        raise IdentityError(f"{path}: {e}") from None


def _check_time(path: Path, cert: x509.Certificate, now: datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise IdentityError(f"{path}: certificate {_who(cert)} expired at "
                            f"{cert.not_valid_after_utc.isoformat()}")
    if now < cert.not_valid_before_utc:
        raise IdentityError(f"{path}: certificate {_who(cert)} is not valid before "
                            f"{cert.not_valid_before_utc.isoformat()}")


def _load_ca_files(directory: Path, *, chain_required: bool, now: datetime) -> tuple[
        CertificateIssuerPrivateKeyTypes, x509.Certificate, list[x509.Certificate], x509.Certificate,
        list[x509.Certificate]]:
    """Load and validate Istio's CA file layout; IdentityError names the file and the problem.

    Returns (signing key, signing cert, intermediates between leaf and root, the root the
    chain ends at, every root in root-cert.pem).
    """
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    root_path, chain_path = directory / ROOT_CERT, directory / CERT_CHAIN

    ca_certs = _certs(cert_path)
    if len(ca_certs) != 1:
        raise IdentityError(f"{cert_path}: must hold exactly one certificate (the signing CA), found "
                            f"{len(ca_certs)}")
    ca_cert = ca_certs[0]
    try:
        key: PrivateKeyTypes = load_key(_read(key_path))
    except IdentityError as e:
        if str(e).startswith(str(key_path)):
            raise
        raise IdentityError(f"{key_path}: {e}") from None
    if (why := key_refusal(key.public_key())) is not None:
        raise IdentityError(f"{key_path}: {why}")
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    if not key_matches(key, ca_cert):
        raise IdentityError(f"{key_path}: private key does not match the public key of {CA_CERT}")
    if (why := _ca_problem(ca_cert)) is not None:
        raise IdentityError(f"{cert_path}: {_who(ca_cert)} is {why}")
    _check_time(cert_path, ca_cert, now)

    roots = _certs(root_path)
    for i, r in enumerate(roots, 1):
        if (why := _ca_problem(r)) is not None:
            raise IdentityError(f"{root_path}: certificate {i} {_who(r)} is {why}")
    root_fps = {_fp(r) for r in roots}

    if chain_path.exists() or chain_required:
        chain = _certs(chain_path)
        if _fp(chain[0]) != _fp(ca_cert):
            chain = [ca_cert, *chain]
    else:
        chain = [ca_cert]
    broken = f"{chain_path}: does not chain {CA_CERT} to {ROOT_CERT}"
    for child, parent in itertools.pairwise(chain):
        if _fp(child) in root_fps:
            raise IdentityError(f"{broken}: root {_who(child)} is followed by more certificates")
        if not _signed_by(child, parent):
            raise IdentityError(f"{broken}: {_who(child)} is not signed by {_who(parent)}")
        if (why := _ca_problem(parent)) is not None:
            raise IdentityError(f"{chain_path}: {_who(parent)} is {why}")
        _check_time(chain_path, parent, now)
    last = chain[-1]
    if _fp(last) in root_fps:
        root = last
    else:
        found = next((r for r in roots if _signed_by(last, r)), None)
        if found is None:
            where = chain_path if chain_path.exists() else root_path
            raise IdentityError(f"{where}: does not chain {CA_CERT} to {ROOT_CERT}: {_who(last)} (issuer "
                                f"{last.issuer.rfc4514_string()!r}) is not signed by any certificate in "
                                f"{ROOT_CERT}")
        root = found
    _check_time(root_path, root, now)
    intermediates = [c for c in chain if _fp(c) not in root_fps]
    return key, ca_cert, intermediates, root, roots
