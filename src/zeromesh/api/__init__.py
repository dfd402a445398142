"""zeromesh.api: what users may write, and what it means once accepted (pure: no IO but
``load_path``).

Role: turn manifests (multi-document YAML or JSON, exactly as written for Kubernetes
and Istio ambient mode) into validated, normalised objects the store can keep, and
tell the user precisely what is wrong otherwise.

Vocabulary:
- *document*: one YAML document of a file; numbered from 1, empty ones included.
- *kind*: a (group, kind) pair from the registry (:mod:`zeromesh.api.kinds`), with the
  API versions it is served under; *resource* is its store name (``deployments.apps``).
- *enforced*: the local cluster or the mesh acts on the kind today; the others are
  validated and stored before they are enforced.
- *normalised object*: a plain JSON-shaped dict in Kubernetes shape, with the defaults
  Kubernetes, Istio and the Gateway API fill in, and without server-owned fields.
- *warning*: something accepted but not honoured (a probe, a hostPort...); *error*:
  something refused. Both read ``<file>: document <n> (<Kind> <ns>/<name>): <field>: ...``.
"""

from zeromesh.api.durations import parse_duration, parse_gateway_duration
from zeromesh.api.kinds import (
    ALL_KINDS,
    KindInfo,
    find_kind,
    kind_for,
    resolve_cli_name,
    split_api_version,
)
from zeromesh.api.manifest import LoadedDoc, Source, load_path, load_text
from zeromesh.api.selectors import match_label_selector
from zeromesh.api.validation import Validated, validate, validate_all
from zeromesh.errors import ManifestError, ManifestErrors

__all__ = [
    "ALL_KINDS",
    "KindInfo",
    "LoadedDoc",
    "ManifestError",
    "ManifestErrors",
    "Source",
    "Validated",
    "find_kind",
    "kind_for",
    "load_path",
    "load_text",
    "match_label_selector",
    "parse_duration",
    "parse_gateway_duration",
    "resolve_cli_name",
    "split_api_version",
    "validate",
    "validate_all",
]
