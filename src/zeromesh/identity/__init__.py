"""Identity: the mesh's certificate authority and SPIFFE helpers.

Role: give every workload a short-lived X.509 certificate whose only name is its
SPIFFE id, the way istiod's CA does for ztunnel, so peers (ours or Istio's) can
authenticate each other over mutual TLS and policies can name them.

Vocabulary:
- *SPIFFE id* / *identity*: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``
  (:class:`SpiffeId`); the *principal* is the same without ``spiffe://``, as
  AuthorizationPolicy writes it.
- *Bootstrap identity*: zeromesh-internal ``…/zeromesh/node/<node>`` (:class:`NodeId`)
  and ``…/zeromesh/pod/<ns>/<pod>/sa/<sa>`` (:class:`PodId`) credentials for talking to
  the control plane; never accepted as workload identities.
- *Trust domain*: the namespace of identities one root vouches for (``cluster.local``).
- *Root* / *trust bundle*: the self-signed certificate(s) every peer trusts.
- *Plug-in CA*: Istio's ``ca-cert.pem``/``ca-key.pem``/``root-cert.pem``/``cert-chain.pem``.
- *Chain*: leaf first, intermediates, root last — the order istiod answers in.
- *Refresh at*: half-way through a certificate's validity (ztunnel's rotation point).

:mod:`.spiffe` and :mod:`.certs` are pure; :mod:`.ca` and :mod:`.files` touch the
filesystem only when loading/creating CA files or writing credentials.
"""

from zeromesh.identity.ca import (
    DEFAULT_TTL,
    MAX_TTL,
    CertificateAuthority,
    Signed,
    Signing,
    key_refusal,
)
from zeromesh.identity.certs import (
    CertInfo,
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
from zeromesh.identity.files import read_credential, write_credential, write_file_atomic
from zeromesh.identity.spiffe import NodeId, PodId, SpiffeId, parse_any

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "CertInfo",
    "CertificateAuthority",
    "NodeId",
    "PodId",
    "Signed",
    "Signing",
    "SpiffeId",
    "describe",
    "generate_key",
    "key_kind",
    "key_matches",
    "key_refusal",
    "load_chain",
    "load_key",
    "make_csr",
    "parse_any",
    "pem",
    "read_credential",
    "refresh_at",
    "uri_sans",
    "verify_chain",
    "write_credential",
    "write_file_atomic",
]
