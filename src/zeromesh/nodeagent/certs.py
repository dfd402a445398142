"""Workload certificates for the service accounts present on this node.

Keys are generated here and never leave the node agent; the CA signs a CSR
for each identity (a node agent may only get identities of pods on its node).
A certificate is fetched on demand (concurrent callers share one request),
prefetched for every enrolled pod's service account, renewed at half its
lifetime with exponential back-off on failure (capped at 150 s, as Istio's
ztunnel), and dropped when the last pod of its account leaves the node.
Renewal never breaks open connections: established TLS sessions keep their
keys; only new connections use the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from zeromesh.identity.certs import describe, generate_key, load_chain, make_csr, pem, refresh_at
from zeromesh.identity.spiffe import SpiffeId

log = logging.getLogger("zeromesh.nodeagent.certs")

Requester = Callable[[bytes], Awaitable[list[str]]]     # CSR PEM -> chain PEMs (leaf first, root last)
Identity = tuple[str, str]                               # (namespace, service account)
BACKOFF_START, BACKOFF_MAX = 1.0, 150.0


@dataclass
class WorkloadCert:
    identity: SpiffeId
    key: EllipticCurvePrivateKey
    chain: list[x509.Certificate]
    chain_pem: list[str]
    directory: Path
    obtained_at: dt.datetime | None = None
    _server: ssl.SSLContext | None = field(default=None, repr=False)
    _client: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    @property
    def refresh_at(self) -> dt.datetime:
        """Half-life (Istio's rule); with a backdated not_before, never earlier than half of the
        lifetime left when we got it, so short-lived certificates are not renewed in a loop."""
        half = refresh_at(self.leaf)
        if self.obtained_at is None:
            return half
        return max(half, self.obtained_at + (self.not_after - self.obtained_at) / 2)

    def _files(self) -> tuple[str, str]:
        """ssl can only load a key from a file: keep them in a root-only runtime directory."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = f"{self.identity.namespace}.{self.identity.service_account}.{self.leaf.serial_number:x}"
        key_file, chain_file = self.directory / f"{stem}.key", self.directory / f"{stem}.pem"
        if not key_file.exists():
            for path, text in ((chain_file, "".join(self.chain_pem[:-1] or self.chain_pem)),
                               (key_file, pem(self.key))):
                tmp = path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
        return str(chain_file), str(key_file)

    def server_context(self, roots_pem: str) -> ssl.SSLContext:
        """HBONE server side: TLS 1.3, ALPN h2, a client certificate from the mesh is required."""
        if self._server is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            _common(ctx, roots_pem)
            ctx.load_cert_chain(*self._files())
            ctx.verify_mode = ssl.CERT_REQUIRED
            self._server = ctx
        return self._server

    def client_context(self, roots_pem: str) -> ssl.SSLContext:
        """HBONE client side: presents this workload's certificate; the server's SPIFFE ID is
        checked by the caller against the identities the control plane expects (no hostnames)."""
        if self._client is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _common(ctx, roots_pem)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_cert_chain(*self._files())
            self._client = ctx
        return self._client

    def remove_own_files(self) -> None:
        """This certificate's key and chain files only (a renewal's predecessor)."""
        stem = f"{self.identity.namespace}.{self.identity.service_account}.{self.leaf.serial_number:x}"
        for suffix in (".key", ".pem"):
            with contextlib.suppress(OSError):
                (self.directory / f"{stem}{suffix}").unlink()

    def forget_files(self) -> None:
        for p in self.directory.glob(f"{self.identity.namespace}.{self.identity.service_account}.*"):
            with contextlib.suppress(OSError):
                p.unlink()

    def view(self) -> dict[str, Any]:
        info = describe(self.leaf)
        return {"identity": self.identity.uri, "serial": info.serial,
                "not_before": info.not_before.isoformat(), "not_after": info.not_after.isoformat(),
                "refresh_at": self.refresh_at.isoformat(),
                "chain": [describe(c).identity or c.subject.rfc4514_string() for c in self.chain]}


def _common(ctx: ssl.SSLContext, roots_pem: str) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    ctx.load_verify_locations(cadata=roots_pem)
    ctx.options |= ssl.OP_NO_TICKET      # no session resumption, as Istio's ztunnel


class CertManager:
    def __init__(self, trust_domain: str, request: Requester, directory: Path,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.trust_domain = trust_domain
        self.request = request
        self.directory = directory
        self.clock = clock
        self.certs: dict[Identity, WorkloadCert] = {}
        self.wanted: set[Identity] = set()
        self.failures: dict[Identity, tuple[int, str]] = {}
        self._inflight: dict[Identity, asyncio.Task[WorkloadCert]] = {}
        self._wake = asyncio.Event()
        # One TLS context per identity and side, kept across renewals (the new certificate is
        # loaded into it), so listeners made with it keep serving without being rebuilt.
        self._contexts: dict[tuple[Identity, str], tuple[ssl.SSLContext, int]] = {}

    async def get(self, namespace: str, service_account: str) -> WorkloadCert:
        """The current certificate of an identity, fetching it if needed (one request at a time)."""
        ident = (namespace, service_account)
        cert = self.certs.get(ident)
        if cert is not None and cert.not_after > self.clock():
            return cert
        return await self._fetch(ident)

    async def _fetch(self, ident: Identity) -> WorkloadCert:
        task = self._inflight.get(ident)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._issue(ident))
            self._inflight[ident] = task
            task.add_done_callback(lambda _t, i=ident: self._inflight.pop(i, None))
        return await asyncio.shield(task)

    async def _issue(self, ident: Identity) -> WorkloadCert:
        spiffe = SpiffeId(self.trust_domain, *ident)
        key = generate_key()
        chain_pem = await self.request(make_csr(key, spiffe.uri))
        chain = load_chain("".join(chain_pem))
        got = [u.value for u in chain[0].extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value if isinstance(u, x509.UniformResourceIdentifier)]
        if got != [spiffe.uri]:
            raise ValueError(f"CA returned a certificate for {got}, not {spiffe.uri}")
        old = self.certs.get(ident)
        cert = WorkloadCert(spiffe, key, chain, chain_pem, self.directory, obtained_at=self.clock())
        self.certs[ident] = cert
        self.failures.pop(ident, None)
        for side in ("server", "client"):          # listeners pick the new certificate up
            if (ident, side) in self._contexts:
                self._context(cert, "", side)
        if old is not None:
            old.remove_own_files()
        log.info("certificate for %s: serial %x, refresh at %s", spiffe.uri, chain[0].serial_number,
                 cert.refresh_at.isoformat())
        self._wake.set()
        return cert

    def _context(self, cert: WorkloadCert, roots_pem: str, side: str) -> ssl.SSLContext:
        ident = (cert.identity.namespace, cert.identity.service_account)
        current = self.certs.get(ident, cert)
        have = self._contexts.get((ident, side))
        if have is None:
            ctx = current.server_context(roots_pem) if side == "server" else current.client_context(roots_pem)
            self._contexts[(ident, side)] = (ctx, current.leaf.serial_number)
            return ctx
        ctx, serial = have
        if serial != current.leaf.serial_number:
            ctx.load_cert_chain(*current._files())
            self._contexts[(ident, side)] = (ctx, current.leaf.serial_number)
        return ctx

    def server_context(self, cert: WorkloadCert, roots_pem: str) -> ssl.SSLContext:
        return self._context(cert, roots_pem, "server")

    def client_context(self, cert: WorkloadCert, roots_pem: str) -> ssl.SSLContext:
        return self._context(cert, roots_pem, "client")

    def want(self, identities: set[Identity]) -> None:
        """The service accounts of enrolled pods on this node; others are dropped."""
        self.wanted = set(identities)
        for ident in [i for i in self.certs if i not in self.wanted]:
            cert = self.certs.pop(ident)
            self._contexts.pop((ident, "server"), None)
            self._contexts.pop((ident, "client"), None)
            cert.forget_files()
            log.info("dropped certificate for %s: no pod of it left on this node", cert.identity.uri)
        self._wake.set()

    def next_due(self) -> tuple[Identity | None, float]:
        """Which identity needs work next, and in how many seconds (pure decision)."""
        now = self.clock()
        best: tuple[Identity | None, float] = (None, float("inf"))
        for ident in sorted(self.wanted):
            cert = self.certs.get(ident)
            fails, _ = self.failures.get(ident, (0, ""))
            if cert is None:
                due = 0.0 if not fails else min(BACKOFF_START * 2 ** (fails - 1), BACKOFF_MAX)
            else:
                due = max(0.0, (cert.refresh_at - now).total_seconds())
                if fails:
                    due = max(due, min(BACKOFF_START * 2 ** (fails - 1), BACKOFF_MAX))
            if due < best[1]:
                best = (ident, due)
        return best

    async def run(self) -> None:
        """Prefetch and renew forever; failures back off per identity."""
        while True:
            ident, delay = self.next_due()
            self._wake.clear()
            if ident is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 60.0))
                continue
            try:
                await self._fetch(ident)
            except Exception as e:   # keep serving with what we have; try again later
                fails = self.failures.get(ident, (0, ""))[0] + 1
                self.failures[ident] = (fails, str(e))
                log.warning("certificate for %s/%s failed (%d): %s", *ident, fails, e)
                await asyncio.sleep(0)

    def view(self) -> list[dict[str, Any]]:
        out = [c.view() for _, c in sorted(self.certs.items())]
        for ident, (n, err) in sorted(self.failures.items()):
            out.append({"identity": SpiffeId(self.trust_domain, *ident).uri, "failures": n,
                        "error": err})
        return out
