"""Masking: sensitive values are replaced before an access-log line or a span is written.

Pure (no IO). A :class:`Masker` is built once per config version from the masking rules in
force (``zeromesh.io/v1alpha1 TelemetryPolicy``, ``spec.accessLogging.masking``; see
``docs/access-log.md``) and applied to every value a client controls: the request target,
the Host, logged headers, ``x-request-id``, reasons and logged bodies. The proxy's own values
(addresses, identities, counters) are never masked.

Rules, applied in this order to each value:

* ``headers``: a logged header of that name is replaced whole (an ``authorization`` value
  keeps its scheme: ``Bearer ****``, so the log still says which kind of credential came);
* ``queryParameters``: ``name=value`` after ``?``, ``&`` or ``;`` (or at the start of a
  form-encoded body) keeps its name, the value is replaced (names compared case-insensitively);
* ``jsonFields``: in a logged JSON body, a bare name masks that key at any depth, a dotted
  path (``card.number``) only from the root; lists are walked through. A body that says it is
  JSON but cannot be parsed is replaced whole when JSON fields are configured (fail closed);
* built-in patterns (``CardNumber``: 13-19 digits, single spaces, dashes, ``+`` or ``%20``
  between them, passing the Luhn check — a longer run of digits is masked whole when any
  13-19-digit stretch of it passes; ``BearerToken``: ``Bearer <token>``, also URL-encoded) and user patterns
  (Python ``re`` syntax), each substituted over the whole value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CARD_NUMBER = "CardNumber"
BEARER_TOKEN = "BearerToken"
BUILTINS = (CARD_NUMBER, BEARER_TOKEN)
DEFAULT_REPLACEMENT = "****"
DEFAULT_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
BODY_MARGIN = 256          # bytes masked past a body's logged limit, so a cut never splits a secret
MAX_JSON_PARSE = 1024 * 1024

# A run of at least 13 digits with single separators between them (space, dash, "+" or "%20"
# of URL encodings, "%2D"); whether it is a card is decided by _card().
_CARD_RUN = re.compile(r"[0-9](?:(?:[ +-]|%20|%2[dD])?[0-9]){12,}", re.ASCII)
_NOT_DIGIT = re.compile(r"[^0-9]", re.ASCII)
# "Bearer <token>", also URL- or form-encoded ("Bearer+t", "Bearer%20t", "%2F" inside the token).
_BEARER = re.compile(r"(bearer(?:\s|\+|%20)+)[A-Za-z0-9\-._~+/%]+=*", re.IGNORECASE | re.ASCII)
# Whether a value may hold a built-in secret at all, before the exact (slower) substitutions;
# most values hold neither. The card hint is a superset: the first 13 characters of any card
# candidate are digits, separators, "%", "d" or "D". Charset repeats and no alternation: these
# cost well under a microsecond on a typical path, host or request id.
_CARD_HINT = re.compile(r"[0-9][0-9 +%dD-]{12}", re.ASCII)
_BEARER_HINT = re.compile(r"bearer", re.IGNORECASE | re.ASCII)
_AUTH_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s+\S")
_JSON_TYPES = ("json",)


class MaskingError(ValueError):
    """A masking rule that cannot be used (an invalid or empty-matching regular expression)."""


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def looks_like_card(digits: str) -> bool:
    """13-19 digits passing Luhn; a longer run counts when any 13-19-digit stretch does."""
    n = len(digits)
    if 13 <= n <= 19:
        return luhn_ok(digits)
    if n > 19:
        return any(luhn_ok(digits[i:i + size]) for size in range(13, 20) for i in range(n - size + 1))
    return False


@dataclass(frozen=True, slots=True)
class Pattern:
    """A user pattern: ``name`` appears in docs and errors, ``regex`` is Python ``re`` syntax."""
    name: str
    regex: str


def check_pattern(regex: str) -> str | None:
    """Why ``regex`` cannot be a masking pattern, or None (used at apply and by the proxy)."""
    try:
        compiled = re.compile(regex)
    except re.error as e:
        return f"invalid regular expression {json.dumps(regex)}: {e}"
    if compiled.search("") is not None:
        return f"regular expression {json.dumps(regex)} matches the empty string, so it would mask nothing"
    return None


class Masker:
    """Replaces sensitive values; one per set of rules, shared by every request it covers."""

    __slots__ = (
        "_bearer_on",
        "_card_on",
        "_json_names",
        "_json_paths",
        "_patterns",
        "_query",
        "_query_repl",
        "empty",
        "header_names",
        "json_fields",
        "replacement",
    )

    def __init__(self, *, headers: Iterable[str] = (), query_params: Iterable[str] = (),
                 json_fields: Iterable[str] = (), patterns: Iterable[Pattern] = (),
                 builtins: Iterable[str] = BUILTINS, replacement: str = DEFAULT_REPLACEMENT) -> None:
        self.replacement = replacement
        self.header_names = frozenset(h.lower() for h in headers)
        params = sorted({q for q in query_params if q}, key=len, reverse=True)
        self._query = (re.compile(r"(^|[?&;])(" + "|".join(re.escape(q) for q in params) + r")=[^&#\s]*",
                                  re.IGNORECASE) if params else None)
        self._query_repl = r"\g<1>\g<2>=" + replacement.replace("\\", "\\\\")
        fields = [f.lower() for f in json_fields if f]
        self.json_fields = tuple(fields)
        self._json_names = frozenset(f for f in fields if "." not in f)
        self._json_paths = frozenset(tuple(f.split(".")) for f in fields if "." in f)
        builtin = set(builtins)
        unknown = builtin - set(BUILTINS)
        if unknown:
            raise MaskingError(f"unknown built-in pattern(s) {sorted(unknown)}; known: {', '.join(BUILTINS)}")
        self._card_on = CARD_NUMBER in builtin
        self._bearer_on = BEARER_TOKEN in builtin
        subs: list[tuple[re.Pattern[str], str]] = []
        for p in patterns:
            problem = check_pattern(p.regex)
            if problem is not None:
                raise MaskingError(f"pattern {p.name or p.regex!r}: {problem}")
            subs.append((re.compile(p.regex), replacement.replace("\\", "\\\\")))
        self._patterns = tuple(subs)
        self.empty = not (self.header_names or self._query or fields or self._card_on or self._bearer_on
                          or subs)

    def _card(self, m: re.Match[str]) -> str:
        return self.replacement if looks_like_card(_NOT_DIGIT.sub("", m.group())) else m.group()

    def _bearer(self, m: re.Match[str]) -> str:
        return m.group(1) + self.replacement

    def text(self, value: str) -> str:
        """Query parameters, card numbers and patterns masked anywhere in ``value``."""
        if self.empty or not value:
            return value
        if self._query is not None and "=" in value:
            value = self._query.sub(self._query_repl, value)
        if self._card_on and _CARD_HINT.search(value) is not None:
            value = _CARD_RUN.sub(self._card, value)
        if self._bearer_on and _BEARER_HINT.search(value) is not None:
            value = _BEARER.sub(self._bearer, value)
        for rx, repl in self._patterns:
            value = rx.sub(repl, value)
        return value

    def header(self, name: str, value: str) -> str:
        """A logged header's value: replaced whole when its name is masked, else as text."""
        if name.lower() in self.header_names:
            if name.lower() in AUTH_HEADERS:
                m = _AUTH_SCHEME.match(value)
                if m is not None:
                    return f"{m.group(1)} {self.replacement}"
            return self.replacement
        return self.text(value)

    def headers(self, wanted: Sequence[str], headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        """The ``wanted`` headers (lower-case names) present in ``headers``, masked; repeated
        ones joined with commas."""
        out: dict[str, str] = {}
        for k, v in headers:
            if k in wanted:
                v = self.header(k, v)
                out[k] = f"{out[k]},{v}" if k in out else v
        return out

    # ---- bodies -----------------------------------------------------------------------------------
    def body(self, data: bytes, content_type: str, limit: int) -> tuple[str, bool]:
        """A body as it may be logged: masked, then cut to ``limit`` characters; and whether it
        was cut. JSON (by content type, or a body starting with ``{``/``[``) is parsed and its
        configured fields masked first."""
        head = data.lstrip()[:1]
        is_json = any(t in content_type.lower() for t in _JSON_TYPES) or head in (b"{", b"[")
        if is_json and len(data) <= MAX_JSON_PARSE:
            try:
                doc = json.loads(data)
            except ValueError:
                doc = _UNPARSED
            if doc is not _UNPARSED:
                text = json.dumps(self.json(doc), ensure_ascii=False, separators=(",", ":"))
                return (text[:limit], True) if len(text) > limit else (text, False)
        if is_json and self.json_fields:
            return self.replacement, False           # cannot see the fields: log none of it
        window = data[:limit + BODY_MARGIN].decode("utf-8", "replace")
        text = self.text(window)
        cut = len(data) > limit or len(text) > limit
        return text[:limit], cut

    def json(self, node: Any, path: tuple[str, ...] = ()) -> Any:
        """A parsed JSON document with configured fields replaced and every string (and key,
        and number written as text) masked as text."""
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for k, v in node.items():
                key = str(k)
                low = key.lower()
                sub = (*path, low)
                if low in self._json_names or sub in self._json_paths:
                    out[self.text(key)] = self.replacement
                else:
                    out[self.text(key)] = self.json(v, sub)
            return out
        if isinstance(node, list):
            return [self.json(v, path) for v in node]
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, int | float) and not isinstance(node, bool):
            written = str(node)
            masked = self.text(written)
            return node if masked == written else masked
        return node


