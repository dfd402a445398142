"""Duration parsing: Go syntax for Istio fields, GEP-2257 syntax for the Gateway API."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeromesh.api import parse_duration, parse_gateway_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("1s", 1.0), ("250ms", 0.25), ("1m30s", 90.0), ("1h", 3600.0),
    ("1.5h", 5400.0), ("-1.5h", -5400.0), ("+2s", 2.0), ("10us", 1e-5), ("10\u00b5s", 1e-5),
    ("10\u03bcs", 1e-5), ("100ns", 1e-7), ("1h2m3s4ms", 3723.004), (".5s", 0.5),
    ("5.s", 5.0), ("0s", 0.0), ("-0", 0.0),
])
def test_parse_duration_valid(text: str, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "expected a duration"), ("5", "missing unit"), ("1x", 'unknown unit "x"'),
    ("s", "expected a duration"), (".s", "expected a duration"), ("1 s", "unknown unit"),
    ("1s ", "expected a duration"), ("-", "expected a duration"), ("1.2.3s", "missing unit"),
    ("ms", "expected a duration"), ("1d", 'unknown unit "d"'),
])
def test_parse_duration_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0.0), ("10s", 10.0), ("500ms", 0.5), ("1h30m", 5400.0), ("1h1m1s1ms", 3661.001),
    ("99999ms", 99.999),
])
def test_parse_gateway_duration_valid(text: str, seconds: float) -> None:
    assert math.isclose(parse_gateway_duration(text), seconds)


@pytest.mark.parametrize("text", [
    "", "1.5s", "-1s", "1us", "100000s", "1h1m1s1ms1s", "10", "1 s", "1S",
])
def test_parse_gateway_duration_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="Gateway API duration"):
        parse_gateway_duration(text)


@given(st.integers(0, 10**6), st.sampled_from(["ns", "us", "ms", "s", "m", "h"]))
def test_parse_duration_whole_units(n: int, unit: str) -> None:
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    assert math.isclose(parse_duration(f"{n}{unit}"), n * scale)


@given(st.text(max_size=20))
def test_parse_duration_only_raises_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_duration(text)
