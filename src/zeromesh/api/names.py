"""Name and address rules shared by every kind, worded like Kubernetes' own messages.

Each checker takes a string and returns an error message, or None when the
value is fine, so it can be plugged into a field checker or called directly.
"""

from __future__ import annotations

import ipaddress
import json
import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
_DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_HOSTNAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")


def _q(s: str) -> str:
    return json.dumps(s)


def dns1123_label_error(s: str) -> str | None:
    """Namespace names, container names: the shape of one DNS label."""
    if len(s) <= 63 and _DNS1123_LABEL.match(s):
        return None
    return (f"{_q(s)} is not a valid DNS-1123 label: must be at most 63 characters, consist "
            "of lower case alphanumeric characters or '-', and start and end with an "
            "alphanumeric character")


def dns1123_subdomain_error(s: str) -> str | None:
    """Most object names: dotted DNS labels, at most 253 characters."""
    if len(s) <= 253 and _DNS1123_SUBDOMAIN.match(s):
        return None
    return (f"{_q(s)} is not a valid DNS-1123 subdomain: must be at most 253 characters, "
            "consist of lower case alphanumeric characters, '-' or '.', and start and end "
            "with an alphanumeric character")


def dns1035_label_error(s: str) -> str | None:
    """Service names: a DNS label that starts with a letter (it becomes a DNS name)."""
    if len(s) <= 63 and _DNS1035_LABEL.match(s):
        return None
    return (f"{_q(s)} is not a valid DNS-1035 label: must be at most 63 characters, consist "
            "of lower case alphanumeric characters or '-', start with a letter, and end "
            "with an alphanumeric character")


def _name_part_error(s: str, what: str) -> str | None:
    if not s:
        return f"{what} must not be empty"
    if len(s) > 63:
        return f"{what} must be at most 63 characters"
    if not _QUALIFIED_NAME.match(s):
        return (f"{what} must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character")
    return None


def qualified_name_error(s: str) -> str | None:
    """Label and annotation keys: an optional DNS subdomain prefix, '/', and a name."""
    prefix, sep, name = s.rpartition("/")
    problems: list[str] = []
    if sep and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        problems.append("the prefix before '/' must be a DNS-1123 subdomain")
    msg = _name_part_error(name, "the name part" if sep else "the key")
    if msg:
        problems.append(msg)
    if not problems:
        return None
    return f"invalid key {_q(s)}: " + "; ".join(problems)


def label_value_error(s: str) -> str | None:
    """Label values: empty, or up to 63 characters of [A-Za-z0-9._-] starting/ending alnum."""
    if s == "":
        return None
    msg = _name_part_error(s, "a label value")
    return None if msg is None else f"invalid value {_q(s)}: {msg}"


def iana_svc_name_error(s: str) -> str | None:
    """Port names: IANA service names (at most 15 characters, a letter, no '--')."""
    if (len(s) <= 15 and _IANA_SVC_NAME.match(s) and "--" not in s
            and any(c.isalpha() for c in s)):
        return None
    return (f"{_q(s)} is not a valid port name: must be at most 15 characters, consist of "
            "lower case alphanumeric characters or '-', contain at least one letter, not "
            "contain '--', and start and end with an alphanumeric character")


def config_key_error(s: str) -> str | None:
    """ConfigMap and Secret keys: they become file names, so [-._a-zA-Z0-9] only."""
    if 0 < len(s) <= 253 and _CONFIG_KEY.match(s) and s not in (".", ".."):
        return None
    return (f"invalid key {_q(s)}: must consist of alphanumeric characters, '-', '_' or '.' "
            "(at most 253)")


def hostname_error(s: str) -> str | None:
    """Gateway API hostnames: a DNS name, optionally with one leading '*.' wildcard label."""
    if len(s) <= 253 and _HOSTNAME.match(s):
        return None
    return (f"{_q(s)} is not a valid hostname: must be a lower case DNS name, optionally "
            "starting with '*.'")


def ip_error(s: str) -> str | None:
    """A single IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return f"{_q(s)} is not a valid IP address"
    return None


def ipv4_error(s: str) -> str | None:
    """A single IPv4 address (the local cluster's service network is IPv4)."""
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return f"{_q(s)} is not a valid IPv4 address"
    return None


def ip_or_cidr_error(s: str) -> str | None:
    """An address or a CIDR block; host bits may be set, as Istio allows."""
    try:
        ipaddress.ip_network(s, strict=False)
    except ValueError:
        return f"{_q(s)} is not a valid IP address or CIDR block"
    return None


def port_string_error(s: str) -> str | None:
    """A port number written as a string, as Istio's policy fields expect."""
    if s.isascii() and s.isdigit() and 1 <= int(s) <= 65535:
        return None
    return f"{_q(s)} is not a port number (1-65535)"