_UNPARSED = object()

NO_MASKING = Masker(builtins=())
DEFAULT_MASKER = Masker(headers=DEFAULT_HEADERS)


def masker_from_spec(specs: Iterable[Mapping[str, Any]]) -> Masker:
    """One masker for the union of several ``masking`` blocks (most general first; the last
    ``replacement`` set wins). Built-ins default to all of them unless some block lists them."""
    headers: list[str] = list(DEFAULT_HEADERS)
    params: list[str] = []
    fields: list[str] = []
    patterns: list[Pattern] = []
    builtins: set[str] | None = None
    replacement = DEFAULT_REPLACEMENT
    for spec in specs:
        headers.extend(str(h) for h in spec.get("headers") or ())
        params.extend(str(q) for q in spec.get("queryParameters") or ())
        fields.extend(str(f) for f in spec.get("jsonFields") or ())
        for i, p in enumerate(spec.get("patterns") or ()):
            patterns.append(Pattern(str(p.get("name") or f"patterns[{i}]"), str(p.get("regex") or "")))
        if spec.get("builtins") is not None:
            builtins = (builtins or set()) | {str(b) for b in spec["builtins"]}
        if spec.get("replacement"):
            replacement = str(spec["replacement"])
    return Masker(headers=headers, query_params=params, json_fields=fields, patterns=patterns,
                  builtins=BUILTINS if builtins is None else sorted(builtins), replacement=replacement)
