"""Duration strings as users write them: Go durations (Istio) and Gateway API durations.

Istio fields such as ``timeout: 1m30s`` are parsed like Go's ``time.ParseDuration``;
Gateway API timeouts follow GEP-2257, a stricter subset (``1h``, ``30s``, ``500ms``).
Both return seconds as a float, so the routing code never re-parses strings.
"""

from __future__ import annotations

import re

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek small letter mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"([0-9]*)(\.[0-9]*)?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)?")
_GATEWAY = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_GATEWAY_PART = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_GATEWAY_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}


def _invalid(s: str, why: str) -> ValueError:
    return ValueError(f'invalid duration "{s}": {why}')


def parse_duration(s: str) -> float:
    """Parse a Go duration ("1s", "250ms", "1m30s", "-1.5h", "0") into seconds.

    Raises ValueError with a message fit for users when the text is not a duration.
    """
    if not isinstance(s, str):
        raise TypeError("parse_duration expects a string")
    text = s
    sign = 1.0
    if text and text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise _invalid(s, 'expected a duration such as "1s", "250ms" or "1m30s"')
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _GO_PART.match(text, pos)
        assert m is not None  # the pattern can match the empty string
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and (frac is None or frac == "."):
            raise _invalid(s, 'expected a duration such as "1s", "250ms" or "1m30s"')
        if unit is None:
            rest = re.match(r"[^0-9.]+", text[m.end():])
            if rest:
                raise _invalid(s, f'unknown unit "{rest.group(0)}" (use ns, us, ms, s, m or h)')
            raise _invalid(s, 'missing unit (one of ns, us, ms, s, m, h), e.g. "5s"')
        total += float((whole or "0") + (frac or "")) * _GO_UNITS[unit]
        pos = m.end()
    return sign * total


def parse_gateway_duration(s: str) -> float:
    """Parse a Gateway API duration (GEP-2257: up to four <1-5 digits><h|m|s|ms> parts)."""
    if not isinstance(s, str):
        raise TypeError("parse_gateway_duration expects a string")
    if not _GATEWAY.match(s):
        raise _invalid(s, 'expected a Gateway API duration such as "10s", "500ms" or "1h30m" '
                          "(whole numbers, units h, m, s, ms)")
    return sum(int(n) * _GATEWAY_UNITS[u] for n, u in _GATEWAY_PART.findall(s))
