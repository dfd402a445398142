"""One root exception, with a family per area, so callers can catch by cause."""

from __future__ import annotations


class ZeromeshError(Exception):
    """Root of every error zeromesh raises on purpose."""


class ManifestError(ZeromeshError):
    """A manifest the user gave us is wrong; the message names file, document, resource, field."""


class ManifestErrors(ManifestError):
    """Several manifest errors found in one invocation (apply is all-or-nothing)."""

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class StoreError(ZeromeshError):
    """The store refused an operation."""


class NotFound(StoreError):
    """The named resource does not exist."""


class Conflict(StoreError):
    """The resource changed underneath the caller."""


class ClusterError(ZeromeshError):
    """The local cluster is not in a state that allows the command (not running, already up…)."""


class NetnsError(ZeromeshError):
    """A namespace, link, route or nftables operation failed; carries the command and its stderr."""


class IdentityError(ZeromeshError):
    """A certificate, key or CA set is unusable; the message names the file or cert and the reason."""


class CsrRefused(IdentityError):
    """The CA refused a CSR (bad request or caller not entitled); on the wire: gRPC UNAUTHENTICATED."""
