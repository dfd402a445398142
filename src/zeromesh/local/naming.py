"""Kubernetes-style generated names: `<deployment>-<template-hash>-<suffix>` (pure)."""

from __future__ import annotations

import json
import random
from typing import Any

# Kubernetes' rand.SafeEncodeString alphabet: no vowels, no confusable characters.
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def _fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in s)


def template_hash(template: dict[str, Any]) -> str:
    """Stable hash of a pod template, as the pod-template-hash label shows it."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return safe_encode(str(_fnv1a32(canonical)))


def random_suffix(rng: random.Random | None = None, n: int = 5) -> str:
    r = rng or random
    return "".join(r.choice(ALPHANUMS) for _ in range(n))


def pod_name(deployment: str, thash: str, suffix: str) -> str:
    """Kubernetes truncates the prefix so the name stays a valid 63-char label."""
    prefix = f"{deployment}-{thash}-"
    return (prefix[: 63 - len(suffix)] + suffix)
